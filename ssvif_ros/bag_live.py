"""``ssvif-bag play`` and ``ssvif-bag record``: a bag player and recorder on rclpy + rosbags.

    ssvif-bag play BAG [--rate R] [--loop] [--topics T ...] [--remap A:=B ...]
                   [--wait-subscribers SEC] [--log FILE] [--quiet]
    ssvif-bag record --out BAG [--topics T ...] [--duration S] [--storage mcap|sqlite3]

**play** publishes the messages of a bag (read with rosbags, no rosbag2 needed) at their recorded
timing scaled by ``--rate`` (2 = twice as fast): the message recorded ``dt`` after the first one
is published ``dt / R`` after the start. Messages go out as the serialized bytes stored in the
bag, unchanged (header stamps stay as recorded, like ``ros2 bag play``). Image and camera-info
topics use the sensor-data QoS (best effort, keep last 5), other topics reliable, keep last 10.
``--topics`` limits what is played, ``--remap /a:=/b`` renames a topic. ``--wait-subscribers``
waits up to SEC seconds for a subscriber on every image topic before the first message (then
0.5 s more, so that they match this publisher too). ``--log FILE`` writes one CSV row per
published message with a header (topic, header stamp, wall-clock publication time in ns): what
``ssvif-bag eval --live`` measures latency from. ``--loop`` starts again at the end until
interrupted. A progress line is shown on a terminal.

**record** subscribes to the topics (default: the fusion node's ``/fused/image``,
``/fused/segmentation`` and ``/diagnostics``) and writes every message as received (serialized
bytes, no decoding) into a new bag, mcap by default, with the **receive time** (wall clock, ns)
as the bag time, so ``receive time - header stamp`` can be computed afterwards. A topic whose
type is not known yet is subscribed as soon as a publisher appears. It stops after
``--duration`` seconds or on Ctrl-C / SIGTERM, closing the bag properly either way.

Both use the environment's ROS settings; when ``FASTDDS_DEFAULT_PROFILES_FILE`` is unset they set
it to the package's Fast DDS shared-memory profile (needed for 640x480 images with Fast DDS).
Errors print one line and exit 2.
"""
from __future__ import annotations

import argparse
import csv
import importlib
import os
from pathlib import Path
import signal
import sys
import threading
import time
from typing import Dict, List, Optional, Sequence, Tuple

from ssvif_ros import progress
from ssvif_ros.bag_read import BagError, open_bag

PLAY_PROG, RECORD_PROG = 'ssvif-bag play', 'ssvif-bag record'
SENSOR_TYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage',
                'sensor_msgs/msg/CameraInfo')
IMAGE_TYPES = SENSOR_TYPES[:2]
RECORD_TOPICS = ('/fused/image', '/fused/segmentation', '/diagnostics')
KNOWN_TYPES = {'/fused/image': 'sensor_msgs/msg/Image',
               '/fused/segmentation': 'sensor_msgs/msg/Image',
               '/fused/segmentation_color': 'sensor_msgs/msg/Image',
               '/fused/camera_info': 'sensor_msgs/msg/CameraInfo',
               '/diagnostics': 'diagnostic_msgs/msg/DiagnosticArray'}
MATCH_SETTLE_S = 0.5
LINGER_S = 0.5  # after the last message, before the node goes (see play)
LOG_FIELDS = ('topic', 'stamp_ns', 'publish_ns')


def use_package_dds_profile() -> None:
    """Point Fast DDS at the package's shared-memory profile unless the user chose one."""
    if not os.environ.get('FASTDDS_DEFAULT_PROFILES_FILE'):
        from ssvif_ros.processes import dds_profile_path
        os.environ['FASTDDS_DEFAULT_PROFILES_FILE'] = str(dds_profile_path())
    os.environ.setdefault('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')


def message_class(msgtype: str):
    """The rclpy message class of ``pkg/msg/Name``; BagError when it is not installed."""
    try:
        pkg, kind, name = msgtype.split('/')
        return getattr(importlib.import_module(f'{pkg}.{kind}'), name)
    except (ValueError, ImportError, AttributeError):
        raise BagError(f'message type {msgtype} is not available to rclpy here (install its '
                       'Python package)') from None


