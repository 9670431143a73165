"""``ssvif-export CHECKPOINT --out DIR [--opset N] [--engine] [--fp16]``.

Writes ``DIR/model.onnx`` (F + H as :class:`ssvif_train.deploy.FrameGraph`: uint8 frames in,
uint8 fused image and class ids out; dynamic N, H, W) and ``DIR/model.json`` (the model card,
format :data:`CARD_FORMAT`: tensor names and shapes, class names and palette, the
normalization, the pad multiple, the source checkpoint and config hash, the ONNX Runtime parity
measured right after export). With ``--engine`` it then builds a TensorRT engine beside the ONNX
(:mod:`ssvif_ros.trt_engine`); where TensorRT or CUDA is missing that step fails with a clear
message and exit code 3, and the ONNX and card already written stay.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from typing import Optional

import numpy as np

from ssvif_ros import imaging, labels

CARD_FORMAT = 'ssvif-model/2'
INPUT_NAMES = ['vis', 'ir']
# Opset 11 brought Resize with the coordinate modes the deployed graph's upsampling needs (at 9
# the export runs but the fused image differs from torch's by 4e-2).
MIN_OPSET = 11


def max_opset() -> int:
    """The newest opset torch's exporter writes (it prints its whole graph for a newer one)."""
    from torch.onnx import _constants  # no public name for it
    return int(getattr(_constants, 'ONNX_MAX_OPSET', 20))


def export_onnx(graph, path: str, opset: int, probe_hw) -> None:
    """Write ``graph`` (a FrameGraph, or a deployed SSVIFNet) as ONNX to ``path``, checked.

    Inputs :data:`INPUT_NAMES` (vis, ir), outputs fused, class_ids[, logits], with dynamic N, H
    and W (tensors of :mod:`ssvif_train.deploy`: frames for a FrameGraph, padded N x 3 x H x W
    floats for a bare SSVIFNet, as the graph-only benchmark times it); ``probe_hw`` = (H, W) is
    only the tracing size. Written atomically; a failed write raises OSError naming ``path``.
    """
    import torch
    from ssvif_train.deploy import FrameGraph
    h, w = probe_hw
    frames = isinstance(graph, FrameGraph)
    outputs = ['fused', 'class_ids'] + (['logits'] if graph.with_logits else [])
    if frames:
        gen = torch.Generator().manual_seed(0)
        vis = torch.randint(0, 256, (1, h, w, 3), dtype=torch.uint8, generator=gen)
        ir = torch.rand(1, h, w, generator=gen)
        dyn = {'vis': {0: 'N', 1: 'H', 2: 'W'}, 'ir': {0: 'N', 1: 'H', 2: 'W'},
               'fused': {0: 'N', 1: 'H', 2: 'W'}, 'class_ids': {0: 'N', 1: 'H', 2: 'W'}}
    else:
        vis = torch.rand(1, 3, h, w)
        ir = torch.rand(1, 3, h, w)
        dyn = {'vis': {0: 'N', 2: 'H', 3: 'W'}, 'ir': {0: 'N', 2: 'H', 3: 'W'},
               'fused': {0: 'N', 2: 'H', 3: 'W'}, 'class_ids': {0: 'N', 1: 'H', 2: 'W'}}
    if graph.with_logits:
        dyn['logits'] = {0: 'N', 2: 'h', 3: 'w'}
    tmp = path + '.tmp'
    import warnings
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            try:
                torch.onnx.export(graph, (vis, ir), tmp, input_names=INPUT_NAMES,
                                  output_names=outputs, dynamic_axes=dyn, opset_version=opset,
                                  do_constant_folding=True, dynamo=False)
            except OSError:
                raise
            except Exception as exc:  # noqa: BLE001 - the exporter's errors have no common type
                text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise ValueError(f'ONNX export at opset {opset} failed: {text}') from None
        import onnx
        model = onnx.load(tmp)
        if frames:  # the tracer names the fused image's channel axis; it is always 3
            dim = model.graph.output[0].type.tensor_type.shape.dim[3]
            dim.Clear()
            dim.dim_value = 3
            # The multiple the graph pads to, for the backends to check the card against.
            onnx.helper.set_model_props(model, {'pad_multiple': str(graph.pad_multiple)})
            onnx.save(model, tmp)
        onnx.checker.check_model(model, full_check=True)
        os.replace(tmp, path)
    except OSError as exc:  # a full disk: name the file being written
        raise OSError(exc.errno, exc.strerror, path) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def parity(graph, onnx_path: str, vis: np.ndarray, ir: np.ndarray) -> dict:
    """Run torch and ONNX Runtime on one pair; compare the outputs.

    ``graph``: the FrameGraph; ``vis`` H x W x 3 uint8, ``ir`` H x W float32 in [0, 1]. The
    fused images are uint8: their difference is in grey levels (0, or 1 where a value lies
    within float rounding of a rounding step).
    """
    import onnxruntime as ort
    import torch
    v, t = vis[None], np.ascontiguousarray(ir, np.float32)[None]  # 1 x H x W x 3, 1 x H x W
    with torch.no_grad():
        ref = graph(torch.from_numpy(v), torch.from_numpy(t))
    sess = ort.InferenceSession(onnx_path, providers=['CPUExecutionProvider'])
    out = sess.run(None, {'vis': v, 'ir': t})
    diff = np.abs(out[0].astype(np.int16) - ref[0].numpy().astype(np.int16))
    return {'fused_max_grey_diff': int(diff.max()),
            'fused_equal_fraction': float((diff == 0).mean()),
            'class_ids_agreement': float((out[1] == ref[1].numpy()).mean()),
            'size': [int(vis.shape[1]), int(vis.shape[0])]}


