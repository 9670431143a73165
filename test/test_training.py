"""End-to-end SSVIF training on real MSRS pairs (CPU): stages, logs, checkpoints, resume, DDP."""
import csv
import json
import os
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest
import torch

from ssvif_ros import imaging
from ssvif_ros.dataset_paths import list_pairs
from ssvif_train.cli import main as train_main
from ssvif_train.config import load_config
from ssvif_train.distributed import pick_device, ranks_fit_error
from ssvif_train.models.registry import load_model
from ssvif_train.schedule import should_switch
from ssvif_train.tensor_imaging import hwc_to_nchw
from ssvif_train.trainer import Trainer, TrainingError

SMALL = ['data.crop=48', 'data.val_crop=64', 'train.batch_size=2', 'train.steps_per_epoch=2',
         'train.progress=false', 'train.val_metric_images=1', 'train.threads=1']


def tiny_args(data, *sets):
    """ssvif-train arguments: a tiny SeAFusion-style F, SegFormer-B0, SMALL, plus ``sets``."""
    pairs = ['model.name=seafusion', 'model.args={widths: [8, 8, 8]}', 'model.segformer=b0',
             *sets, *SMALL]
    return ['--data', str(data)] + [a for s in pairs for a in ('--set', s)]


def read_csv(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def test_stage_switch_rule():
    assert not should_switch([5.0], 1, cap=50)
    assert not should_switch([5.0, 4.0, 3.0], 3, cap=50)
    assert should_switch([5.0, 4.0, 4.5], 3, cap=50)        # first rise
    assert should_switch([5.0, 4.0], 2, cap=2)              # cap reached
    assert not should_switch([5.0, 5.0], 2, cap=50)         # equal is not a rise


def test_two_epochs_on_real_msrs_reach_stage_two_and_reload(msrs_subset, tmp_path):
    data = msrs_subset(8)
    out = tmp_path / 'run'
    rc = train_main(['--data', str(data), '--out', str(out), '--set', 'model.name=seafusion',
                     '--set', 'model.segformer=b3', '--set', 'train.epochs=2',
                     '--set', 'train.stage1_max_epochs=1']
                    + [a for s in SMALL for a in ('--set', s)])
    assert rc == 0
    epochs = read_csv(out / 'epochs.csv')
    assert [r['stage'] for r in epochs] == ['1', '2']
    steps = read_csv(out / 'steps.csv')
    assert len(steps) == 4
    s2 = [r for r in steps if r['stage'] == '2']
    for key in ('loss_csc', 'ce_a', 'dice_a', 'ce_b', 'dice_b', 'omega_csc', 'g_a', 'g_b',
                'r_a', 'r_b', 'alpha_cf', 'cos_phi'):
        assert all(np.isfinite(float(r[key])) for r in s2), key
    assert all(float(r['omega_csc']) > 0 for r in s2)
    for key in ('int', 'grad', 'ssim', 'color'):
        assert float(steps[0][key]) > 0
    assert any(p.name.startswith('events.out.tfevents') for p in (out / 'tb').iterdir())
    for m in ('EN', 'MI', 'VIF', 'Qabf', 'SSIM', 'DeltaE'):  # validation metrics per epoch
        assert all(np.isfinite(float(r[f'val_{m}'])) for r in epochs), m
    ckpt = torch.load(out / 'last.pt', weights_only=True)
    assert ckpt['state']['stage'] == 2 and ckpt['head'] is not None
    assert ckpt['seg']['preset'] == 'b3'
    # a checkpoint rebuilds its own model and gives identical outputs on a real full image
    model = load_model(out / 'last.pt')
    vi_path, ir_path = list_pairs(data)[0]
    vis = imaging.read_image(vi_path, mode='rgb')
    ir = imaging.read_image(ir_path, mode='gray')
    v, t = imaging.preprocess_pair(vis, ir)
    vt, it = hwc_to_nchw(v)[:, :, :96, :128], hwc_to_nchw(t)[:, :, :96, :128]
    cfg = load_config(str(out / 'config.json'))
    trainer = Trainer(cfg, str(out), resume=True)
    trainer.net.eval()
    with torch.no_grad():
        a = model(vt, it)
        b = trainer.net.fusion(vt, it)
    assert torch.equal(a, b)
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0


def test_resume_continues_exactly(msrs_subset, tmp_path):
    data = msrs_subset(6)
    common = tiny_args(data, 'train.stage1_max_epochs=1', 'train.device=cpu')
    assert train_main(common + ['--out', str(tmp_path / 'a'), '--set', 'train.epochs=3']) == 0
    assert train_main(common + ['--out', str(tmp_path / 'b'), '--set', 'train.epochs=2']) == 0
    assert train_main(common + ['--out', str(tmp_path / 'b'), '--resume',
                                '--set', 'train.epochs=3']) == 0
    a = torch.load(tmp_path / 'a' / 'last.pt', weights_only=True)
    b = torch.load(tmp_path / 'b' / 'last.pt', weights_only=True)
    for part in ('fusion', 'head', 'seg'):
        sa, sb = a[part]['state_dict'], b[part]['state_dict']
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), part
    assert a['weighting'] == b['weighting'] or json.dumps(a['weighting'], default=str) == \
        json.dumps(b['weighting'], default=str)
    assert len(read_csv(tmp_path / 'b' / 'epochs.csv')) == 3


