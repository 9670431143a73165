"""Rig registration with known answers: real thermal frames warped by known homographies.

RoadScene and MSRS pairs are registered already, but not perfectly: estimated on the unwarped
pairs the result is some pixels from the identity (the datasets' own registration). A thermal
frame warped by a known H must then give that base estimate followed by H; the error is the
mean distance of the four RGB corners (640x480) mapped back through both. RoadScene: within
2 px (measured 0.4 to 1.7 px); MSRS: within 5 px (see MSRS_TOL_PX).
"""
import os
from pathlib import Path
import subprocess
import sys

import cv2
import numpy as np
import pytest
import yaml

from ssvif_ros import imaging, registration
from ssvif_ros.dataset_paths import list_pairs, list_pairs_in
from ssvif_ros.registration import corner_error, estimate, RegistrationError

REPO = Path(__file__).resolve().parents[1]
SIZE = (640, 480)
TOL_PX = 2.0


def rig_h(tx=0.0, ty=0.0, scale=1.0, rot_deg=0.0, px=0.0, py=0.0):
    """A thermal -> RGB homography about the frame centre: shift, scale, rotation, perspective."""
    c = np.array([[1, 0, -SIZE[0] / 2], [0, 1, -SIZE[1] / 2], [0, 0, 1]], np.float64)
    a = np.deg2rad(rot_deg)
    sim = np.array([[scale * np.cos(a), -scale * np.sin(a), tx],
                    [scale * np.sin(a), scale * np.cos(a), ty], [0, 0, 1]])
    persp = np.array([[1, 0, 0], [0, 1, 0], [px, py, 1]], np.float64)
    return np.linalg.inv(c) @ sim @ persp @ c


# What rigs do: lenses a few % apart in focal length, mounts a few pixels and degrees off.
CASES = {
    'translation': rig_h(18, -11),
    'scale': rig_h(5, 3, 1.06),
    'rotation': rig_h(-4, 6, 1.0, 2.5),
    'perspective': rig_h(8, -5, 1.03, 1.0, 4e-5, -3e-5),
}


def _load(files):
    return [(imaging.resize(imaging.read_image(v, 'rgb'), SIZE),
             imaging.resize(imaging.read_image(t, 'gray'), SIZE)) for v, t in files]


def warp_thermal(pairs, hm):
    """The pairs as a rig with thermal -> RGB ``hm`` records them (thermal = warp by hm^-1)."""
    return [(v, cv2.warpPerspective(t, np.linalg.inv(hm), SIZE)) for v, t in pairs]


@pytest.fixture(scope='module')
def roadscene(roadscene_dir):
    """24 RoadScene pairs, every 8th, at 640x480."""
    return _load(list_pairs_in(roadscene_dir / 'vi', roadscene_dir / 'ir')[::8][:24])


@pytest.fixture(scope='module')
def base(roadscene):
    """The estimate on the unwarped pairs (the dataset's own registration)."""
    return estimate(roadscene)


@pytest.fixture(scope='module')
def msrs_val():
    from conftest import MSRS, need
    return _load(list_pairs(need(MSRS, 'MSRS sample data') / 'val')[:12])


def test_dataset_registration_is_near_identity(base):
    assert corner_error(base.homography, np.eye(3), SIZE) < 4.0
    assert len(base.used) == 24 and base.inliers >= 50


# Not met yet (deterministic since the edges no longer use cv2.magnitude): the perspective
# case comes out 2.67 px off on RoadScene and 8.6 px on MSRS, where auto picks an affine. Strict:
# an estimator that meets the tolerance turns these into failures to be promoted to passes.
PERSPECTIVE_NOT_MET = pytest.mark.xfail(strict=True, reason='perspective warps: 2.67 px '
                                        '(RoadScene), 8.6 px as affine (MSRS); doc/node.md')


@pytest.mark.parametrize('case', [pytest.param(c, marks=PERSPECTIVE_NOT_MET)
                                  if c == 'perspective' else c for c in sorted(CASES)])
