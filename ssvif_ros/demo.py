"""End-to-end demo (``make demo``): a bag replayed through the fusion node, with a report.

``python -m ssvif_ros.demo`` takes the rosbag replay path (:mod:`ssvif_ros.bag_cli`): it builds
a bag from the MSRS validation pairs of ``../shared/data/msrs/val`` (``ssvif-bag make``,
``--rate`` Hz for ``--seconds``, cycling through the 25 pairs, 2 ms thermal stamp jitter), then
``ssvif-bag eval --live`` starts ``fusion_node`` (the embedded default model unless
``--backend``/``--model`` say otherwise), records its outputs in another process, plays the bag
into it and writes ``<out>/replay/report.md`` (+ ``report.json``, plots, the recorded bag);
finally ``<out>/classes.png``, the class overlay contact sheet. About a minute here.

``--direct`` runs the earlier three-process path instead: a ``pair_publisher`` process streams
the pairs stamped with the wall clock and an in-process recorder saves the first fused images,
class-id masks and colour masks as PNG and the end-to-end latency (receive time minus the input
stamp) of every message to ``<out>/latency.json``.

Without the MSRS data (or with ``--synthetic``) the publisher generates a synthetic night road
scene (:func:`ssvif_ros.synthetic.synthetic_scene`): a dim visible image in which
pedestrians in dark clothes barely stand out from the road, and a thermal image in which they
and a car's engine are bright. Every process uses Fast DDS with the package's shared-memory
profile, discovery limited to this host, and a ROS domain id derived from the process id.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import sys
import time
from typing import Dict, List, Optional, Sequence

from ssvif_ros.processes import (RecorderSession, ros_env, start_fusion_node, start_publisher,
                                 stop, tail)

REPO_ROOT = Path(__file__).resolve().parents[1]


def default_msrs_val() -> Path:
    """``<shared data>/msrs/val`` (``$SSVIF_DATA`` or ``../shared/data``)."""
    from ssvif_ros.dataset_paths import shared_data_dir
    return shared_data_dir() / 'msrs' / 'val'


def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--backend', default='onnxruntime',
                   help='identity | maxluma | torch | onnxruntime | tensorrt')
    p.add_argument('--model', default='', help="model path; '' = the embedded default model")
    p.add_argument('--data', help='MSRS-layout folder (default: <shared data>/msrs/val)')
    p.add_argument('--synthetic', action='store_true', help='use the synthetic scene')
    p.add_argument('--out', default=str(REPO_ROOT / 'out' / 'demo'), help='output folder')
    p.add_argument('--rate', type=float, default=30.0, help='pairs per second')
    p.add_argument('--seconds', type=float, default=4.0, help='how long to publish')
    p.add_argument('--direct', action='store_true',
                   help='publish with pair_publisher instead of replaying a bag')
    p.add_argument('--save', type=int, default=25, help='images to save per output topic')
    p.add_argument('--overlay-alpha', type=float, default=0.5,
                   help='blend of class colours over the fused image (segmentation_color)')
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the demo; return the exit code."""
    args = _parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.direct:
        return replay(args, out)
    return direct(args, out)


