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
        return BACKENDS[name](model, threads, device)
    except BackendError:
        raise
    except ModuleNotFoundError as exc:
        raise BackendError(f'backend {name!r} needs the Python module {exc.name!r}, '
                           'which is not installed') from exc
    except (FileNotFoundError, ValueError) as exc:
        raise BackendError(f'backend {name!r} cannot load model {model!r}: {exc}') from exc
