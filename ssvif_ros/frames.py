"""Camera frames to model inputs: checks, stamps, decoding and registration, in one place.

Used by the node (:mod:`ssvif_ros.fusion_node`), the bag tools (``ssvif-bag extract`` and
``eval``) and ``ssvif-fuse``, so a pair is checked, decoded and registered the same way
everywhere. ROS-free (messages are duck-typed: anything with the sensor_msgs/Image fields) and
torch-free.

The thermal path is one way:

1. :func:`check_frame` checks the message header once, when the frame arrives (O(1));
2. :func:`decode_thermal` views the pixels (no second header check) and scans a float frame
   for NaN/Inf once;
3. :func:`register_pair` normalizes the thermal frame once (:func:`imaging.normalize_thermal`,
   percentiles of its real pixels, not of warp borders) and resamples it once into the output
   frame: the homography, the size policy and ``output_size`` are folded into one warp or one
   resize;
4. the backend gets the single thermal plane (H x W) and expands it to what its model needs.

The visible frame stays uint8 RGB (H x W x 3: mono repeated, alpha dropped, 16 bits rounded to
8); the deployed graph divides by 255 itself, so the host does no float work on it.

Every failure is a :class:`FrameError` whose ``reason`` is the drop counter of the node
(``rgb.unsupported_encoding``, ``thermal.non_finite``, ``size_mismatch``, ...).
"""
from __future__ import annotations

import functools
from typing import Sequence, Tuple

import numpy as np

from ssvif_ros import imaging, ros_image
from ssvif_ros.node_params import check_homography, FusionConfig

RGB, THERMAL = 0, 1
STREAM_NAMES = ('rgb', 'thermal')
IMAGE_TYPE = 'sensor_msgs/msg/Image'
COMPRESSED_TYPE = 'sensor_msgs/msg/CompressedImage'
# Message types each stream accepts in the bag tools (the node: *_transport parameters).
ALLOWED_TYPES = ((IMAGE_TYPE, COMPRESSED_TYPE), (IMAGE_TYPE,))


class FrameError(ValueError):
    """A frame or pair that is dropped; ``reason`` names its drop counter."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def stamp_ns(msg) -> int:
    """Header stamp of a message in integer nanoseconds."""
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def check_frame(stream: int, msg, msgtype: str = IMAGE_TYPE, max_pixels: int = 0) -> None:
    """Metadata checks done when a frame arrives, before pairing; raises FrameError.

    ``max_pixels`` (> 0): a frame whose header says more pixels is dropped here
    (``<stream>.too_large``), before it is queued for pairing or decoded.
    """
    name = STREAM_NAMES[stream]
    if max_pixels > 0 and msgtype != COMPRESSED_TYPE:
        pixels = int(msg.width) * int(msg.height)
        if pixels > max_pixels:
            raise FrameError(f'{name}.too_large',
                             f'{name} frame {msg.width}x{msg.height} has {pixels} pixels, more '
                             f'than max_input_pixels ({max_pixels})')
    if msgtype == COMPRESSED_TYPE:
        fmt = str(msg.format).lower()
        if 'compresseddepth' in fmt:
            raise FrameError(f'{name}.unsupported_format',
                             f'{name} CompressedImage format {msg.format!r} is a depth format')
        if len(msg.data) == 0:
            raise FrameError(f'{name}.zero_size', f'{name} CompressedImage has no data')
        return
    try:
        ros_image.check_image(msg)
    except ros_image.ImageFormatError as exc:
        raise FrameError(f'{name}.{exc.reason}', f'{name} frame: {exc}') from None
    allowed = ros_image.RGB_ENCODINGS if stream == RGB else ros_image.THERMAL_ENCODINGS
    if msg.encoding not in allowed:
        raise FrameError(f'{name}.unsupported_encoding',
                         f'{name} encoding {msg.encoding!r} is not one of {", ".join(allowed)}')


def decode_visible(msg, msgtype: str = IMAGE_TYPE) -> np.ndarray:
    """A checked RGB frame -> H x W x 3 uint8 RGB (H x W for mono8); raises FrameError."""
    if msgtype == COMPRESSED_TYPE:
        try:
            return imaging.decode_image(msg.data)
        except ValueError:
            raise FrameError('rgb.decode_failed',
                             f'RGB CompressedImage ({msg.format!r}, {len(msg.data)} bytes) '
                             'cannot be decoded') from None
    return ros_image.image_to_numpy(msg, rgb=True, check=False)


def decode_thermal(msg, msgtype: str = IMAGE_TYPE) -> np.ndarray:
    """A checked thermal frame -> H x W uint8 / uint16 / float32 raw values; raises FrameError.

    A CompressedImage is decoded keeping its depth (a 16-bit PNG keeps the raw counts; a JPEG
    has 8 bits). A float frame is scanned for NaN/Inf here, once (``thermal.non_finite``).
    """
    if msgtype == COMPRESSED_TYPE:
        try:
            raw = imaging.decode_mono(msg.data)
        except ValueError as exc:
            raise FrameError('thermal.decode_failed',
                             f'thermal CompressedImage ({msg.format!r}, {len(msg.data)} bytes) '
                             f'cannot be decoded: {exc}') from None
    else:
        raw = ros_image.image_to_numpy(msg, check=False)
    check_finite(raw)
    return raw


def input_types(cfg) -> Tuple[str, str]:
    """(RGB, thermal) message types the node subscribes with ``cfg``'s ``*_transport``."""
    return tuple(COMPRESSED_TYPE if getattr(cfg, f'{name}_transport', 'raw') == 'compressed'
                 else IMAGE_TYPE for name in STREAM_NAMES)