def test_recovers_known_homography(roadscene, base, case):
    h_true = CASES[case]
    reg = estimate(warp_thermal(roadscene, h_true))
    err = corner_error(reg.homography, base.homography @ h_true, SIZE)
    assert err <= TOL_PX, f'{case}: mean corner error {err:.2f} px ({reg.model})'
    # the estimate aligns the edges better than the unregistered pair, frame by frame
    better = [f.score_after > f.score_before for f in reg.used]
    assert np.mean(better) >= 0.9


@pytest.fixture(scope='module')
def msrs_day():
    """24 MSRS day pairs (every 4th), 640x480."""
    from conftest import MSRS, need
    pairs = list_pairs(need(MSRS, 'MSRS sample data') / 'train')
    return _load([p for p in pairs if p[0].stem.endswith('D')][::4][:24])


# MSRS pairs are further from a homography apart than RoadScene's (estimated on the unwarped
# pairs: an affine map about 10 px from the identity at the corners; lens distortion is not
# modelled), and their visible frames have less contrast: measured 2.5 to 4.5 px.
MSRS_TOL_PX = 5.0


@pytest.fixture(scope='module')
def msrs_base(msrs_day):
    return estimate(msrs_day)


@pytest.mark.parametrize('case', ['translation',
                                  pytest.param('perspective', marks=PERSPECTIVE_NOT_MET)])
def test_recovers_known_homography_msrs(msrs_day, msrs_base, case):
    base = msrs_base
    h_true = CASES[case]
    reg = estimate(warp_thermal(msrs_day, h_true))
    err = corner_error(reg.homography, base.homography @ h_true, SIZE)
    assert err <= MSRS_TOL_PX, f'{case}: mean corner error {err:.2f} px ({reg.model})'


def test_thermal_camera_of_another_resolution(roadscene, base):
    # a 320x256 thermal camera beside a 640x480 RGB one: the result maps thermal pixels
    h_true = CASES['rotation']
    pairs = [(v, cv2.resize(t, (320, 256), interpolation=cv2.INTER_AREA))
             for v, t in warp_thermal(roadscene, h_true)]
    reg = estimate(pairs)
    to_thermal = np.diag([SIZE[0] / 320, SIZE[1] / 256, 1.0])  # thermal px -> 640x480
    assert corner_error(reg.homography, base.homography @ h_true @ to_thermal, SIZE) <= TOL_PX


def test_models_translation_and_homography_are_fitted_as_asked(roadscene, base):
    h_true = CASES['translation']
    reg = estimate(warp_thermal(roadscene[:12], h_true), model='translation')
    assert reg.model == 'translation'
    assert np.allclose(reg.homography[:, :2], np.eye(3)[:, :2])
    assert corner_error(reg.homography, base.homography @ h_true, SIZE) < 4.0
    # All 8 degrees of freedom fitted to noisy cross-spectral matches: less precise than the
    # model that auto selects (measured 1.9 px here; auto: 1.1 px).
    reg = estimate(warp_thermal(roadscene, h_true), model='homography')
    assert reg.model == 'homography'
    assert corner_error(reg.homography, base.homography @ h_true, SIZE) < 4.0


def test_unrelated_pairs_are_refused(roadscene, msrs_val):
    for pairs in (roadscene, msrs_val):
        unrelated = [(pairs[i][0], pairs[(i + 5) % len(pairs)][1]) for i in range(len(pairs))]
        with pytest.raises(RegistrationError, match='do not agree'):
            estimate(unrelated)


def test_frames_without_structure_are_skipped_or_refused(roadscene):
    flat = (np.full(SIZE[::-1] + (3,), 90, np.uint8), np.full(SIZE[::-1], 120, np.uint8))
    with pytest.raises(RegistrationError, match='structure'):
        estimate([flat, flat])
    reg = estimate([flat] + warp_thermal(roadscene[:12], CASES['translation']))
    assert reg.frames[0].status == 'no_structure' and len(reg.used) == 12


