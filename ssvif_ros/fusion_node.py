"""ROS 2 node ``fusion_node``: pairs RGB and thermal images, fuses them, publishes the results.

Topics (relative names, so they follow the node namespace and remapping):

* subscribes ``rgb/image_raw`` (rgb8, bgr8, rgba8, bgra8, mono8), ``thermal/image_raw`` (mono8,
  mono16, 16UC1, 32FC1) and, with ``publish_camera_info``, ``rgb/camera_info``;
* publishes ``fused/image`` (rgb8), ``fused/segmentation`` (mono8 class ids),
  ``fused/segmentation_color`` (rgb8 palette, optionally blended over the fused image),
  ``fused/camera_info`` and ``/diagnostics`` (DiagnosticArray, about 1 Hz).

Every output carries the RGB input's header (stamp and frame_id). Subscription callbacks only
check message metadata and pair frames (:class:`ssvif_ros.pairing.ApproxTimePairer`); the newest
pair goes to a one-slot mailbox read by a worker thread that converts, runs the backend and
publishes, so slow inference never blocks the subscriptions: a pair still waiting when a newer
one forms is replaced and counted (``drops.inference_busy``). Bad frames are dropped with a
throttled warning and counted by reason in the diagnostics.

Run: ``ros2 run ssvif_ros fusion_node --ros-args -p backend:=maxluma`` or
``python -m ssvif_ros.fusion_node --ros-args ...``. This module never imports torch.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass
import functools
import math
import os
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
import numpy as np
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from ssvif_ros import imaging
from ssvif_ros import ros_image
from ssvif_ros import runtime
from ssvif_ros.backends import BackendError, BACKENDS, create_backend
from ssvif_ros.pairing import ApproxTimePairer

NODE_NAME = 'fusion_node'
RGB, THERMAL = 0, 1
STREAM_NAMES = ('rgb', 'thermal')
MODEL_FREE_BACKENDS = ('identity', 'maxluma')
IDENTITY_HOMOGRAPHY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
WARN_THROTTLE_SEC = 5.0
# Largest output_size in pixels (8K UHD): the worker holds about 60 bytes per output pixel
# (float32 RGB and thermal, padded copies, fused, ids, uint8 encodings), 2 GB at this size.
MAX_OUTPUT_PIXELS = 7680 * 4320
# Frame size assumed when checking thermal_homography before any frame has arrived.
REFERENCE_SIZE = (640, 512)
# Drop counters that mean a pair failed inside the node (not bad input): /diagnostics ERROR.
ERROR_DROPS = ('inference_error', 'worker_error', 'publish_error')
# Worker stages timed per pair and reported in /diagnostics as <stage>_ms_p50 / _p99: waiting
# in the mailbox (pair formed -> worker takes it), decode+register, inference, encode+publish,
# and processing = decode + inference + publish.
STAGES = ('queue', 'decode', 'inference', 'publish', 'processing')
_SCALE = imaging.ThermalNorm('scale')


class StartupError(RuntimeError):
    """The node cannot start (bad parameter, missing model, backend unavailable)."""


class WorkerDied(RuntimeError):
    """The inference worker thread ended; the node exits 1 so a supervisor restarts it."""


class FrameError(ValueError):
    """A frame or pair that is dropped; ``reason`` names the drop counter."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


# ---------------------------------------------------------------------------------------------
# Parameters

@dataclass(frozen=True)
class ParamSpec:
    """One node parameter: default, description, numeric range, whether it is fixed at start."""

    name: str
    default: Any
    description: str
    lo: Optional[float] = None
    hi: Optional[float] = None
    read_only: bool = False
    constraints: str = ''


