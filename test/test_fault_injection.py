"""Fault injection: kills, bad files, bad models, bad parameters, against the real tools.

Every case is a failure a hostile or unlucky user met (issue 10); each runs the real program
(the trainer and CLIs as processes killed with SIGKILL, the node as a ROS 2 process, ONNX
Runtime on real ONNX files) and checks the promised outcome: one line naming the file and the
reason, the documented exit code, nothing already done lost.
"""
import csv
import errno
import os
import signal
import subprocess
import sys
import time

from conftest import MSRS, REPO
import pytest
from ros_helpers import (process_env, ros_env, set_stamp, SpinningNode, stamp_ns,  # noqa: I100
                         start_node, stop, wait_until)


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
         '--set', 'train.epochs=4', '--set', 'train.lr=1e-3', '--set', 'train.progress=false',
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
    assert len(vals) == 4 and vals[1] < vals[0], vals  # epoch 2 is a new best (kill 2)

    # 1. inside the write of last.pt at the end of epoch 2 (rows of epoch 2 already in steps.csv)
    p = start_train(out)
    kill_inside_write(p, out / f'.last.pt.tmp{p.pid}', after=lambda: (out / 'last.pt').exists())
    assert ckpt_state(out / 'last.pt')['epoch'] == 1 and step_rows(out) == 2 * STEPS
    # 2. resumed: inside the write of best.pt after last.pt of epoch 2 (every epoch improves)
    inode = os.stat(out / 'steps.csv').st_ino
    p = start_train(out, '--resume')
    # the FIFO must come after the start-up clean-up of temp files, which precedes the cut
    wait_for(p, lambda: os.stat(out / 'steps.csv').st_ino != inode, 'steps.csv cut back')
    kill_inside_write(p, out / f'.best.pt.tmp{p.pid}')
    assert ckpt_state(out / 'last.pt')['epoch'] == 2
    assert ckpt_state(out / 'best.pt')['epoch'] == 1  # stale until the next start repairs it
    # 3. resumed: in the middle of epoch 3 (or 4, on a slow machine)
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


# ---------------------------------------------------------------------------------------------
# Models, checkpoints and output folders of the tools

DEFAULT_MODEL = REPO / 'ssvif_ros' / 'models' / 'default'


@pytest.fixture
def pairs_dir(tmp_path):
    """Two real MSRS validation pairs."""
    src = MSRS / 'val'
    if not (src / 'vi').is_dir():
        pytest.skip(f'MSRS sample data not found at {src}')
    root = tmp_path / 'pairs'
    for sub in ('vi', 'ir'):
        (root / sub).mkdir(parents=True)
    for s in sorted(os.listdir(src / 'vi'))[:2]:
        for sub in ('vi', 'ir'):
            os.symlink(src / sub / s, root / sub / s)
    return root


def model_copy(tmp_path, **card_changes):
    """The default model in a folder of its own, with ``card_changes`` applied to model.json."""
    import json
    import shutil
    d = tmp_path / 'model'
    shutil.copytree(DEFAULT_MODEL, d)
    card = json.loads((d / 'model.json').read_text())
    card.update(card_changes)
    (d / 'model.json').write_text(json.dumps(card))
    return d


def fuse(pairs, out, *args):
    return run_cli('ssvif_ros.fuse_cli', '--vi', pairs / 'vi', '--ir', pairs / 'ir', '--out', out,
                   *args)


@pytest.mark.parametrize('change,words', [
    ({'pad_multiple': None}, 'pad_multiple'), ({'pad_multiple': 0}, 'pad_multiple'),
    # the frame graph pads itself: a card misstating its multiple is caught against the graph
    ({'pad_multiple': 7}, 'pad_multiple 7'), ({'class_names': 3}, 'class_names'),
    ({'class_names': ['a', 'b']}, 'class_names'), ({'palette': [[0, 0, 300]] * 15}, 'palette'),
])
def test_a_bad_model_card_is_a_start_up_error(tmp_path, pairs_dir, change, words):
    model = model_copy(tmp_path, **change)
    res = fuse(pairs_dir, tmp_path / 'out', '--model', model)
    assert_one_line_error(res, 2, str(model), words)
    assert not list((tmp_path / 'out').glob('fused/*.png'))


def test_a_card_with_other_class_names_and_palette_is_accepted(tmp_path, pairs_dir):
    import json
    n = json.loads((DEFAULT_MODEL / 'model.json').read_text())['num_classes']
    names = [f'my_class_{i}' for i in range(n)]
    model = model_copy(tmp_path, class_names=names, palette=[[i, 255 - i, 7] for i in range(n)])
    res = fuse(pairs_dir, tmp_path / 'out', '--model', model)
    assert res.returncode == 0, res.stderr[-2000:]