def test_deterministic_mode_is_set_and_changes_nothing_on_cpu(msrs_subset, tmp_path):
    """train.deterministic switches torch's deterministic kernels on (and the next run off).

    CPU kernels are deterministic already, so the weights are the same with and without it.
    """
    data = msrs_subset(4)
    common = tiny_args(data, 'train.two_stage=false', 'train.device=cpu', 'train.epochs=1',
                       'data.val_fraction=0')
    assert train_main(common + ['--out', str(tmp_path / 'det'), '--set',
                                'train.deterministic=true']) == 0
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert os.environ['CUBLAS_WORKSPACE_CONFIG'] == ':4096:8'
    assert train_main(common + ['--out', str(tmp_path / 'plain')]) == 0
    assert not torch.are_deterministic_algorithms_enabled()
    a = torch.load(tmp_path / 'det' / 'last.pt', weights_only=True)
    b = torch.load(tmp_path / 'plain' / 'last.pt', weights_only=True)
    for part in ('fusion', 'head', 'seg'):
        sa, sb = a[part]['state_dict'], b[part]['state_dict']
        assert all(torch.equal(sa[k], sb[k]) for k in sa), part


def test_ablation_switches(msrs_subset, tmp_path):
    data = msrs_subset(4)
    base = ['--data', str(data), '--set', 'model.name=seafusion', '--set', 'train.epochs=1',
            '--set', 'model.args={widths: [8, 8, 8]}', '--set', 'model.segformer=b0',
            '--set', 'data.val_fraction=0'] + [a for s in SMALL for a in ('--set', s)]
    # no CSC: no H, no S, fusion loss only
    assert train_main(base + ['--out', str(tmp_path / 'nocsc'), '--set', 'train.csc=false']) == 0
    ck = torch.load(tmp_path / 'nocsc' / 'last.pt', weights_only=True)
    assert ck['head'] is None and ck['seg'] is None
    # one stage: CSC from the first epoch, with 9 classes
    assert train_main(base + ['--out', str(tmp_path / 'one'), '--set', 'train.two_stage=false',
                              '--set', 'model.num_classes=9']) == 0
    rows = read_csv(tmp_path / 'one' / 'steps.csv')
    assert rows[0]['stage'] == '2' and float(rows[0]['omega_csc']) > 0
    ck = torch.load(tmp_path / 'one' / 'last.pt', weights_only=True)
    assert ck['head']['num_classes'] == 9
    # single-channel fusion: the model sees one channel, colour comes from the visible image
    assert train_main(base + ['--out', str(tmp_path / 'y'), '--set', 'data.three_channel=false',
                              '--set', 'weighting.method=ucw']) == 0
    ck = torch.load(tmp_path / 'y' / 'last.pt', weights_only=True)
    assert ck['fusion']['model_config']['channels'] == 1


def test_cli_reports_bad_input_clearly(tmp_path, capsys):
    assert train_main(['--data', str(tmp_path / 'none'), '--out', str(tmp_path / 'o')]) == 2
    assert 'dataset folder not found' in capsys.readouterr().err
    assert train_main(['--out', str(tmp_path / 'o'), '--set', 'train.epochz=1']) == 2
    assert 'train.epochz' in capsys.readouterr().err
    assert train_main(['--out', str(tmp_path / 'o2'), '--resume']) == 2
    assert 'no checkpoint' in capsys.readouterr().err