def test_pairs_of_different_sizes_are_refused(roadscene):
    v, t = roadscene[0]
    with pytest.raises(RegistrationError, match='one size per camera'):
        estimate([(v, t), (v[:240], t)])


def test_score_ranks_aligned_above_misaligned(roadscene, msrs_val):
    shift = rig_h(12, -8)
    mask = registration.valid_mask(tuple(shift.ravel()), SIZE, SIZE)
    for v, t in msrs_val + roadscene:
        aligned = registration.alignment_score(v, t)
        off = registration.alignment_score(v, cv2.warpPerspective(t, shift, SIZE), mask)
        assert aligned > off, (aligned, off)
    flat = np.full(SIZE[::-1], 7, np.uint8)
    assert registration.alignment_score(flat, flat) is None


# ---------------------------------------------------------------------------------------------
# ssvif-register as a process


def register(*args, timeout=300):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, '-m', 'ssvif_ros.register_cli', '--quiet',
                           *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env=env)


def write_folders(root, pairs):
    for sub in ('vi', 'ir'):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i, (v, t) in enumerate(pairs):
        imaging.write_image(root / 'vi' / f'{i:04d}.png', v)
        imaging.write_image(root / 'ir' / f'{i:04d}.png', t)
    return root


def one_line_error(res, *words):
    assert res.returncode == 2, res.stdout + res.stderr
    assert 'Traceback' not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('ssvif-register: error:'), res.stderr
    for w in words:
        assert w in lines[0], lines[0]


def read_snippet(path):
    params = yaml.safe_load(path.read_text())['/**/fusion_node']['ros__parameters']
    return np.asarray(params['thermal_homography'], np.float64).reshape(3, 3), params


def test_cli_folders_print_matrix_scores_snippet_and_picture(tmp_path, roadscene, base):
    h_true = CASES['rotation']
    rig = write_folders(tmp_path / 'rig', warp_thermal(roadscene, h_true))
    res = register('--vi', rig / 'vi', '--ir', rig / 'ir', '--out', tmp_path / 'out')
    assert res.returncode == 0, res.stderr
    assert 'score_before  score_after' in res.stdout
    assert len([ln for ln in res.stdout.splitlines() if ln.strip()[:1].isdigit()]) == 24
    hm, params = read_snippet(tmp_path / 'out' / 'registration.yaml')
    assert corner_error(hm, base.homography @ h_true, SIZE) <= TOL_PX
    assert params['alignment_check_every'] > 0 and 0 < params['alignment_warn_below'] < 1
    assert all(isinstance(v, float) for v in params['thermal_homography'])  # ROS doubles
    pic = imaging.read_image(tmp_path / 'out' / 'registration.png')
    assert pic.shape == (SIZE[1], 2 * SIZE[0], 3)
    # RGB edges green, thermal edges magenta: more pixels hold both after (right) than before
    both = (pic[:, :, 1] > 100) & (pic[:, :, 0] > 100)  # H x 2W
    assert both[:, SIZE[0]:].mean() > 1.2 * both[:, :SIZE[0]].mean()


