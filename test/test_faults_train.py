"""Fault cases of the training tools (issue 24): ssvif-train, ssvif-calibrate, ssvif-export.

Each case runs the real program on real MSRS pairs (the trainer as its own process where a
second process, a kill or a full disk is part of the case) and checks the promise: one line
naming the thing at fault and the reason, exit 2, and nothing already done lost or overwritten.
"""
import errno
import os
import re
import shutil
import subprocess
import sys

from conftest import MSRS
import pytest
from test_fault_injection import (_env, assert_one_line_error, ckpt_state,  # noqa: I100
                                  DEFAULT_MODEL, kill9, need_msrs, read_rows, run_cli,
                                  start_train, step_rows, TRAIN, wait_for)

ONE_STEP = ['--set', 'train.epochs=1', '--set', 'train.steps_per_epoch=1']
RUN_FILES = ('last.pt', 'best.pt', 'steps.csv', 'epochs.csv', 'config.json', 'dataset.txt')


@pytest.fixture(scope='module')
def base_run(tmp_path_factory):
    """A finished one-epoch run (TRAIN, 20 steps); tests work on copies of it."""
    need_msrs()
    out = tmp_path_factory.mktemp('base') / 'run'
    res = run_cli('ssvif_train.cli', *TRAIN, '--out', out, '--set', 'train.epochs=1')
    assert res.returncode == 0, res.stderr[-2000:]
    return out


def copy_run(base, tmp_path):
    out = tmp_path / 'run'
    shutil.copytree(base, out)
    return out


def snapshot(out):
    return {n: (out / n).read_bytes() for n in RUN_FILES}


def link_pairs(root, n, split='train'):
    """``root``/vi, ir with links to the first ``n`` real MSRS pairs of ``split``."""
    src = MSRS / split
    for sub in ('vi', 'ir'):
        (root / sub).mkdir(parents=True)
    names = sorted(os.listdir(src / 'vi'))[:n]
    for s in names:
        for sub in ('vi', 'ir'):
            os.symlink(src / sub / s, root / sub / s)
    return names


def train_cli(cwd, *args):
    cmd = [sys.executable, '-m', 'ssvif_train.cli', *TRAIN[2:], *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=180)


# ---------------------------------------------------------------------------------------------
# ssvif-train: paths, run folders, resume


def test_paths_from_flags_are_taken_literally(tmp_path):
    need_msrs()
    for name in ('rec #2', '2024', 'a: b'):
        link_pairs(tmp_path / name, 4)
    res = train_cli(tmp_path, '--data', '2024', '--extra', 'a: b', '--extra', 'rec #2',
                    '--out', 'run1', *ONE_STEP)
    assert res.returncode == 0, res.stderr[-2000:]
    cfg = __import__('json').loads((tmp_path / 'run1' / 'config.json').read_text())
    assert cfg['data']['root'] == '2024' and cfg['data']['extra'] == ['a: b', 'rec #2']
    # 4 pairs split 9:1 (3 train, 1 val) plus 2 x 4 extra training pairs
    assert 'train 11 val 1' in (tmp_path / 'run1' / 'dataset.txt').read_text()
    res = train_cli(tmp_path, '--vi', 'rec #2/vi', '--ir', 'a: b/ir', '--out', 'run #2',
                    *ONE_STEP)
    assert res.returncode == 0, res.stderr[-2000:]
    cfg = __import__('json').loads((tmp_path / 'run #2' / 'config.json').read_text())
    assert (cfg['data']['vi'], cfg['data']['ir']) == ('rec #2/vi', 'a: b/ir')


def test_overwrite_removes_the_old_run_only_after_data_and_model_are_checked(base_run,
                                                                             tmp_path):
    out = copy_run(base_run, tmp_path)
    before = snapshot(out)
    typo = tmp_path / 'MSRZ'
    res = run_cli('ssvif_train.cli', *TRAIN, '--data', typo, '--out', out, '--overwrite')
    assert_one_line_error(res, 2, str(typo), 'not found')
    assert snapshot(out) == before
    junk = tmp_path / 'junk.pt'
    junk.write_bytes(b'not a checkpoint')
    res = run_cli('ssvif_train.cli', *TRAIN, '--out', out, '--overwrite',
                  '--set', f'train.init={junk}')
    assert_one_line_error(res, 2, str(junk))
    assert snapshot(out) == before
    res = run_cli('ssvif_train.cli', *TRAIN, '--out', out, '--overwrite', *ONE_STEP)
    assert res.returncode == 0, res.stderr[-2000:]
    assert len(read_rows(out / 'steps.csv')) == 1


