"""Backend interface and the two model-free backends (identity, maxluma)."""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

from ssvif_ros import imaging


class BackendError(RuntimeError):
    """A backend cannot be created (missing/corrupt model, missing runtime, no GPU)."""


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
        """Fuse float H x W x 3 ``vis`` and ``ir`` -> (fused float H x W x 3, ids uint8 H x W)."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line naming backend and model, for logs and diagnostics."""
        return f'{self.name}:{self.model_info.get("name", "?")}'


class IdentityBackend(Backend):
    """fused = visible, all class ids 0: the cost of everything around inference."""

    name = 'identity'

    def __init__(self):
        super().__init__()
        self.model_info = {'name': 'identity'}

    def infer(self, vis, ir):
        """Return the visible image unchanged and a zero class map."""
        return vis, np.zeros(vis.shape[:2], np.uint8)


class MaxLumaBackend(Backend):
    """The trivial rule every learned model is judged against (Y replaced by max(Y, IR))."""

    name = 'maxluma'

    def __init__(self):
        super().__init__()
        self.model_info = {'name': 'maxluma'}

    def infer(self, vis, ir):
        """Visible with its luma replaced by max(luma, thermal); zero class map."""
        return imaging.max_luma_fusion(vis, ir), np.zeros(vis.shape[:2], np.uint8)


def _make_torch(model, threads, device):
    from ssvif_ros.backends.torch_backend import TorchBackend
    return TorchBackend(model, threads=threads, device=device)


def _make_ort(model, threads, device):
    from ssvif_ros.backends.ort_backend import OrtBackend
    return OrtBackend(model, threads=threads, device=device)


def _make_trt(model, threads, device):
    from ssvif_ros.backends.trt_backend import TensorRTBackend
    return TensorRTBackend(model, device=device)


BACKENDS = {
    'identity': lambda model, threads, device: IdentityBackend(),
    'maxluma': lambda model, threads, device: MaxLumaBackend(),
    'torch': _make_torch,
    'onnxruntime': _make_ort,
    'tensorrt': _make_trt,
}


def create_backend(name: str, model: Optional[str] = None, threads: int = 2,
                   device: Optional[str] = None) -> Backend:
    """Create the backend ``name`` for ``model`` (a checkpoint, ONNX file, engine or model dir).

    Raises BackendError with a message naming the backend or the model file at fault.
    """
    if name not in BACKENDS:
        raise BackendError(f'unknown backend {name!r}; choose one of {sorted(BACKENDS)}')
    if threads < 1:
        raise BackendError(f'threads must be >= 1, got {threads}')
    try:
        backend = BACKENDS[name](model, threads, device)
        if isinstance(backend, GraphBackend):
            backend.warm_up()
        return backend
    except BackendError:
        raise
    except ModuleNotFoundError as exc:
        raise BackendError(f'backend {name!r} needs the Python module {exc.name!r}, '
                           'which is not installed') from exc
    except Exception as exc:  # noqa: BLE001 - any failure here is a model/device that won't run
        raise BackendError(f'backend {name!r} cannot load model {model or "(default)"}: '
                           f'{error_reason(exc)}') from exc


def error_reason(exc: BaseException) -> str:
    """The first line of an exception's message (KeyError unquoted; the type when empty)."""
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


# Warm-up pair size: odd and not a multiple of anything, so a wrong pad_multiple shows at start.
WARM_UP_HW = (37, 53)


