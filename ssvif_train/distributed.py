"""Device choice and data-parallel training under ``torchrun`` (DistributedDataParallel).

DDP's reducer only hooks ``loss.backward()``, but the trainer takes the two task gradients with
``torch.autograd.grad``; so it runs the forward pass under ``no_sync`` and :meth:`Dist.allreduce`
averages both task gradients itself before their norms are taken: every rank computes the same
task weights and ends with identical parameters (:meth:`Dist.check_in_sync` verifies it).
Without ``WORLD_SIZE`` > 1 every method is the single-process identity.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from typing import List, Optional

import torch

from ssvif_train.checkpoints import TrainingError, write_atomic


def pick_device(want: str) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda[:i]`` -> torch.device, checked against this machine.

    TrainingError (one line) when it is not a device here. Plain ``cuda`` under torchrun means
    this process's ``LOCAL_RANK`` device.
    """
    if want == 'auto':
        want = 'cuda' if torch.cuda.is_available() else 'cpu'
    try:
        dev = torch.device(want)
    except RuntimeError:
        raise TrainingError(f'train.device must be auto, cpu, cuda or cuda:N, got {want!r}') \
            from None
    if dev.type not in ('cpu', 'cuda'):
        raise TrainingError(f'train.device must be auto, cpu, cuda or cuda:N, got {want!r}')
    if dev.type == 'cuda':
        if not torch.cuda.is_available():
            raise TrainingError(f'train.device={want} but CUDA is not available '
                                f'(torch {torch.__version__}); use train.device=cpu')
        n = torch.cuda.device_count()
        if dev.index is None:
            local = int(os.environ.get('LOCAL_RANK', 0))
            if local >= n:
                raise TrainingError(ranks_fit_error('cuda', local + 1, n))
            dev = torch.device('cuda', local)
        elif dev.index >= n:
            raise TrainingError(f'train.device={want}: this machine has {n} CUDA device(s) '
                                f'(cuda:0 .. cuda:{n - 1})')
        torch.cuda.set_device(dev)
    return dev


def ranks_fit_error(want: str, local_ranks: int, gpus: int) -> Optional[str]:
    """Why ``local_ranks`` processes on this node cannot each have a GPU, or None.

    ``want`` is train.device; ``auto`` and ``cuda`` give local rank i the GPU cuda:i, so a
    node needs as many GPUs as processes; an explicit ``cuda:N`` would put them all on one.
    """
    if want == 'cpu' or gpus == 0 and want == 'auto':
        return None
    if want.startswith('cuda:') and local_ranks > 1:
        return (f'train.device={want} would put all {local_ranks} torchrun processes of this '
                'node on one GPU; use train.device=cuda (process i on cuda:i) or cpu')
    if local_ranks > gpus:
        return (f'torchrun started {local_ranks} processes on this node but it has {gpus} CUDA '
                f'GPU(s), one per process: use --nproc_per_node {gpus}'
                f'{"" if gpus else " (no GPU)"}, or --set train.device=cpu to train every rank '
                'on CPU (gloo)')
    return None


def set_deterministic(on: bool) -> None:
    """``train.deterministic``: deterministic kernels where torch has them (see training.md).

    Sets torch.use_deterministic_algorithms (warn_only: an op without a deterministic CUDA
    kernel, such as the backward of bilinear upsampling, warns instead of failing), cuDNN's
    deterministic flag, cuDNN benchmarking off, and CUBLAS_WORKSPACE_CONFIG (needed by
    deterministic cuBLAS; read when cuBLAS starts, so this runs before the model is built).
    """
    if on:
        os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
    torch.use_deterministic_algorithms(bool(on), warn_only=True)
    torch.backends.cudnn.deterministic = bool(on)
    torch.backends.cudnn.benchmark = False


class Dist:
    """This process's place in a (possibly one-process) data-parallel job."""

    def __init__(self, device_pref: str):
        self.rank, self.world = 0, 1
        self.enabled = 'WORLD_SIZE' in os.environ and int(os.environ['WORLD_SIZE']) > 1
        if not self.enabled:
            return
        import torch.distributed as dist
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        local = int(os.environ.get('LOCAL_WORLD_SIZE', os.environ['WORLD_SIZE']))
        why = ranks_fit_error(device_pref, local, gpus)
        if why:  # before the process group, so that no rank waits for this one
            raise TrainingError(why)
        backend = 'nccl' if gpus and device_pref != 'cpu' else 'gloo'
        if not dist.is_initialized():
            dist.init_process_group(backend=backend)
        self.rank, self.world = dist.get_rank(), dist.get_world_size()

    def wrap(self, net: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """``net`` in DistributedDataParallel (parameter and buffer broadcast), or ``net``."""
        if not self.enabled:
            return net
        from torch.nn.parallel import DistributedDataParallel as DDP
        return DDP(net, device_ids=[device.index] if device.type == 'cuda' else None)

    def no_sync(self, model):
        """DDP's ``no_sync`` context (the task gradients are averaged by :meth:`allreduce`)."""
        return model.no_sync() if self.enabled else contextlib.nullcontext()

    def allreduce(self, grads: List[Optional[torch.Tensor]], params) -> List[torch.Tensor]:
        """Gradients averaged over ranks, one per parameter (None -> zeros)."""
        out = [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params)]
        if self.enabled:
            import torch.distributed as dist
            flat = torch.cat([g.reshape(-1) for g in out])
            dist.all_reduce(flat)
            flat /= self.world
            out, i = [], 0
            for p in params:
                out.append(flat[i:i + p.numel()].view_as(p))
                i += p.numel()
        return out

    def mean_scalar(self, value: float, device: torch.device) -> float:
        """The mean of ``value`` over ranks."""
        if not self.enabled:
            return value
        import torch.distributed as dist
        t = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return float(t.item() / self.world)

    def sync_buffers(self, net: torch.nn.Module) -> None:
        """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

        DDP broadcasts buffers at the start of each forward, so after the last step of an epoch
        each rank holds statistics of its own last batch; validation and checkpoints use rank 0's.
        """
        if not self.enabled:
            return
        import torch.distributed as dist
        for b in net.buffers():
            dist.broadcast(b.data, src=0)

    def check_in_sync(self, net: torch.nn.Module, out_dir: str) -> None:
        """Gather a digest of every rank's parameters; write ranks.json; fail if they differ.

        Ends the process group.
        """
        if not self.enabled:
            return
        import torch.distributed as dist
        h = hashlib.sha256()
        for t in list(net.state_dict().values()):
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        digests = [None] * self.world
        dist.all_gather_object(digests, h.hexdigest())
        failed = None
        if self.rank == 0:  # a failed write is raised after the barrier: no rank waits forever
            try:
                write_atomic(os.path.join(out_dir, 'ranks.json'),
                             json.dumps({'world_size': self.world, 'param_digests': digests},
                                        indent=2))
            except TrainingError as exc:
                failed = exc
        dist.barrier()
        dist.destroy_process_group()
        if failed is not None:
            raise failed
        if len(set(digests)) != 1:
            raise TrainingError(f'ranks ended with different parameters: {digests}')
