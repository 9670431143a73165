"""SSVIF training loop: two stages, CSC, task weighting, logging, checkpoints, resume, DDP.

Stage I trains only the fusion model F with L_fusion; after the first epoch whose mean L_fusion
exceeds the previous epoch's (or ``train.stage1_max_epochs`` epochs) training switches to stage
II, where F, the segmentation head H and SegFormer S train on L_fusion + omega_csc L_csc.

Semantic training (``model.classes: msrs``, labels from pixel masks or boxes, see
:mod:`ssvif_train.data`): in stage II the segmentation task is L_seg = L_csc + L_sup, L_sup the
CE + Dice of H and S on the labelled pixels of the batch (unlabelled pairs and uncertain box
pixels are ignored), and the weighting strategy balances L_fusion against L_seg as it balances
L_fusion against L_csc in the label-free mode. CSC still runs on every pair; its weight within
L_seg ramps up over ``train.csc_ramp_epochs`` stage-II epochs (:func:`csc_ramp`) and
``loss.csc_threshold`` keeps unconfident pseudo labels out.

Model selection: stage I monitors validation L_fusion. When stage II starts, the best value and
the patience counter are reset and stage II monitors ``train.monitor`` (``auto``: validation
box-F1 when the validation pairs have boxes, mIoU when they have pixel labels, else L_fusion), so
``best.pt`` is a stage-II checkpoint whenever stage II ran. Early stopping does not end stage I
when CSC is on (``train.stage1_max_epochs`` does).

Gradients: each step computes the fusion-task and CSC-task gradients separately
(``torch.autograd.grad``), so GDWA gets the gradient norms on the shared fusion parameters, the
logs get alpha_cf and cos(phi) (paper appendix C), and the update is a * g_fusion + b * g_csc
with (a, b) from the weighting strategy: two backward passes, the same count as one backward of
the total loss plus one for the norms. Under ``torchrun`` the modules are wrapped in
DistributedDataParallel (parameter and buffer broadcast), and because DDP's reducer only hooks
``loss.backward()``, the trainer all-reduces (averages) both task gradients itself before the
norms are taken, so every rank computes the same weights and ends with identical parameters.
"""
from __future__ import annotations

import contextlib
import csv
import glob
import io
import json
import logging
import math
import os
import time
from typing import Dict, List, Optional

import numpy as np
import torch
from torch import nn

from ssvif_ros import imaging, labels, metrics
from ssvif_train import losses
from ssvif_train.config import Config, config_from_dict
from ssvif_train.data import build_datasets
from ssvif_train.models.registry import (atomic_torch_save, create_model, model_record,
                                         torch_load_checked)
from ssvif_train.models.segmentation import SegFormerSeg, SegHead
from ssvif_train.weighting import create_weighting, csc_ramp

log = logging.getLogger('ssvif_train')

CHECKPOINT_FORMAT = 'ssvif-train/1'
STEP_FIELDS = ['global_step', 'epoch', 'stage', 'loss_total', 'loss_fusion', 'int', 'grad',
               'ssim', 'color', 'loss_csc', 'ce_a', 'dice_a', 'ce_b', 'dice_b', 'loss_sup',
               'sup_ce_a', 'sup_dice_a', 'sup_ce_b', 'sup_dice_b', 'csc_ramp', 'omega_csc',
               'g_a', 'g_b', 'r_a', 'r_b', 'alpha_cf', 'cos_phi', 'lr']
EPOCH_FIELDS = ['epoch', 'stage', 'train_fusion', 'train_csc', 'val_fusion', 'omega_csc',
                'g_a', 'g_b', 'r_a', 'r_b', 'alpha_cf', 'cos_phi', 'seconds']


# What a run folder holds; any of these means the folder holds a run (refused without --resume or
# --overwrite, and removed by --overwrite). Nothing else in the folder is touched.
RUN_FILES = ('last.pt', 'best.pt', 'steps.csv', 'epochs.csv', 'config.json', 'dataset.txt',
             'ranks.json')
RUN_DIRS = ('tb',)


class TrainingError(RuntimeError):
    """Training cannot start or continue; the message says why."""


def should_switch(epoch_means: List[float], stage1_epochs: int, cap: int) -> bool:
    """Stage I -> II rule: the last epoch's mean L_fusion rose, or the cap is reached."""
    if stage1_epochs >= cap:
        return True
    return len(epoch_means) >= 2 and epoch_means[-1] > epoch_means[-2]


