"""The fusion node's parameters: one table, its validation and the texts made from it.

:data:`PARAMETERS` is the single source of the parameter set. The node declares its ROS
parameters from it, :func:`make_config` validates a full set of values into a
:class:`FusionConfig`, and the other places that list the parameters are generated from it and
tested against it (``test/test_node_params.py``): ``config/fusion.yaml`` (:func:`yaml_text`),
the table in ``doc/node.md`` (:func:`markdown_table`) and the backend choices of
``launch/fusion.launch.py`` (:func:`backend_choices`). After changing the table::

    python -m ssvif_ros.node_params --write

rewrites ``config/fusion.yaml`` and the table in ``doc/node.md``.

ROS-free and torch-free: the bag tools and ``ssvif-fuse`` use the same table and checks.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
import math
import os
from pathlib import Path
import sys
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from ssvif_ros import backends, imaging

NODE_NAME = 'fusion_node'
IDENTITY_HOMOGRAPHY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
# Largest output_size in pixels (8K UHD): the worker holds about 60 bytes per output pixel
# (float32 RGB and thermal, padded copies, fused, ids, uint8 encodings), 2 GB at this size.
MAX_OUTPUT_PIXELS = 7680 * 4320
# 5 MP (2560x2048): 1080p, 1440p and machine-vision 5 MP cameras; 4K UHD needs a raise.
DEFAULT_MAX_INPUT_PIXELS = 2560 * 2048
MAX_SIDE = 16384
# Input transports: sensor_msgs/Image on the topic, or CompressedImage on <topic>/compressed.
TRANSPORTS = ('raw', 'compressed')
# Frame size assumed when checking thermal_homography before any frame has arrived.
REFERENCE_SIZE = (640, 512)
FrameSizes = Tuple[Tuple[int, int], Tuple[int, int]]


# Exit codes of the node process: its start failed (bad parameter or model: a restart would
# only repeat it), or it ran until its inference worker died (a restart may help). The launch
# file's respawn and systemd's RestartPreventExitStatus tell them apart.
EXIT_START_FAILED = 2
EXIT_WORKER_DIED = 1


class StartupError(RuntimeError):
    """The node cannot start (bad parameter, missing model, backend unavailable)."""


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter as declared, documented and written to the params file.

    ``lo``/``hi``: numeric range (declared as the ROS range). ``read_only``: read once at
    configure (``ros2 param set`` refuses it from configure to cleanup; while unconfigured it
    is settable). ``values``: the documented values or range when
    not numeric. ``comment``: the short note in ``config/fusion.yaml``.
    """

    name: str
    default: Any
    description: str
    lo: Optional[float] = None
    hi: Optional[float] = None
    read_only: bool = False
    values: str = ''
    comment: str = ''

    @property
    def constraints(self) -> str:
        """The additional_constraints text of the ROS parameter descriptor."""
        return self.values if self.lo is None else ''


