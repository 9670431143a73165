#!/usr/bin/env python3
"""Training steps/s (160x160 crops, batch 10) for three SSVIF set-ups, in one run.

1. light CNN (SeAFusion-style) alone: stage I / no CSC;
2. light CNN + segmentation head H + SegFormer-B0 (stage II, GDWA);
3. light CNN + H + SegFormer-B3 (stage II, GDWA; the paper's set-up).

Reads MSRS pairs from ../shared/data/msrs (or SSVIF_DATA); without it, a synthetic set of
random pairs is written to a temporary folder. Compare numbers across changes as ratios to
row 1 of the same run, never as absolute times.

    .venv/bin/python bench/train_throughput.py [--steps 5] [--threads 2] [--model seafusion]
        [--device auto|cpu|cuda[:N]] [--setups 1,2,3] [--set train.deterministic=true] [--json F]

The table's header names the device the trainer really used (``train.device``; on CUDA with
``train.amp``, fp16 autocast + GradScaler); a device that is not there is a one-line error.
"""
import argparse
import json
import os
from pathlib import Path
import sys
import tempfile
import time

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def data_root(tmp: str) -> str:
    """The MSRS train folder, or a synthetic set of 20 pairs written to ``tmp``."""
    from ssvif_ros.dataset_paths import shared_data_dir
    msrs = shared_data_dir() / 'msrs'
    if (msrs / 'train' / 'vi').is_dir():
        return str(msrs / 'train')
    from ssvif_ros import imaging
    rng = np.random.default_rng(0)
    for i in range(20):
        imaging.write_image(f'{tmp}/vi/{i:03d}.png', rng.integers(0, 255, (240, 320, 3),
                                                                  np.uint8))
        imaging.write_image(f'{tmp}/ir/{i:03d}.png', rng.integers(0, 255, (240, 320), np.uint8))
    print('(MSRS not found: synthetic pairs)')
    return tmp


def device_name(tr) -> str:
    """The trainer's device in words: 'CPU, 2 threads' or 'cuda:0 (NVIDIA ...), amp fp16'."""
    import torch
    if tr.device.type == 'cuda':
        amp = f', amp {str(tr.amp_dtype).split(".")[-1]}' if tr.use_amp else ', fp32'
        return f'{tr.device} ({torch.cuda.get_device_name(tr.device)}){amp}'
    return f'CPU, {torch.get_num_threads()} threads' + (', amp bf16' if tr.use_amp else '')


def measure(root: str, out: str, overrides, steps: int, stage: int):
    """(steps per second of Trainer.train_step after one warm-up step, device in words)."""
    import torch
    from ssvif_train.config import load_config
    from ssvif_train.trainer import Trainer
    cfg = load_config(None, [f'data.root={root}', 'train.progress=false'] + overrides)
    tr = Trainer(cfg, out)
    tr.schedule.stage = stage
    batches = []
    for vis, ir, _ in tr.loader(tr.train_ds, train=True):
        batches.append((vis, ir))
        if len(batches) == steps + 1:
            break
    sync = torch.cuda.synchronize if tr.device.type == 'cuda' else (lambda: None)
    tr.train_step(*batches[0])
    sync()
    t0 = time.perf_counter()
    for vis, ir in batches[1:]:
        tr.train_step(vis, ir)
    sync()
    return len(batches[1:]) / (time.perf_counter() - t0), device_name(tr)


def main(argv=None) -> int:
    """Run the three set-ups and print a table with ratios."""
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--steps', type=int, default=5, help='timed steps per set-up')
    ap.add_argument('--threads', type=int, default=2, help='torch CPU threads')
    ap.add_argument('--model', default='seafusion', help='fusion model registry name')
    ap.add_argument('--batch', type=int, default=10)
    ap.add_argument('--crop', type=int, default=160)
    ap.add_argument('--device', default='auto', help='train.device: auto | cpu | cuda[:N]')
    ap.add_argument('--json', default=None, help='also write the rows to this JSON file')
    ap.add_argument('--setups', default='1,2,3', help='which set-ups to run (1-based)')
    ap.add_argument('--set', dest='overrides', action='append', default=[], metavar='KEY=VALUE',
                    help='extra config override for every set-up (repeatable)')
    args = ap.parse_args(argv)
    import torch
    from ssvif_train.checkpoints import TrainingError
    from ssvif_train.distributed import pick_device
    torch.set_num_threads(args.threads)
    try:
        pick_device(args.device)
    except TrainingError as exc:
        print(f'train_throughput: error: {exc}', file=sys.stderr)
        return 2
    common = [f'model.name={args.model}', f'train.batch_size={args.batch}',
              f'data.crop={args.crop}', 'data.val_fraction=0', f'train.device={args.device}',
              *args.overrides]
    setups = [('light CNN alone', ['train.csc=false'], 1),
              ('light CNN + H + SegFormer-B0', ['model.segformer=b0'], 2),
              ('light CNN + H + SegFormer-B3', ['model.segformer=b3'], 2)]
    try:
        setups = [setups[int(i) - 1] for i in args.setups.split(',')]
    except (ValueError, IndexError):
        print(f'train_throughput: error: --setups takes numbers 1..3, got {args.setups!r}',
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        root = data_root(tmp)
        rows = []
        for i, (name, ov, stage) in enumerate(setups):
            # one run folder per set-up: the trainer refuses a folder that holds a run
            sps, used = measure(root, os.path.join(tmp, f'run{i}'), common + ov, args.steps,
                                stage)
            rows.append((name, sps))
            print(f'  {name:32s} {sps:7.3f} steps/s', flush=True)
    base = rows[0][1]
    extra = f', {" ".join(args.overrides)}' if args.overrides else ''
    print(f'\n{used}, batch {args.batch}, {args.crop}x{args.crop} crops, '
          f'{args.steps} timed steps, torch {torch.__version__}{extra}')
    print(f'| set-up | steps/s | samples/s | ratio to {rows[0][0]} |')
    print('|---|---|---|---|')
    for name, sps in rows:
        print(f'| {name} | {sps:.3f} | {sps * args.batch:.2f} | {sps / base:.3f} |')
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as f:
            json.dump({'device': used, 'batch': args.batch, 'crop': args.crop,
                       'rows': [{'setup': n, 'steps_per_s': v} for n, v in rows]}, f, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