def _stderr_on_a_terminal(cmd, timeout=120):
    """Run ``cmd`` with stderr on a pseudo-terminal; return (exit code, what it wrote there)."""
    import fcntl
    import pty
    import struct
    import termios
    master, slave = pty.openpty()
    # A new pty is 0 columns wide, and tqdm cuts its bar to the width: make it 120 x 40.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack('HHHH', 40, 120, 0, 0))
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the child closed its end
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=timeout), b''.join(chunks).decode('utf-8', 'replace')


def test_progress_bars_show_on_a_terminal_only(tmp_path, pairs_dir):
    # Scripts, CI and pipes get no bar frames in their logs; a person at a terminal sees one.
    res = fuse(pairs_dir, tmp_path / 'piped')
    assert res.returncode == 0, res.stderr[-2000:]
    assert 'fusing:' not in res.stderr and 'pair/s' not in res.stderr, res.stderr
    code, err = _stderr_on_a_terminal(
        [sys.executable, '-m', 'ssvif_ros.fuse_cli', '--vi', str(pairs_dir / 'vi'),
         '--ir', str(pairs_dir / 'ir'), '--out', str(tmp_path / 'tty')])
    assert code == 0, err[-2000:]
    assert 'fusing:' in err and '2/2' in err, err


def _onnx_with_wrong_input_names(path):
    import onnx
    from onnx import helper, TensorProto
    a = helper.make_tensor_value_info('a', TensorProto.FLOAT, ['N', 3, 'H', 'W'])
    b = helper.make_tensor_value_info('b', TensorProto.FLOAT, ['N', 3, 'H', 'W'])
    fused = helper.make_tensor_value_info('fused', TensorProto.FLOAT, ['N', 3, 'H', 'W'])
    ids = helper.make_tensor_value_info('class_ids', TensorProto.UINT8, ['N', 'H', 'W'])
    nodes = [helper.make_node('Max', ['a', 'b'], ['fused']),
             helper.make_node('ReduceMax', ['a'], ['r'], axes=[1], keepdims=0),
             helper.make_node('Cast', ['r'], ['class_ids'], to=TensorProto.UINT8)]
    graph = helper.make_graph(nodes, 'wrong_names', [a, b], [fused, ids])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 13)])
    onnx.checker.check_model(model)
    onnx.save(model, path)


def sign_card(model):
    """Write the SHA-256 of ``model``/model.onnx into its card, as ssvif-export does."""
    import json
    from ssvif_ros.model_card import file_sha256
    card = json.loads((model / 'model.json').read_text())
    card['onnx_sha256'] = file_sha256(model / 'model.onnx')
    (model / 'model.json').write_text(json.dumps(card))


def test_an_onnx_model_with_wrong_inputs_is_a_start_up_error(tmp_path, pairs_dir):
    model = model_copy(tmp_path)
    _onnx_with_wrong_input_names(model / 'model.onnx')
    sign_card(model)
    res = fuse(pairs_dir, tmp_path / 'out', '--model', model)
    assert_one_line_error(res, 2, 'model.onnx', "no input named 'vis'")


# Pixels of the warm-up pair (backends.base.WARM_UP_HW, pad_multiple 1): the bad models below
# are well-behaved up to this size, so they pass warm-up and go wrong on real frames.
WARM_UP_PIXELS = 37 * 53


