"""Training configuration: dataclasses loaded from YAML; unknown keys are errors.

``load_config(path, overrides)`` reads a YAML file whose top-level sections are the fields of
:class:`Config`, then applies ``--set a.b=c`` overrides (values parsed as YAML scalars) and
``(key, value)`` pairs taken literally (the paths of ssvif-train's flags: never parsed, so
``rec #2`` or ``2024`` stay folder names).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
import hashlib
import json
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import yaml


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key at fault."""


@dataclass
class DataConfig:
    """Where the pairs are and how they become training crops."""

    root: str = ''               # dataset folder (MSRS or FMB layout); set by --data
    vi: str = ''                 # explicit visible folder (with ir: "any two folders" layout)
    ir: str = ''                 # explicit thermal folder
    layout: str = 'auto'         # auto | msrs | fmb | folders
    split: str = 'train'         # sub-folder of root to use when it has train/ test/ folders
    crop: int = 160              # random square crop for training
    val_crop: int = 0            # centre crop for validation (0 = full image)
    val_fraction: float = 0.1    # deterministic 9:1 train/val split
    seed: int = 0
    resize: str = 'error'        # size mismatch policy: error | ir_to_vi | vi_to_ir
    thermal_norm: str = 'auto'   # see ssvif_ros.imaging.ThermalNorm
    thermal_lo: Optional[float] = None
    thermal_hi: Optional[float] = None
    thermal_p_lo: float = 1.0
    thermal_p_hi: float = 99.0
    max_pairs: int = 0           # use only the first N pairs (sorted by stem); 0 = all
    cache: bool = True           # keep decoded files in memory
    workers: int = 0             # DataLoader worker processes
    three_channel: bool = True   # False: single-channel (Y) fusion ablation, colour re-attached
    # Labels (used when model.classes is msrs; ssvif_train.data, ssvif_ros.labels).
    labels: str = 'auto'         # auto | pixels | boxes | none: which label files to use
    boxes: str = ''              # YOLO box folder (default: boxes/ beside the image folders)
    box_classes: List[str] = field(  # names of the YOLO class ids 0, 1, ...
        default_factory=lambda: ['person', 'bicycle', 'car'])
    box_margin: int = 3          # ignored ring around each box (px)
    box_core: float = 0.5        # box core ellipse (fraction of the half sizes) taken as object
    box_z_hot: float = 2.0       # box pixels this many SDs warmer than the surround are object
    extra: List[str] = field(default_factory=list)  # more dataset folders, training split only
    object_crop: float = 0.0     # share of training crops centred near a labelled object
    vflip: bool = True           # random vertical flips (False keeps sky above road for classes)


@dataclass
class ModelConfig:
    """Fusion model F and the two segmentation branches H and S."""

    name: str = 'seafusion'                       # registry name of the fusion model
    args: Dict[str, Any] = field(default_factory=dict)
    classes: str = 'clusters'                     # clusters (label-free) | msrs (semantic ids)
    num_classes: int = 15                         # n (paper appendix B-A: 15; msrs: 4..9)
    head_hidden: int = 64                         # channels of H's 3x3 convs
    head_padding: str = 'replicate'               # H's conv padding: replicate | zeros
    segformer: str = 'b3'                         # S preset: b0 ... b5, tiny (CPU)


@dataclass
class LossConfig:
    """Fusion loss lambdas (paper appendix B-A) and the Dice smoothing term."""

    lambda_int: float = 20.0
    lambda_grad: float = 20.0
    lambda_ssim: float = 10.0
    lambda_color: float = 20.0
    dice_eps: float = 1.0
    csc_threshold: float = 0.0    # CSC counts only pseudo labels this confident (0 = paper: all)
    # Per-class weights of the supervised CE (model.classes msrs; [] = unweighted). Rare
    # classes (83 MSRS bike boxes against 532 people) are otherwise never predicted.
    sup_class_weights: List[float] = field(default_factory=list)
    fusion: str = 'auto'          # fusion-task loss: auto (the model's own) | ssvif | segfanet
    lambda_rec: float = 1.0       # weight of L_rec (SegFANet's IRM images) in the fusion task


