"""``ssvif-bag eval``: replay a bag through the fusion node and report on what came out.

    ssvif-bag eval BAG --out DIR [--live [--node-running] [--rate R]] [--backend B] [--model M]
                   [--param NAME:=VALUE ...] [--boxes DIR] [--rgb-topic T] [--thermal-topic T]
                   [--strip N] [--quiet]

Two modes, one report:

* **offline** (default): the bag is read with rosbags in recording order; RGB and thermal frames
  are paired by header stamp with the node's pairing class
  (:class:`ssvif_ros.pairing.ApproxTimePairer`, the node's slop / queue / reset parameters),
  decoded and registered by the node's own :func:`ssvif_ros.frames.prepare_pair`, and fused
  by the same backend (``--backend``/``--model``/``--param`` as the node's parameters). The
  results go to the output bag ``DIR/fused`` (mcap): ``/fused/image`` (rgb8) and
  ``/fused/segmentation`` (mono8 class ids), each with the RGB input's header, bag time = the bag
  time of the frame that completed the pair plus the processing time. Latency here is the
  processing time (decode + inference) per pair.
* **live** (``--live``): ``fusion_node`` is started in its own process (or, with
  ``--node-running``, one already running in this ROS domain is used), ``ssvif-bag record`` runs in
  another process recording ``/fused/image``, ``/fused/segmentation`` and ``/diagnostics`` into
  ``DIR/recorded`` (receive time = bag time), and this process plays the bag's two image topics
  at their recorded timing (``--rate``), logging when each frame was published
  (``DIR/play_log.csv``). End-to-end latency of a fused frame = its receive time - the
  publication time of the RGB frame whose stamp it carries (the bag's header stamps are from
  the time of recording, so ``receive time - header stamp`` would measure the bag's age).

Both write to DIR: ``report.md``, ``report.json``, ``latency.png`` (latency per frame and output
rate over time), ``metrics.png`` (a histogram per fusion metric) and ``classes.png`` (a strip of
``--strip`` fused frames, visible | thermal | fused | classes over fused). The report counts the
input frames, the pairs the pairing class forms from them, the fused frames and every input
stamp that never came out with the reason: the pairing drop (``pairing.rgb.superseded``, ...,
``unpaired_at_end``), a frame the node rejects (``rgb.unsupported_encoding``, ...), or, live, a
pair the node formed but did not publish (reason taken from the node's ``/diagnostics``
counters: ``inference_busy`` when the node reports newer pairs replacing waiting ones,
``lost_in_transport`` when it received fewer frames than were played). Fusion metrics
(:mod:`ssvif_ros.metrics`, VIFB convention: EN, SD, SF, AG, MI, Qabf, SSIM, VIF against the
visible and thermal images the backend saw) are given per frame and summarized. With
``--boxes DIR`` the class maps are scored against ``DIR/<stem>.txt`` YOLO boxes
(:class:`ssvif_ros.labels.BoxScorer`), the stem of each stamp coming from the bag's
``frames.csv`` (written by ``ssvif-bag make``).

A bag cut short (an MCAP without footer, a storage error part way) is evaluated up to the cut:
the output bag and report are written with ``status: truncated`` and where it stopped, and the
command prints one error line and exits 2 (a cut sqlite3 file cannot be opened at all: one
error line, exit 2, nothing written). Ctrl-C during an offline run stops after the pair in
hand and writes the report (``status: interrupted``) and the output bag so far; exit 130.
Other unusable input also exits 2 (nothing is left half-written); a live run in which the node
published nothing exits 1.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ssvif_ros import imaging, progress
from ssvif_ros.backends.base import OutputError
from ssvif_ros.bag_make import image_message, read_frames, typestore
from ssvif_ros.bag_read import BagError, open_bag, read_messages, select_connections
from ssvif_ros.bag_report import (build_report, fmt, jsonable, PROG, report_markdown, Scores,
                                  write_plots)
from ssvif_ros.frames import check_frame, FrameError, prepare_pair, stamp_ns, STREAM_NAMES
from ssvif_ros.pairing import ApproxTimePairer

RGB, THERMAL = 0, 1
FUSED_TOPIC, SEG_TOPIC, DIAG_TOPIC = '/fused/image', '/fused/segmentation', '/diagnostics'
IMAGE_TYPE = 'sensor_msgs/msg/Image'


# ---------------------------------------------------------------------------------------------
# Node configuration (the node's own parameter table and checks)


def parse_params(items: Sequence[str]) -> Dict[str, Any]:
    """``['slop:=0.03']`` -> ``{'slop': 0.03}``; BagError for a malformed item."""
    from ssvif_ros.node_params import parse_assignments
    try:
        return parse_assignments(items)
    except ValueError as exc:
        raise BagError(str(exc)) from None


def node_config(backend: str, model: str, params: Dict[str, Any]):
    """(FusionConfig, model path) for these settings; BagError names a bad parameter."""
    from ssvif_ros.node_params import defaults, make_config, model_path, StartupError
    values = defaults()
    values.update(params)
    values['backend'], values['model'] = backend, model
    try:
        cfg = make_config(values)
        return cfg, model_path(cfg.model, cfg.backend)
    except ValueError as exc:
        msg = str(exc)
        raise BagError('--param ' + msg[len('parameter '):] if 'not a fusion_node' in msg
                       else msg) from None
    except StartupError as exc:
        raise BagError(str(exc)) from None


def load_backend(cfg, model: Optional[str]):
    """The node's backend for ``cfg``; BagError when it cannot start."""
    from ssvif_ros.backends import BackendError, create_backend
    try:
        return create_backend(cfg.backend, model, threads=cfg.threads, device=cfg.device or None)
    except BackendError as exc:
        raise BagError(str(exc)) from None


