"""ssvif-bag make / play / record / eval on real MSRS pairs, real bags and real processes.

Bags are written by ``ssvif-bag make`` and read back with rosbags; offline evaluation runs the
real ONNX Runtime backend with the embedded model; the live test runs fusion_node, the recorder
and the player as real processes talking Fast DDS.
"""
import json
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.typesys import get_typestore, Stores

from ssvif_ros import imaging
from ssvif_ros.bag_cli import main as bag_main
from ssvif_ros.bag_make import read_frames
from ssvif_ros.pairing import ApproxTimePairer
from ssvif_ros.ros_image import image_to_numpy
from ssvif_ros.tools.pair_publisher import rgb_as, thermal_as

REPO = Path(__file__).resolve().parents[1]
TS = get_typestore(Stores.LATEST)
T0 = 1_700_000_000.0  # first stamp [s]


@pytest.fixture
def val4(msrs_subset):
    """Four real MSRS validation pairs (with boxes in ../shared/data/msrs/val/boxes)."""
    return msrs_subset(4, split='val', name='val4')


def make(src, bag, *extra):
    code = bag_main(['make', '--vi', str(src / 'vi'), '--ir', str(src / 'ir'), '--out', str(bag),
                     '--start-time', str(T0), '--quiet', *extra])
    assert code == 0
    return bag


def read_bag(bag):
    """{topic: [(bag time, msg)]} and the metadata text."""
    out = {}
    with AnyReader([Path(bag)], default_typestore=TS) as r:
        for conn, t, raw in r.messages():
            out.setdefault(conn.topic, []).append((t, r.deserialize(raw, conn.msgtype)))
    return out


def stamp(msg):
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, '-m', 'ssvif_ros.bag_cli', *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


def interrupt(proc, timeout=20.0):
    """SIGINT ``proc`` and return its stderr; kill it when it has not ended within ``timeout``.

    A player with ``--loop`` left running after a timed-out test kept publishing, and a
    recorder left running kept writing (27 GB on a loaded machine), so neither may outlive
    the test.
    """
    import signal
    proc.send_signal(signal.SIGINT)
    try:
        return proc.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        proc.kill()
        err = proc.communicate()[1]
        return f'{err}\n(killed: no exit {timeout} s after SIGINT)'


def one_line_error(res, *words):
    assert res.returncode == 2, res.stderr
    assert 'Traceback' not in res.stderr, res.stderr
    errors = [ln for ln in res.stderr.splitlines() if 'error:' in ln]
    assert len(errors) == 1, res.stderr
    for w in words:
        assert w in errors[0], errors[0]
    return errors[0]


def test_make_writes_the_source_pixels_stamps_and_humble_readable_metadata(tmp_path, val4):
    bag = make(val4, tmp_path / 'bag', '--rate', '20', '--thermal-encoding', '32FC1',
               '--rgb-encoding', 'bgr8', '--camera-info', '--storage', 'sqlite3')
    meta = (bag / 'metadata.yaml').read_text()
    assert 'version: 8' in meta and 'storage_identifier: sqlite3' in meta
    # v8: offered_qos_profiles is a YAML string (what Humble parses), best effort (2)
    assert 'offered_qos_profiles: "- avoid_ros_namespace_conventions' in meta
    assert 'reliability: 2' in meta
    topics = read_bag(bag)
    assert sorted(topics) == ['/rgb/camera_info', '/rgb/image_raw', '/thermal/camera_info',
                              '/thermal/image_raw']
    frames = read_frames(bag)
    names = sorted(p.name for p in (val4 / 'vi').iterdir())
    assert [f['stem'] for f in frames] == [Path(n).stem for n in names]
    for i, ((t_rgb, m_rgb), (t_th, m_th), f) in enumerate(zip(
            topics['/rgb/image_raw'], topics['/thermal/image_raw'], frames)):
        assert stamp(m_rgb) == t_rgb == f['rgb_stamp_ns'] == int(T0 * 1e9) + i * 50_000_000
        assert stamp(m_th) == t_th == f['thermal_stamp_ns'] == t_rgb
        assert m_rgb.encoding == 'bgr8' and m_th.encoding == '32FC1'
        vis = imaging.read_image(val4 / 'vi' / names[i], 'rgb')
        ir = imaging.read_image(val4 / 'ir' / names[i], 'gray')
        np.testing.assert_array_equal(image_to_numpy(m_rgb), rgb_as(vis, 'bgr8'))
        np.testing.assert_array_equal(image_to_numpy(m_th), thermal_as(ir, '32FC1'))
    info = topics['/rgb/camera_info'][0][1]
    assert (info.width, info.height) == (vis.shape[1], vis.shape[0])