PARAMETERS: Tuple[ParamSpec, ...] = (
    ParamSpec('model', '', 'Model file or directory (ONNX, checkpoint, TensorRT engine); '
              "'' = the embedded default model", read_only=True),
    ParamSpec('backend', 'onnxruntime', 'Inference backend', read_only=True,
              constraints='one of ' + ', '.join(BACKENDS)),
    ParamSpec('device', '', "Backend device, e.g. 'cpu' or 'cuda:0'; '' = backend default",
              read_only=True),
    ParamSpec('threads', 2, 'CPU threads of the backend', 1, 64, read_only=True),
    ParamSpec('slop', 0.02, 'Largest RGB/thermal stamp difference of a pair [s]', 0.0, 1.0),
    ParamSpec('queue_size', 5, 'Frames kept per stream while waiting for a partner', 1, 100),
    ParamSpec('reset_after', 1.0, 'A stamp this much older than the newest one on its stream '
              '(bag loop, simulator restart) resets pairing [s]', 0.01, 3600.0),
    ParamSpec('qos_reliability', 'best_effort', 'Input subscription reliability',
              read_only=True, constraints='best_effort or reliable'),
    ParamSpec('qos_depth', 5, 'Input subscription queue depth', 1, 100, read_only=True),
    ParamSpec('thermal_norm', 'auto', 'Thermal normalization (see imaging.normalize_thermal)',
              constraints='one of ' + ', '.join(imaging.THERMAL_METHODS)),
    ParamSpec('thermal_lo', 0.0, 'Raw thermal value mapped to 0 (thermal_norm fixed)'),
    ParamSpec('thermal_hi', 1.0, 'Raw thermal value mapped to 1 (thermal_norm fixed)'),
    ParamSpec('thermal_p_lo', 1.0, 'Lower percentile (thermal_norm percentile/auto) [%]',
              0.0, 100.0),
    ParamSpec('thermal_p_hi', 99.0, 'Upper percentile (thermal_norm percentile/auto) [%]',
              0.0, 100.0),
    ParamSpec('thermal_homography', list(IDENTITY_HOMOGRAPHY),
              'Thermal-to-RGB pixel homography, 9 numbers row-major, any scale; the thermal '
              'frame is warped into the RGB frame',
              constraints='9 finite numbers, invertible, the RGB frame corners must map to '
              'finite points within one frame size of the thermal frame'),
    ParamSpec('size_mismatch', 'resize', 'Thermal and RGB sizes differ (identity homography): '
              'resize the thermal frame or reject the pair', constraints='resize or reject'),
    ParamSpec('output_size', 'input', "Processing/output size: 'input' (the RGB size) or "
              "'WxH', e.g. '640x480'",
              constraints=f"'input' or 'WxH', at most 16384 a side and {MAX_OUTPUT_PIXELS} "
              'pixels'),
    ParamSpec('overlay_alpha', 0.0, 'Blend of the class colours over the fused image in '
              'fused/segmentation_color (0 = palette only)', 0.0, 1.0),
    ParamSpec('publish_color', True, 'Publish fused/segmentation_color'),
    ParamSpec('publish_camera_info', False, 'Republish rgb/camera_info as fused/camera_info',
              read_only=True),
)
PARAM_NAMES = tuple(p.name for p in PARAMETERS)


@dataclass(frozen=True)
class FusionConfig:
    """Validated parameter values (built by :func:`make_config`)."""

    model: str
    backend: str
    device: str
    threads: int
    slop: float
    queue_size: int
    reset_after: float
    qos_reliability: str
    qos_depth: int
    thermal_norm: imaging.ThermalNorm
    homography: Tuple[float, ...]
    homography_identity: bool
    size_mismatch: str
    output_size: Optional[Tuple[int, int]]
    overlay_alpha: float
    publish_color: bool
    publish_camera_info: bool


def _choice(values: Dict[str, Any], name: str, choices: Sequence[str]) -> str:
    v = values[name]
    if v not in choices:
        raise ValueError(f'parameter {name}: {v!r} is not one of {", ".join(choices)}')
    return v


def _in_range(values: Dict[str, Any], name: str, lo: float, hi: float) -> float:
    v = values[name]
    if not (isinstance(v, (int, float)) and math.isfinite(v) and lo <= v <= hi):
        raise ValueError(f'parameter {name}: {v!r} is outside [{lo}, {hi}]')
    return v


def parse_output_size(text: str) -> Optional[Tuple[int, int]]:
    """``'input'`` -> None, ``'640x480'`` -> (640, 480); ValueError otherwise."""
    text = str(text).strip().lower()
    if text == 'input':
        return None
    parts = text.split('x')
    if len(parts) == 2 and all(p.strip().isdigit() for p in parts):
        w, h = int(parts[0]), int(parts[1])
        if 1 <= w <= 16384 and 1 <= h <= 16384:
            if w * h > MAX_OUTPUT_PIXELS:
                raise ValueError(f'parameter output_size: {w}x{h} is {w * h} pixels, more than '
                                 f'the limit of {MAX_OUTPUT_PIXELS} (7680x4320): fusing it '
                                 'would need about 60 bytes per pixel')
            return w, h
    raise ValueError(f"parameter output_size: {text!r} is not 'input' or 'WxH' "
                     '(1..16384 each, e.g. 640x480)')