def replay(args: argparse.Namespace, out: Path) -> int:
    """The bag path: ssvif-bag make, then ssvif-bag eval --live; then the class sheet."""
    import shutil

    from ssvif_ros.bag_cli import main as bag
    from ssvif_ros.synthetic import write_synthetic_folder

    t0 = time.monotonic()
    data = Path(args.data) if args.data else default_msrs_val()
    if args.synthetic or not (data / 'vi').is_dir():
        if not args.synthetic:
            print(f'demo: MSRS pairs not found in {data}; using the synthetic scene')
        data = write_synthetic_folder(out / 'synthetic', 60)
        msrs = None
    else:
        msrs = data
    count = max(1, int(round(args.rate * args.seconds)))
    bag_dir, report = out / 'bag', out / 'replay'
    shutil.rmtree(report, ignore_errors=True)
    print(f'demo: ssvif-bag make: {count} pairs of {data} at {args.rate:g} Hz -> {bag_dir}')
    code = bag(['make', '--vi', str(data / 'vi'), '--ir', str(data / 'ir'), '--out', str(bag_dir),
                '--overwrite', '--rate', str(args.rate), '--count', str(count),
                '--jitter-ms', '2'])
    if code:
        return code
    cmd = ['eval', str(bag_dir), '--live', '--out', str(report), '--backend', args.backend,
           '--param', f'overlay_alpha:={float(args.overlay_alpha)}']
    if args.model:
        cmd += ['--model', args.model]
    if (data / 'boxes').is_dir():
        cmd += ['--boxes', str(data / 'boxes')]
    print('demo: ssvif-bag ' + ' '.join(cmd))
    code = bag(cmd)
    if (report / 'report.md').is_file():
        print('\n' + '\n'.join((report / 'report.md').read_text().splitlines()[:14]) + '\n')
    sheet = class_sheet(args.backend, args.model, out / 'classes.png', msrs)
    if sheet:
        print(f'class overlay contact sheet: {sheet}')
    print(f'demo: report {report / "report.md"}; {time.monotonic() - t0:.0f} s')
    return code


def direct(args: argparse.Namespace, out: Path) -> int:
    """The publisher path: pair_publisher -> fusion_node -> in-process recorder."""
    from ssvif_ros.tools.fused_recorder import OUTPUT_TOPICS

    env = ros_env()
    os.environ.update({k: env[k] for k in (
        'RMW_IMPLEMENTATION', 'ROS_AUTOMATIC_DISCOVERY_RANGE', 'ROS_DOMAIN_ID',
        'FASTDDS_DEFAULT_PROFILES_FILE')})
    os.environ.pop('FASTRTPS_DEFAULT_PROFILES_FILE', None)
    data = Path(args.data) if args.data else default_msrs_val()
    count = max(1, int(round(args.rate * args.seconds)))
    if args.synthetic or not (data / 'vi').is_dir():
        if not args.synthetic:
            print(f'demo: MSRS pairs not found in {data}; using the synthetic scene')
        source = ['--synthetic', '60']
        source_text = 'synthetic night road scene (60 frames, 640x480)'
    else:
        source = ['--data', str(data)]
        source_text = f'MSRS pairs from {data}'

    params = [f'backend:={args.backend}', f'overlay_alpha:={float(args.overlay_alpha)}']
    if args.model:
        params.append(f'model:={args.model}')
    print(f'demo: starting fusion_node (backend {args.backend}, model '
          f'{args.model or "embedded default"}), ROS_DOMAIN_ID={env["ROS_DOMAIN_ID"]}')
    node_log = out / 'fusion_node.log'
    node = start_fusion_node(params, node_log, env)
    session = RecorderSession(OUTPUT_TOPICS, out / 'images', args.save)
    publisher = None
    try:
        if not session.wait_for_node(node):
            stop(node)
            print(f'demo: fusion_node did not start (exit code {node.returncode}):\n'
                  f'{tail(node_log)}', file=sys.stderr)
            if args.backend not in ('identity', 'maxluma'):
                print('demo: try `python -m ssvif_ros.demo --backend maxluma` (no model needed)',
                      file=sys.stderr)
            return 1
        print(f'demo: publishing {count} pairs at {args.rate:g} Hz: {source_text}')
        publisher = start_publisher(
            source + ['--rate', str(args.rate), '--count', str(count)],
            out / 'pair_publisher.log', env)
        publisher.wait(args.seconds + 60)
        time.sleep(1.5)  # the last pairs and one more diagnostics message
    finally:
        if publisher is not None:
            stop(publisher)
        node_code = stop(node)
        saved = session.recorder.write_saved()
        summary = session.recorder.summary()
        session.close()
    summary.update({
        'backend': args.backend, 'model': args.model or 'embedded default',
        'source': source_text, 'pairs_published': count, 'rate_hz': args.rate,
        'node_exit_code': node_code})
    (out / 'latency.json').write_text(json.dumps(summary, indent=2))
    _print_summary(summary, out, saved)
    sheet = class_sheet(args.backend, args.model, out / 'classes.png',
                        None if args.synthetic else data)
    if sheet:
        print(f'class overlay contact sheet: {sheet}')
    fused = summary['topics']['fused/image']['latency_ms']['count']
    return 0 if fused > 0 else 1