def _onnx_going_bad_on_big_frames(path, fault):
    """A valid graph (vis, ir -> fused, class_ids) that is fine on the warm-up pair only.

    On frames larger than the warm-up pair, fault 'nan' puts NaN into the whole fused image,
    fault 'class' makes every class id 9 (beyond the default card's classes).
    """
    import onnx
    from onnx import helper, TensorProto
    x = helper.make_tensor_value_info
    f32 = TensorProto.FLOAT
    inputs = [x(n, f32, ['N', 3, 'H', 'W']) for n in ('vis', 'ir')]
    outputs = [x('fused', f32, ['N', 3, 'H', 'W']),
               x('class_ids', TensorProto.UINT8, ['N', 'H', 'W'])]

    def const(name, value, dtype=f32):
        return helper.make_node('Constant', [], [name], value=helper.make_tensor(
            name, dtype, [], [value]))
    nodes = [
        # excess = H * W - warm-up pixels - 0.5: negative in warm-up, positive on real frames
        helper.make_node('Shape', ['vis'], ['shape']),
        helper.make_node('Constant', [], ['two'], value=helper.make_tensor(
            'two', TensorProto.INT64, [1], [2])),
        helper.make_node('Constant', [], ['four'], value=helper.make_tensor(
            'four', TensorProto.INT64, [1], [4])),
        helper.make_node('Slice', ['shape', 'two', 'four'], ['hw_dims']),
        helper.make_node('ReduceProd', ['hw_dims'], ['hw']),
        helper.make_node('Cast', ['hw'], ['hw_f'], to=f32),
        const('limit', WARM_UP_PIXELS + 0.5),
        helper.make_node('Sub', ['hw_f', 'limit'], ['excess']),
        helper.make_node('Max', ['vis', 'ir'], ['fused_ok']),
        helper.make_node('ReduceMax', ['ir'], ['plane'], axes=[1], keepdims=0),
        const('zero', 0.0),
        helper.make_node('Mul', ['plane', 'zero'], ['zeros']),  # N x H x W of 0
    ]
    if fault == 'nan':
        # sqrt(-excess) * 0: 0 in warm-up, NaN (sqrt of a negative number) on real frames
        nodes += [helper.make_node('Neg', ['excess'], ['room']),
                  helper.make_node('Sqrt', ['room'], ['root']),
                  helper.make_node('Mul', ['root', 'zero'], ['poison']),
                  helper.make_node('Add', ['fused_ok', 'poison'], ['fused']),
                  helper.make_node('Cast', ['zeros'], ['class_ids'], to=TensorProto.UINT8)]
    else:
        # min(relu(excess), 1) * 9: class 0 in warm-up, class 9 on real frames
        nodes += [const('one', 1.0), const('nine', 9.0),
                  helper.make_node('Relu', ['excess'], ['pos']),
                  helper.make_node('Min', ['pos', 'one'], ['step']),
                  helper.make_node('Mul', ['step', 'nine'], ['cid']),
                  helper.make_node('Add', ['zeros', 'cid'], ['ids_f']),
                  helper.make_node('Identity', ['fused_ok'], ['fused']),
                  helper.make_node('Cast', ['ids_f'], ['class_ids'], to=TensorProto.UINT8)]
    graph = helper.make_graph(nodes, f'bad_{fault}', inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 13)])
    onnx.checker.check_model(model)
    onnx.save(model, path)


def bad_output_model(tmp_path, fault):
    """The default model's folder with the ONNX file replaced by a bad one (card re-signed).

    The bad graphs take padded floats, so the card says ``ssvif-model/1`` (host-side path);
    test_frame_graph covers NaN in a frame graph.
    """
    model = model_copy(tmp_path, pad_multiple=1, format='ssvif-model/1')
    _onnx_going_bad_on_big_frames(model / 'model.onnx', fault)
    sign_card(model)
    return model


@pytest.mark.parametrize('fault,words', [('nan', 'NaN'), ('class', 'class id 9')])
def test_fuse_writes_no_image_of_a_model_returning_nan_or_bad_class_ids(tmp_path, pairs_dir,
                                                                        fault, words):
    from ssvif_ros.backends import create_backend
    model = bad_output_model(tmp_path, fault)
    create_backend('onnxruntime', str(model), threads=1)  # passes load and warm-up
    out = tmp_path / 'out'
    res = fuse(pairs_dir, out, '--model', model)
    assert res.returncode == 1, res.stderr[-2000:]
    assert 'Traceback' not in res.stderr
    failed = [ln for ln in res.stderr.splitlines() if ln.strip().startswith('failed ')]
    assert len(failed) == 2 and all(words in ln for ln in failed), res.stderr
    assert not list(out.glob('*/*.png'))
    assert sorted(p.name for p in out.iterdir()) == ['report.json']


def test_a_card_not_matching_its_onnx_file_is_refused_at_load(tmp_path, pairs_dir):
    import json
    # Classes: the card says 2, the graph's ArgMax chooses among 4.
    model = model_copy(tmp_path, num_classes=2, class_names=['a', 'b'],
                       palette=[[0, 0, 0], [255, 255, 255]])
    res = fuse(pairs_dir, tmp_path / 'out', '--model', model)
    assert_one_line_error(res, 2, str(model / 'model.json'), 'num_classes 2',
                          'emits 4 classes')
    # A file that is not the one the card was written for.
    other = tmp_path / 'other'
    other.mkdir()
    model2 = model_copy(other)
    card = json.loads((model2 / 'model.json').read_text())
    card['onnx_sha256'] = '0' * 64
    (model2 / 'model.json').write_text(json.dumps(card))
    res = fuse(pairs_dir, tmp_path / 'out2', '--model', model2)
    assert_one_line_error(res, 2, str(model2 / 'model.onnx'), 'onnx_sha256')
    assert not (tmp_path / 'out').exists() and not (tmp_path / 'out2').exists()


