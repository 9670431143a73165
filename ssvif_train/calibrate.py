"""ssvif-calibrate: per-class logit offsets of the deployed class map, chosen on held-out pairs.

A head trained with weak box labels ranks pixels well but places its decision boundary where
its training loss put it: with background dominating the labelled pixels, small or faint people
stay just below it (high pixel precision, low box recall). Adding a constant offset to one
class's logit before the arg-max moves that boundary (a calibrated class prior, as in logit
adjustment for long-tailed classes) without retraining.

The offsets are chosen on labelled pairs the model was not trained on, by default the
validation split of the checkpoint's own run (same ``data.val_fraction`` and ``data.seed``, so
the same pairs the trainer validated on), and never on the benchmark split:

1. run F + H once per pair and keep the logits at the feature resolution;
2. for each scored class (person, car, bike) on its own, try every offset of ``--grid`` and score
   the class map as ``ssvif-eval boxes`` does (:class:`ssvif_ros.labels.BoxScorer`, with the
   deployed resolution rule ``--seg-upsample``);
3. keep the smallest |offset| whose F1 is within ``--plateau`` of that class's best, but only
   when it beats offset 0 by at least ``--min-gain`` and the class has at least ``--min-boxes``
   boxes: on a few dozen pairs a smaller gain, or a rare class, is one box more or less, noise
   rather than a better boundary.

The result is a copy of the checkpoint with ``head.class_bias`` (one offset per class, 0 for
background) and a ``calibration`` record (pairs, grid, the F1 of each tried offset); the deployed
graph (:mod:`ssvif_train.deploy`, hence ``ssvif-export``, the torch backend and ONNX) adds the
offsets to the logits. Training ignores them.

    ssvif-calibrate RUN/best.pt --data DIR [--split holdout|all] [--out RUN/best-calibrated.pt]

Exit status: 0 done, 2 bad input (one line naming what is at fault).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np

from ssvif_ros import labels
from ssvif_ros.progress import bar as progress_bar

PROG = 'ssvif-calibrate'
DEFAULT_GRID = (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0)


class CalibrationError(ValueError):
    """Bad input for the calibration (message names the thing at fault)."""


def class_f1(ids_of, boxes: Sequence, cls_name: str, bias: np.ndarray) -> float:
    """F1 of one scored class over the pairs with ``bias`` (n,) added to the logits.

    ``ids_of(k, bias)`` is pair k's H x W class-id map; ``boxes[k]`` its boxes.
    """
    scorer = labels.BoxScorer(classes=(cls_name,))
    for k, bx in enumerate(boxes):
        scorer.add(ids_of(k, bias), bx)
    return scorer.result()['classes'][cls_name]['f1']


def choose_bias(ids_of, boxes: Sequence, num_classes: int,
                grid: Sequence[float] = DEFAULT_GRID, min_gain: float = 0.01,
                plateau: float = 0.005, min_boxes: int = 10) -> Dict:
    """Pick one logit offset per scored class (module docstring, steps 2 and 3).

    ``ids_of`` and ``boxes`` as in :func:`class_f1`. Returns ``{'bias': [n floats],
    'table': {class: {offset: F1}}}``; a class with fewer than ``min_boxes`` boxes in the pairs
    keeps offset 0 (its F1 moves in steps of a whole box).
    """
    grid = sorted({float(g) for g in grid} | {0.0}, key=lambda g: (abs(g), g))
    bias = np.zeros(num_classes, np.float32)
    table: Dict[str, Dict[str, float]] = {}
    for name in labels.SCORED_CLASSES:
        cid = labels.class_id(name)
        n_boxes = sum(b.cls == cid for bx in boxes for b in bx)
        if cid >= num_classes or n_boxes == 0:
            continue
        f1s = {}
        for g in grid:
            trial = np.zeros(num_classes, np.float32)
            trial[cid] = g
            f1s[g] = class_f1(ids_of, boxes, name, trial)   # a number: the class has boxes
        table[name] = {f'{g:+.2f}': f for g, f in sorted(f1s.items())}
        best = max(f1s.values())
        # The smallest |offset| on the plateau of the best F1 (grid is ordered that way).
        pick = next(g for g in grid if f1s[g] >= best - plateau)
        if n_boxes >= min_boxes and f1s[pick] >= f1s[0.0] + min_gain:
            bias[cid] = pick
    return {'bias': [float(b) for b in bias], 'table': table}


def _pairs(cfg, data: str, split: str, boxes: str):
    """The labelled pairs to calibrate on, as a non-augmenting PairDataset."""
    from ssvif_train.data import label_spec, PairDataset, thermal_norm
    from ssvif_train.discovery import check_pairs, discover_pairs, split_pairs
    d = cfg.data
    rep = discover_pairs(data, d.layout, d.split, boxes=boxes)
    check_pairs(rep.pairs, d.resize)
    pairs = rep.pairs
    if split == 'holdout':
        if d.val_fraction <= 0:
            raise CalibrationError('the checkpoint was trained without a validation split '
                                   '(data.val_fraction 0); pass --split all with pairs it '
                                   'was not trained on')
        pairs = split_pairs(rep.pairs, d.val_fraction, d.seed)[1]
    spec = label_spec(cfg)
    if spec is None:
        raise CalibrationError('the checkpoint has no semantic head (model.classes must be '
                               'msrs)')
    ds = PairDataset(pairs, 0, False, d.seed, d.resize, thermal_norm(cfg), False, spec)
    if not any(ds.view_boxes(i) for i in range(len(ds))):
        raise CalibrationError(f'{data}: none of the {len(ds)} {split} pairs has a box file '
                               'with objects')
    return ds


def calibrate(checkpoint: str, data: str, split: str = 'holdout', boxes: str = '',
              seg_upsample: str = 'bilinear', grid: Sequence[float] = DEFAULT_GRID,
              min_gain: float = 0.01, plateau: float = 0.005, min_boxes: int = 10,
              progress: bool = False) -> Dict:
    """Choose the offsets for ``checkpoint`` on ``data``; return the calibration record."""
    import torch
    from ssvif_train.config import config_from_dict, ConfigError
    from ssvif_train.models.registry import torch_load_checked
    from ssvif_train.network import class_ids_from_logits, SEG_UPSAMPLE, SSVIFNet
    from ssvif_train.tensor_imaging import pad_to_multiple
    if seg_upsample not in SEG_UPSAMPLE:
        raise CalibrationError(f'--seg-upsample must be one of {SEG_UPSAMPLE}')
    if not os.path.isfile(checkpoint):
        raise CalibrationError(f'checkpoint not found: {checkpoint}')
    ckpt = torch_load_checked(checkpoint)
    try:
        cfg = config_from_dict(ckpt.get('config') or {})
    except ConfigError as exc:
        raise CalibrationError(f'{checkpoint}: its configuration does not load: {exc}') from None
    if isinstance(ckpt.get('head'), dict):  # calibrate the raw logits, not earlier offsets
        ckpt['head'] = {k: v for k, v in ckpt['head'].items() if k != 'class_bias'}
    net = SSVIFNet.from_checkpoint(ckpt, checkpoint).eval()
    if net.head is None:
        raise CalibrationError(f'{checkpoint} has no segmentation head to calibrate')
    ds = _pairs(cfg, data, split, boxes)
    logits: List[torch.Tensor] = []
    sizes, box_lists = [], []
    bar = progress_bar(total=len(ds), desc=PROG, unit='pair', quiet=not progress)
    with torch.no_grad():
        for i in range(len(ds)):
            vis, ir, _ = ds[i]
            h, w = vis.shape[-2:]
            v, _ = pad_to_multiple(vis[None], net.pad_multiple)          # 1 x 3 x H' x W'
            t, _ = pad_to_multiple(ir[None], net.pad_multiple)
            _, feats = net.fuse_padded(v, t)
            logits.append(net.head(feats))                               # 1 x n x h' x w'
            sizes.append((tuple(v.shape[-2:]), (h, w)))
            box_lists.append(ds.view_boxes(i) or [])
            bar.update()
    bar.close()

    def ids_of(k, bias):
        padded, (h, w) = sizes[k]
        ids = class_ids_from_logits(logits[k], padded, seg_upsample, torch.from_numpy(bias))
        return ids[0, :h, :w].numpy()                                    # H x W

    choice = choose_bias(ids_of, box_lists, net.num_classes, grid, min_gain, plateau, min_boxes)
    before, after = labels.BoxScorer(), labels.BoxScorer()
    zero = np.zeros(net.num_classes, np.float32)
    chosen = np.asarray(choice['bias'], np.float32)
    for k, bx in enumerate(box_lists):
        before.add(ids_of(k, zero), bx)
        after.add(ids_of(k, chosen), bx)
    return {'checkpoint': os.path.abspath(checkpoint), 'data': os.path.abspath(data),
            'split': split, 'pairs': len(ds), 'boxes': sum(len(b) for b in box_lists),
            'seg_upsample': seg_upsample, 'grid': sorted(float(g) for g in grid),
            'min_gain': float(min_gain), 'plateau': float(plateau),
            'min_boxes': int(min_boxes), 'bias': choice['bias'], 'table': choice['table'],
            'box_f1_before': before.result()['box_f1'], 'box_f1_after': after.result()['box_f1'],
            'classes_after': {k: v['f1'] for k, v in after.result()['classes'].items()},
            'class_boxes': {k: v['boxes'] for k, v in after.result()['classes'].items()}}


def write_calibrated(checkpoint: str, record: Dict, out: str) -> None:
    """Copy ``checkpoint`` to ``out`` with ``head.class_bias`` and the ``calibration`` record."""
    from ssvif_train.models.registry import atomic_torch_save, torch_load_checked
    ckpt = torch_load_checked(checkpoint)
    ckpt['head'] = dict(ckpt['head'], class_bias=list(record['bias']))
    ckpt['calibration'] = {k: v for k, v in record.items() if k != 'checkpoint'}
    atomic_torch_save(ckpt, out)


def out_refusal(out: str, checkpoint: str) -> str:
    """Why ``out`` must not be written ('' when it may): the input, or a file of a run folder."""
    from ssvif_train.checkpoints import is_run_file
    same = os.path.abspath(out) == os.path.abspath(checkpoint) or (
        os.path.exists(out) and os.path.exists(checkpoint) and os.path.samefile(out, checkpoint))
    if same:
        return 'would overwrite the input checkpoint'
    if is_run_file(out):
        return f'is a file of the training run in {os.path.dirname(os.path.abspath(out))}'
    if os.path.isdir(out):
        return 'is a folder'
    return ''


def _grid(text: str) -> List[float]:
    try:
        vals = [float(v) for v in text.split(',') if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f'not a comma-separated list of numbers: {text!r}')
    if not vals or not all(math.isfinite(v) for v in vals):
        raise argparse.ArgumentTypeError(f'not a list of finite numbers: {text!r}')
    return vals


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ssvif-calibrate; exit 0 ok, 2 bad input."""
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0])
    ap.add_argument('checkpoint', help='training checkpoint with a semantic head (best.pt)')
    ap.add_argument('--data', required=True,
                    help='dataset folder with box files (as given to ssvif-train --data)')
    ap.add_argument('--boxes', default='', help='box folder (default: boxes/ beside vi/)')
    ap.add_argument('--split', choices=('holdout', 'all'), default='holdout',
                    help="holdout: the run's validation split of --data; all: every pair")
    ap.add_argument('--seg-upsample', choices=('bilinear', 'nearest'), default='bilinear',
                    help='resolution rule of the class map, as it will be exported')
    ap.add_argument('--grid', type=_grid, default=list(DEFAULT_GRID),
                    help='offsets to try, comma-separated (default %(default)s)')
    ap.add_argument('--min-gain', type=float, default=0.01,
                    help='F1 gain over offset 0 that an offset needs (default 0.01)')
    ap.add_argument('--plateau', type=float, default=0.005,
                    help='F1 within this of the best counts as best (default 0.005)')
    ap.add_argument('--min-boxes', type=int, default=10,
                    help='boxes a class needs to get an offset (default 10)')
    ap.add_argument('--out', default='',
                    help='calibrated checkpoint (default: <checkpoint>-calibrated.pt)')
    args = ap.parse_args(argv)
    out = args.out or os.path.splitext(args.checkpoint)[0] + '-calibrated.pt'
    why = out_refusal(out, args.checkpoint)
    if why:
        print(f'{PROG}: error: --out {out} {why}; write the calibrated copy beside it '
              '(the default is <checkpoint>-calibrated.pt)', file=sys.stderr)
        return 2
    from ssvif_train.discovery import DatasetError
    try:
        rec = calibrate(args.checkpoint, args.data, args.split, args.boxes, args.seg_upsample,
                        args.grid, args.min_gain, args.plateau, args.min_boxes,
                        progress=True)
        write_calibrated(args.checkpoint, rec, out)
    except (CalibrationError, DatasetError, FileNotFoundError, ValueError) as exc:
        print(f'{PROG}: error: {exc}', file=sys.stderr)
        return 2
    except OSError as exc:
        print(f'{PROG}: error: cannot write {exc.filename or out}: {exc.strerror or exc}',
              file=sys.stderr)
        return 2
    counts = ', '.join(f'{n} {c}' for n, c in rec['class_boxes'].items())
    print(f'{PROG}: {rec["pairs"]} {args.split} pairs, {rec["boxes"]} boxes ({counts}); '
          'class F1 by offset:')
    for name, row in rec['table'].items():
        cells = ', '.join(f'{g} {f:.3f}' for g, f in row.items())
        print(f'  {name}: {cells}')
    names = ['background'] + list(labels.SEMANTIC_CLASSES[1:len(rec['bias'])])
    offsets = ', '.join(f'{n} {b:+.2f}' for n, b in zip(names, rec['bias']))
    print(f'{PROG}: offsets {offsets}; box-F1 {rec["box_f1_before"]:.3f} -> '
          f'{rec["box_f1_after"]:.3f}; wrote {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
