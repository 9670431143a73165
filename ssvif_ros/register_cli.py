"""``ssvif-register``: estimate a rig's thermal -> RGB homography from a bag or folders of pairs.

    ssvif-register --bag BAG --rgb-topic /rgb/image_raw --thermal-topic /thermal/image_raw
                   [--slop 0.02] [--max-frames 40] [--every 5] [--model auto] [--out DIR]
    ssvif-register --vi DIR --ir DIR [...]

Pairs come from the bag as the node would pair them (:class:`ssvif_ros.pairing.ApproxTimePairer`
on header stamps, the same checks and decoding as ``ssvif-bag extract``), or from two folders
of images paired by file name (:mod:`ssvif_ros.dataset_paths`). ``--every N`` keeps every N-th
pair (neighbouring video frames add little), ``--max-frames`` caps how many are used. The
estimate is :func:`ssvif_ros.registration.estimate`.

Prints the 3 x 3 matrix and per frame the alignment score before (thermal resized to the RGB
frame, what the node does without a homography) and after; writes to ``--out`` (default ``.``):

    registration.yaml   params file for the node: thermal_homography, alignment_check_every,
                        alignment_warn_below (``--params-file registration.yaml``)
    registration.png    edge overlay, before (left) and after (right): RGB edges green,
                        thermal edges magenta, coinciding edges white

Exit status 0; 2 with one line on stderr for unusable input (no pairs, sizes differing between
pairs, a bag without the topics, pairs that do not determine a registration); 130 on Ctrl-C.
"""
from __future__ import annotations

import argparse
from pathlib import Path
import sys
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ssvif_ros import imaging, progress, registration
from ssvif_ros.bag_read import BagError, guarded, open_bag, read_messages, select_connections

PROG = 'ssvif-register'
PARAMS_NAME = 'registration.yaml'
PICTURE_NAME = 'registration.png'
CHECK_EVERY = 30  # alignment_check_every written to the params file


def _bag_pairs(args) -> List[Tuple[np.ndarray, np.ndarray]]:
    from ssvif_ros.frames import (check_frame, decode_thermal, decode_visible, FrameError, RGB,
                                  stamp_ns, STREAM_NAMES, THERMAL)
    from ssvif_ros.pairing import ApproxTimePairer
    reader = open_bag(args.bag)
    try:
        conns, _, infos = select_connections(reader, args.rgb_topic, args.thermal_topic)
        stream_of = {args.rgb_topic: RGB, args.thermal_topic: THERMAL}
        pairer = ApproxTimePairer(args.slop, 5, 1.0, names=STREAM_NAMES)
        out, formed = [], 0
        bar = progress.bar(total=sum(i.msgcount for i in infos), desc=f'{PROG} read',
                           unit='msg', quiet=args.quiet)
        with bar:
            for conn, _, raw in read_messages(reader, conns, None, None, args.bag):
                bar.update(1)
                stream = stream_of[conn.topic]
                try:
                    msg = reader.deserialize(raw, conn.msgtype)
                    check_frame(stream, msg, conn.msgtype)
                except Exception:  # noqa: BLE001 - an unusable frame is skipped, as in extract
                    continue
                pair = pairer.add(stream, stamp_ns(msg), (conn.msgtype, msg))
                if pair is None:
                    continue
                formed += 1
                if (formed - 1) % args.every:
                    continue
                (rgb_type, rgb_msg), (_, th_msg) = pair.items
                try:
                    vis = decode_visible(rgb_msg, rgb_type)
                    ir = imaging.normalize_thermal(decode_thermal(th_msg))
                except (FrameError, ValueError):
                    continue
                out.append((vis, ir))
                if len(out) >= args.max_frames:
                    break
    finally:
        reader.close()
    if not out:
        raise BagError(f'no usable RGB/thermal pair in {args.bag} on {args.rgb_topic} and '
                       f'{args.thermal_topic} (stamps within --slop {args.slop} s)')
    return out


def _folder_pairs(args) -> List[Tuple[np.ndarray, np.ndarray]]:
    from ssvif_ros.dataset_paths import list_pairs_in
    try:
        files = list_pairs_in(args.vi, args.ir)[::args.every][:args.max_frames]
    except FileNotFoundError as exc:
        raise BagError(str(exc)) from None
    out = []
    for vi, ir in progress.bar(files, desc=f'{PROG} read', unit='pair', quiet=args.quiet):
        try:
            out.append((imaging.read_image(vi, 'rgb'),
                        imaging.normalize_thermal(imaging.read_image(ir, 'gray'))))
        except (OSError, ValueError) as exc:
            raise BagError(str(exc)) from None
    return out


def _edges8(img: np.ndarray, width: int) -> np.ndarray:
    e, _ = registration.edge_image(img, width)
    return (np.clip(e / 6.0, 0.0, 1.0) * 255).astype(np.uint8)


def overlay_picture(vis: np.ndarray, ir: np.ndarray, before: np.ndarray,
                    after: np.ndarray) -> np.ndarray:
    """H x 2W x 3 uint8: RGB edges green, warped thermal edges magenta; before | after."""
    import cv2
    h, w = vis.shape[:2]
    ev = _edges8(vis, w)
    panels = []
    for label, hm in (('before', before), ('after', after)):
        warped = cv2.warpPerspective(np.ascontiguousarray(ir, np.float32), hm, (w, h))
        et = _edges8(warped, w)
        panel = np.ascontiguousarray(np.dstack([et, ev, et]))
        cv2.putText(panel, label, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 0), 2)
        panels.append(panel)
    return np.hstack(panels)