def topic_qos(msgtype: str):
    """Sensor-data QoS for image topics, reliable keep-last-10 for the rest."""
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    if msgtype in SENSOR_TYPES:
        return QoSProfile(depth=5, history=HistoryPolicy.KEEP_LAST,
                          reliability=ReliabilityPolicy.BEST_EFFORT)
    return QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST,
                      reliability=ReliabilityPolicy.RELIABLE)


def parse_remaps(items: Sequence[str]) -> Dict[str, str]:
    """``['/a:=/b']`` -> ``{'/a': '/b'}``; BagError for a malformed item."""
    out = {}
    for item in items or ():
        src, sep, dst = item.partition(':=')
        if not sep or not src or not dst:
            raise BagError(f'--remap {item!r}: expected FROM:=TO, e.g. /rgb/image_raw:=/cam/rgb')
        out[src] = dst
    return out


def _header_stamp(reader, raw: bytes, msgtype: str) -> Optional[int]:
    if msgtype not in SENSOR_TYPES:
        return None
    try:
        h = reader.deserialize(raw, msgtype).header.stamp
    except Exception:  # noqa: BLE001 - a corrupt message is still published as stored
        return None
    return int(h.sec) * 1_000_000_000 + int(h.nanosec)


# ---------------------------------------------------------------------------------------------
# play


def load_messages(bag: str, topics: Optional[Sequence[str]]):
    """(connections, [(conn, bag time, raw bytes)], truncation note) of a bag, in bag order.

    The whole selection is read into memory first, so that playback timing never waits for
    the disk; a bag cut short is played up to the cut (the note says where).
    """
    reader = open_bag(bag)
    try:
        conns = [c for c in reader.connections if not topics or c.topic in topics]
        if topics:
            missing = sorted(set(topics) - {c.topic for c in conns})
            if missing:
                have = ', '.join(sorted(reader.topics)) or '(none)'
                raise BagError(f'topic {missing[0]} is not in bag {bag}; its topics are: {have}')
        if not conns:
            raise BagError(f'bag {bag} has no messages to play')
        msgs, note = [], None
        it = reader.messages(connections=conns)
        while True:
            try:
                conn, t, raw = next(it)
            except StopIteration:
                break
            except Exception as exc:  # noqa: BLE001 - storage errors of a damaged bag
                note = f'{type(exc).__name__}: {exc}'
                break
            msgs.append((conn, t, bytes(raw), _header_stamp(reader, raw, conn.msgtype)))
        stopped = getattr(reader, 'stopped', None)
        if stopped is not None:
            note = f'{reader.path} stops at byte {stopped[0]} ({stopped[1]})'
    finally:
        reader.close()
    return conns, msgs, note


def play(bag: str, rate: float = 1.0, loop: bool = False, topics: Sequence[str] = (),
         remap: Optional[Dict[str, str]] = None, wait_subscribers: float = 0.0,
         log: Optional[str] = None, quiet: bool = False,
         stop: Optional[threading.Event] = None) -> Dict:
    """Publish ``bag`` with rclpy as described in the module docstring; return counts.

    Runs its own rclpy context (so it can run beside other nodes of the calling process).
    ``stop`` ends playback early when set.
    """
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    if not rate > 0:
        raise BagError(f'--rate must be > 0, got {rate}')
    remap = remap or {}
    conns, msgs, note = load_messages(bag, topics)
    if not msgs:
        raise BagError(f'bag {bag} holds no message on the selected topics'
                       + (f' ({note})' if note else ''))
    classes = {c.msgtype: message_class(c.msgtype) for c in conns}
    use_package_dds_profile()
    ctx = rclpy.Context()
    rclpy.init(args=[], context=ctx, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node('ssvif_bag_player', context=ctx)
    by_topic, pubs = {}, {}
    for c in conns:
        if c.topic not in by_topic:
            by_topic[c.topic] = node.create_publisher(
                classes[c.msgtype], remap.get(c.topic, c.topic), topic_qos(c.msgtype))
        pubs[c.id] = by_topic[c.topic]
    image_pubs = [pubs[c.id] for c in conns if c.msgtype in IMAGE_TYPES]
    log_file = open(log, 'w', newline='', encoding='utf-8') if log else None
    log_writer = csv.writer(log_file) if log_file else None
    if log_writer:
        log_writer.writerow(LOG_FIELDS)
    stop = stop or threading.Event()
    published, rounds = 0, 0
    t0_bag = msgs[0][1]
    bar = progress.bar(total=None if loop else len(msgs), desc=PLAY_PROG, unit='msg',
                       quiet=quiet)
    try:
        end = time.monotonic() + wait_subscribers
        while (time.monotonic() < end and not stop.is_set()
               and not all(p.get_subscription_count() for p in image_pubs)):
            time.sleep(0.05)
        if wait_subscribers and all(p.get_subscription_count() for p in image_pubs):
            time.sleep(MATCH_SETTLE_S)
        while not stop.is_set():
            t0_wall = time.monotonic()
            for conn, t_bag, raw, stamp in msgs:
                delay = t0_wall + (t_bag - t0_bag) / 1e9 / rate - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    break
                pubs[conn.id].publish(raw)
                published += 1
                if log_writer and stamp is not None:
                    log_writer.writerow((remap.get(conn.topic, conn.topic), stamp,
                                         time.time_ns()))
                bar.update(1)
            rounds += 1
            if not loop:
                break
        if not stop.is_set():
            # Best-effort samples still in Fast DDS's send path are lost when the participant
            # goes at once: a recorder missed the last frame of 8 in one fresh-clone CI run.
            time.sleep(LINGER_S)
    finally:
        bar.close()
        if log_file:
            log_file.close()
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)
    return {'published': published, 'rounds': rounds, 'messages_in_bag': len(msgs),
            'truncated': note}


