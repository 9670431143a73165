"""``ssvif-bag eval``'s scoring and report: per-frame metrics, report.json / report.md, plots.

:mod:`ssvif_ros.bag_eval` pairs, fuses (or records the node's outputs) and hands every fused
frame to :class:`Scores`; :func:`build_report`, :func:`report_markdown` and :func:`write_plots`
turn the run into the files documented there.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ssvif_ros import imaging, labels, metrics
from ssvif_ros.bag_read import BagError
from ssvif_ros.frames import RGB, STREAM_NAMES

PROG = 'ssvif-bag eval'
METRICS = ('EN', 'SD', 'SF', 'AG', 'MI', 'Qabf', 'SSIM', 'VIF')


# ---------------------------------------------------------------------------------------------
# Scoring shared by both modes


class Scores:
    """Per-frame rows, metric values, box scores and the strip of the report."""

    def __init__(self, backend, boxes_dir: Optional[str], stems: Dict[int, str], strip: int,
                 expected: int):
        self.rows: List[Dict[str, Any]] = []
        self.backend = backend
        self.stems = stems
        self.boxes_dir = Path(boxes_dir) if boxes_dir else None
        self.box_problems: List[str] = []
        self.scorer = labels.BoxScorer() if self.boxes_dir else None
        self.box_map = labels.box_class_map(labels.DEFAULT_BOX_CLASSES)
        self.box_files = 0
        self.strip: List[Tuple] = []
        self.strip_every = max(1, expected // max(strip, 1))
        self.strip_max = strip

    def add(self, stamp: int, th_stamp: int, vis: np.ndarray, ir: np.ndarray, fused8: np.ndarray,
            ids: np.ndarray, t_s: float, latency_ms: float) -> None:
        """Score one fused frame (vis/ir: the backend's inputs, fused8: rgb8 output)."""
        vis8, ir8 = imaging.to_uint8(vis), imaging.to_uint8(ir)  # ir: the H x W thermal plane
        errs: List[str] = []
        vals = metrics.compute_fusion_metrics(vis8, ir8, fused8, names=METRICS, errors=errs)
        stem = self.stems.get(stamp, '')
        row = {'stamp_ns': stamp, 'thermal_stamp_ns': th_stamp, 'stem': stem,
               't_s': round(t_s, 4), 'latency_ms': round(latency_ms, 3), **vals}
        if errs:
            row['metric_errors'] = errs
        if self.scorer is not None:
            self._score_boxes(stamp, stem, ids)
        self.rows.append(row)
        n = len(self.rows) - 1
        if n % self.strip_every == 0 and len(self.strip) < self.strip_max:
            self.strip.append((stem or str(stamp), vis8, ir8, fused8, ids))

    def _score_boxes(self, stamp: int, stem: str, ids: np.ndarray) -> None:
        if not stem:
            self.box_problems.append(f'{stamp}: no source file known (no frames.csv)')
            return
        path = self.boxes_dir / f'{stem}.txt'
        if not path.is_file():
            self.box_problems.append(f'{stem}: no box file {path.name}, not scored')
            return
        try:
            boxes = labels.read_boxes(path, self.box_map)
        except labels.BoxError as exc:
            raise BagError(str(exc)) from None
        self.scorer.add(np.asarray(ids, np.uint8), boxes)
        self.box_files += 1

    def box_result(self) -> Optional[Dict[str, Any]]:
        """Box scores, or None without ``--boxes``."""
        if self.scorer is None:
            return None
        res = self.scorer.result()
        res.update(n_images=self.box_files, problems=self.box_problems,
                   semantic=bool(self.backend.semantic))
        return res


def summarize(values: Sequence[float]) -> Dict[str, float]:
    """count, mean, std, min, p50, p90, p99, max of the finite values (NaN when none)."""
    a = np.asarray([v for v in values if v is not None and math.isfinite(v)], np.float64)
    if a.size == 0:
        nan = float('nan')
        return {'count': 0, 'mean': nan, 'std': nan, 'min': nan, 'p50': nan, 'p90': nan,
                'p99': nan, 'max': nan}
    return {'count': int(a.size), 'mean': float(a.mean()), 'std': float(a.std()),
            'min': float(a.min()), 'p50': float(np.percentile(a, 50)),
            'p90': float(np.percentile(a, 90)), 'p99': float(np.percentile(a, 99)),
            'max': float(a.max())}


def rate_series(times_s: Sequence[float], bin_s: float = 1.0) -> List[Tuple[float, float]]:
    """Outputs per second in ``bin_s`` bins from the first output: ``[(bin start, Hz)]``.

    The last bin is divided by the time it covers up to the last output (left out when that is
    under half a bin, too short for a rate).
    """
    if not len(times_s):
        return []
    t = np.asarray(times_s, np.float64)
    t = t - t.min()
    n = int(t.max() // bin_s) + 1
    counts = np.bincount((t // bin_s).astype(int), minlength=n)
    widths = [bin_s] * n
    widths[-1] = float(t.max() - (n - 1) * bin_s)
    return [(round(i * bin_s, 3), float(c) / w) for i, (c, w) in enumerate(zip(counts, widths))
            if w >= bin_s / 2]


# ---------------------------------------------------------------------------------------------
# Report


def build_report(args, res: Dict[str, Any], out: Path, mode: str, cfg, model) -> Dict:
    """report.json content."""
    inputs, scores = res['inputs'], res['scores']
    rows = scores.rows
    reasons: Dict[str, int] = {}
    for reason in res['dropped'].values():
        reasons[reason] = reasons.get(reason, 0) + 1
    stems = scores.stems
    missing = [{'stream': STREAM_NAMES[s], 'stamp_ns': t, 'stem': stems.get(t, '') if s == RGB
                else '', 'reason': r}
               for (s, t), r in sorted(res['dropped'].items(), key=lambda kv: kv[0][1])
               if t >= 0]
    for m in missing:  # frames.csv knows when `make --drop` left the partner out
        if m['stream'] == 'rgb' and m['stamp_ns'] in res.get('no_partner', ()):
            m['note'] = 'its thermal frame is not in the bag'
    latency = summarize([r['latency_ms'] for r in rows])
    rates = rate_series([r['t_s'] for r in rows])
    status = ('interrupted' if inputs.interrupted else 'truncated' if inputs.stopped
              else 'complete')
    backend = res['backend']
    diag = (res['node'] or {}).get('diagnostics') or {}
    return {
        'tool': PROG, 'mode': mode, 'status': status, 'stopped': inputs.where(),
        'bag': os.path.abspath(args.bag), 'out': str(out), 'output_bag': res['output_bag'],
        'backend': diag.get('backend_info', backend.describe()),
        'model': diag.get('model', model or '(none)'),
        'semantic_classes': list(backend.class_names) if backend.semantic else None,
        'options': {'rgb_topic': args.rgb_topic, 'thermal_topic': args.thermal_topic,
                    'slop': cfg.slop, 'queue_size': cfg.queue_size,
                    'reset_after': cfg.reset_after, 'params': args.param,
                    'rate': args.rate if mode == 'live' else None, 'boxes': args.boxes},
        'counts': {'rgb_frames': inputs.frames['rgb'], 'thermal_frames': inputs.frames['thermal'],
                   'rgb_in_bag': getattr(inputs, 'in_bag', {}).get('rgb'),
                   'thermal_in_bag': getattr(inputs, 'in_bag', {}).get('thermal'),
                   'pairs': res['pairs'], 'fused': len(rows),
                   'rgb_not_fused': sum(1 for m in missing if m['stream'] == 'rgb'),
                   'dropped_by_reason': dict(sorted(reasons.items()))},
        'pairing': getattr(inputs, 'pairing', None),
        'latency_ms': dict(latency, definition=res['latency_definition']),
        'rate_hz': {'mean': (len(rows) / (rows[-1]['t_s'] - rows[0]['t_s'])
                             if len(rows) > 1 and rows[-1]['t_s'] > rows[0]['t_s'] else None),
                    'per_second': rates},
        'metrics': {'convention': 'vifb', 'names': list(METRICS),
                    'summary': {m: summarize([r[m] for r in rows]) for m in METRICS}},
        'boxes': scores.box_result(),
        'node': res['node'], 'play': res.get('play'),
        'plots': {'latency': 'latency.png', 'metrics': 'metrics.png', 'classes': 'classes.png'},
        'frames': rows,
        'missing': missing,
    }


def fmt(v, digits: int = 2) -> str:
    """``v`` with ``digits`` decimals, or 'n/a' for None / NaN."""
    return 'n/a' if v is None or (isinstance(v, float) and not math.isfinite(v)) \
        else f'{v:.{digits}f}'


def report_markdown(rep: Dict) -> str:
    """report.md: counts, latency, rate, metrics, boxes, missing stamps, plots."""
    c, lat = rep['counts'], rep['latency_ms']
    lines = [f'# Rosbag evaluation ({rep["mode"]})', '',
             f'Bag `{rep["bag"]}`; backend {rep["backend"]}, model `{rep["model"]}`; '
             f'status **{rep["status"]}**.']
    if rep['stopped']:
        what = 'Interrupted' if rep['status'] == 'interrupted' else 'The bag is cut short'
        lines += ['', f'**{what}:** {rep["stopped"]}. Everything below covers the frames '
                  'before that point.']
    lines += ['', '| Input RGB | Input thermal | Pairs (pairing class) | Fused | RGB not fused |',
              '|---|---|---|---|---|',
              f'| {c["rgb_frames"]} | {c["thermal_frames"]} | {c["pairs"]} | {c["fused"]} | '
              f'{c["rgb_not_fused"]} |', '']
    if c['dropped_by_reason']:
        lines += ['Frames not fused, by reason: ' + ', '.join(
            f'`{k}` {v}' for k, v in c['dropped_by_reason'].items()) + '.', '']
    lines += [f'Latency ({lat["definition"]}), ms: p50 {fmt(lat["p50"], 1)}, p90 '
              f'{fmt(lat["p90"], 1)}, p99 {fmt(lat["p99"], 1)}, max {fmt(lat["max"], 1)} '
              f'({lat["count"]} frames). Output rate: {fmt(rep["rate_hz"]["mean"], 1)} Hz.', '']
    node = rep.get('node')
    if node and node.get('diagnostics'):
        d = node['diagnostics']
        lines += [f'Node diagnostics (last): {d.get("message", "")}; received RGB '
                  f'{d.get("frames_rgb")}, thermal {d.get("frames_thermal")}, pairs '
                  f'{d.get("pairs")}, published {d.get("published")}, drops '
                  + (', '.join(f'{k[6:]} {v}' for k, v in d.items() if k.startswith('drops.'))
                     or 'none') + '.', '']
    lines += ['## Fusion metrics (VIFB convention, against the inputs the backend saw)', '',
              '| Metric | mean | std | min | max |', '|---|---|---|---|---|']
    for m, s in rep['metrics']['summary'].items():
        lines.append(f'| {m} | {fmt(s["mean"], 3)} | {fmt(s["std"], 3)} | {fmt(s["min"], 3)} | '
                     f'{fmt(s["max"], 3)} |')
    lines.append('')
    b = rep['boxes']
    if b is not None:
        from ssvif_ros.eval_labels import box_markdown
        lines += [box_markdown({rep['backend']: b}, list(b['classes']), b['n_images'])]
        if not b['semantic']:
            lines += ["The model's classes are not the semantic MSRS ids: box scores are 0.", '']
        if b['problems']:
            lines += [f'{len(b["problems"])} frames not scored, e.g. {b["problems"][0]}.', '']
    miss = rep['missing']
    if miss:
        lines += [f'## Stamps that never came out ({len(miss)})', '',
                  '| stream | stamp [ns] | source | reason |', '|---|---|---|---|']
        lines += [f'| {m["stream"]} | {m["stamp_ns"]} | {m["stem"]} | `{m["reason"]}`'
                  + (f' ({m["note"]})' if m.get('note') else '') + ' |' for m in miss[:30]]
        if len(miss) > 30:
            lines.append(f'| ... | {len(miss) - 30} more in report.json | | |')
        lines.append('')
    lines += ['## Plots', '', '![latency and rate](latency.png)', '',
              '![metric histograms](metrics.png)', '', '![fused frames with classes](classes.png)',
              '']
    return '\n'.join(lines)


def write_plots(rep: Dict, scores: Scores, out: Path) -> None:
    """latency.png, metrics.png (matplotlib, Agg) and classes.png (the class-overlay strip)."""
    plot_latency(rep, out / 'latency.png')
    plot_metrics(rep, out / 'metrics.png')
    from ssvif_ros.contact_sheets import write_class_sheet
    b = scores.backend
    write_class_sheet(out / 'classes.png', scores.strip, b.class_names, b.palette)


def _pyplot():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def plot_latency(rep: Dict, path: Path) -> None:
    """Latency per fused frame and fused frames per second over time, from a report dict."""
    plt = _pyplot()
    rows = rep['frames']
    t = [r['t_s'] for r in rows]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 4.5), sharex=True)
    ax1.plot(t, [r['latency_ms'] for r in rows], '.-', ms=3, lw=0.8)
    ax1.set_ylabel('latency [ms]')
    what = rep['latency_ms']['definition'].split(':')[0].split(' (')[0]
    ax1.set_title(f'{rep["mode"]}: {what}', fontsize=9)
    ax1.grid(alpha=0.3)
    series = rep['rate_hz']['per_second']
    if series:
        hz = [s[1] for s in series]
        ax2.bar([s[0] for s in series], hz, width=0.9, align='edge', color='tab:green')
        ax2.set_ylim(0, max(hz) * 1.2 + 1e-9)
    ax1.set_ylim(bottom=0)
    ax2.set_ylabel('fused frames / s')
    ax2.set_xlabel('time since the first fused frame [s] (rate: per whole second)')
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_metrics(rep: Dict, path: Path) -> None:
    """One histogram per fusion metric over the frames of a report dict."""
    plt = _pyplot()
    rows = rep['frames']
    fig, axes = plt.subplots(2, 4, figsize=(10, 4.2))
    for ax, m in zip(axes.ravel(), METRICS):
        vals = [r[m] for r in rows if r[m] is not None and math.isfinite(r[m])]
        ax.hist(vals, bins=min(20, max(3, len(vals) // 2)), color='tab:blue')
        ax.set_title(m, fontsize=9)
        ax.tick_params(labelsize=7)
    fig.suptitle(f'fusion metrics per frame ({len(rows)} frames)', fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def jsonable(x):
    """``x`` with non-finite floats as None and NumPy scalars as Python ones (for JSON)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, np.generic):
        return jsonable(x.item())
    return x