def test_bag_eval_drops_bad_model_outputs_and_oversized_frames(tmp_path, pairs_dir):
    import json
    from ssvif_ros.bag_cli import main as bag_main
    bag = tmp_path / 'bag'
    assert bag_main(['make', '--vi', str(pairs_dir / 'vi'), '--ir', str(pairs_dir / 'ir'),
                     '--out', str(bag), '--quiet']) == 0
    model = bad_output_model(tmp_path, 'nan')
    res = run_cli('ssvif_ros.bag_cli', 'eval', bag, '--out', tmp_path / 'ev', '--model', model,
                  '--quiet')
    assert res.returncode == 1 and 'Traceback' not in res.stderr, res.stderr[-2000:]
    c = json.loads((tmp_path / 'ev' / 'report.json').read_text())['counts']
    assert c['fused'] == 0 and c['dropped_by_reason'] == {'bad_output': 2}, c
    # As in the node, frames above max_input_pixels are dropped before pairing.
    res = run_cli('ssvif_ros.bag_cli', 'eval', bag, '--out', tmp_path / 'ev2', '--backend',
                  'maxluma', '--param', 'max_input_pixels:=1000', '--quiet')
    assert res.returncode == 1 and 'Traceback' not in res.stderr, res.stderr[-2000:]
    c = json.loads((tmp_path / 'ev2' / 'report.json').read_text())['counts']
    assert c['dropped_by_reason'] == {'rgb.too_large': 2, 'thermal.too_large': 2}, c


def test_fuse_makes_no_output_folder_when_no_pair_matches(tmp_path, pairs_dir):
    import shutil
    (tmp_path / 'other_ir').mkdir()
    for p in (pairs_dir / 'ir').iterdir():
        shutil.copy(p, tmp_path / 'other_ir' / ('x' + p.name))
    out = tmp_path / 'out'
    res = run_cli('ssvif_ros.fuse_cli', '--vi', pairs_dir / 'vi', '--ir', tmp_path / 'other_ir',
                  '--out', out)
    assert_one_line_error(res, 2, 'no pairs with matching names')
    assert not out.exists()


def _bad_checkpoints(tmp_path):
    import torch
    good = torch.load(DEFAULT_MODEL / 'model.pt', map_location='cpu', weights_only=True)
    out = {}
    for label, edit in (
            ('unknown_model', lambda c: c['fusion'].update(model_name='nosuchnet')),
            ('bad_config', lambda c: c['fusion'].update(model_config={'widthz': 3})),
            ('state_mismatch', lambda c: c['fusion']['state_dict'].popitem())):
        ck = {k: (dict(v) if isinstance(v, dict) else v) for k, v in good.items()}
        ck['fusion'] = dict(good['fusion'], state_dict=dict(good['fusion']['state_dict']))
        edit(ck)
        torch.save(ck, tmp_path / f'{label}.pt')
        out[label] = tmp_path / f'{label}.pt'
    (tmp_path / 'empty.pt').write_bytes(b'')
    out['empty'] = tmp_path / 'empty.pt'

    class Evil:
        def __reduce__(self):
            return (os.system, ('touch ' + str(tmp_path / 'pwned'),))
    torch.save({'fusion': Evil()}, tmp_path / 'pickle.pt')
    out['pickle'] = tmp_path / 'pickle.pt'
    return out


CKPT_WORDS = {'unknown_model': 'nosuchnet', 'bad_config': 'widthz',
              'state_mismatch': 'state_dict', 'empty': 'empty',
              'pickle': 'other than tensors'}


def test_bad_checkpoints_are_one_line_errors_in_export_and_torch_backend(tmp_path, pairs_dir):
    for label, path in _bad_checkpoints(tmp_path).items():
        res = run_cli('ssvif_train.export', path, '--out', tmp_path / f'exp_{label}')
        assert_one_line_error(res, 2, str(path), CKPT_WORDS[label])
    res = fuse(pairs_dir, tmp_path / 'out', '--backend', 'torch', '--model',
               tmp_path / 'unknown_model.pt')
    assert_one_line_error(res, 2, 'unknown_model.pt', 'nosuchnet')
    assert not (tmp_path / 'pwned').exists()


def test_an_existing_file_as_out_is_one_line_in_export_and_fuse(tmp_path, pairs_dir):
    afile = tmp_path / 'afile'
    afile.write_text('x')
    res = run_cli('ssvif_train.export', DEFAULT_MODEL / 'model.pt', '--out', afile)
    assert_one_line_error(res, 2, str(afile), 'existing file')
    res = fuse(pairs_dir, afile)
    assert_one_line_error(res, 2, str(afile), 'cannot create output folder')
    res = fuse(pairs_dir, afile / 'sub')
    assert_one_line_error(res, 2, str(afile / 'sub'), 'cannot create output folder')


