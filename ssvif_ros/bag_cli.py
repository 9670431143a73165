"""``ssvif-bag <verb>``: the bag tools under one command (pure-Python ``rosbags``, no rosbag2).

    ssvif-bag make    --vi DIR --ir DIR --out BAG [...]   build a bag from paired image folders
    ssvif-bag play    BAG [--rate R] [--loop] [...]       publish a bag live with rclpy
    ssvif-bag record  --out BAG [--topics ...] [...]      record topics, receive time = bag time
    ssvif-bag eval    BAG --out DIR [--live] [...]        replay through the node, write a report
    ssvif-bag extract BAG --rgb-topic T --thermal-topic T --out DIR [...]   training pairs

``ssvif-bag extract`` is ``ssvif-bag-extract`` (still installed under that name). Each verb's
``--help`` lists its options; the modules :mod:`ssvif_ros.bag_make`, :mod:`ssvif_ros.bag_live`,
:mod:`ssvif_ros.bag_eval` and :mod:`ssvif_ros.bag_extract` document them. Unusable input prints
one line naming the thing at fault and exits with status 2.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from ssvif_ros.bag_read import guarded

PROG = 'ssvif-bag'
VERBS = ('make', 'play', 'record', 'eval', 'extract')


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``ssvif-bag`` with one sub-parser per verb (``extract`` is forwarded)."""
    from ssvif_ros import bag_eval, bag_live, bag_make
    ap = argparse.ArgumentParser(
        prog=PROG, description='The bag tools under one command (pure-Python rosbags, no '
        'rosbag2): make, play, record, eval, extract.')
    sub = ap.add_subparsers(dest='verb', metavar='VERB', required=True)
    bag_make.add_arguments(sub.add_parser('make', help='build a bag from vi/ and ir/ folders'))
    bag_live.add_play_arguments(sub.add_parser('play', help='publish a bag with rclpy'))
    bag_live.add_record_arguments(sub.add_parser('record', help='record topics into a bag'))
    bag_eval.add_arguments(sub.add_parser('eval', help='replay a bag through the fusion node '
                                          'and write report.md / report.json'))
    sub.add_parser('extract', help='paired training images (ssvif-bag-extract)', add_help=False)
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``ssvif-bag``; returns the exit status (0 ok, 1 failed run, 2 bad input, 130 Ctrl-C)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == 'extract':
        from ssvif_ros import bag_extract
        return bag_extract.main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.verb == 'make':
        from ssvif_ros.bag_make import run
    elif args.verb == 'play':
        from ssvif_ros.bag_live import run_play as run
    elif args.verb == 'record':
        from ssvif_ros.bag_live import run_record as run
    else:
        from ssvif_ros.bag_eval import run
    return guarded(f'{PROG} {args.verb}', run, args)


if __name__ == '__main__':
    sys.exit(main())
