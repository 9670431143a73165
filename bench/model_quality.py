#!/usr/bin/env python3
"""Segmentation and fusion quality of deployable models on the MSRS validation pairs.

Every model runs through the same backend interface as the node, and each table has the trivial
rule beside the models:

* segmentation (when ``val/boxes`` exists): box-F1 and per-class F1 / box recall / pixel
  precision against the validation boxes (:class:`ssvif_ros.labels.BoxScorer`, as
  ``ssvif-eval boxes``), beside the rule "thermal > mean + 2 SD = person";
* box-F1 carries its 95 % percentile bootstrap interval over the validation images;
* marked share on RoadScene (another rig, no labels): the mean and largest share of an image
  marked as person, car, bike or any of them, beside the thermal rule; a model that paints walls
  and vegetation shows shares far above the few percent objects cover;
* fusion: the SSVIF paper's MI, VIF, Qabf, SSIM and DeltaE (plus EN, SD, AG), VIFB convention
  (:mod:`ssvif_ros.metrics`), mean over the pairs, beside the max-luma rule (visible image with
  Y replaced by max(Y, IR), backend ``maxluma``), and the mean |fused - max-luma| in grey levels
  (0..255, over pixels and channels), which says how much the learned fusion changes the image.

    .venv/bin/python bench/model_quality.py [--model NAME=DIR ...] [--data DIR] [--json F]

Without ``--model`` it scores the embedded default model. The last lines say, for the first
model against each other, on how many of the five paper metrics it matches or beats it.
"""
import argparse
import json
from pathlib import Path
import sys

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PAPER = ['MI', 'VIF', 'Qabf', 'SSIM', 'DeltaE']
EXTRA = ['EN', 'SD', 'AG']


def score(backend, pairs, names, convention, boxes=None):
    """Mean of each metric over ``pairs`` fused by ``backend`` (+ box scores with ``boxes``)."""
    from ssvif_ros import imaging, labels, metrics
    rows, diffs = [], []
    scorer = labels.BoxScorer()
    for i, (vis_raw, ir_raw) in enumerate(pairs):
        vis, ir = imaging.preprocess_pair(vis_raw, ir_raw)
        fused, ids = backend.infer(vis, ir)
        f8 = imaging.to_uint8(fused)
        rows.append(metrics.compute_fusion_metrics(
            imaging.to_uint8(vis), imaging.to_uint8(ir[:, :, 0]), f8,
            names=names, convention=convention))
        rule = imaging.to_uint8(imaging.max_luma_fusion(vis, ir))
        diffs.append(float(np.abs(f8.astype(np.float32) - rule).mean()))
        if boxes is not None:
            scorer.add(ids, boxes[i])
    out = {k: float(np.mean([r[k] for r in rows])) for k in names}
    out['|F-maxluma|'] = float(np.mean(diffs))
    if boxes is not None:
        out['boxes'] = scorer.result()
    return out


def thermal_rule_boxes(pairs, boxes):
    """Box scores of the rule "thermal > mean + 2 SD = person"."""
    from ssvif_ros import labels
    scorer = labels.BoxScorer()
    for (_, ir_raw), b in zip(pairs, boxes):
        scorer.add(labels.thermal_rule(ir_raw), b)
    return scorer.result()


def _f(v):
    return 'n/a' if v is None or v != v else f'{v:.3f}'


def marked_shares(backend, pairs):
    """:class:`ssvif_ros.labels.MarkedShare` result of ``backend``'s class maps (None: rule)."""
    from ssvif_ros import imaging, labels
    shares = labels.MarkedShare()
    for vis_raw, ir_raw in pairs:
        if backend is None:
            shares.add(labels.thermal_rule(ir_raw))
            continue
        vis, ir = imaging.preprocess_pair(vis_raw, ir_raw)
        shares.add(backend.infer(vis, ir)[1])
    return shares.result()


def print_share_table(rows):
    """Markdown table of marked shares (mean / max, %) per model."""
    cols = ('person', 'car', 'bike', 'object')
    print('| model | ' + ' | '.join(f'{c} mean / max %' for c in cols) + ' |')
    print('|---|' + '---|' * len(cols))
    for name, r in rows.items():
        print(f'| {name} | ' + ' | '.join(f'{100 * r[c]["mean"]:.1f} / {100 * r[c]["max"]:.1f}'
                                          for c in cols) + ' |')


def print_box_table(results):
    """Markdown table of box-F1 and per-class F1 (R / P) for each row that has box scores."""
    classes = ('person', 'car', 'bike')
    print('| model | box-F1 | 95 % CI | ' + ' | '.join(f'{c} F1 (R / P)' for c in classes)
          + ' |')
    print('|---|---|---|' + '---|' * len(classes))
    for name, r in results.items():
        b = r.get('boxes')
        if b is None:
            continue
        cells = [f'{_f(b["classes"][c]["f1"])} ({_f(b["classes"][c]["recall"])} / '
                 f'{_f(b["classes"][c]["precision"])})' for c in classes]
        lo, hi = b['box_f1_ci']
        print(f'| {name} | **{_f(b["box_f1"])}** | {_f(lo)}–{_f(hi)} | ' + ' | '.join(cells)
              + ' |')


