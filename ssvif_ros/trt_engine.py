"""TensorRT engines from the exported ONNX model: build (cached by ONNX hash) and run.

Written to the TensorRT 10 Python API (``tensorrt``; JetPack 6 ships it as python3-libnvinfer):
``Builder`` -> ``create_network`` -> ``OnnxParser.parse`` -> ``BuilderConfig`` with one
optimization profile over H x W for the inputs ``vis`` and ``ir`` (frame graphs: N x H x W x 3
uint8 and N x H x W float32; ``ssvif-model/1`` graphs: N x 3 x H x W float32 each), FP16
optional (the uint8 I/O tensors stay uint8: the graph's casts are its first and last nodes), a
timing cache
file reused across builds -> ``build_serialized_network``. The engine is cached beside the ONNX
as ``model.<onnx sha256[:16]>.<fp16|fp32>.engine`` and rebuilt when the ONNX file changes.

Every entry point first checks that ``tensorrt`` and cuda-python import and that a CUDA device
is usable, and raises :class:`TensorRTUnavailable` with a one-line message otherwise. No torch:
the runner holds its device buffers and stream through cuda-python's runtime API.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Tuple

import numpy as np

from ssvif_ros import model_card


class TensorRTUnavailable(RuntimeError):
    """TensorRT, cuda-python or a CUDA GPU is missing; the message says which and what to do."""


def import_tensorrt():
    """The ``tensorrt`` module; TensorRTUnavailable with the install hint when it is missing."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise TensorRTUnavailable(
            'the TensorRT Python package is not installed (desktop: `pip install tensorrt` '
            'with an NVIDIA driver and CUDA 12; Jetson: JetPack provides python3-libnvinfer)'
        ) from exc
    return trt


