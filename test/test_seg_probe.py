"""bench/seg_probe.py: a short real run on linked MSRS pairs, and bad input."""
import os
from pathlib import Path
import re
import subprocess
import sys

from ssvif_ros.dataset_paths import list_pairs

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / 'bench' / 'seg_probe.py'
LINE = re.compile(r'^\d+\.\d min step \d+ box-F1 (\d\.\d{3}|nan) \(person \S+, car \S+, '
                  r'bike \S+\)')


def _link_split(msrs_dir, root, split, n):
    for sub in ('vi', 'ir', 'boxes'):
        (root / split / sub).mkdir(parents=True)
    for vi, ir in list_pairs(msrs_dir / split)[:n]:
        box = f'{vi.stem}.txt'
        for src, dst in ((vi, root / split / 'vi' / vi.name),
                         (ir, root / split / 'ir' / ir.name),
                         (msrs_dir / split / 'boxes' / box, root / split / 'boxes' / box)):
            os.symlink(src, dst)


def _run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, timeout=300, cwd=REPO)


def test_probe_trains_and_scores_the_embedded_model(msrs_dir, tmp_path):
    _link_split(msrs_dir, tmp_path, 'train', 3)
    _link_split(msrs_dir, tmp_path, 'val', 2)
    res = _run('--data', tmp_path, '--minutes', 0.05, '--every', 1000, '--threads', 2)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[-1].endswith('(end)')
    assert all(LINE.match(x) for x in lines), lines
    steps = int(lines[-1].split()[3])
    assert steps >= 1


def test_probe_bad_input_one_line_exit_2(msrs_dir, tmp_path):
    res = _run('--data', tmp_path)
    assert res.returncode == 2 and 'no box folder' in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    _link_split(msrs_dir, tmp_path, 'train', 1)
    _link_split(msrs_dir, tmp_path, 'val', 1)
    bad = tmp_path / 'bad.pt'
    bad.write_bytes(b'not a checkpoint')
    res = _run('--data', tmp_path, '--init', bad)
    assert res.returncode == 2 and str(bad) in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
