"""The frame graph (model format ssvif-model/2): frames in, uint8 images out, on real MSRS pairs.

The embedded default model's new graph (normalization, layout, padding, cropping and rounding
inside) is compared with the host-side path of the previous format (ssvif-model/1: the same
weights exported as the padded-float graph, the host doing those steps), for 8-bit, 16-bit and
float thermal frames and for sizes that need padding, odd sizes and sizes below the pad.
"""
import json

import numpy as np
import onnx
import pytest

from ssvif_ros import frames, imaging, model_card
from ssvif_ros.backends import BackendError, create_backend
from ssvif_ros.dataset_paths import list_pairs
from ssvif_ros.models import default_model_dir
from ssvif_ros.node_params import defaults, make_config

SIZES = ((640, 480), (1280, 1024), (333, 251), (53, 37))  # W x H


@pytest.fixture(scope='module')
def old_format(tmp_path_factory):
    """The embedded default's weights as an ssvif-model/1 folder (padded-float graph)."""
    from ssvif_train.deploy import load_graph
    from ssvif_train.export import export_onnx
    src = default_model_dir()
    card = json.loads(open(f'{src}/model.json', encoding='utf-8').read())
    out = tmp_path_factory.mktemp('old_format')
    net, _ = load_graph(f'{src}/model.pt', card['seg_upsample'])
    export_onnx(net, str(out / 'model.onnx'), 17, (64, 96))
    old = {k: v for k, v in card.items() if k not in ('inputs', 'outputs', 'parity')}
    old['format'] = 'ssvif-model/1'
    old['onnx_sha256'] = model_card.file_sha256(str(out / 'model.onnx'))
    del old['checkpoint_file']  # an ONNX-only folder
    (out / 'model.json').write_text(json.dumps(old))
    return out


def _pairs(msrs_dir, n):
    for vi, ir in list_pairs(msrs_dir / 'val')[:n]:
        yield vi.name, imaging.read_image(vi, 'rgb'), imaging.read_image(ir, 'gray')


def _close(f_new, f_old):
    """Within 1 grey level everywhere and equal at >= 99.9 % of the values."""
    assert f_new.dtype == f_old.dtype == np.uint8 and f_new.shape == f_old.shape
    diff = np.abs(f_new.astype(np.int16) - f_old)
    return int(diff.max()) <= 1 and float((diff == 0).mean()) >= 0.999


def test_embedded_default_is_a_frame_graph_with_uint8_io():
    model = onnx.load(f'{default_model_dir()}/model.onnx')

    def io(t):
        return (t.name, t.type.tensor_type.elem_type,
                [d.dim_param or d.dim_value for d in t.type.tensor_type.shape.dim])
    u8, f32 = onnx.TensorProto.UINT8, onnx.TensorProto.FLOAT
    assert [io(t) for t in model.graph.input] == [('vis', u8, ['N', 'H', 'W', 3]),
                                                  ('ir', f32, ['N', 'H', 'W'])]
    assert [io(t) for t in model.graph.output] == [('fused', u8, ['N', 'H', 'W', 3]),
                                                   ('class_ids', u8, ['N', 'H', 'W'])]
    card = model_card.read(f'{default_model_dir()}/model.json')
    assert card['format'] == model_card.FRAME_FORMAT and model_card.frame_io(card)
    assert card['parity']['fused_max_grey_diff'] <= 1
    # the casts are the graph's first and last nodes (TensorRT takes uint8 at the edges only)
    consumers = [n for n in model.graph.node if 'vis' in n.input]
    assert [n.op_type for n in consumers] == ['Cast']
    producers = [n for n in model.graph.node if set(n.output) & {'fused', 'class_ids'}]
    assert [n.op_type for n in producers] == ['Cast', 'Cast']


def test_frame_graph_equals_the_host_side_path_on_real_msrs(msrs_dir, old_format):
    new = create_backend('onnxruntime', '', threads=2)
    old = create_backend('onnxruntime', str(old_format), threads=2)
    assert new.frame_io and not old.frame_io
    cfg = make_config(defaults())
    for stem, rgb, th in _pairs(msrs_dir, 3):
        raws = {'mono8': th, 'mono16': th.astype(np.uint16) * 37 + 5000,  # 16-bit counts
                '32FC1': th.astype(np.float32) * 0.1 + 20.0}              # degrees
        for kind, raw in raws.items():
            for w, h in SIZES if kind == 'mono8' else SIZES[:1]:
                vis, ir = frames.register_pair(imaging.resize(rgb, (w, h)),
                                               imaging.resize(raw, (w, h)), cfg)
                assert vis.dtype == np.uint8 and ir.dtype == np.float32 and ir.shape == (h, w)
                f_new, c_new = new.infer(vis, ir)
                f_old, c_old = old.infer(vis, ir)
                assert f_new.shape == (h, w, 3) and c_new.shape == (h, w), (stem, kind, w, h)
                assert _close(f_new, f_old), (stem, kind, w, h)
                assert (c_new == c_old).mean() >= 0.999, (stem, kind, w, h)
                assert c_new.dtype == np.uint8 and c_new.max() < new.num_classes


