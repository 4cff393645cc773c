"""Binary scores on real annotated folders, read in place: validation and `bench/real_clip.py`.

Layouts (recognised by their folders):
- Endoscapes (`dmnet_core.data.endoscapes`): ROOT/images/*.jpg + ROOT/masks/*.png, class 6 =
  instrument. Stills grouped into one sequence per video, in frame order.
- CholecSeg8k clip: ROOT/video_pixel/frame_N_endo.png + frame_N_endo_watershed_mask.png,
  classes 31 (grasper) and 32 (L-hook) = instrument, 50 = the black surround of the scope view.
  One sequence.

The segmenter runs causally over each sequence (memories carried from frame to frame, reset
between sequences), as the node runs over a video; keyframes 30 s apart are then hard cuts.

Scores:
- `binary_dice`: per-frame Dice, mean over the frames that have an instrument pixel;
- `binary_dice_dataset`: one Dice over all pixels of all frames;
- `empty_frames`, `empty_frames_with_fp`, `empty_frame_instrument_share`: frames without an
  instrument, those where any pixel is labelled instrument, and the share of their pixels so
  labelled (0 is right: black frames, no tool in view);
- `surround_instrument_share` (CholecSeg8k): share of the surround pixels labelled instrument;
- `pred_flicker`, `gt_flicker`: share of pixels whose label changes between consecutive frames.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from dmnet_core.data.endoscapes import find_stills, is_endoscapes, read_still
from dmnet_core.data.layout import read_image

CHOLEC_TOOLS = (31, 32)
CHOLEC_SURROUND = 50


@dataclass
class RealFrame:
    """One annotated frame: RGB H x W x 3 uint8, binary GT H x W uint8, optional surround."""

    stem: str
    rgb: np.ndarray
    gt: np.ndarray
    surround: np.ndarray | None = None


def real_layout(root: str | Path) -> str:
    """'endoscapes' or 'cholecseg8k'; raises FileNotFoundError naming the folder otherwise."""
    root = Path(root)
    if is_endoscapes(root):
        return 'endoscapes'
    if (root / 'video_pixel').is_dir():
        return 'cholecseg8k'
    raise FileNotFoundError(f'{root}: not a real-data folder this reads (Endoscapes: images/ + '
                            'masks/; CholecSeg8k clip: video_pixel/)')


def real_sequences(root: str | Path) -> list[tuple[str, list[Any]]]:
    """(sequence name, frame handles) in time order; `load_frame` reads a handle."""
    root = Path(root)
    if real_layout(root) == 'endoscapes':
        groups: dict[str, list[Any]] = {}
        for still in find_stills(root):
            groups.setdefault(still.video, []).append(still)
        return list(groups.items())
    frames = sorted((root / 'video_pixel').glob('frame_*_endo.png'),
                    key=lambda p: int(p.stem.split('_')[1]))
    if not frames:
        raise FileNotFoundError(f'no frame_*_endo.png under {root / "video_pixel"}')
    return [(root.name, frames)]


def load_frame(handle: Any) -> RealFrame:
    """Read one frame of `real_sequences`; errors name the file."""
    if not isinstance(handle, Path):                      # an Endoscapes Still
        rgb, gt = read_still(handle)
        return RealFrame(handle.stem, rgb, gt)
    n = handle.stem.split('_')[1]
    shed = handle.with_name(f'frame_{n}_endo_watershed_mask.png')
    if not shed.is_file():
        raise FileNotFoundError(f'missing ground truth {shed}')
    rgb = read_image(handle)
    ids = cv2.imread(str(shed), cv2.IMREAD_GRAYSCALE)
    if ids is None or ids.shape != rgb.shape[:2]:
        raise ValueError(f'unreadable or wrongly sized ground truth: {shed}')
    return RealFrame(handle.stem, rgb, np.isin(ids, CHOLEC_TOOLS).astype(np.uint8),
                     ids == CHOLEC_SURROUND)


def iter_real(root: str | Path) -> Iterator[tuple[str, RealFrame]]:
    """(sequence name, frame) over a whole folder, sequence by sequence, in time order."""
    for name, handles in real_sequences(root):
        for h in handles:
            yield name, load_frame(h)


class BinaryScorer:
    """Accumulates the module's binary scores over frames (predictions and GT are 0/1)."""

    def __init__(self) -> None:
        self.dice: list[float] = []
        self.inter = self.total = 0
        self.empty = self.empty_fp = self.empty_px = self.empty_with_fp = 0
        self.surround_fp = self.surround_px = 0
        self.flicker = {'pred': [0, 0], 'gt': [0, 0]}     # changed pixels, pixels compared
        self._prev: tuple[str, np.ndarray, np.ndarray] | None = None

    def update(self, sequence: str, pred: np.ndarray, frame: RealFrame) -> None:
        pred = (pred > 0).astype(np.uint8)
        gt = frame.gt
        inter, area = int((pred & gt).sum()), int(pred.sum() + gt.sum())
        self.inter += inter
        self.total += area
        if gt.any():
            self.dice.append(2 * inter / area)
        else:
            n_fp = int(pred.sum())
            self.empty += 1
            self.empty_fp += n_fp
            self.empty_px += pred.size
            self.empty_with_fp += int(n_fp > 0)
        if frame.surround is not None:
            self.surround_fp += int(pred[frame.surround].sum())
            self.surround_px += int(frame.surround.sum())
        if self._prev is not None and self._prev[0] == sequence:
            for key, now, before in (('pred', pred, self._prev[1]), ('gt', gt, self._prev[2])):
                self.flicker[key][0] += int((now != before).sum())
                self.flicker[key][1] += now.size
        self._prev = (sequence, pred, gt)

    def summary(self) -> dict:
        def share(a: int, b: int) -> float | None:
            return a / b if b else None

        return {
            'frames': len(self.dice) + self.empty,
            'frames_with_instrument': len(self.dice),
            'binary_dice': float(np.mean(self.dice)) if self.dice else None,
            'binary_dice_dataset': share(2 * self.inter, self.total),
            'empty_frames': self.empty,
            'empty_frames_with_fp': self.empty_with_fp,
            'empty_frame_instrument_share': share(self.empty_fp, self.empty_px),
            'surround_instrument_share': share(self.surround_fp, self.surround_px),
            'pred_flicker': share(*self.flicker['pred']),
            'gt_flicker': share(*self.flicker['gt']),
        }


def score_real(segmenter: Any, root: str | Path, keep: bool = False) -> dict:
    """Run `segmenter` causally over a real folder and score it (see the module docstring).

    Args:
        segmenter: a `dmnet_core.Segmenter` (its memory settings are what is scored).
        root: an Endoscapes or CholecSeg8k-clip folder.
        keep: also return (sequence, frame, prediction) of every frame under 'kept' (for
            pictures).
    """
    scorer = BinaryScorer()
    kept: list[tuple[str, RealFrame, np.ndarray]] = []
    n, t0 = 0, time.perf_counter()
    for name, handles in real_sequences(root):
        segmenter.reset()
        for h in handles:
            frame = load_frame(h)
            pred = (segmenter.step(frame.rgb) > 0).astype(np.uint8)
            scorer.update(name, pred, frame)
            n += 1
            if keep:
                kept.append((name, frame, pred))
    out = {'data': str(root), 'layout': real_layout(root), **scorer.summary(),
           'ms_per_frame': 1000 * (time.perf_counter() - t0) / max(n, 1)}
    if keep:
        out['kept'] = kept
    return out