def read_play_log(path) -> List[Tuple[str, int, int]]:
    """Rows ``(topic, stamp_ns, publish_ns)`` of a ``play --log`` file."""
    with open(path, newline='', encoding='utf-8') as f:
        return [(r['topic'], int(r['stamp_ns']), int(r['publish_ns']))
                for r in csv.DictReader(f)]


# ---------------------------------------------------------------------------------------------
# record


class BagRecorder:
    """Subscribes to topics on ``node`` and writes every message, as bytes, into a new bag.

    The bag time of a message is the wall-clock time its callback ran (ns). Topics whose type
    is unknown are looked up in the ROS graph by :meth:`discover` (call it periodically).
    """

    def __init__(self, node, out: str, topics: Sequence[str], storage: str = 'mcap'):
        from rosbags.rosbag2 import StoragePlugin, Writer, WriterError

        from ssvif_ros.bag_make import METADATA_VERSION, typestore
        self._node = node
        self._ts = typestore()
        self.out = Path(out)
        if self.out.exists():
            raise BagError(f'output bag {out} already exists')
        plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
        self._writer = Writer(self.out, version=METADATA_VERSION, storage_plugin=plugin)
        self._writer.set_custom_data('ssvif.record', 'bag time = receive time (wall clock)')
        try:
            self._writer.open()
        except (WriterError, OSError) as exc:
            raise BagError(f'cannot create bag {out}: {exc}') from None
        self._lock = threading.Lock()
        self._pending = list(topics)
        self._subs = {}
        self._conns = {}
        self.counts: Dict[str, int] = {t: 0 for t in topics}
        self.closed = False
        self.discover()

    def discover(self) -> None:
        """Subscribe to every pending topic that now has a publisher.

        The subscription is reliable (every frame a reliable writer sends is kept) unless a
        publisher offers only best effort, which a reliable reader would not match.
        """
        from rclpy.qos import ReliabilityPolicy
        graph = dict(self._node.get_topic_names_and_types())
        for topic in list(self._pending):
            infos = self._node.get_publishers_info_by_topic(topic)
            if not infos:
                continue
            types = graph.get(topic) or [KNOWN_TYPES.get(topic, infos[0].topic_type)]
            msgtype = types[0]
            cls = message_class(msgtype)
            best_effort = any(i.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
                              for i in infos)
            self._conns[topic] = self._writer.add_connection(topic, msgtype, typestore=self._ts)
            self._subs[topic] = self._node.create_subscription(
                cls, topic, lambda raw, t=topic: self._on_message(t, raw),
                record_qos(best_effort), raw=True)
            self._pending.remove(topic)

    def matched(self) -> bool:
        """True when every topic is subscribed and has at least one publisher."""
        return not self._pending and all(s.get_publisher_count() for s in self._subs.values())

    def _on_message(self, topic: str, raw: bytes) -> None:
        t = time.time_ns()
        with self._lock:
            if self.closed:
                return
            self._writer.write(self._conns[topic], t, raw)
            self.counts[topic] += 1

    def close(self) -> None:
        """Write the bag's index and metadata (idempotent)."""
        with self._lock:
            if not self.closed:
                self.closed = True
                self._writer.close()