def check_finite(raw: np.ndarray) -> None:
    """FrameError ``thermal.non_finite`` when a float thermal frame holds NaN or Inf."""
    if raw.dtype.kind == 'f' and not np.isfinite(raw).all():
        raise FrameError('thermal.non_finite', 'thermal frame contains NaN or Inf values')


@functools.lru_cache(maxsize=16)
def _check_homography_cached(hom: Tuple[float, ...], rgb_size: Tuple[int, int],
                             thermal_size: Tuple[int, int]) -> None:
    check_homography(hom, rgb_size, thermal_size)


def output_homography(hom: Sequence[float], rgb_size: Tuple[int, int],
                      out_size: Tuple[int, int]) -> Tuple[float, ...]:
    """The thermal -> output homography: ``hom`` (thermal -> RGB) followed by the RGB scaling."""
    if tuple(out_size) == tuple(rgb_size):
        return tuple(hom)
    scale = np.diag([out_size[0] / rgb_size[0], out_size[1] / rgb_size[1], 1.0])
    return tuple(float(v) for v in (scale @ np.asarray(hom, np.float64).reshape(3, 3)).ravel())


def register_pair(vis: np.ndarray, raw_thermal: np.ndarray, cfg: FusionConfig,
                  finite_checked: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """Decoded frames -> the backend's inputs, registered in the RGB frame (or ``output_size``).

    ``vis``: H x W x 3 (or mono) uint8/uint16 RGB; ``raw_thermal``: h x w raw values. Returns
    ``vis`` H' x W' x 3 uint8 RGB (:func:`imaging.visible_to_uint8`: no copy for an rgb8
    frame) and ``ir`` H' x W' float32 in [0, 1]. The thermal frame is
    normalized once, then resampled once: warped by the homography (scaled to ``output_size``)
    or resized. ``finite_checked``: the NaN/Inf scan was done already (:func:`decode_thermal`).
    Raises FrameError with a drop reason.
    """
    if not finite_checked:
        check_finite(np.asarray(raw_thermal))
    try:
        t = imaging.normalize_thermal(raw_thermal, cfg.thermal_norm,
                                      check_finite=False)  # h x w float32 [0, 1]
    except ValueError as exc:
        raise FrameError('thermal.bad_values', f'thermal frame: {exc}') from None
    h, w = vis.shape[:2]
    out = cfg.output_size or (w, h)
    if not cfg.homography_identity:
        try:
            _check_homography_cached(cfg.homography, (w, h), (t.shape[1], t.shape[0]))
        except ValueError as exc:
            raise FrameError('bad_homography', str(exc)) from None
        t = imaging.warp_homography(t, output_homography(cfg.homography, (w, h), out), out)
    elif t.shape != (h, w):
        if cfg.size_mismatch == 'reject':
            raise FrameError('size_mismatch',
                             f'thermal {t.shape[1]}x{t.shape[0]} and RGB {w}x{h} differ in '
                             'size (size_mismatch: reject)')
        t = imaging.resize(t, out)
    elif out != (w, h):
        t = imaging.resize(t, out)
    if out != (w, h):
        vis = imaging.resize(np.ascontiguousarray(vis), out)
    try:
        v = imaging.visible_to_uint8(vis)  # H' x W' x 3 uint8
    except ValueError as exc:
        raise FrameError('bad_pair', str(exc)) from None
    return v, t


def prepare_pair(rgb_msg, thermal_msg, cfg: FusionConfig, rgb_type: str = IMAGE_TYPE,
                 thermal_type: str = IMAGE_TYPE) -> Tuple[np.ndarray, np.ndarray]:
    """Decode and register one checked pair (:func:`check_frame` passed on both).

    Returns uint8 ``vis`` (H x W x 3 RGB) and float32 ``ir`` (H x W, in [0, 1]) in the RGB frame
    (or ``output_size``). Raises FrameError with a drop reason.
    """
    vis = decode_visible(rgb_msg, rgb_type)  # H x W x 3 RGB or H x W mono
    raw = decode_thermal(thermal_msg, thermal_type)  # h x w uint8 / uint16 / float32
    return register_pair(vis, raw, cfg, finite_checked=True)


def check_and_prepare(rgb_msg, thermal_msg, cfg: FusionConfig, rgb_type: str = IMAGE_TYPE,
                      thermal_type: str = IMAGE_TYPE) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`check_frame` on both messages, then :func:`prepare_pair` (for tools and tests)."""
    check_frame(RGB, rgb_msg, rgb_type)
    check_frame(THERMAL, thermal_msg, thermal_type)
    return prepare_pair(rgb_msg, thermal_msg, cfg, rgb_type, thermal_type)