PARAMETERS: Tuple[ParamSpec, ...] = (
    ParamSpec('model', '', 'Model file or directory (ONNX, checkpoint, TensorRT engine); '
              "`''` = the embedded default model", read_only=True, values='path',
              comment="ONNX / checkpoint / engine / folder; '' = embedded default"),
    ParamSpec('backend', 'onnxruntime', 'Inference backend (`identity` and `maxluma` need no '
              'model)', read_only=True, values=', '.join(backends.names()),
              comment=' | '.join(backends.names())),
    ParamSpec('device', '', "Backend device; `''` = backend default", read_only=True,
              values='e.g. `cpu`, `cuda:0`', comment="'' = backend default, e.g. cpu, cuda:0"),
    ParamSpec('threads', 2, 'CPU threads of the backend', 1, 64, read_only=True,
              comment='backend CPU threads'),
    ParamSpec('autostart', True, 'Configure and activate at start (lifecycle); `false` waits '
              'for a lifecycle manager', read_only=True, values='bool',
              comment='configure + activate at start; false: wait for a manager'),
    ParamSpec('slop', 0.02, 'Largest RGB/thermal stamp difference of a pair [s]', 0.0, 1.0,
              comment='largest RGB-thermal stamp difference of a pair [s]'),
    ParamSpec('queue_size', 5, 'Frames kept per camera while waiting for a partner', 1, 100,
              comment='frames kept per stream while waiting for a partner'),
    ParamSpec('reset_after', 1.0, 'Stamps jumping back this far reset pairing [s]',
              0.01, 3600.0, comment='stamps jumping back this far (bag loop) reset pairing [s]'),
    ParamSpec('qos_reliability', 'best_effort', 'Input subscription reliability',
              read_only=True, values='best_effort, reliable',
              comment='input QoS: best_effort (sensor data) | reliable'),
    ParamSpec('qos_depth', 5, 'Input subscription queue depth', 1, 100, read_only=True,
              comment='input QoS queue depth'),
    ParamSpec('thermal_norm', 'auto', 'Thermal normalization (see "Thermal normalization")',
              values=', '.join(imaging.THERMAL_METHODS),
              comment=' | '.join(imaging.THERMAL_METHODS)),
    ParamSpec('thermal_lo', 0.0, '`fixed`: raw value (counts or degrees) mapped to 0',
              values='lo < hi', comment='fixed: raw value mapped to 0 (counts or degrees)'),
    ParamSpec('thermal_hi', 1.0, '`fixed`: raw value mapped to 1', values='lo < hi',
              comment='fixed: raw value mapped to 1'),
    ParamSpec('thermal_p_lo', 1.0, '`percentile` (and `auto` for 16-bit/float): lower '
              'percentile', 0.0, 100.0, comment='percentile / auto (16-bit, float): lower'),
    ParamSpec('thermal_p_hi', 99.0, 'upper percentile', 0.0, 100.0,
              comment='percentile / auto (16-bit, float): upper'),
    ParamSpec('thermal_homography', list(IDENTITY_HOMOGRAPHY),
              'Thermal-to-RGB pixel homography, row-major; the thermal frame is warped into '
              "the RGB frame. Refused when the RGB frame's corners come from infinity or from "
              'more than one frame size outside the thermal frame (checked against the latest '
              'frame sizes, 640x512 before any frame)',
              values='9 finite doubles, invertible, any scale',
              comment='thermal -> RGB pixel homography, row-major 3x3 (identity: registered)'),
    ParamSpec('size_mismatch', 'resize', 'Sizes differ and the homography is the identity: '
              'resize the thermal frame or drop the pair', values='resize, reject',
              comment='identity homography, sizes differ: resize | reject'),
    ParamSpec('output_size', 'input', 'Size at which the pair is fused and published (`input` '
              '= the RGB size)',
              values=f'`input` or `WxH`, at most {MAX_SIDE} a side and 7680x4320 pixels',
              comment='input (RGB size) | WxH, e.g. 640x480 (inference runs at it)'),
    ParamSpec('overlay_alpha', 0.0, 'Blend of the class colours over the fused image in '
              '`fused/segmentation_color`', 0.0, 1.0,
              comment='fused/segmentation_color: 0 = palette, >0 = blend over fused'),
    ParamSpec('publish_color', True, 'Publish `fused/segmentation_color`', values='bool',
              comment='publish fused/segmentation_color'),
    ParamSpec('rgb_transport', 'raw', 'RGB input: `raw` subscribes sensor_msgs/Image on '
              '`rgb/image_raw`, `compressed` sensor_msgs/CompressedImage on '
              '`rgb/image_raw/compressed` (JPEG, PNG; decoded with OpenCV)', read_only=True,
              values=', '.join(TRANSPORTS),
              comment='raw: Image on rgb/image_raw | compressed: <that>/compressed'),
    ParamSpec('thermal_transport', 'raw', 'Thermal input, as `rgb_transport` on '
              '`thermal/image_raw`; a 16-bit PNG keeps the raw counts, JPEG has 8 bits',
              read_only=True, values=', '.join(TRANSPORTS),
              comment='raw | compressed (16-bit PNG keeps the counts)'),
    ParamSpec('publish_camera_info', False, 'Republish `rgb/camera_info` as '
              '`fused/camera_info`', read_only=True, values='bool',
              comment='republish rgb/camera_info as fused/camera_info'),
    ParamSpec('max_input_pixels', DEFAULT_MAX_INPUT_PIXELS, 'Frames with more pixels '
              '(width x height, from the message header) are dropped on arrival, before pairing '
              'or decoding (`<stream>.too_large`)', 1, MAX_OUTPUT_PIXELS,
              comment='larger frames (w x h) dropped on arrival; 4K: 8294400'),
    ParamSpec('alignment_check_every', 0, 'Score the alignment of every N-th registered pair '
              'in /diagnostics (`alignment_score`, see "Calibrating your rig"); 0 = off',
              0, 100000, comment='alignment score every N pairs in /diagnostics; 0 = off'),
    ParamSpec('alignment_warn_below', 0.1, '/diagnostics WARN when the alignment score is '
              'below this (ssvif-register suggests a value for your rig)', -1.0, 1.0,
              comment='WARN below this alignment score (ssvif-register suggests one)'),
)
PARAM_NAMES = tuple(p.name for p in PARAMETERS)
SPECS = {p.name: p for p in PARAMETERS}


