"""The backend interface and the pre/post-processing shared by every model backend.

Imports no backend module: the registry (:mod:`ssvif_ros.backends`) points at the backends,
the backends point here.
"""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

from ssvif_ros import imaging


class BackendError(RuntimeError):
    """A backend cannot be created (missing/corrupt model, missing runtime, no GPU)."""


class OutputError(ValueError):
    """A model returned a frame that must not be used: NaN/Inf, or class ids beyond the card."""


def check_outputs(fused: np.ndarray, ids: np.ndarray, num_classes: int) -> None:
    """Per-frame check of a model's outputs; OutputError saying what is wrong.

    Cheap enough for every frame: one ``isfinite`` pass over ``fused`` and one max over ``ids``
    (0.08 ms at 640x480, against 50 ms for the default model's inference on one core).
    """
    finite = np.isfinite(fused)  # H x W x 3 bool
    if not finite.all():
        bad = int(finite.size - np.count_nonzero(finite))
        raise OutputError(f'the model returned {bad} NaN or Inf values in the fused image')
    if num_classes < 256 and ids.size:
        top = int(ids.max())
        if top >= num_classes:
            raise OutputError(f'the model returned class id {top}, but the model card has '
                              f'{num_classes} classes')


class Backend:
    """Runs one fusion + segmentation model on one image pair at a time."""

    name = 'base'

    def __init__(self):
        self.num_classes = 1
        self.class_names = ('background',)
        self.palette = imaging.palette(1)   # num_classes x 3 uint8, for colour class maps
        self.semantic = False               # True: MSRS ids (0 background, 1 car, 2 person, ...)
        self.model_info: Dict = {'name': self.name}

    def infer(self, vis: np.ndarray, ir: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Fuse ``vis`` (float H x W x 3) and ``ir`` (float H x W, or H x W x 3 of equal planes).

        Returns (fused float H x W x 3, class ids uint8 H x W).
        """
        raise NotImplementedError

    def warm_up(self) -> None:
        """Run once before the first frame (model backends check their model here)."""

    def describe(self) -> str:
        """One line naming backend and model, for logs and diagnostics."""
        return f'{self.name}:{self.model_info.get("name", "?")}'


def error_reason(exc: BaseException) -> str:
    """The first line of an exception's message (KeyError unquoted; the type when empty)."""
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


# Warm-up pair size: odd and not a multiple of anything, so a wrong pad_multiple shows at start.
WARM_UP_HW = (37, 53)


class GraphBackend(Backend):
    """Shared pre/post-processing of every model backend (torch, ONNX Runtime, TensorRT).

    Pads both inputs to the model's multiple (:func:`imaging.pad_to_multiple`), lays them out
    as 1 x 3 x H x W (the thermal plane repeated to the three channels the models take: SSVIF's
    three-channel fusion), calls :meth:`run`, and crops the outputs back, so every backend sees
    and returns exactly the same tensors.
    """

    def __init__(self, card: Dict):
        super().__init__()
        self.card = card
        self.pad_multiple = int(card.get('pad_multiple', 1))
        self.num_classes = int(card.get('num_classes', 1))
        self.class_names = tuple(card.get('class_names') or imaging.class_names(self.num_classes))
        pal = card.get('palette')
        self.palette = (np.asarray(pal, dtype=np.uint8) if pal
                        else imaging.palette(max(self.num_classes, 1)))
        self.semantic = card.get('classes') == 'msrs'
        self.model_info = {'name': card.get('model', {}).get('name', '?'),
                           'onnx_sha256': card.get('onnx_sha256', ''),
                           'num_classes': self.num_classes}

    def run(self, vis: np.ndarray, ir: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """1 x 3 x H x W float32 inputs -> (fused 1 x 3 x H x W, class ids 1 x H x W)."""
        raise NotImplementedError

    def warm_up(self) -> None:
        """Run one inference on a small pair and check the outputs; ValueError saying why.

        A model that cannot run (wrong pad multiple, wrong graph) is then a start-up error
        rather than a failure on every frame.
        """
        h, w = WARM_UP_HW
        rng = np.random.default_rng(0)
        vis = rng.random((h, w, 3), dtype=np.float32)
        ir = rng.random((h, w), dtype=np.float32)
        try:
            fused, ids = self.infer(vis, ir)
        except OutputError as exc:
            raise ValueError(f'warm-up inference on a {w}x{h} pair: {exc}') from None
        except Exception as exc:  # noqa: BLE001 - ORT, torch and TensorRT errors alike
            raise ValueError(f'warm-up inference on a {w}x{h} pair failed (pad_multiple '
                             f'{self.pad_multiple}): {error_reason(exc)}') from None
        if fused.shape != (h, w, 3) or ids.shape != (h, w):
            raise ValueError(f'warm-up inference on a {w}x{h} pair returned fused '
                             f'{tuple(fused.shape)} and class ids {tuple(ids.shape)}, expected '
                             f'{(h, w, 3)} and {(h, w)}')

    def infer(self, vis, ir):
        """Pad, run the graph, crop: float H x W x 3 and H x W pair -> (fused float, ids uint8)."""
        v, pad = imaging.pad_to_multiple(np.asarray(vis, np.float32), self.pad_multiple)
        t, _ = imaging.pad_to_multiple(np.asarray(ir, np.float32), self.pad_multiple)
        v = np.ascontiguousarray(v.transpose(2, 0, 1))[None]  # 1 x 3 x H' x W'
        if t.ndim == 2:
            # One plane padded, then repeated into the three input channels by a single copy.
            t = np.ascontiguousarray(np.broadcast_to(t[None, None], (1, 3) + t.shape))
        else:
            t = np.ascontiguousarray(t.transpose(2, 0, 1))[None]  # 1 x 3 x H' x W'
        fused, ids = self.run(v, t)
        fused = imaging.unpad(np.asarray(fused[0], np.float32).transpose(1, 2, 0), pad)
        ids = imaging.unpad(np.asarray(ids[0]).astype(np.uint8, copy=False), pad)
        check_outputs(fused, ids, self.num_classes)  # every consumer: node, fuse, bag eval
        return fused, ids