def test_sizes_below_the_pad_and_float_inputs(msrs_dir, old_format):
    new = create_backend('onnxruntime', '', threads=1)
    old = create_backend('onnxruntime', str(old_format), threads=1)
    _, rgb, th = next(_pairs(msrs_dir, 1))
    v_float, t3 = imaging.preprocess_pair(rgb, th)  # float vis, H x W x 3 thermal (tools)
    for h, w in ((5, 7), (8, 3), (9, 17)):  # smaller than the pad of 8 in one or both sizes
        f_new, c_new = new.infer(rgb[:h, :w], t3[:h, :w, 0])
        f_old, c_old = old.infer(rgb[:h, :w], t3[:h, :w, 0])
        assert f_new.shape == (h, w, 3) and _close(f_new, f_old) and (c_new == c_old).all()
    # float [0, 1] visible and three equal thermal planes give the uint8 path's result exactly
    f8, c8 = new.infer(rgb, t3[:, :, 0])
    ff, cf = new.infer(v_float, t3)
    assert np.array_equal(f8, ff) and np.array_equal(c8, cf)
    with pytest.raises(ValueError, match='differ in size'):
        new.infer(rgb, t3[:-1, :, 0])


def test_torch_backend_runs_the_same_frame_graph(msrs_dir):
    ort_b = create_backend('onnxruntime', '', threads=2)
    torch_b = create_backend('torch', '', threads=2)
    assert torch_b.frame_io
    _, rgb, th = next(_pairs(msrs_dir, 1))
    cfg = make_config(defaults())
    for w, h in ((640, 480), (333, 251)):
        vis, ir = frames.register_pair(imaging.resize(rgb, (w, h)), imaging.resize(th, (w, h)),
                                       cfg)
        f1, c1 = ort_b.infer(vis, ir)
        f2, c2 = torch_b.infer(vis, ir)
        assert _close(f1, f2) and (c1 == c2).mean() >= 0.999


def test_old_format_folders_load_and_unknown_formats_fail_clearly(old_format, tmp_path):
    b = create_backend('onnxruntime', str(old_format), threads=1)
    assert not b.frame_io and b.num_classes == 4  # host-side path, same card fields
    card = json.loads((old_format / 'model.json').read_text())
    newer = tmp_path / 'newer'
    newer.mkdir()
    (newer / 'model.onnx').write_bytes((old_format / 'model.onnx').read_bytes())
    (newer / 'model.json').write_text(json.dumps(dict(card, format='ssvif-model/9')))
    with pytest.raises(BackendError) as info:
        create_backend('onnxruntime', str(newer))
    msg = str(info.value)
    assert "format 'ssvif-model/9'" in msg and 'model.json' in msg and '\n' not in msg
    # a card that claims the frame format over a padded-float graph
    (newer / 'model.json').write_text(json.dumps(dict(card, format='ssvif-model/2')))
    with pytest.raises(BackendError, match='does not match its model card'):
        create_backend('onnxruntime', str(newer))


def test_a_card_misstating_the_graphs_pad_multiple_is_a_start_up_error(tmp_path):
    import shutil
    d = tmp_path / 'model'
    shutil.copytree(default_model_dir(), d)
    card = json.loads((d / 'model.json').read_text())
    (d / 'model.json').write_text(json.dumps(dict(card, pad_multiple=16)))
    for name in ('onnxruntime', 'torch'):
        with pytest.raises(BackendError, match='pad_multiple 16, but the graph pads to a '
                                               'multiple of 8'):
            create_backend(name, str(d))


def test_model_free_backends_return_uint8_for_uint8_and_float_frames(msrs_dir):
    _, rgb, th = next(_pairs(msrs_dir, 1))
    ir = imaging.normalize_thermal(th)
    for name in ('identity', 'maxluma'):
        b = create_backend(name)
        f8, ids = b.infer(rgb, ir)
        ff, _ = b.infer(imaging.visible_to_float(rgb), ir)
        assert f8.dtype == ff.dtype == ids.dtype == np.uint8 and np.array_equal(f8, ff), name
    ident, _ = create_backend('identity').infer(rgb, ir)
    assert np.shares_memory(ident, rgb)  # the frame itself: no copy


def test_nan_in_the_fused_image_reaches_the_check_as_class_id_255(msrs_dir, tmp_path):
    """A frame graph rounds to uint8, where NaN cannot be seen: it marks such pixels instead.

    The default weights with the last fusion bias poisoned to NaN, exported as a frame graph:
    in ONNX Runtime every pixel of the frame carries class id 255, the per-frame check refuses such
    a frame naming NaN, and the backend refuses the model at its warm-up.
    """
    import onnxruntime as ort
    import torch

    from ssvif_ros.backends.base import check_outputs, OutputError
    from ssvif_train.deploy import FrameGraph, load_graph
    from ssvif_train.export import export_onnx
    src = default_model_dir()
    card = json.loads(open(f'{src}/model.json', encoding='utf-8').read())
    net, _ = load_graph(f'{src}/model.pt', card['seg_upsample'])
    bias = [p for n, p in net.named_parameters()
            if n.startswith('fusion.') and n.endswith('bias')][-1]
    with torch.no_grad():
        bias.fill_(float('nan'))
    export_onnx(FrameGraph(net).eval(), str(tmp_path / 'model.onnx'), 17, (64, 96))
    card['onnx_sha256'] = model_card.file_sha256(str(tmp_path / 'model.onnx'))
    (tmp_path / 'model.json').write_text(json.dumps(card))
    _, vis, ir = next(_pairs(msrs_dir, 1))
    sess = ort.InferenceSession(str(tmp_path / 'model.onnx'), providers=['CPUExecutionProvider'])
    fused, ids = sess.run(None, {'vis': imaging.visible_to_uint8(vis)[None],
                                 'ir': imaging.normalize_thermal(ir)[None]})
    assert fused.dtype == np.uint8 and (ids[0] == model_card.NONFINITE_ID).all()
    with pytest.raises(OutputError, match='NaN or Inf in the fused image'):
        check_outputs(fused[0], ids[0], 4)
    with pytest.raises(BackendError, match='warm-up inference .* NaN or Inf'):
        create_backend('onnxruntime', str(tmp_path), 1)
