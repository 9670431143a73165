"""PyTorch backend: the F + H graph straight from a training checkpoint (imports torch)."""
from __future__ import annotations

from typing import Optional

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
        from ssvif_train.deploy import load_graph
        path, card = model_card.locate(model, 'pt')
        graph, info = load_graph(path, card.get('seg_upsample', 'bilinear'))
        n = graph.num_classes
        if card and card.get('num_classes', n) != n:
            raise ValueError(f'the model card beside {path} says num_classes '
                             f'{card["num_classes"]}, but the checkpoint has {n} classes')
        card = dict(card) or {}
        card.setdefault('pad_multiple', graph.pad_multiple)
        card.setdefault('num_classes', n)
        card.setdefault('model', {'name': info['model_name']})
        super().__init__(card)
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
        """Run the graph without gradients on 1 x 3 x H x W inputs (fp16 autocast on request)."""
        torch = self.torch
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.float16,
                                                    enabled=self.precision == 'fp16'):
            fused, ids = self.graph(torch.from_numpy(vis).to(self.device),
                                    torch.from_numpy(ir).to(self.device))
        return fused.float().cpu().numpy(), ids.cpu().numpy()


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
