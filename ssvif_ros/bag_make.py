"""``ssvif-bag make``: write a ROS 2 bag of paired RGB / thermal images from two folders.

    ssvif-bag make --vi DIR --ir DIR --out BAG [--rate 30] [--thermal-encoding mono8]
                   [--rgb-encoding rgb8] [--storage mcap|sqlite3] [--jitter-ms N] [--offset-ms N]
                   [--drop P] [--camera-info] [--count N] [--start-time SEC] [--seed S]

Images with the same file name in ``--vi`` and ``--ir`` form a pair (sorted by name; ``--count``
cycles through them or stops early). Frame ``i`` is stamped ``start + i / rate`` on
``/rgb/image_raw``; the thermal frame gets ``--offset-ms`` plus a uniform random
``+-jitter-ms``; ``--drop P`` leaves out each frame of each stream with probability P (seeded).
The bag time of every message is its header stamp (a recorder that received it at once). The
pixel conversion is the pair publisher's (:func:`ssvif_ros.tools.pair_publisher.thermal_as`,
``rgb_as``): mono16 = ``7000 + 8 v``, 32FC1 = ``10 + 30 v / 255`` degC.

Written: the bag (rosbag2 **metadata version 8**, see below), and ``frames.csv`` inside the bag
folder: one row per source pair with its index, file stem, the RGB and thermal stamps given to it
(empty when ``--drop`` left that frame out) and the two source files. ``ssvif-bag eval`` reads it
to name the source file of each fused frame (``--boxes DIR`` looks up ``DIR/<stem>.txt``) and to
count input frames; ``ros2 bag play`` ignores it. The bag's ``custom_data`` (metadata.yaml)
repeats the options under ``ssvif.make``.

Why version 8: ROS 2 Humble's rosbag2 parses ``offered_qos_profiles`` of metadata.yaml as one
YAML *string*; version 9 (Kilted, and rosbags' default) writes it as a YAML list, which Humble
refuses ("yaml-cpp: bad conversion"). Version 8 is what Jazzy writes; Humble reads the keys it
knows and ignores the newer ones (``type_description_hash``, ``custom_data``, ``ros_distro``);
Jazzy and later read version 8 natively. The image topics are offered with the sensor-data QoS
(best effort, keep last 5, volatile), which ``ros2 bag play`` reuses when it republishes.

Errors (missing folder, unreadable image, existing output, bad option) print one line and exit 2;
a failure part way closes the bag with the frames written so far.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
import shutil
import sys
import time
from typing import Optional, Sequence

import numpy as np

from ssvif_ros import imaging, progress
from ssvif_ros.bag_read import BagError, guarded
from ssvif_ros.dataset_paths import list_pairs_in
from ssvif_ros.tools.pair_publisher import rgb_as, thermal_as

PROG = 'ssvif-bag make'
RGB_TOPIC, THERMAL_TOPIC = '/rgb/image_raw', '/thermal/image_raw'
RGB_INFO_TOPIC, THERMAL_INFO_TOPIC = '/rgb/camera_info', '/thermal/camera_info'
IMAGE_TYPE = 'sensor_msgs/msg/Image'
INFO_TYPE = 'sensor_msgs/msg/CameraInfo'
FRAMES_NAME = 'frames.csv'
FRAMES_FIELDS = ('index', 'stem', 'rgb_stamp_ns', 'thermal_stamp_ns', 'vi', 'ir')
METADATA_VERSION = 8


def sensor_qos():
    """The sensor-data QoS profile (best effort, keep last 5, volatile) as rosbags' Qos."""
    from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness,
                                    QosReliability, QosTime)
    zero = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, 5, QosReliability.BEST_EFFORT, QosDurability.VOLATILE,
               zero, zero, QosLiveliness.AUTOMATIC, zero, False)


def typestore():
    """The rosbags type store of the newest ROS 2 distribution."""
    from rosbags.typesys import get_typestore, Stores
    return get_typestore(Stores.LATEST)


