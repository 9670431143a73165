"""``ssvif-eval``: score fused images (fusion metrics) and segmentation maps (IoU) from folders.

Fusion::

    ssvif-eval fusion --vi VI_DIR --ir IR_DIR --fused DIR [--fused DIR2 ...] --out OUT_DIR
                      [--metrics EN,MI,...] [--convention vifb|cddfuse] [--contact IMG1,IMG2]
                      [--name NAME ...]

* Sources are paired by file stem (``VI_DIR/x.jpg`` with ``IR_DIR/x.png``...). All images must
  be 8 bit (the metrics work on a 0..255 scale); a 16-bit file is an error naming it.
* Each ``--fused`` folder is one method, named after the folder unless ``--name`` gives one name
  per ``--fused``. For source stem ``s`` and method ``m`` the fused file is, in this order of
  preference: ``s_m.<ext>`` (VIFB layout, so one folder holding all methods can be passed several
  times with different ``--name``), ``s.<ext>``, or the single file ``s_<anything>.<ext>``
  (a longer source stem that also matches wins, so ``walking2_X`` never counts as ``walking``).
* Written to OUT_DIR: ``fusion_metrics.md`` (mean of each metric per method, side by side),
  ``fusion_metrics.json`` (means, per-image values, and the problems below), ``per_image.csv``
  and ``contact_sheet.png`` (vi | ir | each method for the ``--contact`` stems, default the
  first three).
* A source stem without a fused image of a method, a fused image whose size differs from the
  sources, a stem missing one of the sources, and ambiguous file names are printed and listed
  in the JSON; they are never dropped silently. Means are over the images each method has.

Segmentation::

    ssvif-eval segmentation --pred DIR --labels DIR --classes msrs|fmb|N --out OUT_DIR
                            [--ignore-index 255]

Predictions and labels are single-channel class-id images paired by stem; writes
``segmentation_metrics.md`` and ``.json`` (per-class IoU with names from
:func:`ssvif_ros.imaging.class_names`, mIoU over classes present in label or prediction, pixel
accuracy, confusion matrix).

Object boxes::

    ssvif-eval boxes --pred DIR [--pred DIR2 ...] [--name NAME ...] --boxes DIR --out OUT_DIR
                     [--classes person,car,bike] [--box-classes person,bicycle,car]
                     [--baseline-ir IR_DIR]

Scores semantic class maps (single-channel images of semantic ids, :mod:`ssvif_ros.labels`:
1 car, 2 person, 3 bike) against YOLO box files: per class box recall (a box is found when at
least 20 % of its pixels carry its class), pixel precision (share of the class's pixels inside a
box of that class grown by 5 px), their F1, and box-F1 = the mean F1 over the classes. One row
per ``--pred`` folder; ``--baseline-ir`` adds the trivial rule "thermal > mean + 2 SD = person"
computed from that folder's thermal images. Every box file is an image to score (an empty one has
no objects); a box file without a prediction is listed as a problem. Writes
``box_scores.md`` and ``box_scores.json``.

Errors (missing or empty folder, unreadable image, bad option) print one line naming the thing at
fault and exit with status 2.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ssvif_ros import dataset_paths, imaging, labels, metrics

TILE_HEIGHT = 180


class EvalError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


# ---------------------------------------------------------------------------------------------
# Files

def _list_files(folder: str, what: str, extensions: Sequence[str], kind: str) -> Dict[str, Path]:
    """Map stem -> path of ``folder``'s files with ``extensions`` (error if missing or empty)."""
    d = Path(folder)
    if not d.is_dir():
        raise EvalError(f'{what} folder not found: {d}')
    files, _ = dataset_paths.files_by_stem(d, extensions)  # x.png before x.jpg: first wins
    if not files:
        raise EvalError(f'{what} folder has no {kind}: {d}')
    return files


