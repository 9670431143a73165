"""Thermal -> RGB registration of a camera rig, and the alignment score of a registered pair.

ROS-free and torch-free; used by ``ssvif-register`` (:mod:`ssvif_ros.register_cli`) and by the
node's alignment check (:mod:`ssvif_ros.node_worker`).

Visible and thermal intensities are unrelated, but their edges mostly coincide (object
outlines, road borders, poles), so both frames are turned into gradient-magnitude images
(:func:`edge_image`) and aligned there. :func:`estimate`:

1. starts from what the node does without a homography (thermal resized to the RGB frame),
   shifted by the median over the frames of the ``cv2.phaseCorrelate`` shift;
2. warps each frame's thermal edges by the current estimate and finds the local shift of a
   grid of patches in the RGB edges (``cv2.matchTemplate``, normalized cross-correlation,
   sub-pixel peak); flat patches and ambiguous peaks are skipped, so frames without structure
   add nothing;
3. pools the matches of all frames and fits the model by RANSAC (``cv2.findHomography``,
   ``cv2.estimateAffine2D``, ``cv2.estimateAffinePartial2D``); four rounds with a shrinking
   search radius, a similarity in the first two;
4. raises :class:`RegistrationError` (rather than return a wrong matrix) when no frame has
   structure, when too few matches agree on one model (unrelated streams), or when the result
   aligns the edges worse than no registration.

Models: ``homography`` (8 degrees of freedom), ``affine`` (6), ``similarity`` (4: shift,
rotation, scale), ``translation`` (2). ``auto`` (default) takes the simplest of similarity,
affine and homography that the matches support: a model with more degrees of freedom only when
it explains clearly more matches, its inliers cover a quarter of the frame and fits on random
halves of the matches agree on the frame corners; otherwise its extra terms would be fitted
to the noise of cross-spectral edge matches.

:func:`alignment_score`: normalized cross-correlation of the two gradient-magnitude images at
160 pixels wide, in [-1, 1]; higher is better aligned. Its value depends on the scene (about
0.2 to 0.6 for registered MSRS / RoadScene pairs), so a threshold is chosen per rig
(``ssvif-register`` suggests half its median after registration).
"""
from __future__ import annotations

from dataclasses import dataclass, field
import functools
from typing import List, Optional, Sequence, Tuple

import numpy as np

MODELS = ('auto', 'homography', 'affine', 'similarity', 'translation')
# Width of the images the node's alignment score is computed at.
SCORE_WIDTH = 160
# Frames whose mean gradient (edge image, before normalization) is below this hold no usable
# structure (fog, a lens cap, a uniform wall) and are skipped.
MIN_STRUCTURE = 0.01
# ``auto`` fits a homography only when its inlier matches cover this much of the frame.
MIN_COVERAGE = 0.25
# ... and only when it explains this many times the inliers of the simpler model.
MORE_INLIERS = 1.05
# ... and only when fits on random halves of the matches agree on the corners within this [px].
STABLE_PX = 5.0
# OpenCV's RANSAC generator is seeded with this before every fit (repeatable estimates).
RANSAC_SEED = 0
# Gaussian blur [px at the working size] before the gradient: less sensor noise in the edges.
BLUR = 1.0


class RegistrationError(ValueError):
    """The pairs do not determine a registration (no structure, no convergence, disagreement)."""


def _gray(img: np.ndarray) -> np.ndarray:
    """RGB / mono image -> H x W float32: uint8 / 255, float as is, other integers stretched."""
    x = np.asarray(img)
    kind = x.dtype
    if x.ndim == 3:
        x = x[:, :, :3].mean(axis=2, dtype=np.float32) if x.shape[2] > 1 else x[:, :, 0]
    x = x.astype(np.float32)
    if kind == np.uint8:
        return x / np.float32(255.0)
    if kind.kind == 'f':
        return x
    lo, hi = np.percentile(x, (1.0, 99.0))
    return np.clip((x - lo) / max(float(hi - lo), 1e-6), 0.0, 1.0).astype(np.float32)


