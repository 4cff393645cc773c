"""CholecSeg8k, as distributed, to the dmnet layout (`convert_cholecseg8k`).

Source layouts accepted:
    SRC/videoXX/videoXX_YYYYY/frame_N_endo.png (+ _watershed_mask.png)  the Kaggle release:
        one sequence per clip folder, named after it (`videoXX_YYYYY`)
    SRC/frame_N_endo.png (+ _watershed_mask.png)                        one flat clip folder:
        one sequence named after SRC
The watershed mask (RGB with R=G=B=class id) is the ground truth. Tool classes: 31 grasper,
32 L-hook electrocautery -> binary instrument and type (TYPE_CLASSES['cholecseg8k']:
1 grasper, 2 l_hook); every other class, the 255 image border and class 50 (outside the
endoscope circle) are background. No parts masks (the dataset has none). Frame stems are
the source frame numbers, zero-padded; fps 25.
"""
from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path

import cv2
import numpy as np

from dmnet_core.config import BINARY_CLASSES, TYPE_CLASSES
from dmnet_core.data.layout import DatasetMeta, frame_stem, write_frame, write_meta

log = logging.getLogger(__name__)

FPS = 25.0
TOOL_TYPES = {31: 1, 32: 2}                # watershed class -> type id (grasper, l_hook)
# Watershed classes of the dataset (5 liver ligament ... 50 black, 255 the image border).
KNOWN_CLASSES = {5, 11, 12, 13, 21, 22, 23, 24, 25, 31, 32, 33, 50, 255}
_FRAME_RE = re.compile(r'^frame_(\d+)_endo\.png$')
_VIDEO_RE = re.compile(r'^video(\d+)')


def _clip_frames(folder: Path) -> dict[int, Path]:
    """frame_N_endo.png files of a folder by frame number (masks are not frames)."""
    out = {}
    for name in os.listdir(folder):
        m = _FRAME_RE.match(name)
        if m:
            out[int(m.group(1))] = folder / name
    return out


def find_clips(src: Path) -> list[Path]:
    """Clip folders below src holding frame_N_endo.png files (src itself if it holds them)."""
    if not src.is_dir():
        raise FileNotFoundError(f'source folder not found: {src}')
    clips = []
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        if any(_FRAME_RE.match(f) for f in filenames):
            clips.append(Path(dirpath))
    if not clips:
        raise FileNotFoundError(f'no CholecSeg8k frames (frame_N_endo.png) under {src}')
    return sorted(clips)


def watershed_to_masks(path: Path, frame_hw: tuple[int, int]) -> dict[str, np.ndarray]:
    """A watershed mask file -> {'binary', 'type'} H x W uint8; errors name the file."""
    if not path.is_file():
        raise FileNotFoundError(f'mask missing: {path}')
    m = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if m is None:
        raise ValueError(f'cannot decode mask: {path}')
    if m.ndim == 3:
        m = m[..., 2]          # R of BGR(A); the dataset stores R=G=B=class id
    if m.shape != frame_hw:
        raise ValueError(f'mask has size {m.shape[1]}x{m.shape[0]}, its frame is '
                         f'{frame_hw[1]}x{frame_hw[0]}: {path}')
    values = np.unique(m)
    bad = sorted(set(values.tolist()) - KNOWN_CLASSES)
    if bad:
        raise ValueError(f'unknown CholecSeg8k class id(s) {bad} in {path}')
    typ = np.zeros(m.shape, np.uint8)
    for cls, type_id in TOOL_TYPES.items():
        typ[m == cls] = type_id
    return {'binary': (typ > 0).astype(np.uint8), 'type': typ}


def _convert_clip(clip: Path, out: Path, name: str) -> int:
    frames = _clip_frames(clip)
    for num in sorted(frames):
        bgr = cv2.imread(str(frames[num]), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f'cannot decode image: {frames[num]}')
        mpath = clip / f'frame_{num}_endo_watershed_mask.png'
        masks = watershed_to_masks(mpath, bgr.shape[:2])
        write_frame(out, name, frame_stem(num), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), masks)
    log.info('%s -> %s: %d frames', clip, out / name, len(frames))
    return len(frames)


def _video_of(name: str) -> str:
    m = _VIDEO_RE.match(name)
    return f'video{int(m.group(1)):02d}' if m else name


def convert_cholecseg8k(src: str | Path, out: str | Path, val_videos: list[str] | None = None,
                        test_videos: list[str] | None = None) -> DatasetMeta:
    """CholecSeg8k -> dmnet layout under `out` (see the module docstring).

    Splits are by video, so no video is in two splits. Default: about 15 % of the videos
    (last in order, >= 1) for test and 10 % (>= 1) before them for val when there are at
    least 3 videos; one video with several clips: last clip test, the one before val; a single
    clip is in all three splits. `val_videos` / `test_videos` (e.g. ['video12', '20']) override.
    """
    src, out = Path(src), Path(out)
    clips = find_clips(src)
    names: dict[str, Path] = {}
    for clip in clips:
        name = clip.name if clip != src or len(clips) == 1 else f'{clip.name}_root'
        if name in names:
            raise ValueError(f'two clip folders map to sequence {name}: {names[name]} and {clip}')
        names[name] = clip
    for name, clip in names.items():
        _convert_clip(clip, out, name)
    seqs = list(names)
    splits = _splits(seqs, val_videos, test_videos)
    meta = DatasetMeta(name='cholecseg8k', fps=FPS,
                       classes={'binary': list(BINARY_CLASSES),
                                'type': list(TYPE_CLASSES['cholecseg8k'])},
                       splits=splits)
    write_meta(out, meta)
    return meta


def _norm_video(v: str) -> str:
    v = v.strip()
    return _video_of(v if v.startswith('video') else f'video{v}')


def _splits(seqs: list[str], val_videos: list[str] | None,
            test_videos: list[str] | None) -> dict[str, list[str]]:
    by_video: dict[str, list[str]] = {}
    for s in seqs:
        by_video.setdefault(_video_of(s), []).append(s)
    videos = sorted(by_video)
    if val_videos is not None or test_videos is not None:
        val_v = [_norm_video(v) for v in val_videos or []]
        test_v = [_norm_video(v) for v in test_videos or []]
        for v in val_v + test_v:
            if v not in by_video:
                raise ValueError(f'unknown video {v!r} for a split; have {videos}')
        if set(val_v) & set(test_v):
            raise ValueError(f'videos {sorted(set(val_v) & set(test_v))} are in val and test')
    elif len(seqs) == 1:
        return {'train': list(seqs), 'val': list(seqs), 'test': list(seqs)}
    elif len(videos) < 3:
        # Too few videos to split by video: hold out the last clips instead.
        ordered = sorted(seqs)
        if len(ordered) == 2:
            return {'train': ordered[:1], 'val': ordered[1:], 'test': ordered[1:]}
        return {'train': ordered[:-2], 'val': ordered[-2:-1], 'test': ordered[-1:]}
    else:
        n_test = max(1, math.ceil(0.15 * len(videos)))
        n_val = max(1, round(0.10 * len(videos)))
        test_v = videos[len(videos) - n_test:]
        val_v = videos[len(videos) - n_test - n_val:len(videos) - n_test]
    held = set(val_v) | set(test_v)
    return {'train': [s for v in videos if v not in held for s in by_video[v]],
            'val': [s for v in val_v for s in by_video[v]],
            'test': [s for v in test_v for s in by_video[v]]}
