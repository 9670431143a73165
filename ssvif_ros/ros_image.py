"""sensor_msgs/Image <-> NumPy without cv_bridge.

The conversion honours ``step`` (rows padded past ``width * bytes_per_pixel``) and
``is_bigendian`` (16-bit and float data from a big-endian host or driver), and never loops over
pixels in Python: the message buffer is viewed with :func:`numpy.frombuffer`, padding is sliced off
and the byte order is swapped only when it differs from the host's.

Supported encodings (REP 118 / sensor_msgs/image_encodings.hpp names):

=========  ======  ========  ==========================================
encoding   dtype   channels  NumPy shape returned by image_to_numpy
=========  ======  ========  ==========================================
mono8      uint8   1         H x W
8UC1       uint8   1         H x W
mono16     uint16  1         H x W
16UC1      uint16  1         H x W
32FC1      float32 1         H x W (e.g. temperatures in degC or K)
rgb8       uint8   3         H x W x 3
bgr8       uint8   3         H x W x 3 (RGB order when ``rgb=True``)
rgba8      uint8   4         H x W x 4 (H x W x 3 RGB when ``rgb=True``)
bgra8      uint8   4         H x W x 4 (H x W x 3 RGB when ``rgb=True``)
=========  ======  ========  ==========================================

Malformed messages raise :class:`ImageFormatError` (a ValueError) whose ``reason`` attribute is a
short machine-readable tag (``unsupported_encoding``, ``zero_size``, ``step_too_small``,
``data_length_mismatch``, ``bad_array``) used by the node's drop counters.

This module imports sensor_msgs only when a message is built (:func:`numpy_to_image`,
:func:`scaled_camera_info`), so the decoding half also works on any object with the Image
fields.
"""
from __future__ import annotations

import array
import sys
from typing import Dict, Optional, Tuple

import numpy as np

# encoding -> (dtype, channels)
ENCODINGS: Dict[str, Tuple[np.dtype, int]] = {
    'mono8': (np.dtype(np.uint8), 1),
    '8UC1': (np.dtype(np.uint8), 1),
    'mono16': (np.dtype(np.uint16), 1),
    '16UC1': (np.dtype(np.uint16), 1),
    '32FC1': (np.dtype(np.float32), 1),
    'rgb8': (np.dtype(np.uint8), 3),
    'bgr8': (np.dtype(np.uint8), 3),
    'rgba8': (np.dtype(np.uint8), 4),
    'bgra8': (np.dtype(np.uint8), 4),
}

# Colour encodings whose channel order must be reversed to get RGB(A).
_BGR_ENCODINGS = ('bgr8', 'bgra8')

_HOST_BIG_ENDIAN = sys.byteorder == 'big'


