"""Training clips and evaluation frame iterators over a dataset in the dmnet layout.

A training sample is a clip of T consecutive frames (the local window) plus G "global" frames
drawn at random from the WHOLE sequence, future frames included, as the DMNet authors trained.
One set of augmentation parameters (scale/crop, flip, hue/saturation/brightness/contrast, gamma,
blur, noise, JPEG; `config.AugmentConfig`) is drawn per sample and applied to every frame of it,
so the clip and its global frames stay consistent.
Everything returned is uint8 / int64; the trainer normalises.

Shapes: `clip` T x 3 x H x W, `masks` T x H x W, `global_frames` G x 3 x H x W,
`global_masks` G x H x W, with (H, W) = `crop`.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from dmnet_core.config import TASKS, AugmentConfig
from dmnet_core.data.layout import (
    IMAGE_DIR,
    MASK_DIR,
    Sequence,
    list_sequences,
    read_image,
    read_mask,
    read_meta,
)


def _pngs(folder: Path) -> list[str]:
    """Sorted .png file names in a folder (fast: one listdir)."""
    return sorted(n for n in os.listdir(folder) if n.endswith('.png'))


@dataclass(frozen=True)
class Augment:
    """One sample's augmentation, shared by all of its frames.

    The source region (y0, x0, h, w) in source pixels is resized to the crop size. Photometric
    parameters are the same for every frame; only the sensor noise pattern differs per frame
    (seeded by `noise_seed` and the frame's position in the sample), as a real sensor's does.
    """

    y0: float
    x0: float
    h: float
    w: float
    flip: bool
    brightness: float      # added, in 0..255 units
    contrast: float        # multiplied around the mean grey
    saturation: float
    hue: float             # shift in OpenCV hue units (0..180)
    gamma: float = 1.0     # out = 255 * (in / 255) ** gamma
    blur_sigma: float = 0.0        # Gaussian blur (px); 0 = none
    noise_sigma: float = 0.0       # Gaussian noise std (0..255 units); 0 = none
    noise_seed: int = 0
    jpeg_quality: int = 0          # 0 = no compression

    @staticmethod
    def identity(src_hw: tuple[int, int]) -> Augment:
        return Augment(0.0, 0.0, float(src_hw[0]), float(src_hw[1]), False, 0.0, 1.0, 1.0, 0.0)

    @staticmethod
    def draw(rng: np.random.Generator, src_hw: tuple[int, int],
             scale: tuple[float, float] = (1.0, 1.5),
             cfg: AugmentConfig | None = None) -> Augment:
        """Zoom in by a random factor in `scale` around a random point, flip, jitter colours;
        with `cfg` (its `scale` then wins), also gamma, blur, noise and JPEG."""
        c = cfg or AugmentConfig(scale=list(scale))
        sh, sw = src_hw
        z = rng.uniform(*c.scale)
        h, w = sh / z, sw / z
        base = dict(y0=rng.uniform(0, sh - h), x0=rng.uniform(0, sw - w), h=h, w=w,
                    flip=bool(rng.random() < c.flip),
                    brightness=rng.uniform(-c.brightness, c.brightness),
                    contrast=rng.uniform(1 - c.contrast, 1 + c.contrast),
                    saturation=rng.uniform(1 - c.saturation, 1 + c.saturation),
                    hue=rng.uniform(-c.hue, c.hue))
        # Drawn after the above, so the older draws (and their sequence) are unchanged.
        extra: dict = {}
        if c.gamma > 0:
            lg = math.log1p(c.gamma)
            extra['gamma'] = math.exp(rng.uniform(-lg, lg))
        if c.blur_p > 0 and rng.random() < c.blur_p:
            extra['blur_sigma'] = rng.uniform(*c.blur_sigma)
        if c.noise_p > 0 and rng.random() < c.noise_p:
            extra['noise_sigma'] = rng.uniform(*c.noise_sigma)
            extra['noise_seed'] = int(rng.integers(0, 2**31))
        if c.jpeg_p > 0 and rng.random() < c.jpeg_p:
            extra['jpeg_quality'] = int(rng.integers(c.jpeg_quality[0], c.jpeg_quality[1] + 1))
        return Augment(**base, **extra)

    def _matrix(self, out_hw: tuple[int, int]) -> np.ndarray:
        """Affine map from source pixels to output pixels (2 x 3)."""
        oh, ow = out_hw
        sx, sy = ow / self.w, oh / self.h
        # Pixel centres: x_out + 0.5 = (x_src + 0.5 - x0) * sx.
        mat = np.array([[sx, 0.0, (0.5 - self.x0) * sx - 0.5],
                        [0.0, sy, (0.5 - self.y0) * sy - 0.5]])
        if self.flip:
            mat = np.array([[-1.0, 0.0, ow - 1.0], [0.0, 1.0, 0.0]]) @ np.vstack([mat, [0, 0, 1]])
        return mat

    def image(self, rgb: np.ndarray, out_hw: tuple[int, int], frame: int = 0) -> np.ndarray:
        """H_src x W_src x 3 uint8 -> out H x W x 3 uint8; `frame`: position in the sample
        (only the noise pattern depends on it)."""
        oh, ow = out_hw
        if self == Augment.identity(rgb.shape[:2]):
            out = cv2.resize(rgb, (ow, oh), interpolation=cv2.INTER_AREA
                             if rgb.shape[0] > oh else cv2.INTER_LINEAR)
            return out
        out = cv2.warpAffine(rgb, self._matrix(out_hw), (ow, oh), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT)
        if self.saturation != 1.0 or self.hue != 0.0:
            hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV).astype(np.float32)
            hsv[..., 0] = (hsv[..., 0] + self.hue) % 180
            hsv[..., 1] = np.clip(hsv[..., 1] * self.saturation, 0, 255)
            out = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)
        f = out.astype(np.float32)
        f = (f - 128.0) * self.contrast + 128.0 + self.brightness
        if self.gamma != 1.0:
            f = 255.0 * np.power(np.clip(f, 0, 255) / 255.0, self.gamma)
        if self.blur_sigma > 0:
            f = cv2.GaussianBlur(f, (0, 0), self.blur_sigma)
        if self.noise_sigma > 0:
            f = f + np.random.default_rng([self.noise_seed, frame]).normal(
                0, self.noise_sigma, f.shape).astype(np.float32)
        out = np.clip(f + 0.5, 0, 255).astype(np.uint8)
        if self.jpeg_quality > 0:
            ok, buf = cv2.imencode('.jpg', cv2.cvtColor(out, cv2.COLOR_RGB2BGR),
                                   [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
            if ok:
                out = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        return out

    def mask(self, mask: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
        """H_src x W_src uint8 class ids -> out H x W (nearest neighbour, ids never mixed)."""
        oh, ow = out_hw
        if self == Augment.identity(mask.shape[:2]):
            return cv2.resize(mask, (ow, oh), interpolation=cv2.INTER_NEAREST)
        return cv2.warpAffine(mask, self._matrix(out_hw), (ow, oh), flags=cv2.INTER_NEAREST,
                              borderMode=cv2.BORDER_REFLECT)


class ClipDataset(Dataset):
    """Clips of `clip_len` consecutive frames plus `n_global` frames from the whole sequence.

    Args:
        root: dataset folder in the dmnet layout.
        split: split name in dataset.yaml ('train', 'val', 'test'); None: every sequence.
        task: 'binary', 'parts' or 'type'; every sequence used needs its masks.
        clip_len: T, consecutive frames per clip.
        n_global: G, frames drawn at random (without replacement where possible) from the
            whole sequence outside the clip; 0 allowed.
        crop: output (H, W). Frames are resized to it (never cropped without resizing); with
            `augment`, a random zoom (default 1-1.5x), flip and photometric changes are
            drawn per sample (`aug`).
        augment: draw augmentation (else plain resize).
        aug: what augmentation draws (`AugmentConfig`); None: its defaults.
        seed: with the index, fixes the global-frame draw and augmentation of each sample.
        sequences: sequence names to use instead of the split's list.
        weight_task: also return each frame's masks of this task, warped alike, as
            'weight_masks' (the trainer weights the loss per part with them); None: not.
    """

    def __init__(self, root: str | Path, split: str | None, task: str, clip_len: int = 5,
                 n_global: int = 4, crop: tuple[int, int] | list[int] = (256, 320),
                 augment: bool = True, seed: int = 0,
                 sequences: list[str] | None = None,
                 aug: AugmentConfig | None = None, weight_task: str | None = None) -> None:
        if task not in TASKS:
            raise ValueError(f'unknown task {task!r}; expected one of {TASKS}')
        if weight_task is not None and weight_task not in TASKS:
            raise ValueError(f'unknown weight task {weight_task!r}; expected one of {TASKS}')
        self.weight_task = weight_task
        if clip_len < 1 or n_global < 0:
            raise ValueError(f'clip_len must be >= 1 and n_global >= 0, got {clip_len}, '
                             f'{n_global}')
        self.root = Path(root)
        self.meta = read_meta(self.root)
        self.task = task
        self.clip_len, self.n_global = clip_len, n_global
        self.crop = (int(crop[0]), int(crop[1]))
        self.augment, self.seed = augment, seed
        self.aug = aug or AugmentConfig()
        self.aug.validate()
        for tk in (task, weight_task):
            if tk is not None and tk not in self.meta.classes:
                raise ValueError(f'{self.root}: dataset has no {tk!r} task; '
                                 f'has {sorted(self.meta.classes)}')
        self.num_classes = len(self.meta.classes[task])
        if sequences is not None:
            seqs = [Sequence(self.root, n, self.meta.fps) for n in sequences]
        else:
            seqs = list_sequences(self.root, split)
        self.sequences: list[Sequence] = []
        self.frames: list[list[str]] = []       # per sequence: frame file names in order
        self.index: list[tuple[int, int]] = []  # (sequence number, clip start)
        for seq in seqs:
            names = self._check(seq)
            n_starts = len(names) - clip_len + 1
            if n_starts <= 0:
                continue                         # too short for one clip
            k = len(self.sequences)
            self.sequences.append(seq)
            self.frames.append(names)
            self.index.extend((k, s) for s in range(n_starts))
        if not self.index:
            raise ValueError(f'{self.root}: no sequence of split {split!r} has {clip_len} frames')

    def _check(self, seq: Sequence) -> list[str]:
        """Frame names of a sequence; a missing folder or mask raises naming it."""
        img_dir = seq.path / IMAGE_DIR
        if not img_dir.is_dir():
            raise FileNotFoundError(f'sequence folder missing: {img_dir}')
        names = _pngs(img_dir)
        for tk in (self.task, self.weight_task):
            if tk is None:
                continue
            mask_dir = seq.path / MASK_DIR / tk
            if not mask_dir.is_dir():
                raise FileNotFoundError(f'no {tk} masks for sequence {seq.name}: {mask_dir}')
            missing = sorted(set(names) - set(_pngs(mask_dir)))
            if missing:
                raise FileNotFoundError(f'mask not found: {mask_dir / missing[0]} '
                                        f'({len(missing)} frame(s) of {seq.name} have no mask)')
        return names

    def __len__(self) -> int:
        return len(self.index)

    def _mask(self, seq: Sequence, task: str, name: str, hw: tuple[int, int]) -> np.ndarray:
        """One frame's mask of `task`, checked against the frame size and the task's classes."""
        path = seq.path / MASK_DIR / task / name
        mask = read_mask(path)
        if mask.shape != hw:
            raise ValueError(f'mask size {mask.shape[1]}x{mask.shape[0]} differs from its frame '
                             f'{hw[1]}x{hw[0]}: {path}')
        n = len(self.meta.classes[task])
        if int(mask.max()) >= n:
            raise ValueError(f'mask value {int(mask.max())} >= {n} classes of task {task}: {path}')
        return mask

    def _load(self, k: int, j: int, weighted: bool
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Frame, task mask, and (when `weighted`) its `weight_task` mask, else None."""
        seq, name = self.sequences[k], self.frames[k][j]
        rgb = read_image(seq.path / IMAGE_DIR / name)
        hw = rgb.shape[:2]
        weight = self._mask(seq, self.weight_task, name, hw) if weighted else None
        return rgb, self._mask(seq, self.task, name, hw), weight

    def __getitem__(self, idx: int) -> dict:
        if not 0 <= idx < len(self.index):
            raise IndexError(f'index {idx} out of range for {len(self.index)} clips')
        k, start = self.index[idx]
        n = len(self.frames[k])
        rng = np.random.default_rng([self.seed, idx])
        clip_ids = list(range(start, start + self.clip_len))
        # Global frames from the whole video (future included), outside the clip if possible.
        outside = [j for j in range(n) if j < start or j >= start + self.clip_len]
        pool = outside if len(outside) >= self.n_global else list(range(n))
        replace = len(pool) < self.n_global
        glob_ids = sorted(int(j) for j in rng.choice(pool, self.n_global, replace=replace)) \
            if self.n_global else []
        # Weight masks only for the supervised clip frames, not the global ones.
        weighted = self.weight_task is not None
        loaded = [self._load(k, j, weighted and pos < self.clip_len)
                  for pos, j in enumerate(clip_ids + glob_ids)]
        src_hw = loaded[0][0].shape[:2]
        aug = Augment.draw(rng, src_hw, cfg=self.aug) if self.augment \
            else Augment.identity(src_hw)
        imgs, masks, weights = [], [], []
        for pos, (rgb, mask, weight) in enumerate(loaded):
            if rgb.shape[:2] != src_hw:
                # Frames of one sequence share a size; resize stragglers so one warp fits all.
                rgb = cv2.resize(rgb, src_hw[::-1], interpolation=cv2.INTER_LINEAR)
                mask = cv2.resize(mask, src_hw[::-1], interpolation=cv2.INTER_NEAREST)
                if weight is not None:
                    weight = cv2.resize(weight, src_hw[::-1], interpolation=cv2.INTER_NEAREST)
            imgs.append(aug.image(rgb, self.crop, frame=pos))
            masks.append(aug.mask(mask, self.crop))
            if weight is not None:
                weights.append(aug.mask(weight, self.crop))       # the same warp as the mask
        # N x H x W x 3 -> N x 3 x H x W
        img_t = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()
        mask_t = torch.from_numpy(np.stack(masks).astype(np.int64))
        extra = {'weight_masks': torch.from_numpy(np.stack(weights).astype(np.int64))} \
            if weighted else {}                                   # T x H x W
        t = self.clip_len
        h, w = self.crop
        return {**extra,
            'clip': img_t[:t],
            'masks': mask_t[:t],
            'global_frames': img_t[t:] if self.n_global else torch.zeros((0, 3, h, w),
                                                                         dtype=torch.uint8),
            'global_masks': mask_t[t:] if self.n_global else torch.zeros((0, h, w),
                                                                         dtype=torch.int64),
            'sequence': self.sequences[k].name,
            'start': start,
            'global_index': torch.tensor(glob_ids, dtype=torch.int64),   # G frame numbers
        }


class SequenceFrames:
    """Frames of one sequence in temporal order, for evaluation and bag making.

    Iterates `(stem, rgb H x W x 3 uint8, mask H x W uint8 or None)`. The mask is None when
    `task` is None or the sequence has no masks for it (e.g. unlabelled test frames); if the
    task's mask folder exists, a missing mask is an error naming the file.

    Args:
        sequence: a `layout.Sequence` or the path of a sequence folder.
        task: 'binary', 'parts', 'type' or None.
    """

    def __init__(self, sequence: Sequence | str | Path, task: str | None = None) -> None:
        if task is not None and task not in TASKS:
            raise ValueError(f'unknown task {task!r}; expected one of {TASKS}')
        path = sequence.path if isinstance(sequence, Sequence) else Path(sequence)
        img_dir = path / IMAGE_DIR
        if not img_dir.is_dir():
            raise FileNotFoundError(f'sequence folder missing: {img_dir}')
        self.path, self.name, self.task = path, path.name, task
        self.names = _pngs(img_dir)
        if not self.names:
            raise FileNotFoundError(f'no frames (*.png) in {img_dir}')
        self.mask_dir = path / MASK_DIR / task if task else None
        if self.mask_dir is not None and not self.mask_dir.is_dir():
            self.mask_dir = None

    @property
    def has_masks(self) -> bool:
        return self.mask_dir is not None

    @property
    def stems(self) -> list[str]:
        return [n[:-4] for n in self.names]

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> tuple[str, np.ndarray, np.ndarray | None]:
        name = self.names[i]
        rgb = read_image(self.path / IMAGE_DIR / name)
        mask = None
        if self.mask_dir is not None:
            mask = read_mask(self.mask_dir / name)
            if mask.shape != rgb.shape[:2]:
                raise ValueError(f'mask size {mask.shape[1]}x{mask.shape[0]} differs from its '
                                 f'frame {rgb.shape[1]}x{rgb.shape[0]}: {self.mask_dir / name}')
        return name[:-4], rgb, mask

    def __iter__(self) -> Iterator[tuple[str, np.ndarray, np.ndarray | None]]:
        for i in range(len(self.names)):
            yield self[i]
