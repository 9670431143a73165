"""Fusion model architectures: shapes, ranges, sizes, features, gradients, checkpoints, ONNX."""
import warnings

from model_helpers import n_params as _n_params, one_thread, random_pair as _pair  # noqa: F401
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ssvif_ros import imaging
from ssvif_train import tensor_imaging
from ssvif_train.models import registry
from ssvif_train.models.segmentation import SegHead
from ssvif_train.network import SSVIFNet

# Small configurations keep the suite fast; defaults are used for the parameter counts.
SMALL = {
    'seafusion': {'widths': [8, 12, 16], 'decoder_widths': [16, 8]},
    'swinfusion': {'embed_dim': 12, 'num_heads': 2, 'window_size': 4, 'ex_depth': 2,
                   'fusion_depths': [2], 're_depth': 2},
    'rtfusion': {'widths': [8, 16, 24], 'blocks': [1, 1, 2], 'head_width': 12, 'head_blocks': 1},
}
# Documented parameter counts at the default configuration, with +-30 % tolerance.
PARAMS = {'seafusion': 0.166e6, 'swinfusion': 0.983e6, 'rtfusion': 0.032e6}
NAMES = sorted(SMALL)


def _small(name, **extra):
    torch.manual_seed(0)
    return registry.create_model(name, **SMALL[name], **extra).eval()


def test_all_registered():
    assert set(NAMES) <= set(registry.available_models())


@pytest.mark.parametrize('name', NAMES)
def test_default_parameter_count(name):
    model = registry.create_model(name)
    assert abs(_n_params(model) - PARAMS[name]) <= 0.3 * PARAMS[name], _n_params(model)
    assert model.feature_channels > 0 and model.pad_multiple >= 1


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('size', [(70, 90), (16, 24)])
def test_shapes_and_range_after_padding(name, size):
    model = _small(name)
    vis, ir = _pair(2, *size)
    m = model.pad_multiple
    ir_p, pad = tensor_imaging.pad_to_multiple(ir, m)
    vis_p, _ = tensor_imaging.pad_to_multiple(vis, m)
    with torch.no_grad():
        fused = model(vis_p, ir_p)
    assert fused.shape == vis_p.shape
    assert vis_p.shape[-2] % m == 0 and vis_p.shape[-1] % m == 0
    assert tensor_imaging.unpad(fused, pad).shape == vis.shape
    assert torch.isfinite(fused).all()
    assert fused.min() >= 0.0 and fused.max() <= 1.0


def test_default_swinfusion_runs_on_odd_size():
    # Default configuration (window 8): internal padding handles sizes that are no multiple.
    torch.manual_seed(0)
    model = registry.create_model('swinfusion').eval()
    assert model.pad_multiple == 8 and model.feature_channels == 60
    vis, ir = _pair(1, 13, 21)
    with torch.no_grad():
        fused, feats = model.forward_with_features(vis, ir)
    assert fused.shape == (1, 3, 13, 21) and feats.shape == (1, 60, 13, 21)
    assert 0.0 <= fused.min() and fused.max() <= 1.0


def test_rtfusion_rejects_unpadded_size():
    model = _small('rtfusion')
    vis, ir = _pair(1, 70, 90)
    with pytest.raises(ValueError, match='multiples of 8'):
        model(vis, ir)


@pytest.mark.parametrize('name', NAMES)
def test_single_channel_config(name):
    model = _small(name, channels=1)
    vis, ir = _pair(1, 16, 24)
    with torch.no_grad():
        fused = model(vis[:, :1], ir[:, :1])
    assert fused.shape == (1, 1, 16, 24)


@pytest.mark.parametrize('name', NAMES)
def test_features_feed_seg_head(name):
    model = _small(name)
    vis, ir = _pair(2, 32, 48)
    with torch.no_grad():
        fused, feats = model.forward_with_features(vis, ir)
        assert torch.allclose(fused, model(vis, ir))
        assert feats.ndim == 4 and feats.shape[:2] == (2, model.feature_channels)
        logits = SegHead(model.feature_channels, num_classes=5, hidden=8).eval()(feats)
    assert logits.shape == (2, 5) + feats.shape[-2:]


