"""ssvif_ros.frames: the one-way thermal path gives the same model inputs and outputs as before.

Real MSRS frames (or the synthetic scene when the data is absent), the real ONNX Runtime
backend with the embedded model: the single thermal plane into a backend gives bit for bit the
result of the three-channel image it replaced, and the registration matches the two-pass
pipeline wherever that pipeline resampled once.
"""

import numpy as np
import pytest

from ssvif_ros import frames, imaging
from ssvif_ros.backends import create_backend
from ssvif_ros.dataset_paths import load_pairs, shared_data_dir
from ssvif_ros.node_params import defaults, make_config
from ssvif_ros.synthetic import synthetic_scene

MSRS_VAL = shared_data_dir() / 'msrs' / 'val'


def _cfg(**overrides):
    values = defaults()
    values.update(backend='maxluma', **overrides)
    return make_config(values)


def _pairs(n=3):
    if MSRS_VAL.is_dir():
        return [(rgb, th) for rgb, th in load_pairs(MSRS_VAL, limit=n)]
    return [synthetic_scene(i, 640, 480) for i in range(n)]


def test_default_registration_equals_the_two_pass_pipeline_bit_for_bit():
    for rgb, th in _pairs():
        for raw in (th, (th.astype(np.uint16) * 37 + 5000)):  # mono8 and 16-bit counts
            vis, ir = frames.register_pair(rgb, raw, _cfg())
            v_old, t_old = imaging.preprocess_pair(rgb, imaging.normalize_thermal(raw),
                                                   imaging.ThermalNorm('scale'))
            assert ir.shape == rgb.shape[:2] and ir.dtype == np.float32
            assert vis.dtype == np.uint8 and np.array_equal(vis, rgb)  # the frame's own bytes
            assert np.array_equal(imaging.visible_to_float(vis), v_old)
            assert np.array_equal(ir, t_old[:, :, 0])


@pytest.mark.parametrize('backend', ['onnxruntime', 'maxluma'])
def test_the_thermal_plane_gives_the_backend_output_of_three_equal_channels(backend):
    b = create_backend(backend, '')
    for rgb, th in _pairs(2):
        vis, ir = frames.register_pair(rgb, th, _cfg())
        fused1, ids1 = b.infer(vis, ir)  # H x W plane, as the node passes it
        fused3, ids3 = b.infer(vis, imaging.expand_thermal(ir))  # H x W x 3, as before
        assert np.array_equal(fused1, fused3) and np.array_equal(ids1, ids3)


def test_output_size_is_folded_into_the_homography_one_resample():
    rgb = np.zeros((120, 160, 3), np.uint8)
    th = np.zeros((120, 160), np.uint8)
    th[20:40, 20:40] = 255
    shift = [1.0, 0.0, 10.0, 0.0, 1.0, 6.0, 0.0, 0.0, 1.0]  # thermal (x, y) -> RGB (x+10, y+6)
    vis, ir = frames.register_pair(rgb, th, _cfg(thermal_homography=shift, thermal_norm='scale',
                                                 output_size='80x60'))
    assert vis.shape == (60, 80, 3) and ir.shape == (60, 80)
    # the square lands at RGB (30..50, 26..46), i.e. output (15..25, 13..23)
    np.testing.assert_allclose(ir[14:22, 16:24], 1.0, atol=1e-6)
    assert ir[:12].max() == 0.0 and ir[:, :14].max() == 0.0 and ir[24:].max() == 0.0
    h = frames.output_homography(shift, (160, 120), (80, 60))
    np.testing.assert_allclose(h, [0.5, 0, 5.0, 0, 0.5, 3.0, 0, 0, 1.0])


def test_mismatched_sizes_are_resized_once_to_the_output_size():
    rgb, th = _pairs(1)[0]
    small = th[::2, ::2].copy()
    out = (rgb.shape[1] // 4, rgb.shape[0] // 4)
    _, ir = frames.register_pair(rgb, small, _cfg(output_size=f'{out[0]}x{out[1]}'))
    direct = imaging.resize(imaging.normalize_thermal(small), out)
    assert np.array_equal(ir, direct)
    with pytest.raises(frames.FrameError) as info:
        frames.register_pair(rgb, small, _cfg(size_mismatch='reject'))
    assert info.value.reason == 'size_mismatch'


def test_non_finite_thermal_is_one_reason_everywhere():
    rgb = np.zeros((8, 8, 3), np.uint8)
    t = np.full((8, 8), 20.0, np.float32)
    t[2, 3] = np.nan
    with pytest.raises(frames.FrameError) as info:
        frames.register_pair(rgb, t, _cfg())
    assert info.value.reason == 'thermal.non_finite'