def _list_images(folder: str, what: str) -> Dict[str, Path]:
    """Map stem -> image path for the image files of ``folder`` (error if missing or empty)."""
    return _list_files(folder, what, imaging.IMAGE_EXTENSIONS,
                       f'images ({", ".join(imaging.IMAGE_EXTENSIONS)})')


def match_fused(stems: Sequence[str], fused_files: Dict[str, Path], method: str
                ) -> Tuple[Dict[str, Path], Dict[str, List[str]]]:
    """Find each source stem's fused file among ``fused_files`` (stem -> path).

    Returns ``(matches, ambiguous)``: ``matches[stem] = path``; ``ambiguous[stem]`` lists the
    candidate file names when several ``stem_*`` files exist and none is ``stem_<method>``.
    """
    stems_sorted = sorted(stems, key=len, reverse=True)
    owner: Dict[str, str] = {}
    for fstem in fused_files:
        for s in stems_sorted:  # longest source stem that the fused stem extends
            if fstem == s or fstem.startswith(s + '_'):
                owner[fstem] = s
                break
    matches: Dict[str, Path] = {}
    ambiguous: Dict[str, List[str]] = {}
    for s in stems:
        cands = [f for f, o in owner.items() if o == s]
        if f'{s}_{method}' in cands:
            matches[s] = fused_files[f'{s}_{method}']
        elif s in cands:
            matches[s] = fused_files[s]
        elif len(cands) == 1:
            matches[s] = fused_files[cands[0]]
        elif len(cands) > 1:
            ambiguous[s] = sorted(fused_files[c].name for c in cands)
    return matches, ambiguous


def _read(path: Path, eight_bit: bool = False) -> np.ndarray:
    try:
        img = imaging.read_image(path)
    except (OSError, ValueError) as e:
        raise EvalError(str(e)) from None
    if eight_bit and img.dtype != np.uint8:
        raise EvalError(f'fusion metrics expect 8-bit images (0..255), got {img.dtype}: {path} '
                        f'(save it as 8 bit with the normalization the fusion input used)')
    return img


def _size(img: np.ndarray) -> str:
    return f'{img.shape[1]}x{img.shape[0]}'


def _finite_mean(values: Sequence[float]) -> float:
    """Mean of the finite values (metrics that failed on an image are NaN); NaN if none."""
    ok = [v for v in values if math.isfinite(v)]
    return float(np.mean(ok)) if ok else float('nan')


