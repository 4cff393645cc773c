"""Stills as video, and the mix of training sources.

DMNet trains on clips; real annotated frames are often stills (Endoscapes keyframes are 30 s
apart). `StillClipDataset` films each still with a smooth random camera: a path of `path_frames`
homographies (zoom, pan, roll, tilt) with a lighting drift and occasional blur, warping image and
mask alike, as video object segmentation models pre-train on static images (STM, XMem). The
clip is consecutive frames of the path, the global frames come from anywhere on it, so the
memories see the same scene from nearby views, as in video. One `Augment` draw (flip and colour
jitter, `config.AugmentConfig`) is applied on top to every frame of the sample.

`MixedClips` draws each training sample from one of several such datasets by weight.

Shapes as `clips.ClipDataset`: `clip` T x 3 x H x W uint8, `masks` T x H x W int64,
`global_frames` G x 3 x H x W, `global_masks` G x H x W, (H, W) = `crop`.
"""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from dmnet_core.config import AugmentConfig, StillMotionConfig
from dmnet_core.data.clips import Augment
from dmnet_core.data.endoscapes import find_stills, read_still


class CameraPath:
    """A smooth random camera over one still: each parameter is a slow sinusoid along the path.

    At frame u the view is centred on (cx, cy) in still pixels, zoomed by z (1 = the whole
    still, resized to the output as inference resizes a camera frame), rolled by `roll`
    degrees and tilted (a perspective term); brightness and gain drift the same way.
    """

    def __init__(self, rng: np.random.Generator, src_hw: tuple[int, int],
                 out_hw: tuple[int, int], cfg: StillMotionConfig) -> None:
        self.src_hw, self.out_hw, self.cfg = src_hw, out_hw, cfg
        n = cfg.path_frames

        def wave(amplitude: float) -> tuple[float, float, float]:
            # One slow swing (0.3-1 period over the path): a few px per frame at most.
            return (amplitude * rng.uniform(0.5, 1.0),
                    2 * math.pi * rng.uniform(0.3, 1.0) / max(n, 1),
                    rng.uniform(0, 2 * math.pi))

        self.z0 = rng.uniform(*cfg.zoom)
        self.c0 = (rng.uniform(-1, 1), rng.uniform(-1, 1))    # centre in the free range
        self.waves = {k: wave(a) for k, a in (
            ('z', cfg.zoom_swing), ('x', cfg.pan), ('y', cfg.pan), ('roll', cfg.roll),
            ('tx', cfg.tilt), ('ty', cfg.tilt), ('light', cfg.light), ('gain', cfg.gain))}
        self.blur = [rng.uniform(*cfg.blur_sigma) if rng.random() < cfg.blur_p else 0.0
                     for _ in range(n)]

    def _at(self, key: str, u: int) -> float:
        a, w, phase = self.waves[key]
        return a * math.sin(w * u + phase)

    def homography(self, u: int) -> np.ndarray:
        """3 x 3 map from still pixels to output pixels at path frame `u`."""
        (sh, sw), (oh, ow) = self.src_hw, self.out_hw
        z = self.z0 * math.exp(self._at('z', u))
        z = max(z, 1.0)
        # The view (sw / z x sh / z) stays inside the still where it can.
        free_x, free_y = sw * (1 - 1 / z) / 2, sh * (1 - 1 / z) / 2
        cx = sw / 2 + float(np.clip(self.c0[0] * free_x + self._at('x', u) * sw, -free_x, free_x))
        cy = sh / 2 + float(np.clip(self.c0[1] * free_y + self._at('y', u) * sh, -free_y, free_y))
        # Pixel centres: x + 0.5 is the continuous coordinate, in and out.
        to_centre = np.array([[1, 0, 0.5 - cx], [0, 1, 0.5 - cy], [0, 0, 1.0]])
        scale = np.diag([z * ow / sw, z * oh / sh, 1.0])
        t = math.radians(self._at('roll', u))
        rot = np.array([[math.cos(t), -math.sin(t), 0], [math.sin(t), math.cos(t), 0], [0, 0, 1]])
        # Tilt: a projective term in output units centred on the view (edge scale 1 +- tx).
        tilt = np.array([[1, 0, 0], [0, 1, 0],
                         [2 * self._at('tx', u) / ow, 2 * self._at('ty', u) / oh, 1]])
        from_centre = np.array([[1, 0, ow / 2 - 0.5], [0, 1, oh / 2 - 0.5], [0, 0, 1.0]])
        return from_centre @ tilt @ rot @ scale @ to_centre

    def frame(self, rgb: np.ndarray, mask: np.ndarray, u: int) -> tuple[np.ndarray, np.ndarray]:
        """The still and its mask as seen at path frame `u` (out H x W x 3, out H x W)."""
        oh, ow = self.out_hw
        h = self.homography(u)
        img = cv2.warpPerspective(rgb, h, (ow, oh), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REFLECT)
        m = cv2.warpPerspective(mask, h, (ow, oh), flags=cv2.INTER_NEAREST,
                                borderMode=cv2.BORDER_REFLECT)
        gain, light = 1.0 + self._at('gain', u), self._at('light', u)
        if gain != 1.0 or light != 0.0 or self.blur[u]:
            f = (img.astype(np.float32) - 128.0) * gain + 128.0 + light
            if self.blur[u]:
                f = cv2.GaussianBlur(f, (0, 0), self.blur[u])
            img = np.clip(f + 0.5, 0, 255).astype(np.uint8)
        return img, m