class GraphBackend(Backend):
    """Shared pre/post-processing of every model backend (torch, ONNX Runtime, TensorRT).

    Pads both inputs to the model's multiple (:func:`imaging.pad_to_multiple`), converts them to
    1 x 3 x H x W, calls :meth:`run`, and crops the outputs back, so every backend sees and
    returns exactly the same tensors.
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
        ir = np.repeat(rng.random((h, w, 1), dtype=np.float32), 3, axis=2)
        try:
            fused, ids = self.infer(vis, ir)
        except Exception as exc:  # noqa: BLE001 - ORT, torch and TensorRT errors alike
            raise ValueError(f'warm-up inference on a {w}x{h} pair failed (pad_multiple '
                             f'{self.pad_multiple}): {error_reason(exc)}') from None
        if fused.shape != (h, w, 3) or ids.shape != (h, w):
            raise ValueError(f'warm-up inference on a {w}x{h} pair returned fused '
                             f'{tuple(fused.shape)} and class ids {tuple(ids.shape)}, expected '
                             f'{(h, w, 3)} and {(h, w)}')
        if not np.isfinite(fused).all():
            raise ValueError('warm-up inference returned NaN or Inf in the fused image')
        if ids.size and int(ids.max()) >= self.num_classes:
            raise ValueError(f'warm-up inference returned class id {int(ids.max())}, but the '
                             f'model card has {self.num_classes} classes')

    def infer(self, vis, ir):
        """Pad, run the graph, crop: float H x W x 3 pair -> (fused float, ids uint8)."""
        v, pad = imaging.pad_to_multiple(np.asarray(vis, np.float32), self.pad_multiple)
        t, _ = imaging.pad_to_multiple(np.asarray(ir, np.float32), self.pad_multiple)
        v = np.ascontiguousarray(v.transpose(2, 0, 1))[None]  # 1 x 3 x H' x W'
        t = np.ascontiguousarray(t.transpose(2, 0, 1))[None]
        fused, ids = self.run(v, t)
        fused = imaging.unpad(np.asarray(fused[0], np.float32).transpose(1, 2, 0), pad)
        ids = imaging.unpad(np.asarray(ids[0]).astype(np.uint8, copy=False), pad)
        return fused, ids


def resolve_model(model: Optional[str], kind: str) -> Tuple[str, Dict]:
    """Find the file of ``kind`` ('onnx', 'pt', 'engine') for a model dir or file; load its card.

    ``model`` None or '' means the embedded default model. Returns (file path, card dict).
    """
    import os
    if not model:
        from ssvif_ros.models import default_model_dir
        model = default_model_dir()
    if os.path.isdir(model):
        folder = model
        card_path = os.path.join(folder, 'model.json')
        if not os.path.isfile(card_path):
            raise FileNotFoundError(f'model folder {folder} has no model.json')
        card = _read_card(card_path)
        name = {'onnx': card.get('onnx', 'model.onnx'),
                'pt': card.get('checkpoint_file', 'model.pt'),
                'engine': card.get('onnx', 'model.onnx')}[kind]
        path = os.path.join(folder, name)
    else:
        path = model
        card_path = os.path.join(os.path.dirname(path) or '.', 'model.json')
        card = _read_card(card_path) if os.path.isfile(card_path) else {}
    if not os.path.isfile(path):
        raise FileNotFoundError(f'model file not found: {path}')
    return path, card


def _read_card(path: str) -> Dict:
    import json
    try:
        with open(path, encoding='utf-8') as f:
            card = json.load(f)
    except (OSError, ValueError) as exc:
        raise ValueError(f'cannot read model card {path}: {exc}') from exc
    if not isinstance(card, dict):
        raise ValueError(f'model card {path} is not a JSON object')
    validate_card(card, path)
    return card


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def validate_card(card: Dict, path: str) -> None:
    """Check the types and ranges of the card fields the backends use; ValueError naming them."""
    def bad(field, why):
        raise ValueError(f'model card {path}: {field} {why}, got {card.get(field)!r}')
    if 'pad_multiple' in card:
        m = card['pad_multiple']
        if not _is_int(m) or not 1 <= m <= 1024:
            bad('pad_multiple', 'must be an integer in 1..1024')
    n = card.get('num_classes', 1)
    if not _is_int(n) or not 1 <= n <= 256:
        bad('num_classes', 'must be an integer in 1..256 (class ids are uint8)')
    names = card.get('class_names')
    if names is not None:
        if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
            bad('class_names', 'must be a list of strings')
        if len(names) != n:
            bad('class_names', f'must have num_classes ({n}) entries')
    pal = card.get('palette')
    if pal is not None:
        ok = (isinstance(pal, list) and len(pal) == n and all(
            isinstance(c, list) and len(c) == 3 and all(_is_int(v) and 0 <= v <= 255 for v in c)
            for c in pal))
        if not ok:
            bad('palette', f'must be num_classes ({n}) [r, g, b] triples of integers 0..255')
    for field in ('model', 'inputs', 'outputs'):
        if field in card and not isinstance(card[field], dict):
            bad(field, 'must be a JSON object')
    for field in ('onnx', 'checkpoint_file'):
        if field in card and not (isinstance(card[field], str) and card[field]):
            bad(field, 'must be a file name')
