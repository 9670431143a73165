"""bench/gpu_check.sh on CPU (--cpu-dry-run): one table, GPU rows skipped; train_throughput.

bench/train_throughput.py names the device it used and refuses one that is not there.
"""
import os
from pathlib import Path
import subprocess
import sys

import torch

REPO = Path(__file__).resolve().parents[1]


def run(cmd, env=None, timeout=600):
    return subprocess.run([str(c) for c in cmd], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, PYTHON=sys.executable,
                                                    **(env or {})))


def test_gpu_check_dry_run_prints_one_table_with_gpu_rows_skipped(msrs_dir, tmp_path):
    data = tmp_path / 'gpu_data'
    res = run([REPO / 'bench' / 'gpu_check.sh', '--prepare-data', '4', '--data', data],
              env={'SSVIF_DATA': str(msrs_dir.parent)})
    assert res.returncode == 0, res.stderr
    assert len(list((data / 'msrs' / 'train' / 'vi').iterdir())) == 4
    assert len(list((data / 'msrs' / 'val' / 'boxes').iterdir())) == 2
    res = run([REPO / 'bench' / 'gpu_check.sh', '--cpu-dry-run', '--data', data, '--out',
               tmp_path / 'out'])
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    lines = res.stdout.strip().splitlines()
    assert lines[0].startswith('gpu_check: CPU dry run')
    assert lines[1] == '| check | status | result | s |' and res.stdout.count('| check |') == 1
    rows = {ln.split(' | ')[0].lstrip('| '): ln.split(' | ')[1:] for ln in lines[3:]}
    assert rows['pytest -m gpu'][0] == 'ok' and 'skipped' in rows['pytest -m gpu'][1]
    for setup in ('light CNN alone', 'light CNN + H + SegFormer-B0',
                  'light CNN + H + SegFormer-B3'):
        status, result, _ = rows[f'train {setup}']
        assert status == 'ok' and 'steps/s' in result and 'CPU' in result
    status, result, _ = rows['train light CNN + H + SegFormer-B3, train.deterministic']
    assert status == 'ok' and 'x the default' in result
    for name in ('paper (seafusion_ssvif.yaml)', 'default (rtfusion_semantic_frames.yaml)'):
        status, result, _ = rows[f'recipe {name}']
        assert status == 'ok' and 'steps.csv finite' in result and 'ONNX parity' in result
    assert 'stages 1->2' in rows['recipe paper (seafusion_ssvif.yaml)'][1]
    for size in ('640x480', '1280x1024'):
        for cpu in ('torch cpu fp32', 'onnxruntime cpu fp32'):
            assert rows[f'infer {size} {cpu}'][0] == 'ok'
        for gpu in ('torch cuda fp32', 'torch cuda fp16', 'onnxruntime cuda fp32',
                    'tensorrt cuda:0 fp16'):
            assert rows[f'infer {size} {gpu}'][:2] == ['skipped', 'CPU dry run']
    assert (tmp_path / 'out' / 'seafusion_ssvif' / 'model' / 'model.onnx').is_file()


def test_gpu_check_without_data_is_a_one_line_error(tmp_path):
    res = run([REPO / 'bench' / 'gpu_check.sh', '--cpu-dry-run', '--data', tmp_path / 'none'])
    assert res.returncode == 2
    assert res.stderr.count('\n') == 1 and 'no MSRS pairs in' in res.stderr


def test_train_throughput_refuses_a_device_that_is_not_there():
    missing = f'cuda:{torch.cuda.device_count()}' if torch.cuda.is_available() else 'cuda'
    res = run([sys.executable, REPO / 'bench' / 'train_throughput.py', '--device', missing],
              timeout=120)
    assert res.returncode == 2
    assert res.stderr.count('\n') == 1 and f'train.device={missing}' in res.stderr
