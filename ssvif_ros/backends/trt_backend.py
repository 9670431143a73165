"""TensorRT backend: a serialized engine built from the model's ONNX (needs TensorRT + CUDA)."""
from __future__ import annotations

from typing import Optional

from ssvif_ros import model_card
from ssvif_ros.backends.base import BackendError, GraphBackend


class TensorRTBackend(GraphBackend):
    """Runs an engine file, or builds/reuses the cached engine of a model folder's ONNX."""

    name = 'tensorrt'

    def __init__(self, model: Optional[str], device: Optional[str] = None, fp16: bool = False):
        from ssvif_ros import trt_engine
        try:
            trt_engine.check_available()
        except trt_engine.TensorRTUnavailable as exc:
            raise BackendError(f'tensorrt backend unavailable: {exc}') from exc
        if model and model.endswith('.engine'):
            path, card = model_card.locate(model, 'engine')
        else:
            onnx_path, card = model_card.locate(model, 'engine')
            path = trt_engine.build_engine(onnx_path, fp16=fp16,
                                           pad_multiple=int(card.get('pad_multiple', 8)))
        super().__init__(card)
        self.runner = trt_engine.EngineRunner(path, device)
        self.frame_io = self.runner.frame_io  # from the engine's vis binding (uint8: frames)
        self.model_info['file'] = path
        self.model_info['device'] = device if device and ':' in device else 'cuda:0'

    def run(self, vis, ir):
        """Execute the engine on one batch (frames, or 1 x 3 x H x W floats for /1 engines)."""
        out = self.runner.run(vis, ir)
        return out['fused'], out['class_ids']
