"""SSVIF's two-stage schedule, model selection and early stopping.

Stage I trains only the fusion model F with L_fusion; after the first epoch whose mean L_fusion
exceeds the previous epoch's (or ``train.stage1_max_epochs`` epochs, :func:`should_switch`)
training switches to stage II, where F, H and S train together. Without a segmentation task (no
CSC and no labels) there is no stage II.

Model selection: stage I monitors validation L_fusion. When stage II starts, the best value and
the patience counter are reset and stage II monitors its own criterion (``train.monitor``,
resolved by the trainer: validation box-F1, mIoU or L_fusion), so ``best.pt`` is a stage-II
checkpoint whenever stage II ran. Early stopping (``train.patience`` epochs without improvement)
never ends stage I when a segmentation task follows (``train.stage1_max_epochs`` does).
"""
from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Dict, List

from ssvif_train.checkpoints import TrainingError


def should_switch(epoch_means: List[float], stage1_epochs: int, cap: int) -> bool:
    """Stage I -> II rule: the last epoch's mean L_fusion rose, or the cap is reached."""
    if stage1_epochs >= cap:
        return True
    return len(epoch_means) >= 2 and epoch_means[-1] > epoch_means[-2]


@dataclass
class EpochEnd:
    """What :meth:`Schedule.end_epoch` decided about the epoch just trained."""

    stage: int          # the stage the epoch trained in
    monitor: str        # fusion | box_f1 | miou
    value: float        # the monitored value, to minimize (scores negated)
    improved: bool      # a new best: best.pt follows
    switched: bool      # stage II starts with the next epoch


class Schedule:
    """Stage, epoch counters and the best monitored value of one run (checkpointed)."""

    STATE_KEYS = ('epoch', 'stage', 'stage1_epochs', 'stage1_means', 'best_val', 'best_epoch',
                  'bad_epochs', 'global_step')

    def __init__(self, train_cfg, stage2_monitor: str = 'fusion', seg_task=None):
        # seg_task: a stage II exists (CSC, or supervised labels alone); default train.csc.
        self.seg_task = train_cfg.csc if seg_task is None else bool(seg_task)
        self.stage1_cap = train_cfg.stage1_max_epochs
        self.patience = train_cfg.patience
        self.stage2_monitor = stage2_monitor
        self.epoch = 0
        self.stage = 1 if (train_cfg.two_stage and self.seg_task) else 2
        if not self.seg_task:
            self.stage = 1
        self.stage1_epochs = 0
        self.stage1_means: List[float] = []
        self.best_val = math.inf
        self.best_epoch = 0
        self.bad_epochs = 0
        self.global_step = 0

    def monitor_name(self, stage: int) -> str:
        """What selects ``best.pt`` in ``stage``: fusion, box_f1 or miou."""
        if stage == 1 or not self.seg_task:
            return 'fusion'
        return self.stage2_monitor

    def should_stop(self) -> bool:
        """Early stopping: ``patience`` epochs without improvement.

        Never in stage I when a stage II follows (CSC or labels): stage I ends by its own rule.
        """
        if not self.patience or (self.stage == 1 and self.seg_task):
            return False
        return self.bad_epochs >= self.patience

    def end_epoch(self, train_fusion: float, val: Dict[str, float]) -> EpochEnd:
        """Count the epoch just trained (mean training L_fusion, validation scores)."""
        stage_done = self.stage
        switched = False
        if self.stage == 1:
            self.stage1_epochs += 1
            self.stage1_means.append(train_fusion)
            if self.seg_task and should_switch(self.stage1_means, self.stage1_epochs,
                                               self.stage1_cap):
                self.stage = 2
                switched = True
        self.epoch += 1
        name = self.monitor_name(stage_done)
        if name == 'fusion':
            value = val.get('val_fusion', train_fusion)
        else:
            score = val.get(f'val_{name}', math.nan)
            if not math.isfinite(score):
                raise TrainingError(f'train.monitor {name}: the validation pairs have no '
                                    f'{"boxes" if name == "box_f1" else "pixel labels"}')
            value = -score
        improved = value < self.best_val
        if improved:
            self.best_val, self.bad_epochs = value, 0
            self.best_epoch = self.epoch
        else:
            self.bad_epochs += 1
        if switched:
            # Stage II is judged on its own criterion from its first epoch (best.pt follows).
            self.best_val, self.bad_epochs = math.inf, 0
        return EpochEnd(stage_done, name, value, improved, switched)

    def state_dict(self) -> dict:
        """The checkpoint's ``state`` entry."""
        return {k: getattr(self, k) for k in self.STATE_KEYS}

    def load_state_dict(self, st: dict) -> None:
        """Restore from a checkpoint's ``state`` entry."""
        self.epoch = st['epoch']
        self.stage = st['stage']
        self.stage1_epochs = st['stage1_epochs']
        self.stage1_means = list(st['stage1_means'])
        self.best_val = st['best_val']
        self.best_epoch = st.get('best_epoch', 0)
        self.bad_epochs = st['bad_epochs']
        self.global_step = st['global_step']
