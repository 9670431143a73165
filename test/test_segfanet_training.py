"""SegFANet in the trainer: supervised (labels) and label-free (CSC) modes, weightings, configs."""
import csv
import math
from pathlib import Path

from model_helpers import one_thread  # noqa: F401 (autouse fixture)
import numpy as np
import pytest
import torch

from ssvif_ros import imaging
from ssvif_train.cli import main as train_main
from ssvif_train.config import load_config
from ssvif_train.tensor_imaging import hwc_to_nchw
from ssvif_train.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / 'config' / 'train').glob('segfanet_*.yaml'))
TINY = 'model.args={widths: [8, 8, 8], stem: 4, seg_width: 8, pool: 4}'
QUICK = ['train.progress=false', 'train.threads=1', 'train.val_metrics=[]', 'data.crop=32',
         'train.batch_size=2']


def read_csv(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def _synthetic_pair(rng, h=64, w=96):
    """A visible/thermal pair with a warm person and a car, and its MSRS pixel label."""
    vis = rng.integers(40, 90, (h, w, 3)).astype(np.uint8)
    ir = rng.integers(20, 60, (h, w)).astype(np.uint8)
    label = np.zeros((h, w), np.uint8)
    y, x = int(rng.integers(8, h - 40)), int(rng.integers(4, w - 40))
    ir[y:y + 30, x:x + 12] = 220                    # person: warm
    label[y:y + 30, x:x + 12] = 2
    cy, cx = int(rng.integers(40, h - 12)), int(rng.integers(40, w - 30))
    vis[cy:cy + 10, cx:cx + 26] = (200, 30, 30)     # car: a red block in the visible image
    label[cy:cy + 10, cx:cx + 26] = 1
    return vis, ir, label


@pytest.fixture(scope='module')
def labelled(tmp_path_factory):
    """An MSRS-layout folder of 4 synthetic labelled pairs (vi, ir, Segmentation_labels)."""
    root = tmp_path_factory.mktemp('labelled')
    rng = np.random.default_rng(0)
    for i in range(4):
        vis, ir, label = _synthetic_pair(rng)
        imaging.write_image(root / 'vi' / f'{i:03d}.png', vis)
        imaging.write_image(root / 'ir' / f'{i:03d}.png', ir)
        imaging.write_image(root / 'Segmentation_labels' / f'{i:03d}.png', label)
    return root


def _trainer(config, data, out, *sets):
    cfg = load_config(str(config), [f'data.root={data}', *QUICK, *sets])
    return Trainer(cfg, str(out))


def _batch(data, stems=('000', '001')):
    vis, ir, lab = [], [], []
    for s in stems:
        v, t = imaging.preprocess_pair(imaging.read_image(data / 'vi' / f'{s}.png', mode='rgb'),
                                       imaging.read_image(data / 'ir' / f'{s}.png', mode='gray'))
        vis.append(hwc_to_nchw(v))
        ir.append(hwc_to_nchw(t))
        lab.append(torch.from_numpy(imaging.read_image(
            data / 'Segmentation_labels' / f'{s}.png', mode='gray').astype(np.int64)))
    return torch.cat(vis), torch.cat(ir), torch.stack(lab)


def test_supervised_steps_learn_a_synthetic_labelled_pair(labelled, tmp_path):
    t = _trainer(REPO / 'config' / 'train' / 'segfanet_supervised.yaml', labelled, tmp_path,
                 TINY, 'train.lr=3e-3')
    assert t.schedule.stage == 2 and t.net.seg is None and t.net.head is not None  # no S
    assert t.fusion_loss == 'segfanet'
    vis, ir, label = _batch(labelled, ('000',))
    rows = [t.train_step(vis, ir, label) for _ in range(25)]
    first, last = rows[0], rows[-1]
    for r in rows:
        # L_total = L_f + L_rec + L_s (paper eq. 14): weighting fixed with omega 1
        assert r['omega_csc'] == 1.0
        assert r['loss_fusion'] == pytest.approx(r['ssim_ir'] + r['ssim_vis'] + r['loss_rec'],
                                                 rel=1e-5)
        assert r['loss_rec'] == pytest.approx(r['rec_1'] + r['rec_2'] + r['rec_3'], rel=1e-5)
        assert r['loss_total'] == pytest.approx(r['loss_fusion'] + r['seg_ce'] + r['seg_dice'],
                                                rel=1e-5)
        assert 'loss_csc' not in r
    assert last['seg_ce'] < 0.7 * first['seg_ce']
    assert last['loss_fusion'] < first['loss_fusion']


def test_supervised_run_writes_its_terms_and_exports(labelled, tmp_path, msrs_dir):
    out = tmp_path / 'run'
    rc = train_main([str(REPO / 'config' / 'train' / 'segfanet_supervised.yaml'), '--data',
                     str(labelled), '--out', str(out), '--set', 'train.epochs=2',
                     '--set', 'data.val_fraction=0.25']
                    + [a for s in QUICK + [TINY] for a in ('--set', s)])
    assert rc == 0
    steps = read_csv(out / 'steps.csv')
    assert steps and all(r['stage'] == '2' for r in steps)
    for key in ('ssim_ir', 'ssim_vis', 'rec_1', 'rec_2', 'rec_3', 'loss_rec', 'seg_ce',
                'seg_dice', 'loss_sup', 'g_a', 'g_b', 'cos_phi'):
        assert all(math.isfinite(float(r[key])) for r in steps), key
    assert all(r['loss_csc'] == '' and r['int'] == '' for r in steps)
    epochs = read_csv(out / 'epochs.csv')
    assert len(epochs) == 2 and all(math.isfinite(float(r['val_miou'])) for r in epochs)
    ckpt = torch.load(out / 'last.pt', weights_only=True)
    assert ckpt['head'] is not None and ckpt['seg'] is None
    assert ckpt['fusion']['model_name'] == 'segfanet'
    from export_helpers import check_exported
    check_exported(out / 'last.pt', tmp_path / 'model', msrs_dir, 'segfanet', 4)


def test_label_free_run_on_real_msrs_pairs(msrs_subset, tmp_path):
    data = msrs_subset(4)
    out = tmp_path / 'run'
    rc = train_main([str(REPO / 'config' / 'train' / 'segfanet_ssvif.yaml'), '--data',
                     str(data), '--out', str(out), '--set', 'train.epochs=2',
                     '--set', 'train.stage1_max_epochs=1', '--set', 'model.segformer=tiny',
                     '--set', 'data.val_fraction=0.25', '--set', 'data.crop=48']
                    + [a for s in QUICK + [TINY] for a in ('--set', s)])
    assert rc == 0
    steps = read_csv(out / 'steps.csv')
    assert [r['stage'] for r in steps] == ['1', '2']
    s1, s2 = steps
    for key in ('ssim_ir', 'ssim_vis', 'rec_1', 'rec_2', 'rec_3'):
        assert float(s1[key]) > 0 and float(s2[key]) > 0, key
    for key in ('loss_csc', 'ce_a', 'dice_a', 'ce_b', 'dice_b', 'omega_csc', 'g_b'):
        assert math.isfinite(float(s2[key])) and float(s2[key]) > 0, key
    assert s2['loss_sup'] == '' and s2['seg_ce'] == ''     # no labels used
    ckpt = torch.load(out / 'last.pt', weights_only=True)
    assert ckpt['head'] is not None and ckpt['seg']['preset'] == 'tiny'


@pytest.mark.parametrize('method', ['gdwa', 'fixed', 'dwa', 'ucw'])
def test_weighting_strategies_balance_fusion_and_segmentation(labelled, tmp_path, method):
    t = _trainer(REPO / 'config' / 'train' / 'segfanet_supervised.yaml', labelled, tmp_path,
                 TINY, f'weighting.method={method}', 'weighting.fixed_omega=0.3')
    row = t.train_step(*_batch(labelled))
    assert row['g_a'] > 0 and row['g_b'] > 0
    # the first stage-II step: descent rates are 1, UCW's log-variances 0
    want = {'gdwa': row['g_b'] / row['g_a'], 'fixed': 0.3, 'dwa': 1.0, 'ucw': 1.0}[method]
    assert row['omega_csc'] == pytest.approx(want, rel=1e-6)


def test_the_fusion_loss_is_an_option(labelled, tmp_path):
    t = _trainer(REPO / 'config' / 'train' / 'segfanet_supervised.yaml', labelled, tmp_path,
                 TINY, 'loss.fusion=ssvif', 'loss.lambda_rec=0.5')
    row = t.train_step(*_batch(labelled))
    want = (20 * row['int'] + 20 * row['grad'] + 10 * row['ssim'] + 20 * row['color']
            + 0.5 * row['loss_rec'])
    assert row['loss_fusion'] == pytest.approx(want, rel=1e-5)
    assert 'ssim_ir' not in row


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.stem)
def test_every_segfanet_config_trains_a_step(path, labelled, tmp_path):
    sets = ['model.segformer=tiny'] if 'ssvif' in path.stem else []
    t = _trainer(path, labelled, tmp_path, *sets)
    cfg = load_config(str(path))
    assert t.net.fusion.model_config == cfg.model.args         # the config's own model
    t.schedule.stage = 2
    before = [p.detach().clone() for p in t.net.fusion.parameters()]
    row = t.train_step(*_batch(labelled))
    args = cfg.model.args
    n_rec = args['sinets'] if args['irm'] else 0
    assert len([k for k in row if k.startswith('rec_')]) == n_rec
    assert math.isfinite(row['loss_total'])
    assert ('loss_csc' in row) == cfg.train.csc and ('seg_ce' in row) != cfg.train.csc
    moved = sum(not torch.equal(a, p) for a, p in zip(before, t.net.fusion.parameters()))
    assert moved == len(before)


def test_all_ablation_configs_are_here():
    names = {p.stem for p in CONFIGS}
    assert {'segfanet_supervised', 'segfanet_ssvif', 'segfanet_sinets1', 'segfanet_sinets2',
            'segfanet_no_irm', 'segfanet_no_cam'} <= names
    base = load_config(str(REPO / 'config' / 'train' / 'segfanet_supervised.yaml')).to_dict()
    changes = {'segfanet_sinets1': {'sinets': 1}, 'segfanet_sinets2': {'sinets': 2},
               'segfanet_no_irm': {'irm': False}, 'segfanet_no_cam': {'cam': False}}
    for name, change in changes.items():
        cfg = load_config(str(REPO / 'config' / 'train' / f'{name}.yaml')).to_dict()
        assert cfg['model']['args'] == dict(base['model']['args'], **change), name
        cfg['model']['args'] = base['model']['args']
        assert cfg == base, name                       # nothing else differs
