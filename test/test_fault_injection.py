"""Fault injection: kills, bad files, bad models, bad parameters, against the real tools.

Every case is a failure a hostile or unlucky user met (issue 10); each runs the real program
(the trainer and CLIs as processes killed with SIGKILL, the node as a ROS 2 process, ONNX
Runtime on real ONNX files) and checks the promised outcome: one line naming the file and the
reason, the documented exit code, nothing already done lost.
"""
import csv
import errno
import os
from pathlib import Path
import signal
import subprocess
import sys
import time

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get('SSVIF_DATA', REPO.parent / 'shared' / 'data'))
MSRS = DATA / 'msrs'


def _env(**extra):
    env = dict(os.environ)
    # The subprocesses import this checkout, whatever the environment installed.
    env['PYTHONPATH'] = os.pathsep.join([str(REPO)] + [p for p in env.get('PYTHONPATH', '')
                                                       .split(os.pathsep) if p])
    env['PYTHONUNBUFFERED'] = '1'
    env.update(extra)
    return env


def run_cli(module, *args, timeout=120, **kw):
    """Run ``python -m module args``; return the CompletedProcess (text)."""
    return subprocess.run([sys.executable, '-m', module, *map(str, args)], cwd=REPO,
                          env=_env(), capture_output=True, text=True, timeout=timeout, **kw)


def assert_one_line_error(res, code, *needles):
    """Exit ``code``, no traceback, no torch advice, the last stderr line names ``needles``."""
    err = res.stderr
    assert res.returncode == code, (res.returncode, err[-2000:])
    assert 'Traceback' not in err, err[-3000:]
    assert 'weights_only=False' not in err, err[-2000:]
    last = err.strip().splitlines()[-1]
    for n in needles:
        assert str(n) in last, (n, last)
    return last