def _bag_order(frames):
    """(stream, stamp) of the frames in bag (= stamp) order, as make writes them."""
    events = []
    for f in frames:
        if f['rgb_stamp_ns'] is not None:
            events.append((f['rgb_stamp_ns'], 0))
        if f['thermal_stamp_ns'] is not None:
            events.append((f['thermal_stamp_ns'], 1))
    return [(s, t) for t, s in sorted(events)]


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
def test_make_then_offline_eval_round_trip(tmp_path, val4, msrs_dir, storage):
    """Default backend (ONNX Runtime, embedded model); output stamps equal the inputs'."""
    bag = make(val4, tmp_path / 'bag', '--storage', storage, '--rate', '10')
    out = tmp_path / 'eval'
    assert bag_main(['eval', str(bag), '--out', str(out), '--quiet',
                     '--boxes', str(msrs_dir / 'val' / 'boxes')]) == 0
    rep = json.loads((out / 'report.json').read_text())
    assert rep['status'] == 'complete' and rep['mode'] == 'offline'
    c = rep['counts']
    assert (c['rgb_frames'], c['thermal_frames'], c['pairs'], c['fused']) == (4, 4, 4, 4)
    out_bag = read_bag(rep['output_bag'])
    ins = read_bag(bag)
    in_stamps = [stamp(m) for _, m in ins['/rgb/image_raw']]
    for topic in ('/fused/image', '/fused/segmentation'):
        assert [stamp(m) for _, m in out_bag[topic]] == in_stamps
    # The fused pixels are what the backend gives for these very inputs.
    from ssvif_ros.bag_eval import load_backend, node_config
    from ssvif_ros.frames import check_and_prepare
    cfg, model = node_config('onnxruntime', '', {})
    backend = load_backend(cfg, model)
    for (_, m_in_rgb), (_, m_in_th), (_, m_fused), (_, m_seg) in zip(
            ins['/rgb/image_raw'], ins['/thermal/image_raw'], out_bag['/fused/image'],
            out_bag['/fused/segmentation']):
        fused, ids = backend.infer(*check_and_prepare(m_in_rgb, m_in_th, cfg))
        got = image_to_numpy(m_fused)
        assert m_fused.encoding == 'rgb8' and m_seg.encoding == 'mono8'
        assert np.abs(got.astype(int) - imaging.to_uint8(fused).astype(int)).max() <= 1
        assert (image_to_numpy(m_seg) != ids).mean() < 0.001
    for name in ('report.md', 'latency.png', 'metrics.png', 'classes.png'):
        assert (out / name).stat().st_size > 1000
    s = rep['metrics']['summary']
    assert set(s) == {'EN', 'SD', 'SF', 'AG', 'MI', 'Qabf', 'SSIM', 'VIF'}
    assert all(v['count'] == 4 and np.isfinite(v['mean']) for v in s.values())
    assert 0 < s['EN']['mean'] <= 8 and 0 < s['Qabf']['mean'] <= 1
    assert [r['stem'] for r in rep['frames']] == [f['stem'] for f in read_frames(bag)]
    assert rep['latency_ms']['count'] == 4 and rep['latency_ms']['p50'] > 0
    md = (out / 'report.md').read_text()
    assert '| 4 | 4 | 4 | 4 | 0 |' in md and 'Qabf' in md and 'Box scores' in md
    b = rep['boxes']
    assert b['n_images'] == 4 and not b['problems']
    assert b['classes']['person']['boxes'] + b['classes']['car']['boxes'] > 0


