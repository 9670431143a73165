"""TensorRT engines from the exported ONNX model: build (cached by ONNX hash) and run.

Written to the TensorRT 10 Python API (``tensorrt``; JetPack 6 ships it as python3-libnvinfer):
``Builder`` -> ``create_network`` -> ``OnnxParser.parse`` -> ``BuilderConfig`` with one
optimization profile over H x W for the inputs ``vis`` and ``ir``, FP16 optional, a timing cache
file reused across builds -> ``build_serialized_network``. The engine is cached beside the ONNX
as ``model.<onnx sha256[:16]>.<fp16|fp32>.engine`` and rebuilt when the ONNX file changes.

Every entry point first checks that the ``tensorrt`` module imports and that a CUDA device is
usable, and raises :class:`TensorRTUnavailable` with a clear message otherwise.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
from typing import Optional, Tuple


class TensorRTUnavailable(RuntimeError):
    """TensorRT or a CUDA GPU is missing; the message says which and what to install."""


def _import_trt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise TensorRTUnavailable(
            'the TensorRT Python package is not installed (desktop: `pip install tensorrt` '
            'with an NVIDIA driver and CUDA 12; Jetson: JetPack provides python3-libnvinfer)'
        ) from exc
    return trt


def _check_cuda():
    """Raise TensorRTUnavailable unless a CUDA device is usable (via torch if installed)."""
    try:
        import torch
    except ImportError:
        return  # TensorRT itself reports a missing device when the builder is created
    if not torch.cuda.is_available():
        raise TensorRTUnavailable('no CUDA device is available (torch.cuda.is_available() is '
                                  'False): TensorRT engines need an NVIDIA GPU')


def onnx_sha256(path: str) -> str:
    """Hex SHA-256 of the ONNX file."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def engine_path(onnx_path: str, fp16: bool) -> str:
    """Cache file name of the engine for this exact ONNX file and precision."""
    if not os.path.isfile(onnx_path):
        raise FileNotFoundError(f'ONNX model not found: {onnx_path}')
    stem = os.path.splitext(onnx_path)[0]
    return f'{stem}.{onnx_sha256(onnx_path)[:16]}.{"fp16" if fp16 else "fp32"}.engine'


def profile_shapes(max_hw: Tuple[int, int], opt_hw: Tuple[int, int] = (480, 640),
                   pad_multiple: int = 8):
    """(min, opt, max) input shapes N x 3 x H x W of the optimization profile."""
    def up(v):
        return -(-int(v) // pad_multiple) * pad_multiple
    mn = (1, 3, up(64), up(64))
    opt = (1, 3, up(opt_hw[0]), up(opt_hw[1]))
    mx = (1, 3, max(up(max_hw[0]), opt[2]), max(up(max_hw[1]), opt[3]))
    return mn, opt, mx


def build_engine(onnx_path: str, fp16: bool = False, max_hw: Tuple[int, int] = (1088, 1920),
                 pad_multiple: int = 8, workspace_gib: float = 1.0,
                 force: bool = False) -> str:
    """Build (or reuse) the serialized engine for ``onnx_path``; return its path."""
    out = engine_path(onnx_path, fp16)
    if os.path.isfile(out) and not force:
        return out
    trt = _import_trt()
    _check_cuda()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    if builder is None:
        raise TensorRTUnavailable('TensorRT could not create a builder (no CUDA device?)')
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    with open(onnx_path, 'rb') as f:
        if not parser.parse(f.read()):
            errs = '; '.join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ValueError(f'TensorRT cannot parse {onnx_path}: {errs}')
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    mn, opt, mx = profile_shapes(max_hw, pad_multiple=pad_multiple)
    for name in ('vis', 'ir'):
        profile.set_shape(name, mn, opt, mx)
    config.add_optimization_profile(profile)
    cache_file = os.path.join(os.path.dirname(onnx_path) or '.', 'timing.cache')
    blob = b''
    if os.path.isfile(cache_file):
        with open(cache_file, 'rb') as f:
            blob = f.read()
    cache = config.create_timing_cache(blob)
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f'TensorRT failed to build an engine from {onnx_path}')
    tmp = out + '.tmp'
    with open(tmp, 'wb') as f:
        f.write(serialized)
    os.replace(tmp, out)
    with open(cache_file, 'wb') as f:
        f.write(config.get_timing_cache().serialize())
    return out


class EngineRunner:
    """Runs a serialized engine on CUDA tensors (torch owns the device memory)."""

    def __init__(self, engine_file: str, device: Optional[str] = None):
        trt = _import_trt()
        _check_cuda()
        import torch
        if not os.path.isfile(engine_file):
            raise FileNotFoundError(f'TensorRT engine not found: {engine_file}')
        self.torch = torch
        self.device = torch.device(device or 'cuda')
        self.logger = trt.Logger(trt.Logger.WARNING)
        with open(engine_file, 'rb') as f:
            self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(f.read())
        if self.engine is None:
            raise ValueError(f'cannot deserialize TensorRT engine {engine_file} (built with '
                             'another TensorRT version or GPU?)')
        self.context = self.engine.create_execution_context()
        self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.outputs = [n for n in self.names
                        if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._dtypes = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
                        trt.DataType.INT32: torch.int32, trt.DataType.INT64: torch.int64,
                        trt.DataType.UINT8: torch.uint8, trt.DataType.BOOL: torch.bool}
        self.stream = torch.cuda.Stream(device=self.device)

    def run(self, vis, ir):
        """vis, ir: N x 3 x H x W float32 NumPy -> dict of NumPy outputs by tensor name."""
        torch = self.torch
        feeds = {'vis': torch.from_numpy(vis).to(self.device),
                 'ir': torch.from_numpy(ir).to(self.device)}
        for name, t in feeds.items():
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        outs = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = self._dtypes[self.engine.get_tensor_dtype(name)]
            outs[name] = torch.empty(shape, dtype=dtype, device=self.device)
            self.context.set_tensor_address(name, outs[name].data_ptr())
        with torch.cuda.stream(self.stream):
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError('TensorRT execution failed')
        self.stream.synchronize()
        return {k: v.cpu().numpy() for k, v in outs.items()}


def main(argv=None) -> int:
    """``python -m ssvif_ros.trt_engine MODEL.onnx [--fp16]``: build the engine on the target."""
    ap = argparse.ArgumentParser(description='Build the TensorRT engine for an exported model.')
    ap.add_argument('onnx', help='model.onnx written by ssvif-export')
    ap.add_argument('--fp16', action='store_true')
    ap.add_argument('--max-size', default='1920x1088', help='largest WxH in the profile')
    ap.add_argument('--pad-multiple', type=int, default=8)
    ap.add_argument('--force', action='store_true', help='rebuild even if cached')
    args = ap.parse_args(argv)
    try:
        w, h = (int(v) for v in args.max_size.lower().split('x'))
        print(build_engine(args.onnx, args.fp16, (h, w), args.pad_multiple, force=args.force))
    except (TensorRTUnavailable, FileNotFoundError, ValueError) as exc:
        print(f'trt_engine: error: {exc}', file=sys.stderr)
        return 3 if isinstance(exc, TensorRTUnavailable) else 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
