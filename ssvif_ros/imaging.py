"""All pixel pre- and post-processing of ssvif_ros, in one place.

Training, export, the evaluation tools and the ROS 2 node all call these functions, so a fused
image means the same thing everywhere. Conventions:

* Float images are in ``[0, 1]``. Images are NumPy ``H x W`` or ``H x W x C`` (channel last, RGB
  order). Training's torch tensors (``N x C x H x W``) go through
  :mod:`ssvif_train.tensor_imaging`, which applies this module's formulas (:func:`ycbcr_planes`,
  :func:`rgb_planes`, :func:`luma`, :func:`pad_amount`) to tensors: this module never imports
  torch.
* Colour space: ITU-R BT.601 full-range YCbCr (the JPEG convention used by SeAFusion, SwinFusion
  and the MSRS tools): ``Y = 0.299 R + 0.587 G + 0.114 B``, ``Cb = 0.5 + 0.564 (B - Y)``,
  ``Cr = 0.5 + 0.713 (R - Y)``.
* Thermal normalization (:func:`normalize_thermal`), documented in doc/training.md:

  - ``scale``: divide by the dtype's full scale (uint8 / 255, uint16 / 65535);
  - ``fixed``: ``(t - lo) / (hi - lo)`` clipped to [0, 1] (counts or degrees, e.g. 32FC1);
  - ``percentile``: ``lo, hi`` = the ``p_lo``/``p_hi`` percentiles of the frame, then as fixed;
  - ``auto``: uint8 -> ``scale``; uint16 and float -> ``percentile`` (1, 99). 16-bit radiometric
    cameras use a few thousand of their 65536 counts, so a full-scale divide would give a
    nearly black image.

* Thermal images are expanded to three identical channels before entering a fusion model
  (SSVIF, appendix B-B: three-channel fusion).
* Models need spatial sizes divisible by their stride: :func:`pad_to_multiple` pads with
  reflection at the bottom and right, :func:`unpad` removes it.

Why one module of ~450 lines: it is the single owner of what a pixel means (colour space,
thermal scale, padding, class colours, file formats); every stage of training, export, the
tools and the node goes through it, so a second module would be a second place to look for one
of these conventions. Each section is a few short functions.

Heavy imports (cv2) are lazy.
"""
from __future__ import annotations

from dataclasses import dataclass
import os
from typing import Optional, Sequence, Tuple

import numpy as np

# BT.601 full-range coefficients: the one definition (models and losses use them via the
# plane functions below).
KR, KG, KB = 0.299, 0.587, 0.114
CB_SCALE = 0.5 / (1.0 - KB)  # 0.5643
CR_SCALE = 0.5 / (1.0 - KR)  # 0.7133

THERMAL_METHODS = ('auto', 'scale', 'fixed', 'percentile')

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')


def _take(x, index: int, axis: int):
    sl = [slice(None)] * x.ndim
    sl[axis] = index
    return x[tuple(sl)]


def luma(r, g, b):
    """BT.601 luma Y of R, G, B planes in [0, 1] (any array type with arithmetic)."""
    return KR * r + KG * g + KB * b


def ycbcr_planes(r, g, b):
    """BT.601 full-range ``(Y, Cb, Cr)`` planes of R, G, B planes in [0, 1]."""
    y = luma(r, g, b)
    return y, (b - y) * CB_SCALE + 0.5, (r - y) * CR_SCALE + 0.5


def rgb_planes(y, cb, cr):
    """Invert :func:`ycbcr_planes`: ``(R, G, B)`` planes (no clipping)."""
    r = y + (cr - 0.5) / CR_SCALE
    b = y + (cb - 0.5) / CB_SCALE
    g = (y - KR * r - KB * b) / KG
    return r, g, b


def rgb_to_ycbcr(x: np.ndarray, channel_axis: int = -1) -> np.ndarray:
    """Convert RGB in [0, 1] to BT.601 full-range YCbCr in [0, 1]."""
    return np.stack(ycbcr_planes(*(_take(x, i, channel_axis) for i in range(3))),
                    axis=channel_axis)


