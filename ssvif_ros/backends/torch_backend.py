"""PyTorch backend: the F + H graph straight from a training checkpoint (imports torch)."""
from __future__ import annotations

from typing import Optional
import warnings

from ssvif_ros import model_card
from ssvif_ros.backends.base import BackendError, GraphBackend


class TorchBackend(GraphBackend):
    """Runs the deployed graph of :mod:`ssvif_train.deploy` from a checkpoint (cpu or cuda)."""

    name = 'torch'

    def __init__(self, model: Optional[str], threads: int = 2, device: Optional[str] = None):
        import torch
        from ssvif_train.deploy import FrameGraph, load_graph
        path, card = model_card.locate(model, 'pt')
        graph, info = load_graph(path, card.get('seg_upsample', 'bilinear'))
        # Frames in, images out, whatever the card's format: the graph is built here.
        graph = FrameGraph(graph).eval()
        n = graph.num_classes
        card = dict(card) or {}
        carded = 'pad_multiple' in card
        card.setdefault('pad_multiple', graph.pad_multiple)
        card.setdefault('num_classes', n)
        card.setdefault('model', {'name': info['model_name']})
        super().__init__(card)
        if carded:
            self.check_pad_multiple(graph.pad_multiple, path)
        self.device = torch.device(device or 'cpu')
        if self.device.type == 'cuda' and not torch.cuda.is_available():
            raise BackendError('torch backend: device cuda requested but CUDA is not available')
        if self.device.type == 'cpu':
            torch.set_num_threads(int(threads))
        self.torch = torch
        self.graph = graph.to(self.device)
        self.model_info['file'] = path

    def run(self, vis, ir):
        """Run the frame graph without gradients (1 x H x W x 3 uint8, 1 x H x W float32)."""
        torch = self.torch
        with warnings.catch_warnings():
            # A frame decoded from a message is a read-only view; the graph never writes it.
            warnings.simplefilter('ignore', UserWarning)
            vis, ir = torch.from_numpy(vis), torch.from_numpy(ir)
        with torch.inference_mode():
            fused, ids = self.graph(vis.to(self.device), ir.to(self.device))
        return fused.cpu().numpy(), ids.cpu().numpy()
