"""ssvif-bag-extract on real bags written with rosbags (sqlite3 and mcap), synthetic and MSRS."""
import json
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import get_typestore, Stores

from ssvif_ros import imaging
from ssvif_ros.bag_extract import main
from ssvif_train.data import check_pairs, discover_pairs, PairDataset

TS = get_typestore(Stores.LATEST)
Image = TS.types['sensor_msgs/msg/Image']
CompressedImage = TS.types['sensor_msgs/msg/CompressedImage']
Header = TS.types['std_msgs/msg/Header']
Time = TS.types['builtin_interfaces/msg/Time']
String = TS.types['std_msgs/msg/String']

REPO = Path(__file__).resolve().parents[1]
IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED = 'sensor_msgs/msg/CompressedImage'
RGB_TOPIC, TH_TOPIC = '/rgb/image_raw', '/thermal/image_raw'
T0 = 1_700_000_000 * 10**9          # first RGB header stamp [ns]
PERIOD = 100_000_000                # 10 Hz
H, W = 24, 32
MISSING_THERMAL, BAD_RGB = 3, 5     # frame indices of the synthetic sequence
N = 8


def _header(stamp):
    return Header(stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id='cam')


def image_msg(img, encoding, stamp, step=None, bigendian=False):
    """A rosbags sensor_msgs/Image built by hand (row padding and byte order as a driver would)."""
    img = np.asarray(img)
    h, w = img.shape[:2]
    body = np.ascontiguousarray(img, img.dtype.newbyteorder('>' if bigendian else '<'))
    rows = body.reshape(h, -1).view(np.uint8)  # h x row_bytes
    step = rows.shape[1] if step is None else step
    data = np.zeros((h, step), np.uint8)
    data[:, :rows.shape[1]] = rows
    return Image(header=_header(stamp), height=h, width=w, encoding=encoding,
                 is_bigendian=int(bigendian), step=step, data=data.reshape(-1))


