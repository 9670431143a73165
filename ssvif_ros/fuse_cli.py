"""``ssvif-fuse``: run a model over folders of image pairs and write what the node would publish.

    ssvif-fuse --vi DIR --ir DIR --out DIR [--model M] [--backend onnxruntime] [--threads 2]
               [--thermal-norm auto] [--param NAME:=VALUE ...] [--no-seg]

Pairs match by file stem (as in training). Each pair goes through the node's own frame path
(:func:`ssvif_ros.frames.register_pair`: thermal normalization, ``thermal_homography``, the
``size_mismatch`` policy, ``output_size``) with the node's parameters (``--param``, e.g.
``--param output_size:=320x240``; :mod:`ssvif_ros.node_params`), then the same backend as the
node. For each pair it writes ``OUT/fused/<stem>.png`` (RGB), ``OUT/segmentation/<stem>.png``
(class ids, mono8) and ``OUT/segmentation_color/<stem>.png`` (the palette, blended over the
fused image with ``overlay_alpha`` as the node does). Unpaired or unreadable files are listed
by name at the end and in ``OUT/report.json``; the pairs already written stay.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from ssvif_ros import frames, imaging, progress
from ssvif_ros.node_params import defaults, FusionConfig, make_config, parse_assignments


def _config(args) -> FusionConfig:
    """The node's configuration from ``--param`` and the thermal options; ValueError if bad."""
    values = defaults()
    values.update(parse_assignments(args.param))
    values['thermal_norm'] = args.thermal_norm
    for name in ('thermal_lo', 'thermal_hi'):
        given = getattr(args, name)
        if given is not None:
            values[name] = given
        elif args.thermal_norm == 'fixed':
            raise ValueError(f'--thermal-norm fixed needs --{name.replace("_", "-")}')
    values['backend'], values['model'] = args.backend, args.model
    return make_config(values)


def _pairs(vi_dir: str, ir_dir: str):
    def by_stem(d):
        out = {}
        for name in sorted(os.listdir(d)):
            stem, ext = os.path.splitext(name)
            if ext.lower() in imaging.IMAGE_EXTENSIONS:
                out.setdefault(stem, os.path.join(d, name))
        return out
    vis, irs = by_stem(vi_dir), by_stem(ir_dir)
    both = sorted(set(vis) & set(irs))
    return ([(s, vis[s], irs[s]) for s in both], sorted(set(vis) - set(irs)),
            sorted(set(irs) - set(vis)))


def main(argv=None) -> int:
    """Entry point; exit 0 when every pair was fused, 1 when some failed, 2 on bad arguments."""
    ap = argparse.ArgumentParser(prog='ssvif-fuse', description=__doc__.split('\n\n')[0])
    ap.add_argument('--vi', required=True, help='visible image folder')
    ap.add_argument('--ir', required=True, help='thermal image folder')
    ap.add_argument('--out', required=True, help='output folder')
    ap.add_argument('--model', default='', help='model folder/file ("" = embedded default)')
    ap.add_argument('--backend', default='onnxruntime')
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--thermal-norm', default='auto', choices=imaging.THERMAL_METHODS)
    ap.add_argument('--thermal-lo', type=float, default=None)
    ap.add_argument('--thermal-hi', type=float, default=None)
    ap.add_argument('--param', nargs='+', default=[], metavar='NAME:=VALUE',
                    help='fusion_node parameters, e.g. thermal_homography:="[...]" '
                    'size_mismatch:=reject output_size:=640x480')
    ap.add_argument('--no-seg', action='store_true', help='write the fused images only')
    args = ap.parse_args(argv)
    from ssvif_ros.backends import BackendError, create_backend
    for d in (args.vi, args.ir):
        if not os.path.isdir(d):
            print(f'ssvif-fuse: error: folder not found: {d}', file=sys.stderr)
            return 2
    try:
        cfg = _config(args)
        backend = create_backend(args.backend, args.model, threads=args.threads)
    except (ValueError, BackendError) as exc:
        print(f'ssvif-fuse: error: {exc}', file=sys.stderr)
        return 2
    # An existing file as --out is refused before any work; folders are made for the first
    # output, so a run that writes nothing leaves no empty folders behind.
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        print(f'ssvif-fuse: error: cannot create output folder {args.out}: it is an existing '
              'file', file=sys.stderr)
        return 2
    pairs, vi_only, ir_only = _pairs(args.vi, args.ir)
    if not pairs:
        print(f'ssvif-fuse: error: no pairs with matching names in {args.vi} and {args.ir}',
              file=sys.stderr)
        return 2
    subs = ('fused',) if args.no_seg else ('fused', 'segmentation', 'segmentation_color')
    pal = backend.palette
    failed = {}
    times = []
    it = progress.bar(pairs, desc='fusing', unit='pair')
    for stem, vp, ip in it:
        try:
            vis, ir = frames.register_pair(imaging.read_image(vp, 'rgb'),
                                           imaging.read_image(ip, 'gray'), cfg)
            t0 = time.perf_counter()
            fused, ids = backend.infer(vis, ir)
            times.append(time.perf_counter() - t0)
        except (OSError, ValueError) as exc:  # frames.FrameError is a ValueError
            failed[stem] = str(exc)
            continue
        try:
            for sub in subs:
                os.makedirs(os.path.join(args.out, sub), exist_ok=True)
        except OSError as exc:
            print(f'ssvif-fuse: error: cannot create output folder {args.out}: '
                  f'{exc.strerror or exc}', file=sys.stderr)
            return 2
        try:
            fused8 = imaging.to_uint8(fused)  # H x W x 3 uint8
            imaging.write_image(os.path.join(args.out, 'fused', f'{stem}.png'), fused8)
            if not args.no_seg:
                imaging.write_image(os.path.join(args.out, 'segmentation', f'{stem}.png'), ids)
                color = imaging.class_overlay(fused8, ids, pal, cfg.overlay_alpha,
                                              backend.semantic)  # H x W x 3 uint8
                imaging.write_image(os.path.join(args.out, 'segmentation_color', f'{stem}.png'),
                                    color)
        except (OSError, ValueError) as exc:  # a full disk: the pairs written so far stay
            print(f'ssvif-fuse: error: cannot write the outputs of pair {stem} to {args.out}: '
                  f'{getattr(exc, "strerror", None) or exc}', file=sys.stderr)
            return 2
    report = {'backend': backend.describe(), 'pairs': len(pairs),
              'written': len(pairs) - len(failed), 'failed': failed,
              'visible_without_thermal': vi_only, 'thermal_without_visible': ir_only,
              'median_infer_ms': 1000 * sorted(times)[len(times) // 2] if times else None}
    try:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, 'report.json'), 'w', encoding='utf-8') as f:
            json.dump(report, f, indent=2)
    except OSError as exc:
        print(f'ssvif-fuse: error: cannot write {os.path.join(args.out, "report.json")}: '
              f'{exc.strerror or exc}', file=sys.stderr)
        return 2
    print(f'ssvif-fuse: {report["written"]}/{len(pairs)} pairs fused with {backend.describe()} '
          f'into {args.out}')
    for what, items in (('visible without thermal', vi_only),
                        ('thermal without visible', ir_only)):
        if items:
            print(f'  {len(items)} {what}: {", ".join(items[:10])}')
    for stem, err in failed.items():
        print(f'  failed {stem}: {err}', file=sys.stderr)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