def edge_image(img: np.ndarray, width: int, blur: float = 1.0) -> Tuple[np.ndarray, float]:
    """(gradient magnitude H' x W' float32, mean gradient) of ``img`` resized to ``width``.

    The magnitude of the Sobel gradient of the blurred grey image; the returned image is scaled
    to unit mean (the matching and the score ignore the scale), the mean gradient says how much
    structure the frame holds (:data:`MIN_STRUCTURE`).
    """
    import cv2
    x = np.asarray(img)
    h, w = x.shape[:2]
    size = (int(width), max(1, int(round(h * width / w))))
    if x.dtype not in (np.uint8, np.uint16, np.float32):
        x = x.astype(np.float32)
    # resize first (cheap at the node's score size), then grey
    x = cv2.resize(np.ascontiguousarray(x), size,
                   interpolation=cv2.INTER_AREA if width < w else cv2.INTER_LINEAR)
    g = _gray(x)
    if blur > 0:
        g = cv2.GaussianBlur(g, (0, 0), blur)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    # NumPy, not cv2.magnitude: OpenCV's result depends on the arrays' memory alignment in the
    # last bit, which flips borderline patch matches and so the estimate from run to run.
    mag = np.sqrt(gx * gx + gy * gy)  # H' x W'
    mean = float(mag.mean())
    return mag / max(mean, 1e-9), mean


def _ncc(a: np.ndarray, b: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    if mask is not None:
        a, b = a[mask], b[mask]
    a = a - a.mean()
    b = b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else 0.0


def alignment_score(vis: np.ndarray, ir: np.ndarray, mask: Optional[np.ndarray] = None,
                    width: int = SCORE_WIDTH) -> Optional[float]:
    """NCC of the gradient magnitudes of a registered pair, or None without structure.

    ``vis`` H x W [x 3] and ``ir`` H x W in the same frame (any dtype); ``mask``: H' x W' bool at
    the score size, the pixels where the warped thermal frame is defined (:func:`valid_mask`).
    """
    ev, mv = edge_image(vis, width)
    et, mt = edge_image(ir, width)
    if mv < MIN_STRUCTURE or mt < MIN_STRUCTURE:
        return None
    if mask is not None and mask.sum() < 0.1 * mask.size:
        return None
    return _ncc(ev, et, mask)


@functools.lru_cache(maxsize=8)
def valid_mask(homography: Tuple[float, ...], thermal_size: Tuple[int, int],
               out_size: Tuple[int, int], width: int = SCORE_WIDTH) -> np.ndarray:
    """H' x W' bool: where the thermal frame warped by ``homography`` into ``out_size`` lands.

    At the score size, eroded so the edge of the warp is not scored as an edge of the scene.
    """
    import cv2
    w, h = out_size
    s = width / w
    size = (int(width), max(1, int(round(h * s))))
    hm = np.diag([s, s, 1.0]) @ np.asarray(homography, np.float64).reshape(3, 3)
    ones = np.ones((thermal_size[1], thermal_size[0]), np.uint8)
    m = cv2.warpPerspective(ones, hm, size, flags=cv2.INTER_NEAREST)
    m = cv2.erode(m, np.ones((5, 5), np.uint8))
    return m.astype(bool)


# ---------------------------------------------------------------------------------------------
# Estimation


@dataclass
class FrameResult:
    """One pair: its scores before / after and how many of its patches the result kept."""

    index: int
    status: str = 'ok'  # ok | no_structure
    score_before: Optional[float] = None
    score_after: Optional[float] = None
    matches: int = 0
    inliers: int = 0


@dataclass
class Registration:
    """The result of :func:`estimate`."""

    homography: np.ndarray  # 3 x 3, thermal -> RGB pixels, h33 = 1
    model: str  # the model fitted: homography, affine, similarity or translation
    frames: List[FrameResult] = field(default_factory=list)
    inliers: int = 0
    matches: int = 0
    residual_px: float = 0.0  # RMS distance of the inlier matches to the result [px]
    coverage: float = 0.0  # fraction of the RGB frame covered by the inliers (convex hull)

    @property
    def used(self) -> List[FrameResult]:
        """The frames with structure."""
        return [f for f in self.frames if f.status == 'ok']

    def warn_below(self) -> float:
        """A WARN threshold for the node: half the median score of the registered frames."""
        after = [f.score_after for f in self.used if f.score_after is not None]
        return round(0.5 * float(np.median(after)), 3) if after else 0.0


def corner_error(h_est: np.ndarray, h_true: np.ndarray, size: Tuple[int, int]) -> float:
    """Mean distance [px] between where two thermal -> RGB homographies send the RGB corners.

    ``size``: the RGB frame (w, h); the corners are mapped back through each inverse, so the
    error is in thermal pixels at the true correspondence of each RGB corner.
    """
    w, h = size
    pts = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], np.float64).T

    def back(hm):
        q = np.linalg.inv(hm) @ pts
        return (q[:2] / q[2]).T
    return float(np.linalg.norm(back(h_est) - back(h_true), axis=1).mean())