def main(argv=None) -> int:
    """Score the models and print a markdown table (and optional JSON)."""
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--model', action='append', default=[], metavar='NAME=DIR',
                    help='model folder to score (repeatable); default: the embedded model')
    ap.add_argument('--backend', default='onnxruntime')
    ap.add_argument('--data', default=None, help='MSRS folder with val/vi and val/ir')
    ap.add_argument('--convention', default='vifb', choices=('vifb', 'cddfuse'))
    ap.add_argument('--roadscene', default=None,
                    help='RoadScene folder (vi/, ir/) for the marked share; default the shared '
                    'data copy; "none" skips it')
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--json', default=None)
    args = ap.parse_args(argv)
    from ssvif_ros import imaging, metrics
    from ssvif_ros.backends import create_backend
    from ssvif_ros.dataset_paths import list_pairs, shared_data_dir
    data = Path(args.data) if args.data else shared_data_dir() / 'msrs'
    try:
        files = list_pairs(data / 'val')
    except FileNotFoundError as exc:
        print(f'MSRS validation pairs not found: {exc}', file=sys.stderr)
        return 2
    pairs = [(imaging.read_image(vi, 'rgb'), imaging.read_image(ir, 'gray')) for vi, ir in files]
    box_dir = data / 'val' / 'boxes'
    boxes = None
    if box_dir.is_dir():
        from ssvif_ros import labels
        cmap = labels.box_class_map(labels.DEFAULT_BOX_CLASSES)
        boxes = [labels.read_boxes(box_dir / f'{vi.stem}.txt', cmap)
                 if (box_dir / f'{vi.stem}.txt').is_file() else [] for vi, _ in files]
    models = [m.split('=', 1) for m in args.model] or [['default', '']]
    names = PAPER + EXTRA
    road = None
    if args.roadscene != 'none':
        road_dir = Path(args.roadscene) if args.roadscene else shared_data_dir() / 'roadscene'
        try:
            road = [(imaging.read_image(vi, 'rgb'), imaging.read_image(ir, 'gray'))
                    for vi, ir in list_pairs(road_dir)]
        except FileNotFoundError as exc:
            print(f'RoadScene pairs not found: {exc}', file=sys.stderr)
            return 2
    results, shares = {}, {}
    for name, folder in models:
        backend = create_backend(args.backend, folder, args.threads)
        results[name] = score(backend, pairs, names, args.convention, boxes)
        if road is not None:
            shares[name] = marked_shares(backend, road)
        print(f'scored {name}', flush=True)
    results['max-luma rule'] = score(create_backend('maxluma'), pairs, names, args.convention)
    if boxes is not None:
        results['thermal rule (> mean + 2 SD = person)'] = {
            'boxes': thermal_rule_boxes(pairs, boxes)}
        n_boxes = sum(len(b) for b in boxes)
        print(f'\nSegmentation, MSRS val, {len(pairs)} pairs, {n_boxes} boxes (found: 20 % of '
              'a box carries its class; precision: class pixels inside its boxes + 5 px)')
        print_box_table(results)
    if road is not None:
        shares['thermal rule (> mean + 2 SD = person)'] = marked_shares(None, road)
        print(f'\nMarked share, RoadScene, {len(road)} pairs (share of each image marked as the '
              'class; no labels: objects cover a few percent of a road scene)')
        print_share_table(shares)
    better = {m: metrics.METRICS[m].higher_is_better for m in names}
    print(f'\nFusion, MSRS val, {len(pairs)} pairs, {args.convention} convention '
          '(MI and SSIM summed over the two sources; |F-maxluma| in grey levels)')
    cols = names + ['|F-maxluma|']
    print('| model | ' + ' | '.join(f'{m} {"↑" if better[m] else "↓"}' for m in names)
          + ' | mean abs(F - max-luma) |')
    print('|---|' + '---|' * len(cols))
    for name, r in results.items():
        if names[0] in r:
            print(f'| {name} | ' + ' | '.join(f'{r[m]:.4f}' for m in cols) + ' |')
    first = models[0][0]
    wins = {}
    for other in results:
        if other == first or names[0] not in results[other]:
            continue
        ok = [m for m in PAPER if (results[first][m] >= results[other][m]) == better[m]
              or results[first][m] == results[other][m]]
        wins[other] = ok
        print(f'{first} matches or beats {other} on {len(ok)}/5 paper metrics: {ok}')
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as f:
            json.dump({'pairs': len(pairs), 'convention': args.convention, 'means': results,
                       'roadscene_marked_share': shares, 'wins_of_first': wins}, f, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