# ---------------------------------------------------------------------------------------------
# Node parameters: homography and output size (pure functions, no ROS)


def _values(**overrides):
    from ssvif_ros.node_params import defaults
    values = defaults()
    values.update(backend='maxluma', **overrides)
    return values


def test_homography_has_no_scale_and_must_keep_the_frame_finite():
    from ssvif_ros.node_params import make_config
    cfg = make_config(_values(thermal_homography=[2e-5, 0, 0, 0, 2e-5, 0, 0, 0, 2e-5]))
    assert cfg.homography_identity
    cfg = make_config(_values(thermal_homography=[2.0, 0, 10.0, 0, 2.0, 6.0, 0, 0, 2.0]))
    assert cfg.homography == (1.0, 0, 5.0, 0, 1.0, 3.0, 0, 0, 1.0)
    with pytest.raises(ValueError, match='thermal_homography.*infinity'):
        make_config(_values(thermal_homography=[0, 0, 1, 0, 1, 0, 1, 0, 0]))
    with pytest.raises(ValueError, match='thermal_homography.*outside the 640x512'):
        make_config(_values(thermal_homography=[1, 0, -5000, 0, 1, 0, 0, 0, 1]))
    with pytest.raises(ValueError, match='singular'):
        make_config(_values(thermal_homography=[1, 2, 3, 2, 4, 6, 0, 0, 1]))


def test_homography_is_checked_per_frame_size_too():
    pytest.importorskip('sensor_msgs', reason='sensor_msgs (ROS 2) not installed')
    from ssvif_ros.frames import check_and_prepare as prepare_pair, FrameError
    from ssvif_ros.node_params import make_config
    from ssvif_ros.ros_image import numpy_to_image
    import numpy as np
    # fine for 640x512 frames; for a 4000 px wide RGB frame its line at infinity (x = 2000)
    # crosses the frame
    cfg = make_config(_values(thermal_homography=[1, 0, 0, 0, 1, 0, 5e-4, 0, 1]))
    rgb = numpy_to_image(np.zeros((20, 4000, 3), np.uint8), 'rgb8')
    th = numpy_to_image(np.zeros((20, 4000), np.uint8), 'mono8')
    with pytest.raises(FrameError, match='infinity') as info:
        prepare_pair(rgb, th, cfg)
    assert info.value.reason == 'bad_homography'


def test_output_size_needing_absurd_memory_is_rejected_with_the_limit():
    from ssvif_ros.node_params import make_config
    with pytest.raises(ValueError, match=r'output_size: 16384x16384 .*limit of 33177600'):
        make_config(_values(output_size='16384x16384'))
    assert make_config(_values(output_size='7680x4320')).output_size == (7680, 4320)


# ---------------------------------------------------------------------------------------------
# The node as a ROS 2 process: failing pairs, a dead worker, bad models at start

NODE_DOMAIN = 100 + os.getpid() % 100

# Runs the real node with a fault injected at a named point: prepare_pair (the decode and
# register stage: MemoryError as under a memory limit) or the backend call (a backend bug), for
# the pairs numbered in FAULT_PAIRS; FAULT=death raises a BaseException in the backend, which
# nothing per pair may swallow: the worker thread dies.
FAULTY_NODE = '''
import os, sys
from ssvif_ros import backends, frames, fusion_node
from ssvif_ros.backends.simple import MaxLumaBackend

FAULT = os.environ['FAULT']
FIRST, LAST = (int(v) for v in os.environ['FAULT_PAIRS'].split('-'))
count = [0]


class ThreadDeath(BaseException):
    pass


real_prepare = frames.prepare_pair


def prepare_pair(*args):
    count[0] += 1
    if FAULT == 'memory' and FIRST <= count[0] <= LAST:
        raise MemoryError()
    return real_prepare(*args)


class Faulty(MaxLumaBackend):
    name = 'faulty'

    def infer(self, vis, ir):
        if FIRST <= count[0] <= LAST:
            if FAULT == 'backend':
                raise RuntimeError('injected backend failure')
            if FAULT == 'death':
                raise ThreadDeath('injected thread death')
        return super().infer(vis, ir)


frames.prepare_pair = prepare_pair
backends.register('faulty', lambda model, threads, device: Faulty(), needs_model=False)
sys.exit(fusion_node.main())
'''


def node_env(**extra):
    return process_env(NODE_DOMAIN, **extra)