def compressed_msg(rgb, stamp):
    """PNG (lossless) CompressedImage of an RGB array."""
    import cv2
    ok, buf = cv2.imencode('.png', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return CompressedImage(header=_header(stamp), format='rgb8; png compressed bgr8',
                           data=buf.reshape(-1))


def write_bag(path, topics, storage='sqlite3'):
    """``topics``: {topic: (msgtype, [(bag_time_ns, msg), ...])}; written in bag-time order."""
    plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        conns = {t: writer.add_connection(t, typ, typestore=TS) for t, (typ, _) in topics.items()}
        records = sorted((t_bag, topic, msg) for topic, (typ, frames) in topics.items()
                         for t_bag, msg in frames)
        for t_bag, topic, msg in records:
            writer.write(conns[topic], t_bag, TS.serialize_cdr(msg, topics[topic][0]))
    return path


def thermal_sample(rng, encoding):
    if encoding == 'mono8':
        return rng.integers(0, 255, (H, W), endpoint=True).astype(np.uint8)
    if encoding == 'mono16':
        return rng.integers(0, 65535, (H, W), endpoint=True).astype(np.uint16)
    return (270.0 + 40.0 * rng.random((H, W))).astype(np.float32)  # kelvin


def synthetic(rgb_enc, th_enc, seed=0, nan_frame=None, compressed=False, corrupt=None):
    """Eight RGB frames at 10 Hz and thermal frames 3-4 ms off, arriving 30 ms late.

    Thermal frame 3 is missing, RGB frame 5 has the unsupported encoding yuv422. Returns the
    bag topics and the expected pairs {rgb stamp: (rgb H x W x 3, thermal H x W)}.
    """
    rng = np.random.default_rng(seed)
    rgb_frames, th_frames, expected = [], [], {}
    for i in range(N):
        t_rgb = T0 + i * PERIOD
        t_th = t_rgb + (3_000_000 if i % 2 == 0 else -4_000_000)
        rgb = rng.integers(0, 255, (H, W, 3), endpoint=True).astype(np.uint8)
        th = thermal_sample(rng, th_enc)
        if th_enc == '32FC1' and i == nan_frame:
            th[2, 3] = np.nan
        if compressed:
            msg = compressed_msg(rgb, t_rgb)
            if i == corrupt:
                msg = CompressedImage(header=_header(t_rgb), format='png',
                                      data=np.frombuffer(b'not a png at all', np.uint8))
        elif i == BAD_RGB:
            msg = image_msg(rgb, 'rgb8', t_rgb)
            msg.encoding = 'yuv422'
        else:
            msg = image_msg(rgb if rgb_enc == 'rgb8' else rgb[:, :, ::-1], rgb_enc, t_rgb,
                            step=W * 3 + (8 if i == 1 else 0))
        rgb_frames.append((t_rgb + 2_000_000, msg))
        if i != MISSING_THERMAL:
            # frame 2 of 16-bit data: big-endian with padded rows, as some drivers send
            big = th.dtype.itemsize > 1 and i == 2
            th_frames.append((t_th + 30_000_000, image_msg(
                th, th_enc, t_th, step=W * th.dtype.itemsize + (6 if big else 0), bigendian=big)))
        if (i != MISSING_THERMAL and (compressed or i != BAD_RGB) and i != nan_frame
                and i != corrupt):
            expected[t_rgb] = (rgb, th)
    topics = {RGB_TOPIC: (COMPRESSED if compressed else IMAGE, rgb_frames),
              TH_TOPIC: (IMAGE, th_frames)}
    return topics, expected


def extract(bag, out, *extra):
    return main([str(bag), '--rgb-topic', RGB_TOPIC, '--thermal-topic', TH_TOPIC,
                 '--out', str(out), '--quiet', *extra])


def report(out):
    return json.loads((Path(out) / 'extract.json').read_text())


def stems(folder):
    return sorted(p.stem for p in Path(folder).iterdir())


@pytest.mark.parametrize('rgb_enc,th_enc,storage', [
    ('rgb8', 'mono16', 'sqlite3'),
    ('bgr8', 'mono8', 'mcap'),
    ('rgb8', '32FC1', 'sqlite3'),
])
def test_synthetic_pairs_equal_the_source_pixels(tmp_path, rgb_enc, th_enc, storage):
    nan_frame = 6 if th_enc == '32FC1' else None
    topics, expected = synthetic(rgb_enc, th_enc, nan_frame=nan_frame)
    bag = write_bag(tmp_path / 'bag', topics, storage)
    out = tmp_path / 'out'
    assert extract(bag, out) == 0

    names = [str(t) for t in sorted(expected)]
    assert stems(out / 'vi') == names and stems(out / 'ir') == names
    ext = '.tiff' if th_enc == '32FC1' else '.png'
    for stamp, (rgb, th) in expected.items():
        vi = imaging.read_image(out / 'vi' / f'{stamp}.png')
        ir = imaging.read_image(out / 'ir' / f'{stamp}{ext}')
        assert vi.dtype == np.uint8
        np.testing.assert_array_equal(vi, rgb)
        assert ir.dtype == th.dtype and ir.shape == (H, W)
        np.testing.assert_array_equal(ir, th)
    assert not (out / '.extract-staging').exists()

    rep = report(out)
    c = rep['counts']
    assert rep['status'] == 'complete' and rep['error'] is None
    assert rep['topics']['rgb'] == {'topic': RGB_TOPIC, 'type': IMAGE, 'messages_in_bag': N}
    assert rep['topics']['thermal']['messages_in_bag'] == N - 1
    assert c['messages'] == {'rgb': N, 'thermal': N - 1}
    assert c['pairs'] == N - 2 and c['kept'] == len(expected) and c['skipped_every'] == 0
    # RGB 3 had no thermal partner, thermal 5 lost its RGB partner (bad encoding)
    assert c['dropped'] == {'rgb.superseded': 1, 'thermal.superseded': 1}
    failures = {'rgb.unsupported_encoding': 1}
    if nan_frame is not None:
        failures['thermal.non_finite'] = 1
    assert c['conversion_failures'] == failures
    assert {e['reason'] for e in rep['failure_examples']} == set(failures)
    kind = {'mono8': 'png8', 'mono16': 'png16', '32FC1': 'tiff_float32'}[th_enc]
    assert rep['thermal_files'] == {kind: len(expected)}

    # the training data loader reads the folders as they are
    found = discover_pairs(vi=str(out / 'vi'), ir=str(out / 'ir'))
    assert [p.stem for p in found.pairs] == names and not found.vi_only and not found.ir_only
    check_pairs(found.pairs)  # the header check ssvif-train runs first (PIL reads float TIFF)
    ds = PairDataset(found.pairs, crop=0, train=False)
    vis, ir, _ = ds[0]
    assert tuple(vis.shape) == (3, H, W) and tuple(ir.shape) == (3, H, W)
    assert 0.0 <= float(ir.min()) and float(ir.max()) <= 1.0 and float(ir.max()) > 0.5


def test_every_max_pairs_and_time_window(tmp_path):
    topics, expected = synthetic('rgb8', 'mono8', seed=1)
    bag = write_bag(tmp_path / 'bag', topics)
    order = sorted(expected)  # RGB frames 0, 1, 2, 4, 6, 7

    assert extract(bag, tmp_path / 'every', '--every', '2') == 0
    assert stems(tmp_path / 'every' / 'vi') == [str(order[k]) for k in (0, 2, 4)]
    c = report(tmp_path / 'every')['counts']
    assert (c['pairs'], c['kept'], c['skipped_every']) == (6, 3, 3)

    assert extract(bag, tmp_path / 'max', '--max-pairs', '2') == 0
    rep = report(tmp_path / 'max')
    assert rep['status'] == 'max_pairs' and rep['counts']['kept'] == 2
    assert stems(tmp_path / 'max' / 'ir') == [str(t) for t in order[:2]]

    # bag starts with RGB 0 (recorded 2 ms after its stamp); [0.25 s, 0.55 s) holds RGB 3, 4, 5
    # and thermal 4, 5: only RGB 4 + thermal 4 is a pair (RGB 5 is the bad frame)
    assert extract(bag, tmp_path / 'win', '--start', '0.25', '--end', '0.55') == 0
    c = report(tmp_path / 'win')['counts']
    assert c['messages'] == {'rgb': 3, 'thermal': 2}
    assert stems(tmp_path / 'win' / 'vi') == [str(T0 + 4 * PERIOD)]


def test_slop_is_inclusive_like_the_node(tmp_path):
    topics, expected = synthetic('rgb8', 'mono8', seed=2)
    bag = write_bag(tmp_path / 'bag', topics)
    # thermal is 3 ms late on even frames and 4 ms early on odd ones
    assert extract(bag, tmp_path / 'a', '--slop', '0.003') == 0
    even = [str(t) for t in sorted(expected) if (t - T0) // PERIOD % 2 == 0]
    assert stems(tmp_path / 'a' / 'vi') == even
    assert extract(bag, tmp_path / 'b', '--slop', '0.002') == 2
    rep = report(tmp_path / 'b')
    assert rep['status'] == 'no_pairs' and 'slop' in rep['error']
    assert rep['counts']['dropped']['rgb.queue_overflow'] > 0


def test_compressed_rgb_topic(tmp_path):
    topics, expected = synthetic('rgb8', 'mono16', seed=3, compressed=True, corrupt=4)
    bag = write_bag(tmp_path / 'bag', topics, 'mcap')
    out = tmp_path / 'out'
    assert extract(bag, out) == 0
    assert stems(out / 'vi') == [str(t) for t in sorted(expected)]
    for stamp, (rgb, th) in expected.items():
        np.testing.assert_array_equal(imaging.read_image(out / 'vi' / f'{stamp}.png'), rgb)
        np.testing.assert_array_equal(imaging.read_image(out / 'ir' / f'{stamp}.png'), th)
    rep = report(out)
    assert rep['topics']['rgb']['type'] == COMPRESSED
    assert rep['counts']['conversion_failures'] == {'rgb.decode_failed': 1}
    assert rep['counts']['pairs'] == N - 1 and rep['counts']['kept'] == N - 2


def test_real_msrs_frames(tmp_path, msrs_dir):
    names = sorted(p.name for p in (msrs_dir / 'val' / 'vi').iterdir())[:3]
    rgb_frames, th_frames, expected = [], [], {}
    for i, name in enumerate(names):
        vi = imaging.read_image(msrs_dir / 'val' / 'vi' / name, mode='rgb')  # 480 x 640 x 3
        ir = imaging.read_image(msrs_dir / 'val' / 'ir' / name, mode='gray')  # 480 x 640 uint8
        ir16 = ir.astype(np.uint16) * 257  # as a 16-bit camera would send it
        t = T0 + i * PERIOD
        rgb_frames.append((t + 1_000_000, image_msg(vi[:, :, ::-1], 'bgr8', t)))
        th_frames.append((t + 20_000_000, image_msg(ir16, 'mono16', t + 5_000_000)))
        expected[t] = (vi, ir16)
    bag = write_bag(tmp_path / 'msrs_bag', {RGB_TOPIC: (IMAGE, rgb_frames),
                                            TH_TOPIC: (IMAGE, th_frames)}, 'mcap')
    out = tmp_path / 'out'
    assert extract(bag, out) == 0
    for t, (vi, ir16) in expected.items():
        np.testing.assert_array_equal(imaging.read_image(out / 'vi' / f'{t}.png'), vi)
        got = imaging.read_image(out / 'ir' / f'{t}.png')
        assert got.dtype == np.uint16
        np.testing.assert_array_equal(got, ir16)
    assert report(out)['sizes'] == {'rgb': {'640x480': 3}, 'thermal': {'640x480': 3}}
    found = discover_pairs(vi=str(out / 'vi'), ir=str(out / 'ir'))
    vis, ir, _ = PairDataset(found.pairs, crop=160, train=True)[2]
    assert tuple(vis.shape) == (3, 160, 160) and tuple(ir.shape) == (3, 160, 160)


def test_ros1_bag(tmp_path):
    from rosbags.rosbag1 import Writer as Writer1
    ts1 = get_typestore(Stores.ROS1_NOETIC)
    image1, header1 = ts1.types[IMAGE], ts1.types['std_msgs/msg/Header']
    rng = np.random.default_rng(8)
    expected = {}
    with Writer1(tmp_path / 'rec.bag') as writer:
        c_rgb = writer.add_connection(RGB_TOPIC, IMAGE, typestore=ts1)
        c_th = writer.add_connection(TH_TOPIC, IMAGE, typestore=ts1)
        for i in range(3):
            t = T0 + i * PERIOD
            rgb = rng.integers(0, 255, (H, W, 3), endpoint=True).astype(np.uint8)
            th = rng.integers(0, 65535, (H, W), endpoint=True).astype(np.uint16)
            for conn, img, enc in ((c_rgb, rgb, 'rgb8'), (c_th, th, 'mono16')):
                m = image_msg(img, enc, t)
                m1 = image1(header=header1(seq=i, stamp=m.header.stamp, frame_id='cam'),
                            height=m.height, width=m.width, encoding=m.encoding,
                            is_bigendian=m.is_bigendian, step=m.step, data=m.data)
                writer.write(conn, t + 1_000_000, ts1.serialize_ros1(m1, IMAGE))
            expected[t] = (rgb, th)
    out = tmp_path / 'out'
    assert extract(tmp_path / 'rec.bag', out) == 0
    for t, (rgb, th) in expected.items():
        np.testing.assert_array_equal(imaging.read_image(out / 'vi' / f'{t}.png'), rgb)
        np.testing.assert_array_equal(imaging.read_image(out / 'ir' / f'{t}.png'), th)


def test_bad_input_exits_2_naming_the_problem(tmp_path, capsys):
    topics, _ = synthetic('rgb8', 'mono8', seed=4)
    topics['/chatter'] = ('std_msgs/msg/String', [(T0, String(data='hi'))])
    topics['/thermal/compressed'] = (COMPRESSED, [(T0, compressed_msg(
        np.zeros((H, W, 3), np.uint8), T0))])
    bag = write_bag(tmp_path / 'bag', topics)

    missing = tmp_path / 'no_such_bag'
    assert main([str(missing), '--rgb-topic', RGB_TOPIC, '--thermal-topic', TH_TOPIC,
                 '--out', str(tmp_path / 'o1')]) == 2
    assert f'bag not found: {missing}' in capsys.readouterr().err
    assert not (tmp_path / 'o1').exists()

    broken = tmp_path / 'broken_bag'
    broken.mkdir()
    (broken / 'metadata.yaml').write_text('rosbag2_bagfile_information: [not, a, bag]\n')
    assert extract(broken, tmp_path / 'o0') == 2
    assert f'cannot read bag {broken}' in capsys.readouterr().err

    assert main([str(bag), '--rgb-topic', RGB_TOPIC, '--thermal-topic', '/flir/image',
                 '--out', str(tmp_path / 'o2')]) == 2
    err = capsys.readouterr().err
    assert "thermal topic '/flir/image' is not in the bag" in err
    assert f'{RGB_TOPIC} (sensor_msgs/msg/Image, {N} msgs)' in err
    assert '/chatter (std_msgs/msg/String, 1 msgs)' in err
    assert not (tmp_path / 'o2').exists()

    assert main([str(bag), '--rgb-topic', RGB_TOPIC, '--thermal-topic', '/chatter',
                 '--out', str(tmp_path / 'o3')]) == 2
    err = capsys.readouterr().err
    assert "'/chatter' has type std_msgs/msg/String, expected sensor_msgs/msg/Image" in err

    assert main([str(bag), '--rgb-topic', RGB_TOPIC, '--thermal-topic', '/thermal/compressed',
                 '--out', str(tmp_path / 'o4')]) == 2
    assert 'compressed thermal images lose the measured values' in capsys.readouterr().err

    # every thermal frame has a colour encoding: nothing usable
    bad = {RGB_TOPIC: topics[RGB_TOPIC],
           TH_TOPIC: (IMAGE, [(t, image_msg(np.zeros((H, W, 3), np.uint8), 'rgb8', t - 30_000_000))
                              for t, _ in topics[TH_TOPIC][1]])}
    bad_bag = write_bag(tmp_path / 'bad_bag', bad)
    assert extract(bad_bag, tmp_path / 'o5') == 2
    err = capsys.readouterr().err
    assert 'no pair written' in err and 'thermal.unsupported_encoding: 7' in err
    rep = report(tmp_path / 'o5')
    assert rep['status'] == 'no_pairs' and rep['counts']['kept'] == 0
    assert rep['counts']['conversion_failures'] == {'rgb.unsupported_encoding': 1,
                                                    'thermal.unsupported_encoding': N - 1}


def test_output_folder_is_never_mixed_silently(tmp_path, capsys):
    topics, expected = synthetic('rgb8', 'mono8', seed=5)
    bag = write_bag(tmp_path / 'bag', topics)
    out = tmp_path / 'out'
    assert extract(bag, out, '--max-pairs', '2') == 0
    assert extract(bag, out) == 2
    assert 'already holds 4 images' in capsys.readouterr().err
    assert stems(out / 'vi') == [str(t) for t in sorted(expected)[:2]]

    assert extract(bag, out, '--append') == 0
    rep = report(out)
    assert rep['counts']['kept'] == len(expected) - 2 and rep['counts']['skipped_existing'] == 2
    assert [r['status'] for r in rep['previous_runs']] == ['max_pairs']
    assert stems(out / 'vi') == stems(out / 'ir') == [str(t) for t in sorted(expected)]


def test_cli_runs_without_ros(tmp_path):
    topics, expected = synthetic('bgr8', 'mono16', seed=6)
    bag = write_bag(tmp_path / 'bag', topics)
    code = ('import sys\nfrom ssvif_ros.bag_extract import main\n'
            f'rc = main([{str(bag)!r}, "--rgb-topic", {RGB_TOPIC!r}, "--thermal-topic", '
            f'{TH_TOPIC!r}, "--out", {str(tmp_path / "out")!r}])\n'
            'print(rc, any(m.split(".")[0] in ("rclpy", "sensor_msgs") for m in sys.modules))')
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert res.stdout.split() == ['0', 'False'], res.stderr
    assert f'{len(expected)} pairs written' in res.stderr
    assert 'ssvif-bag-extract' in res.stderr  # progress bar and summary on stderr
