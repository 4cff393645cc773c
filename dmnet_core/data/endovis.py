"""EndoVis 2017 and 2018 robotic datasets, as distributed, to the dmnet layout.

EndoVis 2017 Robotic Instrument Segmentation (`convert_endovis17`)
    SRC/**/instrument_dataset_N/left_frames/frameNNN.png           1920x1080 RGB
    SRC/**/instrument_dataset_N/ground_truth/<Instrument>_labels/frameNNN.png
        one mask per instrument: 10 shaft, 20 wrist, 30 claspers ('Other_labels': 40, a probe)
    Training sequences 1-8 hold frames 000-224; the test set is frames 225-299 of 1-8 plus all
    of 9-10. A folder under a directory whose name contains 'test', numbered 9-10, or starting
    at frame 225 or later is a test sequence (`test_seq_N`), the others train (`seq_N`).
    As the common (TernausNet) pipeline: frames are cropped to the 1280x1024 image area
    (rows 28:1052, cols 320:1600); binary/parts merge the instruments except 'Other', type ids
    are TYPE_CLASSES['endovis17'] by folder name (later folders in name order win overlaps).
    Test sequences get masks only where they carry the same `ground_truth/` folders.

EndoVis 2018 Robotic Scene Segmentation (`convert_endovis18`)
    SRC/**/seq_N/left_frames/frameNNN.png    1280x1024 RGB
    SRC/**/seq_N/labels/frameNNN.png         colour-coded scene classes (labels.json)
    The robotic instrument's shaft, wrist and clasper colours become the instrument for binary
    and the parts classes; every other scene class (organs, thread, clamps, needle, suction,
    probe) is background, as instrument-segmentation papers use it. The scene labels carry no
    instrument types, so no type masks are written. Sequences under a directory whose name
    contains 'test' are the official test sequences (`test_seq_N`). Splits: val = training
    sequences 2, 5, 9, 15 (the held-out set of ISINet and later instrument papers), train =
    the other training sequences, test = the official test sequences (or val if absent).
"""
from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import cv2
import numpy as np

from dmnet_core.config import BINARY_CLASSES, PARTS_CLASSES, TYPE_CLASSES
from dmnet_core.data.layout import DatasetMeta, frame_stem, write_frame, write_meta

log = logging.getLogger(__name__)

# EndoVis 2017: crop of the 1280x1024 image area from the 1920x1080 frames.
EV17_FULL = (1080, 1920)
EV17_CROP = (28, 320, 1024, 1280)           # top, left, height, width
EV17_PART_VALUES = {10: 1, 20: 2, 30: 3}    # mask value -> PARTS_CLASSES id
EV17_OTHER_VALUE = 40
# Folder-name substring -> TYPE_CLASSES['endovis17'] id (Maryland_Bipolar_Forceps is bipolar).
EV17_TYPES = [('Bipolar_Forceps', 1), ('Prograsp_Forceps', 2), ('Large_Needle_Driver', 3),
              ('Vessel_Sealer', 4), ('Grasping_Retractor', 5), ('Monopolar_Curved_Scissors', 6),
              ('Other', 7)]
FOLDS = {
    'seed': [[1, 3], [2, 5], [4, 8], [6, 7]],      # the DMNet authors' folds
    'ternaus': [[1, 3], [2, 6], [4, 8], [5, 7]],   # TernausNet's folds
}

# EndoVis 2018 scene classes (labels.json): name -> RGB. 'thread' is listed with both colours
# seen in copies of labels.json.
EV18_COLOURS = {
    'background-tissue': [(0, 0, 0)],
    'instrument-shaft': [(0, 255, 0)],
    'instrument-clasper': [(0, 255, 255)],
    'instrument-wrist': [(125, 255, 12)],
    'kidney-parenchyma': [(255, 55, 0)],
    'covered-kidney': [(24, 55, 125)],
    'thread': [(187, 155, 25), (128, 155, 25)],
    'clamps': [(0, 255, 125)],
    'suturing-needle': [(255, 255, 125)],
    'suction-instrument': [(123, 15, 175)],
    'small-intestine': [(124, 155, 5)],
    'ultrasound-probe': [(12, 255, 141)],
}
EV18_PARTS = {'instrument-shaft': 1, 'instrument-wrist': 2, 'instrument-clasper': 3}
EV18_VAL = [2, 5, 9, 15]

_FRAME_RE = re.compile(r'^frame(\d+)\.png$')


