"""Endoscapes2023 segmentation stills, read in place (no copy): binary instrument masks.

Layout (Murali et al., arXiv 2312.12429; as in `../shared/data/endoscapes_seg/{train,val}`):
    ROOT/images/<video>_<frame>.jpg    RGB keyframes (854x480), 30 s apart: stills, not video
    ROOT/masks/<video>_<frame>.png     uint8 class ids, same stem
Mask values: 0 background, 1-5 anatomy (cystic plate, Calot's triangle, cystic artery, cystic
duct, gallbladder), 6 tool (every instrument), 7 (rare), 255 unlabelled anatomy. Binary task:
6 -> instrument, everything else background. All-black frames (camera outside the body) have
empty masks and are kept: a model must answer nothing there.

The data is CC BY-NC-SA 4.0; weights trained on it inherit that (non-commercial).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dmnet_core.data.layout import read_image, read_mask

TOOL_CLASS = 6
KNOWN_VALUES = frozenset({0, 1, 2, 3, 4, 5, 6, 7, 255})
IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png')


@dataclass(frozen=True)
class Still:
    """One annotated frame: `video` is the stem's part before the first '_'."""

    stem: str
    video: str
    image: Path
    mask: Path


def is_endoscapes(root: str | Path) -> bool:
    """Whether `root` looks like the Endoscapes layout (images/ and masks/ folders)."""
    root = Path(root)
    return (root / 'images').is_dir() and (root / 'masks').is_dir()


def find_stills(root: str | Path) -> list[Still]:
    """Every annotated still under `root`, sorted by (video, frame number).

    Raises:
        FileNotFoundError: no such folder, no images/ or masks/, no frames, or a frame whose
            mask is missing (named).
    """
    root = Path(root)
    for sub in ('images', 'masks'):
        if not (root / sub).is_dir():
            raise FileNotFoundError(f'not an Endoscapes folder (no {sub}/): {root}')
    images = [p for p in (root / 'images').iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        raise FileNotFoundError(f'no frames (*.jpg, *.png) in {root / "images"}')
    stills = []
    for img in images:
        mask = root / 'masks' / f'{img.stem}.png'
        if not mask.is_file():
            raise FileNotFoundError(f'mask not found for {img}: {mask}')
        stills.append(Still(img.stem, img.stem.split('_')[0], img, mask))
    return sorted(stills, key=_order)


def _order(still: Still) -> tuple:
    """Numeric parts sort as numbers ('9_250' before '10_125')."""
    return tuple(int(p) if p.isdigit() else p for p in still.stem.split('_'))


def read_still(still: Still) -> tuple[np.ndarray, np.ndarray]:
    """(H x W x 3 uint8 RGB, H x W uint8 binary instrument mask); errors name the file."""
    rgb = read_image(still.image)
    ids = read_mask(still.mask)
    if ids.shape != rgb.shape[:2]:
        raise ValueError(f'mask size {ids.shape[1]}x{ids.shape[0]} differs from its frame '
                         f'{rgb.shape[1]}x{rgb.shape[0]}: {still.mask}')
    bad = sorted(set(np.unique(ids).tolist()) - KNOWN_VALUES)
    if bad:
        raise ValueError(f'unknown Endoscapes class value(s) {bad} in {still.mask}')
    return rgb, (ids == TOOL_CLASS).astype(np.uint8)