def record_qos(best_effort: bool):
    """Keep-last-50 subscription QoS, reliable unless the publisher is best effort."""
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    return QoSProfile(depth=50, history=HistoryPolicy.KEEP_LAST,
                      reliability=(ReliabilityPolicy.BEST_EFFORT if best_effort
                                   else ReliabilityPolicy.RELIABLE))


def record(out: str, topics: Sequence[str] = RECORD_TOPICS, duration: float = 0.0,
           storage: str = 'mcap', ready_file: Optional[str] = None) -> Dict[str, int]:
    """Record until ``duration`` s have passed (0: until SIGINT/SIGTERM); return counts."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    use_package_dds_profile()
    from ssvif_ros.runtime import tune_malloc
    tune_malloc()
    rclpy.init(args=[])
    node = rclpy.create_node('ssvif_bag_recorder')
    rec = BagRecorder(node, out, [t if t.startswith('/') else '/' + t for t in topics], storage)
    stop = threading.Event()
    old = signal.signal(signal.SIGTERM, lambda *a: stop.set())
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    end = time.monotonic() + duration if duration > 0 else None
    ready = False
    next_discover = 0.0
    try:
        while not stop.is_set() and (end is None or time.monotonic() < end):
            executor.spin_once(timeout_sec=0.05)
            now = time.monotonic()
            if now >= next_discover:
                rec.discover()
                next_discover = now + 0.5
                if ready_file and not ready and rec.matched():
                    ready = True
                    Path(ready_file).write_text('ready\n')
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        signal.signal(signal.SIGTERM, old)
        rec.close()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return rec.counts


# ---------------------------------------------------------------------------------------------
# CLI


def add_play_arguments(ap: argparse.ArgumentParser) -> None:
    """The options of ``ssvif-bag play``."""
    ap.add_argument('bag', help='bag folder, .mcap or .db3 file')
    ap.add_argument('--rate', type=float, default=1.0, help='playback speed factor (default 1)')
    ap.add_argument('--loop', action='store_true', help='play again from the start at the end')
    ap.add_argument('--topics', nargs='+', default=[], help='play only these topics')
    ap.add_argument('--remap', nargs='+', default=[], metavar='FROM:=TO',
                    help='publish topic FROM as TO')
    ap.add_argument('--wait-subscribers', type=float, default=0.0, metavar='SEC',
                    help='wait up to SEC for subscribers on the image topics')
    ap.add_argument('--log', help='CSV of topic, header stamp and publication time per message')
    ap.add_argument('--quiet', action='store_true', help='no progress line')


def add_record_arguments(ap: argparse.ArgumentParser) -> None:
    """The options of ``ssvif-bag record``."""
    ap.add_argument('--out', required=True, help='bag folder to create')
    ap.add_argument('--topics', nargs='+', default=list(RECORD_TOPICS),
                    help='topics to record (default: %(default)s)')
    ap.add_argument('--duration', type=float, default=0.0,
                    help='stop after S seconds (default 0: at Ctrl-C / SIGTERM)')
    ap.add_argument('--storage', default='mcap', choices=('mcap', 'sqlite3'))
    ap.add_argument('--ready-file', help=argparse.SUPPRESS)


def run_play(args) -> int:
    """``ssvif-bag play`` with parsed arguments."""
    stop = threading.Event()
    old = signal.signal(signal.SIGTERM, lambda *a: stop.set())
    try:
        res = play(args.bag, args.rate, args.loop, args.topics, parse_remaps(args.remap),
                   args.wait_subscribers, args.log, args.quiet, stop)
    except KeyboardInterrupt:
        print(f'{PLAY_PROG}: interrupted', file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, old)
    print(f'{PLAY_PROG}: published {res["published"]} messages of {res["messages_in_bag"]} '
          f'({res["rounds"]} rounds)', file=sys.stderr)
    if res['truncated']:
        print(f'{PLAY_PROG}: warning: {res["truncated"]}; played the messages before it',
              file=sys.stderr)
    return 0


def run_record(args) -> int:
    """``ssvif-bag record`` with parsed arguments."""
    counts = record(args.out, args.topics, args.duration, args.storage, args.ready_file)
    print(f'{RECORD_PROG}: wrote {args.out}: ' + ', '.join(
        f'{t} {n}' for t, n in counts.items()), file=sys.stderr)
    return 0
