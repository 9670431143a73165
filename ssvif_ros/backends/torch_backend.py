"""PyTorch backend: the F + H graph straight from a training checkpoint (imports torch)."""
from __future__ import annotations

from typing import Optional
import warnings

from ssvif_ros import model_card
from ssvif_ros.backends.base import BackendError, GraphBackend


class TorchBackend(GraphBackend):
    """Runs the deployed graph of :mod:`ssvif_train.deploy` from a checkpoint (cpu or cuda)."""

    name = 'torch'

    def __init__(self, model: Optional[str], threads: int = 2, device: Optional[str] = None,
                 precision: str = 'fp32'):
        import torch
        self.device = torch_device(torch, device)
        if precision not in ('fp32', 'fp16'):
            raise BackendError(f'torch backend: precision must be fp32 or fp16, got {precision!r}')
        if precision == 'fp16' and self.device.type != 'cuda':
            raise BackendError('torch backend: precision fp16 (autocast) needs a CUDA device; '
                               'on CPU use fp32')
        self.precision = precision
        from ssvif_train.deploy import FrameGraph, load_graph
        path, card = model_card.locate(model, 'pt')
        graph, info = load_graph(path, card.get('seg_upsample', 'bilinear'))
        # Frames in, images out, whatever the card's format: the graph is built here.
        graph = FrameGraph(graph).eval()
        n = graph.num_classes
        if card and card.get('num_classes', n) != n:
            raise ValueError(f'the model card beside {path} says num_classes '
                             f'{card["num_classes"]}, but the checkpoint has {n} classes')
        card = dict(card) or {}
        carded = 'pad_multiple' in card
        card.setdefault('pad_multiple', graph.pad_multiple)
        card.setdefault('num_classes', n)
        card.setdefault('model', {'name': info['model_name']})
        super().__init__(card)
        if carded:
            self.check_pad_multiple(graph.pad_multiple, path)
        if self.device.type == 'cpu':
            torch.set_num_threads(int(threads))
        self.torch = torch
        self.graph = graph.to(self.device)
        self.model_info['file'] = path
        self.model_info['device'] = str(self.device)
        self.model_info['precision'] = precision

    def describe(self) -> str:
        """Backend, model, device and precision."""
        return f'{super().describe()} ({self.device}, {self.precision})'

    def run(self, vis, ir):
        """Run the frame graph without gradients (1 x H x W x 3 uint8, 1 x H x W float32).

        With fp16 the network runs under CUDA autocast; the graph's uint8 casts stay exact.
        """
        torch = self.torch
        with warnings.catch_warnings():
            # A frame decoded from a message is a read-only view; the graph never writes it.
            warnings.simplefilter('ignore', UserWarning)
            vis, ir = torch.from_numpy(vis), torch.from_numpy(ir)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.float16,
                                                    enabled=self.precision == 'fp16'):
            fused, ids = self.graph(vis.to(self.device), ir.to(self.device))
        return fused.cpu().numpy(), ids.cpu().numpy()


def torch_device(torch, device: Optional[str]):
    """``None`` | ``cpu`` | ``cuda`` | ``cuda:N`` -> a torch.device of this machine.

    BackendError naming the device and the reason when it is none.
    """
    try:
        dev = torch.device(device or 'cpu')
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ('cpu', 'cuda'):
        raise BackendError(f'torch backend: device must be cpu, cuda or cuda:N, got {device!r}')
    if dev.type == 'cuda':
        if not torch.cuda.is_available():
            raise BackendError(f'torch backend: device {device} requested but CUDA is not '
                               f'available (torch {torch.__version__})')
        n = torch.cuda.device_count()
        if (dev.index or 0) >= n:
            raise BackendError(f'torch backend: device {device}: this machine has {n} CUDA '
                               f'device(s) (cuda:0 .. cuda:{n - 1})')
        dev = torch.device('cuda', dev.index or 0)
    return dev
