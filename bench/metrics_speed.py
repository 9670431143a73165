"""Time every fusion metric of ssvif_ros.metrics on one 640 x 480 pair, single-threaded.

Usage: ``python bench/metrics_speed.py [--repeat N] [--convention vifb|cddfuse|both]``.
Uses the first MSRS val pair from ``../shared/data`` (or ``$SSVIF_DATA``) and a synthetic pair
when that is absent; the fused image is the max-luma baseline of ``imaging``. Prints the best of
N runs per metric, the sum, and one ``compute_fusion_metrics`` call with all metrics (which
shares cached intermediate arrays between metrics). Target: all metrics < 1 s per pair.
"""
import argparse
import os
from pathlib import Path
import sys
import time

for _var in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):
    os.environ[_var] = '1'

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ssvif_ros import imaging, metrics  # noqa: E402
from ssvif_ros.dataset_paths import list_pairs, shared_data_dir  # noqa: E402


def _pair():
    try:
        vi_path, ir_path = list_pairs(shared_data_dir() / 'msrs' / 'val')[0]
        vis = imaging.read_image(vi_path, 'rgb')
        ir = imaging.read_image(ir_path, 'gray')
        source = f'MSRS val {vi_path.name}'
    except FileNotFoundError:
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[0:480, 0:640]
        base = (127 + 100 * np.sin(xx / 37.0) * np.cos(yy / 23.0)).astype(np.float64)
        vis = np.clip(base[:, :, None] + rng.normal(0, 12, (480, 640, 3)), 0, 255).astype(np.uint8)
        ir = np.clip(255 - base + rng.normal(0, 8, (480, 640)), 0, 255).astype(np.uint8)
        source = 'synthetic 640x480'
    fused = imaging.to_uint8(imaging.max_luma_fusion(imaging.visible_to_float(vis),
                                                     imaging.normalize_thermal(ir)))
    return vis, ir, fused, source


def _best(fn, repeat):
    best = float('inf')
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    """Print the timing table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--repeat', type=int, default=3)
    ap.add_argument('--convention', default='both', choices=('vifb', 'cddfuse', 'both'))
    args = ap.parse_args()
    import cv2
    cv2.setNumThreads(1)
    vis, ir, fused, source = _pair()
    conventions = metrics.CONVENTIONS if args.convention == 'both' else (args.convention,)
    print(f'pair: {source}, {vis.shape[1]}x{vis.shape[0]}, 1 thread, best of {args.repeat}')
    metrics.compute_fusion_metrics(vis, ir, fused)  # warm-up (lazy imports)
    times = {}
    for conv in conventions:
        for name in metrics.METRICS:
            times[conv, name] = _best(
                lambda: metrics.compute_fusion_metrics(vis, ir, fused, [name], conv), args.repeat)
        times[conv, 'all'] = _best(
            lambda: metrics.compute_fusion_metrics(vis, ir, fused, None, conv), args.repeat)
        times[conv, 'val'] = _best(
            lambda: metrics.validation_metrics(vis, ir, fused, convention=conv), args.repeat)
    print('| metric | ' + ' | '.join(f'{c} (ms)' for c in conventions) + ' |')
    print('|---|' + '---|' * len(conventions))
    for name in metrics.METRICS:
        print(f'| {name} | ' + ' | '.join(f'{1e3 * times[c, name]:.1f}' for c in conventions)
              + ' |')
    print('| sum of the above | ' + ' | '.join(
        f'{1e3 * sum(times[c, n] for n in metrics.METRICS):.1f}' for c in conventions) + ' |')
    print('| **all metrics, one call** | ' + ' | '.join(
        f'**{1e3 * times[c, "all"]:.1f}**' for c in conventions) + ' |')
    print(f'| validation_metrics {",".join(metrics.VALIDATION_METRICS)} | ' + ' | '.join(
        f'{1e3 * times[c, "val"]:.1f}' for c in conventions) + ' |')


if __name__ == '__main__':
    main()