def test_torchrun_two_ranks_end_with_identical_weights(msrs_subset, tmp_path):
    data = msrs_subset(8)
    out = tmp_path / 'ddp'
    env = dict(os.environ, OMP_NUM_THREADS='1')
    # CPU ranks (gloo) explicitly: on a host with fewer GPUs than ranks 'auto' would refuse.
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
           '-m', 'ssvif_train.cli', '--data', str(data), '--out', str(out),
           '--set', 'train.device=cpu',
           '--set', 'model.name=seafusion', '--set', 'model.args={widths: [8, 8, 8]}',
           '--set', 'model.segformer=b0', '--set', 'train.epochs=2',
           '--set', 'train.stage1_max_epochs=1'] + [a for s in SMALL for a in ('--set', s)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[1])
    assert res.returncode == 0, res.stderr[-3000:]
    ranks = json.loads((out / 'ranks.json').read_text())
    assert ranks['world_size'] == 2
    assert ranks['param_digests'][0] == ranks['param_digests'][1]
    rows = read_csv(out / 'epochs.csv')
    assert [r['stage'] for r in rows] == ['1', '2']


def test_more_torchrun_ranks_than_gpus_is_a_one_line_error(msrs_subset, tmp_path):
    """One process more than this machine has GPUs: each rank says why and exits 2."""
    data = msrs_subset(2)
    nproc = (torch.cuda.device_count() if torch.cuda.is_available() else 0) + 1
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone',
           f'--nproc_per_node={max(2, nproc)}', '-m', 'ssvif_train.cli', '--data', str(data),
           '--out', str(tmp_path / 'o'), '--set', 'train.device=cuda']
    res = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS='1'), capture_output=True,
                         text=True, timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert res.returncode != 0
    lines = [ln for ln in (res.stdout + res.stderr).splitlines() if 'ssvif-train: error:' in ln]
    assert lines and all('processes on this node but it has' in ln for ln in lines), lines
    assert 'exitcode  : 2' in res.stdout + res.stderr
    assert 'ssvif_train/' not in res.stderr   # torchrun's own summary only, no rank traceback


def test_device_errors_name_the_device():
    assert ranks_fit_error('cpu', 4, 0) is None
    assert ranks_fit_error('auto', 2, 0) is None          # no GPU: CPU ranks
    assert ranks_fit_error('auto', 2, 2) is None
    assert 'one per process: use --nproc_per_node 1' in ranks_fit_error('cuda', 2, 1)
    assert 'one per process' in ranks_fit_error('auto', 3, 2)
    assert 'on one GPU' in ranks_fit_error('cuda:0', 2, 2)
    for bad in ('gpu', 'cuda:x', 'meta'):
        with pytest.raises(TrainingError, match='train.device must be'):
            pick_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(TrainingError, match='CUDA is not available'):
            pick_device('cuda:0')
    else:
        n = torch.cuda.device_count()
        with pytest.raises(TrainingError, match=f'has {n} CUDA device'):
            pick_device(f'cuda:{n}')


def test_mixed_precision_path_with_grad_scaler(msrs_subset, tmp_path):
    """The AMP code path (autocast + GradScaler around per-task gradients), bf16 on the CPU.

    On CUDA the same code runs fp16; here it is exercised with train.amp_cpu.
    """
    data = msrs_subset(4)
    out = tmp_path / 'amp'
    rc = train_main(['--data', str(data), '--out', str(out), '--set', 'model.name=rtfusion',
                     '--set', 'model.segformer=b0', '--set', 'train.two_stage=false',
                     '--set', 'train.amp_cpu=true', '--set', 'train.epochs=1',
                     '--set', 'data.val_fraction=0'] + [a for s in SMALL for a in ('--set', s)])
    assert rc == 0
    ck = torch.load(out / 'last.pt', weights_only=True)
    assert ck['scaler'] is not None and ck['scaler']['scale'] > 0
    rows = read_csv(out / 'steps.csv')
    assert all(np.isfinite(float(r['loss_total'])) and np.isfinite(float(r['g_b']))
               for r in rows)


