"""The backend interface and the pre/post-processing shared by every model backend.

Imports no backend module: the registry (:mod:`ssvif_ros.backends`) points at the backends,
the backends point here.
"""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

from ssvif_ros import imaging
from ssvif_ros.model_card import NONFINITE_ID


class BackendError(RuntimeError):
    """A backend cannot be created (missing/corrupt model, missing runtime, no GPU)."""


class OutputError(ValueError):
    """A model returned a frame that must not be used: NaN/Inf, or class ids beyond the card."""


def check_outputs(fused: np.ndarray, ids: np.ndarray, num_classes: int) -> None:
    """Per-frame check of a model's outputs; OutputError saying what is wrong.

    Cheap enough for every frame: one ``isfinite`` pass over a float ``fused`` and one max over
    ``ids`` (0.08 ms at 640x480, against 50 ms for the default model's inference on one core).
    A uint8 ``fused`` (frame graphs) cannot hold NaN: the graph marks such pixels in ``ids``
    with :data:`NONFINITE_ID` instead.
    """
    if fused.dtype.kind == 'f':
        finite = np.isfinite(fused)  # H x W x 3 bool
        if not finite.all():
            bad = int(finite.size - np.count_nonzero(finite))
            raise OutputError(f'the model returned {bad} NaN or Inf values in the fused image')
    if num_classes < 256 and ids.size:
        top = int(ids.max())
        if top == NONFINITE_ID:
            raise OutputError(f'the model returned NaN or Inf in the fused image (the graph '
                              f'marks such a frame with class id {NONFINITE_ID})')
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
        """Fuse ``vis`` and ``ir``; returns (fused uint8 H x W x 3 RGB, class ids uint8 H x W).

        ``vis``: H x W x 3 uint8 RGB as :func:`ssvif_ros.frames.register_pair` gives it (float
        in [0, 1] is accepted too and rounded to uint8 first); ``ir``: the float H x W thermal
        plane in [0, 1] (H x W x 3 of equal planes accepted).
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


def frame_inputs(vis, ir) -> Tuple[np.ndarray, np.ndarray]:
    """``infer``'s inputs as the frame graph takes them: (H x W x 3 uint8, H x W float32).

    No copy for the node's frames (uint8 RGB and a float32 plane); ValueError when the two
    sizes differ.
    """
    v = imaging.visible_to_uint8(vis)                                   # H x W x 3 uint8
    t = np.asarray(ir)
    if t.ndim == 3:
        t = t[:, :, 0]  # three equal planes (imaging.expand_thermal)
    t = np.ascontiguousarray(t, np.float32)                             # H x W
    if v.shape[:2] != t.shape:
        raise ValueError(f'visible {v.shape[1]}x{v.shape[0]} and thermal {t.shape[1]}x'
                         f'{t.shape[0]} inputs differ in size')
    return v, t


class GraphBackend(Backend):
    """Shared pre/post-processing of every model backend (torch, ONNX Runtime, TensorRT).

    Two graph interfaces (:mod:`ssvif_train.deploy`), chosen by the subclass's ``frame_io``:

    * frames (model format ``ssvif-model/2``, what ``ssvif-export`` writes and the torch
      backend runs): :meth:`run` takes 1 x H x W x 3 uint8 and the 1 x H x W thermal plane and
      returns uint8 fused 1 x H x W x 3 and class ids 1 x H x W; normalization, layout,
      padding, cropping and rounding are inside the graph. The host only adds the batch axis
      (and pads images smaller than the pad itself, which reflection cannot pad);
    * padded floats (``ssvif-model/1`` folders, still run): the host pads both inputs to the
      model's multiple (:func:`imaging.pad_to_multiple`), lays them out as 1 x 3 x H x W float
      (the thermal plane repeated to the three channels the models take: SSVIF's three-channel
      fusion), calls :meth:`run`, crops the outputs and rounds the fused image to uint8.
    """

    frame_io = True

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
        """The graph on one batch of the interface's tensors (see the class docstring)."""
        raise NotImplementedError

    def check_pad_multiple(self, graph_multiple: int, path: str) -> None:
        """ValueError when the card's ``pad_multiple`` is not the one the frame graph pads to.

        A frame graph pads itself, so a wrong card value would not fail any inference; it is
        still a card that misdescribes its model.
        """
        if int(graph_multiple) != self.pad_multiple:
            raise ValueError(f'{path}: the model card says pad_multiple {self.pad_multiple}, '
                             f'but the graph pads to a multiple of {int(graph_multiple)}; '
                             're-export the model')

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
        """uint8 (or float) H x W x 3 and H x W pair -> (fused uint8 H x W x 3, uint8 ids)."""
        if not self.frame_io:
            return self._infer_padded(vis, ir)
        v, t = frame_inputs(vis, ir)
        ph, pw = imaging.pad_amount(t.shape[0], t.shape[1], self.pad_multiple)
        pad = (0, 0)
        if ph >= t.shape[0] or pw >= t.shape[1]:
            # Smaller than the pad: edge padding on the host, as imaging.pad_to_multiple does.
            v, pad = imaging.pad_to_multiple(v, self.pad_multiple)
            t, _ = imaging.pad_to_multiple(t, self.pad_multiple)
        fused, ids = self.run(v[None], t[None])         # 1 x H x W x 3, 1 x H x W uint8
        fused, ids = imaging.unpad(fused[0], pad), imaging.unpad(ids[0], pad)
        check_outputs(fused, ids, self.num_classes)  # every consumer: node, fuse, bag eval
        return fused, ids

    def _infer_padded(self, vis, ir):
        """The ``ssvif-model/1`` path: pad, lay out and round on the host (class docstring)."""
        vis = np.asarray(vis)
        vis = vis if vis.dtype.kind == 'f' else imaging.visible_to_float(vis)
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
        return imaging.to_uint8(fused), ids