@dataclass
class WeightingConfig:
    """How omega_csc is set in stage II."""

    method: str = 'gdwa'        # gdwa | fixed | dwa | ucw
    fixed_omega: float = 0.1    # for method fixed
    temperature: float = 2.0    # softmax temperature T (GDWA, DWA)
    ucw_lr: float = 1e-3        # learning rate of UCW's log-variances


@dataclass
class TrainConfig:
    """Optimisation, stages, stopping and logging."""

    epochs: int = 110
    batch_size: int = 10
    lr: float = 1e-4
    lr_schedule: str = 'constant'  # constant | cosine (to 0 over train.epochs, per epoch)
    init: str = ''                # checkpoint whose weights start the run (fine-tuning)
    ema: float = 0.0              # EMA decay of the weights per step (0 = off); see trainer
    patience: int = 10            # early stopping on the monitored value (0 = off)
    monitor: str = 'auto'         # stage II selection: auto | fusion | box_f1 | miou
    csc_ramp_epochs: int = 0      # semantic: L_seg = L_sup + ramp * L_csc over this many epochs
    csc: bool = True              # False: no S, no CSC; H only with classes msrs (supervised)
    two_stage: bool = True        # False: stage II from the first epoch (ablation iv)
    stage1_max_epochs: int = 50   # cap on stage I length
    steps_per_epoch: int = 0      # 0 = one pass over the training set
    device: str = 'auto'          # auto | cpu | cuda | cuda:N
    amp: bool = True              # mixed precision on CUDA (fp16 + GradScaler)
    amp_cpu: bool = False         # bf16 autocast on CPU (off by default: slower on most CPUs)
    threads: int = 0              # torch CPU threads (0 = torch default)
    deterministic: bool = False   # deterministic CUDA kernels where torch has them (training.md)
    log_every: int = 1            # steps between CSV/TensorBoard step rows
    val_metrics: List[str] = field(  # ssvif_ros.metrics names, grey CDDFuse convention
        default_factory=lambda: ['EN', 'MI', 'VIF', 'Qabf', 'SSIM', 'DeltaE'])
    val_metric_images: int = 4    # validation pairs scored with val_metrics per epoch
    progress: bool = True         # tqdm progress bar (drawn on a terminal only)


@dataclass
class Config:
    """The whole training configuration."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    weighting: WeightingConfig = field(default_factory=WeightingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> Dict[str, Any]:
        """Plain nested dict (YAML/JSON serializable)."""
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """Short stable hash of the configuration."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


_CHOICES = {
    'data.layout': ('auto', 'msrs', 'fmb', 'folders'),
    'data.resize': ('error', 'ir_to_vi', 'vi_to_ir'),
    'data.thermal_norm': ('auto', 'scale', 'fixed', 'percentile'),
    'model.segformer': ('b0', 'b1', 'b2', 'b3', 'b4', 'b5', 'tiny'),
    'weighting.method': ('gdwa', 'fixed', 'dwa', 'ucw'),
    'data.labels': ('auto', 'pixels', 'boxes', 'none'),
    'model.classes': ('clusters', 'msrs'),
    'model.head_padding': ('replicate', 'zeros'),
    'train.monitor': ('auto', 'fusion', 'box_f1', 'miou'),
    'loss.fusion': ('auto', 'ssvif', 'segfanet'),
    'train.lr_schedule': ('constant', 'cosine'),
}


