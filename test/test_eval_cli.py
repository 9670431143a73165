"""ssvif-eval (ssvif_ros.eval_cli) on real VIFB images and on small images written here."""
import csv
import json
import os
from pathlib import Path
import shutil
import subprocess
import sys

from conftest import REPO, VIFB
import numpy as np
import pytest

from ssvif_ros import contact_sheets, eval_cli, eval_fusion, imaging, metrics


def _run(args):
    """Run the CLI in a subprocess like the console script; returns (rc, stdout, stderr)."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get('PYTHONPATH', ''))
    p = subprocess.run([sys.executable, '-m', 'ssvif_ros.eval_cli'] + [str(a) for a in args],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout, p.stderr


def _synthetic(tmp_path):
    """vi/ir/fused folders of three 48 x 40 scenes; method 'mine' lacks c, b is the wrong size."""
    rng = np.random.default_rng(0)
    for stem in ('a', 'b', 'c'):
        vis = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        ir = rng.integers(0, 256, (40, 48), dtype=np.uint8)
        imaging.write_image(tmp_path / 'vi' / f'{stem}.png', vis)
        imaging.write_image(tmp_path / 'ir' / f'{stem}.png', ir)
        fused = ((vis.astype(np.uint16) + ir[:, :, None]) // 2).astype(np.uint8)
        if stem == 'a':
            imaging.write_image(tmp_path / 'mine' / 'a.png', fused)
        elif stem == 'b':
            imaging.write_image(tmp_path / 'mine' / 'b.png', fused[:, :40])
        imaging.write_image(tmp_path / 'other' / f'{stem}_other.png', fused)
    return tmp_path


def test_fusion_on_vifb_images_matches_metrics_and_vifb(tmp_path):
    if not (VIFB / 'input' / 'VI').is_dir():
        pytest.skip(f'VIFB data not found at {VIFB} (set SSVIF_DATA to the shared data folder)')
    stems = ('manWalking', 'walking')
    for sub in ('VI', 'IR'):
        (tmp_path / sub).mkdir()
        for s in stems:
            shutil.copy(VIFB / 'input' / sub / f'{s}.jpg', tmp_path / sub / f'{s}.jpg')
    allm = tmp_path / 'fused_images'  # VIFB layout: all methods in one folder
    allm.mkdir()
    for s in stems:
        for m in ('ADF', 'CBF'):
            shutil.copy(VIFB / 'output' / 'fused_images' / f'{s}_{m}.jpg', allm)
    (tmp_path / 'GTF').mkdir()  # a method folder missing one image
    shutil.copy(VIFB / 'output' / 'fused_images' / 'walking_GTF.jpg', tmp_path / 'GTF')
    names = 'EN,MI,Qabf,SSIM,Qcb'
    out = tmp_path / 'out'
    rc, stdout, stderr = _run(['fusion', '--vi', tmp_path / 'VI', '--ir', tmp_path / 'IR',
                               '--fused', allm, '--name', 'ADF', '--fused', allm, '--name',
                               'CBF', '--fused', tmp_path / 'GTF', '--name', 'GTF',
                               '--out', out, '--metrics', names, '--contact', 'walking'])
    assert rc == 0, stderr
    assert 'GTF: no fused image for manWalking' in stderr
    doc = json.loads((out / 'fusion_metrics.json').read_text())
    assert doc['methods']['GTF']['missing'] == ['manWalking']
    assert doc['methods']['GTF']['n_images'] == 1
    assert doc['methods']['ADF']['n_images'] == 2
    vis = imaging.read_image(VIFB / 'input' / 'VI' / 'walking.jpg')
    ir = imaging.read_image(VIFB / 'input' / 'IR' / 'walking.jpg')
    fused = imaging.read_image(VIFB / 'output' / 'fused_images' / 'walking_CBF.jpg')
    direct = metrics.compute_fusion_metrics(vis, ir, fused, names.split(','), 'vifb')
    assert doc['methods']['CBF']['per_image']['walking'] == pytest.approx(direct, rel=1e-12)
    # ... and the CLI's value is VIFB's own (printed with 5 significant digits).
    ref = float((VIFB / 'output' / 'evaluation_metrics_single' / 'walking_CBF_Qabf.txt')
                .read_text())
    assert doc['methods']['CBF']['per_image']['walking']['Qabf'] == pytest.approx(ref, rel=1e-4)
    means = doc['methods']['ADF']['mean']
    for n in names.split(','):
        per = [doc['methods']['ADF']['per_image'][s][n] for s in stems]
        assert means[n] == pytest.approx(np.mean(per))
    md = (out / 'fusion_metrics.md').read_text()
    assert '| Metric | ADF | CBF | GTF |' in md and 'MI ↑' in md
    assert 'not directly comparable' in md
    with open(out / 'per_image.csv', newline='') as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 5 and rows[0]['image'] == 'manWalking'
    sheet = imaging.read_image(out / 'contact_sheet.png')
    assert sheet.ndim == 3 and sheet.shape[0] == contact_sheets.TILE_HEIGHT + 22 + 4
    assert sheet.shape[1] > 5 * contact_sheets.TILE_HEIGHT  # vi | ir | 3 methods


def test_fusion_on_small_images_reports_missing_and_size(tmp_path, capsys):
    root = _synthetic(tmp_path)
    out = root / 'out'
    rc = eval_cli.main(['fusion', '--vi', str(root / 'vi'), '--ir', str(root / 'ir'),
                        '--fused', str(root / 'mine'), '--fused', str(root / 'other'),
                        '--out', str(out), '--metrics', 'EN,SD,SSIM,MS_SSIM', '--quiet'])
    err = capsys.readouterr().err
    assert rc == 0
    doc = json.loads((out / 'fusion_metrics.json').read_text())
    mine, other = doc['methods']['mine'], doc['methods']['other']
    assert mine['missing'] == ['c']
    assert 'b' in mine['size_mismatch'] and '40x40' in mine['size_mismatch']['b']
    assert list(mine['per_image']) == ['a']
    assert sorted(other['per_image']) == ['a', 'b', 'c']  # s_<method>.png names
    assert 'mine: no fused image for c' in err and 'b.png is 40x40' in err
    # MS-SSIM cannot be computed on 48 x 40 images: reported, value empty (null), no crash.
    assert mine['per_image']['a']['MS_SSIM'] is None
    assert any('MS_SSIM' in p and '161' in p for p in doc['problems'])
    vis = imaging.read_image(root / 'vi' / 'a.png')
    ir = imaging.read_image(root / 'ir' / 'a.png')
    fused = imaging.read_image(root / 'other' / 'a_other.png')
    direct = metrics.compute_fusion_metrics(vis, ir, fused, ['EN', 'SD', 'SSIM'])
    for k, v in direct.items():
        assert other['per_image']['a'][k] == pytest.approx(v, rel=1e-12)


def test_match_fused_prefers_longest_stem_and_method_suffix():
    files = {s: Path(f'{s}.jpg') for s in ('walking_ADF', 'walking2_ADF', 'walking_CBF', 'x')}
    m, amb = eval_fusion.match_fused(['walking', 'walking2', 'x'], files, 'ADF')
    assert m['walking'].name == 'walking_ADF.jpg' and m['walking2'].name == 'walking2_ADF.jpg'
    assert m['x'].name == 'x.jpg' and not amb
    m, amb = eval_fusion.match_fused(['walking', 'walking2', 'x'], files, 'GTF')
    assert 'walking' not in m and amb['walking'] == ['walking_ADF.jpg', 'walking_CBF.jpg']
    assert m['walking2'].name == 'walking2_ADF.jpg'  # single candidate


def test_segmentation_iou_table(tmp_path):
    label = np.array([[0, 0, 1, 255], [1, 2, 2, 255]], dtype=np.uint8)
    pred = np.array([[0, 1, 1, 2], [1, 2, 0, 0]], dtype=np.uint8)
    imaging.write_image(tmp_path / 'labels' / 'p1.png', label)
    imaging.write_image(tmp_path / 'pred' / 'p1.png', pred)
    imaging.write_image(tmp_path / 'labels' / 'p2.png', label)  # no prediction
    rc, stdout, stderr = _run(['segmentation', '--pred', tmp_path / 'pred', '--labels',
                               tmp_path / 'labels', '--classes', 'msrs', '--out',
                               tmp_path / 'out', '--quiet'])
    assert rc == 0, stderr
    doc = json.loads((tmp_path / 'out' / 'segmentation_metrics.json').read_text())
    assert doc['classes'][:3] == ['unlabelled', 'car', 'person']
    assert doc['iou']['unlabelled'] == pytest.approx(1 / 3)
    assert doc['iou']['car'] == pytest.approx(2 / 3)
    assert doc['iou']['person'] == pytest.approx(1 / 2)
    assert doc['iou']['bike'] is None
    assert doc['miou'] == pytest.approx(0.5)
    assert doc['missing_predictions'] == ['p2'] and 'p2: no prediction' in stderr
    md = (tmp_path / 'out' / 'segmentation_metrics.md').read_text()
    assert '| **mIoU** | **0.5000** |' in md and '| bike | n/a |' in md


@pytest.mark.parametrize('case', ['missing_dir', 'empty_dir', 'unreadable', 'bad_metric',
                                  'sixteen_bit'])
def test_errors_exit_2_naming_the_path(tmp_path, case):
    root = _synthetic(tmp_path)
    args = ['fusion', '--vi', root / 'vi', '--ir', root / 'ir', '--fused', root / 'other',
            '--out', root / 'out', '--quiet']
    if case == 'missing_dir':
        args[4] = root / 'nope'
        expect = str(root / 'nope')
    elif case == 'empty_dir':
        (root / 'empty').mkdir()
        args[6] = root / 'empty'
        expect = str(root / 'empty')
    elif case == 'unreadable':
        (root / 'other' / 'a_other.png').write_bytes(b'not a png')
        expect = str(root / 'other' / 'a_other.png')
    elif case == 'bad_metric':
        args += ['--metrics', 'EN,NIQE']
        expect = 'NIQE'
    else:
        imaging.write_image(root / 'ir' / 'b.png', np.full((40, 48), 4000, dtype=np.uint16))
        expect = str(root / 'ir' / 'b.png')
    rc, stdout, stderr = _run(args)
    assert rc == 2
    assert expect in stderr and 'Traceback' not in stderr


def _one_line(rc, stderr, *words):
    """Exit 2 and a single stderr line, without traceback, naming ``words``."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert rc == 2 and 'Traceback' not in stderr, stderr
    assert len(lines) == 1 and lines[0].startswith('ssvif-eval: error:'), stderr
    for w in words:
        assert str(w) in lines[0], (w, lines[0])