def _json_value(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


# ---------------------------------------------------------------------------------------------
# Fusion

def _fusion(args) -> int:
    try:
        names = metrics.resolve_names(args.metrics.split(',') if args.metrics else None)
    except ValueError as e:
        raise EvalError(str(e)) from None
    vi_files = _list_images(args.vi, 'visible (--vi)')
    ir_files = _list_images(args.ir, 'infrared (--ir)')
    if args.name and len(args.name) != len(args.fused):
        raise EvalError(f'--name was given {len(args.name)} times but --fused {len(args.fused)} '
                        f'times; give one name per --fused folder or none')
    methods = list(args.name) if args.name else [Path(f).resolve().name for f in args.fused]
    if len(set(methods)) != len(methods):
        raise EvalError(f'method names must be unique, got {methods}; use --name')
    problems: List[str] = []
    stems = sorted(s for s in vi_files if s in ir_files)
    for s in sorted(set(vi_files) ^ set(ir_files)):
        where = 'infrared' if s in vi_files else 'visible'
        problems.append(f'source {s}: no {where} image, not scored')
    if not stems:
        raise EvalError(f'no visible/infrared pairs with the same file stem in {args.vi} and '
                        f'{args.ir}')
    report: Dict[str, dict] = {}
    matches: Dict[str, Dict[str, Path]] = {}
    for method, folder in zip(methods, args.fused):
        files = _list_images(folder, f'fused (--fused for {method})')
        m, amb = match_fused(stems, files, method)
        matches[method] = m
        missing = [s for s in stems if s not in m and s not in amb]
        report[method] = {'folder': str(Path(folder)), 'missing': missing,
                          'ambiguous': amb, 'size_mismatch': {}, 'per_image': {}}
        for s in missing:
            problems.append(f'{method}: no fused image for {s}')
        for s, c in amb.items():
            problems.append(f'{method}: several fused files could be {s} ({", ".join(c)}); '
                            f'name them {s}_{method}.* or {s}.*')
    contact = args.contact.split(',') if args.contact else stems[:3]
    for s in contact:
        if s not in stems:
            raise EvalError(f'--contact image {s!r} is not a visible/infrared pair stem')
    jobs = [(s, m) for s in stems for m in methods if s in matches[m]]
    tiles: Dict[str, Dict[str, np.ndarray]] = {
        s: {'vi': _read(vi_files[s], True), 'ir': _read(ir_files[s], True)} for s in contact}
    bar = _progress(len(jobs), args.quiet)
    cur_stem, vis, ir = None, None, None
    for s, method in jobs:
        if s != cur_stem:
            cur_stem = s
            vis, ir = _read(vi_files[s], True), _read(ir_files[s], True)
            if vis.shape[:2] != ir.shape[:2]:
                problems.append(f'source {s}: visible {_size(vis)} and infrared {_size(ir)} '
                                f'differ in size, not scored')
                vis = None
        if vis is None:
            bar.update(1)
            continue
        path = matches[method][s]
        fused = _read(path, True)
        if fused.shape[:2] != vis.shape[:2]:
            report[method]['size_mismatch'][s] = (f'{path.name} is {_size(fused)}, sources are '
                                                  f'{_size(vis)}')
            problems.append(f'{method}: {path.name} is {_size(fused)} but the sources of {s} '
                            f'are {_size(vis)}, not scored')
        else:
            errs: List[str] = []
            try:
                values = metrics.compute_fusion_metrics(vis, ir, fused, names, args.convention,
                                                        errors=errs)
            except ValueError as e:
                raise EvalError(f'{path}: {e}') from None
            problems += [f'{method}: {s}: {e} (value left empty)' for e in errs]
            report[method]['per_image'][s] = values
            if s in tiles:
                tiles[s][method] = fused
        bar.update(1)
    bar.close()
    for method in methods:
        per = report[method]['per_image']
        report[method]['n_images'] = len(per)
        report[method]['mean'] = {n: _finite_mean([v[n] for v in per.values()]) for n in names}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _write_fusion_outputs(out, args, names, methods, stems, report, problems)
    _contact_sheet(out / 'contact_sheet.png', contact, methods, tiles)
    for p in problems:
        print(f'warning: {p}', file=sys.stderr)
    print(_fusion_markdown(args, names, methods, stems, report, problems))
    print(f'wrote {out / "fusion_metrics.md"}, fusion_metrics.json, per_image.csv, '
          f'contact_sheet.png')
    return 0


def _progress(total: int, quiet: bool):
    from tqdm import tqdm
    return tqdm(total=total, desc='ssvif-eval', unit='img', disable=True if quiet else None,
                file=sys.stderr)  # None: off when stderr is not a terminal


def _fusion_markdown(args, names, methods, stems, report, problems) -> str:
    lines = [f'## Fusion metrics ({args.convention} convention, {len(stems)} source pairs)', '',
             '| Metric | ' + ' | '.join(methods) + ' |',
             '|---|' + '---|' * len(methods)]
    for n in names:
        arrow = '↑' if metrics.METRICS[n].higher_is_better else '↓'
        cells = []
        for m in methods:
            v = report[m]['mean'][n]
            cells.append('n/a' if not math.isfinite(v) else f'{v:.4f}')
        lines.append(f'| {n} {arrow} | ' + ' | '.join(cells) + ' |')
    counts = [str(report[m]['n_images']) for m in methods]
    lines.append('| images scored | ' + ' | '.join(counts) + ' |')
    if len({report[m]['n_images'] for m in methods}) > 1:
        lines += ['', 'Methods were scored on different image sets (see problems); their means '
                  'are not directly comparable.']
    if problems:
        lines += ['', '### Problems', ''] + [f'- {p}' for p in problems]
    lines += ['', f'Conventions: `ssvif_ros.metrics` ({args.convention}); ↑ higher is better, '
              '↓ lower is better.']
    return '\n'.join(lines) + '\n'


def _write_fusion_outputs(out: Path, args, names, methods, stems, report, problems) -> None:
    (out / 'fusion_metrics.md').write_text(
        _fusion_markdown(args, names, methods, stems, report, problems), encoding='utf-8')
    doc = {
        'convention': args.convention,
        'metrics': names,
        'higher_is_better': {n: metrics.METRICS[n].higher_is_better for n in names},
        'sources': {'vi': str(Path(args.vi)), 'ir': str(Path(args.ir)), 'pairs': stems},
        'methods': {
            m: {'folder': r['folder'], 'n_images': r['n_images'],
                'mean': {k: _json_value(v) for k, v in r['mean'].items()},
                'missing': r['missing'], 'size_mismatch': r['size_mismatch'],
                'ambiguous': r['ambiguous'],
                'per_image': {s: {k: _json_value(v) for k, v in vals.items()}
                              for s, vals in r['per_image'].items()}}
            for m, r in report.items()},
        'problems': problems,
    }
    (out / 'fusion_metrics.json').write_text(json.dumps(doc, indent=2), encoding='utf-8')
    with open(out / 'per_image.csv', 'w', newline='', encoding='utf-8') as fh:
        w = csv.writer(fh)
        w.writerow(['image', 'method'] + names)
        for s in stems:
            for m in methods:
                vals = report[m]['per_image'].get(s)
                if vals is not None:
                    w.writerow([s, m] + [repr(vals[n]) for n in names])


def _tile(img: Optional[np.ndarray], height: int) -> np.ndarray:
    """An RGB uint8 tile of ``height`` rows (grey placeholder for a missing image)."""
    if img is None:
        return np.full((height, height, 3), 96, dtype=np.uint8)
    x = img  # uint8 (checked when read)
    if x.ndim == 2:
        x = np.repeat(x[:, :, None], 3, axis=2)
    w = max(1, round(x.shape[1] * height / x.shape[0]))
    return imaging.resize(x, (w, height))


def _label(width: int, text: str) -> np.ndarray:
    import cv2
    strip = np.full((22, width, 3), 255, dtype=np.uint8)
    cv2.putText(strip, text[:max(1, width // 8)], (3, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def _contact_sheet(path: Path, stems: Sequence[str], methods: Sequence[str],
                   tiles: Dict[str, Dict[str, np.ndarray]]) -> None:
    """Rows = images, columns = vi | ir | methods; a header strip names each column."""
    cols = ['vi', 'ir'] + list(methods)
    rows = []
    for s in stems:
        cells = [_tile(tiles.get(s, {}).get(c), TILE_HEIGHT) for c in cols]
        rows.append([np.concatenate([_label(t.shape[1], f'{s} {c}'), t], axis=0)
                     for t, c in zip(cells, cols)])
    if not rows:
        return
    width = max(sum(t.shape[1] + 4 for t in r) for r in rows)
    lines = []
    for r in rows:
        line = np.concatenate([np.pad(t, ((0, 4), (0, 4), (0, 0)), constant_values=255)
                               for t in r], axis=1)
        lines.append(np.pad(line, ((0, 0), (0, width - line.shape[1]), (0, 0)),
                            constant_values=255))
    imaging.write_image(path, np.concatenate(lines, axis=0))


def _legend(width: int, class_names: Sequence[str], pal: np.ndarray) -> np.ndarray:
    """A white strip with one colour swatch and name per class (background left out)."""
    import cv2
    strip = np.full((26, width, 3), 255, dtype=np.uint8)
    x = 6
    for i, name in enumerate(class_names):
        if i == 0:
            continue
        strip[6:20, x:x + 14] = pal[i]
        cv2.putText(strip, name, (x + 18, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1,
                    cv2.LINE_AA)
        x += 30 + 9 * len(name)
    return strip


def write_class_sheet(path, rows, class_names: Sequence[str], pal: np.ndarray,
                      alpha: float = 0.55) -> None:
    """A contact sheet of class maps: per row visible | thermal | fused | classes over fused.

    ``rows``: ``(title, vis uint8 H x W x 3, ir uint8 H x W, fused uint8 H x W x 3, ids H x W)``;
    background (id 0) is left uncoloured so the objects stand out. A legend heads the sheet.
    """
    lines = []
    for title, vis, ir, fused, ids in rows:
        over = imaging.class_overlay(fused, ids, pal, alpha, keep_background=True)
        cells = [(vis, 'visible'), (ir, 'thermal'), (fused, 'fused'), (over, 'classes')]
        tiles = []
        for img, what in cells:
            t = _tile(img, TILE_HEIGHT)
            tiles.append(np.pad(np.concatenate([_label(t.shape[1], f'{title} {what}'), t]),
                                ((0, 4), (0, 4), (0, 0)), constant_values=255))
        lines.append(np.concatenate(tiles, axis=1))
    if not lines:
        return
    width = max(ln.shape[1] for ln in lines)
    lines = [np.pad(ln, ((0, 0), (0, width - ln.shape[1]), (0, 0)), constant_values=255)
             for ln in lines]
    imaging.write_image(path, np.concatenate([_legend(width, class_names, pal)] + lines))


# ---------------------------------------------------------------------------------------------
# Segmentation

def _class_ids(img: np.ndarray, path: Path) -> np.ndarray:
    if img.ndim == 3:
        if not (np.array_equal(img[:, :, 0], img[:, :, 1])
                and np.array_equal(img[:, :, 0], img[:, :, 2])):
            raise EvalError(f'expected a single-channel class-id image, got a colour image: '
                            f'{path}')
        img = img[:, :, 0]
    return img


def _segmentation(args) -> int:
    try:
        names = imaging.class_names(args.classes)
    except ValueError as e:
        raise EvalError(f'--classes {args.classes!r}: {e}') from None
    preds = _list_images(args.pred, 'prediction (--pred)')
    labels = _list_images(args.labels, 'label (--labels)')
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
    bar = _progress(len(stems), args.quiet)
    for s in stems:
        p = _class_ids(_read(preds[s]), preds[s])
        lab = _class_ids(_read(labels[s]), labels[s])
        if p.shape != lab.shape:
            mismatched[s] = f'prediction {_size(p)}, label {_size(lab)}'
            problems.append(f'{s}: prediction {_size(p)} and label {_size(lab)} differ in size, '
                            f'not scored')
        else:
            try:
                cm += metrics.confusion_matrix(p, lab, len(names), ignore)
            except ValueError as e:
                raise EvalError(f'{preds[s].name} / {labels[s].name}: {e}') from None
        bar.update(1)
    bar.close()
    iou, miou = metrics.iou_from_confusion(cm)
    acc = metrics.pixel_accuracy(cm)
    n_scored = len(stems) - len(mismatched)
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
           'iou': {n: _json_value(float(v)) for n, v in zip(names, iou)},
           'miou': _json_value(miou), 'pixel_accuracy': _json_value(acc),
           'confusion_matrix': cm.tolist(), 'missing_predictions': missing,
           'predictions_without_label': extra, 'size_mismatch': mismatched,
           'problems': problems}
    return _write_report(args.out, 'segmentation_metrics', text, doc, problems)


# ---------------------------------------------------------------------------------------------
# Object boxes

BASELINE_NAME = 'thermal rule (> mean + 2 SD = person)'


def _box_files(folder: str) -> Dict[str, Path]:
    return _list_files(folder, 'box (--boxes)', ('.txt',), '.txt box files')


def _split_names(text: str, what: str) -> List[str]:
    names = [n.strip() for n in text.split(',') if n.strip()]
    if not names:
        raise EvalError(f'{what}: give comma-separated class names')
    return names


def score_box_folder(pred: Dict[str, Path], boxes: Dict[str, List[labels.Box]],
                     classes: Sequence[str], quiet: bool = True) -> Tuple[Dict, List[str]]:
    """Box scores of one folder of class maps (stem -> path) against parsed boxes."""
    scorer = labels.BoxScorer(classes)
    problems = [f'{s}: no prediction, not scored' for s in sorted(boxes) if s not in pred]
    bar = _progress(len(boxes), quiet)
    for s in sorted(boxes):
        if s in pred:
            scorer.add(_class_ids(_read(pred[s]), pred[s]), boxes[s])
        bar.update(1)
    bar.close()
    res = scorer.result()
    res['n_images'] = sum(1 for s in boxes if s in pred)
    return res, problems


def _boxes(args) -> int:
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
        res, probs = score_box_folder(_list_images(folder, 'prediction (--pred)'), boxes,
                                      classes, args.quiet)
        rows[name] = res
        problems += [f'{name}: {p}' for p in probs]
    if args.baseline_ir:
        irs = _list_images(args.baseline_ir, 'thermal (--baseline-ir)')
        scorer = labels.BoxScorer(classes)
        for s in sorted(boxes):
            if s not in irs:
                problems.append(f'{BASELINE_NAME}: {s}: no thermal image, not scored')
                continue
            scorer.add(labels.thermal_rule(_read(irs[s])), boxes[s])
        rows[BASELINE_NAME] = scorer.result()
        rows[BASELINE_NAME]['n_images'] = sum(1 for s in boxes if s in irs)
    text = box_markdown(rows, classes, len(boxes))
    if problems:
        text += '\n### Problems\n\n' + '\n'.join(f'- {p}' for p in problems) + '\n'
    doc = {'classes': classes, 'box_classes': args.box_classes.split(','),
           'found_fraction': 0.2, 'grow_px': 5, 'n_box_files': len(boxes),
           'methods': {n: _json_tree(r) for n, r in rows.items()}, 'problems': problems}
    return _write_report(args.out, 'box_scores', text, doc, problems)


def _write_report(out_dir, name: str, text: str, doc: Dict, problems: Sequence[str]) -> int:
    """Write ``name.md`` and ``name.json`` into ``out_dir``, print the text and the problems."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f'{name}.md').write_text(text, encoding='utf-8')
    (out / f'{name}.json').write_text(json.dumps(doc, indent=2), encoding='utf-8')
    for p in problems:
        print(f'warning: {p}', file=sys.stderr)
    print(text)
    print(f'wrote {out / (name + ".md")} and {name}.json')
    return 0


def _json_tree(x):
    if isinstance(x, dict):
        return {k: _json_tree(v) for k, v in x.items()}
    return _json_value(x)


def _fmt(v: float) -> str:
    return 'n/a' if v is None or (isinstance(v, float) and math.isnan(v)) else f'{v:.3f}'


def box_markdown(rows: Dict[str, Dict], classes: Sequence[str], n_files: int) -> str:
    """The box-score table: one row per method; per class recall / precision / F1, box-F1."""
    head = ['Method', 'box-F1'] + [f'{c} {k}' for c in classes for k in ('F1', 'R', 'P')]
    lines = [f'## Box scores ({n_files} box files; found = 20 % of a box, precision in boxes '
             f'+5 px)', '', '| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for name, r in rows.items():
        cells = [name, f'**{_fmt(r["box_f1"])}**']
        for c in classes:
            v = r['classes'][c]
            cells += [_fmt(v['f1']), _fmt(v['recall']), _fmt(v['precision'])]
        lines.append('| ' + ' | '.join(cells) + ' |')
    counts = ', '.join(f'{c} {next(iter(rows.values()))["classes"][c]["boxes"]}'
                       for c in classes) if rows else ''
    lines += ['', f'Boxes scored: {counts}. R = box recall, P = pixel precision.']
    return '\n'.join(lines) + '\n'


# ---------------------------------------------------------------------------------------------
# Entry point

def build_parser() -> argparse.ArgumentParser:
    """The ``ssvif-eval`` argument parser."""
    ap = argparse.ArgumentParser(
        prog='ssvif-eval', description='Score image fusion results and segmentation maps.')
    sub = ap.add_subparsers(dest='command', required=True)
    f = sub.add_parser('fusion', help='fusion metrics of one or more methods')
    f.add_argument('--vi', required=True, help='folder of visible images')
    f.add_argument('--ir', required=True, help='folder of infrared images')
    f.add_argument('--fused', required=True, action='append',
                   help="folder of one method's fused images (repeat for more methods)")
    f.add_argument('--name', action='append',
                   help='method name for the matching --fused (default: folder name)')
    f.add_argument('--out', required=True, help='output folder')
    f.add_argument('--metrics', help='comma-separated metric names (default: all: '
                   + ','.join(metrics.METRICS) + ')')
    f.add_argument('--convention', default='vifb', choices=metrics.CONVENTIONS,
                   help='metric conventions (see ssvif_ros.metrics), default vifb')
    f.add_argument('--contact', help='comma-separated image stems for the contact sheet '
                   '(default: the first three)')
    f.add_argument('--quiet', action='store_true', help='no progress bar')
    s = sub.add_parser('segmentation', help='per-class IoU and mIoU')
    s.add_argument('--pred', required=True, help='folder of predicted class-id images')
    s.add_argument('--labels', required=True, help='folder of label class-id images')
    s.add_argument('--classes', required=True, help='msrs, fmb or a class count N')
    s.add_argument('--out', required=True, help='output folder')
    s.add_argument('--ignore-index', type=int, default=255,
                   help='label value to skip (default 255; negative: none)')
    s.add_argument('--quiet', action='store_true', help='no progress bar')
    b = sub.add_parser('boxes', help='box recall, pixel precision and box-F1 of class maps')
    b.add_argument('--pred', required=True, action='append',
                   help='folder of predicted semantic class-id images (repeat for more methods)')
    b.add_argument('--name', action='append', help='method name for the matching --pred')
    b.add_argument('--boxes', required=True, help='folder of YOLO box files <stem>.txt')
    b.add_argument('--out', required=True, help='output folder')
    b.add_argument('--classes', default=','.join(labels.SCORED_CLASSES),
                   help='classes to score (default person,car,bike)')
    b.add_argument('--box-classes', default=','.join(labels.DEFAULT_BOX_CLASSES),
                   help='class names of the YOLO ids 0, 1, ... (default person,bicycle,car)')
    b.add_argument('--baseline-ir', help='thermal folder: add the row of the rule '
                   '"thermal > mean + 2 SD = person"')
    b.add_argument('--quiet', action='store_true', help='no progress bar')
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``ssvif-eval``; returns the exit status (0 ok, 2 error)."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == 'fusion':
            return _fusion(args)
        if args.command == 'boxes':
            return _boxes(args)
        return _segmentation(args)
    except EvalError as e:
        print(f'ssvif-eval: error: {e}', file=sys.stderr)
        return 2
    except OSError as e:  # e.g. output folder not writable
        name = e.filename if getattr(e, 'filename', None) else ''
        print(f'ssvif-eval: error: {e.strerror or e} {name}'.rstrip(), file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