def _scale(s: float) -> np.ndarray:
    return np.diag([s, s, 1.0])


def _patch_matches(ev: np.ndarray, etw: np.ndarray, patch: int, radius: int,
                   min_ncc: float) -> Tuple[np.ndarray, np.ndarray]:
    """Local shifts of the warped thermal edges ``etw`` against the RGB edges ``ev``.

    A grid of ``patch``-sized patches of ``etw`` is searched for in ``ev`` within ``radius``
    pixels (normalized cross-correlation, ``cv2.matchTemplate``), the peak refined to sub-pixel
    by a parabola. Returns (N x 2 patch centres, N x 2 shifts) of the patches with structure
    whose peak reaches ``min_ncc`` and stands out from the rest of the search window.
    """
    import cv2
    h, w = ev.shape
    centres, shifts = [], []
    step = patch * 3 // 4
    flat = 0.2  # edge images have unit mean: a patch below this std is flat
    for y0 in range(radius, h - patch - radius + 1, step):
        for x0 in range(radius, w - patch - radius + 1, step):
            tpl = etw[y0:y0 + patch, x0:x0 + patch]
            if tpl.std() < flat or (tpl == 0).mean() > 0.05:
                continue  # no structure, or the warp border is inside the patch
            win = ev[y0 - radius:y0 + patch + radius, x0 - radius:x0 + patch + radius]
            if win.std() < flat:
                continue
            res = cv2.matchTemplate(win, tpl, cv2.TM_CCOEFF_NORMED)  # (2r+1) x (2r+1)
            _, peak, _, (px, py) = cv2.minMaxLoc(res)
            if peak < min_ncc or not (0 < px < res.shape[1] - 1 and 0 < py < res.shape[0] - 1):
                continue
            # the peak must stand out: the best value away from it is clearly lower
            away = res.copy()
            away[max(0, py - 3):py + 4, max(0, px - 3):px + 4] = -1.0
            if away.max() > peak - 0.05:
                continue
            dx = _parabola(res[py, px - 1], peak, res[py, px + 1])
            dy = _parabola(res[py - 1, px], peak, res[py + 1, px])
            centres.append((x0 + patch / 2.0, y0 + patch / 2.0))
            shifts.append((px + dx - radius, py + dy - radius))
    return np.asarray(centres, np.float64).reshape(-1, 2), np.asarray(shifts).reshape(-1, 2)


def _parabola(a: float, b: float, c: float) -> float:
    den = a - 2.0 * b + c
    return float(np.clip(0.5 * (a - c) / den, -0.5, 0.5)) if den < 0 else 0.0


