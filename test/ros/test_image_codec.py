"""Image <-> numpy conversion round trips with no ROS graph (numpy path; cv_bridge if installed)."""
import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from dmnet_ros import image_codec as ic


@pytest.fixture
def rgb() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)


def _header() -> Header:
    h = Header(frame_id='endoscope_left')
    h.stamp.sec, h.stamp.nanosec = 1234, 567
    return h


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'rgba8', 'bgra8', '8UC3', '8UC4'])
@pytest.mark.parametrize('pad', [0, 5])
def test_colour_round_trip(rgb, encoding, pad):
    ch = ic.channels_of(encoding)
    msg = ic.rgb_to_image(rgb, encoding, _header(), step=rgb.shape[1] * ch + pad)
    assert msg.step == rgb.shape[1] * ch + pad
    assert len(msg.data) == msg.height * msg.step
    out = ic.image_to_rgb(msg)
    assert out.shape == rgb.shape and out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgb)
    assert msg.header.frame_id == 'endoscope_left' and msg.header.stamp.sec == 1234


def test_channel_order_is_honoured():
    # One pure red pixel, stored as each encoding would on the wire.
    wire = {'rgb8': [255, 0, 0], 'bgr8': [0, 0, 255], 'rgba8': [255, 0, 0, 7],
            'bgra8': [0, 0, 255, 7], '8UC3': [0, 0, 255]}
    for enc, px in wire.items():
        msg = Image(height=1, width=1, encoding=enc, step=len(px), data=bytes(px))
        np.testing.assert_array_equal(ic.image_to_rgb(msg)[0, 0], [255, 0, 0], err_msg=enc)


@pytest.mark.parametrize('encoding', ['mono8', '8UC1'])
def test_mono_with_padding(encoding):
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    msg = ic.array_to_image(grey, encoding, step=8)
    assert bytes(msg.data)[4:8] == b'\0\0\0\0'     # the padding is really there
    out = ic.image_to_rgb(msg)
    assert out.shape == (3, 4, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], grey)
    np.testing.assert_array_equal(ic.image_to_array(msg), grey)


def test_big_endian_flag_is_ignored_for_8_bit(rgb):
    msg = ic.rgb_to_image(rgb, 'rgb8')
    msg.is_bigendian = 1
    np.testing.assert_array_equal(ic.image_to_rgb(msg), rgb)


def test_mask_to_image_keeps_header():
    mask = np.array([[0, 1], [2, 3]], dtype=np.uint8)
    msg = ic.mask_to_image(mask, _header())
    assert msg.encoding == 'mono8' and (msg.height, msg.width, msg.step) == (2, 2, 2)
    assert bytes(msg.data) == bytes([0, 1, 2, 3])
    assert msg.header.stamp.nanosec == 567
    with pytest.raises(ValueError, match='H x W uint8'):
        ic.mask_to_image(mask.astype(np.int32), _header())


def _bad(**kw) -> Image:
    msg = Image(height=2, width=3, encoding='rgb8', step=9, data=bytes(18))
    for k, v in kw.items():
        setattr(msg, k, v)
    return msg


@pytest.mark.parametrize('kw, pattern', [
    ({'encoding': 'mono16'}, "unsupported encoding 'mono16'"),
    ({'encoding': 'bayer_rggb8'}, 'unsupported encoding'),
    ({'encoding': ''}, 'unsupported encoding'),
    ({'data': bytes(17)}, r'data length 17 != height\*step'),
    ({'data': bytes(19)}, r'data length 19 != height\*step'),
    ({'height': 0, 'data': b''}, 'zero-size'),
    ({'width': 0}, 'zero-size'),
    ({'step': 8, 'data': bytes(16)}, 'step 8 smaller than width'),
    ({'height': 9000, 'step': 9, 'data': bytes(81000)}, 'larger than'),
])
def test_bad_images_raise_named_errors(kw, pattern):
    msg = _bad(**kw)
    with pytest.raises(ic.ImageDecodeError, match=pattern):
        ic.validate_image(msg)
    with pytest.raises(ValueError, match=pattern):  # ImageDecodeError is a ValueError
        ic.image_to_rgb(msg)


def test_good_reference_message_is_valid():
    ic.validate_image(_bad())
    assert ic.image_to_rgb(_bad()).shape == (2, 3, 3)