def normalize_homography(values: Sequence[float]) -> Tuple[float, ...]:
    """Scale a homography to h33 = 1 (or unit norm when h33 is ~0); a homography has no scale.

    Raises ValueError naming the parameter when it is not 9 finite numbers or singular.
    """
    hom = tuple(float(v) for v in values)
    if len(hom) != 9 or not all(math.isfinite(v) for v in hom):
        raise ValueError('parameter thermal_homography: needs 9 finite numbers (row-major 3x3), '
                         f'got {list(hom)}')
    m = np.asarray(hom, np.float64).reshape(3, 3)
    norm = float(np.linalg.norm(m))
    if norm == 0.0 or abs(np.linalg.det(m / norm)) < 1e-12:
        raise ValueError(f'parameter thermal_homography: matrix {list(hom)} is singular')
    m = m / m[2, 2] if abs(m[2, 2]) > 1e-9 * norm else m / norm
    return tuple(float(v) for v in m.reshape(9))


def check_homography(hom: Sequence[float], rgb_size: Tuple[int, int],
                     thermal_size: Tuple[int, int]) -> None:
    """Raise ValueError unless every RGB frame corner comes from a sane thermal point.

    The warp samples the thermal frame at H^-1 (corner): that point must be finite (the line at
    infinity must not cross the RGB frame) and within one frame size of the thermal frame.
    """
    w, h = rgb_size
    tw, th = thermal_size
    inv = np.linalg.inv(np.asarray(hom, np.float64).reshape(3, 3))
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], np.float64).T
    src = inv @ corners  # 3 x 4
    z = src[2]
    scale = np.abs(src).max(axis=0)
    if not (np.all(z * np.sign(z[0]) > 1e-9 * scale)):
        raise ValueError(f'parameter thermal_homography: {list(hom)} sends part of the '
                         f'{w}x{h} RGB frame to infinity (its corners have no finite thermal '
                         'point)')
    xy = src[:2] / z
    if (xy[0].min() < -tw or xy[0].max() > 2 * tw or xy[1].min() < -th or xy[1].max() > 2 * th):
        pts = ', '.join(f'({x:.0f}, {y:.0f})' for x, y in xy.T)
        raise ValueError(f'parameter thermal_homography: {list(hom)} maps the corners of the '
                         f'{w}x{h} RGB frame to thermal points {pts}, more than one frame size '
                         f'outside the {tw}x{th} thermal frame')


FrameSizes = Tuple[Tuple[int, int], Tuple[int, int]]


def make_config(values: Dict[str, Any],
                frame_sizes: FrameSizes = (REFERENCE_SIZE, REFERENCE_SIZE)) -> FusionConfig:
    """Validate a full set of parameter values; raise ValueError naming the parameter at fault.

    ``frame_sizes``: (RGB, thermal) sizes (w, h) the homography is checked against.
    """
    specs = {p.name: p for p in PARAMETERS}
    for name, spec in specs.items():
        if spec.lo is not None:
            _in_range(values, name, spec.lo, spec.hi)
    backend = _choice(values, 'backend', tuple(BACKENDS))
    reliability = _choice(values, 'qos_reliability', ('best_effort', 'reliable'))
    size_mismatch = _choice(values, 'size_mismatch', ('resize', 'reject'))
    method = _choice(values, 'thermal_norm', imaging.THERMAL_METHODS)
    for name in ('thermal_lo', 'thermal_hi'):
        if not math.isfinite(values[name]):
            raise ValueError(f'parameter {name}: {values[name]!r} is not a finite number')
    try:
        norm = imaging.ThermalNorm(method, float(values['thermal_lo']),
                                   float(values['thermal_hi']), float(values['thermal_p_lo']),
                                   float(values['thermal_p_hi']))
    except ValueError as exc:
        raise ValueError(f'parameters thermal_*: {exc}') from None
    hom = normalize_homography(values['thermal_homography'])
    identity = bool(np.allclose(hom, IDENTITY_HOMOGRAPHY))
    if not identity:
        check_homography(hom, *frame_sizes)
    return FusionConfig(
        model=str(values['model']), backend=backend, device=str(values['device']),
        threads=int(values['threads']), slop=float(values['slop']),
        queue_size=int(values['queue_size']), reset_after=float(values['reset_after']),
        qos_reliability=reliability, qos_depth=int(values['qos_depth']), thermal_norm=norm,
        homography=hom, homography_identity=identity,
        size_mismatch=size_mismatch, output_size=parse_output_size(values['output_size']),
        overlay_alpha=float(values['overlay_alpha']), publish_color=bool(values['publish_color']),
        publish_camera_info=bool(values['publish_camera_info']))