def test_a_run_folder_is_locked_while_a_trainer_owns_it(tmp_path):
    need_msrs()
    out = tmp_path / 'run'
    first = start_train(out, '--set', 'train.epochs=50')
    try:
        wait_for(first, lambda: (out / 'last.pt').exists() and step_rows(out) > 20,
                 'the first epoch')
        for extra in (['--resume', '--set', 'train.epochs=2'], ['--overwrite']):
            res = run_cli('ssvif_train.cli', *TRAIN, '--out', out, *extra)
            assert_one_line_error(res, 2, str(out), 'in use by another ssvif-train')
            assert first.poll() is None  # the owner was not disturbed
    finally:
        kill9(first)
    # the kernel dropped the killed owner's lock: its run resumes (and no lock file is left)
    done = ckpt_state(out / 'last.pt')['epoch']
    res = run_cli('ssvif_train.cli', *TRAIN, '--out', out, '--resume',
                  '--set', f'train.epochs={done + 1}')
    assert res.returncode == 0, res.stderr[-2000:]
    assert [int(r['epoch']) for r in read_rows(out / 'epochs.csv')] == list(range(1, done + 2))
    assert sorted(os.listdir(out)) == sorted(RUN_FILES + ('tb',))


def test_resume_applies_a_new_constant_lr_and_refuses_run_shaping_changes(base_run, tmp_path):
    import torch
    out = copy_run(base_run, tmp_path)
    res = run_cli('ssvif_train.cli', '--out', out, '--resume', '--set', 'train.lr=0.05',
                  '--set', 'train.epochs=2')
    assert res.returncode == 0, res.stderr[-2000:]
    rows = read_rows(out / 'steps.csv')
    assert {r['lr'] for r in rows if r['epoch'] == '1'} == {'0.001'}
    assert {r['lr'] for r in rows if r['epoch'] == '2'} == {'0.05'}
    ck = torch.load(out / 'last.pt', weights_only=True)
    assert [g['lr'] for g in ck['optimizer']['param_groups']] == [0.05]
    assert ck['config']['train']['lr'] == 0.05
    before = snapshot(out)
    res = run_cli('ssvif_train.cli', '--out', out, '--resume', '--set', 'train.epochs=3',
                  '--set', 'train.batch_size=2', '--set', 'loss.lambda_int=5')
    last = assert_one_line_error(res, 2, str(out / 'last.pt'), '--resume cannot change',
                                 'train.batch_size 1 -> 2', 'loss.lambda_int 20.0 -> 5.0')
    assert 'train.epochs' not in last.split('(on resume only')[0]
    assert snapshot(out) == before
    # a config file is not read on resume: refused rather than ignored
    yaml_file = tmp_path / 'more.yaml'
    yaml_file.write_text('train:\n  batch_size: 4\n')
    res = run_cli('ssvif_train.cli', yaml_file, '--out', out, '--resume')
    assert_one_line_error(res, 2, str(yaml_file), 'does not read', '--set')
    # the data may move, but must give the run's pairs
    other = tmp_path / 'other'
    link_pairs(other, 4)
    res = run_cli('ssvif_train.cli', '--out', out, '--resume', '--set', 'train.epochs=3',
                  '--data', other)
    assert_one_line_error(res, 2, '3 training and 1 validation pairs', 'trained on 21 and 3')
    assert snapshot(out) == before
    # a cosine rate is a curve over train.epochs: neither may change on resume
    cos = tmp_path / 'cos'
    res = run_cli('ssvif_train.cli', *TRAIN, '--out', cos, *ONE_STEP,
                  '--set', 'train.lr_schedule=cosine')
    assert res.returncode == 0, res.stderr[-2000:]
    res = run_cli('ssvif_train.cli', '--out', cos, '--resume', '--set', 'train.lr=0.01')
    assert_one_line_error(res, 2, 'train.lr 0.001 -> 0.01')


def test_a_diverging_run_stops_with_one_line_and_keeps_the_last_good_checkpoint(base_run,
                                                                                tmp_path):
    out = copy_run(base_run, tmp_path)
    before = snapshot(out)
    res = run_cli('ssvif_train.cli', '--out', out, '--resume', '--set', 'train.lr=1e9',
                  '--set', 'train.epochs=3')
    last = assert_one_line_error(res, 2, 'diverged in epoch 2', 'loss_total is',
                                 f'{out / "last.pt"} keeps epoch 1')
    value, step = re.search(r'loss_total is (\S+) at step (\d+)', last).groups()
    assert value in ('nan', 'inf', '-inf') and 'KeyError' not in res.stderr
    for name in ('last.pt', 'best.pt', 'epochs.csv'):
        assert (out / name).read_bytes() == before[name], name
    rows = read_rows(out / 'steps.csv')
    assert rows[-1]['loss_total'] == value and len(rows) == 20 + int(step)  # the failed step
    res = run_cli('ssvif_train.cli', '--out', out, '--resume', '--set', 'train.epochs=2')
    assert res.returncode == 0, res.stderr[-2000:]  # the last good epoch continues
    assert len(read_rows(out / 'steps.csv')) == 40