def _find_sequences(src: Path, name_re: re.Pattern) -> list[tuple[int, Path, bool]]:
    """(number, folder, under a 'test' directory) of every folder matching `name_re` that
    holds `left_frames/`, found anywhere below src (not inside a match)."""
    if not src.is_dir():
        raise FileNotFoundError(f'source folder not found: {src}')
    found = []
    for dirpath, dirnames, _ in os.walk(src):
        keep = []
        for d in sorted(dirnames):
            m = name_re.match(d)
            path = Path(dirpath) / d
            if m and (path / 'left_frames').is_dir():
                rel = path.relative_to(src).parts[:-1]
                found.append((int(m.group(1)), path, any('test' in p.lower() for p in rel)))
            elif d not in ('left_frames', 'right_frames', 'ground_truth', 'labels'):
                keep.append(d)
        dirnames[:] = keep
    return sorted(found, key=lambda f: (f[2], f[0], str(f[1])))


def _frame_numbers(folder: Path) -> dict[int, Path]:
    """frameNNN.png files of a folder by number; a gap in the numbering names the missing file."""
    frames = {}
    for name in os.listdir(folder):
        m = _FRAME_RE.match(name)
        if m:
            frames[int(m.group(1))] = folder / name
    if not frames:
        raise FileNotFoundError(f'no frameNNN.png files in {folder}')
    nums = sorted(frames)
    width = len(frames[nums[0]].stem) - len('frame')
    for a in range(nums[0], nums[-1] + 1):
        if a not in frames:
            raise FileNotFoundError(f'frame missing: {folder / f"frame{a:0{width}d}.png"} '
                                    f'(sequence has frames {nums[0]}..{nums[-1]})')
    return frames


def _read(path: Path, flags: int) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f'file not found: {path}')
    img = cv2.imread(str(path), flags)
    if img is None:
        raise ValueError(f'cannot decode image: {path}')
    return img


def _unique_name(names: dict[str, Path], name: str, path: Path) -> None:
    if name in names:
        raise ValueError(f'two source folders map to sequence {name}: {names[name]} and {path}')
    names[name] = path


# ---------------------------------------------------------------- EndoVis 2017

def _ev17_type(folder: Path) -> int:
    for key, type_id in EV17_TYPES:
        if key in folder.name:
            return type_id
    raise ValueError(f'unknown EndoVis 2017 instrument folder {folder} '
                     f'(expected a name containing one of {[k for k, _ in EV17_TYPES]})')


def _ev17_crop(img: np.ndarray, path: Path, what: str) -> np.ndarray:
    """Crop a 1920x1080 frame or mask to the 1280x1024 image area (1280x1024 kept as is)."""
    h, w = img.shape[:2]
    top, left, ch, cw = EV17_CROP
    if (h, w) == EV17_FULL:
        return img[top:top + ch, left:left + cw]
    if (h, w) == (ch, cw):
        return img
    raise ValueError(f'{what} has size {w}x{h}, expected 1920x1080 (or cropped 1280x1024): '
                     f'{path}')


def _ev17_masks(frame_no: int, width: int, label_dirs: list[Path],
                frame_hw: tuple[int, int]) -> dict[str, np.ndarray]:
    """Merge the per-instrument masks of one frame into binary/parts/type (cropped)."""
    h, w = frame_hw
    binary = np.zeros((h, w), np.uint8)
    parts = np.zeros((h, w), np.uint8)
    typ = np.zeros((h, w), np.uint8)
    for d in label_dirs:
        path = d / f'frame{frame_no:0{width}d}.png'
        if not path.is_file():
            raise FileNotFoundError(f'mask missing: {path}')
        m = _read(path, cv2.IMREAD_GRAYSCALE)
        if m.shape != (h, w):
            raise ValueError(f'mask has size {m.shape[1]}x{m.shape[0]}, its frame is {w}x{h}: '
                             f'{path}')
        bad = np.setdiff1d(np.unique(m), [0, *EV17_PART_VALUES, EV17_OTHER_VALUE])
        if bad.size:
            raise ValueError(f'unexpected mask value(s) {bad.tolist()} (expected 0, 10, 20, 30, '
                             f'40): {path}')
        type_id = _ev17_type(d)
        fg = m > 0
        typ[fg] = type_id
        if type_id != 7:                  # 'Other' (a probe) is not in binary/parts
            binary[fg] = 1
            for value, part in EV17_PART_VALUES.items():
                parts[m == value] = part
    return {k: _ev17_crop(v, label_dirs[0], 'mask')
            for k, v in (('binary', binary), ('parts', parts), ('type', typ))}