def resolve_model(model: str, backend: str) -> Optional[str]:
    """The model path to load: the ``model`` parameter, or the embedded default model.

    Model-free backends (identity, maxluma) need none (``model`` is ignored). Raises StartupError
    when the given model path does not exist, or when the default is needed but
    ``ssvif_ros.models.default_model_dir`` is missing or fails.
    """
    if backend in MODEL_FREE_BACKENDS:
        return None
    if model:
        if not os.path.exists(model):
            raise StartupError(f'model not found: {model} (parameter model)')
        return model
    try:
        from ssvif_ros.models import default_model_dir
        path = default_model_dir()
    except Exception as exc:  # noqa: BLE001 - any failure means: no default model here
        raise StartupError(
            f'no model given (parameter model is empty) and the embedded default model is not '
            f'available ({type(exc).__name__}: {exc}); pass -p model:=/path/to/model or use '
            f'-p backend:=maxluma') from None
    return str(path)


# ---------------------------------------------------------------------------------------------
# Pixel pipeline (no ROS objects beyond the two Image messages)

def prepare_pair(rgb_msg, thermal_msg, cfg: FusionConfig) -> Tuple[np.ndarray, np.ndarray]:
    """Decode and register one pair into the backend's inputs.

    Returns float32 ``vis`` and ``ir`` (H x W x 3, [0, 1]) in the RGB frame (or ``output_size``).
    The thermal frame is normalized first (percentiles of the real pixels, not of warp borders),
    then warped by the homography or resized. Raises FrameError with a drop reason.
    """
    try:
        vis = ros_image.image_to_numpy(rgb_msg, rgb=True)  # H x W x 3 RGB or H x W mono
    except ros_image.ImageFormatError as exc:
        raise FrameError(f'rgb.{exc.reason}', f'RGB frame: {exc}') from None
    try:
        raw = ros_image.image_to_numpy(thermal_msg)  # h x w, uint8 / uint16 / float32
    except ros_image.ImageFormatError as exc:
        raise FrameError(f'thermal.{exc.reason}', f'thermal frame: {exc}') from None
    if raw.dtype.kind == 'f' and not np.isfinite(raw).all():
        raise FrameError('thermal.non_finite', 'thermal frame contains NaN or Inf values')
    try:
        t = imaging.normalize_thermal(raw, cfg.thermal_norm)  # h x w float32 [0, 1]
    except ValueError as exc:
        raise FrameError('thermal.bad_values', f'thermal frame: {exc}') from None
    h, w = vis.shape[:2]
    if not cfg.homography_identity:
        try:
            _check_homography_cached(cfg.homography, (w, h), (t.shape[1], t.shape[0]))
        except ValueError as exc:
            raise FrameError('bad_homography', str(exc)) from None
        t = imaging.warp_homography(t, cfg.homography, (w, h))  # H x W
    elif t.shape != (h, w):
        if cfg.size_mismatch == 'reject':
            raise FrameError('size_mismatch',
                             f'thermal {t.shape[1]}x{t.shape[0]} and RGB {w}x{h} differ in '
                             'size (size_mismatch: reject)')
        t = imaging.resize(t, (w, h))
    if cfg.output_size is not None and cfg.output_size != (w, h):
        vis = imaging.resize(np.ascontiguousarray(vis), cfg.output_size)
        t = imaging.resize(t, cfg.output_size)
    try:
        return imaging.preprocess_pair(vis, t, _SCALE)
    except ValueError as exc:
        raise FrameError('bad_pair', str(exc)) from None


@functools.lru_cache(maxsize=16)
def _check_homography_cached(hom, rgb_size, thermal_size) -> None:
    check_homography(hom, rgb_size, thermal_size)