def ycbcr_to_rgb(x: np.ndarray, channel_axis: int = -1) -> np.ndarray:
    """Invert :func:`rgb_to_ycbcr` (no clipping)."""
    return np.stack(rgb_planes(*(_take(x, i, channel_axis) for i in range(3))),
                    axis=channel_axis)


def rgb_to_gray(x: np.ndarray, channel_axis: int = -1) -> np.ndarray:
    """Return the BT.601 luma Y of an RGB image (channel axis removed)."""
    return luma(*(_take(x, i, channel_axis) for i in range(3)))


@dataclass
class ThermalNorm:
    """How raw thermal values become floats in [0, 1]; see the module docstring."""

    method: str = 'auto'
    lo: Optional[float] = None
    hi: Optional[float] = None
    p_lo: float = 1.0
    p_hi: float = 99.0

    def __post_init__(self):
        if self.method not in THERMAL_METHODS:
            raise ValueError(f'thermal normalization method {self.method!r} is not one of '
                             f'{THERMAL_METHODS}')
        if self.method == 'fixed':
            if self.lo is None or self.hi is None or not self.hi > self.lo:
                raise ValueError('thermal normalization "fixed" needs lo < hi, got '
                                 f'lo={self.lo} hi={self.hi}')
        if not 0.0 <= self.p_lo < self.p_hi <= 100.0:
            raise ValueError(f'thermal percentiles need 0 <= p_lo < p_hi <= 100, got '
                             f'{self.p_lo}, {self.p_hi}')


def normalize_thermal(img: np.ndarray, norm: Optional[ThermalNorm] = None,
                      check_finite: bool = True) -> np.ndarray:
    """Map a raw thermal frame (uint8, uint16 or float, H x W) to float32 [0, 1] (H x W).

    Raises ValueError for an empty frame, a wrong shape or non-finite values; a caller that has
    already scanned the frame for NaN/Inf passes ``check_finite=False`` (one scan per frame).
    """
    norm = norm or ThermalNorm()
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3 and img.shape[2] in (3, 4):
        # A thermal image saved as RGB(A) grey: all channels should be equal; take luma.
        img = rgb_to_gray(img[:, :, :3].astype(np.float32)).astype(
            np.float32 if img.dtype.kind == 'f' else img.dtype)
    if img.ndim != 2:
        raise ValueError(f'thermal image must be H x W, got shape {img.shape}')
    if img.size == 0:
        raise ValueError('thermal image is empty (zero size)')
    method = norm.method
    if method == 'auto':
        method = 'scale' if img.dtype == np.uint8 else 'percentile'
    if check_finite and img.dtype.kind == 'f' and not np.all(np.isfinite(img)):
        raise ValueError('thermal image contains NaN or Inf values')
    if method == 'scale':
        if img.dtype in (np.uint8, np.uint16):
            x = img.astype(np.float32)
            x /= 255.0 if img.dtype == np.uint8 else 65535.0  # in place
            return x
        if img.dtype.kind == 'f':
            return np.clip(img.astype(np.float32), 0.0, 1.0)
        raise ValueError(f'thermal normalization "scale" does not support dtype {img.dtype}')
    x = img.astype(np.float32)
    if method == 'fixed':
        lo, hi = float(norm.lo), float(norm.hi)
    else:
        lo, hi = (float(v) for v in np.percentile(x, [norm.p_lo, norm.p_hi]))
    if hi <= lo:
        # A flat frame (lens cap, shutter/NUC): keep it flat instead of dividing by zero.
        return np.zeros_like(x)
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def _visible_channels(img: np.ndarray) -> np.ndarray:
    """A visible image as H x W x C (C 1 or 3; alpha dropped); ValueError for other shapes."""
    img = np.asarray(img)
    if img.size == 0:
        raise ValueError('visible image is empty (zero size)')
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4):
        raise ValueError(f'visible image must be H x W x 3 (or mono), got shape {img.shape}')
    return img[:, :, :3]