class SSVIFNet(nn.Module):
    """F, and in CSC mode H and S, as one module (one DDP wrapper, one state)."""

    def __init__(self, cfg: Config):
        super().__init__()
        args = dict(cfg.model.args)
        if not cfg.data.three_channel:
            args['channels'] = 1
        self.three_channel = cfg.data.three_channel
        self.fusion = create_model(cfg.model.name, **args)
        self.head = None
        self.seg = None
        if cfg.train.csc:
            self.head = SegHead(self.fusion.feature_channels, cfg.model.num_classes,
                                cfg.model.head_hidden, cfg.model.head_padding)
            self.seg = SegFormerSeg(cfg.model.segformer, cfg.model.num_classes)

    def fuse(self, vis: torch.Tensor, ir: torch.Tensor):
        """Fused RGB N x 3 x H x W and seg features, padding to the model's multiple."""
        h, w = vis.shape[-2:]
        m = self.fusion.pad_multiple
        if self.three_channel:
            vis_in, ir_in = vis, ir
        else:
            ir_in = ir[:, :1]                                        # N x 1 x H x W
            vis_in = imaging.rgb_to_gray(vis, channel_axis=1)[:, None]  # N x 1 x H x W
        ir_p, pad = imaging.pad_to_multiple(ir_in, m)
        vis_p, _ = imaging.pad_to_multiple(vis_in, m)
        fused, feats = self.fusion.forward_with_features(vis_p, ir_p)
        fused = imaging.unpad(fused, pad)[..., :h, :w]
        if not self.three_channel:
            # Single-channel ablation: the fused luma takes the visible image's chroma.
            ycc = imaging.rgb_to_ycbcr(vis, channel_axis=1)
            ycc = torch.cat([fused, ycc[:, 1:]], dim=1)
            fused = imaging.ycbcr_to_rgb(ycc, channel_axis=1).clamp(0.0, 1.0)
        return fused, feats

    def forward(self, vis: torch.Tensor, ir: torch.Tensor, stage2: bool):
        """Return (fused, logits_a or None, logits_b or None)."""
        fused, feats = self.fuse(vis, ir)
        if not stage2 or self.head is None:
            return fused, None, None
        return fused, self.head(feats), self.seg(fused)


def _head_record(head: SegHead, cfg: Config) -> Optional[dict]:
    if head is None:
        return None
    return {'in_channels': head.net[0].in_channels, 'num_classes': cfg.model.num_classes,
            'hidden': cfg.model.head_hidden, 'padding_mode': head.padding_mode,
            'classes': cfg.model.classes, 'state_dict': head.state_dict()}


