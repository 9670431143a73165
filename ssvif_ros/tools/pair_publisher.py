"""Publish paired visible/thermal images as sensor_msgs/Image at a fixed rate.

Reads a folder in the MSRS layout (``<dir>/vi/*.png`` RGB and ``<dir>/ir/*.png`` thermal with
the same file names) or generates a synthetic scene (:func:`synthetic_scene`) and publishes
``rgb/image_raw`` (rgb8, bgr8 or mono8) and ``thermal/image_raw`` (mono8, mono16 or 32FC1) with
equal header stamps (the wall clock at publication), optionally with a thermal stamp offset and
uniform jitter. Used by the tests, the latency bench and the demo::

    python -m ssvif_ros.tools.pair_publisher --data ../shared/data/msrs/val --rate 30 --loop
    python -m ssvif_ros.tools.pair_publisher --synthetic 40 --count 300 --jitter 0.002

Thermal encodings other than mono8 are derived from the 8-bit frame ``v`` as a camera would
send them: mono16 = ``7000 + 8 v`` (radiometric counts using a few thousand of the 65536 levels),
32FC1 = ``10 + 30 v / 255`` degrees Celsius.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
import sys
import time
from typing import Optional, Sequence

import numpy as np

from ssvif_ros import imaging
from ssvif_ros.dataset_paths import load_pairs, shared_data_dir
from ssvif_ros.synthetic import synthetic_scene

MATCH_SETTLE_S = 0.5  # after the subscribers appear, before the first frame
RGB_TOPIC = 'rgb/image_raw'
THERMAL_TOPIC = 'thermal/image_raw'


def thermal_as(th8: np.ndarray, encoding: str) -> np.ndarray:
    """Convert an 8-bit thermal frame to ``encoding`` (mono8, mono16, 16UC1 or 32FC1)."""
    th8 = np.asarray(th8)
    if th8.dtype != np.uint8:  # already 16-bit data from the folder
        if encoding in ('mono16', '16UC1'):
            return th8.astype(np.uint16)
        th8 = (th8.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    if encoding == 'mono8':
        return th8
    if encoding in ('mono16', '16UC1'):
        return (7000 + 8 * th8.astype(np.uint16)).astype(np.uint16)
    if encoding == '32FC1':
        return (10.0 + 30.0 * th8.astype(np.float32) / 255.0).astype(np.float32)
    raise ValueError(f'thermal encoding {encoding!r} is not one of mono8, mono16, 16UC1, 32FC1')


def rgb_as(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """Convert an RGB uint8 frame to ``encoding`` (rgb8, bgr8 or mono8)."""
    if encoding == 'rgb8':
        return rgb
    if encoding == 'bgr8':
        return np.ascontiguousarray(rgb[:, :, ::-1])
    if encoding == 'mono8':
        return (imaging.rgb_to_gray(rgb.astype(np.float32)) + 0.5).astype(np.uint8)
    raise ValueError(f'RGB encoding {encoding!r} is not one of rgb8, bgr8, mono8')


def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument('--data', help='MSRS-layout folder with vi/ and ir/ '
                     '(default: $SSVIF_DATA/msrs/val; without SSVIF_DATA it is required)')
    src.add_argument('--synthetic', type=int, metavar='N',
                     help='publish N generated frames of the synthetic scene instead')
    p.add_argument('--size', default='640x480', help='synthetic image size WxH')
    p.add_argument('--limit', type=int, help='read at most this many pairs from --data')
    p.add_argument('--rate', type=float, default=30.0, help='pairs per second')
    p.add_argument('--count', type=int, help='publish this many pairs (cycling the data)')
    p.add_argument('--loop', action='store_true', help='cycle the data until interrupted')
    p.add_argument('--stamp-offset', type=float, default=0.0,
                   help='add this to the thermal stamp [s]')
    p.add_argument('--jitter', type=float, default=0.0,
                   help='uniform random thermal stamp jitter of +- this [s]')
    p.add_argument('--rgb-encoding', default='rgb8', choices=('rgb8', 'bgr8', 'mono8'))
    p.add_argument('--thermal-encoding', default='mono8',
                   choices=('mono8', 'mono16', '16UC1', '32FC1'))
    p.add_argument('--frame-id', default='camera', help='header frame_id of both images')
    p.add_argument('--qos', default='best_effort', choices=('best_effort', 'reliable'))
    p.add_argument('--wait-subscribers', type=float, default=10.0, metavar='SEC',
                   help='wait up to SEC for a subscriber on both topics before publishing '
                   f'(then {MATCH_SETTLE_S:g} s more, so that they match this publisher too)')
    p.add_argument('--seed', type=int, default=0, help='jitter seed')
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the exit code."""
    import rclpy
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from ssvif_ros.ros_image import numpy_to_image
    from ssvif_ros.runtime import tune_malloc
    from ssvif_ros.tools import split_ros_args

    tune_malloc()  # as the node: image buffers recycled, not mapped per frame
    argv, ros_args = split_ros_args(argv)
    args = _parse_args(argv)
    if args.rate <= 0:
        print(f'--rate must be > 0, got {args.rate}', file=sys.stderr)
        return 2
    if args.synthetic is not None:
        w, h = (int(s) for s in args.size.lower().split('x'))
        frames = [synthetic_scene(i, w, h) for i in range(args.synthetic)]
        source = f'{args.synthetic} synthetic frames ({w}x{h})'
    else:
        if args.data:
            folder = Path(args.data)
        elif os.environ.get('SSVIF_DATA'):
            folder = shared_data_dir() / 'msrs' / 'val'
        else:
            # Never guessed from this module's location: installed, that is the install tree.
            print('pair_publisher: no input: pass --data DIR (a folder with vi/ and ir/), '
                  '--synthetic N, or set SSVIF_DATA (then $SSVIF_DATA/msrs/val)', file=sys.stderr)
            return 2
        try:
            frames = load_pairs(folder, args.limit)
        except (FileNotFoundError, ValueError) as exc:
            print(f'pair_publisher: {exc}', file=sys.stderr)
            return 2
        source = f'{len(frames)} pairs from {folder}'
    if not frames:
        print('pair_publisher: nothing to publish', file=sys.stderr)
        return 2

    rclpy.init(args=['pair_publisher'] + ros_args)
    node = rclpy.create_node('pair_publisher')
    qos = QoSProfile(depth=5, history=HistoryPolicy.KEEP_LAST,
                     reliability=(ReliabilityPolicy.RELIABLE if args.qos == 'reliable'
                                  else ReliabilityPolicy.BEST_EFFORT))
    pub_rgb = node.create_publisher(Image, RGB_TOPIC, qos)
    pub_th = node.create_publisher(Image, THERMAL_TOPIC, qos)
    msgs = []
    for rgb, th in frames:  # build every message once; only the stamps change per publication
        m_rgb = numpy_to_image(rgb_as(rgb, args.rgb_encoding), args.rgb_encoding)
        m_th = numpy_to_image(thermal_as(th, args.thermal_encoding), args.thermal_encoding)
        m_rgb.header.frame_id = m_th.header.frame_id = args.frame_id
        msgs.append((m_rgb, m_th))
    total = args.count if args.count is not None else (None if args.loop else len(msgs))
    rng = np.random.default_rng(args.seed)
    published = 0
    try:
        t_wait = time.monotonic() + args.wait_subscribers
        while time.monotonic() < t_wait and (pub_rgb.get_subscription_count() == 0
                                             or pub_th.get_subscription_count() == 0):
            time.sleep(0.05)
        if pub_rgb.get_subscription_count() and pub_th.get_subscription_count():
            # Discovery is two-sided: this side has matched the subscribers, theirs may not have
            # matched these writers yet, and best-effort frames sent before that are lost.
            time.sleep(MATCH_SETTLE_S)
        node.get_logger().info(f'publishing {source} at {args.rate:g} Hz on '
                               f'{pub_rgb.topic_name} + {pub_th.topic_name}')
        period = 1.0 / args.rate
        t0 = time.monotonic()
        while total is None or published < total:
            deadline = t0 + published * period
            delay = deadline - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            m_rgb, m_th = msgs[published % len(msgs)]
            now = time.time_ns()
            th_ns = now + int(round((args.stamp_offset + (
                rng.uniform(-args.jitter, args.jitter) if args.jitter > 0 else 0.0)) * 1e9))
            m_rgb.header.stamp.sec, m_rgb.header.stamp.nanosec = divmod(now, 1_000_000_000)
            m_th.header.stamp.sec, m_th.header.stamp.nanosec = divmod(th_ns, 1_000_000_000)
            pub_rgb.publish(m_rgb)
            pub_th.publish(m_th)
            published += 1
    except KeyboardInterrupt:
        pass
    finally:
        elapsed = max(time.monotonic() - t0, 1e-9) if published else 0.0
        if published:
            print(f'pair_publisher: published {published} pairs in {elapsed:.1f} s '
                  f'({published / elapsed:.1f} Hz)', flush=True)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
