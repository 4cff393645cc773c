"""The camera's path over the tissue: drift, zoom, roll and quick pans, and the view it gives.

A camera pose is (tx, ty, zoom, angle): the tissue canvas (larger than the frame) is seen
shifted by (tx, ty) px from its centre, magnified by `zoom` and rolled by `angle` radians.
"""
from __future__ import annotations

import math

import cv2
import numpy as np


def draw_camera_path(rng: np.random.Generator, frames: int, style: str, margin: int,
                     effects: bool) -> np.ndarray:
    """Per-frame poses (frames x 4: tx, ty, zoom, angle) of a slow, smooth camera.

    A hand-held laparoscope drifts more than a robot's camera; with `effects`, a few quick pans
    (over about 4 frames) give fast moves and camera motion blur.
    """
    t = np.arange(frames, dtype=np.float64)[:, None]
    cf = 2 * math.pi / rng.uniform(90, 260, 4)
    cp = rng.uniform(0, 2 * math.pi, 4)
    waves = np.sin(cf * t + cp)
    amp = 0.6 if style == 'robotic' else 0.8
    cam = np.concatenate([waves[:, :2] * amp * margin, 1 + 0.05 * waves[:, 2:3],
                          0.05 * waves[:, 3:4]], axis=1)
    if effects:
        for _ in range(int(rng.poisson(frames / 100))):
            tj, step = rng.uniform(0, frames), rng.normal(0, 0.25 * margin, 2)
            x = np.clip((t[:, 0] - tj) / 4.0, 0, 1)
            cam[:, :2] += (x * x * (3 - 2 * x))[:, None] * step
    return cam


def cam_matrix(pose: np.ndarray, size: tuple[int, int], canvas_hw: tuple[int, int]
               ) -> np.ndarray:
    """Inverse map frame -> canvas (2 x 3 float32) for one pose."""
    h, w = size
    th, tw = canvas_hw
    tx, ty, zoom, ang = pose
    a = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]]) / zoom
    off = np.array([tw / 2 + tx, th / 2 + ty]) - a @ np.array([w / 2, h / 2])
    return np.concatenate([a, off[:, None]], axis=1).astype(np.float32)


def view(canvas: np.ndarray, pose: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """What the camera sees of the canvas (H x W x C float32)."""
    h, w = size
    return cv2.warpAffine(canvas, cam_matrix(pose, size, canvas.shape[:2]), (w, h),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT)


def camera_motion(cam: np.ndarray, i: int, size: tuple[int, int],
                  canvas_hw: tuple[int, int]) -> np.ndarray:
    """Displacement (dx, dy px) of the view centre across frame i's exposure."""
    a, b = cam[max(0, i - 1)], cam[min(len(cam) - 1, i + 1)]
    h, w = size
    c = np.array([w / 2, h / 2, 1.0])
    return 0.5 * (cam_matrix(b, size, canvas_hw) @ c - cam_matrix(a, size, canvas_hw) @ c)