class StillClipDataset(Dataset):
    """Clips made from annotated stills by a random camera path.

    Args:
        root: a stills folder in the Endoscapes layout (`dmnet_core.data.endoscapes`).
        clip_len: T, consecutive path frames per clip (<= motion.path_frames).
        n_global: G, further path frames drawn outside the clip.
        crop: output (H, W).
        motion: the camera path's ranges.
        aug: flip and photometric jitter drawn once per sample (its `scale` is not used: the
            path zooms); None: no such augmentation.
        seed: with the index, fixes each sample's path and augmentation.
        foreground: the target value of instrument pixels: 1 for a binary model;
            `train.objective.ANY_FOREGROUND` for a parts or type model, which the still's
            binary mask supervises through P(any foreground) only.
    """

    def __init__(self, root: str | Path, clip_len: int = 5, n_global: int = 4,
                 crop: tuple[int, int] | list[int] = (256, 320),
                 motion: StillMotionConfig | None = None, aug: AugmentConfig | None = None,
                 seed: int = 0, foreground: int = 1) -> None:
        if not 1 <= foreground <= 254:
            raise ValueError(f'foreground must be a class id in 1..254, got {foreground}')
        self.motion = motion or StillMotionConfig()
        self.motion.validate()
        if clip_len < 1 or n_global < 0:
            raise ValueError(f'clip_len must be >= 1 and n_global >= 0, got {clip_len}, '
                             f'{n_global}')
        if clip_len > self.motion.path_frames:
            raise ValueError(f'data.clip_len {clip_len} is longer than '
                             f'data.still_motion.path_frames {self.motion.path_frames}')
        self.stills = find_stills(root)
        self.clip_len, self.n_global = clip_len, n_global
        self.crop = (int(crop[0]), int(crop[1]))
        self.aug = None
        if aug is not None:
            aug.validate()
            self.aug = AugmentConfig(**{**aug.__dict__, 'scale': [1.0, 1.0]})
        self.seed = seed
        self.foreground = foreground

    def __len__(self) -> int:
        return len(self.stills)

    def _prescale(self, rgb: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Shrink the still (area interpolation, as inference resizes a camera frame) to what
        the path's closest view needs, so the warps never minify (no aliasing) and stay cheap."""
        m = self.motion
        zmax = m.zoom[1] * math.exp(m.zoom_swing)
        (h, w), (oh, ow) = rgb.shape[:2], self.crop
        size = (min(w, math.ceil(ow * zmax)), min(h, math.ceil(oh * zmax)))
        if size == (w, h):
            return rgb, mask
        return (cv2.resize(rgb, size, interpolation=cv2.INTER_AREA),
                cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST))

    def __getitem__(self, idx: int) -> dict:
        if not 0 <= idx < len(self.stills):
            raise IndexError(f'index {idx} out of range for {len(self.stills)} stills')
        still = self.stills[idx]
        rgb, mask = read_still(still)                      # mask H x W uint8 0/1
        rgb, mask = self._prescale(rgb, mask * np.uint8(self.foreground))
        rng = np.random.default_rng([self.seed, idx])
        path = CameraPath(rng, rgb.shape[:2], self.crop, self.motion)
        n, t = self.motion.path_frames, self.clip_len
        start = int(rng.integers(0, n - t + 1))
        outside = [u for u in range(n) if not start <= u < start + t] or list(range(n))
        glob = sorted(int(u) for u in rng.choice(outside, self.n_global,
                                                 replace=len(outside) < self.n_global)) \
            if self.n_global else []
        aug = Augment.draw(rng, self.crop, cfg=self.aug) if self.aug is not None else None
        imgs, masks = [], []
        for pos, u in enumerate(list(range(start, start + t)) + glob):
            img, m = path.frame(rgb, mask, u)
            if aug is not None:
                img, m = aug.image(img, self.crop, frame=pos), aug.mask(m, self.crop)
            imgs.append(img)
            masks.append(m)
        img_t = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()
        mask_t = torch.from_numpy(np.stack(masks).astype(np.int64))
        return {'clip': img_t[:t], 'masks': mask_t[:t],
                'global_frames': img_t[t:], 'global_masks': mask_t[t:],
                'sequence': still.stem, 'start': start,
                'global_index': torch.tensor(glob, dtype=torch.int64)}


class MixedClips(Dataset):
    """Samples drawn from several clip datasets by weight, reproducibly.

    Sample `idx` comes from source k with probability weights[k] / sum(weights), and from a
    uniformly drawn item of it; both draws are a pure function of (seed, idx). Setting `seed`
    (the trainer does, per epoch) passes it on to the sources, for fresh augmentation.
    """

    def __init__(self, sources: list[Dataset], weights: list[float], seed: int = 0) -> None:
        if len(sources) != len(weights) or not sources:
            raise ValueError('MixedClips needs one weight per source')
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f'source weights must be >= 0 and not all 0, got {weights}')
        self.sources = [s for s, w in zip(sources, weights) if w > 0]
        w = np.array([w for w in weights if w > 0], dtype=np.float64)
        self.p = w / w.sum()
        self.seed = seed

    @property
    def seed(self) -> int:
        return self._seed

    @seed.setter
    def seed(self, value: int) -> None:
        self._seed = value
        for s in self.sources:
            s.seed = value

    def __len__(self) -> int:
        return sum(len(s) for s in self.sources)

    def __getitem__(self, idx: int) -> dict:
        rng = np.random.default_rng([self._seed, idx, 1])
        k = int(rng.choice(len(self.sources), p=self.p))
        source = self.sources[k]
        return source[int(rng.integers(len(source)))]
