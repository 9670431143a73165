"""ONNX Runtime backend: CPU by default; CUDA / TensorRT execution providers when available."""
from __future__ import annotations

from typing import Optional

from ssvif_ros import model_card
from ssvif_ros.backends.base import BackendError, GraphBackend

_PROVIDERS = {
    None: ['CPUExecutionProvider'],
    'cpu': ['CPUExecutionProvider'],
    'cuda': ['CUDAExecutionProvider', 'CPUExecutionProvider'],
    'tensorrt': ['TensorrtExecutionProvider', 'CUDAExecutionProvider', 'CPUExecutionProvider'],
}


class OrtBackend(GraphBackend):
    """Runs model.onnx with ONNX Runtime (``device``: cpu | cuda | tensorrt)."""

    name = 'onnxruntime'

    def __init__(self, model: Optional[str], threads: int = 2, device: Optional[str] = None):
        import onnxruntime as ort
        path, card = model_card.locate(model, 'onnx')
        carded = 'pad_multiple' in card
        if not card:
            card = {'pad_multiple': 32, 'num_classes': 1}
        super().__init__(card)
        if device not in _PROVIDERS:
            raise BackendError(f'onnxruntime device must be one of cpu, cuda, tensorrt; '
                               f'got {device!r}')
        available = set(ort.get_available_providers())
        wanted = _PROVIDERS[device]
        if wanted[0] not in available:
            raise BackendError(f'ONNX Runtime provider {wanted[0]} is not available here '
                               f'(available: {sorted(available)}); install onnxruntime-gpu '
                               'or use device cpu')
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle intra-op threads sleep instead of spinning: on a robot the node shares its cores
        # with camera drivers and DDS, which spinning threads would starve.
        so.add_session_config_entry('session.intra_op.allow_spinning', '0')
        # ONNX Runtime's own log would print an ERROR line per failed frame, past the node's
        # throttle; its errors arrive as exceptions, which the callers report.
        so.log_severity_level = 4
        try:
            self.session = ort.InferenceSession(path, sess_options=so,
                                                providers=[p for p in wanted if p in available])
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            raise ValueError(f'ONNX Runtime cannot load {path}: {exc}') from exc
        self.frame_io = check_graph(self.session, path)
        graph_multiple = self.session.get_modelmeta().custom_metadata_map.get('pad_multiple')
        if self.frame_io and graph_multiple:
            if carded:
                self.check_pad_multiple(int(graph_multiple), path)
            self.pad_multiple = int(graph_multiple)
        wanted_io = model_card.frame_io(card)
        if wanted_io is not None and wanted_io != self.frame_io:
            raise ValueError(f'{path} does not match its model card: the card says format '
                             f'{card["format"]}, the graph takes '
                             f'{"frames (ssvif-model/2)" if self.frame_io else "padded floats"}'
                             '; re-export the model')
        self.path = path
        self.model_info['file'] = path
        self.model_info['providers'] = self.session.get_providers()

    def run(self, vis, ir):
        """Run the session on one batch (frames, or 1 x 3 x H x W floats for /1 graphs)."""
        fused, ids = self.session.run(['fused', 'class_ids'], {'vis': vis, 'ir': ir})
        return fused, ids


# name -> (ONNX type, rank) of the two graph interfaces (ssvif_train.deploy): frames
# (ssvif-model/2) and padded floats (ssvif-model/1).
FRAME_INPUTS = {'vis': ('tensor(uint8)', 4), 'ir': ('tensor(float)', 3)}
FRAME_OUTPUTS = {'fused': ('tensor(uint8)', 4), 'class_ids': ('tensor(uint8)', 3)}
GRAPH_INPUTS = {'vis': ('tensor(float)', 4), 'ir': ('tensor(float)', 4)}
GRAPH_OUTPUTS = {'fused': ('tensor(float)', 4), 'class_ids': ('tensor(uint8)', 3)}


def check_graph(session, path: str) -> bool:
    """Check the session's inputs and outputs against a graph interface; ValueError if none.

    Returns True for the frame interface (its ``vis`` input is uint8), False for padded floats.
    """
    vis = [t for t in session.get_inputs() if t.name == 'vis']
    frames = bool(vis) and vis[0].type == FRAME_INPUTS['vis'][0]
    inputs, outputs = (FRAME_INPUTS, FRAME_OUTPUTS) if frames else (GRAPH_INPUTS, GRAPH_OUTPUTS)
    channel_axis = 3 if frames else 1
    for kind, want, have in (('input', inputs, session.get_inputs()),
                             ('output', outputs, session.get_outputs())):
        have = {t.name: t for t in have}
        for name, (typ, rank) in want.items():
            if name not in have:
                raise ValueError(f'{path} has no {kind} named {name!r} (its {kind}s: '
                                 f'{", ".join(sorted(have)) or "none"}); expected '
                                 f'{", ".join(want)}')
            t = have[name]
            if t.type != typ or len(t.shape) != rank:
                raise ValueError(f'{path}: {kind} {name!r} is {t.type} of rank {len(t.shape)}, '
                                 f'expected {typ} of rank {rank}')
            if kind == 'input' and rank == 4 and t.shape[channel_axis] not in (3, None) \
                    and not isinstance(t.shape[channel_axis], str):
                raise ValueError(f'{path}: input {name!r} has {t.shape[channel_axis]} channels, '
                                 'expected 3')
    extra = [t.name for t in session.get_inputs() if t.name not in inputs]
    if extra:
        raise ValueError(f'{path} needs inputs this node does not feed: {", ".join(extra)}')
    return frames
