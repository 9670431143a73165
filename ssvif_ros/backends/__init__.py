"""Inference backends behind one interface, used by the node and every tool.

``create_backend(name, model=None, threads=2)`` returns a :class:`Backend` whose
``infer(vis, ir)`` takes the uint8 H x W x 3 RGB visible image and the float32 H x W thermal
plane in [0, 1], registered to each other (:mod:`ssvif_ros.frames` makes them; a float visible
image in [0, 1] and an H x W x 3 thermal image of three equal planes are accepted too), and
returns ``(fused, class_ids)``: uint8 H x W x 3 RGB and uint8 H x W. Each backend expands the
thermal plane to what its model needs. Names:

* ``identity``: fused = visible, class ids all 0 (measures transport, conversion and pairing);
* ``maxluma``: the trivial rule, visible with Y replaced by max(Y, IR), class ids all 0;
* ``torch``: a training checkpoint (imports torch);
* ``onnxruntime``: an exported ONNX model (CPU; CUDA / TensorRT execution providers if present);
* ``tensorrt``: a serialized TensorRT engine.

This module is the registry: it points at the backend modules (imported when a backend is
created), which point at :mod:`ssvif_ros.backends.base`; nothing points back.
"""
from __future__ import annotations

import importlib
from typing import Callable, Dict, NamedTuple, Optional, Tuple

from ssvif_ros.backends.base import Backend, BackendError, error_reason, OutputError

__all__ = ['Backend', 'BackendError', 'create_backend', 'names', 'needs_model', 'OutputError',
           'register']


class _Entry(NamedTuple):
    factory: Callable[[Optional[str], int, Optional[str]], Backend]
    needs_model: bool


def _lazy(module: str, cls: str, with_threads: bool = True):
    def make(model, threads, device, **options):
        backend_cls = getattr(importlib.import_module(f'ssvif_ros.backends.{module}'), cls)
        if with_threads:
            return backend_cls(model, threads=threads, device=device, **options)
        return backend_cls(model, device=device, **options)
    return make


def _simple(cls: str):
    def make(model, threads, device):
        from ssvif_ros.backends import simple
        return getattr(simple, cls)()
    return make


_REGISTRY: Dict[str, _Entry] = {
    'identity': _Entry(_simple('IdentityBackend'), False),
    'maxluma': _Entry(_simple('MaxLumaBackend'), False),
    'torch': _Entry(_lazy('torch_backend', 'TorchBackend'), True),
    'onnxruntime': _Entry(_lazy('ort_backend', 'OrtBackend'), True),
    'tensorrt': _Entry(_lazy('trt_backend', 'TensorRTBackend', with_threads=False), True),
}


# backend -> its constructor keywords for a precision other than fp32
PRECISION_OPTION = {'torch': lambda p: {'precision': p},
                    'tensorrt': lambda p: {'fp16': p == 'fp16'}}


def names() -> Tuple[str, ...]:
    """The backend names, in registration order."""
    return tuple(_REGISTRY)


def needs_model(name: str) -> bool:
    """True when backend ``name`` loads a model (False for identity and maxluma)."""
    return _REGISTRY[name].needs_model if name in _REGISTRY else True


def register(name: str, factory: Callable[[Optional[str], int, Optional[str]], Backend],
             needs_model: bool = True) -> None:
    """Add a backend: ``factory(model, threads, device)`` returns a :class:`Backend`."""
    _REGISTRY[name] = _Entry(factory, bool(needs_model))


def create_backend(name: str, model: Optional[str] = None, threads: int = 2,
                   device: Optional[str] = None, precision: str = 'fp32') -> Backend:
    """Create and warm up the backend ``name`` for ``model`` (checkpoint, ONNX, engine, dir).

    ``precision`` fp16: torch autocast on CUDA, or a TensorRT FP16 engine; ONNX Runtime runs
    the exported graph as it is (fp32). Raises BackendError with a message naming the backend
    or the model file at fault.
    """
    if name not in _REGISTRY:
        raise BackendError(f'unknown backend {name!r}; choose one of {sorted(_REGISTRY)}')
    if threads < 1:
        raise BackendError(f'threads must be >= 1, got {threads}')
    if precision not in ('fp32', 'fp16'):
        raise BackendError(f'precision must be fp32 or fp16, got {precision!r}')
    options = {}
    if precision != 'fp32':
        if name not in PRECISION_OPTION:
            raise BackendError(f'precision {precision} is an option of the '
                               f'{" and ".join(PRECISION_OPTION)} backends, not {name!r}')
        options = PRECISION_OPTION[name](precision)
    try:
        backend = _REGISTRY[name].factory(model, threads, device, **options)
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
