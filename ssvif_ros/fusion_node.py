"""ROS 2 managed node ``fusion_node``: pairs RGB and thermal images, fuses them, publishes.

Topics (relative names, so they follow the node namespace and remapping):

* subscribes ``rgb/image_raw`` (rgb8, bgr8, rgba8, bgra8, mono8), ``thermal/image_raw`` (mono8,
  mono16, 16UC1, 32FC1) and, with ``publish_camera_info``, ``rgb/camera_info``; with
  ``rgb_transport`` / ``thermal_transport`` ``compressed``, sensor_msgs/CompressedImage on
  ``<remapped topic>/compressed`` instead (decoded in the worker, :mod:`ssvif_ros.frames`);
* publishes ``fused/image`` (rgb8), ``fused/segmentation`` (mono8 class ids),
  ``fused/segmentation_color`` (rgb8 palette, optionally blended over the fused image),
  ``fused/camera_info`` and ``/diagnostics`` (DiagnosticArray, about 1 Hz).

A lifecycle (managed) node: **configure** validates the parameters, loads the model and runs
one warm-up inference; **activate** subscribes to the cameras and enables the outputs;
**deactivate** unsubscribes and lets the pair in hand finish, keeping the model loaded;
**cleanup** frees the model; **shutdown** works from every state and ends the process. With
the ``autostart`` parameter (default true) the node configures and activates itself, so
``ros2 run ssvif_ros fusion_node`` works on its own; ``autostart:=false`` leaves it unconfigured
for a lifecycle manager (or the launch file).

Subscription callbacks only check message metadata and pair frames
(:class:`ssvif_ros.pairing.ApproxTimePairer`); the newest pair goes to a one-slot mailbox read
by a worker thread (:mod:`ssvif_ros.node_worker`) that decodes and registers it
(:mod:`ssvif_ros.frames`), runs the backend and publishes, so slow inference never blocks the
subscriptions. The parameter table is :mod:`ssvif_ros.node_params`; counters and the
diagnostics status are :mod:`ssvif_ros.node_stats`.

Run: ``ros2 run ssvif_ros fusion_node --ros-args -p backend:=maxluma`` or
``python -m ssvif_ros.fusion_node --ros-args ...``. This module never imports torch.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Dict, List, Optional

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
import numpy as np
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
import rclpy
from rclpy.duration import Duration
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from ssvif_ros import frames, imaging, ros_image, runtime
from ssvif_ros.backends import BackendError, create_backend
from ssvif_ros.node_params import (EXIT_START_FAILED, EXIT_WORKER_DIED, make_config, model_path,
                                   NODE_NAME, PARAM_NAMES, PARAMETERS, REFERENCE_SIZE,
                                   StartupError)
from ssvif_ros.node_stats import alignment_status, diagnostic_status, NodeStats
from ssvif_ros.node_worker import FusionWorker
from ssvif_ros.pairing import ApproxTimePairer

RGB, THERMAL = frames.RGB, frames.THERMAL
WARN_THROTTLE_SEC = 5.0
SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE
# How long deactivate/cleanup wait for the pair being fused.
DRAIN_TIMEOUT_S = 1.5
# How long a dying node waits for reliable subscribers to acknowledge its last diagnostics.
LAST_DIAG_ACK_S = 1.0
# Parameters read at configure only ("start only" in the table): settable while unconfigured.
START_ONLY = frozenset(spec.name for spec in PARAMETERS if spec.read_only)


class WorkerDied(RuntimeError):
    """The inference worker thread ended; the node exits 1 so a supervisor restarts it."""


class FusionNode(LifecycleNode):
    """RGB-thermal fusion as a managed node; see the module docstring."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self._bad_params: Dict[str, str] = {}  # name -> why its override was refused
        self._declare_parameters()
        # Latest (w, h) seen per stream: what thermal_homography is checked against on set.
        self._sizes = [REFERENCE_SIZE, REFERENCE_SIZE]
        self._checked_sizes = tuple(self._sizes)
        self.startup_error = ''  # why the last configure failed
        self._config = None
        self._backend = None
        self._model_label = '(none)'
        self._stats = NodeStats()
        self._pairer: Optional[ApproxTimePairer] = None
        self._worker: Optional[FusionWorker] = None
        self._last_error = ''
        self._last_pairing_drops: Dict[str, int] = {}
        self._camera_info: Optional[CameraInfo] = None
        self._subs: List[Any] = []
        self._pubs: Dict[str, Any] = {}
        self._diag_timer = None
        self._active = False
        self.finalized = False
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)

    @property
    def autostart(self) -> bool:
        """The ``autostart`` parameter: configure and activate without a lifecycle manager."""
        return bool(self.get_parameter('autostart').value)

    # -- lifecycle -------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Validate the parameters, load and warm up the model, create the outputs."""
        try:
            self._configure()
        except Exception as exc:  # noqa: BLE001 - StartupError, or a bug: refuse, say why
            self.startup_error = (str(exc) if isinstance(exc, StartupError)
                                  else f'{type(exc).__name__}: {exc}')
            self._release()
            if not self.autostart:  # standalone, main() reports it as 'cannot start'
                self.get_logger().error(f'configure failed: {self.startup_error}')
            return FAILURE
        return SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe to the cameras and enable the outputs."""
        cfg = self._config
        in_qos = QoSProfile(
            depth=cfg.qos_depth, history=HistoryPolicy.KEEP_LAST,
            durability=DurabilityPolicy.VOLATILE,
            reliability=(ReliabilityPolicy.RELIABLE if cfg.qos_reliability == 'reliable'
                         else ReliabilityPolicy.BEST_EFFORT))
        self._subs = []
        topics = []
        for stream, base, msgtype in zip((RGB, THERMAL), ('rgb/image_raw', 'thermal/image_raw'),
                                         frames.input_types(cfg)):
            topic = self.resolve_topic_name(base)  # remapped first, as image_transport does
            if msgtype == frames.COMPRESSED_TYPE:
                topic += '/compressed'
            self._subs.append(self.create_subscription(
                CompressedImage if msgtype == frames.COMPRESSED_TYPE else Image, topic,
                lambda m, s=stream, t=msgtype: self._on_image(s, m, t), in_qos))
            topics.append(topic)
        if cfg.publish_camera_info:
            self._subs.append(self.create_subscription(
                CameraInfo, 'rgb/camera_info', self._on_camera_info, in_qos))
        self._active = True
        self.get_logger().info(
            f'fusing {topics[0]} + {topics[1]} with {self._backend.describe()} '
            f'(model {self._model_label}, slop {cfg.slop} s, input QoS {cfg.qos_reliability}/'
            f'{cfg.qos_depth})')
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe, drop waiting frames and let the pair in hand finish; keep the model."""
        self._deactivate()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop the worker and free the model and the outputs."""
        self._release()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """From any state: stop everything; the process then ends (main)."""
        self._deactivate()
        self._release()
        self.finalized = True
        return SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """A transition raised: release everything and go back to unconfigured."""
        self._deactivate()
        self._release()
        return SUCCESS

    def _configure(self) -> None:
        if self._bad_params:
            # What rclpy said, per parameter; its default stays in place until it is set.
            refused = '; '.join(f'{name}: {why.removesuffix(": " + name)}'
                                for name, why in self._bad_params.items())
            raise StartupError(f'invalid parameter value at start (params file or -p): {refused}')
        try:
            cfg = make_config(self._param_values(), self._checked_sizes)
        except ValueError as exc:
            raise StartupError(f'invalid parameter: {exc}') from None
        model = model_path(cfg.model, cfg.backend)
        try:
            backend = create_backend(cfg.backend, model, threads=cfg.threads,
                                     device=cfg.device or None)
        except BackendError as exc:
            raise StartupError(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - a backend bug must not start a broken node
            raise StartupError(f'backend {cfg.backend!r} failed to start with model {model}: '
                               f'{type(exc).__name__}: {exc}') from None
        self._config, self._backend = cfg, backend
        self._model_label = model or '(none)'
        self._pairer = ApproxTimePairer(cfg.slop, cfg.queue_size, cfg.reset_after,
                                        names=frames.STREAM_NAMES)
        self._last_pairing_drops = {}
        out_qos = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE,
                             history=HistoryPolicy.KEEP_LAST,
                             durability=DurabilityPolicy.VOLATILE)
        topics = {'fused': (Image, 'fused/image'), 'seg': (Image, 'fused/segmentation'),
                  'color': (Image, 'fused/segmentation_color')}
        if cfg.publish_camera_info:
            topics['info'] = (CameraInfo, 'fused/camera_info')
        self._pubs = {k: self.create_lifecycle_publisher(t, name, out_qos)
                      for k, (t, name) in topics.items()}
        self._pubs['diag'] = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._worker = FusionWorker(lambda: (self._config, self._backend, self._active),
                                    self._publish, self._drop, self._fail, self._stats)
        self._last_diag = (time.monotonic(), self._stats.snapshot())
        self._diag_timer = self.create_timer(1.0, self._publish_diagnostics)

    def _deactivate(self) -> None:
        self._active = False
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        if self._worker is not None:
            self._worker.mailbox.clear()
            self._worker.mailbox.wait_idle(DRAIN_TIMEOUT_S)
        if self._pairer is not None:
            self._pairer.reset('cleared')

    def _release(self) -> None:
        """Stop the worker, destroy timer and publishers, drop the backend (frees the model)."""
        if self._worker is not None:
            self._worker.stop(DRAIN_TIMEOUT_S)
        self._worker = None
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        for key, pub in self._pubs.items():
            if key == 'diag':
                self.destroy_publisher(pub)
            else:
                self.destroy_lifecycle_publisher(pub)
        self._pubs = {}
        self._backend = self._config = self._pairer = None

    # -- parameters ------------------------------------------------------------------------

    def _declare_parameters(self) -> None:
        for spec in PARAMETERS:
            # Start-only parameters are not ROS read-only: they stay settable while the node is
            # unconfigured (a failed configure can be retried with another model), and
            # _validate_parameters refuses them from configure to cleanup.
            desc = ParameterDescriptor(description=spec.description, read_only=False,
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
                # A bad override (params file, -p): declare the default and let configure
                # answer success: false with the reason, instead of ending the process here.
                self._bad_params[spec.name] = str(exc)
                self.declare_parameter(spec.name, spec.default, desc, ignore_override=True)

    def _param_values(self) -> Dict[str, Any]:
        return {name: self.get_parameter(name).value for name in PARAM_NAMES}

    def _validate_parameters(self, params: List[Parameter]) -> SetParametersResult:
        if self._config is not None:
            fixed = [p.name for p in params if p.name in START_ONLY]
            if fixed:
                return SetParametersResult(successful=False, reason=(
                    f'parameter {fixed[0]} is read at configure: set it while the node is '
                    'unconfigured (after cleanup, or after a failed configure)'))
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
        for p in params:
            self._bad_params.pop(p.name, None)  # set to a valid value since
        if self._config is None:
            return  # unconfigured: read at configure
        cfg = make_config(self._param_values(), self._checked_sizes)
        if self._pairer is not None:
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

    def _on_image(self, stream: int, msg, msgtype: str = frames.IMAGE_TYPE) -> None:
        self._stats.count_input(stream)
        cfg = self._config
        try:
            # metadata only; the worker decodes the pixels
            frames.check_frame(stream, msg, msgtype,
                               max_pixels=cfg.max_input_pixels if cfg else 0)
        except frames.FrameError as exc:
            self._drop(exc.reason, str(exc))
            return
        if msgtype == frames.IMAGE_TYPE:  # a CompressedImage's size is known once decoded
            self._sizes[stream] = (int(msg.width), int(msg.height))
        pairer, worker = self._pairer, self._worker
        if pairer is None or worker is None:
            return
        pair = pairer.add(stream, frames.stamp_ns(msg), msg)
        if pair is not None:
            self._stats.count_pair()
            if worker.mailbox.put((pair, time.perf_counter())):
                self._stats.drop('inference_busy')

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg

    # -- worker ----------------------------------------------------------------------------

    def _fail(self, reason: str, exc: BaseException) -> None:
        """Count a pair that failed inside the node (an error, unlike bad input)."""
        if reason == 'publish_error' and not rclpy.ok(context=self.context):
            return  # the context went down under the worker (SIGINT): not a failure
        text = f'{type(exc).__name__}: {exc}' if str(exc) else type(exc).__name__
        self._last_error = text
        self._stats.drop(reason)
        self.get_logger().error(f'pair failed ({reason}): {text}',
                                throttle_duration_sec=WARN_THROTTLE_SEC)

    def _publish(self, fused: np.ndarray, ids: np.ndarray, header, cfg, backend) -> None:
        pubs = self._pubs
        fused8 = imaging.to_uint8(fused)  # H x W x 3 uint8
        ids = np.ascontiguousarray(ids, dtype=np.uint8)  # H x W
        if pubs['fused'].get_subscription_count() > 0:
            pubs['fused'].publish(ros_image.numpy_to_image(fused8, 'rgb8', header))
        if pubs['seg'].get_subscription_count() > 0:
            pubs['seg'].publish(ros_image.numpy_to_image(ids, 'mono8', header))
        if cfg.publish_color and pubs['color'].get_subscription_count() > 0:
            color = imaging.class_overlay(fused8, ids, backend.palette, cfg.overlay_alpha,
                                          backend.semantic)  # H x W x 3 uint8
            pubs['color'].publish(ros_image.numpy_to_image(color, 'rgb8', header))
        info = self._camera_info
        if 'info' in pubs and info is not None:
            pubs['info'].publish(ros_image.scaled_camera_info(info, header, fused8.shape[1],
                                                              fused8.shape[0]))

    # -- diagnostics -----------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        if self._pairer is None or self._backend is None:
            return
        now = time.monotonic()
        snap = self._stats.snapshot()
        then, prev = self._last_diag
        self._last_diag = (now, snap)
        pstats = self._pairer.stats()
        self._warn_pairing_drops(pstats['drops'], now - then)
        if any(n > prev['drops'].get(r, 0) for r, n in snap['drops'].items()
               if r != 'inference_busy'):
            runtime.release_free_memory()  # bad input costs no memory: not even freed buffers
        death = self._worker.death if self._worker is not None else None
        dead = death is not None or self._worker is None or not self._worker.alive()
        why = (f'{type(death).__name__}: {death}' if death is not None else 'thread ended')
        info = {'backend': self._backend.name, 'backend_info': self._backend.describe(),
                'model': self._model_label}
        level, message, values = diagnostic_status(
            snap, prev, now - then, pstats, info, self._active, why if dead else None,
            self._last_error)
        cfg = self._config
        level, message, values = alignment_status(level, message, values, snap,
                                                  cfg.alignment_check_every,
                                                  cfg.alignment_warn_below)
        status = DiagnosticStatus(level=bytes([level]),
                                  name=f'{self.get_fully_qualified_name()}: fusion',
                                  message=message, hardware_id=self._backend.describe(),
                                  values=[KeyValue(key=k, value=v) for k, v in values])
        arr = DiagnosticArray(status=[status])
        arr.header.stamp = self.get_clock().now().to_msg()
        self._pubs['diag'].publish(arr)
        if dead:
            # The ERROR status is the operator's only record of why the node went away: let
            # reliable subscribers acknowledge it before the process exits (a write still
            # queued in DDS at exit is lost).
            self._pubs['diag'].wait_for_all_acked(Duration(seconds=LAST_DIAG_ACK_S))
            # Leave spin with an error: the process exits 1 and a supervisor (launch respawn,
            # systemd) restarts it, instead of a node that answers but never fuses again.
            raise WorkerDied(message)

    def _warn_pairing_drops(self, drops: Dict[str, int], dt: float) -> None:
        new = {k: n - self._last_pairing_drops.get(k, 0) for k, n in drops.items()
               if n > self._last_pairing_drops.get(k, 0)}
        self._last_pairing_drops = dict(drops)
        if new:
            self.get_logger().warning(
                f'pairing dropped {sum(new.values())} frames in the last {dt:.1f} s ('
                + ', '.join(f'pairing.{k}: {v}' for k, v in sorted(new.items())) + ')',
                throttle_duration_sec=WARN_THROTTLE_SEC)

    # -- process end -----------------------------------------------------------------------

    def close(self) -> None:
        """Stop the worker (waits for the pair in flight) and destroy the node."""
        self._active = False
        self._release()
        self.destroy_node()


def main(args=None) -> int:
    """Run the node until SIGINT/SIGTERM or a shutdown transition; return the exit code."""
    runtime.tune_malloc()
    rclpy.init(args=args)
    node = None
    code = 0
    log = rclpy.logging.get_logger(NODE_NAME)
    try:
        node = FusionNode()
        if node.autostart:
            if node.trigger_configure() != SUCCESS:
                raise StartupError(node.startup_error or 'configure transition failed')
            if node.trigger_activate() != SUCCESS:
                raise StartupError('activate transition failed')
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while rclpy.ok() and not node.finalized:
            executor.spin_once(timeout_sec=0.5)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except StartupError as exc:
        log.error(f'cannot start: {exc}')
        code = EXIT_START_FAILED
    except WorkerDied as exc:
        log.fatal(f'exiting: {exc}')
        code = EXIT_WORKER_DIED
    finally:
        if node is not None:
            node.close()
        rclpy.try_shutdown()
    return code


if __name__ == '__main__':
    sys.exit(main())
