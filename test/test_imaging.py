"""The single pixel-processing module: colour, thermal normalization, padding, palettes, files."""
import numpy as np
import pytest
import torch

from ssvif_ros import imaging
from ssvif_train import tensor_imaging


def test_ycbcr_known_values_and_round_trip():
    rgb = np.array([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.5, 0.5, 0.5]]],
                   np.float64)  # 1 x 4 x 3
    ycc = imaging.rgb_to_ycbcr(rgb)
    # BT.601 full range: red Y=0.299, Cb=0.5-0.299*0.5/0.886, Cr=1.0
    assert ycc[0, 0] == pytest.approx([0.299, 0.5 - 0.299 * 0.5 / 0.886, 1.0], abs=1e-6)
    assert ycc[0, 3] == pytest.approx([0.5, 0.5, 0.5], abs=1e-9)
    assert imaging.ycbcr_to_rgb(ycc) == pytest.approx(rgb, abs=1e-9)


def test_colour_functions_agree_between_numpy_and_torch():
    rng = np.random.default_rng(0)
    img = rng.random((5, 7, 3)).astype(np.float32)
    t = torch.from_numpy(img.transpose(2, 0, 1))[None]  # 1 x 3 x 5 x 7
    a = imaging.rgb_to_ycbcr(img)
    b = tensor_imaging.rgb_to_ycbcr(t)[0].numpy().transpose(1, 2, 0)
    assert np.allclose(a, b, atol=1e-6)
    assert np.allclose(tensor_imaging.rgb_to_gray(t)[0].numpy(), a[:, :, 0], atol=1e-6)
    back = tensor_imaging.ycbcr_to_rgb(tensor_imaging.rgb_to_ycbcr(t))
    assert torch.allclose(back, t, atol=1e-6)
    assert np.allclose(imaging.rgb_to_gray(img), a[:, :, 0], atol=1e-6)


def test_thermal_normalization_methods():
    u8 = np.array([[0, 255], [51, 102]], np.uint8)
    assert imaging.normalize_thermal(u8) == pytest.approx(np.array([[0, 1], [0.2, 0.4]]))
    u16 = np.array([[1000, 2000], [3000, 5000]], np.uint16)
    fixed = imaging.normalize_thermal(u16, imaging.ThermalNorm('fixed', lo=1000, hi=3000))
    assert fixed == pytest.approx(np.array([[0, 0.5], [1, 1]]))
    scale = imaging.normalize_thermal(u16, imaging.ThermalNorm('scale'))
    assert scale[1, 1] == pytest.approx(5000 / 65535)
    # auto on 16 bit: 1st..99th percentile stretch, so the range is used fully
    ramp = np.arange(100 * 100, dtype=np.uint16).reshape(100, 100) + 20000
    auto = imaging.normalize_thermal(ramp)
    assert auto.min() == 0.0 and auto.max() == 1.0
    assert auto[50, 50] == pytest.approx(0.5, abs=0.01)
    temps = np.array([[20.0, 30.0], [40.0, 25.0]], np.float32)
    t = imaging.normalize_thermal(temps, imaging.ThermalNorm('fixed', lo=20, hi=40))
    assert t == pytest.approx(np.array([[0, 0.5], [1, 0.25]]))
    flat = imaging.normalize_thermal(np.full((4, 4), 7, np.uint16))
    assert np.all(flat == 0)


def test_thermal_normalization_rejects_bad_input():
    with pytest.raises(ValueError, match='NaN or Inf'):
        imaging.normalize_thermal(np.array([[1.0, np.nan]], np.float32))
    with pytest.raises(ValueError, match='empty'):
        imaging.normalize_thermal(np.zeros((0, 5), np.uint8))
    with pytest.raises(ValueError, match='lo < hi'):
        imaging.ThermalNorm('fixed', lo=5, hi=5)
    with pytest.raises(ValueError, match='not one of'):
        imaging.ThermalNorm('magic')


def test_pad_unpad_numpy_and_torch():
    x = np.arange(5 * 7, dtype=np.float32).reshape(5, 7)
    p, pad = imaging.pad_to_multiple(x, 4)
    assert p.shape == (8, 8) and pad == (3, 1)
    assert p[5, 0] == x[3, 0]  # reflection
    assert np.array_equal(imaging.unpad(p, pad), x)
    t = torch.rand(2, 3, 5, 7)
    tp, tpad = tensor_imaging.pad_to_multiple(t, 8)
    assert tp.shape == (2, 3, 8, 8) and tpad == (3, 1)
    assert torch.equal(tensor_imaging.unpad(tp, tpad), t)
    tiny = torch.rand(1, 1, 2, 2)
    assert tensor_imaging.pad_to_multiple(tiny, 8)[0].shape == (1, 1, 8, 8)  # replicate fallback


def test_uint8_conversion_rounds_and_clips():
    x = np.array([-0.5, 0.0, 0.5, 1.0, 1.7], np.float32)
    assert imaging.to_uint8(x).tolist() == [0, 0, 128, 255, 255]


def test_to_uint8_of_a_planar_view_is_interleaved_and_equal_to_the_contiguous_result():
    rng = np.random.default_rng(3)
    chw = rng.random((3, 48, 64), dtype=np.float32) * 1.4 - 0.2  # out-of-range values too
    view = chw.transpose(1, 2, 0)  # H x W x 3 view of planar memory, as backends return
    got = imaging.to_uint8(view)
    assert got.flags.c_contiguous and got.shape == (48, 64, 3) and got.dtype == np.uint8
    want = np.floor(np.clip(np.ascontiguousarray(view) * 255.0, 0, 255) + 0.5)
    assert np.array_equal(got, want.astype(np.uint8))
    for c in range(3):
        assert np.array_equal(got[:, :, c], imaging.to_uint8(chw[c]))
    crop = view[:45, :61]  # a padded model output cropped back (GraphBackend.infer)
    got = imaging.to_uint8(crop)
    assert got.flags.c_contiguous and np.array_equal(got, imaging.to_uint8(crop.copy()))


