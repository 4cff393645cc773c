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


# -- multi-class masks and mask files beside the frames ---------------------------------------
ENDOSCAPES_VAL = Path(__file__).resolve().parents[3] / 'shared' / 'data' / 'endoscapes_seg' / 'val'


def _multiclass_folder(root: Path, n: int = 3) -> tuple[Path, Path, list[np.ndarray]]:
    """Frames and Endoscapes-like masks (class ids 0, 2, 6; 6 = tool)."""
    src, masks = root / 'frames', root / 'masks'
    src.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(1)
    gts = []
    for i in range(n):
        cv2.imwrite(str(src / f'{i:03d}.jpg'), rng.integers(0, 256, (48, 64, 3), np.uint8))
        m = np.zeros((48, 64), np.uint8)
        m[:20, :30] = 2
        m[30:, 10 + i:40] = 6
        cv2.imwrite(str(masks / f'{i:03d}.png'), m)
        gts.append(m)
    return src, masks, gts


def test_multiclass_masks_are_refused_without_a_mapping(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    src, masks, _ = _multiclass_folder(tmp_path)
    out = tmp_path / 'bag'
    assert make_bag.main([str(src), '--masks', str(masks), '--out', str(out),
                          '--no-progress']) == 2
    err = capsys.readouterr().err
    assert 'mask values [0, 2, 6] are not binary values' in err and '--mask-values' in err
    assert err.count('\n') == 1 and not out.exists()


@pytest.mark.parametrize('mapping', [['6=instrument'], ['6=1'], ['6=instrument,2=0'],
                                     ['6=instrument', '2=background']])
def test_mask_values_map_class_ids(tmp_path: Path, mapping: list[str]) -> None:
    src, masks, gts = _multiclass_folder(tmp_path)
    out = tmp_path / 'bag'
    argv = [str(src), '--masks', str(masks), '--out', str(out), '--no-progress']
    for m in mapping:
        argv += ['--mask-values', m]
    assert make_bag.main(argv) == 0
    got = [m[2] for m in bag_io.read_masks(out)]
    assert len(got) == 3
    for g, gt in zip(got, gts):
        np.testing.assert_array_equal(g, (gt == 6).astype(np.uint8))


@pytest.mark.parametrize('value, needle', [('6', 'want VALUE=CLASS'),
                                           ('6=tool', "one of ['background', 'instrument']"),
                                           ('300=1', 'VALUE 0-255'), ('6=2', 'id below 2')])
def test_bad_mask_values_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, value: str,
                                  needle: str) -> None:
    src, masks, _ = _multiclass_folder(tmp_path)
    assert make_bag.main([str(src), '--masks', str(masks), '--mask-values', value, '--out',
                          str(tmp_path / 'bag'), '--no-progress']) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count('\n') == 1, err


def test_parts_masks_within_the_class_ids_pass_and_others_are_refused(tmp_path: Path) -> None:
    m = np.array([[0, 1], [2, 3]], np.uint8)
    np.testing.assert_array_equal(make_bag.convert_mask(m, 'parts', None, Path('a.png')), m)
    with pytest.raises(ValueError, match='parts class ids 0-3'):
        make_bag.convert_mask(m * 2, 'parts', None, Path('a.png'))
    for binary in (np.array([[0, 255]], np.uint8), np.array([[0, 1]], np.uint8)):
        got = make_bag.convert_mask(binary, 'binary', None, Path('a.png'))
        np.testing.assert_array_equal(got, [[0, 1]])


def test_default_pattern_leaves_out_cholecseg8k_mask_files(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / 'video_pixel'
    src.mkdir()
    rng = np.random.default_rng(2)
    for i in (561, 562, 563):
        cv2.imwrite(str(src / f'frame_{i}_endo.png'), rng.integers(0, 256, (48, 64, 3),
                                                                    np.uint8))
        for kind in ('mask', 'color_mask', 'watershed_mask'):
            cv2.imwrite(str(src / f'frame_{i}_endo_{kind}.png'), np.zeros((48, 64, 3), np.uint8))
    out = tmp_path / 'bag'
    assert make_bag.main([str(src), '--out', str(out), '--no-progress']) == 0
    assert len(_frames(out)) == 3
    assert 'left out 9 mask-like files' in capsys.readouterr().out
    assert [make_bag.is_mask_name(Path(n)) for n in
            ('frame_1_endo.png', 'a_gt.png', 'x-labels.png', 'masked.png', 'gtx.png')] == \
        [False, True, True, False, False]


def test_make_bag_process_on_a_multiclass_folder(tmp_path: Path) -> None:
    """The console script in its own process, as a user runs it."""
    import subprocess
    import sys

    script = Path(sys.executable).parent / 'make_bag'
    cmd = [str(script)] if script.is_file() else [sys.executable, '-m', 'dmnet_ros.make_bag']
    src, masks, gts = _multiclass_folder(tmp_path)
    base = cmd + [str(src), '--masks', str(masks), '--no-progress']
    refused = subprocess.run(base + ['--out', str(tmp_path / 'a')], capture_output=True,
                             text=True, timeout=300)
    assert refused.returncode == 2 and '--mask-values' in refused.stderr
    assert 'Traceback' not in refused.stderr and not (tmp_path / 'a').exists()
    done = subprocess.run(base + ['--out', str(tmp_path / 'b'), '--mask-values', '6=instrument'],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert '3 frames' in done.stdout and '3 masks' in done.stdout
    got = [m[2] for m in bag_io.read_masks(tmp_path / 'b')]
    for g, gt in zip(got, gts):
        np.testing.assert_array_equal(g, (gt == 6).astype(np.uint8))


def test_real_endoscapes_masks_need_the_tool_class(tmp_path: Path) -> None:
    if not (ENDOSCAPES_VAL / 'masks').is_dir():
        pytest.skip(f'shared Endoscapes data absent (expected at {ENDOSCAPES_VAL})')
    common = [str(ENDOSCAPES_VAL / 'images'), '--masks', str(ENDOSCAPES_VAL / 'masks'),
              '--max-frames', '2', '--no-progress']
    assert make_bag.main(common + ['--out', str(tmp_path / 'a')]) == 2
    assert make_bag.main(common + ['--out', str(tmp_path / 'b'), '--mask-values',
                                   '6=instrument']) == 0
    first = sorted((ENDOSCAPES_VAL / 'masks').glob('*.png'))[0]
    gt = read_mask(first)
    got = bag_io.read_masks(tmp_path / 'b')[0][2]
    np.testing.assert_array_equal(got, (gt == 6).astype(np.uint8))
