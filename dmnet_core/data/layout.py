"""The one on-disk layout every loader, `make_bag` and `dmnet evaluate` read.

    ROOT/dataset.yaml              name, fps, classes per task, splits (and folds, optional)
    ROOT/<seq>/images/<stem>.png   RGB frames, consecutive, sorted by stem
    ROOT/<seq>/masks/<task>/<stem>.png   uint8 class-id maps (task in binary/parts/type), same stems

`dmnet preprocess` (EndoVis 2017/2018, CholecSeg8k) and `dmnet synth` write it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import yaml

IMAGE_DIR = 'images'
MASK_DIR = 'masks'
META_FILE = 'dataset.yaml'


@dataclass
class DatasetMeta:
    name: str                                   # 'synth', 'endovis17', 'endovis18', 'cholecseg8k'
    fps: float = 25.0
    classes: dict[str, list[str]] = field(default_factory=dict)   # task -> class names
    splits: dict[str, list[str]] = field(default_factory=dict)    # split -> sequence names
    folds: dict[str, list[str]] = field(default_factory=dict)     # fold id -> val sequences


@dataclass
class Sequence:
    root: Path
    name: str
    fps: float

    @property
    def path(self) -> Path:
        return self.root / self.name

    def frames(self) -> list[Path]:
        return sorted((self.path / IMAGE_DIR).glob('*.png'))

    def has_masks(self, task: str) -> bool:
        return (self.path / MASK_DIR / task).is_dir()

    def mask_path(self, frame: Path, task: str) -> Path:
        return self.path / MASK_DIR / task / frame.name


def read_meta(root: str | Path) -> DatasetMeta:
    root = Path(root)
    meta_path = root / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f'not a dmnet dataset folder (no {META_FILE}): {root}')
    data = yaml.safe_load(meta_path.read_text()) or {}
    try:
        return DatasetMeta(**data)
    except TypeError as exc:
        raise ValueError(f'{meta_path}: {exc}') from exc


def write_meta(root: str | Path, meta: DatasetMeta) -> None:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / META_FILE).write_text(yaml.safe_dump(meta.__dict__, sort_keys=False))


def list_sequences(root: str | Path, split: str | None = None) -> list[Sequence]:
    """Sequences of a split (all sequence folders when split is None)."""
    root = Path(root)
    meta = read_meta(root)
    if split is None:
        names = sorted(p.name for p in root.iterdir() if (p / IMAGE_DIR).is_dir())
    else:
        if split not in meta.splits:
            raise KeyError(f'{root / META_FILE}: no split {split!r}; has {sorted(meta.splits)}')
        names = list(meta.splits[split])
    for n in names:
        if not (root / n / IMAGE_DIR).is_dir():
            raise FileNotFoundError(f'sequence folder missing: {root / n / IMAGE_DIR}')
    return [Sequence(root, n, meta.fps) for n in names]


def read_image(path: str | Path) -> np.ndarray:
    """HxWx3 uint8 RGB; a missing or unreadable file raises naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'image not found: {path}')
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f'cannot decode image: {path}')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_mask(path: str | Path) -> np.ndarray:
    """HxW uint8 class ids; a missing or unreadable file raises naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'mask not found: {path}')
    m = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if m is None:
        raise ValueError(f'cannot decode mask: {path}')
    if m.ndim == 3:
        raise ValueError(f'mask must be single-channel class ids: {path}')
    return m.astype(np.uint8)


def write_image(path: str | Path, rgb: np.ndarray) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f'cannot write image: {path}')


def write_mask(path: str | Path, mask: np.ndarray) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), mask.astype(np.uint8)):
        raise OSError(f'cannot write mask: {path}')


# --- Helpers shared by the writers (`dmnet synth`, `dmnet preprocess`), appended. ---

def frame_stem(index: int) -> str:
    """Zero-padded stem for frame `index`: sorting stems gives temporal order."""
    if index < 0:
        raise ValueError(f'frame index must be >= 0, got {index}')
    return f'{index:06d}'


def write_frame(root: str | Path, seq: str, stem: str, rgb: np.ndarray | None,
                masks: dict[str, np.ndarray]) -> None:
    """Write one frame (when `rgb` is given) and its masks (task -> HxW uint8) in the layout."""
    seq_dir = Path(root) / seq
    if rgb is not None:
        write_image(seq_dir / IMAGE_DIR / f'{stem}.png', rgb)
    for task, mask in masks.items():
        write_mask(seq_dir / MASK_DIR / task / f'{stem}.png', mask)


def auto_splits(names: list[str], val: int | None = None,
                test: int | None = None) -> dict[str, list[str]]:
    """Split sequence names (in order) into train/val/test: the last `test` go to test, the
    `val` before them to val, the rest to train.

    With `val`/`test` None: one sequence is used for all three splits (a smoke demo, the splits
    overlap); two give train=[a], val=test=[b]; three or more hold out about 15 % each (>= 1).
    """
    n = len(names)
    if n == 0:
        raise ValueError('no sequences to split')
    if val is None and test is None and n <= 2:
        if n == 1:
            return {'train': list(names), 'val': list(names), 'test': list(names)}
        return {'train': names[:1], 'val': names[1:], 'test': names[1:]}
    if val is None:
        val = max(1, round(0.15 * n))
    if test is None:
        test = max(1, round(0.15 * n))
    if val < 0 or test < 0 or val + test >= n:
        raise ValueError(f'cannot hold out val={val} and test={test} of {n} sequences '
                         '(at least one must remain for train)')
    n_train = n - val - test
    return {'train': names[:n_train], 'val': names[n_train:n_train + val],
            'test': names[n_train + val:]}
