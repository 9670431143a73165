"""EMMA-style fusion network: size, shapes, gradients, SSVIF head features, export."""
from model_helpers import n_params as _n_params, one_thread, random_pair as _pair  # noqa: F401
import pytest
import torch
import torch.nn.functional as F

from ssvif_train import losses, tensor_imaging
from ssvif_train.models import registry
from ssvif_train.models.emma import ChannelNorm, EMMAFusion, TransposedAttention
from ssvif_train.models.segmentation import SegHead

SMALL = {'widths': [4, 8, 8, 8], 'num_heads': 2, 'local_blocks': 1}


def _small(**extra):
    torch.manual_seed(0)
    return registry.create_model('emma', **dict(SMALL, **extra))


def test_registered_with_the_paper_size():
    assert 'emma' in registry.available_models()
    model = registry.create_model('emma')
    assert isinstance(model, EMMAFusion)
    # SSVIF paper table IV: EMMA_SSVIF 1.52 M parameters (three-channel input)
    assert abs(_n_params(model) - 1.52e6) <= 0.01e6, _n_params(model)
    assert model.pad_multiple == 8 and model.feature_channels == 32


def test_no_block_has_single_channel_heads():
    # The reference's 8 heads on 8 channels give 1 x 1 softmaxes that never learn (docstring).
    model = registry.create_model('emma')
    for m in model.modules():
        if isinstance(m, TransposedAttention):
            assert m.qkv.in_channels // m.heads >= 2


@pytest.mark.parametrize('size', [(70, 90), (17, 23)])
def test_odd_sizes_pad_and_unpad(size):
    model = _small().eval()
    vis, ir = _pair(2, *size)
    vis_p, pad = tensor_imaging.pad_to_multiple(vis, model.pad_multiple)
    ir_p, _ = tensor_imaging.pad_to_multiple(ir, model.pad_multiple)
    with torch.no_grad():
        fused, feats = model.forward_with_features(vis_p, ir_p)
        assert torch.equal(fused, model(vis_p, ir_p))
    hp, wp = vis_p.shape[-2:]
    assert fused.shape == vis_p.shape and feats.shape == (2, 8, hp // 8, wp // 8)
    out = tensor_imaging.unpad(fused, pad)
    assert out.shape == vis.shape and out.min() >= 0.0 and out.max() <= 1.0


def test_sizes_it_cannot_take_are_refused_with_the_reason():
    model = _small()
    with pytest.raises(ValueError, match='multiples of 8'):
        model(*_pair(1, 70, 90))
    with pytest.raises(ValueError, match='at least 16'):
        model(*_pair(1, 8, 16))


@pytest.mark.parametrize('level,channels,stride', [(1, 4, 1), (2, 8, 2), (3, 8, 4), (4, 8, 8)])
def test_seg_level_picks_the_fused_map(level, channels, stride):
    model = _small(seg_level=level).eval()
    assert model.feature_channels == channels
    with torch.no_grad():
        _, feats = model.forward_with_features(*_pair(1, 32, 48))
    assert feats.shape == (1, channels, 32 // stride, 48 // stride)


def test_channel_norm_is_layer_norm_over_channels():
    norm = ChannelNorm(6)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(2, 6, 5, 7)
    ref = F.layer_norm(x.permute(0, 2, 3, 1), (6,), norm.weight.flatten(),
                       norm.bias.flatten(), eps=1e-5).permute(0, 3, 1, 2)
    torch.testing.assert_close(norm(x), ref, atol=1e-5, rtol=0)


def test_every_parameter_receives_a_gradient_under_ssvif_losses():
    model = _small().train()
    head = SegHead(model.feature_channels, num_classes=4, hidden=8).train()
    vis, ir = _pair(2, 32, 32, seed=1)
    fused, feats = model.forward_with_features(vis, ir)
    terms = losses.fusion_terms(fused, vis, ir)
    label = torch.randint(0, 4, (2, 32, 32), generator=torch.Generator().manual_seed(2))
    terms.update(losses.segmentation_terms(head(feats), label))
    sum(terms.values()).backward()
    dead = [n for n, p in list(model.named_parameters()) + list(head.named_parameters())
            if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert not dead


def test_bad_configurations_are_named():
    with pytest.raises(ValueError, match='widths'):
        registry.create_model('emma', widths=[8, 16, 32])
    with pytest.raises(ValueError, match='seg_level'):
        registry.create_model('emma', seg_level=5)
    with pytest.raises(TypeError, match='emma'):
        registry.create_model('emma', no_such_option=1)


def test_single_channel_variant():
    model = _small(channels=1).eval()
    vis, ir = _pair(1, 16, 24)
    with torch.no_grad():
        assert model(vis[:, :1], ir[:, :1]).shape == (1, 1, 16, 24)


def test_checkpoint_round_trip(tmp_path):
    model = _small().eval()
    registry.atomic_torch_save({'fusion': registry.model_record(model)}, tmp_path / 'm.pt')
    loaded = registry.load_model(tmp_path / 'm.pt')
    assert type(loaded) is EMMAFusion and loaded.model_config == SMALL
    vis, ir = _pair(1, 24, 32)
    with torch.no_grad():
        assert torch.equal(loaded(vis, ir), model(vis, ir))


def test_onnx_export_and_backends_on_real_msrs(tmp_path, msrs_dir):
    from export_helpers import export_and_compare
    export_and_compare(_small().eval(), tmp_path, msrs_dir, num_classes=4,
                       sizes=((240, 320), (250, 333)))


def test_trains_with_ssvif_and_exports(msrs_subset, tmp_path, msrs_dir):
    import csv
    from pathlib import Path
    from export_helpers import check_exported
    from ssvif_train.cli import main as train_main
    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / 'run'
    sets = ['model.args={widths: [4, 8, 8, 8], num_heads: 2, local_blocks: 1}',
            'model.segformer=tiny', 'train.epochs=2', 'train.stage1_max_epochs=1',
            'data.crop=32', 'train.batch_size=2', 'data.val_fraction=0.25',
            'train.progress=false', 'train.threads=1', 'train.val_metrics=[]']
    rc = train_main([str(repo / 'config' / 'train' / 'emma_ssvif.yaml'), '--data',
                     str(msrs_subset(4)), '--out', str(out)]
                    + [a for s in sets for a in ('--set', s)])
    assert rc == 0
    with open(out / 'steps.csv', newline='') as f:
        steps = list(csv.DictReader(f))
    assert [r['stage'] for r in steps] == ['1', '2']
    for key in ('int', 'grad', 'ssim', 'color', 'loss_csc', 'omega_csc'):
        assert float(steps[1][key]) > 0, key
    ckpt = torch.load(out / 'last.pt', weights_only=True)
    assert ckpt['fusion']['model_name'] == 'emma' and ckpt['head']['in_channels'] == 8
    check_exported(out / 'last.pt', tmp_path / 'model', msrs_dir, 'emma', 15,
                   sizes=((240, 320), (250, 333)))