def class_sheet(backend: str, model: str, path: Path, msrs: Optional[Path],
                n: int = 3) -> Optional[Path]:
    """Write a contact sheet of class maps of ``n`` MSRS and ``n`` RoadScene pairs.

    The pairs are fused with the node's backend and model
    (:func:`ssvif_ros.contact_sheets.write_class_sheet`).

    Without the shared data the rows come from the synthetic scene. Returns the path, or None
    when the backend has no class map (identity, maxluma).
    """
    from ssvif_ros import imaging
    from ssvif_ros.backends import BackendError, create_backend
    from ssvif_ros.contact_sheets import write_class_sheet
    from ssvif_ros.dataset_paths import load_pairs, shared_data_dir
    from ssvif_ros.synthetic import synthetic_scene
    try:
        b = create_backend(backend, model, threads=2)
    except BackendError as exc:
        print(f'demo: no class sheet: {exc}', file=sys.stderr)
        return None
    if b.num_classes < 2:
        return None
    sources = []
    road = shared_data_dir() / 'roadscene'
    for name, folder in (('MSRS', msrs), ('RoadScene', road)):
        if folder is not None and (Path(folder) / 'vi').is_dir():
            pairs = load_pairs(folder)
            step = max(1, len(pairs) // n)
            sources += [(name, p) for p in pairs[::step][:n]]
    if not sources:
        sources = [('synthetic', synthetic_scene(i * 20)) for i in range(n)]
    rows = []
    for i, (name, (vis, ir)) in enumerate(sources):
        v, t = imaging.preprocess_pair(vis, ir)
        fused, ids = b.infer(v, t)
        rows.append((f'{name} {i + 1}', imaging.to_uint8(v), imaging.to_uint8(t[:, :, 0]),
                     imaging.to_uint8(fused), ids))
    write_class_sheet(path, rows, b.class_names, b.palette)
    return path


def _print_summary(summary: Dict, out: Path, saved: Dict[str, List[str]]) -> None:
    diag = summary.get('diagnostics', {})
    print('\n=== ssvif_ros demo ===')
    print(f'source: {summary["source"]}; backend {summary["backend"]} '
          f'({diag.get("backend_info", "?")}), model {diag.get("model", summary["model"])}')
    print(f'published pairs: {summary["pairs_published"]} at {summary["rate_hz"]:g} Hz')
    for topic, t in summary['topics'].items():
        lat = t['latency_ms']
        print(f'{topic:26s} received {lat["count"]:4d}, {t["rate_hz"]:5.1f} Hz; latency ms '
              f'median {lat["median"]:6.1f}  p90 {lat["p90"]:6.1f}  p99 {lat["p99"]:6.1f}')
    if diag:
        print(f'node: inference p50 {diag.get("inference_ms_p50")} ms, p99 '
              f'{diag.get("inference_ms_p99")} ms; processing p50 '
              f'{diag.get("processing_ms_p50")} ms; drops {diag.get("drops_total")} ('
              + ', '.join(f'{k[6:]}={v}' for k, v in diag.items() if k.startswith('drops.'))
              + ')')
    for topic, paths in saved.items():
        if paths:
            print(f'saved {len(paths)} {topic} images in {Path(paths[0]).parent}')
    print(f'latency summary: {out / "latency.json"}; node log: {out / "fusion_node.log"}')


if __name__ == '__main__':
    sys.exit(main())