@pytest.mark.parametrize('fmt', ['png', 'jpeg'])
def test_compressed_round_trip(fmt):
    # Smooth content so that jpeg stays close.
    yy, xx = np.mgrid[0:32, 0:40]
    rgb = np.stack([yy * 8, xx * 6, 255 - yy * 8], axis=-1).astype(np.uint8)
    msg = ic.rgb_to_compressed(rgb, fmt, _header())
    assert isinstance(msg, CompressedImage) and msg.format == fmt
    out = ic.compressed_to_rgb(msg)
    assert out.shape == rgb.shape
    err = np.abs(out.astype(int) - rgb.astype(int)).mean()
    assert err == 0 if fmt == 'png' else err < 6


def test_compressed_format_with_ros_prefix_is_accepted():
    rgb = np.full((4, 4, 3), 90, np.uint8)
    msg = ic.rgb_to_compressed(rgb, 'png')
    msg.format = 'rgb8; png compressed bgr8'    # what image_transport writes
    np.testing.assert_array_equal(ic.compressed_to_rgb(msg), rgb)


@pytest.mark.parametrize('fmt, data, pattern', [
    ('tiff', b'abc', 'unsupported compressed format'),
    ('jpeg', b'', 'no data'),
    ('jpeg', b'\xff\xd8garbage', 'could not decode'),
])
def test_bad_compressed(fmt, data, pattern):
    msg = CompressedImage(format=fmt, data=data)
    with pytest.raises(ic.ImageDecodeError, match=pattern):
        ic.compressed_to_rgb(msg)


def test_array_to_image_rejects_mismatch():
    with pytest.raises(ValueError, match='does not fit rgb8'):
        ic.array_to_image(np.zeros((2, 2), np.uint8), 'rgb8')
    with pytest.raises(ValueError, match='step 1 smaller'):
        ic.array_to_image(np.zeros((2, 2), np.uint8), 'mono8', step=1)
    with pytest.raises(ic.ImageDecodeError, match='unsupported encoding'):
        ic.rgb_to_image(np.zeros((2, 2, 3), np.uint8), '16UC1')


def test_decode_image_numpy_path_matches(rgb):
    msg = ic.rgb_to_image(rgb, 'bgr8')
    np.testing.assert_array_equal(ic.decode_image(msg, use_cv_bridge=False), rgb)


@pytest.mark.skipif(not ic.HAVE_CV_BRIDGE, reason='cv_bridge is not installed here '
                    '(only in a full ROS 2 install); the numpy path is tested above')
@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8'])
def test_cv_bridge_path_matches_numpy(rgb, encoding):
    msg = ic.rgb_to_image(rgb, encoding, step=rgb.shape[1] * ic.channels_of(encoding) + 3)
    np.testing.assert_array_equal(ic.image_to_rgb_bridge(msg), ic.image_to_rgb(msg))


def test_large_frame_is_fast_enough():
    # A 1080p bgr8 frame with padding converts with one copy (guards against per-pixel loops).
    rgb = np.zeros((1080, 1920, 3), np.uint8)
    rgb[::7, ::5] = (10, 200, 30)
    msg = ic.rgb_to_image(rgb, 'bgr8', step=1920 * 3 + 64)
    out = ic.image_to_rgb(msg)
    np.testing.assert_array_equal(out, rgb)
    assert cv2.countNonZero(out[:, :, 1]) == cv2.countNonZero(rgb[:, :, 1])


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', '8UC3'])
@pytest.mark.parametrize('pad', [0, 5])
def test_image_view_shares_the_message_buffer(rgb, encoding, pad):
    msg = ic.rgb_to_image(rgb, encoding, _header(), step=rgb.shape[1] * 3 + pad)
    view, is_bgr = ic.image_view(msg)
    assert is_bgr == (encoding != 'rgb8')
    np.testing.assert_array_equal(view[:, :, ::-1] if is_bgr else view, rgb)
    assert np.shares_memory(view, np.frombuffer(msg.data, np.uint8))     # no copy
    msg.data[0] ^= 0xFF                                  # the view sees the message's bytes
    assert view[0, 0, 0] == msg.data[0]


@pytest.mark.parametrize('encoding', ['rgba8', 'bgra8', 'mono8'])
def test_image_view_leaves_other_encodings_to_decode(rgb, encoding):
    assert ic.image_view(ic.rgb_to_image(rgb, encoding)) is None
    with pytest.raises(ic.ImageDecodeError, match='data length'):
        bad = ic.rgb_to_image(rgb, 'rgb8')
        bad.data = bad.data[:-1]
        ic.image_view(bad)