class Trainer:
    """Runs one training job into ``out_dir``; see the module docstring."""

    def __init__(self, cfg: Config, out_dir: str, resume: bool = False,
                 overrides: tuple = (), overwrite: bool = False):
        self.out_dir = out_dir
        self.rank, self.world = 0, 1
        self.distributed = 'WORLD_SIZE' in os.environ and int(os.environ['WORLD_SIZE']) > 1
        ckpt = None
        # The global rank is known from the environment before the process group exists: only
        # rank 0 prepares the folder, the others would see rank 0's first files as a 'run'.
        if int(os.environ.get('RANK', 0)) == 0:
            prepare_run_dir(out_dir, resume, overwrite)
        if resume:
            ckpt = read_checkpoint(os.path.join(out_dir, 'last.pt'))
            # The saved configuration wins; only command-line overrides apply on top.
            cfg = config_from_dict(ckpt['config'], overrides)
        self.cfg = cfg
        if cfg.train.threads > 0:
            torch.set_num_threads(cfg.train.threads)
        self._init_distributed()
        self.device = self._pick_device()
        torch.manual_seed(cfg.data.seed)
        self.train_ds, self.val_ds, self.report = build_datasets(cfg)
        if len(self.train_ds) < 1:
            raise TrainingError('the training split is empty')
        self.semantic = cfg.model.classes == 'msrs'
        if self.semantic and set(self.train_ds.kinds) == {'none'}:
            raise TrainingError('model.classes msrs needs labels, but no training pair has a '
                                'pixel label or a box file (data.labels, data.boxes)')
        self.net = SSVIFNet(cfg).to(self.device)
        self.params_shared = [p for p in self.net.fusion.parameters() if p.requires_grad]
        self.params_other = [p for m in (self.net.head, self.net.seg) if m is not None
                             for p in m.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.params_shared + self.params_other,
                                          lr=cfg.train.lr)
        self.weighting = create_weighting(cfg.weighting)
        # Mixed precision: fp16 autocast + GradScaler on CUDA; bf16 on CPU only on request.
        self.use_amp = (cfg.train.amp and self.device.type == 'cuda') or \
            (cfg.train.amp_cpu and self.device.type == 'cpu')
        self.amp_dtype = torch.float16 if self.device.type == 'cuda' else torch.bfloat16
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.use_amp)
        self.model = self.net
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP
            ids = [self.device.index] if self.device.type == 'cuda' else None
            self.model = DDP(self.net, device_ids=ids)
        self.lambdas = losses.fusion_lambdas(cfg.loss)
        self.epoch = 0
        self.stage = 1 if (cfg.train.two_stage and cfg.train.csc) else 2
        if not cfg.train.csc:
            self.stage = 1
        self.stage1_epochs = 0
        self.stage1_means: List[float] = []
        self.best_val = math.inf
        self.best_epoch = 0
        self.bad_epochs = 0
        self.global_step = 0
        self.history: List[Dict] = []
        if ckpt is not None:
            try:
                self._restore(ckpt)
            except (KeyError, TypeError, ValueError, RuntimeError) as exc:
                raise TrainingError(f'--resume: {os.path.join(out_dir, "last.pt")} does not fit '
                                    f'this configuration: {_first_line(exc)}') from None
            if self.rank == 0:
                self._repair_best()
        self.writer = None
        if self.rank == 0:
            try:
                with open(os.path.join(out_dir, 'config.json'), 'w', encoding='utf-8') as f:
                    json.dump(cfg.to_dict(), f, indent=2)
                with open(os.path.join(out_dir, 'dataset.txt'), 'w', encoding='utf-8') as f:
                    f.write(self.report.summary() + '\n')
                    f.write(f'train {len(self.train_ds)} val {len(self.val_ds)}\n')
            except OSError as exc:
                raise TrainingError(f'cannot write to run folder {out_dir}: '
                                    f'{exc.strerror or exc}') from None

    # ------------------------------------------------------------------ setup
    def _init_distributed(self):
        if not self.distributed:
            return
        import torch.distributed as dist
        backend = 'nccl' if torch.cuda.is_available() and self.cfg.train.device != 'cpu' \
            else 'gloo'
        if not dist.is_initialized():
            dist.init_process_group(backend=backend)
        self.rank, self.world = dist.get_rank(), dist.get_world_size()

    def _pick_device(self) -> torch.device:
        want = self.cfg.train.device
        if want == 'auto':
            want = 'cuda' if torch.cuda.is_available() else 'cpu'
        if want.startswith('cuda'):
            if not torch.cuda.is_available():
                raise TrainingError(f'train.device={want} but CUDA is not available '
                                    f'(torch {torch.__version__}); use train.device=cpu')
            if want == 'cuda':
                want = f'cuda:{int(os.environ.get("LOCAL_RANK", 0))}'
            torch.cuda.set_device(torch.device(want))
        return torch.device(want)

    def _restore(self, ckpt: dict):
        self.net.fusion.load_state_dict(ckpt['fusion']['state_dict'])
        if self.net.head is not None and ckpt.get('head'):
            self.net.head.load_state_dict(ckpt['head']['state_dict'])
        if self.net.seg is not None and ckpt.get('seg'):
            self.net.seg.load_state_dict(ckpt['seg']['state_dict'])
        self.optimizer.load_state_dict(ckpt['optimizer'])
        self.weighting.load_state_dict(ckpt['weighting'])
        if ckpt.get('scaler'):
            self.scaler.load_state_dict(ckpt['scaler'])
        st = ckpt['state']
        self.epoch = st['epoch']
        self.stage = st['stage']
        self.stage1_epochs = st['stage1_epochs']
        self.stage1_means = list(st['stage1_means'])
        self.best_val = st['best_val']
        self.best_epoch = st.get('best_epoch', 0)
        self.bad_epochs = st['bad_epochs']
        self.global_step = st['global_step']
        self.history = list(ckpt.get('history', []))
        torch.set_rng_state(ckpt['rng']['torch'])
        if torch.cuda.is_available() and ckpt['rng'].get('cuda') is not None:
            torch.cuda.set_rng_state_all(ckpt['rng']['cuda'])

    def _loader(self, ds, train: bool):
        from torch.utils.data import DataLoader
        from torch.utils.data.distributed import DistributedSampler
        bs = self.cfg.train.batch_size if (train or self.cfg.data.val_crop > 0) else 1
        if self.distributed:
            sampler = DistributedSampler(ds, num_replicas=self.world, rank=self.rank,
                                         shuffle=train, seed=self.cfg.data.seed,
                                         drop_last=train)
            sampler.set_epoch(self.epoch)
        elif train:
            g = torch.Generator()
            g.manual_seed(self.cfg.data.seed * 1000003 + self.epoch)
            sampler = torch.utils.data.RandomSampler(ds, generator=g)
        else:
            sampler = torch.utils.data.SequentialSampler(ds)
        n_local = len(ds) // self.world if train and self.distributed else len(ds)
        drop = train and n_local >= bs
        return DataLoader(ds, batch_size=bs, sampler=sampler, drop_last=drop,
                          num_workers=self.cfg.data.workers,
                          pin_memory=self.device.type == 'cuda')

    # ------------------------------------------------------------------ step
    def _allreduce(self, grads: List[Optional[torch.Tensor]], params) -> List[torch.Tensor]:
        out = [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params)]
        if self.distributed:
            import torch.distributed as dist
            flat = torch.cat([g.reshape(-1) for g in out])
            dist.all_reduce(flat)
            flat /= self.world
            out, i = [], 0
            for p in params:
                out.append(flat[i:i + p.numel()].view_as(p))
                i += p.numel()
        return out

    def _mean_scalar(self, value: float) -> float:
        if not self.distributed:
            return value
        import torch.distributed as dist
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t.item() / self.world)

    def train_step(self, vis: torch.Tensor, ir: torch.Tensor,
                   label: Optional[torch.Tensor] = None) -> Dict[str, float]:
        """One optimisation step on a batch; returns the logged scalars.

        ``label``: N x H x W int64 (255 = ignore) for semantic training, else None.
        """
        stage2 = self.stage == 2
        vis = vis.to(self.device, non_blocking=True)
        ir = ir.to(self.device, non_blocking=True)
        # DDP must not reduce on its own: the two task gradients are averaged in _allreduce.
        nosync = self.model.no_sync() if self.distributed else contextlib.nullcontext()
        with nosync, torch.autocast(self.device.type, dtype=self.amp_dtype,
                                    enabled=self.use_amp):
            fused, logits_a, logits_b = self.model(vis, ir, stage2)
        fused = fused.float()
        f_terms = losses.fusion_terms(fused, vis, ir)
        l_fusion = losses.weighted_fusion(f_terms, self.lambdas)
        # scaler.scale() also initialises the scaler's state that scaler.step() checks.
        scaled = self.scaler.scale(l_fusion)
        scale = self.scaler.get_scale() if self.use_amp else 1.0
        shared, other = self.params_shared, self.params_other
        g_f = torch.autograd.grad(scaled, shared, retain_graph=stage2, allow_unused=True)
        g_f = self._allreduce(list(g_f), shared)
        row = {k: float(v.detach()) for k, v in f_terms.items()}
        row['loss_fusion'] = self._mean_scalar(float(l_fusion.detach()))
        norm_f = math.sqrt(sum(float(g.double().pow(2).sum()) for g in g_f)) / scale
        if stage2:
            c_terms = losses.csc_terms(logits_a, logits_b, tuple(vis.shape[-2:]),
                                       self.cfg.loss.dice_eps, self.cfg.loss.csc_threshold)
            l_csc = losses.csc_total(c_terms)
            l_seg = l_csc
            ramp = 1.0
            if self.semantic and label is not None:
                s_terms = losses.supervised_terms(logits_a, logits_b,
                                                  label.to(self.device, non_blocking=True),
                                                  self.cfg.loss.dice_eps)
                l_sup = losses.supervised_total(s_terms)
                ramp = csc_ramp(self.epoch - self.stage1_epochs, self.cfg.train.csc_ramp_epochs)
                l_seg = l_sup + ramp * l_csc
                row['csc_ramp'] = ramp
                row.update({k: float(v.detach()) for k, v in s_terms.items()})
                row['loss_sup'] = self._mean_scalar(float(l_sup.detach()))
            g_c = torch.autograd.grad(self.scaler.scale(l_seg), shared + other,
                                      allow_unused=True)
            g_c = self._allreduce(list(g_c), shared + other)
            gc_shared = g_c[:len(shared)]
            norm_c = math.sqrt(sum(float(g.double().pow(2).sum()) for g in gc_shared)) / scale
            dot = sum(float((a.double() * b.double()).sum()) for a, b in zip(g_f, gc_shared))
            dot /= scale * scale
            row.update({k: float(v.detach()) for k, v in c_terms.items()})
            row['loss_csc'] = self._mean_scalar(float(l_csc.detach()))
            loss_seg = ramp * row['loss_csc'] + row.get('loss_sup', 0.0)
            a, b = self.weighting.step(norm_f, norm_c, row['loss_fusion'], loss_seg)
            for p, gf, gc in zip(shared, g_f, gc_shared):
                p.grad = a * gf + b * gc
            for p, gc in zip(other, g_c[len(shared):]):
                p.grad = b * gc
            row['alpha_cf'] = dot / (norm_f ** 2) if norm_f > 0 else math.nan
            row['cos_phi'] = dot / (norm_f * norm_c) if norm_f > 0 and norm_c > 0 else math.nan
            row['loss_total'] = a * row['loss_fusion'] + b * loss_seg
            row.update({'omega_csc': self.weighting.last['omega'], 'g_a': norm_f, 'g_b': norm_c,
                        'r_a': self.weighting.last['r_a'], 'r_b': self.weighting.last['r_b']})
        else:
            for p, gf in zip(shared, g_f):
                p.grad = gf
            for p in other:
                p.grad = None
            row.update({'loss_total': row['loss_fusion'], 'g_a': norm_f, 'omega_csc': 0.0})
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return row

    # ------------------------------------------------------------------ epochs
    @torch.no_grad()
    def validate(self) -> Dict[str, float]:
        """Mean validation L_fusion (+ the configured metrics on the first few pairs).

        Semantic runs also score H's class map (logits upsampled bilinearly to the image, the
        CSC loss's resolution rule): ``val_box_f1`` and per-class F1 against the validation
        boxes (:class:`ssvif_ros.labels.BoxScorer`), ``val_miou`` against pixel labels.
        """
        if len(self.val_ds) == 0:
            return {}
        self.net.eval()
        total, count = 0.0, 0
        metric_rows = []
        scorer = labels.BoxScorer() if self.semantic else None
        n_cls = self.cfg.model.num_classes
        confusion = np.zeros((n_cls, n_cls), dtype=np.int64)
        has_boxes = has_pixels = False
        index = 0
        for vis, ir, label in self._loader(self.val_ds, train=False):
            vis, ir = vis.to(self.device), ir.to(self.device)
            fused, feats = self.net.fuse(vis, ir)
            lf = losses.weighted_fusion(losses.fusion_terms(fused.float(), vis, ir),
                                        self.lambdas)
            total += float(lf) * vis.shape[0]
            count += vis.shape[0]
            if self.cfg.train.val_metrics and len(metric_rows) < self.cfg.train.val_metric_images:
                metric_rows.extend(self._val_metrics(vis, ir, fused))
            if scorer is not None:
                logits = losses.to_resolution(self.net.head(feats).float(),
                                              tuple(vis.shape[-2:]))
                ids = logits.argmax(1).to(torch.uint8).cpu().numpy()       # N x H x W
                for b in range(ids.shape[0]):
                    kind = self.val_ds.kinds[index]
                    boxes = self.val_ds.view_boxes(index)
                    if boxes is not None:
                        scorer.add(ids[b], boxes)
                        has_boxes = True
                    if kind == 'pixels':
                        confusion += metrics.confusion_matrix(
                            ids[b], label[b].numpy().astype(np.uint8), n_cls, labels.IGNORE)
                        has_pixels = True
                    index += 1
        self.net.train()
        out = {'val_fusion': total / max(count, 1)}
        if has_boxes:
            res = scorer.result()
            out['val_box_f1'] = res['box_f1']
            out.update({f'val_{c}_f1': v['f1'] for c, v in res['classes'].items()})
        if has_pixels:
            out['val_miou'] = metrics.iou_from_confusion(confusion)[1]
        if metric_rows:
            for k in metric_rows[0]:
                out[f'val_{k}'] = float(np.mean([r[k] for r in metric_rows]))
        return out

    def _val_metrics(self, vis, ir, fused) -> List[Dict[str, float]]:
        rows = []
        for b in range(vis.shape[0]):
            v = imaging.to_uint8(imaging.nchw_to_hwc(vis[b:b + 1]))
            t = imaging.to_uint8(imaging.nchw_to_hwc(ir[b:b + 1]))[:, :, 0]
            f = imaging.to_uint8(imaging.nchw_to_hwc(fused[b:b + 1]))
            rows.append(metrics.validation_metrics(v, t, f, self.cfg.train.val_metrics))
        return rows

    def run(self) -> Dict:
        """Train until ``train.epochs``, early stopping or the end; return the final summary."""
        cfg = self.cfg
        self._open_logs()
        try:
            while self.epoch < cfg.train.epochs:
                if self.should_stop():
                    log.info('early stop: no validation improvement for %d epochs',
                             self.bad_epochs)
                    break
                self._run_epoch()
        finally:
            self._close_logs()
        if self.distributed:
            self._check_ranks_in_sync()
        return {'epoch': self.epoch, 'stage': self.stage, 'best_val': self.best_val,
                'monitor': self.monitor_name(self.stage), 'history': self.history}

    def _sync_buffers(self):
        """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

        DDP broadcasts buffers at the start of each forward, so after the last step of an epoch
        each rank holds statistics of its own last batch; validation and checkpoints use rank 0's.
        """
        if not self.distributed:
            return
        import torch.distributed as dist
        for b in self.net.buffers():
            dist.broadcast(b.data, src=0)

    def _check_ranks_in_sync(self):
        """Gather a digest of every rank's parameters; write ranks.json; fail if they differ."""
        import hashlib
        import torch.distributed as dist
        h = hashlib.sha256()
        for t in list(self.net.state_dict().values()):
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        digests = [None] * self.world
        dist.all_gather_object(digests, h.hexdigest())
        if self.rank == 0:
            with open(os.path.join(self.out_dir, 'ranks.json'), 'w', encoding='utf-8') as f:
                json.dump({'world_size': self.world, 'param_digests': digests}, f, indent=2)
        dist.barrier()
        dist.destroy_process_group()
        if len(set(digests)) != 1:
            raise TrainingError(f'ranks ended with different parameters: {digests}')

    def _run_epoch(self):
        cfg = self.cfg
        t0 = time.time()
        self.train_ds.set_epoch(self.epoch)
        loader = self._loader(self.train_ds, train=True)
        steps = len(loader)
        if cfg.train.steps_per_epoch > 0:
            steps = min(steps, cfg.train.steps_per_epoch)
        bar = None
        if cfg.train.progress and self.rank == 0:
            from tqdm import tqdm
            bar = tqdm(total=steps, desc=f'epoch {self.epoch + 1} stage {self.stage}',
                       leave=False, dynamic_ncols=True)
        sums: Dict[str, float] = {}
        n = 0
        self.net.train()
        for i, (vis, ir, label) in enumerate(loader):
            if i >= steps:
                break
            row = self.train_step(vis, ir, label if self.semantic else None)
            self.global_step += 1
            n += 1
            for k, v in row.items():
                if isinstance(v, float) and math.isfinite(v):
                    sums[k] = sums.get(k, 0.0) + v
            if self.global_step % cfg.train.log_every == 0:
                self._log_step(row)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f'{row["loss_total"]:.3f}', omega=f'{row["omega_csc"]:.3f}')
        if bar is not None:
            bar.close()
        if n == 0:
            raise TrainingError('an epoch had no training step (dataset smaller than one batch?)')
        means = {k: v / n for k, v in sums.items()}
        self._sync_buffers()
        val = self.validate()
        stage_done = self.stage
        if self.stage == 2:
            self.weighting.epoch_end(means['loss_fusion'], means.get('loss_csc', 0.0))
        else:
            self.stage1_epochs += 1
            self.stage1_means.append(means['loss_fusion'])
            if cfg.train.csc and should_switch(self.stage1_means, self.stage1_epochs,
                                               cfg.train.stage1_max_epochs):
                log.info('switching to stage II after epoch %d', self.epoch + 1)
                self.stage = 2
        self.epoch += 1
        name, value = self._monitored(stage_done, val, means)
        improved = value < self.best_val
        if improved:
            self.best_val, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        if stage_done == 1 and self.stage == 2:
            # Stage II is judged on its own criterion from its first epoch (best.pt follows).
            self.best_val, self.bad_epochs = math.inf, 0
        erow = {'epoch': self.epoch, 'stage': stage_done, 'train_fusion': means['loss_fusion'],
                'train_csc': means.get('loss_csc', math.nan),
                'val_fusion': val.get('val_fusion', math.nan),
                'omega_csc': means.get('omega_csc', 0.0), 'g_a': means.get('g_a', math.nan),
                'g_b': means.get('g_b', math.nan), 'r_a': means.get('r_a', math.nan),
                'r_b': means.get('r_b', math.nan), 'alpha_cf': means.get('alpha_cf', math.nan),
                'cos_phi': means.get('cos_phi', math.nan), 'seconds': time.time() - t0}
        erow.update({k: v for k, v in val.items() if k != 'val_fusion'})
        if self.semantic:
            erow['train_sup'] = means.get('loss_sup', math.nan)
        self.history.append(erow)
        if improved:
            self.best_epoch = self.epoch
        # last.pt first (it records best_epoch), then best.pt as a copy of it, then the epoch row:
        # a kill at any point leaves last.pt either before or after this epoch, and resume
        # repairs best.pt and rewrites both CSVs from last.pt (see _repair_best, _open_logs).
        if self.rank == 0:
            last = os.path.join(self.out_dir, 'last.pt')
            self.save(last)
            if improved:
                copy_atomic(last, os.path.join(self.out_dir, 'best.pt'))
        self._log_epoch(erow)
        log.info('epoch %d stage %d: train L_fusion %.4f val %.4f omega %.4f; %s %.4f%s',
                 self.epoch, stage_done, means['loss_fusion'], erow['val_fusion'],
                 erow['omega_csc'], name, abs(value), ' (best)' if improved else '')

    def should_stop(self) -> bool:
        """Early stopping: ``train.patience`` epochs without improvement of the monitored value.

        With CSC on, stage I ends by its own rule (or its cap), never by early stopping: a run
        must not end before its segmentation branches trained.
        """
        patience = self.cfg.train.patience
        if not patience or (self.stage == 1 and self.cfg.train.csc):
            return False
        return self.bad_epochs >= patience

    def monitor_name(self, stage: int) -> str:
        """What selects ``best.pt`` in ``stage``: fusion, box_f1 or miou."""
        want = self.cfg.train.monitor
        if stage == 1 or not self.cfg.train.csc:
            return 'fusion'
        if want != 'auto':
            return want
        if self.semantic and any(b is not None for b in self.val_ds.boxes):
            return 'box_f1'
        if self.semantic and 'pixels' in self.val_ds.kinds:
            return 'miou'
        return 'fusion'

    def _monitored(self, stage: int, val: Dict[str, float], means: Dict[str, float]):
        """(name, value to minimize) of the epoch just trained in ``stage``."""
        name = self.monitor_name(stage)
        if name == 'fusion':
            return name, val.get('val_fusion', means['loss_fusion'])
        score = val.get(f'val_{name}', math.nan)
        if not math.isfinite(score):
            raise TrainingError(f'train.monitor {name}: the validation pairs have no '
                                f'{"boxes" if name == "box_f1" else "pixel labels"}')
        return name, -score

    # ------------------------------------------------------------------ persistence
    def checkpoint(self) -> dict:
        """Everything needed to rebuild the models and continue exactly."""
        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        return {
            'format': CHECKPOINT_FORMAT,
            'fusion': model_record(self.net.fusion),
            'head': _head_record(self.net.head, self.cfg),
            'seg': None if self.net.seg is None else {
                'preset': self.cfg.model.segformer, 'num_classes': self.cfg.model.num_classes,
                'state_dict': self.net.seg.state_dict()},
            'config': self.cfg.to_dict(),
            'config_digest': self.cfg.digest(),
            'optimizer': self.optimizer.state_dict(),
            'weighting': self.weighting.state_dict(),
            'scaler': self.scaler.state_dict() if self.use_amp else None,
            'state': {'epoch': self.epoch, 'stage': self.stage,
                      'stage1_epochs': self.stage1_epochs, 'stage1_means': self.stage1_means,
                      'best_val': self.best_val, 'best_epoch': self.best_epoch,
                      'bad_epochs': self.bad_epochs, 'global_step': self.global_step},
            'history': self.history,
            'rng': {'torch': torch.get_rng_state(), 'cuda': cuda_rng},
        }

    def save(self, path: str) -> None:
        """Write the checkpoint atomically; TrainingError (one line) when the write fails."""
        try:
            atomic_torch_save(self.checkpoint(), path)
        except OSError as exc:
            raise TrainingError(f'cannot write checkpoint {path}: {exc.strerror or exc} (the '
                                'previous one, if any, is unchanged)') from None

    def _repair_best(self):
        """Make best.pt the checkpoint of ``best_epoch`` after a kill between the two saves.

        best.pt is a copy of last.pt written right after it, so it can only be stale when the
        best epoch is the last completed one.
        """
        if not self.best_epoch or self.best_epoch != self.epoch:
            return
        last = os.path.join(self.out_dir, 'last.pt')
        best = os.path.join(self.out_dir, 'best.pt')
        try:
            ok = _checkpoint_epoch(best) == self.best_epoch
        except Exception:  # noqa: BLE001 - missing or damaged: rewrite it
            ok = False
        if not ok:
            log.info('best.pt is not the checkpoint of the best epoch %d; restoring it from '
                     'last.pt', self.best_epoch)
            copy_atomic(last, best)

    # ------------------------------------------------------------------ logs
    def _open_logs(self):
        if self.rank != 0:
            return
        from torch.utils.tensorboard import SummaryWriter
        if self.global_step:
            # Resume: the logs may run past last.pt (steps of the killed epoch, or its epoch row
            # when the kill hit after the save); cut them back to exactly what last.pt holds.
            self._cut_step_log()
            self._rewrite_epoch_log()
        self.writer = SummaryWriter(os.path.join(self.out_dir, 'tb'), purge_step=self.global_step
                                    if self.global_step else None)
        self._step_csv = self._csv('steps.csv', STEP_FIELDS)
        self._epoch_csv = self._csv('epochs.csv', None)

    def _csv(self, name, fields):
        path = os.path.join(self.out_dir, name)
        return open(path, 'a' if self.global_step else 'w', newline='', encoding='utf-8')

    def _cut_step_log(self):
        """Keep the rows of steps.csv up to the checkpoint's global step (and no torn line)."""
        path = os.path.join(self.out_dir, 'steps.csv')
        if not os.path.isfile(path):
            return
        with open(path, newline='', encoding='utf-8') as f:
            lines = f.readlines()
        keep = lines[:1]
        for line in lines[1:]:
            head = line.split(',', 1)[0]
            if line.endswith('\n') and head.isdigit() and int(head) <= self.global_step:
                keep.append(line)
        _write_atomic(path, ''.join(keep))

    def _rewrite_epoch_log(self):
        """epochs.csv = the checkpoint's history, one row per completed epoch."""
        buf = io.StringIO(newline='')
        if self.history:
            # The same header _log_epoch writes: the first row's keys.
            fields = EPOCH_FIELDS + sorted(k for k in self.history[0] if k not in EPOCH_FIELDS)
            w = csv.DictWriter(buf, fields, extrasaction='ignore')
            w.writeheader()
            w.writerows(self.history)
        _write_atomic(os.path.join(self.out_dir, 'epochs.csv'), buf.getvalue())

    def _log_step(self, row):
        if self.rank != 0:
            return
        full = {'global_step': self.global_step, 'epoch': self.epoch + 1, 'stage': self.stage,
                'lr': self.optimizer.param_groups[0]['lr']}
        full.update(row)
        w = csv.DictWriter(self._step_csv, STEP_FIELDS, extrasaction='ignore')
        if self._step_csv.tell() == 0:
            w.writeheader()
        w.writerow({k: full.get(k, '') for k in STEP_FIELDS})
        self._step_csv.flush()
        for k, v in full.items():
            if k not in ('global_step', 'epoch') and isinstance(v, (int, float)) \
                    and math.isfinite(v):
                self.writer.add_scalar(f'step/{k}', v, self.global_step)

    def _log_epoch(self, row):
        if self.rank != 0:
            return
        fields = EPOCH_FIELDS + sorted(k for k in row if k not in EPOCH_FIELDS)
        w = csv.DictWriter(self._epoch_csv, fields, extrasaction='ignore')
        if self._epoch_csv.tell() == 0:
            w.writeheader()
        w.writerow(row)
        self._epoch_csv.flush()
        for k, v in row.items():
            if k != 'epoch' and isinstance(v, (int, float)) and math.isfinite(v):
                self.writer.add_scalar(f'epoch/{k}', v, self.epoch)
        self.writer.flush()

    def _close_logs(self):
        if self.rank == 0 and self.writer is not None:
            self.writer.close()
            self._step_csv.close()
            self._epoch_csv.close()
            self.writer = None


