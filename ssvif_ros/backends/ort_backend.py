"""ONNX Runtime backend: CPU by default; CUDA / TensorRT execution providers when available."""
from __future__ import annotations

from typing import Optional

from ssvif_ros.backends.base import BackendError, GraphBackend, resolve_model

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
        path, card = resolve_model(model, 'onnx')
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
        try:
            self.session = ort.InferenceSession(path, sess_options=so,
                                                providers=[p for p in wanted if p in available])
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            raise ValueError(f'ONNX Runtime cannot load {path}: {exc}') from exc
        self.path = path
        self.model_info['file'] = path
        self.model_info['providers'] = self.session.get_providers()

    def run(self, vis, ir):
        """Run the session on 1 x 3 x H x W inputs."""
        fused, ids = self.session.run(['fused', 'class_ids'], {'vis': vis, 'ir': ir})
        return fused, ids