@pytest.mark.parametrize('three_channel', [True, False])
def test_training_and_deployed_interfaces_of_one_net_agree(three_channel):
    # SSVIFNet pads inside while training; deployed, it runs on inputs the backends padded.
    model = _small('rtfusion', channels=3 if three_channel else 1)
    head = SegHead(model.feature_channels, num_classes=5, hidden=8).eval()
    net = SSVIFNet(model, head, three_channel=three_channel).eval()
    vis, ir = _pair(1, 30, 44)
    with torch.no_grad():
        fused, feats = net.fuse(vis, ir)
        vis_p, pad = tensor_imaging.pad_to_multiple(vis, net.pad_multiple)
        ir_p, _ = tensor_imaging.pad_to_multiple(ir, net.pad_multiple)
        d_fused, ids, logits = net.for_export('bilinear', with_logits=True)(vis_p, ir_p)
        assert torch.allclose(logits, head(feats))
    assert fused.shape == vis.shape and d_fused.shape == vis_p.shape
    assert torch.allclose(tensor_imaging.unpad(d_fused, pad), fused, atol=1e-6)
    assert ids.dtype == torch.uint8 and ids.shape == (1,) + vis_p.shape[-2:]
    assert int(ids.max()) < 5


@pytest.mark.parametrize('name', NAMES)
def test_gradients_reach_every_parameter(name):
    model = _small(name).train()
    head = SegHead(model.feature_channels, num_classes=4, hidden=8).train()
    vis, ir = _pair(2, 32, 32, seed=1)
    fused, feats = model.forward_with_features(vis, ir)
    logits = F.interpolate(head(feats), size=(32, 32), mode='bilinear', align_corners=False)
    labels = torch.randint(0, 4, (2, 32, 32), generator=torch.Generator().manual_seed(2))
    loss = (fused - torch.maximum(ir, vis)).abs().mean() + F.cross_entropy(logits, labels)
    loss.backward()
    dead = [n for n, p in list(model.named_parameters()) + list(head.named_parameters())
            if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert not dead


@pytest.mark.parametrize('name', NAMES)
def test_checkpoint_round_trip(name, tmp_path):
    torch.manual_seed(3)
    model = registry.create_model(name, **SMALL[name]).eval()
    path = tmp_path / 'sub' / f'{name}.pt'
    registry.atomic_torch_save({'fusion': registry.model_record(model)}, path)
    loaded = registry.load_model(path)
    assert type(loaded) is type(model)
    assert loaded.model_name == name and loaded.model_config == SMALL[name]
    assert not loaded.training
    vis, ir = _pair(1, 24, 32)
    with torch.no_grad():
        assert torch.equal(loaded(vis, ir), model(vis, ir))


def test_bad_configurations_are_named():
    with pytest.raises(ValueError, match='embed_dim'):
        registry.create_model('swinfusion', embed_dim=10, num_heads=3)
    with pytest.raises(ValueError, match='base'):
        registry.create_model('rtfusion', base='mean')
    with pytest.raises(ValueError, match='widths'):
        registry.create_model('seafusion', widths=[16, 0])
    with pytest.raises(TypeError, match='seafusion'):
        registry.create_model('seafusion', no_such_option=1)


def _export(model, path, h, w):
    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, vis, ir):
            return self.model.forward_with_features(vis, ir)

    axes = {0: 'n', 2: 'h', 3: 'w'}
    vis, ir = _pair(1, h, w)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(Wrapper().eval(), (vis, ir), str(path), dynamo=False, opset_version=17,
                          input_names=['vis', 'ir'], output_names=['fused', 'features'],
                          dynamic_axes={'vis': axes, 'ir': axes, 'fused': axes,
                                        'features': axes})