def defaults() -> Dict[str, Any]:
    """A fresh dict of every parameter's default value."""
    return {p.name: (list(p.default) if isinstance(p.default, list) else p.default)
            for p in PARAMETERS}


def backend_choices() -> Tuple[str, ...]:
    """Values the launch file's backend argument accepts: '' (keep the params file) + backends."""
    return ('',) + tuple(backends.names())


@dataclass(frozen=True)
class FusionConfig:
    """Validated parameter values (built by :func:`make_config`)."""

    model: str
    backend: str
    device: str
    threads: int
    autostart: bool
    slop: float
    queue_size: int
    reset_after: float
    qos_reliability: str
    qos_depth: int
    thermal_norm: imaging.ThermalNorm
    homography: Tuple[float, ...]
    homography_identity: bool
    size_mismatch: str
    output_size: Optional[Tuple[int, int]]
    overlay_alpha: float
    publish_color: bool
    publish_camera_info: bool
    max_input_pixels: int = DEFAULT_MAX_INPUT_PIXELS
    alignment_check_every: int = 0
    alignment_warn_below: float = 0.1
    rgb_transport: str = 'raw'
    thermal_transport: str = 'raw'


def _choice(values: Dict[str, Any], name: str, choices: Sequence[str]) -> str:
    v = values[name]
    if v not in choices:
        raise ValueError(f'parameter {name}: {v!r} is not one of {", ".join(choices)}')
    return v


def _in_range(values: Dict[str, Any], name: str, lo: float, hi: float) -> float:
    v = values[name]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f'parameter {name}: {v!r} is not a number (expected one in '
                         f'[{lo}, {hi}])')
    if not (math.isfinite(v) and lo <= v <= hi):
        raise ValueError(f'parameter {name}: {v!r} is outside [{lo}, {hi}]')
    return v


def parse_output_size(text: str) -> Optional[Tuple[int, int]]:
    """``'input'`` -> None, ``'640x480'`` -> (640, 480); ValueError otherwise."""
    text = str(text).strip().lower()
    if text == 'input':
        return None
    parts = text.split('x')
    if len(parts) == 2 and all(p.strip().isdigit() for p in parts):
        w, h = int(parts[0]), int(parts[1])
        if 1 <= w <= MAX_SIDE and 1 <= h <= MAX_SIDE:
            if w * h > MAX_OUTPUT_PIXELS:
                raise ValueError(f'parameter output_size: {w}x{h} is {w * h} pixels, more than '
                                 f'the limit of {MAX_OUTPUT_PIXELS} (7680x4320): fusing it '
                                 'would need about 60 bytes per pixel')
            return w, h
    raise ValueError(f"parameter output_size: {text!r} is not 'input' or 'WxH' "
                     f'(1..{MAX_SIDE} each, e.g. 640x480)')


def normalize_homography(values: Sequence[float]) -> Tuple[float, ...]:
    """Scale a homography to h33 = 1 (or unit norm when h33 is ~0); a homography has no scale.

    Raises ValueError naming the parameter when it is not 9 finite numbers or singular.
    """
    hom = tuple(float(v) for v in values)
    if len(hom) != 9 or not all(math.isfinite(v) for v in hom):
        raise ValueError('parameter thermal_homography: needs 9 finite numbers (row-major 3x3), '
                         f'got {list(hom)}')
    m = np.asarray(hom, np.float64).reshape(3, 3)
    norm = float(np.linalg.norm(m))
    if norm == 0.0 or abs(np.linalg.det(m / norm)) < 1e-12:
        raise ValueError(f'parameter thermal_homography: matrix {list(hom)} is singular')
    m = m / m[2, 2] if abs(m[2, 2]) > 1e-9 * norm else m / norm
    return tuple(float(v) for v in m.reshape(9))


