"""Real frames: the CholecSeg8k clip into bags, and a lockstep replay through the node.

The clip (72 frames, 854 x 480, 25 fps) is read in place through the `cholec_clip` fixture;
nothing of it is copied into the repository. The node runs at 64 x 96 to stay fast on a CPU.
"""
import json
import os
from pathlib import Path

import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rostest_utils import ros_env

from dmnet_core.data.layout import read_mask
from dmnet_ros import bag_io, make_bag, replay

ENV = ros_env(domain=200 + os.getpid() % 30)
N_FRAMES, H, W = 72, 480, 854


@pytest.fixture(scope='module')
def cholec_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import SHARED_CHOLEC

    if not (SHARED_CHOLEC / 'video_pixel').is_dir():
        pytest.skip(f'shared CholecSeg8k clip absent (expected at {SHARED_CHOLEC})')
    bag = tmp_path_factory.mktemp('cholec') / 'bag'
    rc = make_bag.main([str(SHARED_CHOLEC / 'video_pixel'), '--pattern', '*_endo.png',
                        '--masks', str(SHARED_CHOLEC / 'derived_binary_instrument_masks'),
                        '--fps', '25', '--out', str(bag), '--no-progress'])
    assert rc == 0
    return bag


def test_make_bag_from_frame_folder(cholec_clip: Path, cholec_bag: Path) -> None:
    with AnyReader([cholec_bag], default_typestore=bag_io.TYPESTORE) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
        assert counts == {bag_io.IMAGE_TOPIC: N_FRAMES, bag_io.GT_TOPIC: N_FRAMES}
        conn = next(c for c in reader.connections if c.topic == bag_io.IMAGE_TOPIC)
        stamps = []
        for i, (c, _, raw) in enumerate(reader.messages(connections=[conn])):
            msg = reader.deserialize(raw, c.msgtype)
            stamps.append(bag_io.stamp_to_ns(msg.header.stamp))
            if i == 0:
                assert (msg.height, msg.width, msg.encoding, msg.step) == (H, W, 'rgb8', W * 3)
                assert msg.header.frame_id == bag_io.FRAME_ID
    # 25 fps: 40 ms between consecutive stamps.
    assert set(np.diff(stamps)) == {40_000_000}
    # The derived masks (255 = instrument) arrive as class ids 0/1, in frame order.
    masks = bag_io.read_masks(cholec_bag)
    first = read_mask(cholec_clip / 'derived_binary_instrument_masks' /
                      'frame_561_instrument_mask.png')
    np.testing.assert_array_equal(masks[0][2], (first > 0).astype(np.uint8))
    assert all(4000 <= int(m.sum()) <= 7000 for _, _, m in masks)   # ~1-1.6 % instrument


def test_make_bag_from_preprocessed_layout(cholec_clip: Path, tmp_path: Path) -> None:
    from dmnet_core.data.cholecseg import convert_cholecseg8k

    layout = tmp_path / 'layout'
    convert_cholecseg8k(cholec_clip, layout)
    seq_dir = next(p for p in layout.iterdir() if (p / 'images').is_dir())
    assert make_bag.main([str(seq_dir), '--out', str(tmp_path / 'bag'), '--storage', 'mcap',
                          '--max-frames', '5', '--no-progress']) == 0
    frames = list(bag_io.iter_frames(tmp_path / 'bag'))
    assert len(frames) == 5 and frames[0].rgb.shape == (H, W, 3)
    assert frames[1].stamp_ns - frames[0].stamp_ns == 40_000_000
    assert len(bag_io.read_masks(tmp_path / 'bag')) == 5


def test_lockstep_replay_of_the_clip(cholec_bag: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ('ROS_DOMAIN_ID', 'ROS_AUTOMATIC_DISCOVERY_RANGE', 'RMW_IMPLEMENTATION'):
        monkeypatch.setenv(key, ENV[key])
    opts = replay.ReplayOptions(bag=cholec_bag, out=tmp_path / 'report', mode='lockstep',
                                device='cpu', inference_size=(64, 96), progress=False,
                                timeout=30.0, startup_timeout=90.0)
    report = replay.run_replay(opts)
    on_disk = json.loads((tmp_path / 'report' / 'report.json').read_text())
    assert on_disk['frames_sent'] == on_disk['frames_answered'] == N_FRAMES
    assert on_disk['frames_dropped'] == 0 and on_disk['frames_unmatched'] == 0
    assert on_disk['frames_scored'] == N_FRAMES
    assert report['latency_ms']['p50'] > 0
    assert (tmp_path / 'report' / 'overlay.mp4').stat().st_size > 0