class ImageFormatError(ValueError):
    """A sensor_msgs/Image that cannot be decoded; ``reason`` is a short tag for counters."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


# Encodings the fusion node (and the bag extractor) accept on each input.
RGB_ENCODINGS = ('rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8', '8UC1')
THERMAL_ENCODINGS = ('mono8', '8UC1', 'mono16', '16UC1', '32FC1')


def check_image(msg) -> Tuple[np.dtype, int]:
    """Validate the metadata of an Image without touching its pixels (cheap, O(1)).

    Returns ``(dtype, channels)`` of the encoding. Raises :class:`ImageFormatError` naming the
    problem: unknown encoding, zero width or height, ``step`` smaller than a row, or a data length
    different from ``step * height``.
    """
    encoding = msg.encoding
    if encoding not in ENCODINGS:
        raise ImageFormatError(
            'unsupported_encoding',
            f'unsupported image encoding {encoding!r}; supported: {", ".join(ENCODINGS)}')
    dtype, channels = ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageFormatError('zero_size', f'image has zero size ({width} x {height})')
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ImageFormatError(
            'step_too_small',
            f'image step {step} is smaller than width * bytes per pixel = {width} * '
            f'{channels * dtype.itemsize} = {row_bytes} ({encoding})')
    n = len(msg.data)
    if n != step * height:
        raise ImageFormatError(
            'data_length_mismatch',
            f'image data length {n} does not match step * height = {step} * {height} = '
            f'{step * height}')
    return dtype, channels


def image_to_numpy(msg, rgb: bool = False, copy: bool = False,
                   check: bool = True) -> np.ndarray:
    """Decode a sensor_msgs/Image into a NumPy array in native byte order.

    Returns H x W for one-channel encodings and H x W x C otherwise, in the message's channel
    order; with ``rgb=True`` colour images come back as H x W x 3 RGB (BGR reversed, alpha
    dropped). Without ``copy`` the result may share memory with ``msg.data`` (no padding, native
    byte order, no channel reordering); with ``copy=True`` it never does.
    Raises :class:`ImageFormatError` (ValueError) for a malformed message. ``check=False``
    skips :func:`check_image` for a message whose metadata was checked when it arrived.
    """
    dtype, channels = check_image(msg) if check else ENCODINGS[msg.encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    raw = np.frombuffer(msg.data, dtype=np.uint8)  # (step * height,) bytes
    row_bytes = width * channels * dtype.itemsize
    rows = raw.reshape(height, step)
    if step != row_bytes:
        rows = np.ascontiguousarray(rows[:, :row_bytes])  # drop row padding: one copy
        copy = False
    msg_dtype = dtype.newbyteorder('>' if msg.is_bigendian else '<')
    img = rows.view(msg_dtype)  # H x (W * C)
    if msg_dtype.byteorder != '|' and bool(msg.is_bigendian) != _HOST_BIG_ENDIAN:
        img = img.astype(dtype)  # byte swap to native order: one copy
        copy = False
    elif msg_dtype != dtype:
        img = img.view(dtype)  # same bytes, spelled as the native dtype
    img = img.reshape(height, width, channels) if channels > 1 else img.reshape(height, width)
    if rgb and channels > 1:
        if msg.encoding in _BGR_ENCODINGS:
            img = img[:, :, 2::-1]
        else:
            img = img[:, :, :3]
    if copy:
        img = img.copy()
    return img


def numpy_to_image(img: np.ndarray, encoding: str, header=None, step: Optional[int] = None,
                   bigendian: bool = False):
    """Build a sensor_msgs/Image from a NumPy array.

    ``img`` is H x W (or H x W x 1) for one-channel encodings and H x W x C for colour ones, with
    the encoding's dtype (mono8/rgb8/bgr8 uint8, mono16/16UC1 uint16, 32FC1 float32). ``header``
    (std_msgs/Header) is copied into the message. ``step`` pads each row to that many bytes and
    ``bigendian`` writes multi-byte data big-endian; both exist so that tests and tools can produce
    what real drivers send. Raises ImageFormatError for a wrong encoding, dtype or shape.
    """
    from sensor_msgs.msg import Image

    if encoding not in ENCODINGS:
        raise ImageFormatError(
            'unsupported_encoding',
            f'cannot encode {encoding!r}; supported: {", ".join(ENCODINGS)}')
    dtype, channels = ENCODINGS[encoding]
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[2] == 1 and channels == 1:
        img = img[:, :, 0]
    want_ndim = 2 if channels == 1 else 3
    if img.ndim != want_ndim or (channels > 1 and img.shape[2] != channels):
        raise ImageFormatError(
            'bad_array', f'{encoding} needs an array of shape '
            f'{"H x W" if channels == 1 else f"H x W x {channels}"}, got {img.shape}')
    if img.dtype != dtype:
        raise ImageFormatError(
            'bad_array', f'{encoding} needs dtype {dtype}, got {img.dtype}')
    height, width = img.shape[:2]
    if height == 0 or width == 0:
        raise ImageFormatError('zero_size',
                               f'cannot encode a zero-size image ({width} x {height})')
    row_bytes = width * channels * dtype.itemsize
    step = row_bytes if step is None else int(step)
    if step < row_bytes:
        raise ImageFormatError(
            'step_too_small', f'step {step} is smaller than the row size {row_bytes}')
    out_dtype = dtype.newbyteorder('>' if bigendian else '<')
    body = np.ascontiguousarray(img, dtype=out_dtype).reshape(height, -1).view(np.uint8)
    if step != row_bytes:
        padded = np.zeros((height, step), np.uint8)
        padded[:, :row_bytes] = body
        body = padded
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(height), int(width)
    msg.encoding = encoding
    msg.is_bigendian = 1 if (bigendian and dtype.itemsize > 1) else 0
    msg.step = step
    data = array.array('B')
    data.frombytes(np.ascontiguousarray(body).data)  # one copy, no per-element checks
    msg.data = data
    return msg


def scaled_camera_info(info, header, width: int, height: int):
    """A copy of sensor_msgs/CameraInfo ``info`` with ``header``, intrinsics scaled to W x H."""
    from sensor_msgs.msg import CameraInfo

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