def model_card(graph, info: dict, onnx_path: str, opset: int, seg_upsample: str,
               parity_result: Optional[dict]) -> dict:
    """The JSON model card written beside the ONNX file."""
    from ssvif_train.deploy import file_sha256
    cfg = info.get('config') or {}
    data = cfg.get('data', {})
    n = graph.num_classes
    semantic = (cfg.get('model') or {}).get('classes') == 'msrs' and graph.head is not None
    if semantic:  # MSRS ids: 0 background, 1 car, 2 person, 3 bike, ...
        names = ['background'] + list(labels.SEMANTIC_CLASSES[1:n])
        pal = labels.semantic_palette(n)
    else:  # label-free clusters
        names = list(imaging.class_names(n))
        pal = imaging.palette(n)
    outputs = {'fused': {'shape': ['N', 'H', 'W', 3], 'dtype': 'uint8', 'range': [0, 255]},
               'class_ids': {'shape': ['N', 'H', 'W'], 'dtype': 'uint8', 'range': [0, n - 1]}}
    if graph.with_logits:
        outputs['logits'] = {'shape': ['N', n, 'h', 'w'], 'dtype': 'float32'}
    import onnx
    import torch
    extra = {}
    if graph.class_bias is not None:  # ssvif-calibrate's offsets, already inside the ONNX graph
        extra['class_bias'] = [float(b) for b in graph.class_bias]
    return {
        'format': CARD_FORMAT,
        'onnx': os.path.basename(onnx_path),
        'onnx_sha256': file_sha256(onnx_path),
        'opset': opset,
        'inputs': {'vis': {'shape': ['N', 'H', 'W', 3], 'dtype': 'uint8', 'range': [0, 255]},
                   'ir': {'shape': ['N', 'H', 'W'], 'dtype': 'float32', 'range': [0, 1]}},
        'outputs': outputs,
        'pad_multiple': graph.pad_multiple,
        'seg_upsample': seg_upsample,
        'num_classes': n,
        'classes': 'msrs' if semantic else 'clusters',
        'class_names': names,
        'palette': pal.tolist(),
        **extra,
        'normalization': {
            'visible': 'RGB uint8 (uint16 rounded to uint8 on the host); / 255 in the graph',
            'thermal': {'method': data.get('thermal_norm', 'auto'),
                        'lo': data.get('thermal_lo'), 'hi': data.get('thermal_hi'),
                        'p_lo': data.get('thermal_p_lo', 1.0),
                        'p_hi': data.get('thermal_p_hi', 99.0),
                        'where': 'host (ssvif_ros.frames.register_pair), before the warp',
                        'channels': 'one plane, repeated to 3 in the graph'},
            'color_space': 'BT.601 full-range YCbCr (ssvif_ros.imaging)',
            'padding': 'in the graph: reflect at bottom/right to a multiple of pad_multiple, '
                       'cropped after',
            'fused': 'in the graph: floor(clip(255 x, 0, 255) + 0.5) to uint8',
        },
        'model': {'name': info['model_name'], 'config': info['model_config']},
        'source': {'checkpoint': os.path.basename(info['checkpoint']),
                   'checkpoint_sha256': info['checkpoint_sha256'],
                   'config_digest': info['config_digest'], 'epoch': info['epoch']},
        'parity': parity_result,
        'exported': {'torch': torch.__version__, 'onnx': onnx.__version__,
                     'date': datetime.datetime.now(datetime.timezone.utc).isoformat(
                         timespec='seconds')},
    }


