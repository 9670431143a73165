"""SSVIF training loop: two stages, CSC, task weighting, resume, DDP (see doc/training.md).

The trainer wires the pieces of a run together, each in its own module:
:mod:`ssvif_train.network` (F, H and S as one module), :mod:`ssvif_train.schedule` (the
stage-I -> II switch, model selection, early stopping), :mod:`ssvif_train.validation`,
:mod:`ssvif_train.checkpoints` (the run folder and its files), :mod:`ssvif_train.run_log` (CSV and
TensorBoard logs) and :mod:`ssvif_train.distributed` (devices, DDP).

Semantic training (``model.classes: msrs``, labels from pixel masks or boxes, see
:mod:`ssvif_train.data`): in stage II the segmentation task is L_seg = L_csc + L_sup, L_sup the
CE + Dice of H and S on the labelled pixels of the batch (unlabelled pairs and uncertain box
pixels are ignored), and the weighting strategy balances L_fusion against L_seg as it balances
L_fusion against L_csc in the label-free mode. CSC still runs on every pair; its weight within
L_seg ramps up over ``train.csc_ramp_epochs`` stage-II epochs (:func:`csc_ramp`) and
``loss.csc_threshold`` keeps unconfident pseudo labels out.

Supervised without SSVIF (``model.classes: msrs`` with ``train.csc: false``, SegFANet's paper
form): H is built but not S; the segmentation task is L_seg = CE + Dice of H on the labelled
pixels (``seg_ce``, ``seg_dice``), balanced against the fusion task by the weighting strategy;
``weighting: fixed`` with ``fixed_omega: 1`` gives SegFANet's L_f + L_rec + L_s.

Fusion task: ``loss.fusion`` picks its loss (``auto``: the model's own, its ``fusion_loss``
attribute, else SSVIF's L_fusion; :func:`ssvif_train.losses.fusion_task`); a model with
reconstruction images (SegFANet's IRMs) adds ``loss.lambda_rec`` * L_rec to it.

Gradients: each step computes the fusion-task and CSC-task gradients separately
(``torch.autograd.grad``), so GDWA gets the gradient norms on the shared fusion parameters, the
logs get alpha_cf and cos(phi) (paper appendix C), and the update is a * g_fusion + b * g_csc
with (a, b) from the weighting strategy: two backward passes, the same count as one backward of
the total loss plus one for the norms. Under ``torchrun`` both task gradients are averaged over
the ranks before the norms are taken (:class:`ssvif_train.distributed.Dist`).
"""
from __future__ import annotations

import logging
import math
import os
import time
from typing import Dict, List, Optional

import torch

from ssvif_ros.progress import bar as progress_bar
from ssvif_train import losses
from ssvif_train.checkpoints import (check_same_split, CHECKPOINT_FORMAT, copy_atomic,
                                     first_line, prepare_run_dir, read_checkpoint,
                                     read_init_weights, remove_run, repair_best, TrainingError,
                                     write_run_info)
from ssvif_train.config import Config, ConfigError, resume_config
from ssvif_train.data import build_datasets
from ssvif_train.distributed import Dist, pick_device, set_deterministic
from ssvif_train.models.registry import atomic_torch_save
from ssvif_train.network import SSVIFNet
from ssvif_train.run_log import RunLog
from ssvif_train.schedule import Schedule
from ssvif_train.validation import validate
from ssvif_train.weighting import create_weighting, csc_ramp

log = logging.getLogger('ssvif_train')

__all__ = ['Trainer', 'TrainingError']


def grad_norm(grads: List[torch.Tensor]) -> float:
    """L2 norm of a list of gradients, summed in float64 (one device sync)."""
    if not grads:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack(
        [torch.linalg.vector_norm(g, dtype=torch.float64) for g in grads])))