# ---------------------------------------------------------------------------------------------
# Reading the input bag with the node's pairing


class InputPass:
    """One pass over the input bag's image topics through the pairing class.

    Yields pairs ``(rgb msg, thermal msg, bag time ns)``; afterwards ``frames`` holds the input
    frame counts, ``dropped`` every unpaired input stamp with its reason and ``stopped`` where a
    truncated bag ended (None when read to its end).
    """

    def __init__(self, bag: str, rgb_topic: str, thermal_topic: str, cfg):
        self.bag, self.cfg = bag, cfg
        self.topics = (rgb_topic, thermal_topic)
        self.frames = {'rgb': 0, 'thermal': 0}
        self.stamps = {'rgb': [], 'thermal': []}
        self.dropped: Dict[Tuple[int, int], str] = {}
        self.stopped: Optional[Dict[str, Any]] = None
        self.pairer = ApproxTimePairer(cfg.slop, cfg.queue_size, cfg.reset_after,
                                       names=STREAM_NAMES, record_drops=True)
        self.first_bag_ns: Optional[int] = None
        self.interrupted = False

    def __iter__(self):
        reader = open_bag(self.bag)
        try:
            conns, msgtypes, infos = select_connections(reader, *self.topics)
            if msgtypes[RGB] != IMAGE_TYPE:
                raise BagError(f'RGB topic {self.topics[0]} is {msgtypes[RGB]}; the fusion node '
                               f'subscribes {IMAGE_TYPE}')
            self.in_bag = {'rgb': infos[0].msgcount, 'thermal': infos[1].msgcount}
            stream_of = {self.topics[0]: RGB, self.topics[1]: THERMAL}
            stopped = getattr(reader, 'stopped', None)
            if stopped is not None:
                self.stopped = {'file': str(reader.path), 'byte': stopped[0],
                                'reason': stopped[1]}
            it = read_messages(reader, conns, None, None, self.bag)
            while True:
                try:
                    conn, t_bag, raw = next(it)
                except StopIteration:
                    break
                except BagError as exc:  # a damaged sqlite page, a bad chunk: stop here
                    self.stopped = {'file': self.bag, 'reason': str(exc),
                                    'after_messages': sum(self.frames.values())}
                    break
                if self.first_bag_ns is None:
                    self.first_bag_ns = t_bag
                stream = stream_of[conn.topic]
                name = STREAM_NAMES[stream]
                self.frames[name] += 1
                try:
                    msg = reader.deserialize(raw, conn.msgtype)
                except Exception:  # noqa: BLE001 - counted like the node's bad frames
                    self.dropped[(stream, -self.frames[name])] = f'{name}.deserialize_error'
                    continue
                stamp = stamp_ns(msg)
                self.stamps[name].append(stamp)
                try:
                    check_frame(stream, msg, conn.msgtype, self.cfg.max_input_pixels)
                except FrameError as exc:
                    self.dropped[(stream, stamp)] = exc.reason
                    continue
                pair = self.pairer.add(stream, stamp, msg)
                for s, t, reason in self.pairer.take_dropped():
                    self.dropped[(s, t)] = f'pairing.{STREAM_NAMES[s]}.{reason}'
                if pair is not None:
                    yield pair.items[RGB], pair.items[THERMAL], t_bag
        finally:
            reader.close()
        stats = self.pairer.stats()
        self.pairing = stats
        for s, t, reason in self.pairer.take_dropped():
            self.dropped[(s, t)] = f'pairing.{STREAM_NAMES[s]}.{reason}'

    def finish(self, paired: Sequence[Tuple[int, int]]) -> None:
        """Mark the frames still queued in the pairer as ``unpaired_at_end``."""
        seen = set(paired) | set(self.dropped)
        for name, s in (('rgb', RGB), ('thermal', THERMAL)):
            for t in self.stamps[name]:
                if (s, t) not in seen:
                    self.dropped[(s, t)] = f'pairing.{name}.unpaired_at_end'

    def where(self) -> Optional[str]:
        """One sentence: where a truncated bag stopped (None when complete)."""
        if self.stopped is None:
            return None
        s = self.stopped
        at = f' at byte {s["byte"]}' if 'byte' in s else ''
        return (f'{s["file"]} stops{at} ({s["reason"]}) after {self.frames["rgb"]} RGB and '
                f'{self.frames["thermal"]} thermal frames')