def _ev17_sequence(path: Path, out: Path, name: str, is_test: bool) -> int:
    frames = _frame_numbers(path / 'left_frames')
    width = len(frames[min(frames)].stem) - len('frame')
    gt = path / 'ground_truth'
    label_dirs = sorted(p for p in gt.iterdir() if p.is_dir()) if gt.is_dir() else []
    if not label_dirs and not is_test:
        raise FileNotFoundError(f'training sequence without ground truth: {gt} '
                                '(expected <Instrument>_labels folders)')
    for d in label_dirs:
        _ev17_type(d)                      # unknown folder names fail before writing
        for mask_name in os.listdir(d):
            m = _FRAME_RE.match(mask_name)
            if m and int(m.group(1)) not in frames:
                raise FileNotFoundError(f'frame missing: {path / "left_frames" / mask_name} '
                                        f'(has a mask {d / mask_name})')
    for num in sorted(frames):
        bgr = _read(frames[num], cv2.IMREAD_COLOR)
        full_hw = bgr.shape[:2]
        rgb = cv2.cvtColor(_ev17_crop(bgr, frames[num], 'frame'), cv2.COLOR_BGR2RGB)
        masks = _ev17_masks(num, width, label_dirs, full_hw) if label_dirs else {}
        write_frame(out, name, frame_stem(num), rgb, masks)
    log.info('%s -> %s: %d frames%s', path, out / name, len(frames),
             '' if label_dirs else ' (no masks)')
    return len(frames)


def convert_endovis17(src: str | Path, out: str | Path, folds: str = 'seed',
                      fold: int = 0) -> DatasetMeta:
    """EndoVis 2017 as distributed -> dmnet layout under `out` (see the module docstring).

    Args:
        src: folder holding the `instrument_dataset_N` folders (train and test, any depth).
        out: output dataset folder.
        folds: 'seed' ({1,3},{2,5},{4,8},{6,7}) or 'ternaus' ({1,3},{2,6},{4,8},{5,7}).
        fold: the fold whose validation sequences form the `val` split (`train` = the rest).

    Splits: train/val (fold `fold`), trainval (all training sequences), test, and
    fold{k}_train / fold{k}_val for every k; `folds` in the meta: fold id -> val sequences.
    """
    if folds not in FOLDS:
        raise ValueError(f'unknown folds {folds!r}; expected one of {sorted(FOLDS)}')
    if not 0 <= fold < len(FOLDS[folds]):
        raise ValueError(f'fold must be in 0..{len(FOLDS[folds]) - 1}, got {fold}')
    src, out = Path(src), Path(out)
    found = _find_sequences(src, re.compile(r'^instrument_dataset_(\d+)$'))
    if not found:
        raise FileNotFoundError(f'no instrument_dataset_N/left_frames folders under {src}')
    names: dict[str, Path] = {}
    plan = []
    for num, path, under_test in found:
        first = min(_frame_numbers(path / 'left_frames'))
        is_test = under_test or num >= 9 or first >= 225
        name = f'test_seq_{num}' if is_test else f'seq_{num}'
        _unique_name(names, name, path)
        plan.append((num, path, name, is_test))
    plan.sort(key=lambda p: (p[3], p[0]))
    for _, path, name, is_test in plan:
        _ev17_sequence(path, out, name, is_test)
    train_nums = [n for n, _, _, t in plan if not t]
    trainval = [f'seq_{n}' for n in train_nums]
    test = [name for _, _, name, t in plan if t]
    fold_val = {str(k): [f'seq_{n}' for n in pair if n in train_nums]
                for k, pair in enumerate(FOLDS[folds])}
    splits = {'train': [s for s in trainval if s not in fold_val[str(fold)]],
              'val': fold_val[str(fold)], 'test': test, 'trainval': trainval}
    for k, val in fold_val.items():
        splits[f'fold{k}_train'] = [s for s in trainval if s not in val]
        splits[f'fold{k}_val'] = list(val)
    meta = DatasetMeta(name='endovis17', fps=2.0,
                       classes={'binary': list(BINARY_CLASSES), 'parts': list(PARTS_CLASSES),
                                'type': list(TYPE_CLASSES['endovis17'])},
                       splits=splits, folds=fold_val)
    write_meta(out, meta)
    return meta


# ---------------------------------------------------------------- EndoVis 2018