def test_jitter_offset_and_drops_pair_as_the_pairing_class_says(tmp_path, msrs_subset):
    src = msrs_subset(12, split='val', name='val12')
    bag = make(src, tmp_path / 'bag', '--rate', '30', '--jitter-ms', '12', '--offset-ms', '4',
               '--drop', '0.25', '--seed', '3')
    frames = read_frames(bag)
    assert any(f['rgb_stamp_ns'] is None for f in frames)
    assert any(f['thermal_stamp_ns'] is None for f in frames)
    out = tmp_path / 'eval'
    assert bag_main(['eval', str(bag), '--out', str(out), '--backend', 'maxluma',
                     '--quiet']) == 0
    rep = json.loads((out / 'report.json').read_text())
    pairer = ApproxTimePairer(0.02, 5, 1.0, names=('rgb', 'thermal'))
    pairs = [p.stamps for p in (pairer.add(s, t, None) for s, t in _bag_order(frames)) if p]
    assert 0 < len(pairs) < 12
    assert [(r['stamp_ns'], r['thermal_stamp_ns']) for r in rep['frames']] == pairs
    stats = pairer.stats()
    dropped = rep['counts']['dropped_by_reason']
    for key, n in stats['drops'].items():
        assert dropped[f'pairing.{key}'] == n
    for name, n in stats['queued'].items():
        assert dropped.get(f'pairing.{name}.unpaired_at_end', 0) == n
    # every input frame is either fused or listed with its reason
    fused = {(0, a) for a, _ in pairs} | {(1, b) for _, b in pairs}
    missing = {(0 if m['stream'] == 'rgb' else 1, m['stamp_ns']) for m in rep['missing']}
    assert fused | missing == set(_bag_order(frames)) and not fused & missing
    no_thermal = {f['rgb_stamp_ns'] for f in frames if f['thermal_stamp_ns'] is None}
    assert all(m.get('note') for m in rep['missing'] if m['stamp_ns'] in no_thermal)


def test_offset_beyond_slop_pairs_nothing_until_slop_is_raised(tmp_path, val4):
    bag = make(val4, tmp_path / 'bag', '--rate', '10', '--offset-ms', '30')
    res = run_cli('eval', bag, '--out', tmp_path / 'e1', '--backend', 'maxluma', '--quiet')
    assert res.returncode == 1, res.stderr
    rep = json.loads((tmp_path / 'e1' / 'report.json').read_text())
    assert rep['counts']['pairs'] == rep['counts']['fused'] == 0
    assert bag_main(['eval', str(bag), '--out', str(tmp_path / 'e2'), '--backend', 'maxluma',
                     '--param', 'slop:=0.035', '--quiet']) == 0
    rep = json.loads((tmp_path / 'e2' / 'report.json').read_text())
    assert rep['counts']['fused'] == 4 and rep['options']['slop'] == 0.035
    assert all(r['thermal_stamp_ns'] - r['stamp_ns'] == 30_000_000 for r in rep['frames'])


def test_truncated_mcap_keeps_outputs_and_says_where_it_stopped(tmp_path, msrs_subset):
    src = msrs_subset(6, split='val', name='val6')
    bag = make(src, tmp_path / 'bag', '--rate', '10')
    mcap = next(bag.glob('*.mcap'))
    data = mcap.read_bytes()
    mcap.write_bytes(data[:int(len(data) * 0.6)])
    out = tmp_path / 'eval'
    res = run_cli('eval', bag, '--out', out, '--backend', 'maxluma', '--quiet')
    line = one_line_error(res, 'stops', 'mcap', 'before it')
    rep = json.loads((out / 'report.json').read_text())
    assert rep['status'] == 'truncated' and 'byte' in rep['stopped']
    assert line.split('error: ')[1].startswith(rep['stopped'])
    n = rep['counts']['fused']
    assert 1 <= n < 6
    fused = read_bag(out / 'fused')['/fused/image']
    assert [stamp(m) for _, m in fused] == [r['stamp_ns'] for r in rep['frames']]
    assert 'cut short' in (out / 'report.md').read_text()


