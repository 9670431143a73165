"""``ssvif-eval fusion``: fusion metrics of one or more methods' folders.

The command, its file matching and its outputs are described in :mod:`ssvif_ros.eval_cli`.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
import sys
from typing import Dict, List, Sequence, Tuple

import numpy as np

from ssvif_ros import metrics
from ssvif_ros.contact_sheets import contact_sheet
from ssvif_ros.eval_common import (EvalError, finite_mean, json_value, list_images,
                                   nothing_scored, progress, read_checked, size_text)


def match_fused(stems: Sequence[str], fused_files: Dict[str, Path], method: str
                ) -> Tuple[Dict[str, Path], Dict[str, List[str]]]:
    """Find each source stem's fused file among ``fused_files`` (stem -> path).

    Returns ``(matches, ambiguous)``: ``matches[stem] = path``; ``ambiguous[stem]`` lists the
    candidate file names when several ``stem_*`` files exist and none is ``stem_<method>``.
    """
    stems_sorted = sorted(stems, key=len, reverse=True)
    owner: Dict[str, str] = {}
    for fstem in fused_files:
        for s in stems_sorted:  # longest source stem that the fused stem extends
            if fstem == s or fstem.startswith(s + '_'):
                owner[fstem] = s
                break
    matches: Dict[str, Path] = {}
    ambiguous: Dict[str, List[str]] = {}
    for s in stems:
        cands = [f for f, o in owner.items() if o == s]
        if f'{s}_{method}' in cands:
            matches[s] = fused_files[f'{s}_{method}']
        elif s in cands:
            matches[s] = fused_files[s]
        elif len(cands) == 1:
            matches[s] = fused_files[cands[0]]
        elif len(cands) > 1:
            ambiguous[s] = sorted(fused_files[c].name for c in cands)
    return matches, ambiguous


def run_fusion(args) -> int:
    """``ssvif-eval fusion``; returns the exit status (EvalError for the user's mistakes)."""
    try:
        names = metrics.resolve_names(args.metrics.split(',') if args.metrics else None)
    except ValueError as e:
        raise EvalError(str(e)) from None
    vi_files = list_images(args.vi, 'visible (--vi)')
    ir_files = list_images(args.ir, 'infrared (--ir)')
    if args.name and len(args.name) != len(args.fused):
        raise EvalError(f'--name was given {len(args.name)} times but --fused {len(args.fused)} '
                        f'times; give one name per --fused folder or none')
    methods = list(args.name) if args.name else [Path(f).resolve().name for f in args.fused]
    if len(set(methods)) != len(methods):
        raise EvalError(f'method names must be unique, got {methods}; use --name')
    problems: List[str] = []
    stems = sorted(s for s in vi_files if s in ir_files)
    for s in sorted(set(vi_files) ^ set(ir_files)):
        where = 'infrared' if s in vi_files else 'visible'
        problems.append(f'source {s}: no {where} image, not scored')
    if not stems:
        raise EvalError(f'no visible/infrared pairs with the same file stem in {args.vi} and '
                        f'{args.ir}')
    report: Dict[str, dict] = {}
    matches: Dict[str, Dict[str, Path]] = {}
    for method, folder in zip(methods, args.fused):
        files = list_images(folder, f'fused (--fused for {method})')
        m, amb = match_fused(stems, files, method)
        matches[method] = m
        missing = [s for s in stems if s not in m and s not in amb]
        report[method] = {'folder': str(Path(folder)), 'missing': missing,
                          'ambiguous': amb, 'size_mismatch': {}, 'per_image': {}}
        for s in missing:
            problems.append(f'{method}: no fused image for {s}')
        for s, c in amb.items():
            problems.append(f'{method}: several fused files could be {s} ({", ".join(c)}); '
                            f'name them {s}_{method}.* or {s}.*')
    contact = args.contact.split(',') if args.contact else stems[:3]
    for s in contact:
        if s not in stems:
            raise EvalError(f'--contact image {s!r} is not a visible/infrared pair stem')
    jobs = [(s, m) for s in stems for m in methods if s in matches[m]]
    tiles: Dict[str, Dict[str, np.ndarray]] = {
        s: {'vi': read_checked(vi_files[s], True), 'ir': read_checked(ir_files[s], True)}
        for s in contact}
    bar = progress(len(jobs), args.quiet)
    cur_stem, vis, ir = None, None, None
    for s, method in jobs:
        if s != cur_stem:
            cur_stem = s
            vis, ir = read_checked(vi_files[s], True), read_checked(ir_files[s], True)
            if vis.shape[:2] != ir.shape[:2]:
                problems.append(f'source {s}: visible {size_text(vis)} and infrared '
                                f'{size_text(ir)} differ in size, not scored')
                vis = None
        if vis is None:
            bar.update(1)
            continue
        path = matches[method][s]
        fused = read_checked(path, True)
        if fused.shape[:2] != vis.shape[:2]:
            report[method]['size_mismatch'][s] = (f'{path.name} is {size_text(fused)}, sources '
                                                  f'are {size_text(vis)}')
            problems.append(f'{method}: {path.name} is {size_text(fused)} but the sources of {s} '
                            f'are {size_text(vis)}, not scored')
        else:
            errs: List[str] = []
            try:
                values = metrics.compute_fusion_metrics(vis, ir, fused, names, args.convention,
                                                        errors=errs)
            except ValueError as e:
                raise EvalError(f'{path}: {e}') from None
            problems += [f'{method}: {s}: {e} (value left empty)' for e in errs]
            report[method]['per_image'][s] = values
            if s in tiles:
                tiles[s][method] = fused
        bar.update(1)
    bar.close()
    for method in methods:
        per = report[method]['per_image']
        report[method]['n_images'] = len(per)
        report[method]['mean'] = {n: finite_mean([v[n] for v in per.values()]) for n in names}
    if not any(report[m]['n_images'] for m in methods):
        raise nothing_scored(problems)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _write_fusion_outputs(out, args, names, methods, stems, report, problems)
    contact_sheet(out / 'contact_sheet.png', contact, methods, tiles)
    for p in problems:
        print(f'warning: {p}', file=sys.stderr)
    print(_fusion_markdown(args, names, methods, stems, report, problems))
    print(f'wrote {out / "fusion_metrics.md"}, fusion_metrics.json, per_image.csv, '
          f'contact_sheet.png')
    return 0


def _fusion_markdown(args, names, methods, stems, report, problems) -> str:
    lines = [f'## Fusion metrics ({args.convention} convention, {len(stems)} source pairs)', '',
             '| Metric | ' + ' | '.join(methods) + ' |',
             '|---|' + '---|' * len(methods)]
    for n in names:
        arrow = '↑' if metrics.METRICS[n].higher_is_better else '↓'
        cells = []
        for m in methods:
            v = report[m]['mean'][n]
            cells.append('n/a' if not math.isfinite(v) else f'{v:.4f}')
        lines.append(f'| {n} {arrow} | ' + ' | '.join(cells) + ' |')
    counts = [str(report[m]['n_images']) for m in methods]
    lines.append('| images scored | ' + ' | '.join(counts) + ' |')
    if len({report[m]['n_images'] for m in methods}) > 1:
        lines += ['', 'Methods were scored on different image sets (see problems); their means '
                  'are not directly comparable.']
    if problems:
        lines += ['', '### Problems', ''] + [f'- {p}' for p in problems]
    lines += ['', f'Conventions: `ssvif_ros.metrics` ({args.convention}); ↑ higher is better, '
              '↓ lower is better.']
    return '\n'.join(lines) + '\n'


def _write_fusion_outputs(out: Path, args, names, methods, stems, report, problems) -> None:
    (out / 'fusion_metrics.md').write_text(
        _fusion_markdown(args, names, methods, stems, report, problems), encoding='utf-8')
    doc = {
        'convention': args.convention,
        'metrics': names,
        'higher_is_better': {n: metrics.METRICS[n].higher_is_better for n in names},
        'sources': {'vi': str(Path(args.vi)), 'ir': str(Path(args.ir)), 'pairs': stems},
        'methods': {
            m: {'folder': r['folder'], 'n_images': r['n_images'],
                'mean': {k: json_value(v) for k, v in r['mean'].items()},
                'missing': r['missing'], 'size_mismatch': r['size_mismatch'],
                'ambiguous': r['ambiguous'],
                'per_image': {s: {k: json_value(v) for k, v in vals.items()}
                              for s, vals in r['per_image'].items()}}
            for m, r in report.items()},
        'problems': problems,
    }
    (out / 'fusion_metrics.json').write_text(json.dumps(doc, indent=2), encoding='utf-8')
    with open(out / 'per_image.csv', 'w', newline='', encoding='utf-8') as fh:
        w = csv.writer(fh)
        w.writerow(['image', 'method'] + names)
        for s in stems:
            for m in methods:
                vals = report[m]['per_image'].get(s)
                if vals is not None:
                    w.writerow([s, m] + [repr(vals[n]) for n in names])