def import_cudart():
    """The CUDA runtime bindings of cuda-python; TensorRTUnavailable when missing."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as exc:
            raise TensorRTUnavailable(
                'the cuda-python package is not installed (`pip install cuda-python`, matching '
                'the CUDA version of TensorRT): the TensorRT runner uses it for device memory'
            ) from exc
    return cudart


def _cuda_check(result, what: str):
    """Unpack a cuda-python ``(err, *values)`` tuple; RuntimeError naming ``what`` on error."""
    err, *values = result
    if int(err) != 0:
        raise RuntimeError(f'CUDA {what} failed: {err}')
    return values[0] if len(values) == 1 else values


def check_available():
    """Return (tensorrt, cudart) when both import and a CUDA device is usable.

    Raises TensorRTUnavailable with one line saying what is missing.
    """
    trt = import_tensorrt()
    cudart = import_cudart()
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0 or count < 1:
        raise TensorRTUnavailable('no CUDA device is available (cudaGetDeviceCount: '
                                  f'{err}, {count} devices): TensorRT engines need an NVIDIA GPU')
    return trt, cudart


def onnx_sha256(path: str) -> str:
    """Hex SHA-256 of the ONNX file."""
    return model_card.file_sha256(path)


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


def frame_profile_shapes(max_hw: Tuple[int, int], opt_hw: Tuple[int, int] = (480, 640),
                         pad_multiple: int = 8):
    """{input name: (min, opt, max)} shapes of a frame graph's profile (any H, W >= the pad).

    ``vis`` is N x H x W x 3, ``ir`` N x H x W; smaller images are padded on the host.
    """
    mn = (1, max(int(pad_multiple), 1), max(int(pad_multiple), 1))
    opt = (1, int(opt_hw[0]), int(opt_hw[1]))
    mx = (1, max(int(max_hw[0]), opt[1]), max(int(max_hw[1]), opt[2]))
    return {'vis': tuple(s + (3,) for s in (mn, opt, mx)), 'ir': (mn, opt, mx)}


def build_engine(onnx_path: str, fp16: bool = False, max_hw: Tuple[int, int] = (1088, 1920),
                 pad_multiple: int = 8, workspace_gib: float = 1.0,
                 force: bool = False) -> str:
    """Build (or reuse) the serialized engine for ``onnx_path``; return its path."""
    out = engine_path(onnx_path, fp16)
    if os.path.isfile(out) and not force:
        return out
    trt, _ = check_available()
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
    inputs = {network.get_input(i).name: network.get_input(i) for i in range(network.num_inputs)}
    if 'vis' in inputs and inputs['vis'].dtype == trt.DataType.UINT8:  # a frame graph
        shapes = frame_profile_shapes(max_hw, pad_multiple=pad_multiple)
    else:
        shapes = dict.fromkeys(('vis', 'ir'), profile_shapes(max_hw, pad_multiple=pad_multiple))
    for name, (mn, opt, mx) in shapes.items():
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
    """Runs a serialized engine; device buffers and the stream come from cuda-python."""

    def __init__(self, engine_file: str, device: Optional[str] = None):
        trt, cudart = check_available()
        if not os.path.isfile(engine_file):
            raise FileNotFoundError(f'TensorRT engine not found: {engine_file}')
        self.cudart = cudart
        index = 0 if not device or device == 'cuda' else int(str(device).split(':')[-1])
        _cuda_check(cudart.cudaSetDevice(index), f'cudaSetDevice({index})')
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
        self._dtypes = {trt.DataType.FLOAT: np.float32, trt.DataType.HALF: np.float16,
                        trt.DataType.INT32: np.int32, trt.DataType.INT64: np.int64,
                        trt.DataType.UINT8: np.uint8, trt.DataType.BOOL: np.bool_}
        # Frame graph (uint8 vis binding) or padded floats: the backend prepares accordingly.
        self.frame_io = self.engine.get_tensor_dtype('vis') == trt.DataType.UINT8
        self.stream = _cuda_check(cudart.cudaStreamCreate(), 'cudaStreamCreate')
        self._buffers = {}  # tensor name -> (device pointer, capacity in bytes)

    def _buffer(self, name: str, nbytes: int) -> int:
        """A device buffer of at least ``nbytes`` for ``name``, reused across frames."""
        ptr, size = self._buffers.get(name, (None, 0))
        if size < nbytes:
            if ptr is not None:
                _cuda_check(self.cudart.cudaFree(ptr), 'cudaFree')
            ptr = _cuda_check(self.cudart.cudaMalloc(max(nbytes, 1)), 'cudaMalloc')
            self._buffers[name] = (ptr, nbytes)
        return int(ptr)

    def run(self, vis, ir):
        """vis, ir NumPy in the engine's binding types -> dict of NumPy outputs by tensor name.

        Frame graphs: N x H x W x 3 uint8 and N x H x W float32 in, uint8 out; ``ssvif-model/1``
        engines: N x 3 x H x W float32 each.
        """
        cudart = self.cudart
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name, arr in (('vis', vis), ('ir', ir)):
            arr = np.ascontiguousarray(arr, self._dtypes[self.engine.get_tensor_dtype(name)])
            ptr = self._buffer(name, arr.nbytes)
            _cuda_check(cudart.cudaMemcpyAsync(ptr, arr.ctypes.data, arr.nbytes, h2d,
                                               self.stream), 'cudaMemcpyAsync (input)')
            self.context.set_input_shape(name, tuple(arr.shape))
            self.context.set_tensor_address(name, ptr)
        outs = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            outs[name] = np.empty(shape, self._dtypes[self.engine.get_tensor_dtype(name)])
            self.context.set_tensor_address(name, self._buffer(name, outs[name].nbytes))
        if not self.context.execute_async_v3(int(self.stream)):
            raise RuntimeError('TensorRT execution failed')
        for name, arr in outs.items():
            _cuda_check(cudart.cudaMemcpyAsync(arr.ctypes.data, self._buffers[name][0],
                                               arr.nbytes, d2h, self.stream),
                        'cudaMemcpyAsync (output)')
        _cuda_check(cudart.cudaStreamSynchronize(self.stream), 'cudaStreamSynchronize')
        return outs


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
