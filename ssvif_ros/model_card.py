"""Model cards (``model.json`` beside an exported model): find a model's files, read its card.

A model is a folder (``model.json`` + ``model.onnx`` / ``model.pt`` / engines) or a single file
with an optional ``model.json`` beside it. ROS-free and torch-free; the backends use it.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Dict, Optional, Tuple

CARD_NAME = 'model.json'
# Card formats this package reads, oldest first: /1 graphs take padded N x 3 x H x W floats (the
# backends prepare them on the host), /2 graphs take the frames (ssvif_train.deploy).
FORMATS = ('ssvif-model/1', 'ssvif-model/2')
FRAME_FORMAT = 'ssvif-model/2'
#: Class id a /2 graph gives every pixel of a frame whose fused image held NaN or Inf before
#: the graph rounded it to uint8 (where it could no longer be seen); the backends drop it.
NONFINITE_ID = 255


def locate(model: Optional[str], kind: str) -> Tuple[str, Dict]:
    """Find the file of ``kind`` ('onnx', 'pt', 'engine') for a model dir or file; read its card.

    ``model`` None or '' means the embedded default model. Returns (file path, card dict; empty
    when a single file has no card beside it). Raises FileNotFoundError or ValueError naming
    the file at fault.
    """
    if not model:
        from ssvif_ros.models import default_model_dir
        model = default_model_dir()
    model = os.fspath(model)
    if os.path.isdir(model):
        card_path = os.path.join(model, CARD_NAME)
        if not os.path.isfile(card_path):
            raise FileNotFoundError(f'model folder {model} has no {CARD_NAME}')
        card = read(card_path)
        name = {'onnx': card.get('onnx', 'model.onnx'),
                'pt': card.get('checkpoint_file', 'model.pt'),
                'engine': card.get('onnx', 'model.onnx')}[kind]
        path = os.path.join(model, name)
    else:
        path = model
        card_path = os.path.join(os.path.dirname(path) or '.', CARD_NAME)
        card = read(card_path) if os.path.isfile(card_path) else {}
    if not os.path.isfile(path):
        raise FileNotFoundError(f'model file not found: {path}')
    if card and kind in ('onnx', 'engine'):  # the engine is built from this ONNX file
        check_onnx(path, card, card_path)
    return path, card


def file_sha256(path: str) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def onnx_class_count(path: str) -> Optional[int]:
    """Classes the ONNX graph's class ids come from: the channels its ArgMax reduces.

    None when the python ``onnx`` package is absent, the graph cannot be read or inferred, or
    no ArgMax has a static channel count (ONNX Runtime then reports a broken file itself).
    """
    try:
        import onnx
        graph = onnx.shape_inference.infer_shapes(onnx.load(path)).graph
    except Exception:  # noqa: BLE001 - ImportError, or a file ONNX Runtime will refuse
        return None
    shapes = {v.name: v.type.tensor_type.shape for v in
              list(graph.value_info) + list(graph.input) + list(graph.output)}
    counts = set()
    for node in graph.node:
        if node.op_type != 'ArgMax' or node.input[0] not in shapes:
            continue
        axis = next((a.i for a in node.attribute if a.name == 'axis'), 0)
        dims = shapes[node.input[0]].dim
        if -len(dims) <= axis < len(dims) and dims[axis].HasField('dim_value'):
            counts.add(int(dims[axis].dim_value))
    return counts.pop() if len(counts) == 1 else None


def check_onnx(path: str, card: Dict, card_path: str) -> None:
    """The card belongs to this ONNX file: same SHA-256, same class count; ValueError if not."""
    want = card.get('onnx_sha256')
    if want:
        have = file_sha256(path)
        if have != want:
            raise ValueError(f'{path} does not match its model card {card_path}: onnx_sha256 '
                             f'is {want[:16]}..., the file hashes to {have[:16]}... (a changed '
                             'or replaced file: export it again)')
    n = onnx_class_count(path)
    if n is not None and n != card.get('num_classes', 1):
        raise ValueError(f'model card {card_path} says num_classes {card.get("num_classes", 1)}'
                         f', but {path} emits {n} classes (its ArgMax takes {n} channels)')


def read(path: str) -> Dict:
    """Read and validate a model card; ValueError naming the file and the field at fault."""
    try:
        with open(path, encoding='utf-8') as f:
            card = json.load(f)
    except (OSError, ValueError) as exc:
        raise ValueError(f'cannot read model card {path}: {exc}') from exc
    if not isinstance(card, dict):
        raise ValueError(f'model card {path} is not a JSON object')
    validate(card, path)
    return card


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def validate(card: Dict, path: str) -> None:
    """Check the types and ranges of the card fields the backends use; ValueError naming them."""
    def bad(field, why):
        raise ValueError(f'model card {path}: {field} {why}, got {card.get(field)!r}')
    if 'format' in card and card['format'] not in FORMATS:
        raise ValueError(f'model card {path}: format {card["format"]!r} is not one this '
                         f'ssvif_ros reads ({", ".join(FORMATS)}); update ssvif_ros or '
                         're-export the model with its ssvif-export')
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


def frame_io(card: Dict) -> Optional[bool]:
    """True when the card's graph takes frames (``ssvif-model/2``), False for ``ssvif-model/1``.

    None when the card names no format (a bare model file): the caller asks the graph itself.
    """
    if 'format' not in card:
        return None
    return card['format'] == FRAME_FORMAT