def _fit(src: np.ndarray, dst: np.ndarray, model: str, thresh: float
         ) -> Tuple[Optional[np.ndarray], np.ndarray]:
    """(3 x 3 model src -> dst or None, N bool inliers) by RANSAC (OpenCV's estimators).

    OpenCV's RANSAC draws from the calling thread's generator, whose state depends on every
    earlier draw in the process: it is re-seeded here, so the same matches give the same fit.
    """
    import cv2
    n = len(src)
    if n < 4:
        return None, np.zeros(n, bool)
    cv2.setRNGSeed(RANSAC_SEED)
    if model == 'homography':
        hm, inl = cv2.findHomography(src, dst, cv2.RANSAC, thresh, maxIters=4000,
                                     confidence=0.999)
    elif model in ('affine', 'similarity'):
        fn = cv2.estimateAffine2D if model == 'affine' else cv2.estimateAffinePartial2D
        a, inl = fn(src, dst, method=cv2.RANSAC, ransacReprojThreshold=thresh, maxIters=4000,
                    confidence=0.999)
        hm = None if a is None else np.vstack([a, [0.0, 0.0, 1.0]])
    else:  # translation: the median shift, inliers within thresh of it
        d = np.median(dst - src, axis=0)
        inl = np.linalg.norm(dst - src - d, axis=1) <= thresh
        d = (dst - src)[inl].mean(axis=0) if inl.any() else d
        hm = np.array([[1.0, 0.0, d[0]], [0.0, 1.0, d[1]], [0.0, 0.0, 1.0]])
    if hm is None or inl is None:
        return None, np.zeros(n, bool)
    return hm / hm[2, 2], inl.ravel().astype(bool)


def _select(src: np.ndarray, dst: np.ndarray, thresh: float, size: Tuple[int, int]
            ) -> Tuple[str, Optional[np.ndarray], np.ndarray]:
    """``auto``: the simplest model the matches support (similarity, affine, homography).

    A model with more degrees of freedom is taken only when it explains clearly more matches
    (:data:`MORE_INLIERS`), its inliers cover :data:`MIN_COVERAGE` of the frame and the matches
    pin it down: fitted on random halves of the matches, it moves the frame corners by less
    than :data:`STABLE_PX` (otherwise its extra terms are fitted to the noise of the matches).
    """
    best = ('similarity',) + _fit(src, dst, 'similarity', thresh)
    for name in ('affine', 'homography'):
        hm, inl = _fit(src, dst, name, thresh)
        n, n_best = int(inl.sum()), int(best[2].sum())
        if hm is not None and n >= n_best * MORE_INLIERS + 3 and \
                _coverage(dst[inl], size) >= MIN_COVERAGE and \
                _instability(src, dst, name, hm, thresh, size) < STABLE_PX:
            best = (name, hm, inl)
    return best


