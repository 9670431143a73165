"""``ssvif-bag-extract``: turn an RGB + thermal ROS bag into paired training images.

    ssvif-bag-extract BAG --rgb-topic /rgb/image_raw --thermal-topic /thermal/image_raw --out DIR
                      [--slop 0.02] [--queue-size 5] [--reset-after 1.0] [--stamp header|bag]
                      [--every N] [--max-pairs N] [--start SEC] [--end SEC] [--append] [--quiet]

``BAG`` is a ROS 2 bag (a folder with ``metadata.yaml``, sqlite3 or mcap storage, or a single
``.db3`` / ``.mcap`` file) or a ROS 1 ``.bag``; it is read with the pure-Python ``rosbags``
library, so no ROS installation is needed (this module never imports rclpy).

* The RGB topic is ``sensor_msgs/msg/Image`` (rgb8, bgr8, rgba8, bgra8, mono8, 8UC1) or
  ``sensor_msgs/msg/CompressedImage`` (jpeg/png, decoded with OpenCV). The thermal topic is a raw
  ``sensor_msgs/msg/Image`` (mono8, 8UC1, mono16, 16UC1, 32FC1); compressed thermal images lose
  the measured values and are refused. These are the encodings the fusion node accepts.
* Messages are fed to :class:`ssvif_ros.pairing.ApproxTimePairer` in the bag's recording order,
  keyed by header stamp (``--stamp bag``: the time the recorder received the message), with the
  node's defaults (``slop`` 0.02 s inclusive, ``queue_size`` 5, ``reset_after`` 1 s): the pairs
  are the ones the node would have fused while the bag played.
* ``--every N`` keeps the 1st, (N+1)-th, ... pair (consecutive video frames are nearly the same);
  only kept pairs are decoded. ``--max-pairs N`` stops after N written pairs. ``--start`` and
  ``--end`` are seconds from the start of the bag (recording time; ``--end`` exclusive).

Written to DIR (stem = RGB stamp in nanoseconds, so both folders pair by file name)::

    vi/<stamp_ns>.png    visible, 8-bit RGB (mono8 cameras: 8-bit grey)
    ir/<stamp_ns>.png    thermal, bit depth kept: mono8/8UC1 -> 8-bit, mono16/16UC1 -> 16-bit PNG
    ir/<stamp_ns>.tiff   thermal 32FC1: float32 TIFF holding the published values unchanged
                         (degC or K, whatever the driver sends; lossless, no unit guessed)
    extract.json         bag, topics, options, counts: messages per topic, pairs, kept,
                         drops by reason (the pairer's counters, plus frames still queued at the
                         end), frames that failed conversion by reason (with examples), sizes

A frame that cannot be used (unsupported encoding, inconsistent step/size, undecodable
compressed data, NaN/Inf temperatures, a message that does not deserialize) is counted with its
reason and extraction goes on; a frame rejected before pairing never takes a partner, one that
fails after pairing (pixel decoding is done for kept pairs only) loses its pair. Each pair is
written to a staging folder first and moved into ``vi/`` and ``ir/`` together, so an interrupted
run never leaves half a pair; pairs already written stay and ``extract.json`` says how many
(``status``: complete, truncated, max_pairs, interrupted, error, no_pairs). An MCAP file cut
short (no footer or index) is read record by record up to the cut; ``truncated`` in the report
and a warning say where it stopped.

Exit status: 0 when at least one pair was written; 2 for unusable input (missing or unreadable
bag, unknown topic -- the message lists the bag's topics and types --, wrong message type, bad
option, output folder already holding images without ``--append``, no pair written); 130 when
interrupted. ``--append`` writes into a folder that already holds extracted pairs (one folder for
several bags; an existing file is never overwritten, its pair is counted as
``skipped_existing``) and keeps the earlier reports in ``extract.json`` under ``previous_runs``.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import shutil
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ssvif_ros import imaging, progress
from ssvif_ros.bag_read import BagError, guarded, open_bag, read_messages, select_connections
from ssvif_ros.frames import (check_frame, decode_thermal, decode_visible, FrameError, RGB,
                              stamp_ns, STREAM_NAMES, THERMAL)
from ssvif_ros.pairing import ApproxTimePairer

PROG = 'ssvif-bag-extract'
REPORT_NAME = 'extract.json'
STAGING_NAME = '.extract-staging'
MAX_EXAMPLES = 20


def thermal_file_kind(raw: np.ndarray) -> Tuple[str, str]:
    """File extension and report label used for a thermal array of this dtype."""
    if raw.dtype == np.uint8:
        return '.png', 'png8'
    if raw.dtype == np.uint16:
        return '.png', 'png16'
    return '.tiff', 'tiff_float32'


# ---------------------------------------------------------------------------------------------
# Bag


# ---------------------------------------------------------------------------------------------
# Output


def _prepare_output(out: Path, append: bool) -> Optional[Dict[str, Any]]:
    """Create DIR/vi, DIR/ir; refuse a folder with images unless ``append``.

    Returns the earlier report when appending (or None).
    """
    existing = []
    for sub in ('vi', 'ir'):
        d = out / sub
        if d.is_dir():
            existing += [n for n in os.listdir(d)
                         if os.path.splitext(n)[1].lower() in imaging.IMAGE_EXTENSIONS]
    if existing and not append:
        raise BagError(f'output folder {out} already holds {len(existing)} images in vi/ '
                       'and ir/; use a new --out, or --append to add this bag to them')
    previous = None
    report = out / REPORT_NAME
    if append and report.is_file():
        try:
            previous = json.loads(report.read_text())
        except (OSError, ValueError) as exc:
            raise BagError(f'cannot read the existing report {report}: {exc}') from None
    try:
        for sub in ('vi', 'ir', STAGING_NAME):
            (out / sub).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BagError(f'cannot create output folder {out}: {exc.strerror or exc}') from None
    return previous


def write_pair(out: Path, stem: str, vis: np.ndarray, ir: np.ndarray) -> Tuple[str, str]:
    """Write one pair via the staging folder; return the two final paths.

    Both files are written to ``DIR/.extract-staging`` and then renamed into place, the visible
    one last, so ``vi/`` never holds a file whose thermal partner is missing.
    """
    ir_ext, _ = thermal_file_kind(ir)
    stage = out / STAGING_NAME
    tmp_vi, tmp_ir = stage / f'{stem}.vi.png', stage / f'{stem}.ir{ir_ext}'
    final_vi, final_ir = out / 'vi' / f'{stem}.png', out / 'ir' / f'{stem}{ir_ext}'
    imaging.write_image(tmp_vi, vis)
    imaging.write_image(tmp_ir, ir)
    os.replace(tmp_ir, final_ir)
    try:
        os.replace(tmp_vi, final_vi)
    except BaseException:
        final_ir.unlink(missing_ok=True)
        raise
    return str(final_vi), str(final_ir)


# ---------------------------------------------------------------------------------------------
# Extraction


class Extraction:
    """State and counters of one run; :meth:`report` is what goes to ``extract.json``."""

    def __init__(self, args, out: Path):
        self.args = args
        self.out = out
        self.pairer = ApproxTimePairer(args.slop, args.queue_size, args.reset_after,
                                       names=STREAM_NAMES)
        self.messages = {n: 0 for n in STREAM_NAMES}
        self.failures: Dict[str, int] = {}
        self.examples: List[Dict[str, Any]] = []
        self.pairs = 0
        self.kept = 0
        self.skipped_every = 0
        self.skipped_existing = 0
        self.thermal_files: Dict[str, int] = {}
        self.sizes: Dict[str, Dict[str, int]] = {n: {} for n in STREAM_NAMES}
        self.status = 'running'
        self.error: Optional[str] = None
        self.truncated: Optional[Dict[str, Any]] = None

    def fail(self, exc: FrameError, stamp: Optional[int], topic: str) -> None:
        """Count a frame that cannot be used and keep an example of the first few."""
        self.failures[exc.reason] = self.failures.get(exc.reason, 0) + 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append({'topic': topic, 'stamp_ns': stamp, 'reason': exc.reason,
                                  'message': str(exc)})

    def on_message(self, stream: int, msgtype: str, topic: str, t_bag: int, msg) -> bool:
        """Feed one deserialized message; return True when ``--max-pairs`` is reached."""
        stamp = t_bag if self.args.stamp == 'bag' else stamp_ns(msg)
        try:
            check_frame(stream, msg, msgtype)
        except FrameError as exc:
            self.fail(exc, stamp, topic)
            return False
        pair = self.pairer.add(stream, stamp, (msgtype, topic, msg))
        if pair is None:
            return False
        self.pairs += 1
        if (self.pairs - 1) % self.args.every:
            self.skipped_every += 1
            return False
        (rgb_type, rgb_topic, rgb_msg), (_, th_topic, th_msg) = pair.items
        stem = str(pair.stamps[RGB])
        try:
            vis = decode_visible(rgb_msg, rgb_type)  # H x W x 3 uint8 RGB (H x W mono8)
        except FrameError as exc:
            self.fail(exc, pair.stamps[RGB], rgb_topic)
            return False
        try:
            ir = decode_thermal(th_msg)  # h x w uint8 / uint16 / float32
        except FrameError as exc:
            self.fail(exc, pair.stamps[THERMAL], th_topic)
            return False
        ir_ext, kind = thermal_file_kind(ir)
        if ((self.out / 'vi' / f'{stem}.png').exists()
                or (self.out / 'ir' / f'{stem}{ir_ext}').exists()):
            self.skipped_existing += 1
            return False
        try:
            write_pair(self.out, stem, vis, ir)
        except (OSError, ValueError) as exc:
            raise BagError(f'cannot write pair {stem} to {self.out}: {exc}') from None
        self.kept += 1
        self.thermal_files[kind] = self.thermal_files.get(kind, 0) + 1
        for name, img in (('rgb', vis), ('thermal', ir)):
            size = f'{img.shape[1]}x{img.shape[0]}'
            self.sizes[name][size] = self.sizes[name].get(size, 0) + 1
        return 0 < self.args.max_pairs <= self.kept

    def report(self, bag: str, topics: Dict[str, Any]) -> Dict[str, Any]:
        """The JSON report of this run (also valid for a run that stopped early)."""
        stats = self.pairer.stats()
        dropped = dict(stats['drops'])
        for name, n in stats['queued'].items():
            if n:
                dropped[f'{name}.unpaired_at_end'] = n
        a = self.args
        return {
            'tool': PROG,
            'status': self.status,
            'error': self.error,
            'bag': os.path.abspath(bag),
            'topics': topics,
            'out': {'vi': str(self.out / 'vi'), 'ir': str(self.out / 'ir')},
            'options': {'slop': a.slop, 'queue_size': a.queue_size,
                        'reset_after': a.reset_after, 'stamp': a.stamp, 'every': a.every,
                        'max_pairs': a.max_pairs, 'start': a.start, 'end': a.end},
            'counts': {
                'messages': dict(self.messages),
                'pairs': self.pairs,
                'kept': self.kept,
                'skipped_every': self.skipped_every,
                'skipped_existing': self.skipped_existing,
                'dropped': dropped,
                'conversion_failures': dict(sorted(self.failures.items())),
            },
            'pairing': stats,
            'thermal_files': self.thermal_files,
            'sizes': self.sizes,
            'failure_examples': self.examples,
            'truncated': self.truncated,
        }


def _bag_window(reader, start: Optional[float], end: Optional[float]):
    t0 = reader.start_time
    lo = None if start is None else t0 + int(round(start * 1e9))
    hi = None if end is None else t0 + int(round(end * 1e9))
    return lo, hi


def run(args) -> int:
    """Extract pairs as described in the module docstring; return the exit status."""
    reader = open_bag(args.bag)
    try:
        return _run(args, reader)
    finally:
        reader.close()


def _run(args, reader) -> int:
    conns, msgtypes, infos = select_connections(reader, args.rgb_topic, args.thermal_topic)
    topics = {STREAM_NAMES[s]: {'topic': t, 'type': msgtypes[s],
                                'messages_in_bag': infos[s].msgcount}
              for s, t in ((RGB, args.rgb_topic), (THERMAL, args.thermal_topic))}
    try:
        ext = Extraction(args, Path(args.out))
    except ValueError as exc:  # slop / queue size / reset_after out of range
        raise BagError(str(exc)) from None
    stream_of = {args.rgb_topic: RGB, args.thermal_topic: THERMAL}
    lo, hi = _bag_window(reader, args.start, args.end)
    previous = _prepare_output(ext.out, args.append)
    stopped = getattr(reader, 'stopped', None)
    if stopped is not None:
        ext.truncated = {'file': str(reader.path), 'byte': stopped[0], 'reason': stopped[1]}
    total = sum(i.msgcount for i in infos) if lo is None and hi is None else None
    bar = progress.bar(total=total, desc=PROG, unit='msg', quiet=args.quiet)
    code = 0
    try:
        for conn, t_bag, raw in read_messages(reader, conns, lo, hi, args.bag):
            bar.update(1)
            stream = stream_of[conn.topic]
            ext.messages[STREAM_NAMES[stream]] += 1
            try:
                msg = reader.deserialize(raw, conn.msgtype)
            except Exception as exc:  # noqa: BLE001 - a corrupt message is counted, not fatal
                ext.fail(FrameError(f'{STREAM_NAMES[stream]}.deserialize_error',
                                    f'{type(exc).__name__}: {exc}'), None, conn.topic)
                continue
            if ext.on_message(stream, conn.msgtype, conn.topic, t_bag, msg):
                ext.status = 'max_pairs'
                break
            if ext.kept and ext.kept % 20 == 0:
                bar.set_postfix(pairs=ext.kept, refresh=False)
        else:
            ext.status = 'truncated' if ext.truncated else 'complete'
        if ext.kept == 0 and ext.skipped_existing == 0:
            ext.status = 'no_pairs'
            ext.error = _no_pairs_message(ext)
            code = 2
    except KeyboardInterrupt:
        ext.status, ext.error, code = 'interrupted', 'interrupted by the user', 130
    except BagError as exc:  # the bag became unreadable, or the output unwritable
        ext.status, ext.error, code = 'error', str(exc), 2
    except Exception as exc:  # a bug: still say in the report how far it got, then raise
        ext.status, ext.error = 'error', f'{type(exc).__name__}: {exc}'
        raise
    finally:
        bar.close()
        shutil.rmtree(ext.out / STAGING_NAME, ignore_errors=True)
        report = ext.report(args.bag, topics)
        if previous is not None:
            report['previous_runs'] = (previous.pop('previous_runs', []) + [previous])
        try:
            (ext.out / REPORT_NAME).write_text(json.dumps(report, indent=2) + '\n')
        except OSError as exc:
            ext.error = (f'{ext.error}; ' if ext.error else '') + \
                f'cannot write {ext.out / REPORT_NAME}: {exc.strerror or exc}'
            code = code or 2
    _print_summary(ext, report, code)
    return code


def _no_pairs_message(ext: Extraction) -> str:
    m = ext.messages
    if not m['rgb'] or not m['thermal']:
        return (f'no pairs: the bag window holds {m["rgb"]} RGB and {m["thermal"]} thermal '
                'messages')
    why = ', '.join(f'{k}: {v}' for k, v in sorted(ext.failures.items())) or 'none'
    for name, label in (('rgb', 'RGB'), ('thermal', 'thermal')):
        failed = sum(v for k, v in ext.failures.items() if k.startswith(name + '.'))
        if failed >= m[name]:
            return (f'no pair written: every one of the {m[name]} {label} frames failed '
                    f'conversion ({why})')
    hint = ''
    if ext.pairs == 0:
        hint = ('; no stamps within --slop of each other (check the camera clocks, raise '
                '--slop or try --stamp bag)')
    return (f'no pair written from {m["rgb"]} RGB and {m["thermal"]} thermal messages '
            f'(frames failing conversion: {why}){hint}')


def _print_summary(ext: Extraction, report: Dict[str, Any], code: int) -> None:
    c = report['counts']
    line = (f'{PROG}: {ext.status}: {c["kept"]} pairs written to {ext.out} '
            f'({c["messages"]["rgb"]} RGB / {c["messages"]["thermal"]} thermal messages, '
            f'{c["pairs"]} pairs, {c["skipped_every"]} skipped by --every')
    if c['skipped_existing']:
        line += f', {c["skipped_existing"]} already present'
    line += ')'
    print(line, file=sys.stderr)
    if c['conversion_failures']:
        print(f'{PROG}: frames failing conversion: ' + ', '.join(
            f'{k}: {v}' for k, v in c['conversion_failures'].items()), file=sys.stderr)
    if len(ext.sizes['rgb']) and set(ext.sizes['rgb']) != set(ext.sizes['thermal']):
        print(f'{PROG}: note: RGB {"/".join(ext.sizes["rgb"])} and thermal '
              f'{"/".join(ext.sizes["thermal"])} differ in size: train with '
              '--set data.resize=ir_to_vi (after registering the cameras)', file=sys.stderr)
    if ext.truncated:
        t = ext.truncated
        print(f'{PROG}: warning: {t["file"]} stops at byte {t["byte"]} ({t["reason"]}); '
              'the messages before that point were read', file=sys.stderr)
    if ext.error:
        print(f'{PROG}: error: {ext.error}', file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# CLI


def _positive_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f'must be >= 1, got {v}')
    return v


def _non_negative_int(text: str) -> int:
    v = int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f'must be >= 0, got {v}')
    return v


def _non_negative_float(text: str) -> float:
    v = float(text)
    if not v >= 0.0:
        raise argparse.ArgumentTypeError(f'must be >= 0, got {text}')
    return v


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``ssvif-bag-extract``."""
    ap = argparse.ArgumentParser(
        prog=PROG, description='Extract paired RGB / thermal training images from a ROS bag.')
    ap.add_argument('bag', help='ROS 2 bag folder, .db3 or .mcap file (or a ROS 1 .bag)')
    ap.add_argument('--rgb-topic', required=True, help='sensor_msgs/Image or CompressedImage')
    ap.add_argument('--thermal-topic', required=True, help='sensor_msgs/Image (raw)')
    ap.add_argument('--out', required=True, help='output folder: vi/, ir/, extract.json')
    ap.add_argument('--slop', type=_non_negative_float, default=0.02,
                    help='largest RGB/thermal stamp difference of a pair [s] (default 0.02)')
    ap.add_argument('--queue-size', type=_positive_int, default=5,
                    help='frames kept per stream while waiting for a partner (default 5)')
    ap.add_argument('--reset-after', type=float, default=1.0,
                    help='stamps jumping back this much [s] reset pairing (default 1)')
    ap.add_argument('--stamp', choices=('header', 'bag'), default='header',
                    help='pair by header stamp (default) or by recording time')
    ap.add_argument('--every', type=_positive_int, default=1,
                    help='keep every N-th pair (default 1: all)')
    ap.add_argument('--max-pairs', type=_non_negative_int, default=0,
                    help='stop after writing N pairs (default 0: no limit)')
    ap.add_argument('--start', type=_non_negative_float, default=None,
                    help='skip messages recorded before this many seconds from the bag start')
    ap.add_argument('--end', type=_non_negative_float, default=None,
                    help='stop at this many seconds from the bag start')
    ap.add_argument('--append', action='store_true',
                    help='add to an output folder that already holds extracted pairs')
    ap.add_argument('--quiet', action='store_true', help='no progress bar')
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``ssvif-bag-extract``; returns the exit status (0 ok, 2 unusable input, 130 Ctrl-C)."""
    args = build_parser().parse_args(argv)
    return guarded(PROG, _checked_run, args)


def _checked_run(args) -> int:
    if args.start is not None and args.end is not None and args.end <= args.start:
        raise BagError(f'--end {args.end} must be after --start {args.start}')
    if not args.reset_after > 0.0:
        raise BagError(f'--reset-after must be > 0 seconds, got {args.reset_after}')
    return run(args)


if __name__ == '__main__':
    sys.exit(main())