# ---------------------------------------------------------------------------------------------
# Offline


class _StopOnSigint:
    """While alive, SIGINT only sets ``requested`` (main thread; elsewhere a no-op)."""

    def __init__(self):
        import signal
        self.requested = False
        self._old = None
        try:
            self._old = signal.signal(signal.SIGINT, self._on_signal)
        except ValueError:  # not the main thread: Ctrl-C stays a KeyboardInterrupt
            pass

    def _on_signal(self, *_):
        self.requested = True

    def restore(self) -> None:
        """Put the previous SIGINT handler back."""
        import signal
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            self._old = None


def run_offline(args, cfg, model, out: Path, stems, scores_factory) -> Dict[str, Any]:
    """Pair, fuse and score the bag in this process; write the output bag ``out/fused``."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    from ssvif_ros.bag_make import METADATA_VERSION
    backend = load_backend(cfg, model)
    inputs = InputPass(args.bag, args.rgb_topic, args.thermal_topic, cfg)
    out_bag = out / 'fused'
    if out_bag.exists():
        raise BagError(f'{out_bag} already exists: use a new --out')
    ts = typestore()
    writer = Writer(out_bag, version=METADATA_VERSION, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    c_fused = writer.add_connection(FUSED_TOPIC, IMAGE_TYPE, typestore=ts)
    c_seg = writer.add_connection(SEG_TOPIC, IMAGE_TYPE, typestore=ts)
    scores = None
    paired, failed, n_pairs = [], {}, 0
    t_free = 0  # bag time at which the worker is done with the previous pair
    bar = progress.bar(desc=PROG, unit='pair', quiet=args.quiet)
    stop = _StopOnSigint()  # Ctrl-C ends the run after the pair in hand: bag and report agree
    try:
        for rgb_msg, th_msg, t_bag in inputs:
            if stop.requested:
                raise KeyboardInterrupt
            if scores is None:
                scores = scores_factory(backend, min(inputs.in_bag.values()))
            n_pairs += 1
            stamp, th_stamp = stamp_ns(rgb_msg), stamp_ns(th_msg)
            paired += [(RGB, stamp), (THERMAL, th_stamp)]
            t0 = time.perf_counter()
            try:
                vis, ir = prepare_pair(rgb_msg, th_msg, cfg)  # H x W x 3 uint8, H x W float32
            except FrameError as exc:
                failed[(RGB, stamp)] = exc.reason
                continue
            try:
                fused, ids = backend.infer(vis, ir)  # H x W x 3 uint8, H x W uint8
            except OutputError:  # NaN or class ids beyond the card: dropped as the node does
                failed[(RGB, stamp)] = 'bad_output'
                continue
            fused8 = imaging.to_uint8(fused)
            ids = np.ascontiguousarray(ids, np.uint8)
            proc_ns = int((time.perf_counter() - t0) * 1e9)
            frame = rgb_msg.header.frame_id
            # One worker fuses the pairs in turn: a pair waits for the one before it, so the
            # output log times keep the input order even when a (first, cold) pair is slow.
            t_out = max(t_bag, t_free) + proc_ns
            t_free = t_out
            writer.write(c_fused, t_out, ts.serialize_cdr(
                image_message(ts, fused8, 'rgb8', stamp, frame), IMAGE_TYPE))
            writer.write(c_seg, t_out, ts.serialize_cdr(
                image_message(ts, ids, 'mono8', stamp, frame), IMAGE_TYPE))
            scores.add(stamp, th_stamp, vis, ir, fused8, ids,
                       (t_bag - inputs.first_bag_ns) / 1e9, proc_ns / 1e6)
            bar.update(1)
    except KeyboardInterrupt:  # keep what is fused: the bag is closed and the report written
        inputs.interrupted = True
        inputs.stopped = {'file': args.bag, 'reason': 'interrupted by the user'}
    finally:
        stop.restore()
        bar.close()
        writer.close()
    if scores is None:
        scores = scores_factory(backend, 0)
    inputs.finish(paired)
    dropped = dict(inputs.dropped)
    dropped.update(failed)
    return {'inputs': inputs, 'pairs': n_pairs, 'scores': scores, 'dropped': dropped,
            'output_bag': str(out_bag), 'backend': backend,
            'latency_definition': 'processing time per pair in this process (decode, register, '
                                  'inference), not end-to-end',
            'node': None}


# ---------------------------------------------------------------------------------------------
# Live


def _start_recorder(out_bag: Path, ready: Path, log: Path, env) -> subprocess.Popen:
    cmd = [sys.executable, '-m', 'ssvif_ros.bag_cli', 'record', '--out', str(out_bag),
           '--topics', FUSED_TOPIC, SEG_TOPIC, DIAG_TOPIC, '--ready-file', str(ready)]
    with open(log, 'w') as f:
        return subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)


def run_live(args, cfg, model, out: Path, stems, scores_factory) -> Dict[str, Any]:
    """Play the bag into fusion_node, record its outputs, then score them against the inputs."""
    from ssvif_ros.bag_live import play, read_play_log
    from ssvif_ros.processes import dds_profile_path, ros_env, start_fusion_node, stop, tail

    rec_bag = out / 'recorded'
    if rec_bag.exists():
        raise BagError(f'{rec_bag} already exists: use a new --out')
    env = dict(os.environ) if args.node_running else ros_env()
    if not env.get('FASTDDS_DEFAULT_PROFILES_FILE'):
        env['FASTDDS_DEFAULT_PROFILES_FILE'] = str(dds_profile_path())
    os.environ.update({k: env[k] for k in ('RMW_IMPLEMENTATION', 'ROS_AUTOMATIC_DISCOVERY_RANGE',
                                           'ROS_DOMAIN_ID', 'FASTDDS_DEFAULT_PROFILES_FILE')
                       if k in env})
    node = None
    if not args.node_running:
        params = [f'backend:={cfg.backend}'] + ([f'model:={model}'] if model else [])
        params += [f'{k}:={v}' for k, v in parse_params(args.param).items()]
        node = start_fusion_node(params, out / 'fusion_node.log', env)
    ready = out / '.recorder-ready'
    ready.unlink(missing_ok=True)
    recorder = _start_recorder(rec_bag, ready, out / 'recorder.log', env)
    play_res, node_code = None, None
    try:
        end = time.monotonic() + args.start_timeout
        while not ready.exists():
            if node is not None and node.poll() is not None:
                raise BagError(f'fusion_node exited with code {node.returncode} before fusing '
                               f'anything:\n{tail(out / "fusion_node.log")}')
            if recorder.poll() is not None:
                raise BagError(f'the recorder exited with code {recorder.returncode}:\n'
                               f'{tail(out / "recorder.log")}')
            if time.monotonic() > end:
                raise BagError(f'no fusion_node publishing {FUSED_TOPIC} within '
                               f'{args.start_timeout:g} s (ROS_DOMAIN_ID '
                               f'{env.get("ROS_DOMAIN_ID", "0")})')
            time.sleep(0.1)
        play_res = play(args.bag, args.rate, topics=[args.rgb_topic, args.thermal_topic],
                        wait_subscribers=10.0, log=str(out / 'play_log.csv'), quiet=args.quiet)
        time.sleep(2.5)  # the last pairs, and one more /diagnostics message (1 Hz)
    finally:
        ready.unlink(missing_ok=True)
        stop(recorder, 10.0)
        if node is not None:
            node_code = stop(node)
        ready.unlink(missing_ok=True)
    published = {}
    for topic, stamp, t_pub in read_play_log(out / 'play_log.csv'):
        if topic == args.rgb_topic:
            published.setdefault(stamp, t_pub)
    outputs, diag = read_recorded(rec_bag)
    inputs = InputPass(args.bag, args.rgb_topic, args.thermal_topic, cfg)
    backend = load_backend(cfg, model)  # its class names, palette and description
    scores = None
    paired, n_pairs = [], 0
    t_first = min((o[0] for o in outputs.values()), default=0)
    bar = progress.bar(total=len(outputs), desc=f'{PROG}: scoring', unit='frame',
                       quiet=args.quiet)
    for rgb_msg, th_msg, _ in inputs:
        if scores is None:
            scores = scores_factory(backend, min(inputs.in_bag.values()))
        n_pairs += 1
        stamp, th_stamp = stamp_ns(rgb_msg), stamp_ns(th_msg)
        paired += [(RGB, stamp), (THERMAL, th_stamp)]
        got = outputs.pop(stamp, None)
        if got is None or got[1] is None:
            continue
        recv_ns, fused8, ids = got
        try:
            vis, ir = prepare_pair(rgb_msg, th_msg, cfg)
        except FrameError:
            continue
        lat = (recv_ns - published[stamp]) / 1e6 if stamp in published else float('nan')
        if ids is None:
            ids = np.zeros(fused8.shape[:2], np.uint8)
        scores.add(stamp, th_stamp, vis, ir, fused8, ids, (recv_ns - t_first) / 1e9, lat)
        bar.update(1)
    bar.close()
    if scores is None:
        scores = scores_factory(backend, 0)
    inputs.finish(paired)
    dropped = dict(inputs.dropped)
    fused_stamps = {r['stamp_ns'] for r in scores.rows}
    node_rgb = int(float(diag.get('frames_rgb', 0))) if diag else 0
    busy = int(float(diag.get('drops.inference_busy', 0))) if diag else 0
    played_rgb = len(published)
    for s, t in paired:
        if s == RGB and t not in fused_stamps and (RGB, t) not in dropped:
            if diag and node_rgb < played_rgb:
                dropped[(RGB, t)] = 'lost_in_transport'
            elif busy:
                dropped[(RGB, t)] = 'node.inference_busy'
            else:
                dropped[(RGB, t)] = 'node.not_published'
    return {'inputs': inputs, 'pairs': n_pairs, 'scores': scores, 'dropped': dropped,
            'output_bag': str(rec_bag), 'backend': backend,
            'latency_definition': 'end to end: receive time of the fused frame in the recorder '
                                  'process - publication time of its RGB input by the player',
            'node': {'diagnostics': diag, 'exit_code': node_code,
                     'started_here': not args.node_running,
                     'unmatched_outputs': len(outputs)},
            'play': play_res}


def read_recorded(bag: Path) -> Tuple[Dict[int, Tuple], Dict[str, str]]:
    """``{stamp: (receive ns, fused rgb8, ids)}`` and the last fusion diagnostics values."""
    from ssvif_ros import ros_image
    reader = open_bag(str(bag))
    outputs: Dict[int, List] = {}
    diag: Dict[str, str] = {}
    try:
        for conn, t, raw in reader.messages():
            msg = reader.deserialize(raw, conn.msgtype)
            if conn.topic == DIAG_TOPIC:
                for st in msg.status:
                    if st.name.endswith(': fusion'):
                        diag = {kv.key: kv.value for kv in st.values}
                        diag['level'] = str(int(st.level))
                        diag['message'] = st.message
                continue
            stamp = stamp_ns(msg)
            slot = outputs.setdefault(stamp, [None, None, None])
            if conn.topic == FUSED_TOPIC:
                slot[0] = t
                slot[1] = ros_image.image_to_numpy(msg, rgb=True, copy=True)
            elif conn.topic == SEG_TOPIC:
                slot[2] = ros_image.image_to_numpy(msg, copy=True)
    finally:
        reader.close()
    return {k: tuple(v) for k, v in outputs.items() if v[0] is not None}, diag


# ---------------------------------------------------------------------------------------------
# CLI


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The options of ``ssvif-bag eval``."""
    ap.add_argument('bag', help='bag folder, .mcap or .db3 file')
    ap.add_argument('--out', required=True, help='report folder')
    ap.add_argument('--live', action='store_true', help='play into a running fusion_node')
    ap.add_argument('--node-running', action='store_true',
                    help='--live: use a fusion_node already running in this ROS domain (give '
                    'its --backend/--model/--param too: the metrics redo its pre-processing and '
                    'the strip uses its class names; its counters include earlier input)')
    ap.add_argument('--rate', type=float, default=1.0, help='--live: playback speed factor')
    ap.add_argument('--backend', default='onnxruntime', help='backend (as the node parameter)')
    ap.add_argument('--model', default='', help="model; '' = the embedded default model")
    ap.add_argument('--param', nargs='+', default=[], metavar='NAME:=VALUE',
                    help='other fusion_node parameters, e.g. slop:=0.03')
    ap.add_argument('--boxes', help='folder of YOLO box files <stem>.txt to score class maps')
    ap.add_argument('--rgb-topic', default='/rgb/image_raw')
    ap.add_argument('--thermal-topic', default='/thermal/image_raw')
    ap.add_argument('--strip', type=int, default=4, help='fused frames in classes.png')
    ap.add_argument('--start-timeout', type=float, default=60.0, help=argparse.SUPPRESS)
    ap.add_argument('--quiet', action='store_true', help='no progress bar')