class Feeder(SpinningNode):
    """This process's ROS side: publishes pairs, records fused images and /diagnostics."""

    def __init__(self):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        # Fast DDS reads its profile once per process: a participant created here without the
        # package's SHM profile left later in-process tests (640x480 images) with the 0.5 MiB
        # default segment. The environment is restored in close().
        super().__init__('fault_feeder', ros_env(NODE_DOMAIN))
        self.fused, self.diag = [], []
        rel = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.node.create_subscription(Image, 'fused/image', self.fused.append, rel)
        self.sub_diag = self.node.create_subscription(DiagnosticArray, '/diagnostics',
                                                      self._on_diag, 50)
        self.pub_rgb = self.node.create_publisher(Image, 'rgb/image_raw', 10)
        self.pub_th = self.node.create_publisher(Image, 'thermal/image_raw', 10)

    def _on_diag(self, msg):
        for st in msg.status:
            if st.name.endswith('fusion_node: fusion'):
                self.diag.append((st.level, st.message, {kv.key: kv.value for kv in st.values}))

    def wait_connected(self, timeout=20.0):
        # Images both ways and the node's /diagnostics writer matched: a status sent before
        # the match never arrives.
        if wait_until(lambda: self.pub_rgb.get_subscription_count()
                      and self.pub_th.get_subscription_count()
                      and self.node.count_publishers('/fused/image')
                      and self.sub_diag.get_publisher_count(), timeout):
            time.sleep(0.5)
            return True
        return False

    def publish_pairs(self, n, rate=10.0):
        import numpy as np
        from ssvif_ros.ros_image import numpy_to_image
        rgb = np.full((48, 64, 3), 90, np.uint8)
        th = np.full((48, 64), 200, np.uint8)
        t0 = time.time_ns()
        stamps = []
        for i in range(n):
            stamp = t0 + i * int(1e9 / rate)
            for pub, img, enc in ((self.pub_rgb, rgb, 'rgb8'), (self.pub_th, th, 'mono8')):
                pub.publish(set_stamp(numpy_to_image(img, enc), stamp))
            stamps.append(stamp)
            time.sleep(1.0 / rate)
        return stamps


@pytest.fixture
def feeder():
    pytest.importorskip('rclpy', reason='rclpy (ROS 2) not installed')
    f = Feeder()
    yield f
    f.close()


def start_faulty_node(tmp_path, fault, pairs):
    script = tmp_path / 'faulty_node.py'
    script.write_text(FAULTY_NODE)
    return start_node(tmp_path / 'node.log', ['backend:=faulty'],
                      node_env(FAULT=fault, FAULT_PAIRS=pairs), script=script)


@pytest.mark.parametrize('fault,reason', [('memory', 'worker_error'),
                                          ('backend', 'inference_error')])
def test_the_worker_survives_failing_pairs_and_reports_error(tmp_path, feeder, fault, reason):
    from diagnostic_msgs.msg import DiagnosticStatus
    proc = start_faulty_node(tmp_path, fault, '3-22')
    try:
        assert feeder.wait_connected(), (tmp_path / 'node.log').read_text()[-2000:]
        stamps = feeder.publish_pairs(45)  # pairs 3..22 fail: two seconds of failures at 10 Hz
        after = set(stamps[23:])
        # Fused again after the failures (a pair of 23..44 came out; how many depends on the
        # machine's speed), and a status sent after that one arrived.
        assert wait_until(lambda: any(stamp_ns(m.header) in after for m in feeder.fused), 20.0), \
            (tmp_path / 'node.log').read_text()[-2000:]
        n_diag = len(feeder.diag)
        assert wait_until(lambda: len(feeder.diag) > n_diag + 1, 10.0)
        assert proc.poll() is None, (tmp_path / 'node.log').read_text()[-2000:]
        levels = [(lvl, msg) for lvl, msg, _ in feeder.diag]
        assert any(lvl == DiagnosticStatus.ERROR and 'pairs failed' in msg
                   for lvl, msg in levels), levels
        assert levels[-1][0] != DiagnosticStatus.ERROR, levels  # recovered after the failures
        values = feeder.diag[-1][2]
        assert int(values[f'drops.{reason}']) == 20, values
        log = (tmp_path / 'node.log').read_text()
        errors = [ln for ln in log.splitlines() if 'pair failed' in ln]
        assert 1 <= len(errors) <= 2, errors  # throttled: one per 5 s
        assert 'Traceback' not in log
    finally:
        stop(proc)


