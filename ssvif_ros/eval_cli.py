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
no objects); a box file without a prediction is listed as a problem. Beside each box-F1 and
class F1: its 95 % percentile bootstrap interval over the images. A second table gives the marked
share (below) of each method. Writes ``box_scores.md`` and ``box_scores.json``.

Marked share (no labels needed)::

    ssvif-eval marked --pred DIR [--pred DIR2 ...] [--name NAME ...] --out OUT_DIR
                      [--classes person,car,bike]

Per method, the mean and largest share of an image's pixels marked as each class and as any of
them (``object``): a label-free check on a new rig, where a model that paints walls, ground or
vegetation shows shares far above the few percent objects cover. Writes ``marked_share.md`` and
``.json``.

Errors (missing or empty folder, unreadable image, bad option) print one line naming the thing at
fault and exit with status 2.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from ssvif_ros import labels, metrics
from ssvif_ros.eval_common import check_out_folder, EvalError


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
    m = sub.add_parser('marked', help='share of each image marked per class (no labels needed)')
    m.add_argument('--pred', required=True, action='append',
                   help='folder of predicted semantic class-id images (repeat for more methods)')
    m.add_argument('--name', action='append', help='method name for the matching --pred')
    m.add_argument('--out', required=True, help='output folder')
    m.add_argument('--classes', default=','.join(labels.SCORED_CLASSES),
                   help='classes to report (default person,car,bike)')
    m.add_argument('--quiet', action='store_true', help='no progress bar')
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``ssvif-eval``; returns the exit status (0 ok, 2 error)."""
    args = build_parser().parse_args(argv)
    try:
        check_out_folder(args.out)
        if args.command == 'fusion':
            from ssvif_ros.eval_fusion import run_fusion
            return run_fusion(args)
        if args.command == 'boxes':
            from ssvif_ros.eval_labels import run_boxes
            return run_boxes(args)
        if args.command == 'marked':
            from ssvif_ros.eval_labels import run_marked
            return run_marked(args)
        from ssvif_ros.eval_labels import run_segmentation
        return run_segmentation(args)
    except EvalError as e:
        print(f'ssvif-eval: error: {e}', file=sys.stderr)
        return 2
    except OSError as e:  # e.g. output folder not writable, disk full
        name = e.filename or args.out
        print(f'ssvif-eval: error: cannot write {name}: {e.strerror or e}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