@pytest.mark.parametrize('name', NAMES)
def test_onnx_export_dynamic_size(name, tmp_path):
    ort = pytest.importorskip('onnxruntime')
    model = _small(name)
    m = model.pad_multiple
    path = tmp_path / f'{name}.onnx'
    _export(model, path, 4 * m if m > 1 else 20, 6 * m if m > 1 else 28)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=['CPUExecutionProvider'])
    sizes = [(2 * m, 3 * m), (5 * m, 2 * m)] if m > 1 else [(17, 23), (30, 11)]
    for h, w in sizes:
        vis, ir = _pair(1, h, w, seed=h)
        with torch.no_grad():
            ref_fused, ref_feats = model.forward_with_features(vis, ir)
        fused, feats = sess.run(None, {'vis': vis.numpy(), 'ir': ir.numpy()})
        assert fused.shape == tuple(ref_fused.shape) and feats.shape == tuple(ref_feats.shape)
        np.testing.assert_allclose(fused, ref_fused.numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(feats, ref_feats.numpy(), atol=1e-4, rtol=0)


def test_rtfusion_zero_residual_is_max_luma():
    # With the output head zeroed the model returns its base image: max-luma fusion.
    model = _small('rtfusion')
    with torch.no_grad():
        model.head_out.weight.zero_()
        model.head_out.bias.zero_()
        vis, ir = _pair(1, 24, 32, seed=5)
        fused = tensor_imaging.nchw_to_hwc(model(vis, ir))
    ref = imaging.max_luma_fusion(tensor_imaging.nchw_to_hwc(vis),
                                  tensor_imaging.nchw_to_hwc(ir))
    eps = model.eps
    np.testing.assert_allclose(fused, np.clip(ref, eps, 1.0 - eps), atol=1e-5)


@pytest.mark.parametrize('stride', [8, 4])
def test_rtfusion_seg_feature_stride(stride):
    model = _small('rtfusion', seg_stride=stride)
    vis, ir = _pair(1, 48, 64)
    with torch.no_grad():
        fused, feats = model.forward_with_features(vis, ir)
        logits = SegHead(model.feature_channels, num_classes=3, hidden=8).eval()(feats)
    assert fused.shape == vis.shape
    assert feats.shape == (1, SMALL['rtfusion']['widths'][{8: 2, 4: 1}[stride]], 48 // stride,
                           64 // stride)
    assert logits.shape == (1, 3, 48 // stride, 64 // stride)


def _reference_mask(h, w, ws, shift):
    # Swin's slice-based construction of the shifted-window attention mask.
    img = torch.zeros(1, h, w, 1)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for vs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img[:, hs, vs, :] = cnt
            cnt += 1
    win = img.reshape(1, h // ws, ws, w // ws, ws, 1).permute(0, 1, 3, 2, 4, 5)
    win = win.reshape(-1, ws * ws)
    diff = win[:, None, :] - win[:, :, None]
    return torch.where(diff != 0, torch.tensor(-100.0), torch.tensor(0.0))


@pytest.mark.parametrize('h,w,ws', [(16, 24, 8), (8, 8, 8), (12, 20, 4)])
def test_shifted_window_mask_matches_swin(h, w, ws):
    from ssvif_train.models.swinfusion import shifted_window_mask
    mask = shifted_window_mask(torch.zeros(1, h, w, 3), ws, ws // 2)
    assert torch.equal(mask, _reference_mask(h, w, ws, ws // 2))


def test_window_partition_round_trip():
    from ssvif_train.models.swinfusion import window_partition, window_reverse
    x = torch.randn(2, 8, 12, 5)
    win = window_partition(x, 4)
    assert win.shape == (2 * 2 * 3, 16, 5)
    assert torch.equal(win[1].reshape(4, 4, 5), x[0, 0:4, 4:8])
    assert torch.equal(window_reverse(win, 4, x), x)


def test_seafusion_sobel_matches_loss_operator():
    from ssvif_train.losses import sobel_magnitude
    from ssvif_train.models.seafusion import SobelMagnitude
    x = torch.rand(2, 3, 20, 24)
    ours = SobelMagnitude(3)(x)
    ref = sobel_magnitude(x)
    # Borders differ (zero vs replicate padding); the interior is the same operator.
    assert torch.allclose(ours[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], atol=1e-5)


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('value', [0.0, 1.0])
def test_constant_frames_give_finite_output_and_gradients(name, value):
    # Lens-cap (black) and saturated (white) frames must not produce NaN/Inf.
    model = _small(name).train()
    ir = torch.full((2, 3, 16, 16), value)
    vis = torch.full((2, 3, 16, 16), value)
    fused, feats = model.forward_with_features(vis, ir)
    assert torch.isfinite(fused).all() and torch.isfinite(feats).all()
    assert 0.0 <= fused.min() and fused.max() <= 1.0
    (fused.mean() + feats.mean()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize('name', NAMES)
def test_fusion_loss_alone_reaches_every_parameter(name):
    # Stage I trains F with the fusion loss only (DDP without find_unused_parameters).
    model = _small(name).train()
    vis, ir = _pair(2, 32, 32, seed=4)
    (model(vis, ir) - torch.maximum(ir, vis)).abs().mean().backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not dead