def test_a_diverging_first_epoch_saves_nothing(tmp_path):
    need_msrs()
    out = tmp_path / 'run'
    res = run_cli('ssvif_train.cli', *TRAIN, '--out', out, '--set', 'train.lr=1e9')
    assert_one_line_error(res, 2, 'diverged in epoch 1', 'nothing was saved')
    assert not (out / 'last.pt').exists() and not (out / 'best.pt').exists()


# ---------------------------------------------------------------------------------------------
# ssvif-train: configuration values and files


@pytest.mark.parametrize('setting,words', [
    ('train.patience=-1', 'train.patience must be >= 0'),
    ('data.max_pairs=-3', 'data.max_pairs must be >= 0'),
    ('train.steps_per_epoch=-1', 'train.steps_per_epoch must be >= 0'),
    ('data.val_crop=-32', 'data.val_crop must be >= 0'),
    ('data.workers=-1', 'data.workers must be >= 0'),
    ('train.lr=.nan', 'train.lr must be a finite number'),
    ('loss.lambda_int=.inf', 'loss.lambda_int must be a finite number'),
    ('data.thermal_p_hi=250', 'data.thermal_p_hi'),
    ('model.args.foo=1', "model.args.foo: model rtfusion has no argument 'foo'"),
    ('model.name=resnet', 'model.name must be one of emma, rtfusion'),
    ('data.thermal_norm=fixed', 'needs data.thermal_lo and data.thermal_hi'),
])
def test_bad_config_values_are_one_line_errors(tmp_path, capsys, setting, words):
    from ssvif_train.cli import main
    rc = main(TRAIN + ONE_STEP + ['--out', str(tmp_path / 'run'), '--set', setting])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and words in err[0], err
    assert not (tmp_path / 'run').exists()


def test_config_files_that_are_no_yaml_text_are_one_line_errors(tmp_path, capsys):
    from ssvif_train.cli import main
    folder = tmp_path / 'conf.yaml'
    folder.mkdir()
    latin1 = tmp_path / 'latin1.yaml'
    latin1.write_bytes('train:\n  epochs: 3  # caf\u00e9\n'.encode('latin-1'))
    broken = tmp_path / 'broken.yaml'
    broken.write_text('train:\n  epochs: 3\n  lr: [0.1,\n  patience: 2\nmodel:\n  name: x\n')
    cases = ((folder, f'config file {folder} is a folder'),
             (latin1, f'config file {latin1} is not UTF-8 text'),
             (broken, f'{broken}:5:6: '))
    for path, words in cases:
        rc = main([str(path), '--out', str(tmp_path / 'run')])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and words in err[0], err


# ---------------------------------------------------------------------------------------------
# ssvif-train: full disks and bad files


@pytest.fixture
def small_disk(tmp_path):
    """A real 8 MiB tmpfs (needs root: mount(2)), unmounted afterwards."""
    mnt = tmp_path / 'disk'
    mnt.mkdir()
    res = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', str(mnt)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f'cannot mount a small tmpfs (needs root): {res.stderr.strip()}')
    yield mnt
    subprocess.run(['umount', '-l', str(mnt)], check=False)


def fill(folder):
    """Write into ``folder`` until its filesystem is full (ENOSPC)."""
    fd = os.open(folder / 'filler', os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b'\0' * 65536)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)


def test_resume_on_a_full_disk_is_one_line_and_loses_nothing(base_run, small_disk):
    out = small_disk / 'run'
    shutil.copytree(base_run, out)
    before = snapshot(out)
    fill(small_disk)
    res = run_cli('ssvif_train.cli', '--out', out, '--resume', '--set', 'train.epochs=2')
    last = assert_one_line_error(res, 2, str(out), 'No space left on device')
    assert re.search(r'cannot write \S+', last), last
    assert snapshot(out) == before
    assert sorted(n for n in os.listdir(out) if n.startswith('.')) == []  # no temp file


