#!/usr/bin/env python3
"""One prepared device check: GPU tests, training speed, two short recipes, inference speed.

Run through ``bench/gpu_check.sh`` (doc/deployment.md). Every check runs in its own process
with a time limit; a check whose package is missing (transformers, onnxruntime, TensorRT,
pytest, ...) or whose device is absent is a 'skipped' row, never a crash. Progress goes to
stderr; stdout gets one table at the end:

1. ``pytest -m gpu test/test_gpu.py`` (the CUDA-only tests);
2. training steps/s of the three set-ups of bench/train_throughput.py;
3. a short run of the paper recipe (config/train/seafusion_ssvif.yaml: stage I -> II, CSC,
   GDWA, SegFormer-B3) and of the default recipe (config/train/rtfusion_semantic_frames.yaml),
   each exported with its ONNX Runtime parity;
4. ssvif-bench of the embedded default model at 640x480 and 1280x1024: torch fp32 and fp16
   on CUDA, ONNX Runtime CPU and CUDA EP, a TensorRT FP16 engine (built, then run).

Data: ``--data`` (default ``.gpu_data/`` in the checkout, git-ignored), an MSRS layout
(``msrs/train`` and ``msrs/val`` with ``vi``, ``ir``, ``boxes``); ``--prepare-data N`` fills it
with copies of the first N real MSRS pairs, so that the folder can travel to a device machine.
``--cpu-dry-run`` runs the same script on CPU with tiny sizes (GPU rows skipped).
"""
import argparse
import json
import os
from pathlib import Path
import re
import shutil
import subprocess
import sys
import tempfile
import time

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


class Check:
    """The table being filled and the time budget shared by every step."""

    def __init__(self, budget_s: float, dry: bool):
        self.rows = []
        self.t0 = time.monotonic()
        self.budget = budget_s
        self.dry = dry

    def left(self) -> float:
        """Seconds left of the budget."""
        return self.budget - (time.monotonic() - self.t0)

    def add(self, check: str, status: str, result: str, seconds: float = 0.0):
        """One table row (status ok | FAIL | skipped)."""
        self.rows.append((check, status, result, seconds))
        print(f'[gpu_check] {check}: {status} {result}', file=sys.stderr, flush=True)

    def run(self, check: str, cmd, limit: float, env=None):
        """(rc, output) of ``cmd`` under a time limit; None (row added) when skipped/failed."""
        limit = min(limit, self.left())
        if limit < 5:
            self.add(check, 'skipped', 'time budget spent')
            return None
        print(f'[gpu_check] {check} ...', file=sys.stderr, flush=True)
        t = time.monotonic()
        try:
            res = subprocess.run([str(c) for c in cmd], cwd=REPO, env=env, capture_output=True,
                                 text=True, timeout=limit)
        except subprocess.TimeoutExpired:
            self.add(check, 'FAIL', f'timed out after {limit:.0f} s', time.monotonic() - t)
            return None
        out = res.stdout + res.stderr
        if res.returncode != 0:
            missing = re.search(r"No module named '([^']+)'|needs the Python module '([^']+)'",
                                out)
            if missing:
                self.add(check, 'skipped', f'module {missing.group(1) or missing.group(2)} '
                         'is not installed', time.monotonic() - t)
            else:
                last = [ln for ln in out.strip().splitlines() if ln.strip()][-1:] or ['']
                self.add(check, 'FAIL', f'exit {res.returncode}: {last[0][:160]}',
                         time.monotonic() - t)
            return None
        return res.returncode, out, time.monotonic() - t

    def table(self) -> str:
        """The one table of the check."""
        lines = ['| check | status | result | s |', '|---|---|---|---|']
        for check, status, result, sec in self.rows:
            lines.append(f'| {check} | {status} | {result} | {sec:.0f} |')
        return '\n'.join(lines)


def probe(code: str) -> bool:
    """True when ``code`` runs without error in a fresh interpreter (a package/device probe)."""
    res = subprocess.run([PY, '-c', code], cwd=REPO, capture_output=True, text=True,
                         timeout=120, env=dict(os.environ, PYTHONPATH=str(REPO)))
    return res.returncode == 0


CUDA_PROBE = 'import torch; assert torch.cuda.is_available()'