def check_homography(hom: Sequence[float], rgb_size: Tuple[int, int],
                     thermal_size: Tuple[int, int]) -> None:
    """Raise ValueError unless every RGB frame corner comes from a sane thermal point.

    The warp samples the thermal frame at H^-1 (corner): that point must be finite (the line at
    infinity must not cross the RGB frame) and within one frame size of the thermal frame.
    """
    w, h = rgb_size
    tw, th = thermal_size
    inv = np.linalg.inv(np.asarray(hom, np.float64).reshape(3, 3))
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], np.float64).T
    src = inv @ corners  # 3 x 4
    z = src[2]
    scale = np.abs(src).max(axis=0)
    if not (np.all(z * np.sign(z[0]) > 1e-9 * scale)):
        raise ValueError(f'parameter thermal_homography: {list(hom)} sends part of the '
                         f'{w}x{h} RGB frame to infinity (its corners have no finite thermal '
                         'point)')
    xy = src[:2] / z
    if (xy[0].min() < -tw or xy[0].max() > 2 * tw or xy[1].min() < -th or xy[1].max() > 2 * th):
        pts = ', '.join(f'({x:.0f}, {y:.0f})' for x, y in xy.T)
        raise ValueError(f'parameter thermal_homography: {list(hom)} maps the corners of the '
                         f'{w}x{h} RGB frame to thermal points {pts}, more than one frame size '
                         f'outside the {tw}x{th} thermal frame')


def make_config(values: Dict[str, Any],
                frame_sizes: FrameSizes = (REFERENCE_SIZE, REFERENCE_SIZE)) -> FusionConfig:
    """Validate a full set of parameter values; raise ValueError naming the parameter at fault.

    ``frame_sizes``: (RGB, thermal) sizes (w, h) the homography is checked against.
    """
    unknown = sorted(set(values) - set(SPECS))
    if unknown:
        raise ValueError(f'parameter {unknown[0]}: not a {NODE_NAME} parameter (they are: '
                         f'{", ".join(PARAM_NAMES)})')
    for spec in PARAMETERS:
        if spec.lo is not None:
            _in_range(values, spec.name, spec.lo, spec.hi)
    backend = _choice(values, 'backend', backends.names())
    reliability = _choice(values, 'qos_reliability', ('best_effort', 'reliable'))
    size_mismatch = _choice(values, 'size_mismatch', ('resize', 'reject'))
    method = _choice(values, 'thermal_norm', imaging.THERMAL_METHODS)
    for name in ('thermal_lo', 'thermal_hi'):
        if not (isinstance(values[name], (int, float)) and math.isfinite(values[name])):
            raise ValueError(f'parameter {name}: {values[name]!r} is not a finite number')
    try:
        norm = imaging.ThermalNorm(method, float(values['thermal_lo']),
                                   float(values['thermal_hi']), float(values['thermal_p_lo']),
                                   float(values['thermal_p_hi']))
    except ValueError as exc:
        raise ValueError(f'parameters thermal_*: {exc}') from None
    hom = normalize_homography(values['thermal_homography'])
    identity = bool(np.allclose(hom, IDENTITY_HOMOGRAPHY))
    if not identity:
        check_homography(hom, *frame_sizes)
    return FusionConfig(
        model=str(values['model']), backend=backend, device=str(values['device']),
        threads=int(values['threads']), autostart=bool(values['autostart']),
        slop=float(values['slop']), queue_size=int(values['queue_size']),
        reset_after=float(values['reset_after']), qos_reliability=reliability,
        qos_depth=int(values['qos_depth']), thermal_norm=norm, homography=hom,
        homography_identity=identity, size_mismatch=size_mismatch,
        output_size=parse_output_size(values['output_size']),
        overlay_alpha=float(values['overlay_alpha']), publish_color=bool(values['publish_color']),
        publish_camera_info=bool(values['publish_camera_info']),
        max_input_pixels=int(values['max_input_pixels']),
        alignment_check_every=int(values['alignment_check_every']),
        alignment_warn_below=float(values['alignment_warn_below']),
        rgb_transport=_choice(values, 'rgb_transport', TRANSPORTS),
        thermal_transport=_choice(values, 'thermal_transport', TRANSPORTS))


def model_path(model: str, backend: str) -> Optional[str]:
    """The model path the node loads: the ``model`` parameter, or the embedded default model.

    Backends that need no model (identity, maxluma) get None (``model`` is ignored). Raises
    StartupError when the given path does not exist, or when the default is needed but
    ``ssvif_ros.models.default_model_dir`` is missing or fails.
    """
    if not backends.needs_model(backend):
        return None
    if model:
        if not os.path.exists(model):
            raise StartupError(f'model not found: {model} (parameter model)')
        return model
    try:
        from ssvif_ros.models import default_model_dir
        path = default_model_dir()
    except Exception as exc:  # noqa: BLE001 - any failure means: no default model here
        raise StartupError(
            f'no model given (parameter model is empty) and the embedded default model is not '
            f'available ({type(exc).__name__}: {exc}); pass -p model:=/path/to/model or use '
            f'-p backend:=maxluma') from None
    return str(path)


