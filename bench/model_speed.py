#!/usr/bin/env python3
"""Time fusion model + segmentation head (F + H) in ONNX Runtime on the CPU.

For each model, a wrapper ``(vis, ir) -> (fused, class_ids)`` is exported to ONNX with dynamic
H and W (TorchScript exporter, ``dynamo=False``): inputs vis, ir N x 3 x H x W float in
[0, 1]; outputs fused N x 3 x H x W and class ids N x H x W (int64). Class ids are the argmax
of SegHead's logits, either after bilinear upsampling of the logits to H x W (``--seg
bilinear``, the default) or at the features' resolution followed by nearest upsampling
(``--seg nearest``, cheaper). The session uses ``--threads`` intra-op threads (default 2);
each model is timed for ``--repeats`` rounds of ``--runs`` runs after ``--warmup`` runs, and the
table shows the median of every round, the minimum of those medians and pairs/s from it.
Inputs are sized to the model's ``pad_multiple`` (640 x 480 needs no padding for any of the
models here). The numbers depend on the machine and on other load on it.

Usage::

    python bench/model_speed.py                       # rtfusion and seafusion, 640x480
    python bench/model_speed.py --models rtfusion swinfusion --runs 5 --repeats 1
    python bench/model_speed.py --torch               # also time eager PyTorch (F only)
    python bench/model_speed.py --models rtfusion --cfg rtfusion '{"seg_stride": 4}'
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import statistics
import sys
import tempfile
import time

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def build_wrapper(name: str, num_classes: int, head_hidden: int, seg: str, cfg: dict = None):
    """Return (wrapper module, fusion params, head params) for registered model ``name``."""
    from ssvif_train.models.registry import create_model
    from ssvif_train.models.segmentation import SegHead
    from ssvif_train.network import SSVIFNet

    fusion = create_model(name, **(cfg or {})).eval()
    head = SegHead(fusion.feature_channels, num_classes, head_hidden).eval()
    n_f = sum(p.numel() for p in fusion.parameters())
    n_h = sum(p.numel() for p in head.parameters())
    return SSVIFNet(fusion, head).for_export(seg), n_f, n_h


def time_ort(path: str, height: int, width: int, threads: int, warmup: int, runs: int,
             repeats: int):
    """Medians (ms) of ``repeats`` rounds of ``runs`` timed ONNX Runtime calls."""
    import numpy as np
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, so, providers=['CPUExecutionProvider'])
    rng = np.random.default_rng(0)
    feed = {'vis': rng.random((1, 3, height, width), dtype=np.float32),
            'ir': rng.random((1, 3, height, width), dtype=np.float32)}
    for _ in range(warmup):
        sess.run(None, feed)
    medians = []
    for _ in range(repeats):
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            sess.run(None, feed)
            times.append((time.perf_counter() - t0) * 1e3)
        medians.append(statistics.median(times))
    return medians


def time_torch(module, height: int, width: int, threads: int, runs: int) -> float:
    """Median ms of eager PyTorch fusion (F only) with ``threads`` threads."""
    import torch
    torch.set_num_threads(threads)
    vis = torch.rand(1, 3, height, width)
    ir = torch.rand(1, 3, height, width)
    times = []
    with torch.inference_mode():
        module.fusion(vis, ir)
        for _ in range(runs):
            t0 = time.perf_counter()
            module.fusion(vis, ir)
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main(argv=None) -> int:
    """Parse arguments, export and time every model, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--models', nargs='+', default=['rtfusion', 'seafusion'])
    ap.add_argument('--height', type=int, default=480)
    ap.add_argument('--width', type=int, default=640)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--warmup', type=int, default=5)
    ap.add_argument('--runs', type=int, default=30)
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--num-classes', type=int, default=15)
    ap.add_argument('--head-hidden', type=int, default=64)
    ap.add_argument('--seg', choices=('bilinear', 'nearest'), default='bilinear')
    ap.add_argument('--torch', action='store_true', help='also time eager PyTorch (F only)')
    ap.add_argument('--keep', default='', help='folder to keep the exported .onnx files in')
    ap.add_argument('--cfg', nargs=2, action='append', default=[], metavar=('MODEL', 'JSON'),
                    help='model configuration (JSON object) for one of --models')
    args = ap.parse_args(argv)
    cfgs = {}
    for name, text in args.cfg:
        try:
            cfgs[name] = json.loads(text)
        except ValueError as exc:
            ap.error(f'--cfg {name}: not valid JSON: {exc}')
        if not isinstance(cfgs[name], dict) or name not in args.models:
            ap.error(f'--cfg {name}: needs a JSON object for a model named in --models')
    if min(args.height, args.width, args.threads, args.runs, args.repeats) < 1:
        ap.error('height, width, threads, runs and repeats must be >= 1')

    import torch
    from ssvif_train.export import export_onnx
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = args.keep or tmp
        os.makedirs(out_dir, exist_ok=True)
        for name in args.models:
            torch.manual_seed(0)
            module, n_f, n_h = build_wrapper(name, args.num_classes, args.head_hidden, args.seg,
                                             cfgs.get(name))
            m = module.fusion.pad_multiple
            h = -(-args.height // m) * m
            w = -(-args.width // m) * m
            path = os.path.join(out_dir, f'{name}_seg.onnx')
            with torch.no_grad():  # small tracing size: the exported H and W are dynamic
                export_onnx(module, path, 17, (8 * m, 12 * m))
            meds = time_ort(path, h, w, args.threads, args.warmup, args.runs, args.repeats)
            t_torch = time_torch(module, h, w, args.threads, max(3, args.runs // 10)) \
                if args.torch else float('nan')
            rows.append((name, n_f, n_h, meds, t_torch))
            print(f'{name}: medians {", ".join(f"{x:.1f}" for x in meds)} ms', flush=True)

    print()
    print(f'{args.width}x{args.height}, ONNX Runtime, {args.threads} intra-op threads, '
          f'F + H ({args.num_classes} classes, hidden {args.head_hidden}) + argmax '
          f'({args.seg}), {args.runs} runs x {args.repeats} rounds')
    hdr = (f'{"model":<11} {"F params":>9} {"H params":>9} {"medians ms":>24} '
           f'{"min med ms":>10} {"pairs/s":>8} {"torch F ms":>10}')
    print(hdr)
    print('-' * len(hdr))
    for name, _, _, _, _ in rows:
        if name in cfgs:
            print(f'{name} configuration: {json.dumps(cfgs[name])}')
    for name, n_f, n_h, meds, t_torch in rows:
        best = min(meds)
        med_txt = '/'.join(f'{x:.1f}' for x in meds)
        print(f'{name:<11} {n_f:>9,} {n_h:>9,} {med_txt:>24} {best:>10.1f} '
              f'{1e3 / best:>8.1f} {t_torch:>10.1f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