def test_preprocess_pair_shapes_and_size_mismatch():
    vis = np.zeros((4, 6, 3), np.uint8)
    ir = np.full((4, 6), 255, np.uint8)
    v, t = imaging.preprocess_pair(vis, ir)
    assert v.shape == (4, 6, 3) and t.shape == (4, 6, 3) and t.min() == 1.0
    with pytest.raises(ValueError, match='differ in size'):
        imaging.preprocess_pair(vis, np.zeros((5, 6), np.uint8))


def test_max_luma_rule():
    vis = np.full((2, 2, 3), 0.2, np.float32)
    ir = np.array([[0.0, 0.9], [0.1, 0.2]], np.float32)
    out = imaging.max_luma_fusion(vis, ir)
    y = imaging.rgb_to_gray(out)
    assert y == pytest.approx(np.maximum(0.2, ir), abs=1e-6)


def test_palettes_and_colorize():
    assert imaging.palette(9).shape == (9, 3)
    p20 = imaging.palette(20)
    assert p20.shape == (20, 3) and len({tuple(c) for c in p20}) == 20
    ids = np.array([[0, 1], [2, 8]], np.uint8)
    col = imaging.colorize(ids, imaging.palette(9))
    assert col.shape == (2, 2, 3) and np.array_equal(col[1, 1], imaging.palette(9)[8])
    assert imaging.class_names('msrs')[2] == 'person' and len(imaging.class_names('fmb')) == 15
    o = imaging.overlay(np.zeros((1, 1, 3), np.uint8), np.full((1, 1, 3), 200, np.uint8), 0.5)
    assert o[0, 0, 0] == 100


def test_class_overlay_keeps_the_background_of_semantic_maps():
    rgb = np.full((2, 2, 3), 100, np.uint8)
    ids = np.array([[0, 2], [0, 1]], np.uint8)
    pal = np.array([[0, 0, 0], [0, 0, 200], [200, 0, 0]], np.uint8)
    sem = imaging.class_overlay(rgb, ids, pal, 0.5, keep_background=True)
    assert sem[0, 0].tolist() == [100, 100, 100] and sem[0, 1].tolist() == [150, 50, 50]
    assert sem[1, 1].tolist() == [50, 50, 150]
    clusters = imaging.class_overlay(rgb, ids, pal, 0.5)      # cluster 0 is a colour too
    assert clusters[0, 0].tolist() == [50, 50, 50]
    assert np.array_equal(imaging.class_overlay(rgb, ids, pal, 0.0, True), pal[ids])


def test_image_files_round_trip_keeps_16_bit_and_rgb_order(tmp_path):
    rgb = np.zeros((3, 4, 3), np.uint8)
    rgb[..., 0] = 200  # red
    imaging.write_image(tmp_path / 'a.png', rgb)
    back = imaging.read_image(tmp_path / 'a.png')
    assert np.array_equal(back, rgb)
    t16 = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000)
    imaging.write_image(tmp_path / 't.png', t16)
    assert np.array_equal(imaging.read_image(tmp_path / 't.png', mode='gray'), t16)
    import tifffile
    tifffile.imwrite(tmp_path / 't.tiff', t16)
    assert np.array_equal(imaging.read_image(tmp_path / 't.tiff', mode='gray'), t16)
    (tmp_path / 'bad.png').write_bytes(b'not a png at all')
    with pytest.raises(ValueError, match='bad.png'):
        imaging.read_image(tmp_path / 'bad.png')
    with pytest.raises(FileNotFoundError, match='missing.png'):
        imaging.read_image(tmp_path / 'missing.png')


def _damaged_pngs(tmp_path):
    """A real PNG and copies of it: bytes flipped in IDAT, in the zlib header, cut short."""
    rng = np.random.default_rng(0)
    good = tmp_path / 'good.png'
    imaging.write_image(good, rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
    data = good.read_bytes()
    out = {}
    for label, edit in (('idat', lambda b: b[:2000] + b'\x00\xff\x00\xff' + b[2004:]),
                        ('zlib_header', lambda b: b[:41] + b'\x00\xff' + b[43:]),
                        ('cut', lambda b: b[:len(b) - 30]),
                        ('chunk_type', lambda b: b[:len(b) - 8] + b'\x00\xff\x00\xff'
                         + b[len(b) - 4:])):
        out[label] = tmp_path / f'{label}.png'
        out[label].write_bytes(edit(data))
    return good, out


def test_a_damaged_png_is_one_error_without_libpng_lines(tmp_path, capfd):
    good, damaged = _damaged_pngs(tmp_path)
    assert imaging.read_image(good).shape == (120, 160, 3)
    for label, path in damaged.items():
        with pytest.raises(ValueError) as info:
            imaging.read_image(path)
        msg = str(info.value)
        assert str(path) in msg and 'PNG' in msg and '\n' not in msg, (label, msg)
        assert msg.isprintable(), msg
    err = capfd.readouterr().err  # libpng writes to the process's stderr (fd 2) itself
    assert 'libpng' not in err and err == '', err
