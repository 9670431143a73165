"""bench/seg_downstream.py: end to end on a tiny setting, same recipe per source, bad input."""
import importlib.util
import json
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest
import torch

from ssvif_ros import imaging, labels
from ssvif_train.models.registry import atomic_torch_save, create_model, model_record

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / 'bench' / 'seg_downstream.py'


@pytest.fixture(scope='module')
def bench():
    spec = importlib.util.spec_from_file_location('seg_downstream', SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def tiny_segfanet(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / 'segfanet.pt'
    model = create_model('segfanet', widths=[8, 8, 8], stem=4, seg_width=8, pool=4)
    atomic_torch_save({'fusion': model_record(model)}, path)
    return path


def _run(*args, timeout=120):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


def test_end_to_end_on_a_tiny_setting(tmp_path, msrs_dir, tiny_segfanet):
    out_json = tmp_path / 'r.json'
    res = _run('--data', msrs_dir, '--max-train', 3, '--max-val', 2, '--epochs', 1,
               '--crop', 32, '--batch', 2, '--seeds', 0, 1, '--threads', 1,
               '--ckpt', f'segfanet={tiny_segfanet}', '--json', out_json,
               '--out', tmp_path / 'r.md')
    assert res.returncode == 0, res.stderr
    text = res.stdout
    assert '--seeds 0 1' in text and '--ckpt segfanet=' in text    # the command that made it
    rows = [ln for ln in text.splitlines() if ln.startswith('| ') and 'source' not in ln]
    assert [r.split(' | ')[0][2:] for r in rows] == [
        'visible only', 'thermal only', 'max-luma rule', 'SegFANet, box-supervised']
    assert all(r.count(' ± ') == 4 for r in rows)                  # mean ± sd in every cell
    # the last column: how far each source's images are from the max-luma rule's
    delta = {r.split(' | ')[0][2:]: float(r.rstrip(' |').split(' | ')[-1]) for r in rows}
    assert delta['max-luma rule'] == 0.0
    assert delta['visible only'] > 0.0 and delta['thermal only'] > 0.0
    assert 'smaller than their spread is not claimed' in text
    assert (tmp_path / 'r.md').read_text() == text
    data = json.loads(out_json.read_text())
    assert data['n_train'] == 3 and data['n_val'] == 2 and data['seeds'] == [0, 1]
    assert data['image_vs_maxluma'] == pytest.approx(
        {k: delta[bench_title] for k, bench_title in (
            ('visible', 'visible only'), ('thermal', 'thermal only'),
            ('maxluma', 'max-luma rule'), ('segfanet', 'SegFANet, box-supervised'))}, abs=0.005)
    # scored against exactly the boxes of the first two validation pairs
    cmap = labels.box_class_map(labels.DEFAULT_BOX_CLASSES, 4)
    stems = sorted(p.stem for p in (msrs_dir / 'val' / 'vi').iterdir())[:2]
    want = {c: 0 for c in ('person', 'car', 'bike')}
    for s in stems:
        for b in labels.read_boxes(msrs_dir / 'val' / 'boxes' / f'{s}.txt', cmap):
            want[{1: 'car', 2: 'person', 3: 'bike'}[b.cls]] += 1
    for name, runs in data['results'].items():
        assert len(runs) == 2, name
        for r in runs:
            assert {c: r['classes'][c]['boxes'] for c in want} == want
            assert r['box_f1'] is None or 0.0 <= r['box_f1'] <= 1.0


def test_sources_are_the_images_they_claim(bench, msrs_dir, tiny_segfanet):
    pairs = bench.load_split(msrs_dir, 'val', 1)
    p = pairs[0]
    vis = bench.source_images('visible', pairs)[0]
    ir = bench.source_images('thermal', pairs)[0]
    rule = bench.source_images('maxluma', pairs)[0]
    assert np.array_equal(vis, imaging.to_uint8(p['vis']))
    assert np.array_equal(ir[:, :, 0], ir[:, :, 2])
    assert np.array_equal(rule, imaging.to_uint8(imaging.max_luma_fusion(p['vis'], p['ir'])))
    model = bench.load_fusion_model('segfanet', str(tiny_segfanet))
    fused = bench.source_images('segfanet', pairs, model)[0]
    assert fused.shape == vis.shape and fused.dtype == np.uint8
    assert not np.array_equal(fused, vis) and not np.array_equal(fused, rule)
    # the weak labels are the trainer's: boxes_to_mask with the thermal image
    raw_ir = imaging.read_image(msrs_dir / 'val' / 'ir' / f'{p["stem"]}.png', mode='gray')
    h, w = raw_ir.shape
    assert np.array_equal(p['label'], labels.boxes_to_mask(p['boxes'], (w, h), raw_ir))


def test_same_seed_same_crops_and_weights_for_every_source(bench, msrs_dir):
    pairs = bench.load_split(msrs_dir, 'train', 3)
    imgs_a = bench.source_images('visible', pairs)
    imgs_b = bench.source_images('thermal', pairs)
    idx = np.array([2, 0])
    xa, ya = bench._batch(imgs_a, pairs, idx, 32, 5, 1, 0.7)
    xb, yb = bench._batch(imgs_b, pairs, idx, 32, 5, 1, 0.7)
    assert torch.equal(ya, yb) and not torch.equal(xa, xb)     # same crops, other images
    args = bench.build_parser().parse_args(['--epochs', '1', '--crop', '32', '--batch', '2'])
    n1 = bench.train_seg(imgs_a, pairs, args, seed=3)
    n2 = bench.train_seg(imgs_a, pairs, args, seed=3)
    n3 = bench.train_seg(imgs_b, pairs, args, seed=3)
    s1, s2, s3 = (n.state_dict() for n in (n1, n2, n3))
    assert all(torch.equal(s1[k], s2[k]) for k in s1)            # reproducible
    assert not all(torch.equal(s1[k], s3[k]) for k in s1)        # the images matter
    assert 0.1e6 <= sum(p.numel() for p in n1.parameters()) <= 0.15e6


def test_bad_input_is_named(bench, tmp_path, msrs_dir, capsys):
    def run(*args):
        rc = bench.main([str(a) for a in args])
        return rc, capsys.readouterr().err

    rc, err = run('--data', msrs_dir, '--ckpt', f'ssvif={tmp_path / "nope.pt"}')
    assert rc == 2 and 'nope.pt' in err
    rc, err = run('--data', msrs_dir, '--sources', 'visible', 'plain')
    assert rc == 2 and '--ckpt plain=PATH' in err
    rc, err = run('--data', tmp_path / 'nothing')
    assert rc == 2 and 'train/ and val/' in err
    rc, err = run('--data', msrs_dir, '--crop', 50)
    assert rc == 2 and '--crop must be a multiple of 8' in err
    bad = tmp_path / 'bad.pt'
    bad.write_bytes(b'not a checkpoint')
    # refused before any pair is loaded or any network trained
    rc, err = run('--data', msrs_dir, '--ckpt', f'ssvif={bad}')
    assert rc == 2 and 'bad.pt' in err and 'cannot read checkpoint' in err


def test_a_fusion_source_is_trained_by_the_script(bench, tmp_path, msrs_dir, capsys):
    work = tmp_path / 'work'
    rc = bench.main(['--data', str(msrs_dir), '--max-train', '3', '--max-val', '1',
                     '--epochs', '1', '--crop', '32', '--batch', '2', '--threads', '1',
                     '--sources', 'segfanet', '--train-fusion-epochs', '1', '--work', str(work),
                     '--fusion-set', 'data.crop=32', '--fusion-set', 'train.batch_size=2',
                     '--fusion-set', 'model.args={widths: [8, 8, 8], stem: 4, seg_width: 8}'])
    assert rc == 0
    out = capsys.readouterr().out
    assert '| SegFANet, box-supervised |' in out
    ckpt = torch.load(work / 'fusion_segfanet' / 'last.pt', weights_only=True)
    assert ckpt['fusion']['model_name'] == 'segfanet' and ckpt['seg'] is None
    assert ckpt['config']['data']['max_pairs'] == 3          # the bench's training pairs


def test_image_delta_is_the_mean_abs_difference_in_grey_levels(bench):
    a = np.full((2, 3, 3), 200, np.uint8)
    b = np.full((2, 3, 3), 10, np.uint8)
    b[0, 0, 0] = 250                                  # 50 the other way: no uint8 wrap-around
    want = (17 * 190 + 50) / 18
    assert bench.image_delta([a, a], [b, a]) == pytest.approx((want + 0.0) / 2)