def test_amp_overflow_step_is_skipped_counted_and_kept_out_of_gdwa(msrs_subset, tmp_path):
    """A GradScaler whose scale overflows fp32 gradients (1e38) makes step 1 skip for sure.

    The skipped step is counted, leaves no inf/NaN in steps.csv, does not step GDWA or the
    weight EMA, and its losses stay out of the epoch means that GDWA's history records; the
    backoff (1e-30) makes step 2 a normal step.
    """
    data = msrs_subset(4)
    out = tmp_path / 'overflow'
    sets = ['model.name=seafusion', 'model.args={widths: [8, 8, 8]}', 'model.segformer=b0',
            'train.two_stage=false', 'train.amp_cpu=true', 'train.epochs=1', 'train.ema=0.9',
            'data.val_fraction=0', 'weighting.method=gdwa', *SMALL]
    cfg = load_config(None, [f'data.root={data}', *sets])
    trainer = Trainer(cfg, str(out))
    assert trainer.use_amp
    trainer.scaler = torch.amp.GradScaler('cpu', init_scale=1e38, backoff_factor=1e-30)
    trainer.run()
    rows = read_csv(out / 'steps.csv')
    assert [r['skipped'] for r in rows] == ['1', '0']
    for r in rows:
        for key in ('loss_total', 'loss_fusion', 'loss_csc', 'omega_csc'):
            assert np.isfinite(float(r[key])), key
        assert all('nan' not in v and 'inf' not in v for v in r.values()), r
    assert rows[0]['g_a'] == rows[0]['g_b'] == ''
    assert np.isfinite(float(rows[1]['g_a'])) and np.isfinite(float(rows[1]['g_b']))
    assert float(rows[1]['omega_csc']) == trainer.weighting.last['omega'] > 0
    assert float(rows[1]['g_a']) == trainer.weighting.last['g_a']
    # GDWA's loss history holds the mean over the steps that were taken: step 2 only.
    assert trainer.weighting.history['fusion'] == [float(rows[1]['loss_fusion'])]
    assert trainer.weighting.history['csc'] == [float(rows[1]['loss_csc'])]
    assert read_csv(out / 'epochs.csv')[0]['skipped'] == '1'
    ck = torch.load(out / 'last.pt', weights_only=True)
    assert ck['ema_steps'] == 1
    assert 0 < ck['scaler']['scale'] < 1e10
    assert all(torch.isfinite(t).all() for t in ck['train_weights']['fusion']['state_dict']
               .values() if t.is_floating_point())


def test_early_stopping_on_validation_fusion_loss(msrs_subset, tmp_path):
    """Patience 1 stops a run whose validation L_fusion stops improving.

    A learning rate too small to change anything keeps it equal after the first epoch, so the
    run ends after epoch 2 of 5.
    """
    data = msrs_subset(6)
    out = tmp_path / 'es'
    rc = train_main(['--data', str(data), '--out', str(out), '--set', 'model.name=seafusion',
                     '--set', 'model.args={widths: [8, 8, 8]}', '--set', 'train.csc=false',
                     '--set', 'train.epochs=5', '--set', 'train.patience=1',
                     '--set', 'train.lr=1e-30', '--set', 'train.val_metrics=[]']
                    + [a for s in SMALL for a in ('--set', s)])
    assert rc == 0
    rows = read_csv(out / 'epochs.csv')
    assert len(rows) == 2
    assert rows[0]['val_fusion'] == rows[1]['val_fusion']
    ck = torch.load(out / 'last.pt', weights_only=True)
    assert ck['state']['bad_epochs'] == 1 and ck['state']['epoch'] == 2


def test_init_fine_tunes_from_a_checkpoint_with_a_cosine_rate(msrs_subset, tmp_path):
    data = msrs_subset(6)
    common = tiny_args(data, 'train.two_stage=false')
    assert train_main(common + ['--out', str(tmp_path / 'a'), '--set', 'train.epochs=1']) == 0
    src = torch.load(tmp_path / 'a' / 'last.pt', weights_only=True)
    # before any step the fine-tuned net holds the source's weights, H and S included
    cfg = load_config(str(tmp_path / 'a' / 'config.json'))
    cfg.train.init = str(tmp_path / 'a' / 'last.pt')
    trainer = Trainer(cfg, str(tmp_path / 'b'))
    for part, mod in (('fusion', trainer.net.fusion), ('head', trainer.net.head),
                      ('seg', trainer.net.seg)):
        got = mod.state_dict()
        assert all(torch.equal(got[k], v) for k, v in src[part]['state_dict'].items()), part
    # cosine: epoch k (1-based) of E runs at lr * (1 + cos(pi (k - 1) / E)) / 2
    assert train_main(common + ['--out', str(tmp_path / 'c'), '--set', 'train.epochs=3',
                                '--set', f'train.init={tmp_path / "a" / "last.pt"}',
                                '--set', 'train.lr=1e-3', '--set',
                                'train.lr_schedule=cosine']) == 0
    lrs = {int(r['epoch']): float(r['lr']) for r in read_csv(tmp_path / 'c' / 'steps.csv')}
    assert sorted(lrs) == [1, 2, 3]
    for k, lr in lrs.items():
        assert abs(lr - 1e-3 * (1 + np.cos(np.pi * (k - 1) / 3)) / 2) < 1e-12, k
    assert torch.load(tmp_path / 'c' / 'last.pt', weights_only=True)[
        'lr_schedule']['last_epoch'] == 3