def header(ts, stamp: int, frame_id: str):
    """A rosbags std_msgs/Header stamped ``stamp`` ns."""
    time_t = ts.types['builtin_interfaces/msg/Time']
    return ts.types['std_msgs/msg/Header'](
        stamp=time_t(sec=stamp // 1_000_000_000, nanosec=stamp % 1_000_000_000),
        frame_id=frame_id)


def image_message(ts, img: np.ndarray, encoding: str, stamp: int, frame_id: str):
    """A rosbags sensor_msgs/Image of a C-contiguous array (little-endian, unpadded rows)."""
    img = np.ascontiguousarray(img, img.dtype.newbyteorder('<'))
    h, w = img.shape[:2]
    data = img.reshape(h, -1).view(np.uint8)
    return ts.types[IMAGE_TYPE](header=header(ts, stamp, frame_id), height=h, width=w,
                                encoding=encoding, is_bigendian=0, step=data.shape[1],
                                data=data.reshape(-1))


def camera_info_message(ts, width: int, height: int, stamp: int, frame_id: str):
    """A pinhole CameraInfo with a 90 degree horizontal field of view (fx = fy = width / 2)."""
    f = width / 2.0
    k = np.array([f, 0, width / 2.0, 0, f, height / 2.0, 0, 0, 1], np.float64)
    p = np.array([f, 0, width / 2.0, 0, 0, f, height / 2.0, 0, 0, 0, 1, 0], np.float64)
    roi = ts.types['sensor_msgs/msg/RegionOfInterest'](x_offset=0, y_offset=0, height=0,
                                                       width=0, do_rectify=False)
    return ts.types[INFO_TYPE](
        header=header(ts, stamp, frame_id), height=height, width=width,
        distortion_model='plumb_bob', d=np.zeros(5, np.float64), k=k,
        r=np.eye(3, dtype=np.float64).reshape(-1), p=p, binning_x=0, binning_y=0, roi=roi)


def read_frames(bag) -> Optional[list]:
    """Rows of ``frames.csv`` beside a bag made by ``ssvif-bag make`` (None when absent).

    ``bag`` is the bag folder or a file inside it; stamps are ints, or None for a dropped frame.
    """
    p = Path(bag)
    path = (p if p.is_dir() else p.parent) / FRAMES_NAME
    if not path.is_file():
        return None
    rows = []
    try:
        with open(path, newline='', encoding='utf-8') as f:
            for row in csv.DictReader(f):
                for key in ('rgb_stamp_ns', 'thermal_stamp_ns'):
                    row[key] = int(row[key]) if row[key] else None
                row['index'] = int(row['index'])
                rows.append(row)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BagError(f'cannot read {path}: {exc}') from None
    return rows


def make_bag(args) -> dict:
    """Write the bag described by the parsed ``args``; return a summary dict."""
    from rosbags.rosbag2 import StoragePlugin, Writer, WriterError

    if not args.rate > 0:
        raise BagError(f'--rate must be > 0, got {args.rate}')
    if not 0.0 <= args.drop < 1.0:
        raise BagError(f'--drop must be a probability in [0, 1), got {args.drop}')
    if args.jitter_ms < 0:
        raise BagError(f'--jitter-ms must be >= 0, got {args.jitter_ms}')
    try:
        pairs = list_pairs_in(args.vi, args.ir)
    except FileNotFoundError as exc:
        raise BagError(str(exc)) from None
    count = args.count if args.count else len(pairs)
    out = Path(args.out)
    if out.exists():
        if not args.overwrite:
            raise BagError(f'output bag {out} already exists (use --overwrite to replace it)')
        if out.is_dir() and any(out.iterdir()) and not (out / 'metadata.yaml').exists():
            raise BagError(f'--overwrite refuses to delete {out}: it is not a bag folder')
        if out.is_dir():
            shutil.rmtree(out)
        else:
            out.unlink()
    ts = typestore()
    start = (int(round(args.start_time * 1e9)) if args.start_time
             else time.time_ns() // 1_000_000 * 1_000_000)
    period = int(round(1e9 / args.rate))
    rng = np.random.default_rng(args.seed)
    plugin = StoragePlugin.MCAP if args.storage == 'mcap' else StoragePlugin.SQLITE3
    options = {'vi': str(args.vi), 'ir': str(args.ir), 'rate': args.rate,
               'rgb_encoding': args.rgb_encoding, 'thermal_encoding': args.thermal_encoding,
               'jitter_ms': args.jitter_ms, 'offset_ms': args.offset_ms, 'drop': args.drop,
               'camera_info': args.camera_info, 'count': count, 'seed': args.seed,
               'start_ns': start}
    writer = Writer(out, version=METADATA_VERSION, storage_plugin=plugin)
    writer.set_custom_data('ssvif.make', json.dumps(options))
    writer.set_custom_data('ssvif.frames', FRAMES_NAME)
    try:
        writer.open()
    except (WriterError, OSError) as exc:
        raise BagError(f'cannot create bag {out}: {exc}') from None
    qos = [sensor_qos()]
    conns = {t: writer.add_connection(t, IMAGE_TYPE, typestore=ts, offered_qos_profiles=qos)
             for t in (RGB_TOPIC, THERMAL_TOPIC)}
    if args.camera_info:
        conns.update({t: writer.add_connection(t, INFO_TYPE, typestore=ts,
                                               offered_qos_profiles=qos)
                      for t in (RGB_INFO_TOPIC, THERMAL_INFO_TOPIC)})
    rows = []
    written = {'rgb': 0, 'thermal': 0}
    bar = progress.bar(total=count, desc=PROG, unit='pair', quiet=args.quiet)
    frames_path = out / FRAMES_NAME
    try:
        for i in range(count):
            vi_path, ir_path = pairs[i % len(pairs)]
            try:
                rgb = imaging.read_image(vi_path, 'rgb')  # H x W x 3 uint8
                th = imaging.read_image(ir_path, 'gray')  # H x W uint8 / uint16
            except (OSError, ValueError) as exc:
                raise BagError(f'cannot read image pair {vi_path.name}: {exc}') from None
            t_rgb = start + i * period
            jitter = rng.uniform(-args.jitter_ms, args.jitter_ms) if args.jitter_ms else 0.0
            t_th = t_rgb + int(round((args.offset_ms + jitter) * 1e6))
            keep_rgb = not (args.drop and rng.random() < args.drop)
            keep_th = not (args.drop and rng.random() < args.drop)
            msgs = []
            if keep_rgb:
                msgs.append((RGB_TOPIC, t_rgb, IMAGE_TYPE, image_message(
                    ts, rgb_as(rgb, args.rgb_encoding), args.rgb_encoding, t_rgb, 'rgb_camera')))
                if args.camera_info:
                    msgs.append((RGB_INFO_TOPIC, t_rgb, INFO_TYPE, camera_info_message(
                        ts, rgb.shape[1], rgb.shape[0], t_rgb, 'rgb_camera')))
            if keep_th:
                msgs.append((THERMAL_TOPIC, t_th, IMAGE_TYPE, image_message(
                    ts, thermal_as(th, args.thermal_encoding), args.thermal_encoding, t_th,
                    'thermal_camera')))
                if args.camera_info:
                    msgs.append((THERMAL_INFO_TOPIC, t_th, INFO_TYPE, camera_info_message(
                        ts, th.shape[1], th.shape[0], t_th, 'thermal_camera')))
            for topic, t, msgtype, msg in sorted(msgs, key=lambda m: m[1]):
                writer.write(conns[topic], t, ts.serialize_cdr(msg, msgtype))
            written['rgb'] += keep_rgb
            written['thermal'] += keep_th
            rows.append({'index': i, 'stem': vi_path.stem,
                         'rgb_stamp_ns': t_rgb if keep_rgb else '',
                         'thermal_stamp_ns': t_th if keep_th else '',
                         'vi': str(vi_path), 'ir': str(ir_path)})
            bar.update(1)
    finally:
        bar.close()
        writer.close()  # metadata.yaml: the bag is valid with the frames written so far
        with open(frames_path, 'w', newline='', encoding='utf-8') as f:
            w = csv.DictWriter(f, FRAMES_FIELDS)
            w.writeheader()
            w.writerows(rows)
    return {'bag': str(out), 'storage': args.storage, 'pairs': count, 'frames': written,
            'duration_s': (count - 1) / args.rate if count else 0.0,
            'frames_csv': str(frames_path)}


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The options of ``ssvif-bag make``."""
    ap.add_argument('--vi', required=True, help='folder of visible images')
    ap.add_argument('--ir', required=True, help='folder of thermal images (same file names)')
    ap.add_argument('--out', required=True, help='bag folder to create')
    ap.add_argument('--rate', type=float, default=30.0, help='frames per second (default 30)')
    ap.add_argument('--thermal-encoding', default='mono8',
                    choices=('mono8', 'mono16', '16UC1', '32FC1'))
    ap.add_argument('--rgb-encoding', default='rgb8', choices=('rgb8', 'bgr8', 'mono8'))
    ap.add_argument('--storage', default='mcap', choices=('mcap', 'sqlite3'))
    ap.add_argument('--jitter-ms', type=float, default=0.0,
                    help='uniform random thermal stamp jitter of +- N ms')
    ap.add_argument('--offset-ms', type=float, default=0.0,
                    help='constant thermal stamp offset [ms]')
    ap.add_argument('--drop', type=float, default=0.0,
                    help='probability of leaving out each frame of each stream')
    ap.add_argument('--camera-info', action='store_true',
                    help='also write /rgb/camera_info and /thermal/camera_info')
    ap.add_argument('--count', type=int, default=0,
                    help='pairs to write, cycling through the folders (default: each once)')
    ap.add_argument('--start-time', type=float, default=0.0,
                    help='stamp of the first frame, seconds since the epoch (default: now)')
    ap.add_argument('--seed', type=int, default=0, help='seed of --jitter-ms and --drop')
    ap.add_argument('--overwrite', action='store_true', help='replace an existing bag')
    ap.add_argument('--quiet', action='store_true', help='no progress bar')


def run(args) -> int:
    """``ssvif-bag make`` with parsed arguments; returns the exit status."""
    summary = make_bag(args)
    print(f'{PROG}: wrote {summary["pairs"]} pairs ({summary["frames"]["rgb"]} RGB / '
          f'{summary["frames"]["thermal"]} thermal frames, {summary["duration_s"]:.2f} s) to '
          f'{summary["bag"]} ({summary["storage"]}, rosbag2 metadata v{METADATA_VERSION}); '
          f'source files per stamp: {summary["frames_csv"]}', file=sys.stderr)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``ssvif-bag make`` alone (``ssvif-bag make`` is the usual entry)."""
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0])
    add_arguments(ap)
    return guarded(PROG, run, ap.parse_args(argv))