def test_cli_bag_input(tmp_path, roadscene, base):
    h_true = CASES['translation']
    rig = write_folders(tmp_path / 'rig', warp_thermal(roadscene[:16], h_true))
    bag = tmp_path / 'rig_bag'
    made = subprocess.run([sys.executable, '-m', 'ssvif_ros.bag_cli', 'make', '--vi',
                           rig / 'vi', '--ir', rig / 'ir', '--out', bag, '--quiet',
                           '--start-time', '1700000000'], capture_output=True, text=True,
                          timeout=300, cwd=REPO)
    assert made.returncode == 0, made.stderr
    res = register('--bag', bag, '--rgb-topic', '/rgb/image_raw', '--thermal-topic',
                   '/thermal/image_raw', '--out', tmp_path / 'out')
    assert res.returncode == 0, res.stderr
    hm, _ = read_snippet(tmp_path / 'out' / 'registration.yaml')
    assert corner_error(hm, base.homography @ h_true, SIZE) < 4.0
    bad = register('--bag', bag, '--rgb-topic', '/camera/color', '--thermal-topic',
                   '/thermal/image_raw', '--out', tmp_path / 'out2')
    one_line_error(bad, "'/camera/color' is not in the bag", '/rgb/image_raw')
    # thermal stamps 0.5 s after the RGB ones: no pair within --slop
    late = tmp_path / 'late_bag'
    made = subprocess.run([sys.executable, '-m', 'ssvif_ros.bag_cli', 'make', '--vi',
                           rig / 'vi', '--ir', rig / 'ir', '--out', late, '--quiet', '--count',
                           '4', '--offset-ms', '500', '--start-time', '1700000000'],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert made.returncode == 0, made.stderr
    one_line_error(register('--bag', late, '--rgb-topic', '/rgb/image_raw', '--thermal-topic',
                            '/thermal/image_raw', '--out', tmp_path / 'out3'),
                   'no usable RGB/thermal pair', '--slop')
    one_line_error(register('--bag', late, '--rgb-topic', '/rgb/image_raw', '--thermal-topic',
                            '/thermal/image_raw', '--slop', '-1'), '--slop')


def test_cli_bad_input_exits_2(tmp_path, roadscene):
    empty = tmp_path / 'empty'
    (empty / 'vi').mkdir(parents=True)
    (empty / 'ir').mkdir()
    one_line_error(register('--vi', empty / 'vi', '--ir', empty / 'ir'), 'no image name')
    v, t = roadscene[0]
    sizes = write_folders(tmp_path / 'sizes', [(v, t), (v[:240, :320], t)])
    one_line_error(register('--vi', sizes / 'vi', '--ir', sizes / 'ir', '--out', tmp_path),
                   'one size per camera')
    pairs = roadscene[:12]
    unrelated = write_folders(tmp_path / 'unrelated', [(pairs[i][0], pairs[(i + 5) % 12][1])
                                                       for i in range(12)])
    out = tmp_path / 'unrelated_out'
    one_line_error(register('--vi', unrelated / 'vi', '--ir', unrelated / 'ir', '--out', out),
                   'do not agree')
    assert not (out / 'registration.yaml').exists()  # no wrong matrix written
    one_line_error(register('--vi', unrelated / 'vi'), '--ir')


def test_alignment_status_warns_below_threshold_and_keeps_errors():
    from ssvif_ros.node_stats import alignment_status, ERROR, OK, WARN
    snap = {'alignment': 0.12, 'alignment_checks': 3}
    level, msg, values = alignment_status(OK, 'fusing at 10.0 Hz', [], snap, 1, 0.2)
    assert level == WARN and '0.120 < 0.2' in msg
    assert dict(values) == {'alignment_score': '0.120', 'alignment_checks': '3'}
    assert alignment_status(OK, 'fine', [], snap, 1, 0.1)[0] == OK
    assert alignment_status(ERROR, 'worker died', [], snap, 1, 0.2)[:2] == (ERROR, 'worker died')
    none_yet = alignment_status(OK, 'fine', [('a', 'b')], {'alignment': None,
                                                           'alignment_checks': 0}, 1, 0.2)
    assert none_yet == (OK, 'fine', [('a', 'b')])  # nothing checked yet: nothing added
    # turned off at run time: the last score is neither shown nor warned about
    assert alignment_status(OK, 'fine', [], snap, 0, 0.2) == (OK, 'fine', [])
    none = alignment_status(OK, 'fine', [], {'alignment': None, 'alignment_checks': 1}, 1, 0.2)
    assert none[0] == OK and dict(none[2])['alignment_score'] == 'n/a'