class Mailbox:
    """A one-slot mailbox: ``put`` replaces an unread item (counted), ``get`` waits for one."""

    def __init__(self):
        self._cond = threading.Condition()
        self._item = None
        self._closed = False
        self.replaced = 0

    def put(self, item) -> bool:
        """Store ``item``; return True when it replaced an item nobody had taken yet."""
        with self._cond:
            replaced = self._item is not None
            if replaced:
                self.replaced += 1
            self._item = item
            self._cond.notify()
            return replaced

    def get(self, timeout: Optional[float] = None):
        """Take the item, waiting up to ``timeout`` s; None when closed or timed out."""
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None or self._closed, timeout)
            if self._closed:
                return None
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        """Wake the reader; further ``get`` calls return None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class NodeStats:
    """Thread-safe counters and latency samples behind /diagnostics."""

    def __init__(self, samples: int = 1000):
        self._lock = threading.Lock()
        self.inputs = [0, 0]
        self.pairs = 0
        self.processed = 0
        self.drops: Dict[str, int] = collections.Counter()
        # Per processed pair, the time of each of STAGES [ms].
        self.times = {k: collections.deque(maxlen=samples) for k in STAGES}

    def count_input(self, stream: int) -> None:
        """Count one received frame of ``stream``."""
        with self._lock:
            self.inputs[stream] += 1

    def count_pair(self) -> None:
        """Count one formed pair."""
        with self._lock:
            self.pairs += 1

    def drop(self, reason: str) -> None:
        """Count one dropped frame or pair under ``reason``."""
        with self._lock:
            self.drops[reason] += 1

    def done(self, **stage_ms: float) -> None:
        """Record one processed pair with the time of each stage in ms (keys: STAGES)."""
        with self._lock:
            self.processed += 1
            for k, v in stage_ms.items():
                self.times[k].append(v)

    def snapshot(self) -> Dict[str, Any]:
        """Copy of all counters and per-stage time percentiles (``<stage>_ms_p50/p99``)."""
        with self._lock:
            times = {k: np.asarray(v, np.float64) for k, v in self.times.items()}
            snap = {'inputs': list(self.inputs), 'pairs': self.pairs,
                    'processed': self.processed, 'drops': dict(self.drops)}
        for key, arr in times.items():
            for q in (50, 99):
                snap[f'{key}_ms_p{q}'] = float(np.percentile(arr, q)) if arr.size else float('nan')
        return snap


def _stamp_ns(msg) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


# ---------------------------------------------------------------------------------------------
# The node

class FusionNode(Node):
    """RGB-thermal fusion node; see the module docstring."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self._declare_parameters()
        # Latest (w, h) seen per stream: what thermal_homography is checked against on set.
        self._sizes = [REFERENCE_SIZE, REFERENCE_SIZE]
        self._checked_sizes = tuple(self._sizes)
        try:
            self._config = make_config(self._param_values())
        except ValueError as exc:
            raise StartupError(f'invalid parameter: {exc}') from None
        cfg = self._config
        model = resolve_model(cfg.model, cfg.backend)
        try:
            self._backend = create_backend(cfg.backend, model, threads=cfg.threads,
                                           device=cfg.device or None)
        except BackendError as exc:
            raise StartupError(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - a backend bug must not start a broken node
            raise StartupError(f'backend {cfg.backend!r} failed to start with model {model}: '
                               f'{type(exc).__name__}: {exc}') from None
        self._last_error = ''
        self._worker_death: Optional[BaseException] = None
        self._closing = False
        self._last_pairing_drops: Dict[str, int] = {}
        self._model_label = model or '(none)'
        self._palette = self._backend.palette
        self._stats = NodeStats()
        self._pairer = ApproxTimePairer(cfg.slop, cfg.queue_size, cfg.reset_after,
                                        names=STREAM_NAMES)
        self._mailbox = Mailbox()
        self._camera_info: Optional[CameraInfo] = None

        out_qos = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE,
                             history=HistoryPolicy.KEEP_LAST,
                             durability=DurabilityPolicy.VOLATILE)
        self._pub_fused = self.create_publisher(Image, 'fused/image', out_qos)
        self._pub_seg = self.create_publisher(Image, 'fused/segmentation', out_qos)
        self._pub_color = self.create_publisher(Image, 'fused/segmentation_color', out_qos)
        self._pub_info = (self.create_publisher(CameraInfo, 'fused/camera_info', out_qos)
                          if cfg.publish_camera_info else None)
        self._pub_diag = self.create_publisher(DiagnosticArray, '/diagnostics', 10)

        in_qos = QoSProfile(
            depth=cfg.qos_depth, history=HistoryPolicy.KEEP_LAST,
            durability=DurabilityPolicy.VOLATILE,
            reliability=(ReliabilityPolicy.RELIABLE if cfg.qos_reliability == 'reliable'
                         else ReliabilityPolicy.BEST_EFFORT))
        self._subs = [
            self.create_subscription(Image, 'rgb/image_raw',
                                     lambda m: self._on_image(RGB, m), in_qos),
            self.create_subscription(Image, 'thermal/image_raw',
                                     lambda m: self._on_image(THERMAL, m), in_qos),
        ]
        if cfg.publish_camera_info:
            self._subs.append(self.create_subscription(
                CameraInfo, 'rgb/camera_info', self._on_camera_info, in_qos))

        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)

        self._last_diag = (time.monotonic(), self._stats.snapshot())
        self._diag_timer = self.create_timer(1.0, self._publish_diagnostics)
        self._worker = threading.Thread(target=self._work_guarded, name='fusion_worker',
                                        daemon=True)
        self._worker.start()
        self.get_logger().info(
            f'fusing {self.resolve_topic_name("rgb/image_raw")} + '
            f'{self.resolve_topic_name("thermal/image_raw")} with {self._backend.describe()} '
            f'(model {self._model_label}, slop {cfg.slop} s, input QoS {cfg.qos_reliability}/'
            f'{cfg.qos_depth})')

    # -- parameters ------------------------------------------------------------------------

    def _declare_parameters(self) -> None:
        for spec in PARAMETERS:
            desc = ParameterDescriptor(description=spec.description, read_only=spec.read_only,
                                       additional_constraints=spec.constraints)
            if spec.lo is not None and isinstance(spec.default, float):
                desc.floating_point_range = [FloatingPointRange(
                    from_value=float(spec.lo), to_value=float(spec.hi), step=0.0)]
            elif spec.lo is not None:
                desc.integer_range = [IntegerRange(
                    from_value=int(spec.lo), to_value=int(spec.hi), step=1)]
            try:
                self.declare_parameter(spec.name, spec.default, desc)
            except ParameterException as exc:
                raise StartupError(f'invalid parameter {spec.name}: {exc}') from None

    def _param_values(self) -> Dict[str, Any]:
        return {name: self.get_parameter(name).value for name in PARAM_NAMES}

    def _validate_parameters(self, params: List[Parameter]):
        values = self._param_values()
        for p in params:
            if p.name in values:
                values[p.name] = p.value
        sizes = (self._sizes[RGB], self._sizes[THERMAL])
        try:
            make_config(values, sizes)
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        self._checked_sizes = sizes
        return SetParametersResult(successful=True)

    def _apply_parameters(self, params: List[Parameter]) -> None:
        cfg = make_config(self._param_values(), self._checked_sizes)
        self._pairer.configure(slop=cfg.slop, queue_size=cfg.queue_size,
                               reset_after=cfg.reset_after)
        self._config = cfg  # one reference swap: the worker reads a consistent config
        self.get_logger().info('parameters updated: ' + ', '.join(
            f'{p.name}={p.value}' for p in params))

    # -- input -----------------------------------------------------------------------------

    def _drop(self, reason: str, text: str) -> None:
        self._stats.drop(reason)
        self.get_logger().warning(f'dropped ({reason}): {text}',
                                  throttle_duration_sec=WARN_THROTTLE_SEC)

    def _on_image(self, stream: int, msg: Image) -> None:
        name = STREAM_NAMES[stream]
        self._stats.count_input(stream)
        try:
            ros_image.check_image(msg)  # metadata only; pixels are decoded by the worker
        except ros_image.ImageFormatError as exc:
            self._drop(f'{name}.{exc.reason}', f'{name} frame: {exc}')
            return
        allowed = ros_image.RGB_ENCODINGS if stream == RGB else ros_image.THERMAL_ENCODINGS
        if msg.encoding not in allowed:
            self._drop(f'{name}.unsupported_encoding',
                       f'{name} encoding {msg.encoding!r} is not one of {", ".join(allowed)}')
            return
        self._sizes[stream] = (int(msg.width), int(msg.height))
        pair = self._pairer.add(stream, _stamp_ns(msg), msg)
        if pair is not None:
            self._stats.count_pair()
            if self._mailbox.put((pair, time.perf_counter())):
                self._stats.drop('inference_busy')

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg

    # -- worker ----------------------------------------------------------------------------

    def _fail(self, reason: str, exc: BaseException) -> None:
        """Count a pair that failed inside the node (an error, unlike bad input)."""
        text = f'{type(exc).__name__}: {exc}' if str(exc) else type(exc).__name__
        self._last_error = text
        self._stats.drop(reason)
        self.get_logger().error(f'pair failed ({reason}): {text}',
                                throttle_duration_sec=WARN_THROTTLE_SEC)

    def _work_guarded(self) -> None:
        """The worker thread: :meth:`_work`, and a record of what ended it if not a shutdown."""
        try:
            self._work()
        except BaseException as exc:  # noqa: BLE001 - reported by the diagnostics timer
            self._worker_death = exc
            self.get_logger().error(f'inference worker died: {type(exc).__name__}: {exc}')

    def _work(self) -> None:
        while True:
            item = self._mailbox.get()
            if item is None:
                return
            pair, t_formed = item
            cfg = self._config
            t0 = time.perf_counter()
            rgb_msg, thermal_msg = pair.items
            try:
                vis, ir = prepare_pair(rgb_msg, thermal_msg, cfg)  # H x W x 3 float32 each
            except FrameError as exc:
                self._drop(exc.reason, str(exc))
                continue
            except Exception as exc:  # noqa: BLE001 - e.g. MemoryError: skip the pair, go on
                self._fail('worker_error', exc)
                continue
            t1 = time.perf_counter()
            try:
                fused, ids = self._backend.infer(vis, ir)  # H x W x 3 float32, H x W uint8
            except Exception as exc:  # noqa: BLE001 - keep running, count and report
                self._fail('inference_error', exc)
                continue
            t2 = time.perf_counter()
            try:
                self._publish(fused, ids, rgb_msg.header, cfg)
            except Exception as exc:  # noqa: BLE001 - e.g. context shut down during SIGINT
                if not rclpy.ok(context=self.context):
                    return
                self._fail('publish_error', exc)
                continue
            t3 = time.perf_counter()
            self._stats.done(queue=(t0 - t_formed) * 1e3, decode=(t1 - t0) * 1e3,
                             inference=(t2 - t1) * 1e3, publish=(t3 - t2) * 1e3,
                             processing=(t3 - t0) * 1e3)

    def _publish(self, fused: np.ndarray, ids: np.ndarray, header, cfg: FusionConfig) -> None:
        fused8 = imaging.to_uint8(fused)  # H x W x 3 uint8
        ids = np.ascontiguousarray(ids, dtype=np.uint8)  # H x W
        if self._pub_fused.get_subscription_count() > 0:
            self._pub_fused.publish(ros_image.numpy_to_image(fused8, 'rgb8', header))
        if self._pub_seg.get_subscription_count() > 0:
            self._pub_seg.publish(ros_image.numpy_to_image(ids, 'mono8', header))
        if cfg.publish_color and self._pub_color.get_subscription_count() > 0:
            color = imaging.class_overlay(fused8, ids, self._palette, cfg.overlay_alpha,
                                          self._backend.semantic)  # H x W x 3 uint8
            self._pub_color.publish(ros_image.numpy_to_image(color, 'rgb8', header))
        info = self._camera_info
        if self._pub_info is not None and info is not None:
            self._pub_info.publish(scaled_camera_info(info, header, fused8.shape[1],
                                                      fused8.shape[0]))

    # -- diagnostics -----------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        snap = self._stats.snapshot()
        then, prev = self._last_diag
        self._last_diag = (now, snap)
        dt = max(now - then, 1e-6)
        pstats = self._pairer.stats()
        drops = dict(snap['drops'])
        for key, n in pstats['drops'].items():
            drops[f'pairing.{key}'] = n
        new_pairing = {k: n - self._last_pairing_drops.get(k, 0)
                       for k, n in pstats['drops'].items()
                       if n > self._last_pairing_drops.get(k, 0)}
        self._last_pairing_drops = dict(pstats['drops'])
        if new_pairing:
            self.get_logger().warning(
                f'pairing dropped {sum(new_pairing.values())} frames in the last {dt:.1f} s ('
                + ', '.join(f'pairing.{k}: {v}' for k, v in sorted(new_pairing.items())) + ')',
                throttle_duration_sec=WARN_THROTTLE_SEC)
        rates = {
            'rgb_rate_hz': (snap['inputs'][RGB] - prev['inputs'][RGB]) / dt,
            'thermal_rate_hz': (snap['inputs'][THERMAL] - prev['inputs'][THERMAL]) / dt,
            'paired_rate_hz': (snap['pairs'] - prev['pairs']) / dt,
            'published_rate_hz': (snap['processed'] - prev['processed']) / dt,
        }
        bad_now = sum(n - prev['drops'].get(r, 0) for r, n in snap['drops'].items()
                      if r != 'inference_busy')
        errors_now = sum(snap['drops'].get(r, 0) - prev['drops'].get(r, 0) for r in ERROR_DROPS)
        dead = self._worker_death is not None or not (self._worker.is_alive() or self._closing)
        if dead:
            why = self._worker_death
            level = DiagnosticStatus.ERROR
            message = ('inference worker died: '
                       + (f'{type(why).__name__}: {why}' if why is not None else 'thread ended'))
        elif errors_now:
            level = DiagnosticStatus.ERROR
            message = f'{errors_now} pairs failed in the last period ({self._last_error})'
        elif rates['rgb_rate_hz'] == 0.0 and rates['thermal_rate_hz'] == 0.0:
            level, message = DiagnosticStatus.WARN, 'no input images'
        elif rates['published_rate_hz'] == 0.0:
            level, message = DiagnosticStatus.WARN, 'input arrives but no pair was fused'
        elif bad_now:
            level, message = DiagnosticStatus.WARN, f'{bad_now} frames dropped in the last period'
        else:
            level = DiagnosticStatus.OK
            message = f'fusing at {rates["published_rate_hz"]:.1f} Hz'
        values = {
            'backend': self._backend.name,
            'backend_info': self._backend.describe(),
            'model': self._model_label,
            **{k: f'{v:.2f}' for k, v in rates.items()},
            **{f'{k}_ms_p{q}': f'{snap[f"{k}_ms_p{q}"]:.2f}' for k in STAGES for q in (50, 99)},
            'frames_rgb': str(snap['inputs'][RGB]),
            'frames_thermal': str(snap['inputs'][THERMAL]),
            'pairs': str(snap['pairs']),
            'published': str(snap['processed']),
            'pairing_resets': str(pstats['resets']),
            'drops_total': str(sum(drops.values())),
            **{f'drops.{k}': str(v) for k, v in sorted(drops.items())},
        }
        status = DiagnosticStatus(level=level, name=f'{self.get_fully_qualified_name()}: fusion',
                                  message=message, hardware_id=self._backend.describe(),
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        arr = DiagnosticArray(status=[status])
        arr.header.stamp = self.get_clock().now().to_msg()
        self._pub_diag.publish(arr)
        if dead:
            # Leave spin with an error: the process exits 1 and a supervisor (launch respawn,
            # systemd) restarts it, instead of a node that answers but never fuses again.
            raise WorkerDied(message)

    # -- shutdown --------------------------------------------------------------------------

    def close(self, timeout: float = 1.5) -> None:
        """Stop the worker (waits up to ``timeout`` s for the pair in flight) and destroy."""
        self._closing = True
        self._mailbox.close()
        if self._worker.is_alive() and self._worker is not threading.current_thread():
            self._worker.join(timeout)
        self.destroy_node()


def scaled_camera_info(info: CameraInfo, header, width: int, height: int) -> CameraInfo:
    """Copy ``info`` with ``header`` and intrinsics scaled to ``width`` x ``height``."""
    out = CameraInfo()
    out.header = header
    out.distortion_model = info.distortion_model
    out.d = list(info.d)
    out.r = info.r
    out.binning_x, out.binning_y = info.binning_x, info.binning_y
    sx = width / info.width if info.width else 1.0
    sy = height / info.height if info.height else 1.0
    k = np.array(info.k, np.float64).reshape(3, 3)
    p = np.array(info.p, np.float64).reshape(3, 4)
    k[0] *= sx
    k[1] *= sy
    p[0] *= sx
    p[1] *= sy
    out.k, out.p = k.reshape(9), p.reshape(12)
    out.width, out.height = int(width), int(height)
    out.roi = info.roi
    return out


def main(args=None) -> int:
    """Run the node until SIGINT/SIGTERM; return the process exit code (0, or 1 on errors)."""
    runtime.tune_malloc()
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = FusionNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except StartupError as exc:
        rclpy.logging.get_logger(NODE_NAME).error(f'cannot start: {exc}')
        code = 1
    except WorkerDied as exc:
        rclpy.logging.get_logger(NODE_NAME).fatal(f'exiting: {exc}')
        code = 1
    finally:
        if node is not None:
            node.close()
        rclpy.try_shutdown()
    return code


if __name__ == '__main__':
    sys.exit(main())