def visible_to_float(img: np.ndarray) -> np.ndarray:
    """Map a visible uint8/uint16 RGB or mono image to float32 RGB [0, 1] (H x W x 3)."""
    img = _visible_channels(img)
    if img.dtype == np.uint8:
        x = img.astype(np.float32)
        x /= 255.0  # in place: one pass and one allocation less than astype(...) / 255
    elif img.dtype == np.uint16:
        x = img.astype(np.float32)
        x /= 65535.0
    elif img.dtype.kind == 'f':
        x = np.clip(img.astype(np.float32), 0.0, 1.0)
    else:
        raise ValueError(f'visible image dtype {img.dtype} is not supported')
    if x.shape[2] == 1:
        x = np.repeat(x, 3, axis=2)
    return x


def visible_to_uint8(img: np.ndarray) -> np.ndarray:
    """Map a visible uint8/uint16/float RGB or mono image to C-contiguous uint8 RGB (H x W x 3).

    What the model backends take: a uint8 RGB frame passes without a copy; uint16 and float
    images are rounded with :func:`to_uint8` (exact for floats made by :func:`visible_to_float`
    from uint8). Raises ValueError like :func:`visible_to_float`.
    """
    img = np.asarray(img)
    if img.dtype != np.uint8:
        return to_uint8(visible_to_float(img))
    img = _visible_channels(img)
    if img.shape[2] == 1:
        return np.repeat(img, 3, axis=2)
    return np.ascontiguousarray(img)


def expand_thermal(ir: np.ndarray) -> np.ndarray:
    """View a float thermal frame H x W as H x W x 3 (three-channel fusion).

    The result is a read-only broadcast view (no copy: the layout change to N x C x H x W
    copies anyway, and a 640 x 480 float copy costs about 1 ms per frame in the node).
    """
    ir = np.asarray(ir)
    return np.broadcast_to(ir[:, :, None], ir.shape + (3,))


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Float [0, 1] to C-contiguous uint8 with rounding and clipping (uint8 passes unchanged).

    An H x W x C view of planar (C x H x W) memory, as the model backends return, is converted
    plane by plane and interleaved once with OpenCV: NumPy's strided H x W x 3 copy of a
    640 x 480 image costs about 1 ms, ``cv2.merge`` about 0.03 ms.
    """
    x = np.asarray(x)
    if x.dtype == np.uint8:  # already rounded (the model backends' fused images)
        u = x
    else:
        y = np.multiply(x, 255.0, dtype=np.float32)  # one temporary (in x's memory order)
        np.clip(y, 0.0, 255.0, out=y)
        np.add(y, 0.5, out=y)
        u = y.astype(np.uint8)  # same memory order as y
    if u.flags.c_contiguous:
        return u
    if u.ndim == 3 and 1 < u.shape[2] <= 4 and u.strides[1] == 1 and u.strides[2] > 1:
        # Planar (or a crop of planar): each channel is an H x W plane with contiguous rows.
        import cv2
        merged = cv2.merge([u[:, :, c] for c in range(u.shape[2])])  # H x W x C
        return merged.reshape(u.shape)
    return np.ascontiguousarray(u)


def pad_amount(h: int, w: int, multiple: int) -> Tuple[int, int]:
    """Rows and columns to add at the bottom and right so both sizes divide ``multiple``."""
    if multiple < 1:
        raise ValueError(f'pad multiple must be >= 1, got {multiple}')
    return (-h) % multiple, (-w) % multiple


def pad_to_multiple(x: np.ndarray, multiple: int) -> Tuple[np.ndarray, Tuple[int, int]]:
    """Reflect-pad an H x W or H x W x C image at the bottom/right to a multiple of ``multiple``.

    Returns ``(padded, (pad_h, pad_w))``. Falls back to edge padding when the image is smaller
    than the pad (reflection needs pad < size).
    """
    x = np.asarray(x)
    h, w = x.shape[:2]
    ph, pw = pad_amount(h, w, multiple)
    if ph == 0 and pw == 0:
        return x, (0, 0)
    widths = [(0, ph), (0, pw)] + [(0, 0)] * (x.ndim - 2)
    mode = 'reflect' if ph < h and pw < w else 'edge'
    return np.pad(x, widths, mode=mode), (ph, pw)


def unpad(x: np.ndarray, pad: Tuple[int, int]) -> np.ndarray:
    """Remove bottom/right padding added by :func:`pad_to_multiple` (H x W[ x C])."""
    ph, pw = pad
    h, w = x.shape[:2]
    return x[:h - ph, :w - pw]


def preprocess_pair(vis: np.ndarray, ir: np.ndarray,
                    norm: Optional[ThermalNorm] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Raw visible and thermal frames to the model's float inputs.

    Returns ``(vis, ir)`` as float32 H x W x 3 in [0, 1]; the thermal frame is normalized with
    ``norm`` and repeated to three channels (a read-only view, see :func:`expand_thermal`).
    Raises ValueError naming the image at fault.
    """
    v = visible_to_float(vis)
    t = normalize_thermal(ir, norm)
    if v.shape[:2] != t.shape:
        raise ValueError(f'visible {v.shape[1]}x{v.shape[0]} and thermal {t.shape[1]}x'
                         f'{t.shape[0]} images differ in size')
    return v, expand_thermal(t)


