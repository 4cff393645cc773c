"""bag_io: rosbags round trips, Image <-> numpy for bag messages, clear errors (no ROS graph)."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from dmnet_ros import bag_io

H, W = 24, 40
T0 = 1_700_000_000 * 10**9


def _rgb(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _write(path: Path, storage: str = 'sqlite3', n: int = 3, gt: bool = True) -> list:
    frames = [(_rgb(i), (np.arange(H * W).reshape(H, W) % (i + 2)).astype(np.uint8))
              for i in range(n)]
    with bag_io.BagWriter(path, storage, {'dmnet.sequence': 'unit'}) as bag:
        for i, (rgb, mask) in enumerate(frames):
            stamp = T0 + i * 40_000_000
            bag.write(bag_io.IMAGE_TOPIC, bag_io.rgb_to_msg(rgb, stamp), stamp)
            if gt:
                bag.write(bag_io.GT_TOPIC, bag_io.mask_to_msg(mask, stamp), stamp)
    return frames


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
def test_round_trip_both_storages(tmp_path: Path, storage: str) -> None:
    frames = _write(tmp_path / 'bag', storage)
    meta = yaml.safe_load((tmp_path / 'bag' / 'metadata.yaml').read_text())
    info_yaml = meta['rosbag2_bagfile_information']
    # Version 8: QoS as a string (Humble and Jazzy both parse it).
    assert info_yaml['version'] == bag_io.BAG_VERSION == 8
    assert info_yaml['storage_identifier'] == storage
    info = bag_io.inspect_bag(tmp_path / 'bag')
    assert info.image_count == 3 and info.gt_topic == bag_io.GT_TOPIC
    assert info.custom['dmnet.sequence'] == 'unit'
    got = list(bag_io.iter_frames(tmp_path / 'bag'))
    assert [f.stamp_ns for f in got] == [T0 + i * 40_000_000 for i in range(3)]
    assert [f.log_ns for f in got] == [f.stamp_ns for f in got]
    for (rgb, _), f in zip(frames, got):
        np.testing.assert_array_equal(f.rgb, rgb)
    masks = bag_io.read_masks(tmp_path / 'bag')
    assert [m[0] for m in masks] == [f.stamp_ns for f in got]
    for (_, mask), (_, _, m) in zip(frames, masks):
        np.testing.assert_array_equal(m, mask)


def test_bare_storage_file_is_readable(tmp_path: Path) -> None:
    _write(tmp_path / 'bag', 'mcap', n=2, gt=False)
    info = bag_io.inspect_bag(tmp_path / 'bag' / 'bag.mcap')
    assert info.image_count == 2 and info.gt_topic is None


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8'])
def test_encodings_and_step_padding(encoding: str) -> None:
    rgb = _rgb(7)
    conv = {'rgb8': None, 'bgr8': cv2.COLOR_RGB2BGR, 'rgba8': cv2.COLOR_RGB2RGBA,
            'bgra8': cv2.COLOR_RGB2BGRA, 'mono8': cv2.COLOR_RGB2GRAY}[encoding]
    arr = rgb if conv is None else cv2.cvtColor(rgb, conv)
    ch = 1 if arr.ndim == 2 else arr.shape[2]
    # Rows padded by 8 bytes, as some camera drivers do.
    padded = np.zeros((H, W * ch + 8), dtype=np.uint8)
    padded[:, :W * ch] = arr.reshape(H, -1)
    msg = bag_io.array_to_msg(arr, encoding, T0)
    msg.step, msg.data = W * ch + 8, padded.reshape(-1)
    out = bag_io.msg_to_rgb(msg)
    expect = cv2.cvtColor(arr, cv2.COLOR_GRAY2RGB) if encoding == 'mono8' else rgb
    np.testing.assert_array_equal(out, expect)


def test_compressed_image_decodes() -> None:
    rgb = _rgb(3)
    ok, buf = cv2.imencode('.png', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    ts = bag_io.TYPESTORE.types
    msg = ts[bag_io.COMPRESSED_TYPE](header=bag_io._header(T0, 'cam'), format='png',
                                     data=buf.reshape(-1))
    np.testing.assert_array_equal(bag_io.msg_to_rgb(msg), rgb)


def test_malformed_messages_are_named() -> None:
    msg = bag_io.rgb_to_msg(_rgb(1), T0)
    msg.data = msg.data[:-5]
    with pytest.raises(bag_io.BagError, match='malformed image'):
        bag_io.msg_to_rgb(msg, '/cam')
    msg = bag_io.array_to_msg(np.zeros((H, W), np.uint16).view(np.uint8), '16UC1', T0)
    with pytest.raises(bag_io.BagError, match="unsupported image encoding '16UC1'"):
        bag_io.msg_to_rgb(msg)
    with pytest.raises(bag_io.BagError, match='must be mono8'):
        bag_io.msg_to_mask(bag_io.rgb_to_msg(_rgb(1), T0), '/gt')


def test_missing_bag(tmp_path: Path) -> None:
    with pytest.raises(bag_io.BagError, match=f'bag not found: {tmp_path / "nope"}'):
        bag_io.inspect_bag(tmp_path / 'nope')


def test_corrupt_bags(tmp_path: Path) -> None:
    (tmp_path / 'empty_dir').mkdir()
    with pytest.raises(bag_io.BagError, match='no metadata.yaml'):
        bag_io.inspect_bag(tmp_path / 'empty_dir')
    # A real bag whose database was overwritten with junk.
    _write(tmp_path / 'bag', n=2)
    (tmp_path / 'bag' / 'bag.db3').write_bytes(b'this is not sqlite' * 100)
    with pytest.raises(bag_io.BagError, match=f'cannot read bag {tmp_path / "bag"}'):
        bag_io.inspect_bag(tmp_path / 'bag')
    # Broken metadata.
    _write(tmp_path / 'bag2', n=1)
    (tmp_path / 'bag2' / 'metadata.yaml').write_text('rosbag2_bagfile_information: [oops')
    with pytest.raises(bag_io.BagError, match='cannot read bag'):
        bag_io.inspect_bag(tmp_path / 'bag2')
    junk = tmp_path / 'junk.mcap'
    junk.write_bytes(b'\x00' * 64)
    with pytest.raises(bag_io.BagError, match='cannot read bag'):
        bag_io.inspect_bag(junk)


def test_no_image_topic_lists_topics(tmp_path: Path) -> None:
    ts = get_typestore(Stores.ROS2_JAZZY)
    with Writer(tmp_path / 'bag', version=9) as w:
        conn = w.add_connection('/chatter', 'std_msgs/msg/String', typestore=ts)
        w.write(conn, T0, ts.serialize_cdr(ts.types['std_msgs/msg/String'](data='hi'),
                                           'std_msgs/msg/String'))
    with pytest.raises(bag_io.BagError) as err:
        bag_io.inspect_bag(tmp_path / 'bag')
    text = str(err.value)
    assert '/endoscope/image_raw' in text and '/chatter [std_msgs/msg/String]' in text
    # The topic exists but has the wrong type.
    with pytest.raises(bag_io.BagError, match='not one of'):
        bag_io.inspect_bag(tmp_path / 'bag', image_topic='/chatter')


def test_bag_writer_refuses_existing_and_unknown_storage(tmp_path: Path) -> None:
    with pytest.raises(FileExistsError, match=str(tmp_path)):
        bag_io.BagWriter(tmp_path)
    with pytest.raises(ValueError, match='unknown storage'):
        bag_io.BagWriter(tmp_path / 'x', storage='rosbag1')


def test_reads_foreign_v9_bag(tmp_path: Path) -> None:
    """A Jazzy-style bag (version 9, mcap) written straight with rosbags, bgr8 frames."""
    ts = get_typestore(Stores.ROS2_JAZZY)
    img_t = ts.types['sensor_msgs/msg/Image']
    with Writer(tmp_path / 'bag', version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conn = w.add_connection('/cam', 'sensor_msgs/msg/Image', typestore=ts)
        bgr = cv2.cvtColor(_rgb(5), cv2.COLOR_RGB2BGR)
        hdr = ts.types['std_msgs/msg/Header'](
            stamp=ts.types['builtin_interfaces/msg/Time'](sec=5, nanosec=7), frame_id='c')
        msg = img_t(header=hdr, height=H, width=W, encoding='bgr8', is_bigendian=0,
                    step=W * 3, data=bgr.reshape(-1))
        w.write(conn, T0, ts.serialize_cdr(msg, 'sensor_msgs/msg/Image'))
    (frame,) = list(bag_io.iter_frames(tmp_path / 'bag', '/cam'))
    assert frame.stamp_ns == 5 * 10**9 + 7 and frame.log_ns == T0
    np.testing.assert_array_equal(frame.rgb, _rgb(5))