def run(args) -> int:
    """``ssvif-bag eval`` with parsed arguments; returns the exit status."""
    if not Path(args.bag).exists():
        raise BagError(f'bag not found: {args.bag}')
    if args.boxes and not Path(args.boxes).is_dir():
        raise BagError(f'box (--boxes) folder not found: {args.boxes}')
    if args.live and not args.rate > 0:
        raise BagError(f'--rate must be > 0, got {args.rate}')
    cfg, model = node_config(args.backend, args.model, parse_params(args.param))
    # Check the bag before writing anything (one line and exit 2 for a bad one).
    reader = open_bag(args.bag)
    try:
        select_connections(reader, args.rgb_topic, args.thermal_topic)
    finally:
        reader.close()
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BagError(f'cannot create {out}: {exc.strerror or exc}') from None
    frames = read_frames(args.bag) or []
    stems = {r['rgb_stamp_ns']: r['stem'] for r in frames if r['rgb_stamp_ns'] is not None}

    def scores_factory(backend, expected):
        return Scores(backend, args.boxes, stems, args.strip, expected)

    mode = 'live' if args.live else 'offline'
    res = (run_live if args.live else run_offline)(args, cfg, model, out, stems, scores_factory)
    res['no_partner'] = {r['rgb_stamp_ns'] for r in frames
                         if r['rgb_stamp_ns'] is not None and r['thermal_stamp_ns'] is None}
    rep = build_report(args, res, out, mode, cfg, model)
    write_plots(rep, res['scores'], out)
    (out / 'report.json').write_text(json.dumps(jsonable(rep), indent=1) + '\n')
    (out / 'report.md').write_text(report_markdown(rep))
    c = rep['counts']
    print(f'{PROG}: {mode}: {c["fused"]} fused of {c["pairs"]} pairs ({c["rgb_frames"]} RGB / '
          f'{c["thermal_frames"]} thermal frames); latency p50 {fmt(rep["latency_ms"]["p50"], 1)}'
          f' ms; report: {out / "report.md"}', file=sys.stderr)
    if rep['stopped']:
        print(f'{PROG}: error: {rep["stopped"]}; the report and output bag cover the frames '
              'before it', file=sys.stderr)
        return 130 if rep['status'] == 'interrupted' else 2
    return 0 if c['fused'] else 1