def _build(cls, data: Dict[str, Any], prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f'{prefix or "config"} must be a mapping, got {type(data).__name__}')
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        names = ', '.join(f'{prefix}{k}' for k in unknown)
        raise ConfigError(f'unknown configuration key(s): {names}; '
                          f'valid keys under {prefix or "top level"}: {", ".join(known)}')
    kwargs = {}
    for name, value in data.items():
        f = known[name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING \
            else f.default
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value or {}, f'{prefix}{name}.')
        elif default is None and value is not None and 'float' in str(f.type):
            kwargs[name] = _coerce(value, 0.0, f'{prefix}{name}')  # Optional[float]
        else:
            kwargs[name] = _coerce(value, default, f'{prefix}{name}')
    return cls(**kwargs)


def _coerce(value, default, key):
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f'{key} must be true or false, got {value!r}')
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f'{key} must be an integer, got {value!r}')
        return value
    if isinstance(default, float):
        if isinstance(value, str):
            # YAML 1.1 reads 1e-4 (no dot) as a string; accept what Python reads as a number.
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f'{key} must be a number, got {value!r}')
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f'{key} must be a string, got {value!r}')
        return value
    if isinstance(default, list):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(',') if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f'{key} must be a list, got {value!r}')
        return value
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise ConfigError(f'{key} must be a mapping, got {value!r}')
        return value
    return value


def validate(cfg: Config) -> Config:
    """Check value ranges and choices; raise ConfigError naming the key."""
    flat = _flatten(cfg.to_dict())
    for key, choices in _CHOICES.items():
        if flat[key] not in choices:
            raise ConfigError(f'{key} must be one of {choices}, got {flat[key]!r}')
    for key, v in flat.items():  # .nan and .inf read as floats: no setting means them
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f'{key} must be a finite number, got {v}')
    positive = ('data.crop', 'train.epochs', 'train.batch_size', 'model.num_classes',
                'model.head_hidden', 'train.log_every', 'train.stage1_max_epochs')
    for key in positive:
        if flat[key] < 1:
            raise ConfigError(f'{key} must be >= 1, got {flat[key]}')
    # 0 means "off" or "all" for these; a negative count would silently mean 0 too.
    non_negative = ('train.patience', 'data.max_pairs', 'train.steps_per_epoch',
                    'data.val_crop', 'data.workers', 'train.threads', 'train.val_metric_images')
    for key in non_negative:
        if flat[key] < 0:
            raise ConfigError(f'{key} must be >= 0, got {flat[key]}')
    _check_thermal(cfg.data)
    _check_model(cfg.model)
    if cfg.model.classes == 'msrs' and not 4 <= cfg.model.num_classes <= 9:
        raise ConfigError(f'model.num_classes must be 4..9 with model.classes msrs (background, '
                          f'car, person, bike, ... of MSRS), got {cfg.model.num_classes}')
    if cfg.train.monitor in ('box_f1', 'miou') and cfg.model.classes != 'msrs':
        raise ConfigError(f'train.monitor {cfg.train.monitor} needs model.classes msrs')
    w = cfg.loss.sup_class_weights
    if w and (cfg.model.classes != 'msrs' or len(w) != cfg.model.num_classes
              or not all(float(x) > 0 for x in w)):
        raise ConfigError(f'loss.sup_class_weights must be empty or {cfg.model.num_classes} '
                          f'positive numbers (one per class, model.classes msrs), got {list(w)}')
    if not 0.0 <= cfg.loss.csc_threshold < 1.0 or cfg.train.csc_ramp_epochs < 0:
        raise ConfigError('loss.csc_threshold must be in [0, 1) and train.csc_ramp_epochs >= 0')
    if not 0.0 <= cfg.data.object_crop <= 1.0:
        raise ConfigError(f'data.object_crop must be in [0, 1], got {cfg.data.object_crop}')
    if cfg.data.box_margin < 0 or not 0.0 <= cfg.data.box_core <= 1.0:
        raise ConfigError('data.box_margin must be >= 0 and data.box_core in [0, 1]')
    if not 0.0 <= cfg.data.val_fraction < 1.0:
        raise ConfigError(f'data.val_fraction must be in [0, 1), got {cfg.data.val_fraction}')
    if not 0.0 <= cfg.train.ema < 1.0:
        raise ConfigError(f'train.ema must be in [0, 1), got {cfg.train.ema}')
    if cfg.train.lr <= 0:
        raise ConfigError(f'train.lr must be > 0, got {cfg.train.lr}')
    if cfg.weighting.temperature <= 0:
        raise ConfigError(f'weighting.temperature must be > 0, got {cfg.weighting.temperature}')
    if cfg.train.val_metrics:
        from ssvif_ros.metrics import metric_names
        bad = [m for m in cfg.train.val_metrics if m not in metric_names()]
        if bad:
            raise ConfigError(f'train.val_metrics: unknown metric(s) {bad}; '
                              f'known: {metric_names()}')
    for key in ('lambda_int', 'lambda_grad', 'lambda_ssim', 'lambda_color', 'dice_eps',
                'lambda_rec'):
        if getattr(cfg.loss, key) < 0:
            raise ConfigError(f'loss.{key} must be >= 0')
    return cfg