def test_a_dead_worker_makes_the_node_exit_1_for_a_supervisor(tmp_path, feeder):
    from diagnostic_msgs.msg import DiagnosticStatus
    proc = start_faulty_node(tmp_path, 'death', '3-3')
    try:
        assert feeder.wait_connected(), (tmp_path / 'node.log').read_text()[-2000:]
        feeder.publish_pairs(10)
        assert proc.wait(10) == 1
        assert any(lvl == DiagnosticStatus.ERROR and 'inference worker died' in msg
                   for lvl, msg, _ in feeder.diag), feeder.diag
        log = (tmp_path / 'node.log').read_text()
        assert 'injected thread death' in log and 'Traceback' not in log, log[-2000:]
    finally:
        stop(proc)


@pytest.mark.parametrize('fault', ['nan', 'class'])
def test_the_node_drops_nan_or_unknown_class_outputs_with_an_error_status(tmp_path, feeder,
                                                                          fault):
    from diagnostic_msgs.msg import DiagnosticStatus
    model = bad_output_model(tmp_path, fault)
    proc = start_node(tmp_path / 'node.log', ['backend:=onnxruntime', f'model:={model}',
                                              'threads:=1'], node_env())
    try:
        assert feeder.wait_connected(), (tmp_path / 'node.log').read_text()[-2000:]
        feeder.publish_pairs(10)
        assert wait_until(lambda: feeder.diag and int(
            feeder.diag[-1][2].get('drops.bad_output', 0)) >= 5, 15), feeder.diag[-3:]
        assert proc.poll() is None, (tmp_path / 'node.log').read_text()[-2000:]
        assert any(lvl == DiagnosticStatus.ERROR and 'pairs failed' in msg
                   for lvl, msg, _ in feeder.diag), feeder.diag
        assert feeder.fused == []  # not one bad frame was published
        assert int(feeder.diag[-1][2]['published']) == 0
        log = (tmp_path / 'node.log').read_text()
        assert 'bad_output' in log and 'Traceback' not in log, log[-2000:]
    finally:
        stop(proc)


def _rss_anon_mib(pid):
    from pathlib import Path
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('RssAnon:'):
            return int(line.split()[1]) / 1024.0
    pytest.skip('this kernel reports no RssAnon in /proc/<pid>/status')


def test_frames_above_max_input_pixels_are_dropped_on_arrival_and_cost_no_memory(tmp_path,
                                                                                 feeder):
    import numpy as np
    from ssvif_ros.ros_image import numpy_to_image
    proc = start_node(tmp_path / 'node.log', ['backend:=maxluma'], node_env())  # default limit
    log = tmp_path / 'node.log'
    try:
        assert feeder.wait_connected(), log.read_text()[-2000:]
        feeder.publish_pairs(10)  # warm-up at 64x48: buffers, DDS history
        assert wait_until(lambda: feeder.diag and int(feeder.diag[-1][2]['published']) > 0,
                          15), feeder.diag[-2:]
        rss0 = _rss_anon_mib(proc.pid)
        rgb = numpy_to_image(np.full((2160, 3840, 3), 90, np.uint8), 'rgb8')  # 25 MB
        nan = numpy_to_image(np.full((2160, 3840), np.nan, np.float32), '32FC1')  # 33 MB
        for _ in range(5):
            t = time.time_ns()
            feeder.pub_rgb.publish(set_stamp(rgb, t))
            feeder.pub_th.publish(set_stamp(nan, t))
            time.sleep(0.2)

        def too_large():
            d = feeder.diag[-1][2] if feeder.diag else {}
            return sum(int(d.get(f'drops.{s}.too_large', 0)) for s in ('rgb', 'thermal'))
        # Best-effort input: a 4K frame may be lost in transport, but some arrive.
        assert wait_until(lambda: too_large() >= 2, 15), feeder.diag[-1:]
        seen = len(feeder.diag)
        assert wait_until(lambda: len(feeder.diag) >= seen + 2, 10)  # two periods later
        rss1 = _rss_anon_mib(proc.pid)
        values = feeder.diag[-1][2]
        assert 'drops.thermal.non_finite' not in values, values  # never decoded
        # Five 4K pairs are 290 MB; kept, or even left as freed heap, they would show here.
        assert rss1 - rss0 < 100.0, (rss0, rss1, values)
        text = log.read_text()
        assert 'too_large' in text and 'max_input_pixels (5242880)' in text, text[-2000:]
        published = int(values['published'])
        feeder.publish_pairs(5)  # still fusing frames of an accepted size
        assert wait_until(lambda: int(feeder.diag[-1][2]['published']) > published, 10)
        assert proc.poll() is None and 'Traceback' not in log.read_text()
    finally:
        stop(proc)


