"""EndoVis 2017 / 2018 preprocessing on small fabricated copies of the distributed layouts.

Frames have the real sizes (1920x1080 for 2017, 1280x1024 for 2018) but only 1-2 per sequence.
"""
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from dmnet_core.cli import main as dmnet_main
from dmnet_core.data.layout import read_image, read_mask, read_meta
from dmnet_core.data.preprocess import preprocess

PNG_FAST = [cv2.IMWRITE_PNG_COMPRESSION, 1]
CROP = (slice(28, 1052), slice(320, 1600))


def _png(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img, PNG_FAST)


def _frame(h: int, w: int, k: int) -> np.ndarray:
    """An RGB frame whose pixels encode their position (to check the crop)."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([yy % 251, xx % 253, (yy // 7 + xx // 11 + 40 * k) % 256],
                    axis=-1).astype(np.uint8)


# ---------------------------------------------------------------- EndoVis 2017

def _ev17_labels(i: int) -> dict[str, np.ndarray]:
    """Per-instrument masks (1080 x 1920) of frame i, as distributed (10/20/30, 40 'Other')."""
    pro = np.zeros((1080, 1920), np.uint8)
    pro[100 + i:200, 400:700] = 10
    pro[200:250, 400:700] = 20
    pro[250:300, 400:700] = 30
    pro[0:20, 400:700] = 10                        # above the crop: cut away
    lnd = np.zeros_like(pro)
    lnd[260:400, 600:900] = 10                     # overlaps the prograsp's claspers
    lnd[400:420, 600:900] = 30
    other = np.zeros_like(pro)
    other[500:600, 1000:1100] = 40
    return {'Left_Prograsp_Forceps_labels': pro, 'Right_Large_Needle_Driver_labels': lnd,
            'Other_labels': other}


def _ev17_seq(root: Path, n: int, frames: range, labels: bool = True) -> Path:
    seq = root / f'instrument_dataset_{n}'
    for i in frames:
        _png(seq / 'left_frames' / f'frame{i:03d}.png', _frame(1080, 1920, i)[..., ::-1])
        if labels:
            for folder, m in _ev17_labels(i).items():
                _png(seq / 'ground_truth' / folder / f'frame{i:03d}.png', m)
    return seq


def _ev17_expected(i: int) -> dict[str, np.ndarray]:
    lab = _ev17_labels(i)
    pro, lnd, other = (lab[k] for k in ('Left_Prograsp_Forceps_labels',
                                       'Right_Large_Needle_Driver_labels', 'Other_labels'))
    binary = ((pro > 0) | (lnd > 0)).astype(np.uint8)
    parts = np.zeros_like(pro)
    typ = np.zeros_like(pro)
    # Folder order: Left_Prograsp < Other < Right_Large_Needle_Driver (later wins overlaps).
    for m, type_id in ((pro, 2), (other, 7), (lnd, 3)):
        typ[m > 0] = type_id
        if type_id != 7:
            for v, p in ((10, 1), (20, 2), (30, 3)):
                parts[m == v] = p
    return {'binary': binary[CROP], 'parts': parts[CROP], 'type': typ[CROP]}


def test_endovis17_crop_merge_folds_and_test_split(tmp_path):
    src = tmp_path / 'src'
    _ev17_seq(src / 'train', 2, range(0, 2))
    _ev17_seq(src / 'train', 5, range(0, 2))
    _ev17_seq(src / 'test', 2, range(225, 227), labels=False)
    _ev17_seq(src / 'extra', 9, range(0, 1), labels=False)     # 9-10: test by number
    out = tmp_path / 'out'
    meta = preprocess('endovis17', src, out)

    assert meta.name == 'endovis17'
    assert meta.classes['type'][7] == 'other_probe'
    # Seed authors' folds: {1,3},{2,5},{4,8},{6,7}, restricted to the sequences present.
    assert meta.folds == {'0': [], '1': ['seq_2', 'seq_5'], '2': [], '3': []}
    assert meta.splits['test'] == ['test_seq_2', 'test_seq_9']
    assert meta.splits['trainval'] == ['seq_2', 'seq_5']
    assert meta.splits['fold1_val'] == ['seq_2', 'seq_5'] and meta.splits['fold1_train'] == []
    assert read_meta(out) == meta

    for i in range(2):
        img = read_image(out / 'seq_5' / 'images' / f'{i:06d}.png')
        assert img.shape == (1024, 1280, 3)
        assert np.array_equal(img, _frame(1080, 1920, i)[CROP])
        exp = _ev17_expected(i)
        for task in ('binary', 'parts', 'type'):
            got = read_mask(out / 'seq_5' / 'masks' / task / f'{i:06d}.png')
            assert np.array_equal(got, exp[task]), task
    assert set(np.unique(exp['type'])) == {0, 2, 3, 7}
    test_imgs = sorted(p.name for p in (out / 'test_seq_2' / 'images').iterdir())
    assert test_imgs == ['000225.png', '000226.png']
    assert not (out / 'test_seq_2' / 'masks').exists()


def test_endovis17_ternaus_folds_from_cli(tmp_path, capsys):
    src = tmp_path / 'src'
    _ev17_seq(src, 2, range(0, 1))
    _ev17_seq(src, 5, range(0, 1))
    out = tmp_path / 'out'
    rc = dmnet_main(['preprocess', '--dataset', 'endovis17', '--src', str(src), '--out',
                     str(out), '--folds', 'ternaus', '--fold', '3'])
    assert rc == 0, capsys.readouterr().err
    meta = read_meta(out)
    # TernausNet: {1,3},{2,6},{4,8},{5,7}; fold 3 validates on seq 5.
    assert meta.folds == {'0': [], '1': ['seq_2'], '2': [], '3': ['seq_5']}
    assert meta.splits['val'] == ['seq_5'] and meta.splits['train'] == ['seq_2']


def test_endovis17_errors_name_the_file(tmp_path, capsys):
    src = tmp_path / 'src'
    seq = _ev17_seq(src, 1, range(0, 2))
    bad = seq / 'ground_truth' / 'Other_labels' / 'frame001.png'
    _png(bad, np.zeros((1024, 1280), np.uint8))
    with pytest.raises(ValueError, match=r'size 1280x1024.*Other_labels/frame001\.png'):
        preprocess('endovis17', src, tmp_path / 'o1')
    bad.unlink()
    with pytest.raises(FileNotFoundError, match=r'mask missing: .*Other_labels/frame001\.png'):
        preprocess('endovis17', src, tmp_path / 'o2')
    # A frame removed while its masks remain; then a gap in the numbering.
    _png(bad, np.zeros((1080, 1920), np.uint8))
    (seq / 'left_frames' / 'frame001.png').unlink()
    with pytest.raises(FileNotFoundError, match=r'frame missing: .*left_frames/frame001\.png'):
        preprocess('endovis17', src, tmp_path / 'o3')
    _ev17_seq(src, 1, range(2, 3))
    with pytest.raises(FileNotFoundError, match=r'frame missing: .*left_frames/frame001\.png'):
        preprocess('endovis17', src, tmp_path / 'o4')
    # Through the CLI: one clear line, exit status 2.
    rc = dmnet_main(['preprocess', '--dataset', 'endovis17', '--src', str(src), '--out',
                     str(tmp_path / 'o5')])
    err = capsys.readouterr().err
    assert rc == 2 and 'frame001.png' in err and 'Traceback' not in err
    (seq / 'left_frames' / 'frame002.png').unlink()
    shutil.rmtree(seq / 'ground_truth')
    with pytest.raises(FileNotFoundError, match='without ground truth'):
        preprocess('endovis17', src, tmp_path / 'o6')


# ---------------------------------------------------------------- EndoVis 2018

EV18_JSON = [
    {'name': 'background-tissue', 'color': [0, 0, 0], 'classid': 0},
    {'name': 'instrument-shaft', 'color': [0, 255, 0], 'classid': 1},
    {'name': 'instrument-clasper', 'color': [0, 255, 255], 'classid': 2},
    {'name': 'instrument-wrist', 'color': [125, 255, 12], 'classid': 3},
    {'name': 'kidney-parenchyma', 'color': [255, 55, 0], 'classid': 4},
    {'name': 'covered-kidney', 'color': [24, 55, 125], 'classid': 5},
    {'name': 'thread', 'color': [187, 155, 25], 'classid': 6},
    {'name': 'clamps', 'color': [0, 255, 125], 'classid': 7},
    {'name': 'suturing-needle', 'color': [255, 255, 125], 'classid': 8},
    {'name': 'suction-instrument', 'color': [123, 15, 175], 'classid': 9},
    {'name': 'small-intestine', 'color': [124, 155, 5], 'classid': 10},
    {'name': 'ultrasound-probe', 'color': [12, 255, 141], 'classid': 11},
]


def _ev18_label() -> tuple[np.ndarray, np.ndarray]:
    """(RGB colour label 1024 x 1280, expected parts ids)."""
    lab = np.zeros((1024, 1280, 3), np.uint8)
    parts = np.zeros((1024, 1280), np.uint8)
    lab[:, :] = (255, 55, 0)                               # kidney: background
    for (y0, y1), rgb, part in (((100, 300), (0, 255, 0), 1), ((300, 340), (125, 255, 12), 2),
                                ((340, 400), (0, 255, 255), 3), ((500, 600), (123, 15, 175), 0),
                                ((700, 720), (187, 155, 25), 0), ((800, 900), (0, 0, 0), 0)):
        lab[y0:y1, 200:600] = rgb
        parts[y0:y1, 200:600] = part
    return lab, parts


def _ev18_seq(root: Path, n: int, frames: range) -> Path:
    seq = root / f'seq_{n}'
    lab, _ = _ev18_label()
    for i in frames:
        _png(seq / 'left_frames' / f'frame{i:03d}.png', _frame(1024, 1280, i)[..., ::-1])
        _png(seq / 'labels' / f'frame{i:03d}.png', lab[..., ::-1])
    return seq


def test_endovis18_colours_to_binary_and_parts(tmp_path):
    src = tmp_path / 'src'
    rel = src / 'miccai_challenge_2018_release_1'
    rel.mkdir(parents=True)
    (rel / 'labels.json').write_text(json.dumps(EV18_JSON))
    _ev18_seq(rel, 1, range(0, 2))
    _ev18_seq(rel, 2, range(0, 1))
    _ev18_seq(src / 'test_release', 1, range(0, 1))          # no labels.json: built-in table
    out = tmp_path / 'out'
    meta = preprocess('endovis18', src, out)
    assert meta.splits == {'train': ['seq_1'], 'val': ['seq_2'], 'test': ['test_seq_1'],
                           'trainval': ['seq_1', 'seq_2']}
    assert sorted(meta.classes) == ['binary', 'parts']
    _, parts = _ev18_label()
    for seq, stem in (('seq_1', '000001'), ('test_seq_1', '000000')):
        assert np.array_equal(read_image(out / seq / 'images' / f'{stem}.png'),
                              _frame(1024, 1280, int(stem)))
        assert np.array_equal(read_mask(out / seq / 'masks' / 'parts' / f'{stem}.png'), parts)
        assert np.array_equal(read_mask(out / seq / 'masks' / 'binary' / f'{stem}.png'),
                              (parts > 0).astype(np.uint8))


def test_endovis18_errors_name_file_and_colour(tmp_path):
    src = tmp_path / 'src'
    seq = _ev18_seq(src, 3, range(0, 2))
    lab, _ = _ev18_label()
    lab[5, 5] = (1, 2, 3)
    _png(seq / 'labels' / 'frame001.png', lab[..., ::-1])
    with pytest.raises(ValueError, match=r'RGB\(1, 2, 3\).*seq_3/labels/frame001\.png'):
        preprocess('endovis18', src, tmp_path / 'o1')
    _png(seq / 'labels' / 'frame001.png', np.zeros((1080, 1920, 3), np.uint8))
    with pytest.raises(ValueError, match=r'size 1920x1080.*labels/frame001\.png'):
        preprocess('endovis18', src, tmp_path / 'o2')
    (seq / 'labels' / 'frame001.png').unlink()
    with pytest.raises(FileNotFoundError, match=r'label missing: .*labels/frame001\.png'):
        preprocess('endovis18', src, tmp_path / 'o3')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(FileNotFoundError, match='no seq_N/left_frames'):
        preprocess('endovis18', tmp_path / 'empty', tmp_path / 'o4')


def test_preprocess_rejects_unknown_dataset_and_options(tmp_path):
    with pytest.raises(ValueError, match='unknown dataset'):
        preprocess('endovis19', tmp_path, tmp_path / 'o')
    with pytest.raises(ValueError, match=r"\['folds'\] do not apply to endovis18"):
        preprocess('endovis18', tmp_path, tmp_path / 'o', folds='seed')
