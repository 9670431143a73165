"""Inference backends behind one interface, used by the node and every tool.

``create_backend(name, model=None, threads=2)`` returns a :class:`Backend` whose
``infer(vis, ir)`` takes float32 H x W x 3 visible and H x W x 3 thermal images in [0, 1] (made by
:func:`ssvif_ros.imaging.preprocess_pair`) and returns ``(fused, class_ids)``: float32 H x W x 3 in
[0, 1] and uint8 H x W. Names:

* ``identity``: fused = visible, class ids all 0 (measures transport, conversion and pairing);
* ``maxluma``: the trivial rule, visible with Y replaced by max(Y, IR), class ids all 0;
* ``torch``: a training checkpoint (imports torch);
* ``onnxruntime``: an exported ONNX model (CPU; CUDA / TensorRT execution providers if present);
* ``tensorrt``: a serialized TensorRT engine.
"""
from ssvif_ros.backends.base import Backend, BackendError, BACKENDS, create_backend  # noqa: F401