def export(checkpoint: str, out_dir: str, opset: int = 17, seg_upsample: str = 'bilinear',
           with_logits: bool = False, probe: Optional[tuple] = None,
           copy_checkpoint: bool = False) -> dict:
    """Export ``checkpoint`` into ``out_dir``; return the model card (also written as JSON).

    ``probe``: an optional (vis uint8 H x W x 3, ir float32 H x W) pair for the parity check;
    a deterministic random pair of 96 x 128 is used otherwise.
    """
    from ssvif_train.deploy import FrameGraph, load_graph
    net, info = load_graph(checkpoint, seg_upsample, with_logits)
    graph = FrameGraph(net).eval()
    os.makedirs(out_dir, exist_ok=True)
    onnx_path = os.path.join(out_dir, 'model.onnx')
    # Traced at a size that needs padding (half a multiple short of one), so the traced graph
    # computes the pad amounts from the input size.
    m = graph.pad_multiple
    export_onnx(graph, onnx_path, opset, (-(-64 // m) * m - m // 2, -(-96 // m) * m - m // 2))
    if probe is None:
        rng = np.random.default_rng(0)
        probe = (rng.integers(0, 256, (96, 128, 3), dtype=np.uint8),
                 rng.random((96, 128), dtype=np.float32))
    par = parity(graph, onnx_path, *probe)
    card = model_card(net, info, onnx_path, opset, seg_upsample, par)
    if copy_checkpoint:
        from ssvif_train.deploy import write_deploy_checkpoint
        write_deploy_checkpoint(checkpoint, os.path.join(out_dir, 'model.pt'))
        card['checkpoint_file'] = 'model.pt'
    tmp = os.path.join(out_dir, 'model.json.tmp')
    with open(tmp, 'w', encoding='utf-8') as f:
        json.dump(card, f, indent=2)
    os.replace(tmp, os.path.join(out_dir, 'model.json'))
    return card


def parse_max_size(text: str) -> tuple:
    """``--max-size WxH`` as (H, W); ValueError naming the flag when it is not two sizes."""
    parts = text.lower().split('x')
    try:
        w, h = (int(v) for v in parts)
    except ValueError:
        raise ValueError(f'--max-size {text!r} is not WIDTHxHEIGHT (e.g. 1920x1088)') from None
    if w < 1 or h < 1:
        raise ValueError(f'--max-size {text!r}: width and height must be >= 1')
    return h, w


def main(argv=None) -> int:
    """Entry point of ssvif-export; exit 0 ok, 2 bad input, 3 engine build impossible here."""
    ap = argparse.ArgumentParser(prog='ssvif-export', description=__doc__.split('\n\n')[0])
    ap.add_argument('checkpoint', help='training checkpoint (RUN/best.pt or RUN/last.pt)')
    ap.add_argument('--out', required=True, help='output model folder')
    ap.add_argument('--opset', type=int, default=17,
                    help=f'ONNX opset, {MIN_OPSET} or later (default 17)')
    ap.add_argument('--seg-upsample', choices=('bilinear', 'nearest'), default='bilinear',
                    help='class map: arg-max of bilinearly upsampled logits, or nearest-'
                         'upsampled low-resolution arg-max (cheaper)')
    ap.add_argument('--logits', action='store_true', help='also output the head logits')
    ap.add_argument('--copy-checkpoint', action='store_true',
                    help='also write model.pt: F and H only, for the torch backend')
    ap.add_argument('--engine', action='store_true', help='also build a TensorRT engine')
    ap.add_argument('--fp16', action='store_true', help='TensorRT engine in FP16')
    ap.add_argument('--max-size', default='1920x1088',
                    help='largest WxH of the TensorRT optimization profile')
    args = ap.parse_args(argv)
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        print(f'ssvif-export: error: --out {args.out} is an existing file, not a folder',
              file=sys.stderr)
        return 2
    # Every argument is checked before anything is written (no empty --out folder left).
    try:
        if not MIN_OPSET <= args.opset <= max_opset():
            raise ValueError(f'--opset {args.opset}: must be {MIN_OPSET}..{max_opset()} (the '
                             f'deployed graph needs {MIN_OPSET}, torch exports up to '
                             f'{max_opset()})')
        max_hw = parse_max_size(args.max_size)
    except ValueError as exc:
        print(f'ssvif-export: error: {exc}', file=sys.stderr)
        return 2
    try:
        card = export(args.checkpoint, args.out, args.opset, args.seg_upsample, args.logits,
                      copy_checkpoint=args.copy_checkpoint)
    except (FileNotFoundError, ValueError) as exc:
        print(f'ssvif-export: error: {exc}', file=sys.stderr)
        return 2
    except OSError as exc:  # an unwritable --out, a full disk
        where = exc.filename or args.out
        print(f'ssvif-export: error: cannot write {where}: {exc.strerror or exc}',
              file=sys.stderr)
        return 2
    par = card['parity']
    print(f'ssvif-export: wrote {args.out}/model.onnx and model.json '
          f'({card["model"]["name"]}, {card["num_classes"]} classes, pad multiple '
          f'{card["pad_multiple"]}); ONNX Runtime vs torch: fused max |diff| '
          f'{par["fused_max_grey_diff"]} grey levels ({100 * par["fused_equal_fraction"]:.3f}% '
          f'equal), class ids {100 * par["class_ids_agreement"]:.3f}% equal')
    if args.engine:
        from ssvif_ros import trt_engine
        try:
            path = trt_engine.build_engine(os.path.join(args.out, 'model.onnx'),
                                           fp16=args.fp16, max_hw=max_hw,
                                           pad_multiple=card['pad_multiple'])
        except trt_engine.TensorRTUnavailable as exc:
            print(f'ssvif-export: cannot build the TensorRT engine: {exc}. The ONNX model in '
                  f'{args.out} is complete; build the engine later on the target with '
                  f'`ssvif-export ... --engine` or `python -m ssvif_ros.trt_engine '
                  f'{args.out}/model.onnx`.', file=sys.stderr)
            return 3
        print(f'ssvif-export: TensorRT engine {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
