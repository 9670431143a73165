"""sensor_msgs/Image <-> NumPy conversion: every encoding, padded rows, big-endian data, errors."""
import array

import numpy as np
import pytest

from ssvif_ros import ros_image
from ssvif_ros.ros_image import image_to_numpy, ImageFormatError, numpy_to_image

pytest.importorskip('sensor_msgs.msg', reason='sensor_msgs (ROS 2 messages) not installed')

RNG = np.random.default_rng(7)


def _sample(encoding, h=5, w=7):
    dtype, channels = ros_image.ENCODINGS[encoding]
    shape = (h, w) if channels == 1 else (h, w, channels)
    if dtype == np.float32:
        return RNG.normal(20.0, 5.0, shape).astype(np.float32)
    return RNG.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)


@pytest.mark.parametrize('encoding', list(ros_image.ENCODINGS))
@pytest.mark.parametrize('step_pad', [0, 3, 16])
@pytest.mark.parametrize('bigendian', [False, True])
def test_round_trip(encoding, step_pad, bigendian):
    img = _sample(encoding)
    row = img.shape[1] * img.dtype.itemsize * (img.shape[2] if img.ndim == 3 else 1)
    msg = numpy_to_image(img, encoding, step=row + step_pad, bigendian=bigendian)
    assert msg.step == row + step_pad
    assert len(msg.data) == msg.step * msg.height
    assert msg.is_bigendian == (1 if bigendian and img.dtype.itemsize > 1 else 0)
    out = image_to_numpy(msg)
    assert out.dtype == img.dtype and out.dtype.isnative
    np.testing.assert_array_equal(out, img)


def test_big_endian_bytes_are_really_big_endian():
    img = np.array([[0x0102, 0xA0B0]], np.uint16)
    msg = numpy_to_image(img, 'mono16', bigendian=True)
    assert bytes(msg.data) == b'\x01\x02\xa0\xb0'
    little = numpy_to_image(img, '16UC1')
    assert bytes(little.data) == b'\x02\x01\xb0\xa0' and little.is_bigendian == 0
    np.testing.assert_array_equal(image_to_numpy(msg), img)


def test_big_endian_float_written_by_hand():
    # A 2 x 2 32FC1 frame from a big-endian driver, with 4 padding bytes per row.
    vals = np.array([[21.5, -3.25], [1e-3, 300.0]], np.float32)
    rows = [vals[r].astype('>f4').tobytes() + b'\xee' * 4 for r in range(2)]

    class Msg:  # any object with the Image fields decodes
        height, width, encoding, is_bigendian, step = 2, 2, '32FC1', 1, 12
        data = array.array('B', b''.join(rows))

    np.testing.assert_array_equal(image_to_numpy(Msg()), vals)


def test_padding_bytes_are_ignored():
    img = _sample('rgb8', 4, 3)
    msg = numpy_to_image(img, 'rgb8', step=13)
    raw = np.frombuffer(msg.data, np.uint8).reshape(4, 13).copy()
    raw[:, 9:] = 255  # garbage in the padding must not leak into the image
    msg.data = array.array('B', raw.tobytes())
    np.testing.assert_array_equal(image_to_numpy(msg), img)


def test_bgr_and_alpha_to_rgb():
    rgb = _sample('rgb8')
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    np.testing.assert_array_equal(image_to_numpy(numpy_to_image(bgr, 'bgr8'), rgb=True), rgb)
    np.testing.assert_array_equal(image_to_numpy(numpy_to_image(bgr, 'bgr8')), bgr)
    alpha = RNG.integers(0, 256, rgb.shape[:2] + (1,)).astype(np.uint8)
    rgba = np.concatenate([rgb, alpha], axis=2)
    bgra = np.concatenate([bgr, alpha], axis=2)
    np.testing.assert_array_equal(image_to_numpy(numpy_to_image(rgba, 'rgba8'), rgb=True), rgb)
    np.testing.assert_array_equal(image_to_numpy(numpy_to_image(bgra, 'bgra8'), rgb=True), rgb)
    mono = _sample('mono8')
    assert image_to_numpy(numpy_to_image(mono, 'mono8'), rgb=True).shape == mono.shape


def test_copy_flag_detaches_from_message():
    img = _sample('mono8')
    msg = numpy_to_image(img, 'mono8')
    shared = image_to_numpy(msg)
    owned = image_to_numpy(msg, copy=True)
    msg.data[0] = (int(msg.data[0]) + 1) % 256
    assert shared[0, 0] == msg.data[0]
    assert owned[0, 0] == img[0, 0]


def _msg(encoding='mono8', h=4, w=6, step=None, n=None):
    class Msg:
        pass
    m = Msg()
    m.encoding, m.height, m.width, m.is_bigendian = encoding, h, w, 0
    m.step = w if step is None else step
    m.data = array.array('B', bytes(m.step * h if n is None else n))
    return m


@pytest.mark.parametrize('msg,reason,words', [
    (_msg(encoding='yuv422'), 'unsupported_encoding', 'yuv422'),
    (_msg(encoding='bayer_rggb8'), 'unsupported_encoding', 'bayer_rggb8'),
    (_msg(h=0, step=6, n=0), 'zero_size', 'zero size'),
    (_msg(w=0, step=0, n=0), 'zero_size', 'zero size'),
    (_msg(step=5), 'step_too_small', 'step 5'),
    (_msg(encoding='mono16', step=6), 'step_too_small', 'step 6'),
    (_msg(n=23), 'data_length_mismatch', 'data length 23'),
    (_msg(n=25), 'data_length_mismatch', 'data length 25'),
])
def test_bad_messages_raise_value_error_naming_the_problem(msg, reason, words):
    with pytest.raises(ValueError, match=words) as info:
        image_to_numpy(msg)
    assert isinstance(info.value, ImageFormatError) and info.value.reason == reason


@pytest.mark.parametrize('img,encoding,words', [
    (np.zeros((4, 4), np.uint16), 'mono8', 'dtype uint8'),
    (np.zeros((4, 4), np.uint8), 'rgb8', 'H x W x 3'),
    (np.zeros((4, 4, 3), np.uint8), 'mono8', 'H x W'),
    (np.zeros((0, 4, 3), np.uint8), 'rgb8', 'zero-size'),
    (np.zeros((4, 4), np.uint8), 'jpeg', 'jpeg'),
])
def test_bad_arrays_raise(img, encoding, words):
    with pytest.raises(ValueError, match=words):
        numpy_to_image(img, encoding)


def test_step_smaller_than_row_rejected_on_encode():
    with pytest.raises(ValueError, match='step 8'):
        numpy_to_image(np.zeros((2, 3, 3), np.uint8), 'rgb8', step=8)


def test_header_is_copied():
    from std_msgs.msg import Header
    h = Header(frame_id='cam')
    h.stamp.sec, h.stamp.nanosec = 12, 345
    msg = numpy_to_image(np.zeros((2, 2), np.float32), '32FC1', h)
    assert (msg.header.frame_id, msg.header.stamp.sec, msg.header.stamp.nanosec) == (
        'cam', 12, 345)