def test_nothing_scored_is_exit_2_and_writes_no_table(tmp_path):
    root = _synthetic(tmp_path)
    # fusion: every fused image has the wrong size
    for stem in ('a', 'b', 'c'):
        imaging.write_image(root / 'small' / f'{stem}.png', np.zeros((20, 24, 3), np.uint8))
    rc, _, err = _run(['fusion', '--vi', root / 'vi', '--ir', root / 'ir', '--fused',
                       root / 'small', '--out', root / 'out_f', '--quiet'])
    _one_line(rc, err, 'no image could be scored', '3 problems', 'is 24x20')
    # segmentation: prediction and label sizes differ
    imaging.write_image(root / 'labels' / 'a.png', np.zeros((4, 4), np.uint8))
    imaging.write_image(root / 'pred' / 'a.png', np.zeros((5, 4), np.uint8))
    rc, _, err = _run(['segmentation', '--pred', root / 'pred', '--labels', root / 'labels',
                       '--classes', 'msrs', '--out', root / 'out_s', '--quiet'])
    _one_line(rc, err, 'no image could be scored', 'differ in size')
    # boxes: no prediction for any box file
    (root / 'boxes').mkdir()
    (root / 'boxes' / 'zz.txt').write_text('0 0.5 0.5 0.2 0.2\n')
    rc, _, err = _run(['boxes', '--pred', root / 'pred', '--boxes', root / 'boxes',
                       '--out', root / 'out_b', '--quiet'])
    _one_line(rc, err, 'no image could be scored', 'zz: no prediction')
    assert not any((root / f'out_{k}').exists() for k in 'fsb')


def test_an_existing_file_as_out_or_a_full_disk_names_the_path(tmp_path, tiny_tmpfs):
    root = _synthetic(tmp_path)
    afile = root / 'evalout_file'
    afile.write_text('x')
    args = ['fusion', '--vi', root / 'vi', '--ir', root / 'ir', '--fused', root / 'other',
            '--metrics', 'EN', '--quiet', '--out']
    rc, _, err = _run(args + [afile])
    _one_line(rc, err, str(afile), 'existing file, not a folder')
    disk, read_only = tiny_tmpfs
    (disk / 'filler').write_bytes(b'\0' * (256 * 1024 - 4096))  # leave no room for a report
    rc, _, err = _run(args + [disk / 'out'])
    _one_line(rc, err, str(disk / 'out'), 'No space left on device')
    read_only()
    rc, _, err = _run(args + [disk / 'out2'])
    _one_line(rc, err, str(disk / 'out2'), 'Read-only file system')
