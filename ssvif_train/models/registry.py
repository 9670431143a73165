"""Model registry: ``create_model(name, **cfg)`` and self-describing checkpoints."""
from __future__ import annotations

import os
from typing import Callable, Dict

_REGISTRY: Dict[str, Callable] = {}


def register(name: str):
    """Class decorator adding a model constructor to the registry under ``name``."""
    def deco(cls):
        if name in _REGISTRY:
            raise ValueError(f'model name {name!r} registered twice')
        _REGISTRY[name] = cls
        return cls
    return deco


def available_models():
    """Sorted names of every registered model."""
    _import_builtin()
    return sorted(_REGISTRY)


def model_class(name: str) -> Callable:
    """The constructor registered under ``name``; KeyError naming the available ones."""
    _import_builtin()
    if name not in _REGISTRY:
        raise KeyError(f'unknown model {name!r}; available: {", ".join(sorted(_REGISTRY))}')
    return _REGISTRY[name]


def create_model(name: str, **cfg):
    """Build a registered model; the instance remembers ``name`` and ``cfg`` for checkpoints."""
    _import_builtin()
    if name not in _REGISTRY:
        raise KeyError(f'unknown model {name!r}; available: {", ".join(sorted(_REGISTRY))}')
    try:
        model = _REGISTRY[name](**cfg)
    except TypeError as exc:
        raise TypeError(f'bad configuration for model {name!r}: {exc}') from exc
    model.model_name = name
    model.model_config = dict(cfg)
    return model


def model_record(model) -> dict:
    """The part of a checkpoint that rebuilds ``model``: name, config and weights."""
    return {'model_name': model.model_name, 'model_config': dict(model.model_config),
            'state_dict': model.state_dict()}


def model_from_record(record: dict):
    """Rebuild a model saved with :func:`model_record` and load its weights."""
    model = create_model(record['model_name'], **record['model_config'])
    model.load_state_dict(record['state_dict'])
    return model


def load_model(path, map_location='cpu'):
    """The fusion model of a training or deployment checkpoint (``weights_only=True``).

    A checkpoint holds ``{'fusion': model_record(model), ...}``; a bare :func:`model_record`
    also loads. Returns the fusion model in eval mode. Raises FileNotFoundError / ValueError
    naming the path.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    ckpt = torch_load_checked(path, map_location)
    rec = ckpt.get('fusion', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(rec, dict) or 'model_name' not in rec:
        raise ValueError(f'{path} is not an ssvif checkpoint (no model name/config inside)')
    model = record_to_model_checked(rec, path)
    model.eval()
    return model


def load_error_reason(exc: BaseException) -> str:
    """One line saying why ``torch.load`` failed, without torch's advice to unpickle anyway."""
    text = str(exc)
    if 'Weights only load failed' in text or 'weights_only' in text:
        return 'it holds objects other than tensors and plain data (refused, never unpickled)'
    if 'central directory' in text or 'zip archive' in text:
        return 'the file is truncated or damaged (not a complete zip archive)'
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


# First bytes of the files torch.save writes: a zip archive (the default since torch 1.6) or a
# bare pickle (the legacy format); anything else is not a checkpoint at all.
_CHECKPOINT_MAGIC = (b'PK\x03\x04', b'\x80')
_OTHER_MAGIC = ((b'\x89PNG', 'a PNG image'), (b'\xff\xd8\xff', 'a JPEG image'),
                (b'II*\x00', 'a TIFF image'), (b'MM\x00*', 'a TIFF image'))


def _not_a_checkpoint(path: str) -> str:
    """Why ``path`` is no torch checkpoint at all, judged by its first bytes ('' if it may be)."""
    try:
        with open(path, 'rb') as f:
            head = f.read(8)
    except OSError:
        return ''
    if head.startswith(_CHECKPOINT_MAGIC):
        return ''
    kind = next((name for magic, name in _OTHER_MAGIC if head.startswith(magic)), '')
    return ('it is not a PyTorch checkpoint' + (f' but {kind}' if kind else '')
            + ' (torch.save writes a zip archive)')


def torch_load_checked(path, map_location='cpu'):
    """``torch.load(weights_only=True)``; ValueError naming the file and the reason."""
    import torch
    path = os.fspath(path)
    try:
        if os.path.getsize(path) == 0:
            raise ValueError(f'cannot read checkpoint {path}: the file is empty')
        return torch.load(path, map_location=map_location, weights_only=True)
    except ValueError as exc:
        if str(exc).startswith('cannot read checkpoint'):
            raise
        why = _not_a_checkpoint(path) or load_error_reason(exc)
        raise ValueError(f'cannot read checkpoint {path}: {why}') from None
    except Exception as exc:  # noqa: BLE001 - any unpickling/zip/I/O error is a bad file
        why = _not_a_checkpoint(path) or load_error_reason(exc)
        raise ValueError(f'cannot read checkpoint {path}: {why}') from None


def record_to_model_checked(record, path):
    """:func:`model_from_record`; ValueError naming the file when the record does not fit."""
    try:
        return model_from_record(record)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        first = (text.strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f'checkpoint {path} does not rebuild its model: {first}') from None


class _WriteErrorKeeper:
    """A file wrapper that remembers the OSError of a failed write.

    torch.save reports a full disk only as 'unexpected pos'; this keeps the system's reason.
    """

    def __init__(self, f):
        self.f = f
        self.error = None

    def write(self, data):
        try:
            return self.f.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self):
        return self.f.flush()


def atomic_torch_save(obj, path) -> None:
    """``torch.save`` to ``path`` via a temporary file in the same folder and ``os.replace``.

    A failed write raises OSError with the system's reason; ``path`` is then unchanged.
    """
    import torch
    path = os.fspath(path)
    d = os.path.dirname(path) or '.'
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f'.{os.path.basename(path)}.tmp{os.getpid()}')
    try:
        with open(tmp, 'wb') as f:
            keeper = _WriteErrorKeeper(f)
            try:
                torch.save(obj, keeper)
            except RuntimeError:
                if keeper.error is not None:
                    raise keeper.error from None
                raise
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)


_BUILTIN_DONE = False


def _import_builtin():
    global _BUILTIN_DONE
    if _BUILTIN_DONE:
        return
    _BUILTIN_DONE = True
    import importlib
    for mod in ('seafusion', 'swinfusion', 'rtfusion', 'segfanet', 'emma'):
        try:
            importlib.import_module(f'ssvif_train.models.{mod}')
        except ModuleNotFoundError as exc:
            if exc.name != f'ssvif_train.models.{mod}':
                raise
