"""Light and camera effects: the scope's light fall-off, exposure, white balance, defocus,
motion blur, smoke, lens fogging, sensor noise and compression.

`draw_optics` draws one sequence's settings (most are per sequence, some drift per frame);
the `apply_*` functions work on H x W x 3 float32 RGB frames (0..255, unclipped) and never
touch labels: masks describe the instruments, whatever the camera did to their pixels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from dmnet_core.data.synth.fov import Fov
from dmnet_core.data.synth.tissue import noise

SMOKE_RGB = np.array([205, 200, 200], np.float32)
FOG_RGB = np.array([214, 210, 206], np.float32)


@dataclass
class Optics:
    """One sequence's light and camera settings (per-frame arrays have one entry per frame)."""

    exposure: np.ndarray      # per-frame gain (1 = nominal; > 1.3 washes out, < 0.7 dark)
    wb: np.ndarray            # 3 per-channel gains (white balance)
    edge_falloff: float       # light lost at the view's edge (0..1)
    dist_power: float         # brightness ~ distance ** -dist_power
    defocus: np.ndarray       # per-frame Gaussian sigma (px), 0 = sharp
    noise_sigma: float        # sensor noise (0..255 units)
    jpeg_quality: int         # 0: no compression artefacts
    fog: np.ndarray           # per-frame lens fogging 0..1
    fog_field: np.ndarray | None   # H x W float32 (where condensation sits)


def _events(rng: np.random.Generator, frames: int, rate: float, dur: tuple[float, float],
            peak: tuple[float, float]) -> np.ndarray:
    """Smooth bumps at random times (a Poisson number of them), per-frame 0..1."""
    out = np.zeros(frames)
    t = np.arange(frames)
    for _ in range(int(rng.poisson(rate))):
        start, d = rng.uniform(-0.3 * frames, frames), rng.uniform(*dur)
        x = (t - start) / d
        out = np.maximum(out, rng.uniform(*peak) * np.where((x > 0) & (x < 1),
                                                             np.sin(np.pi * x), 0.0))
    return out


def draw_optics(rng: np.random.Generator, frames: int, size: tuple[int, int], style: str,
                effects: bool) -> Optics:
    """Random light and camera settings for a sequence ('robotic' or 'laparoscopic')."""
    h, w = size
    s = min(h, w) / 256.0
    if not effects:
        z = np.zeros(frames)
        return Optics(np.ones(frames), np.ones(3), 0.0, 0.0, z, 0.0, 0, z, None)
    t = np.arange(frames)
    # Exposure: mostly near nominal, sometimes clearly over or under; auto-exposure drifts.
    u = rng.random()
    base = rng.uniform(1.25, 1.6) if u < 0.12 else rng.uniform(0.45, 0.7) if u < 0.27 \
        else rng.uniform(0.8, 1.15)
    drift = 1.0 + 0.08 * np.sin(2 * math.pi * t / rng.uniform(40, 150) + rng.uniform(0, 6.3))
    wb = np.exp(rng.normal(0, 0.07, 3))
    wb /= wb.mean()
    defocus = np.full(frames, rng.uniform(0.0, 1.6) * s if rng.random() < 0.5 else 0.0)
    defocus = np.maximum(defocus, 3.0 * s * _events(rng, frames, frames / 150, (8, 30),
                                                   (0.4, 1.0)))
    q = int(rng.integers(25, 90)) if rng.random() < 0.6 else 0
    fog = _events(rng, frames, frames / 250 if style == 'laparoscopic' else frames / 600,
                  (30, 120), (0.2, 0.55))
    fog_field = noise(rng, h, w, 60 * s) if fog.any() else None
    return Optics(
        exposure=base * drift,
        wb=wb,
        edge_falloff=float(rng.uniform(0.35, 0.8) if style == 'laparoscopic'
                           else rng.uniform(0.1, 0.5)),
        dist_power=float(rng.uniform(0.5, 1.3)),
        defocus=defocus,
        noise_sigma=float(rng.uniform(0.5, 6.0)),
        jpeg_quality=q,
        fog=fog,
        fog_field=fog_field,
    )


def apply_light(frame: np.ndarray, dist: np.ndarray, fov: Fov, optics: Optics,
                i: int) -> np.ndarray:
    """Scope light: brighter near the optical centre and near the scope; exposure; WB."""
    h, w = frame.shape[:2]
    cx, cy = fov.centre(h, w)
    r = fov.radius(h, w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rr = np.clip(((xx - cx) ** 2 + (yy - cy) ** 2) / (r * r), 0.0, 1.5)
    gain = (1.0 - optics.edge_falloff * rr ** 1.5) * np.power(dist, -optics.dist_power)
    gain = gain * optics.exposure[i]
    return frame * gain[..., None] * optics.wb.astype(np.float32)


def apply_blur(frame: np.ndarray, sigma: float, motion: np.ndarray) -> np.ndarray:
    """Defocus (Gaussian, `sigma` px) and camera motion blur along `motion` (dx, dy px)."""
    length = float(np.hypot(*motion))
    if length >= 2.0:
        n = int(math.ceil(length)) | 1
        k = np.zeros((n, n), np.float32)
        c = n // 2
        ux, uy = motion / length
        cv2.line(k, (int(round(c - ux * c)), int(round(c - uy * c))),
                 (int(round(c + ux * c)), int(round(c + uy * c))), 1.0, 1)
        frame = cv2.filter2D(frame, -1, k / k.sum(), borderType=cv2.BORDER_REFLECT)
    if sigma > 0.3:
        frame = cv2.GaussianBlur(frame, (0, 0), sigma)
    return frame


def apply_smoke(frame: np.ndarray, density: float, smoke_field: np.ndarray,
                i: int) -> np.ndarray:
    """Drifting surgical smoke of `density` 0..1 (the field is larger than the frame)."""
    if density <= 0:
        return frame
    h, w = frame.shape[:2]
    th, tw = smoke_field.shape
    oy, ox = (3 * i) % max(1, th - h), (2 * i) % max(1, tw - w)     # smoke drifts
    f = smoke_field[oy:oy + h, ox:ox + w]
    a = np.clip(density * (0.55 + 0.6 * f), 0, 0.97)[..., None]
    return frame * (1 - a) + SMOKE_RGB * a


def apply_fog(frame: np.ndarray, optics: Optics, i: int) -> np.ndarray:
    """Lens fogging: a milky, low-contrast veil, thicker in patches."""
    level = float(optics.fog[i])
    if level <= 0 or optics.fog_field is None:
        return frame
    a = np.clip(level * (0.5 + optics.fog_field), 0, 0.9)[..., None]
    soft = cv2.GaussianBlur(frame, (0, 0), 2.0 + 4.0 * level)
    return soft * (1 - a) + FOG_RGB * a


def apply_fov(frame: np.ndarray, soft: np.ndarray) -> np.ndarray:
    """Black surround: only light through the optics reaches the sensor."""
    return frame * soft[..., None]


def apply_sensor(frame: np.ndarray, optics: Optics, rng: np.random.Generator) -> np.ndarray:
    """Sensor noise, clipping to uint8 and (optionally) JPEG compression; H x W x 3 uint8."""
    if optics.noise_sigma > 0:
        frame = frame + rng.normal(0, optics.noise_sigma, frame.shape).astype(np.float32)
    rgb = np.clip(frame + 0.5, 0, 255).astype(np.uint8)
    if optics.jpeg_quality > 0:
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        ok, buf = cv2.imencode('.jpg', bgr, [cv2.IMWRITE_JPEG_QUALITY, optics.jpeg_quality])
        if ok:
            rgb = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return rgb