def parse_assignments(items: Sequence[str]) -> Dict[str, Any]:
    """``['slop:=0.03']`` -> ``{'slop': 0.03}`` (values parsed as YAML, like ``-p``).

    For tools that take node parameters (``--param``); ValueError for a malformed item.
    """
    import yaml
    out = {}
    for item in items or ():
        name, sep, value = item.partition(':=')
        if not sep or not name:
            raise ValueError(f'--param {item!r}: expected NAME:=VALUE, e.g. slop:=0.03')
        out[name] = yaml.safe_load(value)
    return out


# ---------------------------------------------------------------------------------------------
# Texts generated from the table


def _yaml_value(v: Any) -> str:
    if isinstance(v, bool):
        return 'true' if v else 'false'
    if isinstance(v, list):
        return '[' + ', '.join(_yaml_value(x) for x in v) + ']'
    if isinstance(v, str):
        return v if v and v.replace('_', '').isalnum() else repr(v)
    return repr(v)


def _md_value(v: Any) -> str:
    if isinstance(v, list):
        return 'identity' if tuple(v) == IDENTITY_HOMOGRAPHY else str(v)
    if isinstance(v, bool):
        return f'`{"true" if v else "false"}`'
    return f'`{v!r}`' if isinstance(v, str) and not v else f'`{v}`'


YAML_HEADER = '''\
# Parameters of the ssvif_ros fusion node (doc/node.md, section "Parameters"). Generated from
# ssvif_ros/node_params.py: edit the table there, then `python -m ssvif_ros.node_params --write`.
# The key matches a node named fusion_node in any namespace. Doubles need a decimal point
# (slop: 0.0, not 0). Parameters marked (start) are read once when the node is configured; the
# others can be changed at run time with `ros2 param set /fusion_node <name> <value>`.
/**/fusion_node:
  ros__parameters:
'''


def yaml_text() -> str:
    """The text of ``config/fusion.yaml``: every parameter with its default and a comment."""
    lines = [YAML_HEADER.rstrip('\n')]
    for p in PARAMETERS:
        note = '# ' + ('(start) ' if p.read_only else '') + p.comment
        entry = f'    {p.name}: {_yaml_value(p.default)}'
        line = f'{entry:<34}{note}' if len(entry) < 33 else f'{entry}  {note}'
        # a long line: its comment goes on the line above
        lines += ['    ' + note, entry] if len(line) > 99 else [line]
    return '\n'.join(lines) + '\n'


TABLE_BEGIN = '<!-- parameter table: generated by python -m ssvif_ros.node_params --write -->'
TABLE_END = '<!-- end of parameter table -->'


def markdown_table() -> str:
    """The parameter table of ``doc/node.md`` (between the two marker comments)."""
    rows = ['| Parameter | Default | Range / values | Run-time | Description |',
            '|---|---|---|---|---|']
    for p in PARAMETERS:
        rng = (f'{p.lo} .. {p.hi}' if p.lo is not None else p.values).replace('|', '\\|')
        rows.append(f'| `{p.name}` | {_md_value(p.default)} | {rng} | '
                    f'{"start only" if p.read_only else "yes"} | {p.description} |')
    return '\n'.join([TABLE_BEGIN] + rows + [TABLE_END])


def replace_table(doc: str) -> str:
    """``doc`` with the text between the table markers replaced by :func:`markdown_table`."""
    start, end = doc.index(TABLE_BEGIN), doc.index(TABLE_END) + len(TABLE_END)
    return doc[:start] + markdown_table() + doc[end:]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m ssvif_ros.node_params [--write]``: print or rewrite the generated texts."""
    ap = argparse.ArgumentParser(description='The node parameter table and its generated texts.')
    ap.add_argument('--write', action='store_true',
                    help='rewrite config/fusion.yaml and the table in doc/node.md')
    ap.add_argument('--root', default=str(Path(__file__).resolve().parents[1]),
                    help='repository root (default: this checkout)')
    args = ap.parse_args(argv)
    root = Path(args.root)
    if not args.write:
        print(yaml_text())
        print(markdown_table())
        return 0
    (root / 'config' / 'fusion.yaml').write_text(yaml_text())
    doc = root / 'doc' / 'node.md'
    doc.write_text(replace_table(doc.read_text()))
    return 0


if __name__ == '__main__':
    sys.exit(main())
