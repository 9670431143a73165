"""ssvif-export, the model card, and backend parity (torch vs ONNX Runtime) on real MSRS pairs."""
import json
import os
from pathlib import Path
import subprocess
import sys

import numpy as np
import onnx
import pytest

from ssvif_ros import imaging
from ssvif_ros import trt_engine
from ssvif_ros.backends import BackendError, create_backend
from ssvif_ros.dataset_paths import list_pairs
from ssvif_train.cli import main as train_main
from ssvif_train.export import main as export_main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A real (briefly trained) rtfusion checkpoint with H, on generated images."""
    root = tmp_path_factory.mktemp('data')
    rng = np.random.default_rng(0)
    for i in range(4):
        imaging.write_image(root / 'vi' / f'{i}.png', rng.integers(0, 255, (72, 96, 3), np.uint8))
        imaging.write_image(root / 'ir' / f'{i}.png', rng.integers(0, 255, (72, 96), np.uint8))
    run = tmp_path_factory.mktemp('run')
    rc = train_main(['--data', str(root), '--out', str(run), '--set', 'model.name=rtfusion',
                     '--set', 'model.segformer=b0', '--set', 'train.epochs=2',
                     '--set', 'train.stage1_max_epochs=1', '--set', 'data.crop=48',
                     '--set', 'train.batch_size=2', '--set', 'train.progress=false',
                     '--set', 'data.val_fraction=0', '--set', 'train.threads=1'])
    assert rc == 0
    out = tmp_path_factory.mktemp('model')
    assert export_main([str(run / 'last.pt'), '--out', str(out), '--copy-checkpoint']) == 0
    return run, out


def real_pairs(msrs_dir, n=3):
    for vi, ir in list_pairs(msrs_dir / 'val')[:n]:
        yield vi.name, imaging.preprocess_pair(imaging.read_image(vi, mode='rgb'),
                                               imaging.read_image(ir, mode='gray'))


def test_onnx_is_valid_and_card_describes_it(trained):
    _, out = trained
    model = onnx.load(out / 'model.onnx')
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ['vis', 'ir']
    assert [o.name for o in model.graph.output] == ['fused', 'class_ids']

    def dims(t):
        return [d.dim_param or d.dim_value for d in t.type.tensor_type.shape.dim]
    u8, f32 = onnx.TensorProto.UINT8, onnx.TensorProto.FLOAT
    # frames in (uint8 RGB, the float thermal plane), uint8 images out; dynamic N, H, W
    assert [(t.type.tensor_type.elem_type, dims(t)) for t in model.graph.input] == [
        (u8, ['N', 'H', 'W', 3]), (f32, ['N', 'H', 'W'])]
    assert [(t.type.tensor_type.elem_type, dims(t)) for t in model.graph.output] == [
        (u8, ['N', 'H', 'W', 3]), (u8, ['N', 'H', 'W'])]
    card = json.loads((out / 'model.json').read_text())
    assert card['format'] == 'ssvif-model/2'
    assert card['inputs']['vis'] == {'shape': ['N', 'H', 'W', 3], 'dtype': 'uint8',
                                     'range': [0, 255]}
    assert card['outputs']['fused']['dtype'] == 'uint8'
    assert card['pad_multiple'] == 8 and card['num_classes'] == 15
    assert len(card['class_names']) == 15 and len(card['palette']) == 15
    assert card['normalization']['thermal']['method'] == 'auto'
    assert card['source']['checkpoint_sha256'] and card['source']['config_digest']
    from ssvif_train.deploy import file_sha256
    assert card['onnx_sha256'] == file_sha256(out / 'model.onnx')
    assert card['parity']['fused_max_grey_diff'] <= 1
    assert card['parity']['fused_equal_fraction'] >= 0.999
    assert card['parity']['class_ids_agreement'] >= 0.999


def grey_levels_agree(f1, f2):
    """uint8 images within 1 grey level of each other and equal at >= 99.9 % of the values."""
    assert f1.dtype == f2.dtype == np.uint8 and f1.shape == f2.shape
    diff = np.abs(f1.astype(np.int16) - f2)
    return int(diff.max()) <= 1 and float((diff == 0).mean()) >= 0.999


def test_torch_and_onnxruntime_backends_agree_on_real_msrs(trained, msrs_dir):
    _, out = trained
    ort_b = create_backend('onnxruntime', str(out), threads=2)
    torch_b = create_backend('torch', str(out), threads=2)
    for stem, (v, t) in real_pairs(msrs_dir):
        f1, c1 = ort_b.infer(v, t)
        f2, c2 = torch_b.infer(v, t)
        assert f1.shape == (480, 640, 3) and c1.shape == (480, 640) and c1.dtype == np.uint8
        assert grey_levels_agree(f1, f2), stem
        assert (c1 == c2).mean() >= 0.999, stem
        assert c1.max() < 15
        # the learned fusion is neither input
        f = f1 / 255.0
        assert np.abs(f - v).mean() > 1e-3 and np.abs(f - t).mean() > 1e-3


def test_dynamic_sizes_and_padding_through_the_backend(trained, msrs_dir):
    _, out = trained
    b = create_backend('onnxruntime', str(out))
    t = create_backend('torch', str(out))
    _, (v, ir) = next(real_pairs(msrs_dir, 1))
    for h, w in ((240, 320), (250, 333)):  # the second needs padding to a multiple of 8
        f1, c1 = b.infer(v[:h, :w], ir[:h, :w])
        f2, c2 = t.infer(v[:h, :w], ir[:h, :w])
        assert f1.shape == (h, w, 3) and c1.shape == (h, w)
        assert grey_levels_agree(f1, f2) and (c1 == c2).mean() >= 0.999


def test_export_errors_name_the_file(tmp_path, capsys):
    assert export_main([str(tmp_path / 'nope.pt'), '--out', str(tmp_path / 'o')]) == 2
    assert 'nope.pt' in capsys.readouterr().err
    bad = tmp_path / 'bad.pt'
    bad.write_bytes(b'not a checkpoint')
    assert export_main([str(bad), '--out', str(tmp_path / 'o')]) == 2
    assert 'bad.pt' in capsys.readouterr().err


def test_engine_request_fails_fast_and_keeps_the_onnx(trained, tmp_path):
    run, _ = trained
    out = tmp_path / 'with_engine'
    res = subprocess.run([sys.executable, '-m', 'ssvif_train.export', str(run / 'last.pt'),
                          '--out', str(out), '--engine', '--fp16'],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert res.returncode == 3, res.stderr
    assert 'TensorRT' in res.stderr and 'is complete' in res.stderr
    assert (out / 'model.onnx').is_file() and (out / 'model.json').is_file()
    with pytest.raises(BackendError, match='TensorRT'):
        create_backend('tensorrt', str(out))
    with pytest.raises(BackendError, match='CUDAExecutionProvider'):
        create_backend('onnxruntime', str(out), device='cuda')


def test_engine_cache_name_follows_the_onnx_bytes(trained, tmp_path):
    _, out = trained
    copy = tmp_path / 'model.onnx'
    copy.write_bytes((out / 'model.onnx').read_bytes())
    p1 = trt_engine.engine_path(str(copy), fp16=True)
    assert p1.endswith('.fp16.engine') and p1 != trt_engine.engine_path(str(copy), fp16=False)
    m = onnx.load(copy)
    m.producer_name = 'changed'
    onnx.save(m, copy)
    assert trt_engine.engine_path(str(copy), fp16=True) != p1
    mn, opt, mx = trt_engine.profile_shapes((1080, 1920), pad_multiple=8)
    assert mn == (1, 3, 64, 64) and opt == (1, 3, 480, 640) and mx == (1, 3, 1080, 1920)
    # frame graphs: N x H x W x 3 and N x H x W of any size from the pad multiple up
    shapes = trt_engine.frame_profile_shapes((1024, 1281), pad_multiple=8)
    assert shapes == {'vis': ((1, 8, 8, 3), (1, 480, 640, 3), (1, 1024, 1281, 3)),
                      'ir': ((1, 8, 8), (1, 480, 640), (1, 1024, 1281))}
    with pytest.raises(trt_engine.TensorRTUnavailable, match='TensorRT'):
        trt_engine.build_engine(str(copy))


def test_backend_errors_are_clear(tmp_path):
    with pytest.raises(BackendError, match='unknown backend'):
        create_backend('magic')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(BackendError, match='no model.json'):
        create_backend('onnxruntime', str(tmp_path / 'empty'))
    with pytest.raises(BackendError, match='not found'):
        create_backend('onnxruntime', str(tmp_path / 'x.onnx'))
    (tmp_path / 'junk.onnx').write_bytes(b'junk')
    with pytest.raises(BackendError, match='junk.onnx'):
        create_backend('onnxruntime', str(tmp_path / 'junk.onnx'))


def test_fuse_cli_writes_outputs_and_reports_bad_files(trained, msrs_dir, tmp_path):
    from ssvif_ros.fuse_cli import main as fuse_main
    _, model = trained
    vi, ir = tmp_path / 'vi', tmp_path / 'ir'
    vi.mkdir()
    ir.mkdir()
    pairs = list_pairs(msrs_dir / 'val')[:2]
    for v, t in pairs:
        os.symlink(v, vi / v.name)
        os.symlink(t, ir / t.name)
    (vi / 'broken.png').write_bytes(b'xx')
    (ir / 'broken.png').write_bytes(b'xx')
    os.symlink(pairs[0][0], vi / 'alone.png')
    out = tmp_path / 'out'
    rc = fuse_main(['--vi', str(vi), '--ir', str(ir), '--out', str(out), '--model', str(model)])
    assert rc == 1
    report = json.loads((out / 'report.json').read_text())
    assert report['written'] == 2 and list(report['failed']) == ['broken']
    assert report['visible_without_thermal'] == ['alone']
    for v, _ in pairs:
        name = f'{v.stem}.png'
        fused = imaging.read_image(out / 'fused' / name)
        ids = imaging.read_image(out / 'segmentation' / name)
        assert fused.shape == (480, 640, 3) and ids.shape == (480, 640) and ids.max() < 15
        assert (out / 'segmentation_color' / name).is_file()