def _ev18_table(seq_dir: Path, src: Path) -> dict[int, int]:
    """Packed colour (r << 16 | g << 8 | b) -> parts id, from the nearest labels.json at or
    above the sequence folder (up to src), else the built-in table."""
    colours = {n: list(c) for n, c in EV18_COLOURS.items()}
    for folder in [seq_dir, *seq_dir.parents]:
        path = folder / 'labels.json'
        if path.is_file():
            try:
                entries = json.loads(path.read_text())
                colours = {}
                for e in entries:
                    colours.setdefault(e['name'], []).append(tuple(int(v) for v in e['color']))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f'cannot read class colours from {path}: {exc}') from exc
            break
        if folder == src:
            break
    table = {}
    for name, cols in colours.items():
        for r, g, b in cols:
            table[(r << 16) | (g << 8) | b] = EV18_PARTS.get(name, 0)
    return table


def _ev18_parts(path: Path, table: dict[int, int], frame_hw: tuple[int, int]) -> np.ndarray:
    """Colour label image -> parts ids; an unknown colour raises naming the file and colour."""
    bgr = _read(path, cv2.IMREAD_COLOR)
    if bgr.shape[:2] != frame_hw:
        raise ValueError(f'label has size {bgr.shape[1]}x{bgr.shape[0]}, its frame is '
                         f'{frame_hw[1]}x{frame_hw[0]}: {path}')
    # H x W x 3 BGR -> H x W packed RGB keys.
    px = bgr.astype(np.int32)
    keys = (px[..., 2] << 16) | (px[..., 1] << 8) | px[..., 0]
    uniq, inv = np.unique(keys, return_inverse=True)
    lut = np.zeros(len(uniq), np.uint8)
    for i, k in enumerate(uniq.tolist()):
        if k not in table:
            rgb = (k >> 16, (k >> 8) & 255, k & 255)
            n = int((keys == k).sum())
            raise ValueError(f'unknown label colour RGB{rgb} ({n} px) in {path}')
        lut[i] = table[k]
    return lut[inv.reshape(keys.shape)]


def _ev18_sequence(path: Path, src: Path, out: Path, name: str, is_test: bool) -> int:
    frames = _frame_numbers(path / 'left_frames')
    labels = path / 'labels'
    if not labels.is_dir():
        if not is_test:
            raise FileNotFoundError(f'training sequence without labels: {labels}')
        labels = None
    table = _ev18_table(path, src)
    if labels is not None:
        for mask_name in os.listdir(labels):
            m = _FRAME_RE.match(mask_name)
            if m and int(m.group(1)) not in frames:
                raise FileNotFoundError(f'frame missing: {path / "left_frames" / mask_name} '
                                        f'(has a label {labels / mask_name})')
    for num in sorted(frames):
        rgb = cv2.cvtColor(_read(frames[num], cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        masks = {}
        if labels is not None:
            lpath = labels / frames[num].name
            if not lpath.is_file():
                raise FileNotFoundError(f'label missing: {lpath}')
            parts = _ev18_parts(lpath, table, rgb.shape[:2])
            masks = {'binary': (parts > 0).astype(np.uint8), 'parts': parts}
        write_frame(out, name, frame_stem(num), rgb, masks)
    log.info('%s -> %s: %d frames', path, out / name, len(frames))
    return len(frames)


def convert_endovis18(src: str | Path, out: str | Path) -> DatasetMeta:
    """EndoVis 2018 as distributed -> dmnet layout under `out` (see the module docstring).

    Args:
        src: folder holding the `seq_N` folders (training releases, and the test release
            under a folder whose name contains 'test'), at any depth.
        out: output dataset folder.
    """
    src, out = Path(src), Path(out)
    found = _find_sequences(src, re.compile(r'^seq_(\d+)$'))
    if not found:
        raise FileNotFoundError(f'no seq_N/left_frames folders under {src}')
    names: dict[str, Path] = {}
    plan = []
    for num, path, is_test in found:
        name = f'test_seq_{num}' if is_test else f'seq_{num}'
        _unique_name(names, name, path)
        plan.append((num, path, name, is_test))
    for _, path, name, is_test in plan:
        _ev18_sequence(path, src, out, name, is_test)
    trainval = [name for _, _, name, t in plan if not t]
    val = [f'seq_{n}' for n in EV18_VAL if f'seq_{n}' in trainval]
    test = [name for _, _, name, t in plan if t]
    if not test:
        log.warning('no EndoVis 2018 test sequences (under a "test" folder) in %s: '
                    'test split = val sequences %s', src, val)
    splits = {'train': [s for s in trainval if s not in val], 'val': val,
              'test': test or list(val), 'trainval': trainval}
    meta = DatasetMeta(name='endovis18', fps=2.0,
                       classes={'binary': list(BINARY_CLASSES), 'parts': list(PARTS_CLASSES)},
                       splits=splits)
    write_meta(out, meta)
    return meta