def _yaml_double(v: float) -> str:
    """A double as ROS params YAML reads it: always with a decimal point, no exponent."""
    text = f'{float(v):.10f}'.rstrip('0')
    return text + '0' if text.endswith('.') else text


def params_text(reg: registration.Registration) -> str:
    """The params-file snippet for the node (loads with ``--params-file``)."""
    hom = ', '.join(_yaml_double(v) for v in reg.homography.ravel())
    return ('# thermal -> RGB registration by ssvif-register ('
            f'{reg.model}, {reg.inliers} of {reg.matches} edge matches, {len(reg.used)} frames)\n'
            '/**/fusion_node:\n'
            '  ros__parameters:\n'
            f'    thermal_homography: [{hom}]\n'
            f'    alignment_check_every: {CHECK_EVERY}\n'
            f'    alignment_warn_below: {max(reg.warn_below(), 0.0):.3f}\n')


def run(args) -> int:
    """Read the pairs, estimate, print and write the results; return the exit status."""
    pairs = _bag_pairs(args) if args.bag else _folder_pairs(args)
    n_rounds = 3 * len(pairs)
    bar = progress.bar(total=n_rounds, desc=f'{PROG} match', unit='frame', quiet=args.quiet)
    try:
        with bar:
            reg = registration.estimate(pairs, model=args.model, progress=lambda: bar.update(1))
    except registration.RegistrationError as exc:
        raise BagError(f'cannot register {len(pairs)} pairs: {exc}') from None
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / PARAMS_NAME).write_text(params_text(reg))
        best = max(reg.used, key=lambda f: f.inliers)
        vis, ir = pairs[best.index]
        init = registration._initial((vis.shape[1], vis.shape[0]), (ir.shape[1], ir.shape[0]))
        imaging.write_image(out / PICTURE_NAME, overlay_picture(vis, ir, init, reg.homography))
    except (OSError, ValueError) as exc:
        raise BagError(f'cannot write to {out}: {exc}') from None
    np.set_printoptions(suppress=True, precision=6)
    print(f'thermal -> RGB {reg.model} ({reg.inliers} of {reg.matches} edge matches from '
          f'{len(reg.used)} of {len(pairs)} frames, residual {reg.residual_px:.2f} px, '
          f'inliers cover {reg.coverage:.0%} of the frame):')
    print(reg.homography)
    print('frame  score_before  score_after  matches  inliers')
    for f in reg.frames:
        if f.status != 'ok':
            print(f'{f.index:5d}  ({f.status})')
            continue
        print(f'{f.index:5d}  {f.score_before:12.3f}  {f.score_after:11.3f}  {f.matches:7d}  '
              f'{f.inliers:7d}')
    print(f'wrote {out / PARAMS_NAME} (ros2 run ssvif_ros fusion_node --ros-args --params-file '
          f'{out / PARAMS_NAME}) and {out / PICTURE_NAME}')
    return 0


def _positive_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f'must be >= 1, got {v}')
    return v


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``ssvif-register``."""
    ap = argparse.ArgumentParser(prog=PROG, description='Estimate the thermal -> RGB homography '
                                 'of a camera rig from a bag or from folders of pairs.')
    ap.add_argument('--bag', help='ROS 2 bag folder, .db3 or .mcap file (or a ROS 1 .bag)')
    ap.add_argument('--rgb-topic', help='with --bag: sensor_msgs/Image or CompressedImage')
    ap.add_argument('--thermal-topic', help='with --bag: sensor_msgs/Image (raw)')
    ap.add_argument('--vi', help='folder of RGB images (paired with --ir by file name)')
    ap.add_argument('--ir', help='folder of thermal images')
    ap.add_argument('--slop', type=float, default=0.02,
                    help='with --bag: largest RGB/thermal stamp difference of a pair [s]')
    ap.add_argument('--every', type=_positive_int, default=1, help='use every N-th pair')
    ap.add_argument('--max-frames', type=_positive_int, default=40,
                    help='use at most this many pairs (default 40)')
    ap.add_argument('--model', choices=registration.MODELS, default='auto',
                    help='auto (default: the simplest of similarity, affine, homography that '
                    'the matches pin down) or one model to fit')
    ap.add_argument('--out', default='.', help=f'folder for {PARAMS_NAME} and {PICTURE_NAME}')
    ap.add_argument('--quiet', action='store_true', help='no progress bar')
    return ap


def _checked_run(args) -> int:
    if not 0.0 <= args.slop <= 1.0:
        raise BagError(f'--slop must be within 0 .. 1 s, got {args.slop}')
    if args.bag:
        if args.vi or args.ir:
            raise BagError('give either --bag or --vi/--ir, not both')
        if not args.rgb_topic or not args.thermal_topic:
            raise BagError('--bag needs --rgb-topic and --thermal-topic')
    elif not (args.vi and args.ir):
        raise BagError('give --bag BAG --rgb-topic T --thermal-topic T, or --vi DIR --ir DIR')
    return run(args)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``ssvif-register``; returns the exit status (0 ok, 2 unusable input, 130 Ctrl-C)."""
    args = build_parser().parse_args(argv)
    return guarded(PROG, _checked_run, args)


if __name__ == '__main__':
    sys.exit(main())