def _instability(src: np.ndarray, dst: np.ndarray, model: str, hm: np.ndarray,
                 thresh: float, size: Tuple[int, int], rounds: int = 10) -> float:
    """RMS corner error [px] between ``hm`` and ``model`` fitted (RANSAC) on random halves."""
    rng = np.random.default_rng(0)
    errs = []
    for _ in range(rounds):
        pick = rng.choice(len(src), size=len(src) // 2, replace=False)
        h2, _ = _fit(src[pick], dst[pick], model, thresh)
        if h2 is None or not np.all(np.isfinite(h2)):
            return float('inf')
        errs.append(corner_error(h2, hm, size))
    return float(np.sqrt(np.mean(np.square(errs))))


def _apply(hm: np.ndarray, pts: np.ndarray) -> np.ndarray:
    q = np.hstack([pts, np.ones((len(pts), 1))]) @ hm.T
    return q[:, :2] / q[:, 2:3]


def _coverage(pts: np.ndarray, size: Tuple[int, int]) -> float:
    import cv2
    if len(pts) < 3:
        return 0.0
    hull = cv2.convexHull(pts.astype(np.float32))
    return float(cv2.contourArea(hull)) / float(size[0] * size[1])


def _initial(rgb_size: Tuple[int, int], thermal_size: Tuple[int, int]) -> np.ndarray:
    """The node's unregistered behaviour: the thermal frame resized to the RGB frame."""
    return np.diag([rgb_size[0] / thermal_size[0], rgb_size[1] / thermal_size[1], 1.0])


def _global_shift(ev: np.ndarray, etw: np.ndarray) -> np.ndarray:
    """Translation (3 x 3) of ``etw`` onto ``ev`` by phase correlation at quarter size."""
    import cv2
    f = 0.25
    a = cv2.resize(ev, None, fx=f, fy=f, interpolation=cv2.INTER_AREA).astype(np.float64)
    b = cv2.resize(etw, None, fx=f, fy=f, interpolation=cv2.INTER_AREA).astype(np.float64)
    win = cv2.createHanningWindow((a.shape[1], a.shape[0]), cv2.CV_64F)
    (dx, dy), _ = cv2.phaseCorrelate(b, a, win)
    return np.array([[1.0, 0.0, dx / f], [0.0, 1.0, dy / f], [0.0, 0.0, 1.0]])


def estimate(pairs: Sequence[Tuple[np.ndarray, np.ndarray]], model: str = 'auto',
             radius: int = 40, patch: int = 64, min_inliers: int = 12,
             min_inlier_ratio: float = 0.12, progress=None) -> Registration:
    """Estimate the thermal -> RGB homography of a rig from ``pairs`` (RGB, thermal) arrays.

    Edge images of each pair are matched patch by patch (:func:`_patch_matches`) around the
    current estimate (first: the thermal frame resized to the RGB frame, shifted by phase
    correlation), the matches of all frames pooled and the model fitted by RANSAC; four
    rounds with a shrinking search radius. ``model``: one of :data:`MODELS` (``auto``: see
    :func:`_select`). The RGB frame is worked on at most 640 pixels wide. ``progress``: called
    once per frame and round. Raises RegistrationError saying why when the pairs do not
    determine a registration.
    """
    import cv2
    if model not in MODELS:
        raise ValueError(f'model {model!r} is not one of {", ".join(MODELS)}')
    if not pairs:
        raise RegistrationError('no pairs')
    rgb_size = (pairs[0][0].shape[1], pairs[0][0].shape[0])
    th_size = (pairs[0][1].shape[1], pairs[0][1].shape[0])
    for i, (v, t) in enumerate(pairs):
        if (v.shape[1], v.shape[0]) != rgb_size or (t.shape[1], t.shape[0]) != th_size:
            raise RegistrationError(
                f'pair {i} is RGB {v.shape[1]}x{v.shape[0]} / thermal {t.shape[1]}x{t.shape[0]}'
                f', the first RGB {rgb_size[0]}x{rgb_size[1]} / thermal '
                f'{th_size[0]}x{th_size[1]}: one rig has one size per camera')
    # Work at most 640 wide (the RGB frame); s maps full RGB pixels to working pixels.
    s = min(1.0, 640.0 / rgb_size[0])
    ws = (int(round(rgb_size[0] * s)), int(round(rgb_size[1] * s)))
    if min(ws) < patch + 2 * radius:
        raise RegistrationError(f'RGB frames of {rgb_size[0]}x{rgb_size[1]} are too small to '
                                f'register (at least {patch + 2 * radius} pixels a side)')
    edges, frames = [], []
    init = _scale(s) @ _initial(rgb_size, th_size)  # thermal full px -> working RGB px
    for i, (v, t) in enumerate(pairs):
        ev, mv = edge_image(v, ws[0], BLUR)
        et, mt = edge_image(t, th_size[0], BLUR * th_size[0] / ws[0])
        fr = FrameResult(i)
        if mv < MIN_STRUCTURE or mt < MIN_STRUCTURE:
            fr.status = 'no_structure'
        else:
            edges.append((i, ev, et))
            fr.score_before = _warped_score(ev, et, init)
        frames.append(fr)
    if not edges:
        raise RegistrationError(f'none of the {len(pairs)} pairs holds enough structure '
                                '(edges) in both images to register')
    # Global shift first: the median over the frames of the phase-correlation shift.
    shifts = [_global_shift(ev, cv2.warpPerspective(et, init, ws))[:2, 2] for _, ev, et in edges]
    d = np.median(np.asarray(shifts), axis=0)
    current = np.array([[1.0, 0.0, d[0]], [0.0, 1.0, d[1]], [0.0, 0.0, 1.0]]) @ init
    target = 'homography' if model == 'auto' else model
    simple = 'translation' if target == 'translation' else 'similarity'
    # Rounds: (search radius, RANSAC threshold, model). The first rounds fit a similarity,
    # which the noisy matches of a far-off start pin down well; the last ones fit the target
    # model from close by, where the matches are precise.
    rounds = ((radius, 3.0, simple), (max(radius // 3, 6), 2.0, simple), (6, 1.5, target),
              (4, 1.0, target))
    for r, thresh, fit_model in rounds:
        src, dst, owner = [], [], []
        for i, ev, et in edges:
            etw = cv2.warpPerspective(et, current, ws, flags=cv2.INTER_LINEAR)
            c, sh = _patch_matches(ev, etw, patch, r, 0.3)
            if len(c):
                src.append(_apply(np.linalg.inv(current), c))  # thermal full px
                dst.append(c + sh)  # working RGB px
                owner += [i] * len(c)
            if progress is not None:
                progress()
        src = np.vstack(src) if src else np.zeros((0, 2))
        dst = np.vstack(dst) if dst else np.zeros((0, 2))
        owner = np.asarray(owner, int)
        if model == 'auto' and fit_model == 'homography':
            fit_model, hm, inl = _select(src, dst, thresh, ws)
        else:
            hm, inl = _fit(src, dst, fit_model, thresh)
        n_in = int(inl.sum())
        if hm is None or n_in < min_inliers or n_in < min_inlier_ratio * len(src):
            raise RegistrationError(
                f'the pairs do not agree on a registration: {n_in} of {len(src)} edge-patch '
                f'matches from {len(edges)} frames fit one {fit_model} (need {min_inliers} '
                f'and {min_inlier_ratio:.0%}); are the two streams of the same scene?')
        current = hm
    res = np.linalg.norm(_apply(current, src[inl]) - dst[inl], axis=1)
    final = np.linalg.inv(_scale(s)) @ current
    final = final / final[2, 2]
    for fr in frames:
        if fr.status != 'ok':
            continue
        _, ev, et = next(e for e in edges if e[0] == fr.index)
        fr.score_after = _warped_score(ev, et, current)
        fr.matches = int((owner == fr.index).sum())
        fr.inliers = int(((owner == fr.index) & inl).sum())
    reg = Registration(final, fit_model, frames, int(inl.sum()), len(src),
                       float(np.sqrt((res ** 2).mean()) / s), _coverage(dst[inl], ws))
    before = np.median([f.score_before for f in reg.used])
    after = np.median([f.score_after for f in reg.used])
    if after < before - 0.02:
        raise RegistrationError(f'the estimate aligns the edges worse than no registration '
                                f'(median score {after:.3f} after, {before:.3f} before)')
    return reg


def _warped_score(ev: np.ndarray, et: np.ndarray, hm: np.ndarray) -> float:
    """NCC of RGB edges ``ev`` and thermal edges ``et`` warped by ``hm`` into ``ev``'s frame."""
    import cv2
    size = (ev.shape[1], ev.shape[0])
    warped = cv2.warpPerspective(et, hm, size, flags=cv2.INTER_LINEAR)
    mask = cv2.warpPerspective(np.ones(et.shape, np.uint8), hm, size, flags=cv2.INTER_NEAREST)
    mask = cv2.erode(mask, np.ones((5, 5), np.uint8)).astype(bool)
    if mask.sum() < 0.1 * mask.size:
        return -1.0
    return _ncc(ev, warped, mask)
