"""make_bag: every source kind to a bag, stamps at the frame rate, masks on the GT topic, errors."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from dmnet_core.data.layout import list_sequences, read_image, read_mask
from dmnet_core.data.synth import generate_dataset
from dmnet_ros import bag_io, make_bag

SIZE = (64, 80)


@pytest.fixture(scope='module')
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp('layout')
    generate_dataset(root, sequences=2, frames=3, seed=4, size=SIZE, fps=12.5)
    return root


def _frames(bag: Path) -> list[bag_io.BagFrame]:
    return list(bag_io.iter_frames(bag))


def test_synth_bag(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / 'synth'
    assert make_bag.main(['--synth', '--frames', '4', '--size', '64x80', '--seed', '3',
                          '--out', str(out), '--no-progress']) == 0
    assert 'wrote' in capsys.readouterr().out
    meta = yaml.safe_load((out / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert meta['version'] == 8 and meta['storage_identifier'] == 'sqlite3'
    counts = {t['topic_metadata']['name']: t['message_count']
              for t in meta['topics_with_message_count']}
    assert counts == {bag_io.IMAGE_TOPIC: 4, bag_io.GT_TOPIC: 4}
    frames = _frames(out)
    start = int(make_bag.DEFAULT_START_S * 1e9)
    assert [f.stamp_ns for f in frames] == [start + i * 40_000_000 for i in range(4)]
    assert frames[0].rgb.shape == (64, 80, 3)
    masks = bag_io.read_masks(out)
    assert [m[0] for m in masks] == [f.stamp_ns for f in frames]
    assert set(np.unique(np.concatenate([m[2].ravel() for m in masks]))) <= {0, 1}
    info = bag_io.inspect_bag(out)
    assert info.custom['dmnet.class_names'] == '["background", "instrument"]'
    # Same seed, same content (the generator is seeded; the default start is fixed).
    out2 = tmp_path / 'synth2'
    make_bag.main(['--synth', '--frames', '4', '--size', '64x80', '--seed', '3', '--out',
                   str(out2), '--no-progress', '--storage', 'mcap'])
    for a, b in zip(frames, _frames(out2)):
        np.testing.assert_array_equal(a.rgb, b.rgb)
        assert a.stamp_ns == b.stamp_ns


def test_layout_sequence_both_forms(tmp_path: Path, dataset: Path) -> None:
    seq = list_sequences(dataset)[1]
    for argv in (['--data', str(dataset), '--sequence', seq.name], [str(seq.path)]):
        out = tmp_path / f'bag{len(argv)}'
        assert make_bag.main(argv + ['--out', str(out), '--task', 'parts', '--no-progress']) == 0
        frames = _frames(out)
        paths = seq.frames()
        assert len(frames) == len(paths) == 3
        # 12.5 fps from dataset.yaml: 80 ms apart.
        assert frames[1].stamp_ns - frames[0].stamp_ns == 80_000_000
        for f, p in zip(frames, paths):
            np.testing.assert_array_equal(f.rgb, read_image(p))
        for (_, _, m), p in zip(bag_io.read_masks(out), paths):
            np.testing.assert_array_equal(m, read_mask(seq.mask_path(p, 'parts')))
        assert bag_io.inspect_bag(out).custom['dmnet.sequence'] == seq.name


def test_folder_with_pattern_and_masks(tmp_path: Path) -> None:
    src, masks = tmp_path / 'frames', tmp_path / 'masks'
    src.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(src / f'frame_{i}_endo.png'), rng.integers(0, 256, (48, 64, 3), np.uint8))
        cv2.imwrite(str(src / f'frame_{i}_endo_mask.png'), np.zeros((48, 64), np.uint8))
        m = np.zeros((48, 64), np.uint8)
        m[: 10 + i, :20] = 255
        cv2.imwrite(str(masks / f'frame_{i}_instrument_mask.png'), m)
    out = tmp_path / 'bag'
    assert make_bag.main([str(src), '--pattern', '*_endo.png', '--masks', str(masks),
                          '--fps', '10', '--out', str(out), '--no-progress',
                          '--storage', 'mcap']) == 0
    frames = _frames(out)
    assert len(frames) == 3 and frames[1].stamp_ns - frames[0].stamp_ns == 100_000_000
    gts = bag_io.read_masks(out)
    # Binary task: 255 in the exported masks becomes class id 1.
    assert [int(g[2].sum()) for g in gts] == [(10 + i) * 20 for i in range(3)]


def test_video_file(tmp_path: Path) -> None:
    path = tmp_path / 'clip.avi'
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), 20.0, (64, 48))
    for i in range(5):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    out = tmp_path / 'bag'
    assert make_bag.main([str(path), '--out', str(out), '--no-progress']) == 0
    frames = _frames(out)
    assert len(frames) == 5 and frames[0].rgb.shape == (48, 64, 3)
    assert frames[1].stamp_ns - frames[0].stamp_ns == 50_000_000     # the video's 20 fps
    assert bag_io.inspect_bag(out).gt_topic is None


def test_start_now_and_max_frames(tmp_path: Path) -> None:
    import time

    out = tmp_path / 'bag'
    before = time.time_ns()
    assert make_bag.main(['--synth', '--frames', '5', '--size', '64x80', '--max-frames', '2',
                          '--start', 'now', '--out', str(out), '--no-progress']) == 0
    frames = _frames(out)
    assert len(frames) == 2 and frames[0].stamp_ns >= before


@pytest.mark.parametrize('argv, needle', [
    ([], 'give exactly one source'),
    (['--synth', '/tmp'], 'give exactly one source'),
    (['/no/such/dir'], 'source not found: /no/such/dir'),
    (['--data', '/no/such/root', '--sequence', 'a'], 'dataset folder not found: /no/such/root'),
    (['--synth', '--fps', '0'], '--fps must be > 0'),
    (['--synth', '--start', 'yesterday'], "--start must be epoch seconds or 'now'"),
])
def test_bad_input_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, argv: list,
                            needle: str) -> None:
    assert make_bag.main(argv + ['--out', str(tmp_path / 'bag'), '--no-progress']) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count('\n') == 1 and 'Traceback' not in err
    assert not (tmp_path / 'bag').exists()


def test_bad_sources(tmp_path: Path, dataset: Path, capsys: pytest.CaptureFixture) -> None:
    cases = []
    empty = tmp_path / 'empty'
    empty.mkdir()
    cases.append(([str(empty)], f'no image files matching {"*"!r} in {empty}'))
    cases.append((['--data', str(dataset), '--sequence', 'nope'], "no sequence 'nope'"))
    cases.append((['--data', str(dataset)], 'choose one with --sequence'))
    txt = tmp_path / 'notes.txt'
    txt.write_text('x')
    cases.append(([str(txt)], 'not a video file'))
    frames = tmp_path / 'frames'
    frames.mkdir()
    cv2.imwrite(str(frames / 'a.png'), np.zeros((40, 40, 3), np.uint8))
    cases.append(([str(frames), '--masks', str(empty)], '0 masks matching'))
    for argv, needle in cases:
        assert make_bag.main(argv + ['--out', str(tmp_path / 'bag'), '--no-progress']) == 2
        err = capsys.readouterr().err
        assert needle in err and 'Traceback' not in err, (argv, err)
    # An existing output is never overwritten.
    (tmp_path / 'exists').mkdir()
    assert make_bag.main(['--synth', '--out', str(tmp_path / 'exists'), '--no-progress']) == 2
    assert 'already exists' in capsys.readouterr().err


def test_failure_mid_write_leaves_no_bag(tmp_path: Path) -> None:
    def frames():
        yield np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32), np.uint8)
        yield np.zeros((32, 32, 3), np.uint8), np.zeros((16, 16), np.uint8)   # wrong size

    src = make_bag.Source('test', 'bad', 25.0, 2, frames(), True)
    with pytest.raises(ValueError, match=r'frame 1: mask \(16, 16\)'):
        make_bag.write_bag(tmp_path / 'bag', src, progress=False)
    assert not (tmp_path / 'bag').exists()