def max_luma_fusion(vis: np.ndarray, ir: np.ndarray) -> np.ndarray:
    """Trivial baseline: visible image with its Y channel replaced by max(Y, IR).

    ``vis`` float H x W x 3, ``ir`` float H x W or H x W x 3 in [0, 1]; returns float H x W x 3.
    """
    ycc = rgb_to_ycbcr(np.asarray(vis, dtype=np.float32))
    t = np.asarray(ir, dtype=np.float32)
    if t.ndim == 3:
        t = t[:, :, 0]
    ycc[:, :, 0] = np.maximum(ycc[:, :, 0], t)
    return np.clip(ycbcr_to_rgb(ycc), 0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Segmentation palettes

MSRS_CLASSES = ('unlabelled', 'car', 'person', 'bike', 'curve', 'car_stop', 'guardrail',
                'color_cone', 'bump')
FMB_CLASSES = ('unlabelled', 'road', 'sidewalk', 'building', 'lamp', 'sign', 'vegetation', 'sky',
               'person', 'car', 'truck', 'bus', 'motorcycle', 'bicycle', 'pole')

_MSRS_PALETTE = ((0, 0, 0), (64, 0, 128), (64, 64, 0), (0, 128, 192), (0, 0, 192),
                 (128, 128, 0), (64, 64, 128), (192, 128, 128), (192, 64, 0))
_FMB_PALETTE = ((0, 0, 0), (128, 64, 128), (244, 35, 232), (70, 70, 70), (250, 170, 30),
                (220, 220, 0), (107, 142, 35), (70, 130, 180), (220, 20, 60), (0, 0, 142),
                (0, 0, 70), (0, 60, 100), (0, 0, 230), (119, 11, 32), (153, 153, 153))


def class_names(spec) -> Tuple[str, ...]:
    """Class names for ``'msrs'``, ``'fmb'`` or an integer count (self-supervised clusters)."""
    if spec == 'msrs':
        return MSRS_CLASSES
    if spec == 'fmb':
        return FMB_CLASSES
    n = int(spec)
    if n < 1:
        raise ValueError(f'class count must be >= 1, got {n}')
    return tuple(f'class_{i}' for i in range(n))


def palette(n: int) -> np.ndarray:
    """A fixed n x 3 uint8 palette: MSRS colours for n <= 9, FMB/Cityscapes-like for n <= 15.

    Larger n continue with a deterministic golden-ratio hue walk.
    """
    if n < 1:
        raise ValueError(f'palette size must be >= 1, got {n}')
    base = list(_MSRS_PALETTE if n <= len(_MSRS_PALETTE) else _FMB_PALETTE)
    i = len(base)
    while len(base) < n:
        hue = (i * 0.618033988749895) % 1.0
        base.append(_hsv_to_rgb8(hue, 0.65, 0.95))
        i += 1
    return np.asarray(base[:n], dtype=np.uint8)


def _hsv_to_rgb8(h: float, s: float, v: float) -> Tuple[int, int, int]:
    k = [(5 + h * 6) % 6, (3 + h * 6) % 6, (1 + h * 6) % 6]
    rgb = [v - v * s * max(0.0, min(kk, 4 - kk, 1.0)) for kk in k]
    return tuple(int(round(c * 255)) for c in rgb)


def colorize(class_ids: np.ndarray, pal: Optional[np.ndarray] = None,
             num_classes: Optional[int] = None) -> np.ndarray:
    """Map an H x W class-id image to H x W x 3 uint8 colours (ids past the palette wrap)."""
    ids = np.asarray(class_ids)
    if pal is None:
        pal = palette(num_classes or max(int(ids.max(initial=0)) + 1, 1))
    if ids.dtype == np.uint8:
        lut = pal[np.arange(256) % len(pal)]  # 256 x 3: one row per possible id (5x faster)
        return np.take(lut, ids, axis=0)
    return pal[ids.astype(np.int64) % len(pal)]


def overlay(rgb: np.ndarray, color: np.ndarray, alpha: float) -> np.ndarray:
    """Blend a palette image over an RGB uint8 image: ``(1 - alpha) rgb + alpha color``."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f'overlay alpha must be in [0, 1], got {alpha}')
    out = (1.0 - alpha) * rgb.astype(np.float32) + alpha * color.astype(np.float32)
    return (out + 0.5).astype(np.uint8)


def class_overlay(rgb: np.ndarray, class_ids: np.ndarray, pal: np.ndarray, alpha: float,
                  keep_background: bool = False) -> np.ndarray:
    """Class colours blended over an RGB uint8 image (``alpha`` 0: the palette image alone).

    Semantic maps leave background (id 0) pixels as they are (``keep_background``), so people
    and cars stand out on the image instead of everything being tinted.
    """
    color = colorize(class_ids, pal)                       # H x W x 3 uint8
    if alpha <= 0.0:
        return color
    out = overlay(rgb, color, alpha)
    if keep_background:
        bg = np.asarray(class_ids) == 0
        out[bg] = rgb[bg]
    return out


# ---------------------------------------------------------------------------------------------
# Geometry and files

def resize(img: np.ndarray, size: Tuple[int, int], nearest: bool = False) -> np.ndarray:
    """Resize an H x W [x C] image to ``size = (width, height)`` (area/linear, or nearest)."""
    import cv2
    w, h = size
    img = np.ascontiguousarray(img)  # OpenCV rejects broadcast (stride-0) views
    if nearest:
        interp = cv2.INTER_NEAREST
    elif w < img.shape[1] or h < img.shape[0]:
        interp = cv2.INTER_AREA
    else:
        interp = cv2.INTER_LINEAR
    out = cv2.resize(img, (int(w), int(h)), interpolation=interp)
    if img.ndim == 3 and out.ndim == 2:
        out = out[:, :, None]
    return out


def warp_homography(img: np.ndarray, homography: Sequence[float],
                    size: Tuple[int, int]) -> np.ndarray:
    """Warp ``img`` by a 3 x 3 homography (row-major, 9 numbers) into ``size = (w, h)``."""
    import cv2
    hm = np.asarray(homography, dtype=np.float64).reshape(3, 3)
    if np.allclose(hm, np.eye(3)) and (img.shape[1], img.shape[0]) == tuple(size):
        return img
    return cv2.warpPerspective(img, hm, (int(size[0]), int(size[1])), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT)


PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def png_damage(data: bytes) -> Optional[str]:
    """Why the bytes of a PNG file are damaged (a chunk's CRC, a cut), or None.

    Checked before OpenCV decodes them, because libpng prints its own ``libpng error: ...``
    line to stderr for a damaged file; a file that does not start with the PNG signature is
    left to OpenCV (None). One CRC pass over the file: far cheaper than decoding it.
    """
    import zlib
    if not data.startswith(PNG_SIGNATURE):
        return None
    view, pos, n = memoryview(data), len(PNG_SIGNATURE), len(data)
    while pos + 12 <= n:
        length = int.from_bytes(view[pos:pos + 4], 'big')
        raw = bytes(view[pos + 4:pos + 8])
        name = raw.decode('ascii') if raw.isalpha() else f'0x{raw.hex()}'
        end = pos + 12 + length
        if end > n:
            return f'PNG cut short inside chunk {name}'
        if zlib.crc32(view[pos + 4:end - 4]) != int.from_bytes(view[end - 4:end], 'big'):
            return f'PNG chunk {name} fails its CRC check: a corrupt file'
        if name == 'IEND':
            return None
        pos = end
    return 'PNG cut short: no IEND chunk'


def read_image(path, mode: str = 'any') -> np.ndarray:
    """Read an image file into NumPy: RGB order, bit depth kept (uint8 or uint16).

    ``mode``: ``'any'`` keeps channels as stored, ``'gray'`` returns H x W (a colour file is
    converted to luma), ``'rgb'`` returns H x W x 3. Raises FileNotFoundError or ValueError
    naming the path when the file is missing or cannot be decoded.
    """
    import cv2
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'image file not found: {path}')
    img = None
    if path.lower().endswith(('.tif', '.tiff')):
        try:
            import tifffile
            img = tifffile.imread(path)
        except Exception:  # noqa: BLE001 - fall back to OpenCV's TIFF decoder
            img = None
    if img is None:
        with open(path, 'rb') as f:
            data = f.read()
        damage = png_damage(data)
        if damage:
            raise ValueError(f'cannot decode image file ({damage}): {path}')
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if img is not None and img.ndim == 3:
            code = cv2.COLOR_BGRA2RGBA if img.shape[2] == 4 else cv2.COLOR_BGR2RGB
            img = cv2.cvtColor(img, code)
    if img is None or img.size == 0:
        raise ValueError(f'cannot decode image file (corrupt or unsupported): {path}')
    if img.dtype not in (np.uint8, np.uint16, np.float32):
        raise ValueError(f'unsupported image dtype {img.dtype}: {path}')
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]
    if mode == 'gray' and img.ndim == 3:
        if img.shape[2] == 1:
            img = img[:, :, 0]
        elif (np.array_equal(img[:, :, 0], img[:, :, 1])
              and np.array_equal(img[:, :, 1], img[:, :, 2])):
            img = img[:, :, 0]
        else:
            img = (rgb_to_gray(img.astype(np.float32)) + 0.5).astype(img.dtype)
    elif mode == 'rgb' and img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return img


def decode_image(buf) -> np.ndarray:
    """Decode an encoded image in memory (JPEG, PNG, ...) to H x W x 3 uint8 RGB.

    The in-memory twin of :func:`read_image` (e.g. sensor_msgs/CompressedImage data). Raises
    ValueError when the bytes cannot be decoded.
    """
    import cv2
    arr = np.frombuffer(buf, dtype=np.uint8)  # (n,) encoded bytes
    img = cv2.imdecode(arr, cv2.IMREAD_COLOR)  # H x W x 3 BGR, or None
    if img is None or img.size == 0:
        raise ValueError(f'cannot decode {len(arr)} bytes as an image')
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def decode_mono(buf) -> np.ndarray:
    """Decode an encoded single-plane image in memory, keeping its depth: H x W uint8/uint16.

    For thermal CompressedImage data: OpenCV ``IMREAD_UNCHANGED`` keeps a 16-bit PNG's raw
    counts (``IMREAD_COLOR`` would cut them to 8 bits); a colour image (a camera publishing
    gray as BGR) is converted to gray. Raises ValueError when the bytes cannot be decoded or
    the depth is not 8/16-bit unsigned or float32.
    """
    import cv2
    arr = np.frombuffer(buf, dtype=np.uint8)  # (n,) encoded bytes
    img = cv2.imdecode(arr, cv2.IMREAD_UNCHANGED)  # H x W [x C], the stored depth, or None
    if img is None or img.size == 0:
        raise ValueError(f'cannot decode {len(arr)} bytes as an image')
    if img.dtype not in (np.uint8, np.uint16, np.float32):
        raise ValueError(f'decoded image has depth {img.dtype}, not uint8, uint16 or float32')
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    elif img.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if img.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        img = cv2.cvtColor(img, code)  # H x W, same depth
    return img


def write_image(path, img: np.ndarray) -> None:
    """Write an RGB (H x W x 3) or mono uint8/uint16 image (PNG keeps 16 bits; TIFF float32)."""
    import cv2
    path = os.fspath(path)
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, exist_ok=True)
    if not cv2.imwrite(path, img):
        raise ValueError(f'cannot write image file: {path}')