# ---------------------------------------------------------------------------------------------
# Run folder and checkpoint files

def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def prepare_run_dir(out_dir: str, resume: bool, overwrite: bool) -> None:
    """Create ``out_dir``, refuse one holding a run (unless resume/overwrite), clean temp files.

    ``overwrite`` removes the files of the earlier run (:data:`RUN_FILES`, ``tb/``) and nothing
    else. Raises TrainingError naming the folder and the reason.
    """
    if resume and overwrite:
        raise TrainingError('--resume and --overwrite exclude each other')
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise TrainingError(f'--out {out_dir} is an existing file, not a folder')
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise TrainingError(f'cannot create run folder {out_dir}: {exc.strerror or exc}') from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise TrainingError(f'run folder {out_dir} is not writable')
    # Temporary files of saves that a kill interrupted (one per kill, as large as a checkpoint).
    for name in RUN_FILES:
        for tmp in glob.glob(os.path.join(glob.escape(out_dir), f'.{name}.tmp*')):
            try:
                os.remove(tmp)
            except OSError:
                pass
    held = [n for n in RUN_FILES + RUN_DIRS if os.path.exists(os.path.join(out_dir, n))]
    if resume:
        last = os.path.join(out_dir, 'last.pt')
        if not os.path.isfile(last):
            why = (' (the run stopped before its first epoch ended; start it again with '
                   '--overwrite)' if held else '')
            raise TrainingError(f'--resume: no checkpoint at {last}{why}')
        return
    if not held:
        return
    if not overwrite:
        raise TrainingError(f'run folder {out_dir} already holds a run ({", ".join(held)}); '
                            'continue it with --resume, replace it with --overwrite, or use '
                            'another --out')
    import shutil
    for name in held:
        path = os.path.join(out_dir, name)
        try:
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
        except OSError as exc:
            raise TrainingError(f'--overwrite: cannot remove {path}: '
                                f'{exc.strerror or exc}') from None


