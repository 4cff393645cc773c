"""CholecSeg8k preprocessing on the shared real clip (72 frames, 854x480) and nested layouts."""
from pathlib import Path

import cv2
import numpy as np
import pytest

from dmnet_core.cli import main as dmnet_main
from dmnet_core.data.clips import ClipDataset
from dmnet_core.data.layout import read_image, read_mask, read_meta
from dmnet_core.data.preprocess import preprocess

FRAMES = range(561, 633)


def _link_clip(dst: Path, clip: Path, frames, masks: bool = True) -> None:
    """A clip folder of symlinks to some shared frames (the data is never copied)."""
    dst.mkdir(parents=True)
    for n in frames:
        names = [f'frame_{n}_endo.png']
        if masks:
            names += [f'frame_{n}_endo_watershed_mask.png', f'frame_{n}_endo_color_mask.png',
                      f'frame_{n}_endo_mask.png']
        for name in names:
            (dst / name).symlink_to(clip / 'video_pixel' / name)


def test_shared_clip_frames_masks_and_pixel_counts(cholec_clip, tmp_path):
    out = tmp_path / 'out'
    meta = preprocess('cholecseg8k', cholec_clip / 'video_pixel', out)
    assert meta.name == 'cholecseg8k' and meta.fps == 25.0
    assert meta.classes == {'binary': ['background', 'instrument'],
                            'type': ['background', 'grasper', 'l_hook']}
    assert meta.splits == {'train': ['video_pixel'], 'val': ['video_pixel'],
                           'test': ['video_pixel']}
    seq = out / 'video_pixel'
    stems = sorted(p.stem for p in (seq / 'images').iterdir())
    assert stems == [f'{n:06d}' for n in FRAMES]
    assert not (seq / 'masks' / 'parts').exists()
    hooks = 0
    for n in FRAMES:
        src = cholec_clip / 'video_pixel'
        ws = cv2.imread(str(src / f'frame_{n}_endo_watershed_mask.png'), cv2.IMREAD_UNCHANGED)
        ws = ws[..., 0]
        derived = cv2.imread(str(cholec_clip / 'derived_binary_instrument_masks'
                                 / f'frame_{n}_instrument_mask.png'), cv2.IMREAD_UNCHANGED)
        img = read_image(seq / 'images' / f'{n:06d}.png')
        assert img.shape == (480, 854, 3)
        assert np.array_equal(img, read_image(src / f'frame_{n}_endo.png'))
        binary = read_mask(seq / 'masks' / 'binary' / f'{n:06d}.png')
        typ = read_mask(seq / 'masks' / 'type' / f'{n:06d}.png')
        assert set(np.unique(binary)) <= {0, 1} and set(np.unique(typ)) <= {0, 1, 2}
        count = int(binary.sum())
        assert count == int(np.isin(ws, [31, 32]).sum()) == int((derived > 0).sum()) > 4000
        assert np.array_equal(binary == 1, derived > 0)
        assert int((typ == 1).sum()) == int((ws == 31).sum())
        assert int((typ == 2).sum()) == int((ws == 32).sum())
        # Border 255 and class 50 are background.
        assert not binary[ws == 255].any() and not binary[ws == 50].any()
        hooks += int((typ == 2).sum())
    assert hooks == 46                       # the README: 46 L-hook pixels in the whole clip
    ds = ClipDataset(out, 'train', 'type', clip_len=3, n_global=2, crop=(128, 224))
    assert len(ds) == 70 and ds[5]['clip'].shape == (3, 3, 128, 224)


def test_nested_videos_one_sequence_per_clip_and_video_splits(cholec_clip, tmp_path, capsys):
    src = tmp_path / 'cholecseg8k'
    _link_clip(src / 'video01' / 'video01_00080', cholec_clip, [561, 562])
    _link_clip(src / 'video01' / 'video01_00160', cholec_clip, [563])
    _link_clip(src / 'video12' / 'video12_15750', cholec_clip, [564])
    _link_clip(src / 'video55' / 'video55_00400', cholec_clip, [565, 566])
    meta = preprocess('cholecseg8k', src, tmp_path / 'a')
    assert meta.splits == {'train': ['video01_00080', 'video01_00160'],
                           'val': ['video12_15750'], 'test': ['video55_00400']}
    assert sorted(p.name for p in (tmp_path / 'a' / 'video55_00400' / 'images').iterdir()) == \
        ['000565.png', '000566.png']
    rc = dmnet_main(['preprocess', '--dataset', 'cholecseg8k', '--src', str(src), '--out',
                     str(tmp_path / 'b'), '--val-videos', '55', '--test-videos', 'video01'])
    assert rc == 0, capsys.readouterr().err
    assert read_meta(tmp_path / 'b').splits == {
        'train': ['video12_15750'], 'val': ['video55_00400'],
        'test': ['video01_00080', 'video01_00160']}
    rc = dmnet_main(['preprocess', '--dataset', 'cholecseg8k', '--src', str(src), '--out',
                     str(tmp_path / 'c'), '--test-videos', '99'])
    assert rc == 2 and "unknown video 'video99'" in capsys.readouterr().err


def test_errors_name_the_file(cholec_clip, tmp_path):
    src = tmp_path / 'clip'
    _link_clip(src, cholec_clip, [561])
    _link_clip(tmp_path / 'tmp', cholec_clip, [562], masks=False)
    (src / 'frame_562_endo.png').symlink_to(tmp_path / 'tmp' / 'frame_562_endo.png')
    with pytest.raises(FileNotFoundError,
                       match=r'mask missing: .*clip/frame_562_endo_watershed_mask\.png'):
        preprocess('cholecseg8k', src, tmp_path / 'o1')
    ws = np.full((480, 854, 3), 21, np.uint8)
    ws[10:20, 10:20] = 77
    cv2.imwrite(str(src / 'frame_562_endo_watershed_mask.png'), ws)
    with pytest.raises(ValueError, match=r'unknown CholecSeg8k class id\(s\) \[77\] in .*'
                                         r'frame_562_endo_watershed_mask\.png'):
        preprocess('cholecseg8k', src, tmp_path / 'o2')
    cv2.imwrite(str(src / 'frame_562_endo_watershed_mask.png'), ws[:240, :427])
    with pytest.raises(ValueError, match=r'size 427x240.*frame_562_endo_watershed_mask\.png'):
        preprocess('cholecseg8k', src, tmp_path / 'o3')
