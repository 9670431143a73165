"""``ssvif-eval segmentation`` (IoU against label images) and ``ssvif-eval boxes`` (box scores).

See :mod:`ssvif_ros.eval_cli` for the commands and :mod:`ssvif_ros.labels` for the box scores.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from ssvif_ros import imaging, labels, seg_metrics
from ssvif_ros.eval_common import (class_ids, EvalError, json_tree, json_value, list_files,
                                   list_images, nothing_scored, progress, read_checked,
                                   size_text, write_report)


def run_segmentation(args) -> int:
    """``ssvif-eval segmentation``; returns the exit status (EvalError for the user's mistakes)."""
    try:
        names = imaging.class_names(args.classes)
    except ValueError as e:
        raise EvalError(f'--classes {args.classes!r}: {e}') from None
    preds = list_images(args.pred, 'prediction (--pred)')
    labels = list_images(args.labels, 'label (--labels)')
    ignore = None if args.ignore_index < 0 else args.ignore_index
    problems: List[str] = []
    missing = sorted(s for s in labels if s not in preds)
    extra = sorted(s for s in preds if s not in labels)
    problems += [f'label {s}: no prediction, not scored' for s in missing]
    problems += [f'prediction {s}: no label, not scored' for s in extra]
    stems = sorted(s for s in labels if s in preds)
    if not stems:
        raise EvalError(f'no prediction/label pairs with the same file stem in {args.pred} and '
                        f'{args.labels}')
    cm = np.zeros((len(names), len(names)), dtype=np.int64)
    mismatched = {}
    bar = progress(len(stems), args.quiet)
    for s in stems:
        p = class_ids(read_checked(preds[s]), preds[s])
        lab = class_ids(read_checked(labels[s]), labels[s])
        if p.shape != lab.shape:
            mismatched[s] = f'prediction {size_text(p)}, label {size_text(lab)}'
            problems.append(f'{s}: prediction {size_text(p)} and label {size_text(lab)} differ '
                            f'in size, not scored')
        else:
            try:
                cm += seg_metrics.confusion_matrix(p, lab, len(names), ignore)
            except ValueError as e:
                raise EvalError(f'{preds[s].name} / {labels[s].name}: {e}') from None
        bar.update(1)
    bar.close()
    iou, miou = seg_metrics.iou_from_confusion(cm)
    acc = seg_metrics.pixel_accuracy(cm)
    n_scored = len(stems) - len(mismatched)
    if not n_scored:
        raise nothing_scored(problems)
    lines = [f'## Segmentation ({n_scored} images, {len(names)} classes, ignore index '
             f'{ignore})', '', '| Class | IoU |', '|---|---|']
    for name, v in zip(names, iou):
        lines.append(f'| {name} | {"n/a" if np.isnan(v) else f"{v:.4f}"} |')
    lines.append(f'| **mIoU** | **{miou:.4f}** |')
    lines += ['', f'Pixel accuracy {acc:.4f}. mIoU averages the classes present in labels or '
              f'predictions (n/a classes are left out).']
    if problems:
        lines += ['', '### Problems', ''] + [f'- {p}' for p in problems]
    text = '\n'.join(lines) + '\n'
    doc = {'classes': list(names), 'ignore_index': ignore, 'n_images': n_scored,
           'iou': {n: json_value(float(v)) for n, v in zip(names, iou)},
           'miou': json_value(miou), 'pixel_accuracy': json_value(acc),
           'confusion_matrix': cm.tolist(), 'missing_predictions': missing,
           'predictions_without_label': extra, 'size_mismatch': mismatched,
           'problems': problems}
    return write_report(args.out, 'segmentation_metrics', text, doc, problems)


BASELINE_NAME = 'thermal rule (> mean + 2 SD = person)'


def _box_files(folder: str) -> Dict[str, Path]:
    return list_files(folder, 'box (--boxes)', ('.txt',), '.txt box files')


def _split_names(text: str, what: str) -> List[str]:
    names = [n.strip() for n in text.split(',') if n.strip()]
    if not names:
        raise EvalError(f'{what}: give comma-separated class names')
    return names


def score_box_folder(pred: Dict[str, Path], boxes: Dict[str, List[labels.Box]],
                     classes: Sequence[str], quiet: bool = True) -> Tuple[Dict, List[str]]:
    """Box scores of one folder of class maps (stem -> path) against parsed boxes."""
    scorer = labels.BoxScorer(classes)
    shares = labels.MarkedShare(classes)
    problems = [f'{s}: no prediction, not scored' for s in sorted(boxes) if s not in pred]
    bar = progress(len(boxes), quiet)
    for s in sorted(boxes):
        if s in pred:
            ids = class_ids(read_checked(pred[s]), pred[s])
            scorer.add(ids, boxes[s])
            shares.add(ids)
        bar.update(1)
    bar.close()
    res = scorer.result()
    res['marked_share'] = shares.result()
    return res, problems


def marked_share_folder(pred: Dict[str, Path], classes: Sequence[str],
                        quiet: bool = True) -> Dict:
    """Marked shares (:class:`ssvif_ros.labels.MarkedShare`) of a folder of class maps."""
    shares = labels.MarkedShare(classes)
    bar = progress(len(pred), quiet)
    for s in sorted(pred):
        shares.add(class_ids(read_checked(pred[s]), pred[s]))
        bar.update(1)
    bar.close()
    return shares.result()


def run_marked(args) -> int:
    """``ssvif-eval marked``: share of each image marked per class, no labels needed."""
    classes = _split_names(args.classes, '--classes')
    try:
        for c in classes:
            labels.class_id(c)
    except labels.BoxError as e:
        raise EvalError(str(e)) from None
    if args.name and len(args.name) != len(args.pred):
        raise EvalError(f'--name given {len(args.name)} times for {len(args.pred)} --pred')
    names = args.name or [Path(p).name for p in args.pred]
    rows = {name: marked_share_folder(list_images(folder, 'prediction (--pred)'), classes,
                                      args.quiet)
            for name, folder in zip(names, args.pred)}
    text = share_markdown(rows, classes)
    doc = {'classes': classes, 'methods': {n: json_tree(r) for n, r in rows.items()}}
    return write_report(args.out, 'marked_share', text, doc, [])


def run_boxes(args) -> int:
    """``ssvif-eval boxes``; returns the exit status (EvalError for the user's mistakes)."""
    classes = _split_names(args.classes, '--classes')
    try:
        for c in classes:
            labels.class_id(c)
        cmap = labels.box_class_map(_split_names(args.box_classes, '--box-classes'))
    except labels.BoxError as e:
        raise EvalError(str(e)) from None
    if args.name and len(args.name) != len(args.pred):
        raise EvalError(f'--name given {len(args.name)} times for {len(args.pred)} --pred')
    names = args.name or [Path(p).name for p in args.pred]
    try:
        boxes = {s: labels.read_boxes(p, cmap) for s, p in _box_files(args.boxes).items()}
    except labels.BoxError as e:
        raise EvalError(str(e)) from None
    rows, problems = {}, []
    for name, folder in zip(names, args.pred):
        res, probs = score_box_folder(list_images(folder, 'prediction (--pred)'), boxes,
                                      classes, args.quiet)
        rows[name] = res
        problems += [f'{name}: {p}' for p in probs]
    if args.baseline_ir:
        irs = list_images(args.baseline_ir, 'thermal (--baseline-ir)')
        scorer = labels.BoxScorer(classes)
        for s in sorted(boxes):
            if s not in irs:
                problems.append(f'{BASELINE_NAME}: {s}: no thermal image, not scored')
                continue
            scorer.add(labels.thermal_rule(read_checked(irs[s])), boxes[s])
        rows[BASELINE_NAME] = scorer.result()
    if not any(r['n_images'] for r in rows.values()):
        raise nothing_scored(problems)
    text = box_markdown(rows, classes, len(boxes))
    text += '\n' + share_markdown({n: r['marked_share'] for n, r in rows.items()
                                   if 'marked_share' in r}, classes)
    if problems:
        text += '\n### Problems\n\n' + '\n'.join(f'- {p}' for p in problems) + '\n'
    doc = {'classes': classes, 'box_classes': args.box_classes.split(','),
           'found_fraction': 0.2, 'grow_px': 5, 'n_box_files': len(boxes),
           'interval': '95 % percentile bootstrap over images, 2000 resamples, seed 0',
           'methods': {n: json_tree(r) for n, r in rows.items()}, 'problems': problems}
    return write_report(args.out, 'box_scores', text, doc, problems)


def _fmt(v: float) -> str:
    return 'n/a' if v is None or (isinstance(v, float) and math.isnan(v)) else f'{v:.3f}'


def _ci(ci) -> str:
    return 'n/a' if ci is None or any(v is None or v != v for v in ci) else \
        f'{ci[0]:.3f}–{ci[1]:.3f}'


def box_markdown(rows: Dict[str, Dict], classes: Sequence[str], n_files: int) -> str:
    """The box-score table: one row per method; box-F1 with its interval, per class F1 / R / P."""
    head = ['Method', 'box-F1', '95 % CI']
    head += [f'{c} {k}' for c in classes for k in ('F1', 'R', 'P')]
    lines = [f'## Box scores ({n_files} box files; found = 20 % of a box, precision in boxes '
             f'+5 px)', '', '| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for name, r in rows.items():
        cells = [name, f'**{_fmt(r["box_f1"])}**', _ci(r.get('box_f1_ci'))]
        for c in classes:
            v = r['classes'][c]
            cells += [_fmt(v['f1']), _fmt(v['recall']), _fmt(v['precision'])]
        lines.append('| ' + ' | '.join(cells) + ' |')
    counts = ', '.join(f'{c} {next(iter(rows.values()))["classes"][c]["boxes"]}'
                       for c in classes) if rows else ''
    lines += ['', f'Boxes scored: {counts}. R = box recall, P = pixel precision. 95 % CI: '
              'percentile bootstrap over the images (2000 resamples); a wide one means the '
              'split is too small to rank close models.']
    return '\n'.join(lines) + '\n'


def share_markdown(rows: Dict[str, Dict], classes: Sequence[str]) -> str:
    """The marked-share table: per method the mean and max share of an image per class."""
    if not rows:
        return ''
    head = ['Method', 'images'] + [f'{c} mean / max' for c in list(classes) + ['object']]
    lines = ['## Marked share (share of each image marked as the class, in %)', '',
             '| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for name, r in rows.items():
        cells = [name, str(r['n_images'])]
        for c in list(classes) + ['object']:
            v = r[c]
            cells.append('n/a' if v['mean'] != v['mean'] else
                         f'{100 * v["mean"]:.1f} / {100 * v["max"]:.1f}')
        lines.append('| ' + ' | '.join(cells) + ' |')
    lines += ['', 'object = any of the classes. Objects rarely cover more than a few percent of '
              'a road scene: a large mean or max share on a rig means the model paints walls, '
              'ground or vegetation.']
    return '\n'.join(lines) + '\n'