def test_a_full_disk_under_steps_csv_is_one_line(base_run, tmp_path):
    """steps.csv on /dev/full: every write to it fails with ENOSPC, as on a full disk."""
    out = copy_run(base_run, tmp_path)
    (out / 'steps.csv').unlink()
    os.symlink('/dev/full', out / 'steps.csv')
    res = run_cli('ssvif_train.cli', '--out', out, '--resume', '--set', 'train.epochs=2')
    assert_one_line_error(res, 2, f'cannot write {out / "steps.csv"}', 'No space left on device')


def test_a_full_disk_under_tensorboard_is_one_line(base_run, tmp_path, small_disk):
    """tb/ on a full tmpfs: TensorBoard's writer thread fails, the trainer says so once."""
    out = copy_run(base_run, tmp_path)
    shutil.rmtree(out / 'tb')
    (small_disk / 'tb').mkdir()
    fill(small_disk)
    os.symlink(small_disk / 'tb', out / 'tb')
    res = run_cli('ssvif_train.cli', '--out', out, '--resume', '--set', 'train.epochs=2')
    assert_one_line_error(res, 2, f'cannot write {out / "tb"}', 'No space left on device')
    assert 'Exception in thread' not in res.stderr, res.stderr[-3000:]


@pytest.mark.parametrize('workers', [0, 2])
def test_a_corrupt_png_is_one_line_naming_it(tmp_path, workers):
    need_msrs()
    data = tmp_path / 'data'
    names = link_pairs(data, 4)
    bad = data / 'vi' / names[1]
    raw = bytearray(bad.read_bytes())
    bad.unlink()
    for i in range(2000, 2100):  # inside the image data: libpng fails while decoding
        raw[i] ^= 0xff
    bad.write_bytes(bytes(raw))
    res = run_cli('ssvif_train.cli', *TRAIN, '--data', data, '--out', tmp_path / 'run',
                  '--set', f'data.workers={workers}', '--set', 'data.val_fraction=0',
                  '--set', 'train.steps_per_epoch=0')
    last = assert_one_line_error(res, 2, str(bad), 'cannot decode image file')
    assert 'fails its CRC check' in last  # the reason is part of the line ...
    assert 'libpng' not in res.stderr  # ... and libpng prints nothing of its own
    assert 'DataLoader worker' not in res.stderr


def test_an_image_given_as_checkpoint_is_called_no_checkpoint(base_run, tmp_path):
    need_msrs()
    png = MSRS / 'train' / 'vi' / sorted(os.listdir(MSRS / 'train' / 'vi'))[0]
    res = run_cli('ssvif_train.export', png, '--out', tmp_path / 'exp')
    assert_one_line_error(res, 2, str(png), 'not a PyTorch checkpoint but a PNG image')
    out = copy_run(base_run, tmp_path)
    shutil.copy(png, out / 'last.pt')
    res = run_cli('ssvif_train.cli', '--out', out, '--resume')
    last = assert_one_line_error(res, 2, str(out / 'last.pt'), 'a PNG image')
    assert 'other than tensors' not in last


# ---------------------------------------------------------------------------------------------
# ssvif-calibrate and ssvif-export


def test_calibrate_never_writes_over_a_runs_checkpoints(base_run, tmp_path, capsys):
    from ssvif_train import calibrate
    out = copy_run(base_run, tmp_path)
    before = snapshot(out)
    os.symlink(out / 'best.pt', tmp_path / 'alias.pt')
    for target, words in ((out / 'last.pt', 'is a file of the training run'),
                          (out / 'best.pt', 'would overwrite the input'),
                          (tmp_path / 'alias.pt', 'would overwrite the input'),
                          (out / 'steps.csv', 'is a file of the training run')):
        rc = calibrate.main([str(out / 'best.pt'), '--data', str(MSRS), '--out', str(target)])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and words in err[0] and str(target) in err[0], err
    assert snapshot(out) == before


@pytest.mark.parametrize('args,words', [
    (['--max-size', 'abc'], "--max-size 'abc' is not WIDTHxHEIGHT"),
    (['--max-size', '0x1088'], 'must be >= 1'),
    (['--opset', '3'], '--opset 3: must be 11..'),
    (['--opset', '99'], '--opset 99: must be 11..'),
])
def test_export_bad_arguments_are_one_line_and_leave_no_folder(tmp_path, capsys, args, words):
    from ssvif_train import export
    rc = export.main([str(DEFAULT_MODEL / 'model.pt'), '--out', str(tmp_path / 'exp'), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and words in err[0], err
    assert not (tmp_path / 'exp').exists()