def test_init_that_does_not_fit_is_a_one_line_error(msrs_subset, tmp_path, capsys):
    data = msrs_subset(4)
    common = ['--data', str(data), '--set', 'model.name=seafusion',
              '--set', 'model.segformer=b0'] + [a for s in SMALL for a in ('--set', s)]
    assert train_main(common + ['--out', str(tmp_path / 'a'), '--set', 'train.epochs=1',
                                '--set', 'model.args={widths: [8, 8, 8]}']) == 0
    capsys.readouterr()
    init = tmp_path / 'a' / 'last.pt'
    rc = train_main(common + ['--out', str(tmp_path / 'b'), '--set', f'train.init={init}',
                              '--set', 'model.args={widths: [8, 16, 8]}'])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert str(init) in err[0] and 'does not fit' in err[0]
    (tmp_path / 'junk.pt').write_bytes(b'not a checkpoint')
    rc = train_main(common + ['--out', str(tmp_path / 'c'), '--set',
                              f'train.init={tmp_path / "junk.pt"}'])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and 'junk.pt' in err[0]


def test_weight_ema_is_validated_saved_and_resumed_exactly(msrs_subset, tmp_path):
    data = msrs_subset(6)
    common = tiny_args(data, 'train.two_stage=false', 'train.ema=0.9', 'train.device=cpu')
    assert train_main(common + ['--out', str(tmp_path / 'a'), '--set', 'train.epochs=2']) == 0
    assert train_main(common + ['--out', str(tmp_path / 'b'), '--set', 'train.epochs=1']) == 0
    assert train_main(common + ['--out', str(tmp_path / 'b'), '--resume',
                                '--set', 'train.epochs=2']) == 0
    a = torch.load(tmp_path / 'a' / 'last.pt', weights_only=True)
    b = torch.load(tmp_path / 'b' / 'last.pt', weights_only=True)
    assert a['ema_steps'] == b['ema_steps'] == 4   # 2 epochs x 2 steps
    for ck in (a, b):
        assert set(ck['train_weights']) >= {'fusion', 'head', 'seg'}
    for part in ('fusion', 'head', 'seg'):
        for src in (lambda c: c[part], lambda c: c['train_weights'][part]):
            sa, sb = src(a)['state_dict'], src(b)['state_dict']
            assert all(torch.equal(sa[k], sb[k]) for k in sa), part
    # The model entries (what best.pt deploys and validation scores) are the average, not the
    # last step's weights.
    ema, raw = a['fusion']['state_dict'], a['train_weights']['fusion']['state_dict']
    assert any(not torch.allclose(ema[k], raw[k]) for k in ema if ema[k].is_floating_point())
    # Validation scored the averaged weights: rebuilt from last.pt, they give the logged value.
    cfg = load_config(str(tmp_path / 'a' / 'config.json'))
    cfg.train.init = str(tmp_path / 'a' / 'last.pt')
    val = Trainer(cfg, str(tmp_path / 'v')).validate()['val_fusion']
    logged = float(read_csv(tmp_path / 'a' / 'epochs.csv')[-1]['val_fusion'])
    assert abs(val - logged) < 1e-5 * max(1.0, abs(logged))
    # Without train.ema there is no second copy; a resume that turns it on is refused.
    assert train_main(tiny_args(data, 'train.two_stage=false')
                      + ['--out', str(tmp_path / 'c'), '--set', 'train.epochs=1']) == 0
    assert 'train_weights' not in torch.load(tmp_path / 'c' / 'last.pt', weights_only=True)
    assert train_main(tiny_args(data, 'train.two_stage=false')
                      + ['--out', str(tmp_path / 'c'), '--resume', '--set', 'train.epochs=2',
                         '--set', 'train.ema=0.9']) == 2