def prepare_data(n: int, dest: Path, source: Path) -> int:
    """Copy the first ``n`` train pairs and n // 5 (>= 2) val pairs of MSRS into ``dest``."""
    sys.path.insert(0, str(REPO))
    from ssvif_ros.dataset_paths import list_pairs
    for split, count in (('train', n), ('val', max(2, n // 5))):
        src = source / 'msrs' / split
        pairs = list_pairs(src)[:count]
        for sub in ('vi', 'ir', 'boxes'):
            (dest / 'msrs' / split / sub).mkdir(parents=True, exist_ok=True)
        for vi, ir in pairs:
            shutil.copy2(vi, dest / 'msrs' / split / 'vi' / vi.name)
            shutil.copy2(ir, dest / 'msrs' / split / 'ir' / ir.name)
            box = src / 'boxes' / f'{vi.stem}.txt'
            if box.is_file():
                shutil.copy2(box, dest / 'msrs' / split / 'boxes' / box.name)
        print(f'{split}: {len(pairs)} pairs -> {dest / "msrs" / split}')
    return 0


def gpu_tests(ck: Check, env):
    """Row 1: the CUDA-only tests."""
    if not probe('import pytest'):
        ck.add('pytest -m gpu', 'skipped', 'pytest is not installed')
        return
    got = ck.run('pytest -m gpu', [PY, '-m', 'pytest', '-q', '-m', 'gpu', '-p',
                                   'no:cacheprovider', 'test/test_gpu.py'], 150, env)
    if got:
        summary = [ln for ln in got[1].splitlines() if re.search(r'\d+ (passed|skipped)', ln)]
        ck.add('pytest -m gpu', 'ok', summary[-1].strip('= ') if summary else 'no summary',
               got[2])


def train_speed(ck: Check, env, device: str, tmp: Path):
    """Rows 2: steps/s of the three training set-ups."""
    sizes = ['--steps', '1', '--batch', '2', '--crop', '48', '--threads', '1'] if ck.dry \
        else ['--steps', '20']
    out = tmp / 'train_speed.json'
    got = ck.run('training steps/s', [PY, 'bench/train_throughput.py', '--device', device,
                                      '--json', out, *sizes], 120, env)
    if not got:
        return
    data = json.loads(out.read_text())
    for row in data['rows']:
        ck.add(f'train {row["setup"]}', 'ok', f'{row["steps_per_s"]:.2f} steps/s '
               f'(batch {data["batch"]}, {data["crop"]}px, {data["device"]})',
               got[2] / len(data['rows']))
    # the cost of train.deterministic on the paper's set-up (B3)
    base = data['rows'][-1]['steps_per_s']
    got = ck.run('training steps/s deterministic', [
        PY, 'bench/train_throughput.py', '--device', device, '--json', out, '--setups', '3',
        '--set', 'train.deterministic=true', *sizes], 60, env)
    if got:
        sps = json.loads(out.read_text())['rows'][0]['steps_per_s']
        ck.add(f'train {data["rows"][-1]["setup"]}, train.deterministic', 'ok',
               f'{sps:.2f} steps/s, {sps / base:.2f}x the default', got[2])


def recipe(ck: Check, env, device: str, tmp: Path, name: str, config: str, data: Path):
    """Rows 3: a short run of ``config``, its export and ONNX parity, finite steps.csv."""
    run = tmp / Path(config).stem
    small = (['data.crop=48', 'data.val_crop=64', 'train.batch_size=2',
              'train.steps_per_epoch=1', 'train.threads=1'] if ck.dry
             else ['train.steps_per_epoch=10'])
    sets = ['train.epochs=2', 'train.stage1_max_epochs=1', 'train.progress=false',
            'train.val_metric_images=1', 'train.patience=0', f'train.device={device}', *small]
    cmd = [PY, '-m', 'ssvif_train.cli', config, '--data', data / 'msrs' / 'train', '--out', run]
    got = ck.run(f'recipe {name}', cmd + [a for s in sets for a in ('--set', s)], 150, env)
    if not got:
        return
    train_s = got[2]
    import csv
    with open(run / 'steps.csv', newline='') as f:
        steps = list(csv.DictReader(f))
    with open(run / 'epochs.csv', newline='') as f:
        epochs = list(csv.DictReader(f))
    bad = [r['global_step'] for r in steps if r.get('skipped') == '0' and any(
        'nan' in r.get(k, '') or 'inf' in r.get(k, '') for k in ('loss_total', 'g_a', 'g_b'))]
    skipped = sum(r.get('skipped') == '1' for r in steps)
    exp = ck.run(f'export {name}', [PY, '-m', 'ssvif_train.export', run / 'best.pt', '--out',
                                    run / 'model'], 90, env)
    if not exp:
        return
    par = json.loads((run / 'model' / 'model.json').read_text())['parity']
    status = 'ok' if not bad else 'FAIL'
    ck.add(f'recipe {name} ({Path(config).name})', status,
           f'{len(epochs)} epochs, stages {"->".join(r["stage"] for r in epochs)}, '
           f'{len(steps)} steps ({skipped} skipped by AMP), '
           f'{"non-finite rows " + ",".join(bad) if bad else "steps.csv finite"}; ONNX parity '
           f'fused {par["fused_max_grey_diff"]} grey levels, ids '
           f'{100 * par["class_ids_agreement"]:.2f}%',
           train_s + exp[2])


def inference(ck: Check, env, tmp: Path, cuda: bool):
    """Rows 4: ssvif-bench of the embedded default model for every backend present."""
    model = tmp / 'default_model'   # a copy: the TensorRT engine is written beside the ONNX
    shutil.copytree(REPO / 'ssvif_ros' / 'models' / 'default', model)
    cuda = cuda and not ck.dry
    ort_cuda = not ck.dry and probe("import onnxruntime as o; assert 'CUDAExecutionProvider' "
                                    'in o.get_available_providers()')
    # TensorRT, cuda-python and a usable GPU, as the tensorrt backend checks them
    trt = not ck.dry and probe('from ssvif_ros import trt_engine; trt_engine.check_available()')
    why_gpu = 'CPU dry run' if ck.dry else 'no CUDA device'
    setups = [('torch', 'cuda', 'fp32', cuda, why_gpu), ('torch', 'cuda', 'fp16', cuda, why_gpu),
              ('onnxruntime', 'cpu', 'fp32', True, ''),
              ('onnxruntime', 'cuda', 'fp32', ort_cuda,
               'CPU dry run' if ck.dry else 'ONNX Runtime has no CUDAExecutionProvider'),
              ('tensorrt', 'cuda:0', 'fp16', trt,
               'CPU dry run' if ck.dry else 'TensorRT or cuda-python is not installed')]
    if ck.dry:
        setups.insert(0, ('torch', 'cpu', 'fp32', True, ''))
    runs = ['--runs', '2', '--warmup', '1'] if ck.dry else ['--runs', '50', '--warmup', '5']
    for size in ('640x480', '1280x1024'):
        for backend, device, prec, present, why in setups:
            name = f'infer {size} {backend} {device} {prec}'
            if not present:
                ck.add(name, 'skipped', why)
                continue
            out = tmp / 'bench.json'
            limit = 240 if backend == 'tensorrt' else 60   # the first call builds the engine
            got = ck.run(name, [PY, '-m', 'ssvif_ros.bench_cli', '--model', model, '--backend',
                                backend, '--device', device, '--precision', prec, '--size',
                                size, *runs, '--json', out], limit, env)
            if got:
                (r,) = json.loads(out.read_text())['results']
                ck.add(name, 'ok', f'median {r["median_ms"]:.2f} ms, p99 {r["p99_ms"]:.2f} ms, '
                       f'{r["pairs_per_s"]:.1f} pairs/s on {r["device"]}', got[2])


def main(argv=None) -> int:
    """Run every check and print the table; exit 1 when a row failed."""
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--data', default=str(REPO / '.gpu_data'),
                    help='MSRS-layout data folder (default: .gpu_data in the checkout)')
    ap.add_argument('--out', default='', help='keep the runs here (default: a temp folder)')
    ap.add_argument('--cpu-dry-run', action='store_true',
                    help='same script on CPU, tiny sizes, GPU rows skipped')
    ap.add_argument('--budget', type=float, default=330.0,
                    help='seconds for all checks (later rows are skipped past it)')
    ap.add_argument('--prepare-data', type=int, default=0, metavar='N',
                    help='copy N MSRS train pairs (and N/5 val) from SSVIF_DATA to --data, exit')
    args = ap.parse_args(argv)
    data = Path(args.data).resolve()
    if args.prepare_data:
        source = Path(os.environ.get('SSVIF_DATA', REPO.parent / 'shared' / 'data'))
        return prepare_data(args.prepare_data, data, source)
    if not (data / 'msrs' / 'train' / 'vi').is_dir():
        print(f'gpu_check: error: no MSRS pairs in {data}/msrs/train (fill it with '
              '`bench/gpu_check.sh --prepare-data 40` where the data is)', file=sys.stderr)
        return 2
    ck = Check(args.budget, args.cpu_dry_run)
    device = 'cpu' if args.cpu_dry_run else 'cuda'
    env = dict(os.environ, SSVIF_DATA=str(data), PYTHONPATH=str(REPO))
    if args.cpu_dry_run:
        env['CUDA_VISIBLE_DEVICES'] = ''   # the same code paths as a host without a GPU
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(args.out).resolve() if args.out else Path(scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        gpu_tests(ck, env)
        cuda = not args.cpu_dry_run and probe(CUDA_PROBE)
        if not args.cpu_dry_run and not cuda:
            ck.add('CUDA', 'FAIL', 'torch sees no CUDA device (use --cpu-dry-run on CPU)')
        else:
            train_speed(ck, env, device, tmp)
            recipe(ck, env, device, tmp, 'paper',
                   'config/train/seafusion_ssvif.yaml', data)
            recipe(ck, env, device, tmp, 'default',
                   'config/train/rtfusion_semantic_frames.yaml', data)
        inference(ck, env, tmp, cuda)
    print(f'gpu_check: {"CPU dry run" if args.cpu_dry_run else "device check"}, '
          f'{time.monotonic() - ck.t0:.0f} s, data {data}')
    print(ck.table())
    return 1 if any(r[1] == 'FAIL' for r in ck.rows) else 0


if __name__ == '__main__':
    sys.exit(main())
