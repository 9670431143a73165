"""Dataset discovery, checks, split and augmentation on real MSRS files and written images."""
import os

import numpy as np
import pytest

from ssvif_ros import imaging
from ssvif_train.config import load_config
from ssvif_train.data import build_datasets, PairDataset
from ssvif_train.discovery import check_pairs, DatasetError, discover_pairs, split_pairs


def write_pair(root, vi_dir, ir_dir, stem, size=(40, 30), ir_dtype=np.uint8, ir_ext='.png',
               ir_size=None):
    rng = np.random.default_rng(abs(hash(stem)) % 1000)
    w, h = size
    imaging.write_image(root / vi_dir / f'{stem}.png', rng.integers(0, 255, (h, w, 3), np.uint8))
    iw, ih = ir_size or size
    hi = 255 if ir_dtype == np.uint8 else 60000
    ir = rng.integers(0, hi, (ih, iw)).astype(ir_dtype)
    path = root / ir_dir / f'{stem}{ir_ext}'
    if ir_ext in ('.tif', '.tiff'):
        import tifffile
        path.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(path, ir)
    else:
        imaging.write_image(path, ir)


def test_msrs_layout_with_split_folder_and_labels(msrs_dir):
    rep = discover_pairs(str(msrs_dir), split='val')
    assert len(rep.pairs) == 25 and rep.vi_dir.endswith(os.path.join('val', 'vi'))
    assert not rep.vi_only and not rep.ir_only
    assert all(p.label is None for p in rep.pairs)


def test_fmb_layout_16_bit_tiff_thermal_and_labels(tmp_path):
    for i in range(3):
        write_pair(tmp_path, 'Visible', 'Infrared', f'{i:05d}', ir_dtype=np.uint16,
                   ir_ext='.tiff')
        imaging.write_image(tmp_path / 'Label' / f'{i:05d}.png', np.zeros((30, 40), np.uint8))
    rep = discover_pairs(str(tmp_path), layout='auto')
    assert len(rep.pairs) == 3 and all(p.label for p in rep.pairs)
    ds = PairDataset(rep.pairs, crop=16, train=True)
    vis, ir, _ = ds[0]
    assert vis.shape == (3, 16, 16) and ir.shape == (3, 16, 16)
    assert 0.0 <= float(ir.min()) and float(ir.max()) <= 1.0
    assert float(ir.max()) > 0.9  # 16-bit percentile stretch uses the full range


def test_any_two_folders_and_unpaired_files_reported_by_name(tmp_path, caplog):
    for i in range(4):
        write_pair(tmp_path, 'rgb', 'thermal', f'f{i}')
    write_pair(tmp_path, 'rgb', 'x', 'lonely_vis')
    write_pair(tmp_path, 'y', 'thermal', 'lonely_ir')
    rep = discover_pairs(vi=str(tmp_path / 'rgb'), ir=str(tmp_path / 'thermal'))
    assert [p.stem for p in rep.pairs] == ['f0', 'f1', 'f2', 'f3']
    assert rep.vi_only == ['lonely_vis.png'] and rep.ir_only == ['lonely_ir.png']
    assert '1 visible without thermal: lonely_vis.png' in rep.summary()
    assert 'lonely_ir.png' in caplog.text


def test_errors_name_the_path(tmp_path):
    with pytest.raises(DatasetError, match='not found'):
        discover_pairs(str(tmp_path / 'nope'))
    (tmp_path / 'vi').mkdir()
    (tmp_path / 'ir').mkdir()
    with pytest.raises(DatasetError, match='no image pairs'):
        discover_pairs(str(tmp_path))
    with pytest.raises(DatasetError, match='both'):
        discover_pairs(vi=str(tmp_path / 'vi'))
    write_pair(tmp_path, 'vi', 'ir', 'a', ir_size=(20, 10))
    rep = discover_pairs(str(tmp_path))
    with pytest.raises(DatasetError, match=r'differs in size.*a\.png'):
        check_pairs(rep.pairs)
    check_pairs(rep.pairs, resize='ir_to_vi')
    ds = PairDataset(rep.pairs, crop=0, train=False, resize='ir_to_vi')
    vis, ir, _ = ds[0]
    assert vis.shape == ir.shape == (3, 30, 40)
    (tmp_path / 'vi' / 'b.png').write_bytes(b'garbage')
    write_pair(tmp_path, 'y', 'ir', 'b')
    rep = discover_pairs(str(tmp_path))
    with pytest.raises(DatasetError, match=r'unreadable.*b\.png'):
        check_pairs(rep.pairs, resize='ir_to_vi')


def test_split_is_deterministic_nine_to_one():
    from ssvif_train.discovery import Pair
    pairs = [Pair(f'{i:03d}', 'v', 'i') for i in range(50)]
    tr1, va1 = split_pairs(pairs, 0.1, seed=3)
    tr2, va2 = split_pairs(list(reversed(pairs)), 0.1, seed=3)
    assert [p.stem for p in va1] == [p.stem for p in va2] and len(va1) == 5 and len(tr1) == 45
    assert not {p.stem for p in va1} & {p.stem for p in tr1}
    _, va3 = split_pairs(pairs, 0.1, seed=4)
    assert [p.stem for p in va3] != [p.stem for p in va1]


def test_real_msrs_crops_flips_reproducible_per_epoch(msrs_subset):
    root = msrs_subset(8)
    cfg = load_config(None, [f'data.root={root}', 'data.crop=64'])
    train, val, rep = build_datasets(cfg)
    assert len(train) == 7 and len(val) == 1
    v1, i1, _ = train[0]
    v2, i2, _ = train[0]
    assert v1.shape == (3, 64, 64) and (v1 == v2).all() and (i1 == i2).all()
    train.set_epoch(1)
    v3, _, _ = train[0]
    assert not (v3 == v1).all()
    # the three thermal channels are identical (three-channel fusion input)
    assert (i1[0] == i1[1]).all() and (i1[1] == i1[2]).all()
    vv, ii, ll = val[0]
    assert ll.shape == (480, 640) and (ll == 255).all()  # no labels: all ignored
    assert vv.shape == (3, 480, 640)


def test_vflip_false_keeps_the_top_on_top(tmp_path):
    """Sky above road: with ``data.vflip: false`` no training sample is upside down."""
    vis = np.zeros((32, 48, 3), np.uint8)
    vis[:16] = 255                                              # bright top half
    imaging.write_image(tmp_path / 'vi' / 'a.png', vis)
    imaging.write_image(tmp_path / 'ir' / 'a.png', np.zeros((32, 48), np.uint8))
    pairs = discover_pairs(str(tmp_path)).pairs
    tops = {}
    for vflip in (True, False):
        ds = PairDataset(pairs, 0, True, seed=3, vflip=vflip)
        tops[vflip] = []
        for epoch in range(16):
            ds.set_epoch(epoch)
            v, _, _ = ds[0]
            tops[vflip].append(bool(v[0, 0].mean() > 0.5))
    assert all(tops[False])
    assert not all(tops[True])          # the default flips some (2^-16 chance to flip none)
    cfg = load_config(None, [f'data.root={tmp_path}', 'data.vflip=false', 'data.crop=16',
                             'data.val_fraction=0'])
    train, _, _ = build_datasets(cfg)
    assert train.vflip is False