class Trainer:
    """Runs one training job into ``out_dir``; see the module docstring."""

    def __init__(self, cfg: Config, out_dir: str, resume: bool = False,
                 overrides: tuple = (), overwrite: bool = False):
        self.out_dir = out_dir
        self.run_lock = None
        # The global rank is known from the environment before the process group exists: only
        # rank 0 prepares (and locks) the folder, the others would see rank 0's first files as
        # a 'run'.
        if int(os.environ.get('RANK', 0)) == 0:
            self.run_lock = prepare_run_dir(out_dir, resume, overwrite)
        try:
            self._setup(cfg, resume, overrides, overwrite)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Give the run folder free for another trainer (done at the end of :meth:`run`)."""
        if self.run_lock is not None:
            self.run_lock.release()

    def _setup(self, cfg: Config, resume: bool, overrides: tuple, overwrite: bool):
        out_dir = self.out_dir
        ckpt = None
        if resume:
            ckpt = read_checkpoint(os.path.join(out_dir, 'last.pt'))
            # The saved configuration wins; overrides apply on top where resume allows them.
            try:
                cfg = resume_config(ckpt['config'], overrides)
            except ConfigError as exc:
                raise TrainingError(f'{os.path.join(out_dir, "last.pt")}: {exc}') from None
        self.cfg = cfg
        if cfg.train.threads > 0:
            torch.set_num_threads(cfg.train.threads)
        set_deterministic(cfg.train.deterministic)
        self.dist = Dist(cfg.train.device)
        self.device = pick_device(cfg.train.device)
        torch.manual_seed(cfg.data.seed)
        self.train_ds, self.val_ds, self.report = build_datasets(cfg)
        if len(self.train_ds) < 1:
            raise TrainingError('the training split is empty')
        if ckpt is not None:
            check_same_split(out_dir, len(self.train_ds), len(self.val_ds))
        self.semantic = cfg.model.classes == 'msrs'
        self.sup_weights = (torch.tensor(cfg.loss.sup_class_weights, dtype=torch.float32)
                            if cfg.loss.sup_class_weights else None)
        # A segmentation task runs with CSC, or supervised on the labels alone (csc false).
        self.seg_task = cfg.train.csc or self.semantic
        if self.semantic and set(self.train_ds.kinds) == {'none'}:
            raise TrainingError('model.classes msrs needs labels, but no training pair has a '
                                'pixel label or a box file (data.labels, data.boxes)')
        self.net = SSVIFNet.from_config(cfg).to(self.device)
        self.params_shared = [p for p in self.net.fusion.parameters() if p.requires_grad]
        self.params_other = [p for m in (self.net.head, self.net.seg) if m is not None
                             for p in m.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.params_shared + self.params_other,
                                          lr=cfg.train.lr)
        # Stepped once per epoch, so a resumed run continues the same curve.
        self.lr_schedule = (torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=max(1, cfg.train.epochs))
            if cfg.train.lr_schedule == 'cosine' else None)
        if cfg.train.init and ckpt is None:
            self._init_weights(cfg.train.init)
        # Weight EMA (train.ema): validation, best.pt and the model entries of last.pt hold the
        # averaged weights; last.pt keeps the raw ones too (train_weights) for --resume.
        self.ema = None
        if cfg.train.ema > 0:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
            self.ema = AveragedModel(self.net, multi_avg_fn=get_ema_multi_avg_fn(cfg.train.ema),
                                     use_buffers=True)
        self.weighting = create_weighting(cfg.weighting)
        # Mixed precision: fp16 autocast + GradScaler on CUDA; bf16 on CPU only on request.
        self.use_amp = (cfg.train.amp and self.device.type == 'cuda') or \
            (cfg.train.amp_cpu and self.device.type == 'cpu')
        self.amp_dtype = torch.float16 if self.device.type == 'cuda' else torch.bfloat16
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.use_amp)
        self.model = self.dist.wrap(self.net, self.device)
        self.lambdas = losses.fusion_lambdas(cfg.loss)
        self.fusion_loss = cfg.loss.fusion if cfg.loss.fusion != 'auto' else \
            getattr(self.net.fusion, 'fusion_loss', 'ssvif')
        self.schedule = Schedule(cfg.train, self._stage2_monitor(), self.seg_task)
        self.history: List[Dict] = []
        if ckpt is not None:
            try:
                self._restore(ckpt)
            except (KeyError, TypeError, ValueError, RuntimeError) as exc:
                raise TrainingError(f'--resume: {os.path.join(out_dir, "last.pt")} does not fit '
                                    f'this configuration: {first_line(exc)}') from None
            if self.dist.rank == 0:
                repair_best(out_dir, self.schedule.best_epoch, self.schedule.epoch)
        if overwrite and self.dist.rank == 0:
            remove_run(out_dir)  # only now: data, model and train.init have been checked
        self.logs = RunLog(out_dir, enabled=self.dist.rank == 0)
        if self.dist.rank == 0:
            write_run_info(out_dir, cfg, self.report.summary(), len(self.train_ds),
                           len(self.val_ds))

    # ------------------------------------------------------------------ setup
    def _stage2_monitor(self) -> str:
        """``train.monitor`` resolved for stage II.

        ``auto`` is box_f1 with validation boxes, miou with validation pixel labels, else
        fusion; runs without a segmentation task always monitor fusion.
        """
        want = self.cfg.train.monitor
        if not self.seg_task:
            return 'fusion'
        if want != 'auto':
            return want
        if self.semantic and any(b is not None for b in self.val_ds.boxes):
            return 'box_f1'
        if self.semantic and 'pixels' in self.val_ds.kinds:
            return 'miou'
        return 'fusion'

    def _init_weights(self, path: str):
        """Start from the weights of ``train.init``; optimizer, weighting, stages start fresh."""
        init = read_init_weights(path)
        try:
            self.net.load_records(init)
        except (KeyError, RuntimeError) as exc:
            raise TrainingError(f'train.init: {path} does not fit this configuration: '
                                f'{first_line(exc)}') from None
        fresh = [name for name, key, mod in (('H', 'head', self.net.head),
                                             ('S', 'seg', self.net.seg))
                 if mod is not None and not init.get(key)]
        log.info('weights from %s%s', path,
                 f' ({" and ".join(fresh)} start from random weights)' if fresh else '')

    def _restore(self, ckpt: dict):
        if self.ema is not None:
            if not ckpt.get('train_weights'):
                raise KeyError('train_weights (the run was saved without train.ema)')
            self.net.load_records(ckpt['train_weights'])
            self.ema.module.load_records(ckpt)
            self.ema.n_averaged.fill_(int(ckpt['ema_steps']))
        else:
            self.net.load_records(ckpt)
        self.optimizer.load_state_dict(ckpt['optimizer'])
        if self.lr_schedule is None:  # a constant rate is the config's (--resume may change it)
            for group in self.optimizer.param_groups:
                group['lr'] = self.cfg.train.lr
        if self.lr_schedule is not None and ckpt.get('lr_schedule'):
            self.lr_schedule.load_state_dict(ckpt['lr_schedule'])
        self.weighting.load_state_dict(ckpt['weighting'])
        if ckpt.get('scaler'):
            self.scaler.load_state_dict(ckpt['scaler'])
        self.schedule.load_state_dict(ckpt['state'])
        self.history = list(ckpt.get('history', []))
        torch.set_rng_state(ckpt['rng']['torch'])
        if torch.cuda.is_available() and ckpt['rng'].get('cuda') is not None:
            torch.cuda.set_rng_state_all(ckpt['rng']['cuda'])

    def loader(self, ds, train: bool):
        """A DataLoader over ``ds``: shuffled per epoch (and sharded under DDP) for training."""
        from torch.utils.data import DataLoader
        from torch.utils.data.distributed import DistributedSampler
        bs = self.cfg.train.batch_size if (train or self.cfg.data.val_crop > 0) else 1
        epoch, world = self.schedule.epoch, self.dist.world
        if self.dist.enabled:
            sampler = DistributedSampler(ds, num_replicas=world, rank=self.dist.rank,
                                         shuffle=train, seed=self.cfg.data.seed,
                                         drop_last=train)
            sampler.set_epoch(epoch)
        elif train:
            g = torch.Generator()
            g.manual_seed(self.cfg.data.seed * 1000003 + epoch)
            sampler = torch.utils.data.RandomSampler(ds, generator=g)
        else:
            sampler = torch.utils.data.SequentialSampler(ds)
        n_local = len(ds) // world if train and self.dist.enabled else len(ds)
        drop = train and n_local >= bs
        return DataLoader(ds, batch_size=bs, sampler=sampler, drop_last=drop,
                          num_workers=self.cfg.data.workers,
                          pin_memory=self.device.type == 'cuda')

    # ------------------------------------------------------------------ step
    def _mean(self, loss: torch.Tensor) -> float:
        """A loss value averaged over the ranks."""
        return self.dist.mean_scalar(float(loss.detach()), self.device)

    def train_step(self, vis: torch.Tensor, ir: torch.Tensor,
                   label: Optional[torch.Tensor] = None) -> Dict[str, float]:
        """One optimisation step on a batch; returns the logged scalars.

        ``label``: N x H x W int64 (255 = ignore) for semantic training, else None.
        """
        stage2 = self.schedule.stage == 2
        vis = vis.to(self.device, non_blocking=True)
        ir = ir.to(self.device, non_blocking=True)
        # DDP must not reduce on its own: the two task gradients are averaged in allreduce.
        autocast = torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp)
        with self.dist.no_sync(self.model), autocast:
            fused, logits_a, logits_b, recs = self.model(vis, ir, stage2, aux=True)
        fused = fused.float()
        f_terms, l_fusion = losses.fusion_task(self.fusion_loss, fused, vis, ir,
                                               [r.float() for r in recs], self.lambdas,
                                               self.cfg.loss.lambda_rec)
        # scaler.scale() also initialises the scaler's state that scaler.step() checks.
        scaled = self.scaler.scale(l_fusion)
        scale = self.scaler.get_scale() if self.use_amp else 1.0
        shared, other = self.params_shared, self.params_other
        g_f = torch.autograd.grad(scaled, shared, retain_graph=stage2, allow_unused=True)
        g_f = self.dist.allreduce(list(g_f), shared)
        row = {k: float(v.detach()) for k, v in f_terms.items()}
        row['loss_fusion'] = self._mean(l_fusion)
        norm_f = grad_norm(g_f) / scale
        if stage2 and logits_b is None:
            # Supervised without S (SegFANet's paper form): L_seg = CE + Dice of H on labels.
            s_terms = losses.segmentation_terms(logits_a, label.to(self.device, non_blocking=True),
                                                self.cfg.loss.dice_eps, self.sup_weights)
            l_seg = s_terms['seg_ce'] + s_terms['seg_dice']
            row.update({k: float(v.detach()) for k, v in s_terms.items()})
            row['loss_sup'] = self._mean(l_seg)
            finite = self._seg_task_update(row, l_seg, row['loss_sup'], g_f, norm_f, scale)
        elif stage2:
            c_terms = losses.csc_terms(logits_a, logits_b, tuple(vis.shape[-2:]),
                                       self.cfg.loss.dice_eps, self.cfg.loss.csc_threshold)
            l_csc = losses.csc_total(c_terms)
            l_seg = l_csc
            ramp = 1.0
            if self.semantic and label is not None:
                s_terms = losses.supervised_terms(logits_a, logits_b,
                                                  label.to(self.device, non_blocking=True),
                                                  self.cfg.loss.dice_eps, self.sup_weights)
                l_sup = losses.supervised_total(s_terms)
                sch = self.schedule
                ramp = csc_ramp(sch.epoch - sch.stage1_epochs, self.cfg.train.csc_ramp_epochs)
                l_seg = l_sup + ramp * l_csc
                row['csc_ramp'] = ramp
                row.update({k: float(v.detach()) for k, v in s_terms.items()})
                row['loss_sup'] = self._mean(l_sup)
            row.update({k: float(v.detach()) for k, v in c_terms.items()})
            row['loss_csc'] = self._mean(l_csc)
            loss_seg = ramp * row['loss_csc'] + row.get('loss_sup', 0.0)
            finite = self._seg_task_update(row, l_seg, loss_seg, g_f, norm_f, scale)
        else:
            finite = math.isfinite(norm_f)
            for p, gf in zip(shared, g_f):
                p.grad = gf
            for p in other:
                p.grad = None
            row.update({'loss_total': row['loss_fusion'], 'omega_csc': 0.0})
            if finite:
                row['g_a'] = norm_f
        row['skipped'] = int(self._optimizer_step(finite, scale))
        self.optimizer.zero_grad(set_to_none=True)
        return row

    def _optimizer_step(self, finite: bool, scale: float) -> bool:
        """Step (through the GradScaler under AMP) unless the gradients are not finite.

        Returns True when the step was skipped. Under AMP the scaler decides (it unscales the
        gradients, skips the step on inf/NaN and lowers its scale: a lower scale is a skip);
        without AMP a step with non-finite gradients is skipped here.
        """
        if self.use_amp:
            self.scaler.step(self.optimizer)
            self.scaler.update()
            return self.scaler.get_scale() < scale
        if finite:
            self.optimizer.step()
        return not finite

    def _seg_task_update(self, row, l_seg, loss_seg: float, g_f, norm_f: float,
                         scale: float) -> bool:
        """Segmentation-task gradients and the weighted update a * g_fusion + b * g_seg.

        The norms are those of the unscaled gradients (scaled ones / the AMP scale). When a
        task gradient is not finite (an fp16 overflow: the step will be skipped) the weighting
        is not stepped and the gradient columns stay empty; returns False then.
        """
        shared, other = self.params_shared, self.params_other
        g_c = torch.autograd.grad(self.scaler.scale(l_seg), shared + other, allow_unused=True)
        g_c = self.dist.allreduce(list(g_c), shared + other)
        gc_shared = g_c[:len(shared)]
        norm_c = grad_norm(gc_shared) / scale
        w = self.weighting
        if not (math.isfinite(norm_f) and math.isfinite(norm_c)):
            # The scaled gradients go in as they are, so that the scaler sees the inf/NaN.
            for p, gf, gc in zip(shared, g_f, gc_shared):
                p.grad = gf + gc
            for p, gc in zip(other, g_c[len(shared):]):
                p.grad = gc
            row['loss_total'] = w.last['a'] * row['loss_fusion'] + w.last['b'] * loss_seg
            row['omega_csc'] = w.last['omega']
            return False
        dot = float(sum((a.double() * b.double()).sum() for a, b in zip(g_f, gc_shared)))
        dot /= scale * scale
        a, b = w.step(norm_f, norm_c, row['loss_fusion'], loss_seg)
        for p, gf, gc in zip(shared, g_f, gc_shared):
            p.grad = a * gf + b * gc
        for p, gc in zip(other, g_c[len(shared):]):
            p.grad = b * gc
        if norm_f > 0:  # undefined (left empty) without a fusion gradient
            row['alpha_cf'] = dot / (norm_f ** 2)
            if norm_c > 0:
                row['cos_phi'] = dot / (norm_f * norm_c)
        row['loss_total'] = a * row['loss_fusion'] + b * loss_seg
        row.update({'omega_csc': w.last['omega'], 'g_a': norm_f, 'g_b': norm_c,
                    'r_a': w.last['r_a'], 'r_b': w.last['r_b']})
        return True

    # ------------------------------------------------------------------ epochs
    def validate(self) -> Dict[str, float]:
        """Validation scores of the current model (:func:`ssvif_train.validation.validate`)."""
        return validate(self.deployed_net(), self.loader(self.val_ds, train=False), self.val_ds,
                        self.cfg, self.lambdas, self.semantic, self.device, self.fusion_loss)

    def deployed_net(self) -> SSVIFNet:
        """The net that validation scores and checkpoints deploy (EMA weights with train.ema)."""
        return self.ema.module if self.ema is not None else self.net

    def run(self) -> Dict:
        """Train until ``train.epochs``, early stopping or the end; return the final summary."""
        sch = self.schedule
        try:  # the folder stays locked until ranks.json, the last file, is written
            self.logs.open(sch.global_step, self.history)
            while sch.epoch < self.cfg.train.epochs:
                if sch.should_stop():
                    log.info('early stop: no validation improvement for %d epochs',
                             sch.bad_epochs)
                    break
                self._run_epoch()
            self.dist.check_in_sync(self.net, self.out_dir)
        finally:
            self.logs.close()
            self.release()
        return {'epoch': sch.epoch, 'stage': sch.stage, 'best_val': sch.best_val,
                'monitor': sch.monitor_name(sch.stage), 'history': self.history}

    def _train_epoch(self) -> Dict[str, float]:
        """One pass over the training split; the mean of each logged scalar."""
        cfg, sch = self.cfg, self.schedule
        self.train_ds.set_epoch(sch.epoch)
        loader = self.loader(self.train_ds, train=True)
        steps = len(loader)
        if cfg.train.steps_per_epoch > 0:
            steps = min(steps, cfg.train.steps_per_epoch)
        bar = progress_bar(total=steps, desc=f'epoch {sch.epoch + 1} stage {sch.stage}',
                           quiet=not cfg.train.progress or self.dist.rank != 0, leave=False,
                           dynamic_ncols=True)
        sums: Dict[str, float] = {}
        counts: Dict[str, int] = {}
        n = skipped = 0
        self.net.train()
        for i, (vis, ir, label) in enumerate(loader):
            if i >= steps:
                break
            row = self.train_step(vis, ir, label if self.semantic else None)
            sch.global_step += 1
            n += 1
            # A skipped step (AMP overflow) changed no weight: no EMA update, and its values
            # stay out of the epoch means that feed the weighting's loss history.
            if row['skipped']:
                skipped += 1
            else:
                if self.ema is not None:
                    self.ema.update_parameters(self.net)
                for k, v in row.items():   # a mean over the steps where the value is finite
                    if isinstance(v, float) and math.isfinite(v):
                        sums[k] = sums.get(k, 0.0) + v
                        counts[k] = counts.get(k, 0) + 1
            # Under AMP a non-finite loss is an overflow the scaler answers with a lower scale
            # (a skipped step); in full precision it means the run diverged.
            diverged = not self.use_amp and not math.isfinite(row['loss_total'])
            if diverged or sch.global_step % cfg.train.log_every == 0:
                full = {'global_step': sch.global_step, 'epoch': sch.epoch + 1,
                        'stage': sch.stage, 'lr': self.optimizer.param_groups[0]['lr']}
                full.update(row)
                self.logs.step(sch.global_step, full)
            if diverged:
                bar.close()
                raise TrainingError(self._diverged(f'loss_total is {row["loss_total"]} at '
                                                   f'step {i + 1}'))
            bar.update(1)
            bar.set_postfix(loss=f'{row["loss_total"]:.3f}', omega=f'{row["omega_csc"]:.3f}',
                            refresh=False)
        bar.close()
        if n == 0:
            raise TrainingError('an epoch had no training step (dataset smaller than one batch?)')
        if skipped == n:
            raise TrainingError(self._diverged(
                'every step was skipped: the gradients were not finite (with train.amp, try '
                'train.amp=false)'))
        if 'loss_fusion' not in sums:
            raise TrainingError(self._diverged('no step had a finite loss'))
        if not all(bool(torch.isfinite(p).all()) for p in self.net.parameters()):
            raise TrainingError(self._diverged(f'the weights are not finite after step {n}'))
        means = {k: v / counts[k] for k, v in sums.items()}
        means['skipped'] = float(skipped)  # a count, not a mean
        return means

    def _diverged(self, what: str) -> str:
        """The one-line message of a run stopped by a non-finite loss or weights."""
        done = self.schedule.epoch
        kept = (f'{os.path.join(self.out_dir, "last.pt")} keeps epoch {done}, the last good one'
                if done else 'no epoch completed, so nothing was saved')
        return (f'training diverged in epoch {done + 1}: {what} (train.lr '
                f'{self.cfg.train.lr:g}); stopped, {kept}')

    def _run_epoch(self):
        t0 = time.time()
        sch = self.schedule
        means = self._train_epoch()
        self.dist.sync_buffers(self.net)
        val = self.validate()
        if sch.stage == 2:
            self.weighting.epoch_end(means['loss_fusion'],
                                     means.get('loss_csc', means.get('loss_sup', 0.0)))
        end = sch.end_epoch(means['loss_fusion'], val)
        if end.switched:
            log.info('switching to stage II after epoch %d', sch.epoch)
        erow = {'epoch': sch.epoch, 'stage': end.stage, 'train_fusion': means['loss_fusion'],
                'train_csc': means.get('loss_csc', math.nan),
                'val_fusion': val.get('val_fusion', math.nan),
                'omega_csc': means.get('omega_csc', 0.0), 'seconds': time.time() - t0,
                'skipped': int(means['skipped'])}
        for k in ('g_a', 'g_b', 'r_a', 'r_b', 'alpha_cf', 'cos_phi'):
            erow[k] = means.get(k, math.nan)
        erow.update({k: v for k, v in val.items() if k != 'val_fusion'})
        if self.semantic:
            erow['train_sup'] = means.get('loss_sup', math.nan)
        self.history.append(erow)
        if self.lr_schedule is not None:
            self.lr_schedule.step()
        # last.pt first (it records best_epoch), then best.pt as a copy of it, then the epoch row:
        # a kill at any point leaves last.pt either before or after this epoch, and resume
        # repairs best.pt and rewrites both CSVs from last.pt (checkpoints.repair_best, RunLog).
        if self.dist.rank == 0:
            last = os.path.join(self.out_dir, 'last.pt')
            self.save(last)
            if end.improved:
                copy_atomic(last, os.path.join(self.out_dir, 'best.pt'))
        self.logs.epoch(sch.epoch, erow)
        log.info('epoch %d stage %d: train L_fusion %.4f val %.4f omega %.4f; %s %.4f%s',
                 sch.epoch, end.stage, means['loss_fusion'], erow['val_fusion'],
                 erow['omega_csc'], end.monitor, abs(end.value),
                 ' (best)' if end.improved else '')

    # ------------------------------------------------------------------ persistence
    def checkpoint(self) -> dict:
        """Everything needed to rebuild the models and continue exactly."""
        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        ckpt = {'format': CHECKPOINT_FORMAT}
        ckpt.update(self.deployed_net().records(self.cfg.model.classes))
        if self.ema is not None:
            ckpt['train_weights'] = self.net.records(self.cfg.model.classes)
            ckpt['ema_steps'] = int(self.ema.n_averaged)
        ckpt.update({
            'config': self.cfg.to_dict(),
            'config_digest': self.cfg.digest(),
            'optimizer': self.optimizer.state_dict(),
            'lr_schedule': self.lr_schedule.state_dict() if self.lr_schedule else None,
            'weighting': self.weighting.state_dict(),
            'scaler': self.scaler.state_dict() if self.use_amp else None,
            'state': self.schedule.state_dict(),
            'history': self.history,
            'rng': {'torch': torch.get_rng_state(), 'cuda': cuda_rng},
        })
        return ckpt

    def save(self, path: str) -> None:
        """Write the checkpoint atomically; TrainingError (one line) when the write fails."""
        try:
            atomic_torch_save(self.checkpoint(), path)
        except OSError as exc:
            raise TrainingError(f'cannot write checkpoint {path}: {exc.strerror or exc} (the '
                                'previous one, if any, is unchanged)') from None
