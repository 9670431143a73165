#!/usr/bin/env python3
"""Fusion quality of deployable models on the MSRS validation pairs, side by side.

Every model runs through the same backend interface as the node; the trivial rule (visible
image with Y replaced by max(Y, IR), backend ``maxluma``) is always reported beside them,
because several metrics reward it. Metrics: the SSVIF paper's MI, VIF, Qabf, SSIM and DeltaE
(plus EN, SD, AG), VIFB convention (:mod:`ssvif_ros.metrics`), mean over the pairs.

    .venv/bin/python bench/model_quality.py [--model NAME=DIR ...] [--data DIR] [--json F]

Without ``--model`` it scores the embedded default model. The last column pair says, for the
first model against each other, on how many of the five paper metrics it matches or beats it.
"""
import argparse
import json
import os
from pathlib import Path
import sys

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PAPER = ['MI', 'VIF', 'Qabf', 'SSIM', 'DeltaE']
EXTRA = ['EN', 'SD', 'AG']


def score(backend, pairs, names, convention):
    """Mean of each metric over ``pairs`` fused by ``backend``."""
    from ssvif_ros import imaging, metrics
    rows = []
    for vis_raw, ir_raw in pairs:
        vis, ir = imaging.preprocess_pair(vis_raw, ir_raw)
        fused, _ = backend.infer(vis, ir)
        rows.append(metrics.compute_fusion_metrics(
            imaging.to_uint8(vis), imaging.to_uint8(ir[:, :, 0]), imaging.to_uint8(fused),
            names=names, convention=convention))
    return {k: float(np.mean([r[k] for r in rows])) for k in names}


def main(argv=None) -> int:
    """Score the models and print a markdown table (and optional JSON)."""
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--model', action='append', default=[], metavar='NAME=DIR',
                    help='model folder to score (repeatable); default: the embedded model')
    ap.add_argument('--backend', default='onnxruntime')
    ap.add_argument('--data', default=None, help='MSRS folder with val/vi and val/ir')
    ap.add_argument('--convention', default='vifb', choices=('vifb', 'cddfuse'))
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--json', default=None)
    args = ap.parse_args(argv)
    from ssvif_ros import imaging, metrics
    from ssvif_ros.backends import create_backend
    data = Path(args.data) if args.data else \
        Path(os.environ.get('SSVIF_DATA', REPO.parent / 'shared' / 'data')) / 'msrs'
    vi_dir = data / 'val' / 'vi'
    if not vi_dir.is_dir():
        print(f'MSRS validation pairs not found at {vi_dir}', file=sys.stderr)
        return 2
    stems = sorted(os.listdir(vi_dir))
    pairs = [(imaging.read_image(vi_dir / s, 'rgb'),
              imaging.read_image(data / 'val' / 'ir' / s, 'gray')) for s in stems]
    models = [m.split('=', 1) for m in args.model] or [['default', '']]
    names = PAPER + EXTRA
    results = {}
    for name, folder in models:
        results[name] = score(create_backend(args.backend, folder, args.threads), pairs, names,
                              args.convention)
        print(f'scored {name}', flush=True)
    results['max-luma rule'] = score(create_backend('maxluma'), pairs, names, args.convention)
    better = {m: metrics.METRICS[m].higher_is_better for m in names}
    print(f'\nMSRS val, {len(pairs)} pairs, {args.convention} convention '
          '(MI and SSIM summed over the two sources)')
    print('| model | ' + ' | '.join(f'{m} {"↑" if better[m] else "↓"}' for m in names) + ' |')
    print('|---|' + '---|' * len(names))
    for name, r in results.items():
        print(f'| {name} | ' + ' | '.join(f'{r[m]:.4f}' for m in names) + ' |')
    first = models[0][0]
    wins = {}
    for other in results:
        if other == first:
            continue
        ok = [m for m in PAPER if (results[first][m] >= results[other][m]) == better[m]
              or results[first][m] == results[other][m]]
        wins[other] = ok
        print(f'{first} matches or beats {other} on {len(ok)}/5 paper metrics: {ok}')
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as f:
            json.dump({'pairs': len(pairs), 'convention': args.convention, 'means': results,
                       'wins_of_first': wins}, f, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