def read_rows(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------------------
# Training: kills, resume, run folders


def need_msrs():
    if not (MSRS / 'train' / 'vi').is_dir():
        pytest.skip(f'MSRS sample data not found at {MSRS}')


STEPS = 20
TRAIN = ['--data', str(MSRS), '--set', 'model.name=rtfusion', '--set', 'train.csc=false',
         '--set', 'data.max_pairs=24', '--set', 'data.crop=32', '--set', 'data.val_crop=32',
         '--set', 'train.batch_size=1', '--set', f'train.steps_per_epoch={STEPS}',
         '--set', 'train.epochs=3', '--set', 'train.lr=1e-3', '--set', 'train.progress=false',
         '--set', 'train.threads=1', '--set', 'train.val_metrics=[]', '--set', 'train.patience=0']


def start_train(out, *extra):
    cmd = [sys.executable, '-m', 'ssvif_train.cli', *TRAIN, '--out', str(out), *extra]
    return subprocess.Popen(cmd, cwd=REPO, env=_env(OMP_NUM_THREADS='1'),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(proc, predicate, what, timeout=90.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f'training ended (rc {proc.returncode}) before {what}:\n'
                                 + proc.stdout.read()[-3000:])
        time.sleep(0.002)
    proc.kill()
    raise AssertionError(f'timed out waiting for {what}')


def kill9(proc):
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL


def step_rows(out):
    try:
        with open(out / 'steps.csv', newline='') as f:
            return max(sum(1 for _ in f) - 1, 0)
    except FileNotFoundError:
        return 0


def kill_inside_write(proc, tmp_path, after=None):
    """SIGKILL ``proc`` while it writes ``tmp_path`` (the temp file of an atomic save).

    A FIFO is put where the save will create its temp file, so the save blocks inside the write
    once it has written a pipe's worth; the kill lands there for sure, after some bytes.
    """
    if after is not None:
        wait_for(proc, after, 'the previous save')
    os.mkfifo(tmp_path)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        got = b''

        def has_data():
            nonlocal got
            try:
                got = os.read(fd, 4096)
            except BlockingIOError:
                return False
            return bool(got)
        wait_for(proc, has_data, f'the write of {tmp_path.name}')
        kill9(proc)
    finally:
        os.close(fd)
    assert tmp_path.exists()  # the kill left the temp file behind, as a real one would


def ckpt_state(path):
    import torch
    return torch.load(path, map_location='cpu', weights_only=True)['state']


def test_sigkill_anywhere_then_resume_equals_an_uninterrupted_run(tmp_path):
    need_msrs()
    ref, out = tmp_path / 'ref', tmp_path / 'run'
    p = start_train(ref)
    assert p.wait(120) == 0, p.stdout.read()[-3000:]
    p.stdout.close()
    ref_epochs = read_rows(ref / 'epochs.csv')
    vals = [float(r['val_fusion']) for r in ref_epochs]
    assert len(vals) == 3 and vals[1] < vals[0], vals  # epoch 2 is a new best (kill 2)

    # 1. inside the write of last.pt at the end of epoch 2 (rows of epoch 2 already in steps.csv)
    p = start_train(out)
    kill_inside_write(p, out / f'.last.pt.tmp{p.pid}', after=lambda: (out / 'last.pt').exists())
    assert ckpt_state(out / 'last.pt')['epoch'] == 1 and step_rows(out) == 2 * STEPS
    # 2. resumed: inside the write of best.pt after last.pt of epoch 2 (every epoch improves)
    p = start_train(out, '--resume')
    wait_for(p, lambda: step_rows(out) == STEPS, 'steps.csv cut back to last.pt')
    kill_inside_write(p, out / f'.best.pt.tmp{p.pid}', after=lambda: step_rows(out) > STEPS)
    assert ckpt_state(out / 'last.pt')['epoch'] == 2
    assert ckpt_state(out / 'best.pt')['epoch'] == 1  # stale until the next start repairs it
    # 3. resumed: in the middle of epoch 3
    p = start_train(out, '--resume')
    wait_for(p, lambda: step_rows(out) >= 2 * STEPS + 5, 'steps of epoch 3')
    kill9(p)
    assert ckpt_state(out / 'best.pt')['epoch'] == 2  # repaired at the start of this resume
    assert step_rows(out) > 2 * STEPS
    # 4. resumed to the end
    p = start_train(out, '--resume')
    assert p.wait(120) == 0, p.stdout.read()[-3000:]
    p.stdout.close()

    assert read_rows(out / 'steps.csv') == read_rows(ref / 'steps.csv')
    got = read_rows(out / 'epochs.csv')
    assert [{k: v for k, v in r.items() if k != 'seconds'} for r in got] == \
        [{k: v for k, v in r.items() if k != 'seconds'} for r in ref_epochs]
    assert ckpt_state(out / 'best.pt')['epoch'] == 1 + vals.index(min(vals))
    assert sorted(n for n in os.listdir(out) if n.startswith('.')) == []  # no temp files left


def test_a_run_folder_is_not_overwritten_without_overwrite(tmp_path):
    need_msrs()
    out = tmp_path / 'run'
    args = ['--set', 'train.epochs=1', '--set', 'train.steps_per_epoch=1']
    assert run_cli('ssvif_train.cli', *TRAIN, '--out', out, *args).returncode == 0
    names = ('best.pt', 'last.pt', 'steps.csv', 'epochs.csv')
    before = {n: (out / n).read_bytes() for n in names}
    res = run_cli('ssvif_train.cli', *TRAIN, '--out', out, *args)
    assert_one_line_error(res, 2, str(out), 'already holds a run', '--overwrite')
    assert {n: (out / n).read_bytes() for n in before} == before
    (out / 'notes.txt').write_text('mine')
    res = run_cli('ssvif_train.cli', *TRAIN, '--out', out, *args, '--set', 'data.seed=1',
                  '--overwrite')
    assert res.returncode == 0, res.stderr[-2000:]
    assert (out / 'last.pt').read_bytes() != before['last.pt']
    assert len(read_rows(out / 'steps.csv')) == 1
    assert (out / 'notes.txt').read_text() == 'mine'  # only the run's own files are replaced
    res = run_cli('ssvif_train.cli', *TRAIN, '--out', out, '--resume', '--overwrite')
    assert_one_line_error(res, 2, '--resume', '--overwrite')


def test_train_bad_out_and_damaged_last_pt_are_one_line_errors(tmp_path):
    need_msrs()
    afile = tmp_path / 'afile'
    afile.write_text('x')
    res = run_cli('ssvif_train.cli', *TRAIN, '--out', afile)
    assert_one_line_error(res, 2, str(afile), 'existing file')
    res = run_cli('ssvif_train.cli', *TRAIN, '--out', afile / 'sub')
    assert_one_line_error(res, 2, str(afile / 'sub'), 'cannot create')

    out = tmp_path / 'run'
    assert run_cli('ssvif_train.cli', *TRAIN, '--out', out, '--set', 'train.epochs=1',
                   '--set', 'train.steps_per_epoch=1').returncode == 0
    good = (out / 'last.pt').read_bytes()
    for label, data in (('empty', b''), ('truncated', good[:len(good) // 2])):
        (out / 'last.pt').write_bytes(data)
        res = run_cli('ssvif_train.cli', '--out', out, '--resume')
        last = assert_one_line_error(res, 2, str(out / 'last.pt'), 'best.pt')
        assert ('empty' if label == 'empty' else 'truncated') in last, last


def test_disk_full_during_a_checkpoint_save_is_one_line(tmp_path):
    """A file-size limit makes the checkpoint write fail with EFBIG, as a full disk would."""
    need_msrs()
    import resource
    out = tmp_path / 'run'

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
    res = run_cli('ssvif_train.cli', *TRAIN, '--out', out, '--set', 'train.epochs=1',
                  '--set', 'train.steps_per_epoch=1', preexec_fn=limit)
    last = assert_one_line_error(res, 2, 'cannot write checkpoint', str(out / 'last.pt'))
    assert os.strerror(errno.EFBIG) in last, last
    assert sorted(n for n in os.listdir(out) if n.startswith('.')) == []