def read_checkpoint(path: str) -> dict:
    """Load a training checkpoint for --resume; TrainingError naming the file and the reason."""
    best = os.path.join(os.path.dirname(path), 'best.pt')
    hint = (f'; {best} may still be intact: copy it to {path} to resume from the best epoch'
            if os.path.isfile(best) else '')
    try:
        ckpt = torch_load_checked(path)
    except ValueError as exc:
        raise TrainingError(f'--resume: {exc}{hint}') from None
    if not isinstance(ckpt, dict) or ckpt.get('format') != CHECKPOINT_FORMAT:
        raise TrainingError(f'--resume: {path} is not a training checkpoint of this version')
    return ckpt


def _checkpoint_epoch(path: str):
    ckpt = torch.load(path, map_location='cpu', weights_only=True, mmap=True)
    return ckpt['state']['epoch']


def _write_atomic(path: str, text: str) -> None:
    tmp = os.path.join(os.path.dirname(path) or '.', f'.{os.path.basename(path)}.tmp{os.getpid()}')
    with open(tmp, 'w', newline='', encoding='utf-8') as f:
        f.write(text)
    os.replace(tmp, path)


def copy_atomic(src: str, dst: str) -> None:
    """Copy ``src`` to ``dst`` via a temp file and rename; TrainingError when the write fails."""
    tmp = os.path.join(os.path.dirname(dst) or '.', f'.{os.path.basename(dst)}.tmp{os.getpid()}')
    try:
        with open(src, 'rb') as fi, open(tmp, 'wb') as fo:
            for chunk in iter(lambda: fi.read(1 << 20), b''):
                fo.write(chunk)
        os.replace(tmp, dst)
    except OSError as exc:
        raise TrainingError(f'cannot write checkpoint {dst}: {exc.strerror or exc}') from None
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)
