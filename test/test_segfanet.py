"""SegFANet: sizes, CAM pooling, colour, gradients, its losses, ablation configs, export."""
from pathlib import Path

from model_helpers import n_params as _n_params, one_thread, random_pair as _pair  # noqa: F401
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from ssvif_train import losses, tensor_imaging
from ssvif_train.models import registry
from ssvif_train.models.segfanet import adaptive_avg_pool, SegFANet
from ssvif_train.models.segmentation import SegHead

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / 'config' / 'train').glob('segfanet_*.yaml'))
SMALL = {'widths': [8, 12, 16], 'stem': 4, 'seg_width': 8, 'pool': 4}


def _small(**extra):
    torch.manual_seed(0)
    return registry.create_model('segfanet', **dict(SMALL, **extra))


def test_registered_with_documented_size():
    assert 'segfanet' in registry.available_models()
    model = registry.create_model('segfanet')
    assert isinstance(model, SegFANet)
    # module docstring: about 0.51 M parameters at the defaults
    assert abs(_n_params(model) - 0.51e6) <= 0.05e6, _n_params(model)
    assert model.pad_multiple == 8 and model.feature_channels == 32


@pytest.mark.parametrize('size', [(70, 90), (13, 21), (480, 640)])
def test_odd_sizes_pad_and_unpad(size):
    model = _small().eval()
    vis, ir = _pair(1, *size)
    vis_p, pad = tensor_imaging.pad_to_multiple(vis, model.pad_multiple)
    ir_p, _ = tensor_imaging.pad_to_multiple(ir, model.pad_multiple)
    with torch.no_grad():
        fused, seg, recs = model.forward_with_aux(vis_p, ir_p)
    hp, wp = vis_p.shape[-2:]
    assert hp % 8 == 0 and wp % 8 == 0
    assert fused.shape == vis_p.shape and seg.shape == (1, 8, hp // 4, wp // 4)
    assert [r.shape for r in recs] == [vis_p.shape] * 3
    out = tensor_imaging.unpad(fused, pad)
    assert out.shape == vis.shape
    assert torch.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
    for r in recs:
        assert r.min() > 0.0 and r.max() < 1.0


def test_unpadded_size_is_refused_with_the_reason():
    model = _small()
    vis, ir = _pair(1, 70, 90)
    with pytest.raises(ValueError, match='multiples of 8'):
        model(vis, ir)
    with pytest.raises(ValueError, match='equal size'):
        model(*_pair(1, 32, 32)[:1], _pair(1, 32, 40)[1])


@pytest.mark.parametrize('size', [(13, 17), (40, 40), (5, 3), (60, 80), (8, 8)])
def test_cam_pooling_is_adaptive_average_pooling(size):
    x = torch.rand(2, 4, *size, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(adaptive_avg_pool(x, 8), F.adaptive_avg_pool2d(x, 8),
                               atol=1e-6, rtol=0)


def test_fused_image_keeps_the_visible_chroma():
    model = _small().eval()
    vis, ir = _pair(1, 32, 48, seed=3)
    vis = 0.25 + 0.5 * vis                  # away from 0 and 1: the clamp does not act
    with torch.no_grad():
        fused = model(vis, ir)
    delta = fused - vis                     # the same luma shift on every channel
    assert (delta.max(1).values - delta.min(1).values).abs().max() < 1e-5
    ycc_f = tensor_imaging.rgb_to_ycbcr(fused)
    ycc_v = tensor_imaging.rgb_to_ycbcr(vis)
    torch.testing.assert_close(ycc_f[:, 1:], ycc_v[:, 1:], atol=1e-5, rtol=0)


def _step_loss(model, head, vis, ir, label):
    fused, seg, recs = model.forward_with_aux(vis, ir)
    terms = losses.segfanet_fusion_terms(fused, vis, ir)
    terms.update(losses.reconstruction_terms(recs, vis, ir))
    terms.update(losses.segmentation_terms(head(seg), label))
    return sum(terms.values()), terms


def _label(n, h, w, classes=4, seed=2):
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, classes, (n, h, w), generator=g)
    label[:, :4] = losses.IGNORE_INDEX
    return label


@pytest.mark.parametrize('args', [{}, {'sinets': 1}, {'irm': False}, {'cam': False},
                                  {'sinets': 0}])
def test_every_parameter_receives_a_gradient(args):
    model = _small(**args).train()
    head = SegHead(model.feature_channels, num_classes=4, hidden=8).train()
    vis, ir = _pair(2, 32, 48, seed=1)
    loss, terms = _step_loss(model, head, vis, ir, _label(2, 32, 48))
    n_rec = 0 if args.get('irm') is False else args.get('sinets', 3)
    assert sorted(k for k in terms if k.startswith('rec_')) == \
        [f'rec_{i}' for i in range(1, n_rec + 1)]
    loss.backward()
    dead = [n for n, p in list(model.named_parameters()) + list(head.named_parameters())
            if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert not dead


def test_fusion_loss_terms_by_hand():
    from pytorch_msssim import ssim
    vis, ir = _pair(1, 32, 32, seed=4)
    t = losses.segfanet_fusion_terms(vis, vis, ir)
    assert float(t['ssim_vis']) == pytest.approx(0.0, abs=1e-6)   # fused == vis
    y_vis = tensor_imaging.rgb_to_gray(vis)[:, None]
    want = 1.0 - float(ssim(y_vis, ir[:, :1], data_range=1.0))
    assert float(t['ssim_ir']) == pytest.approx(want, abs=1e-6)
    # the luma of the repeated thermal image is the thermal image
    torch.testing.assert_close(losses.luma(ir), ir[:, :1], atol=1e-6, rtol=0)


def test_reconstruction_terms_per_irm():
    vis, ir = _pair(1, 32, 32, seed=5)
    t = losses.reconstruction_terms([vis, ir], vis, ir)
    assert sorted(t) == ['rec_1', 'rec_2']
    # rec_1 == vis: only the ir part is left, and symmetric for rec_2
    assert float(t['rec_1']) == pytest.approx(float(t['rec_2']), abs=1e-6)
    assert float(t['rec_1']) > 0.1
    assert losses.reconstruction_terms([], vis, ir) == {}


def test_segmentation_terms_ignore_and_empty():
    logits = torch.zeros(1, 4, 4, 4, requires_grad=True)
    label = torch.full((1, 8, 8), losses.IGNORE_INDEX, dtype=torch.int64)
    t = losses.segmentation_terms(logits, label)
    assert float(t['seg_ce'].detach()) == 0.0 and float(t['seg_dice'].detach()) == 0.0
    (t['seg_ce'] + t['seg_dice']).backward()          # still part of the graph
    assert logits.grad is not None
    label[0, :4] = 2                                  # upper half: class 2, rest ignored
    big = torch.zeros(1, 4, 8, 8)
    big[0, 2] = 10.0
    t = losses.segmentation_terms(big, label)
    # present classes only (class 2): Dice = 1 - 2*32 / (32 + 32 + eps), eps = 1
    assert float(t['seg_ce']) < 1e-3
    assert float(t['seg_dice']) == pytest.approx(1.0 - 64.0 / 65.0, abs=1e-4)
    # uniform logits: CE = log 4 over the labelled pixels only
    t = losses.segmentation_terms(torch.zeros(1, 4, 8, 8), label)
    assert float(t['seg_ce']) == pytest.approx(np.log(4.0), abs=1e-6)
    # loss.sup_class_weights: the CE of torch's weighted mean over the labelled pixels
    logits = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    label[0, 4:6] = 1
    w = torch.tensor([1.0, 3.0, 0.5, 2.0])
    t = losses.segmentation_terms(logits, label, class_weights=w)
    want = F.cross_entropy(logits, label, weight=w, ignore_index=losses.IGNORE_INDEX)
    assert float(t['seg_ce']) == pytest.approx(float(want), abs=1e-6)


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.stem)
def test_config_builds_and_runs_a_step(path):
    cfg = yaml.safe_load(path.read_text())
    model_cfg = cfg['model']
    assert model_cfg['name'] == 'segfanet'
    args = dict(model_cfg.get('args', {}))
    torch.manual_seed(0)
    model = registry.create_model('segfanet', **args).train()
    head = SegHead(model.feature_channels, model_cfg['num_classes'], 8).train()
    # the ablation differs from the supervised recipe only where its name says
    assert model.sinets == args['sinets'] and model.use_irm == args['irm']
    assert model.use_cam == args['cam']
    assert (model.irms is None) == (not args['irm'])
    assert (model.cams is None) == (not args['cam'])
    vis, ir = _pair(2, 32, 32, seed=6)
    loss, terms = _step_loss(model, head, vis, ir,
                             _label(2, 32, 32, model_cfg['num_classes']))
    n_rec = args['sinets'] if args['irm'] else 0
    assert len([k for k in terms if k.startswith('rec_')]) == n_rec
    opt = torch.optim.Adam(list(model.parameters()) + list(head.parameters()), lr=1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    moved = sum(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert moved == len(before)


def test_ablations_change_the_architecture():
    full = _n_params(_small())
    assert _n_params(_small(sinets=1)) < _n_params(_small(sinets=2)) < full
    assert _n_params(_small(irm=False)) < full
    assert _n_params(_small(cam=False)) < full          # the next stages read C, not 2C


def test_bad_configurations_are_named():
    with pytest.raises(ValueError, match='sinets'):
        registry.create_model('segfanet', sinets=4)
    with pytest.raises(ValueError, match='widths'):
        registry.create_model('segfanet', widths=[16, 32])
    with pytest.raises(ValueError, match='pool'):
        registry.create_model('segfanet', pool=0)
    with pytest.raises(ValueError, match='irm'):
        registry.create_model('segfanet', irm='yes')
    with pytest.raises(TypeError, match='segfanet'):
        registry.create_model('segfanet', no_such_option=1)


def test_single_channel_variant():
    model = _small(channels=1).eval()
    vis, ir = _pair(1, 16, 24)
    with torch.no_grad():
        fused = model(vis[:, :1], ir[:, :1])
    assert fused.shape == (1, 1, 16, 24)


def test_checkpoint_round_trip(tmp_path):
    model = _small(sinets=2, cam=False).eval()
    registry.atomic_torch_save({'fusion': registry.model_record(model)}, tmp_path / 'm.pt')
    loaded = registry.load_model(tmp_path / 'm.pt')
    assert type(loaded) is SegFANet and loaded.model_config == dict(SMALL, sinets=2, cam=False)
    vis, ir = _pair(1, 24, 32)
    with torch.no_grad():
        assert torch.equal(loaded(vis, ir), model(vis, ir))


def test_onnx_export_and_backends_on_real_msrs(tmp_path, msrs_dir):
    from export_helpers import export_and_compare
    torch.manual_seed(0)
    model = registry.create_model('segfanet').eval()
    # one functional conv: the visible luma that the output's colour keeps
    export_and_compare(model, tmp_path, msrs_dir, num_classes=4, functional_convs=1)