def _check_thermal(d: DataConfig) -> None:
    """The thermal normalization as ssvif_ros.imaging.ThermalNorm checks it, keys named."""
    from ssvif_ros.imaging import ThermalNorm
    if d.thermal_norm == 'fixed' and (d.thermal_lo is None or d.thermal_hi is None):
        missing = [k for k in ('thermal_lo', 'thermal_hi') if getattr(d, k) is None]
        raise ConfigError(f'data.thermal_norm fixed needs data.thermal_lo and data.thermal_hi '
                          f'(missing: {", ".join("data." + k for k in missing)})')
    try:
        ThermalNorm(d.thermal_norm, d.thermal_lo, d.thermal_hi, d.thermal_p_lo, d.thermal_p_hi)
    except ValueError as exc:
        keys = ('data.thermal_lo, data.thermal_hi' if 'fixed' in str(exc)
                else 'data.thermal_p_lo, data.thermal_p_hi')
        raise ConfigError(f'{keys}: {exc}') from None


def _check_model(m: ModelConfig) -> None:
    """model.name is a registered model and model.args are arguments it takes."""
    import inspect
    from ssvif_train.models import registry
    names = registry.available_models()
    if m.name not in names:
        raise ConfigError(f'model.name must be one of {", ".join(names)}; got {m.name!r}')
    params = inspect.signature(registry.model_class(m.name)).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    takes = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    bad = sorted(set(m.args) - set(takes))
    if bad:
        raise ConfigError(f'model.args.{bad[0]}: model {m.name} has no argument {bad[0]!r}; '
                          f'its arguments: {", ".join(takes)}')


def _flatten(d: Dict[str, Any], prefix: str = '') -> Dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != 'args':
            out.update(_flatten(v, f'{prefix}{k}.'))
        else:
            out[f'{prefix}{k}'] = v
    return out


Override = Union[str, Tuple[str, Any]]


def yaml_error_text(exc: yaml.YAMLError, source: str = '') -> str:
    """One line for a YAML error (PyYAML's message spans lines).

    ``source:line:col: problem (context)`` for a file, ``column col: problem`` without one.
    """
    mark = getattr(exc, 'problem_mark', None)
    problem = getattr(exc, 'problem', None) or (str(exc).strip().splitlines() or ['?'])[0]
    context = getattr(exc, 'context', None)
    text = problem + (f' ({context})' if context else '')
    if mark is None:
        return f'{source}: {text}' if source else text
    if source:
        return f'{source}:{mark.line + 1}:{mark.column + 1}: {text}'
    return f'column {mark.column + 1}: {text}'