def test_truncated_sqlite_bag_is_refused_in_one_line(tmp_path, val4):
    """sqlite cannot open a cut .db3 at all (malformed): nothing to keep, one line, exit 2."""
    bag = make(val4, tmp_path / 'bag', '--storage', 'sqlite3')
    db = next(bag.glob('*.db3'))
    db.write_bytes(db.read_bytes()[:int(db.stat().st_size * 0.6)])
    out = tmp_path / 'eval'
    one_line_error(run_cli('eval', bag, '--out', out, '--backend', 'maxluma'), 'malformed',
                   str(db.name))
    assert not out.exists()


def test_bad_input_is_one_line_exit_2(tmp_path, val4):
    one_line_error(run_cli('eval', tmp_path / 'nope', '--out', tmp_path / 'o'), 'not found')
    junk = tmp_path / 'junk.db3'
    junk.write_bytes(b'SQLite format 3\x00' + b'\x17' * 3000)
    one_line_error(run_cli('eval', junk, '--out', tmp_path / 'o'), 'junk.db3')
    bag = make(val4, tmp_path / 'bag')
    one_line_error(run_cli('eval', bag, '--out', tmp_path / 'o', '--rgb-topic', '/cam'),
                   "'/cam' is not in the bag", '/rgb/image_raw')
    one_line_error(run_cli('eval', bag, '--out', tmp_path / 'o', '--param', 'slop:=9'), 'slop')
    one_line_error(run_cli('make', '--vi', val4 / 'vi', '--ir', val4 / 'ir', '--out', bag),
                   'already exists')
    one_line_error(run_cli('make', '--vi', tmp_path / 'none', '--ir', val4 / 'ir', '--out',
                           tmp_path / 'b2'), 'none')
    one_line_error(run_cli('play', bag, '--topics', '/nope'), '/nope', '/rgb/image_raw')


def test_extract_verb_is_the_extractor(tmp_path, val4):
    bag = make(val4, tmp_path / 'bag', '--thermal-encoding', 'mono16')
    assert bag_main(['extract', str(bag), '--rgb-topic', '/rgb/image_raw', '--thermal-topic',
                     '/thermal/image_raw', '--out', str(tmp_path / 'x'), '--quiet']) == 0
    assert len(list((tmp_path / 'x' / 'vi').glob('*.png'))) == 4
    ir = imaging.read_image(next((tmp_path / 'x' / 'ir').glob('*.png')), 'gray')
    assert ir.dtype == np.uint16


def test_make_play_node_record_live_eval(tmp_path, msrs_dir):
    """The replay path of make demo: real node, recorder and player processes."""
    src = msrs_dir / 'val'
    bag = tmp_path / 'bag'
    res = run_cli('make', '--vi', src / 'vi', '--ir', src / 'ir', '--out', bag, '--count', '10',
                  '--rate', '10', '--jitter-ms', '2', '--quiet')
    assert res.returncode == 0, res.stderr
    out = tmp_path / 'live'
    res = run_cli('eval', bag, '--live', '--out', out, '--boxes', src / 'boxes', '--quiet')
    assert res.returncode == 0, res.stderr + (out / 'fusion_node.log').read_text()
    rep = json.loads((out / 'report.json').read_text())
    c = rep['counts']
    # How many pairs a live node fuses depends on the machine's speed; that every pair is
    # either fused or listed with a reason does not.
    assert rep['mode'] == 'live' and c['pairs'] == 10 and c['fused'] >= 1
    assert c['fused'] + c['rgb_not_fused'] == 10 and len(rep['missing']) == c['rgb_not_fused']
    lat = rep['latency_ms']
    assert lat['count'] == c['fused'] and 0 < lat['p50'] < 2000
    d = rep['node']['diagnostics']
    assert int(d['frames_rgb']) == 10 and int(d['published']) == c['fused']
    assert rep['node']['exit_code'] == 0
    # the recorded output bag: receive time as bag time, stamps are input stamps
    rec = read_bag(out / 'recorded')
    in_stamps = {f['rgb_stamp_ns'] for f in read_frames(bag)}
    fused = rec['/fused/image']
    assert len(fused) == c['fused'] and {stamp(m) for _, m in fused} <= in_stamps
    played = {}
    for line in (out / 'play_log.csv').read_text().splitlines()[1:]:
        topic, st, t_pub = line.split(',')
        if topic == '/rgb/image_raw':
            played[int(st)] = int(t_pub)
    for t_recv, m in fused:
        assert t_recv > played[stamp(m)]
    assert rec['/diagnostics']
    for m in rep['missing']:
        assert m['reason']
    assert rep['boxes']['n_images'] == c['fused']
    assert (out / 'classes.png').stat().st_size > 1000