@pytest.mark.parametrize('params,words', [
    (['backend:=torch', 'device:=abc'], 'abc'),
    (['model:={bad_card}'], 'pad_multiple'),
])
def test_node_start_with_a_bad_model_or_device_is_one_line_exit_2(tmp_path, params, words):
    pytest.importorskip('rclpy', reason='rclpy (ROS 2) not installed')
    bad_card = model_copy(tmp_path, pad_multiple=None)
    cmd = [sys.executable, '-m', 'ssvif_ros.fusion_node', '--ros-args']
    for p in params:
        cmd += ['-p', p.format(bad_card=bad_card)]
    res = subprocess.run(cmd, cwd=REPO, env=node_env(), capture_output=True, text=True,
                         timeout=60)
    out = (res.stdout + res.stderr).strip()
    assert res.returncode == 2, out[-2000:]  # a failed start (a restart would repeat it)
    assert 'Traceback' not in out and 'weights_only=False' not in out, out[-2000:]
    assert 'cannot start' in out.splitlines()[-1] and words in out.splitlines()[-1], out


# ---------------------------------------------------------------------------------------------
# Bags


def test_a_truncated_mcap_yields_the_pairs_before_the_cut(tmp_path, capsys):
    pytest.importorskip('rosbags')
    import json
    import test_bag_extract as tb
    topics, expected = tb.synthetic('rgb8', 'mono8')
    full = tb.write_bag(tmp_path / 'full', topics, 'mcap')
    assert tb.extract(full, tmp_path / 'out_full') == 0
    n_full = len(os.listdir(tmp_path / 'out_full' / 'vi'))
    bag = tb.write_bag(tmp_path / 'bag', topics, 'mcap')
    f = next(bag.glob('*.mcap'))
    data = f.read_bytes()
    f.write_bytes(data[:int(len(data) * 0.6)])
    assert tb.extract(bag, tmp_path / 'out') == 0
    err = capsys.readouterr().err
    assert f'{f} stops at byte {int(len(data) * 0.6)}' in err, err
    rep = json.loads((tmp_path / 'out' / 'extract.json').read_text())
    assert rep['status'] == 'truncated' and rep['truncated']['file'] == str(f)
    n = len(os.listdir(tmp_path / 'out' / 'vi'))
    assert 0 < n < n_full
    assert sorted(os.listdir(tmp_path / 'out' / 'vi')) == \
        sorted(os.listdir(tmp_path / 'out_full' / 'vi'))[:n]


def test_no_pairs_when_every_thermal_frame_failed_does_not_blame_clocks(tmp_path, capsys):
    pytest.importorskip('rosbags')
    import test_bag_extract as tb
    topics, _ = tb.synthetic('rgb8', 'mono8')
    for _, msg in topics[tb.TH_TOPIC][1]:
        msg.encoding = 'yuv422'
    bag = tb.write_bag(tmp_path / 'bag', topics, 'sqlite3')
    assert tb.extract(bag, tmp_path / 'out') == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert 'every one of the' in last and 'thermal frames failed conversion' in last, last
    assert 'thermal.unsupported_encoding' in last and 'clock' not in last, last


def _file_size_limit(limit=64 * 1024):
    """preexec_fn: writes past ``limit`` bytes fail with EFBIG, as on a full disk."""
    import resource
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_disk_full_during_export_is_one_line_and_leaves_no_temp_file(tmp_path):
    out = tmp_path / 'exp'
    res = run_cli('ssvif_train.export', DEFAULT_MODEL / 'model.pt', '--out', out,
                  preexec_fn=_file_size_limit)
    assert_one_line_error(res, 2, str(out / 'model.onnx'), os.strerror(errno.EFBIG))
    assert os.listdir(out) == []


def test_pairing_drops_get_a_throttled_warning(tmp_path, feeder):
    proc = start_node(tmp_path / 'node.log', ['backend:=maxluma', 'queue_size:=2'],
                      node_env())
    try:
        assert feeder.wait_connected(), (tmp_path / 'node.log').read_text()[-2000:]
        import numpy as np
        from ssvif_ros.ros_image import numpy_to_image
        for i in range(25):  # RGB only: the thermal camera stopped
            msg = numpy_to_image(np.zeros((8, 8, 3), np.uint8), 'rgb8')
            msg.header.stamp.sec = 1000 + i
            feeder.pub_rgb.publish(msg)
            time.sleep(0.1)
        time.sleep(1.5)
    finally:
        stop(proc)
    lines = [ln for ln in (tmp_path / 'node.log').read_text().splitlines()
             if 'pairing dropped' in ln]
    assert 1 <= len(lines) <= 2 and 'pairing.rgb.queue_overflow' in lines[0], lines