def apply_override(data: Dict[str, Any], assignment: Override) -> None:
    """Apply one override to a nested dict.

    ``'a.b=c'``: the value is parsed as YAML; ``('a.b', value)``: the value is taken literally.
    """
    if isinstance(assignment, tuple):
        key, value = assignment
    else:
        if '=' not in assignment:
            raise ConfigError(f'override {assignment!r} is not of the form key=value')
        key, raw = assignment.split('=', 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ''
        except yaml.YAMLError as exc:
            raise ConfigError(f'override {assignment!r}: value is not valid YAML: '
                              f'{yaml_error_text(exc)}') from None
    key = key.strip()
    parts = key.split('.')
    if not key or any(not p for p in parts):
        raise ConfigError(f'override {assignment!r} has an empty key')
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f'override {assignment!r}: {p} is not a section')
    node[parts[-1]] = value


def config_from_dict(data: Dict[str, Any], overrides: Sequence[Override] = ()) -> Config:
    """Build and validate a Config from a nested dict plus overrides (:func:`apply_override`)."""
    data = json.loads(json.dumps(data or {}))  # deep copy, plain types
    for ov in overrides:
        apply_override(data, ov)
    return validate(_build(Config, data, ''))


# What ``--resume`` may change: settings that do not shape what the run already did (and that the
# resumed run applies: the epoch and patience limits, a constant learning rate, where the data
# is, how it is loaded). Any other change is refused; see doc/training.md.
RESUME_KEYS = frozenset({'train.epochs', 'train.patience', 'train.lr', 'train.progress',
                         'train.threads', 'train.device', 'data.workers', 'data.cache',
                         'data.root', 'data.vi', 'data.ir', 'data.boxes', 'data.extra'})


def resume_config(saved: Dict[str, Any], overrides: Sequence[Override] = ()) -> Config:
    """The configuration of a resumed run: the saved one plus the overrides it may take.

    ConfigError naming every key whose change ``--resume`` refuses (:data:`RESUME_KEYS`; with
    ``train.lr_schedule: cosine`` also train.epochs and train.lr, which shape its curve).
    """
    before = _flatten(config_from_dict(saved).to_dict())
    cfg = config_from_dict(saved, overrides)
    after = _flatten(cfg.to_dict())
    changed = [k for k in after if after[k] != before.get(k)]
    allowed = RESUME_KEYS
    if cfg.train.lr_schedule == 'cosine':
        allowed = allowed - {'train.epochs', 'train.lr'}
    bad = [k for k in changed if k not in allowed]
    if bad:
        what = ', '.join(f'{k} {before.get(k)!r} -> {after[k]!r}' for k in bad)
        raise ConfigError(f'--resume cannot change {what}: the run was trained with it (on '
                          f'resume only {", ".join(sorted(allowed))} may change); start a new '
                          'run with --set train.init=RUN/last.pt instead')
    return cfg


def load_config(path: Optional[str], overrides: Sequence[Override] = ()) -> Config:
    """Read a YAML config (``None`` = defaults), apply overrides, validate."""
    data: Dict[str, Any] = {}
    if path:
        try:
            with open(path, encoding='utf-8') as f:
                data = yaml.safe_load(f) or {}
        except FileNotFoundError:
            raise ConfigError(f'config file not found: {path}') from None
        except IsADirectoryError:
            raise ConfigError(f'config file {path} is a folder, not a YAML file') from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f'config file {path} is not UTF-8 text (byte '
                              f'{exc.object[exc.start:exc.start + 1]!r}: {exc.reason})') from None
        except OSError as exc:
            raise ConfigError(f'cannot read config file {path}: {exc.strerror or exc}') from None
        except yaml.YAMLError as exc:
            raise ConfigError(yaml_error_text(exc, path)) from None
        if not isinstance(data, dict):
            raise ConfigError(f'config file {path} must hold a mapping at top level')
    try:
        return config_from_dict(data, overrides)
    except ConfigError as exc:
        if path:
            raise ConfigError(f'{path}: {exc}') from exc
        raise