def test_play_with_rate_and_remap_into_record(tmp_path, val4):
    """Player and recorder as two processes: stamps kept, timing scaled, topic renamed."""
    import time

    from ssvif_ros.processes import ros_env
    bag = make(val4, tmp_path / 'bag', '--rate', '10', '--count', '8')
    env = ros_env()
    rec_bag = tmp_path / 'rec'
    rec = subprocess.Popen([sys.executable, '-m', 'ssvif_ros.bag_cli', 'record', '--out',
                            str(rec_bag), '--topics', '/cam/rgb', '/thermal/image_raw'],
                           env=env, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        play = subprocess.run([sys.executable, '-m', 'ssvif_ros.bag_cli', 'play', str(bag),
                               '--rate', '2', '--remap', '/rgb/image_raw:=/cam/rgb',
                               '--wait-subscribers', '20', '--log', str(tmp_path / 'log.csv')],
                              env=env, capture_output=True, text=True, timeout=90, cwd=REPO)
        assert play.returncode == 0, play.stderr
        assert 'published 16 messages of 16' in play.stderr
        time.sleep(1.0)
    finally:
        err = interrupt(rec)
    assert rec.returncode == 0, err
    got = read_bag(rec_bag)
    src = read_bag(bag)
    assert sorted(got) == ['/cam/rgb', '/thermal/image_raw']
    for topic, src_topic in (('/cam/rgb', '/rgb/image_raw'),
                             ('/thermal/image_raw', '/thermal/image_raw')):
        assert [stamp(m) for _, m in got[topic]] == [stamp(m) for _, m in src[src_topic]]
        np.testing.assert_array_equal(got[topic][3][1].data, src[src_topic][3][1].data)
    recv = np.array([t for t, _ in got['/cam/rgb']], np.float64)
    gaps_ms = np.diff(recv) / 1e6  # recorded at 10 Hz, played at rate 2: 50 ms apart
    assert 35 < np.median(gaps_ms) < 65, gaps_ms
    assert recv[-1] - recv[0] > 0.3e9


def test_play_loop_repeats_until_interrupted(tmp_path, val4):
    import time

    from ssvif_ros.processes import ros_env
    bag = make(val4, tmp_path / 'bag', '--rate', '10')
    env = ros_env()
    rec = subprocess.Popen([sys.executable, '-m', 'ssvif_ros.bag_cli', 'record', '--out',
                            str(tmp_path / 'rec'), '--topics', '/rgb/image_raw'],
                           env=env, stderr=subprocess.PIPE, text=True, cwd=REPO)
    play = subprocess.Popen([sys.executable, '-m', 'ssvif_ros.bag_cli', 'play', str(bag),
                             '--loop', '--rate', '4', '--topics', '/rgb/image_raw',
                             '--wait-subscribers', '20', '--log', str(tmp_path / 'log.csv')],
                            env=env, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        # Wait for published rounds, not for a fixed time: two Python processes starting and
        # discovering each other take seconds on a loaded machine. A round is 4 frames.
        deadline = time.monotonic() + 60
        log = tmp_path / 'log.csv'
        while time.monotonic() < deadline and play.poll() is None:
            if log.exists() and len(log.read_text().splitlines()) > 5 * 4:
                break
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        play_err = interrupt(play)
        time.sleep(0.5)
        rec_err = interrupt(rec)
    assert play.returncode == 130 and 'interrupted' in play_err and 'Traceback' not in play_err
    assert rec.returncode == 0, rec_err
    stamps = [stamp(m) for _, m in read_bag(tmp_path / 'rec')['/rgb/image_raw']]
    src = [stamp(m) for _, m in read_bag(bag)['/rgb/image_raw']]
    assert len(stamps) >= 3 * len(src) and set(stamps) == set(src)


def test_ctrl_c_keeps_the_fused_frames_and_writes_the_report(tmp_path, msrs_subset):
    import signal
    import time
    src = msrs_subset(12, split='val', name='val12')
    bag = make(src, tmp_path / 'bag', '--rate', '10')
    out = tmp_path / 'eval'
    proc = subprocess.Popen([sys.executable, '-m', 'ssvif_ros.bag_cli', 'eval', str(bag),
                             '--out', str(out), '--quiet'], stderr=subprocess.PIPE, text=True,
                            cwd=REPO)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out / 'fused').exists():
        time.sleep(0.05)
    time.sleep(1.0)  # a few of the 12 pairs (about 0.5 s each with the metrics)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert 'Traceback' not in err and 'interrupted by the user' in err
    rep = json.loads((out / 'report.json').read_text())
    assert rep['status'] == 'interrupted'
    fused = read_bag(out / 'fused')['/fused/image']
    assert 1 <= len(fused) == rep['counts']['fused'] < 12


def test_offline_output_keeps_input_order_when_pairs_come_faster_than_inference(tmp_path, val4):
    """At 1 kHz every pair waits for the one before it: output log times keep the input order."""
    bag = make(val4, tmp_path / 'bag', '--rate', '1000')
    out = tmp_path / 'eval'
    assert bag_main(['eval', str(bag), '--out', str(out), '--quiet']) == 0
    rep = json.loads((out / 'report.json').read_text())
    in_stamps = [stamp(m) for _, m in read_bag(bag)['/rgb/image_raw']]
    out_bag = read_bag(rep['output_bag'])
    for topic in ('/fused/image', '/fused/segmentation'):
        assert [stamp(m) for _, m in out_bag[topic]] == in_stamps


def test_make_and_eval_onto_a_full_or_read_only_disk_are_one_line(tmp_path, val4, tiny_tmpfs):
    disk, read_only = tiny_tmpfs
    err = one_line_error(run_cli('make', '--vi', val4 / 'vi', '--ir', val4 / 'ir', '--out',
                                 disk / 'bag', '--quiet'), str(disk / 'bag'),
                         'No space left on device')
    assert err.startswith('ssvif-bag make: error:'), err
    for p in list(disk.iterdir()):
        subprocess.run(['rm', '-rf', str(p)], check=True)
    bag = make(val4, tmp_path / 'bag')
    one_line_error(run_cli('eval', bag, '--out', disk / 'eval', '--backend', 'maxluma',
                           '--quiet'), str(disk / 'eval'), 'No space left on device')
    for p in list(disk.iterdir()):
        subprocess.run(['rm', '-rf', str(p)], check=True)
    read_only()
    one_line_error(run_cli('eval', bag, '--out', disk / 'eval2', '--backend', 'maxluma',
                           '--quiet'), str(disk / 'eval2'), 'Read-only file system')
    one_line_error(run_cli('make', '--vi', val4 / 'vi', '--ir', val4 / 'ir', '--out',
                           disk / 'bag2', '--quiet'), str(disk / 'bag2'),
                   'Read-only file system')
