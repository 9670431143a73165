"""``ssvif-bench``: latency, throughput and memory of a model through a backend.

    ssvif-bench [--model DIR] [--backend onnxruntime] [--device cpu|cuda[:N]]
                [--precision fp32|fp16] [--size 640x480] [--threads 2] [--runs 50] [--warmup 5]
                [--rate HZ] [--compare DIR2] [--compare-backend NAME] [--json F]

Each model runs in its own child process (so peak RSS belongs to that model alone) on the same
input pair: the first MSRS validation pair from ../shared/data resized to ``--size`` or, without
it, a synthetic pair. After ``--warmup`` runs, ``--runs`` timed calls of ``Backend.infer``
(the pair as the node has it: uint8 RGB and the normalized float thermal plane; uint8 fused
image and class ids out) give median / p90 / p99 latency and
pairs/s (1 / median); peak RSS is the child's ``ru_maxrss``. ``--rate HZ`` starts the timed calls
at a camera's pace instead of back to back, as the node runs them (the cores idle between
calls, which changes wake-up and cache effects and so the tail). With ``--compare`` both models are
measured in the same invocation and the ratios (compare / model) printed. ``--device``: torch
runs on that device (``cuda:N``); ONNX Runtime takes ``cpu``, ``cuda`` (its CUDA execution
provider) or ``tensorrt`` (its TensorRT provider); the tensorrt backend runs on ``cuda:N``
(default cuda:0). ``--precision fp16``: torch autocast (CUDA only) or a TensorRT FP16 engine.
A device that is not there (no CUDA, an index past the last GPU) is a one-line error, exit 2.
Targets belong here
and in doc/deployment.md and doc/node.md, never in tests.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import re
import sys
import time
from typing import Dict, Optional

import numpy as np

from ssvif_ros import imaging
from ssvif_ros.dataset_paths import list_pairs, shared_data_dir
from ssvif_ros.synthetic import synthetic_scene


def bench_input(size) -> tuple:
    """(vis uint8 H x W x 3, ir float32 H x W, source) of ``size = (w, h)``; MSRS if present."""
    try:
        vi_path, ir_path = list_pairs(shared_data_dir() / 'msrs' / 'val')[0]
        vis = imaging.read_image(vi_path, mode='rgb')
        ir = imaging.read_image(ir_path, mode='gray')
        source = f'MSRS val {vi_path.name}'
    except FileNotFoundError:
        vis, ir = synthetic_scene(0, 640, 480)
        source = 'synthetic scene'
    if (vis.shape[1], vis.shape[0]) != tuple(size):
        vis = imaging.resize(vis, size)
        ir = imaging.resize(ir, size)
    return imaging.visible_to_uint8(vis), imaging.normalize_thermal(ir), source


def _measure(args: Dict) -> Dict:
    """Child process body: build the backend, warm up, time the runs."""
    import resource
    from ssvif_ros.backends import create_backend
    vis, ir, source = bench_input(args['size'])
    t0 = time.perf_counter()
    backend = create_backend(args['backend'], args['model'], threads=args['threads'],
                             device=args.get('device') or None,
                             precision=args.get('precision', 'fp32'))
    load_s = time.perf_counter() - t0
    for _ in range(args['warmup']):
        backend.infer(vis, ir)
    times = []
    period = 1.0 / args['rate'] if args.get('rate') else 0.0
    t_next = time.perf_counter()
    for _ in range(args['runs']):
        if period:  # paced like a camera: start each call one period after the previous start
            t_next += period
            delay = t_next - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        t0 = time.perf_counter()
        backend.infer(vis, ir)
        times.append(time.perf_counter() - t0)
    ms = np.asarray(times) * 1000.0
    med = float(np.median(ms))
    return {'model': args['model'] or '(embedded default)', 'backend': args['backend'],
            'describe': backend.describe(), 'input': source,
            'device': used_device(backend), 'precision': args.get('precision', 'fp32'),
            'size': f'{args["size"][0]}x{args["size"][1]}', 'threads': args['threads'],
            'runs': args['runs'], 'rate_hz': args.get('rate') or None, 'load_s': load_s,
            'median_ms': med,
            'p90_ms': float(np.percentile(ms, 90)), 'p99_ms': float(np.percentile(ms, 99)),
            'pairs_per_s': 1000.0 / med,
            'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}


def used_device(backend) -> str:
    """The device a backend really runs on: torch's device, ONNX Runtime's first provider."""
    info = backend.model_info
    if info.get('device'):
        return str(info['device'])
    if info.get('providers'):
        return str(info['providers'][0])
    return 'cpu'


def run_isolated(args: Dict) -> Dict:
    """Measure in a fresh spawned process; re-raise its error as RuntimeError."""
    ctx = mp.get_context('spawn')
    with ctx.Pool(1) as pool:
        return pool.apply(_measure, (args,))


def _row(r: Dict) -> str:
    return (f'| {r["describe"]} | {r["size"]} | {r["threads"]} | {r["median_ms"]:.1f} | '
            f'{r["p90_ms"]:.1f} | {r["p99_ms"]:.1f} | {r["pairs_per_s"]:.1f} | '
            f'{r["peak_rss_mb"]:.0f} | {r["device"]} {r["precision"]} |')


def main(argv=None) -> int:
    """Entry point of ssvif-bench; exit 2 on a bad model or argument."""
    ap = argparse.ArgumentParser(prog='ssvif-bench', description=__doc__.split('\n\n')[0])
    ap.add_argument('--model', default='', help='model folder or file ("" = embedded default)')
    ap.add_argument('--backend', default='onnxruntime',
                    help='identity | maxluma | torch | onnxruntime | tensorrt')
    ap.add_argument('--device', default='',
                    help='cpu | cuda | cuda:N (onnxruntime also tensorrt); default cpu')
    ap.add_argument('--precision', default='fp32', choices=('fp32', 'fp16'),
                    help='fp16: torch autocast on CUDA, or a TensorRT FP16 engine')
    ap.add_argument('--size', default='640x480', help='WxH of the input pair')
    ap.add_argument('--threads', type=int, default=2, help='intra-op threads')
    ap.add_argument('--runs', type=int, default=50)
    ap.add_argument('--warmup', type=int, default=5)
    ap.add_argument('--rate', type=float, default=0.0,
                    help='start the timed calls at this rate [Hz] (0: back to back)')
    ap.add_argument('--compare', default=None,
                    help='second model folder, measured in the same run')
    ap.add_argument('--compare-backend', default=None, help='backend of --compare (default: same)')
    ap.add_argument('--json', default=None, help='also write the results to this JSON file')
    args = ap.parse_args(argv)
    try:
        w, h = (int(v) for v in args.size.lower().split('x'))
    except ValueError:
        print(f'ssvif-bench: error: --size must be WxH, got {args.size!r}', file=sys.stderr)
        return 2
    if args.runs < 1 or args.warmup < 0 or args.threads < 1 or not args.rate >= 0:
        print('ssvif-bench: error: --runs >= 1, --warmup >= 0, --threads >= 1, --rate >= 0',
              file=sys.stderr)
        return 2
    if args.device and not re.fullmatch(r'cpu|cuda(:\d+)?|tensorrt', args.device):
        print(f'ssvif-bench: error: --device must be cpu, cuda or cuda:N (onnxruntime: also '
              f'tensorrt), got {args.device!r}', file=sys.stderr)
        return 2
    jobs = [{'model': args.model, 'backend': args.backend}]
    if args.compare is not None:
        jobs.append({'model': args.compare, 'backend': args.compare_backend or args.backend})
    results = []
    for job in jobs:
        job.update(size=(w, h), threads=args.threads, runs=args.runs, warmup=args.warmup,
                   rate=args.rate, device=args.device, precision=args.precision)
        try:
            results.append(run_isolated(job))
        except Exception as exc:  # noqa: BLE001 - the child's error, reported by name
            print(f'ssvif-bench: error: {job["backend"]} model {job["model"] or "(default)"}: '
                  f'{exc}', file=sys.stderr)
            return 2
    pace = f' started at {args.rate:g} Hz' if args.rate else ' back to back'
    print(f'input: {results[0]["input"]}, {args.warmup} warm-up + {args.runs} timed runs{pace}')
    print('| backend:model | size | threads | median ms | p90 ms | p99 ms | pairs/s | '
          'peak RSS MB | device |')
    print('|---|---|---|---|---|---|---|---|---|')
    for r in results:
        print(_row(r))
    out: Dict[str, Optional[object]] = {'results': results}
    if len(results) == 2:
        a, b = results
        ratio = {'median_ms': b['median_ms'] / a['median_ms'],
                 'pairs_per_s': b['pairs_per_s'] / a['pairs_per_s'],
                 'peak_rss_mb': b['peak_rss_mb'] / a['peak_rss_mb']}
        out['ratio_compare_over_model'] = ratio
        print(f'ratio (compare / model): latency x{ratio["median_ms"]:.2f}, throughput '
              f'x{ratio["pairs_per_s"]:.2f}, peak RSS x{ratio["peak_rss_mb"]:.2f}')
    target = 30.0  # the embedded model's class: fusion + class map at 640x480, 2 threads
    if results[0]['device'] == 'cpu':
        print(f'target for the default CPU model at 640x480 on 2 threads: >= {target:.0f} '
              f'pairs/s median; measured {results[0]["pairs_per_s"]:.1f}')
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
