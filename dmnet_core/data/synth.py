"""Synthetic surgical video: tissue, articulated instruments and per-frame masks.

It exists to test and demonstrate the whole pipeline without the real datasets; it is not a
claim about real surgery. Each sequence has a tissue-like textured background seen through a
slowly moving camera (specular spots, blood-red pools, vessels, endoscope vignetting) and 1-3
articulated instruments (shaft, wrist, two-jaw clasper) of the types in
`TYPE_CLASSES['synth']`, each with its own look. Instruments enter and leave the view, occlude
each other, open and close their jaws and are motion-blurred. Hard cases on purpose, so that
temporal memory has something to win on: specular flashes, smoke (including short dense bursts
that almost hide everything), short occlusions of an instrument's tip by a tissue fold, sudden
fast moves and look-alike instruments (same shaft and jaw colours, only the jaw shape differs).

Masks describe the instruments at the middle of the exposure (the blurred colours spread a
little beyond them); pixels hidden by a tissue fold are background, pixels under smoke or a
specular flash keep their instrument label. Everything is drawn with numpy/OpenCV from one
seeded generator, so a seed gives byte-identical files.

Naming: `s` = image scale (min(H, W) / 256), lengths below are in units of `s` pixels.
"""
from __future__ import annotations

import argparse
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from dmnet_core.cli import parse_size
from dmnet_core.config import BINARY_CLASSES, PARTS_CLASSES, TYPE_CLASSES
from dmnet_core.data.layout import DatasetMeta, auto_splits, frame_stem, write_frame, write_meta

log = logging.getLogger(__name__)

FLAT_BACKGROUND = (0, 255, 0)   # effects=False background: a colour no instrument uses
SHAFT, WRIST, CLASPER = 1, 2, 3  # PARTS_CLASSES ids
Rgb = tuple[int, int, int]


@dataclass(frozen=True)
class Look:
    """How one instrument type looks (RGB colours, sizes in units of s)."""

    shaft: Rgb
    wrist: Rgb
    jaw: Rgb
    shaft_w: float       # shaft diameter
    wrist_len: float
    jaw_len: float
    jaw_w: float         # width of one jaw at its base
    jaw_tip: float       # half width at the jaw's tip (0 = pointed)
    jaw_bend: float      # sideways bend of the jaw's middle (curved scissor blades)


# Type id (TYPE_CLASSES['synth']) -> look: black shaft + broad silver jaws; grey shaft + short
# dark blunt jaws; black shaft + thin curved pale-gold blades.
LOOKS = {
    1: Look((38, 38, 44), (150, 150, 156), (190, 190, 196), 24, 20, 30, 11, 3.5, 0.0),
    2: Look((100, 103, 110), (58, 58, 64), (118, 118, 124), 26, 16, 20, 12, 5.0, 0.0),
    3: Look((32, 32, 36), (160, 160, 162), (205, 185, 135), 22, 22, 30, 7, 0.5, 4.0),
}


def _smoothstep(x: np.ndarray | float) -> np.ndarray | float:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _rot(v: np.ndarray, a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def _quad(p0: np.ndarray, p1: np.ndarray, w0: float, w1: float) -> np.ndarray:
    """Polygon of a segment p0 -> p1 with half widths w0 at p0 and w1 at p1 (4 x 2)."""
    d = p1 - p0
    n = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-9)
    return np.stack([p0 + n * w0, p1 + n * w1, p1 - n * w1, p0 - n * w0])


@dataclass
class Instrument:
    """One instrument's look and motion; `pose(t)` gives its polygons at (fractional) frame t."""

    type_id: int
    look: Look
    entry: np.ndarray            # point on the image border (x, y)
    tangent: np.ndarray          # border direction at the entry (for sliding)
    theta0: float                # shaft direction angle (radians, image coordinates)
    reach: float                 # shaft length inside the image at full insertion (px)
    margin: float                # how far outside the border the wrist sits when retracted
    enter_t: float               # insertion starts (negative: already in at frame 0)
    exit_t: float                # retraction starts (beyond the end: stays)
    ramp: float                  # frames to enter / leave
    freq: np.ndarray             # angular frequencies (rad/frame) of the slow motions
    phase: np.ndarray
    jerks: list[tuple[float, float]] = field(default_factory=list)  # (time, angle step)

    def insertion(self, t: float) -> float:
        """0 (outside) .. 1 (fully in)."""
        return float(_smoothstep((t - self.enter_t) / self.ramp)
                     * (1.0 - _smoothstep((t - self.exit_t) / self.ramp)))

    def pose(self, t: float, s: float) -> list[tuple[int, Rgb, np.ndarray]]:
        """Draw list (part id, colour, polygon N x 2 float) back to front, at frame time t."""
        lk, f, ph = self.look, self.freq, self.phase
        ins = self.insertion(t)
        theta = self.theta0 + 0.18 * math.sin(f[0] * t + ph[0])
        for tj, step in self.jerks:          # sudden fast moves (motion blur)
            theta += step * float(_smoothstep((t - tj) / 3.0))
        d = np.array([math.cos(theta), math.sin(theta)])
        entry = self.entry + self.tangent * (14.0 * s * math.sin(f[1] * t + ph[1]))
        depth = -self.margin + ins * (self.margin + self.reach
                                      + 10.0 * s * math.sin(f[2] * t + ph[2]))
        p_wrist = entry + d * depth                         # shaft ends, wrist starts
        far = entry - d * (3.0 * self.margin + 40.0 * s)    # shaft starts well outside
        d2 = _rot(d, 0.55 * math.sin(f[3] * t + ph[3]))     # wrist articulation
        p_jaw = p_wrist + d2 * (lk.wrist_len * s)
        opening = 0.5 * max(0.0, math.sin(f[4] * t + ph[4]))  # closed part of the time
        hw = 0.5 * lk.shaft_w * s
        out: list[tuple[int, Rgb, np.ndarray]] = []
        # Cylindrical shading: dark rim, body, a specular stripe along the axis.
        out.append((SHAFT, _scale(lk.shaft, 0.7), _quad(far, p_wrist, hw, hw)))
        out.append((SHAFT, lk.shaft, _quad(far, p_wrist, 0.7 * hw, 0.7 * hw)))
        out.append((SHAFT, _lighten(lk.shaft, 0.55), _quad(far, p_wrist, 0.14 * hw, 0.14 * hw)))
        ww = 0.85 * hw
        out.append((WRIST, lk.wrist, _quad(p_wrist, p_jaw, ww, ww)))
        out.append((WRIST, _lighten(lk.wrist, 0.35), _quad(p_wrist, p_jaw, 0.25 * ww, 0.25 * ww)))
        for side in (-1.0, 1.0):
            dj = _rot(d2, side * opening)
            nj = np.array([-dj[1], dj[0]])
            base = p_jaw + np.array([-d2[1], d2[0]]) * side * 0.25 * lk.jaw_w * s
            tip = base + dj * lk.jaw_len * s
            mid = base + dj * 0.5 * lk.jaw_len * s + nj * side * lk.jaw_bend * s
            half = 0.5 * lk.jaw_w * s
            poly = np.stack([base + nj * half, mid + nj * 0.7 * half, tip + nj * lk.jaw_tip * s,
                             tip - nj * lk.jaw_tip * s, mid - nj * 0.7 * half, base - nj * half])
            out.append((CLASPER, lk.jaw, poly))
            out.append((CLASPER, _lighten(lk.jaw, 0.4), _quad(base, mid, 0.2 * half, 0.1 * half)))
        return out

    def tip(self, t: float, s: float) -> np.ndarray:
        """Centre of the clasper at time t (x, y)."""
        poly = self.pose(t, s)[-2][2]
        return poly.mean(axis=0)


def _scale(c: Rgb, k: float) -> Rgb:
    return tuple(int(min(255, v * k)) for v in c)  # type: ignore[return-value]


def _lighten(c: Rgb, k: float) -> Rgb:
    return tuple(int(v + (255 - v) * k) for v in c)  # type: ignore[return-value]


def _noise(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """Smooth value noise in about [0, 1], features of about `scale` px (H x W float32)."""
    gh, gw = max(2, int(h / scale) + 2), max(2, int(w / scale) + 2)
    g = rng.random((gh, gw), dtype=np.float32)
    return np.clip(cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)


def _tissue(rng: np.random.Generator, h: int, w: int, s: float) -> np.ndarray:
    """A tissue-like texture (H x W x 3 float32 RGB, 0..255): pink-red mucosa, yellow fat,
    dark blood pools, vessels, fine grain and small specular spots."""
    pink = np.array([196, 98, 88], np.float32)
    deep = np.array([150, 48, 46], np.float32)
    fat = np.array([218, 182, 122], np.float32)
    blood = np.array([96, 10, 14], np.float32)
    n1 = _noise(rng, h, w, 70 * s)[..., None]
    img = pink * (1 - n1) + deep * n1
    fat_a = _smoothstep((_noise(rng, h, w, 45 * s) - 0.62) / 0.15)[..., None]
    img = img * (1 - fat_a) + fat * fat_a
    blood_a = _smoothstep((_noise(rng, h, w, 35 * s) - 0.72) / 0.1)[..., None]
    img = img * (1 - 0.9 * blood_a) + blood * 0.9 * blood_a
    vessels = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(4, 9))):
        p = rng.random(2) * [w, h]
        ang = rng.uniform(0, 2 * math.pi)
        pts = []
        for _ in range(12):
            pts.append(p.copy())
            ang += rng.normal(0, 0.35)
            p = p + 18 * s * np.array([math.cos(ang), math.sin(ang)])
        cv2.polylines(vessels, [np.round(np.array(pts)).astype(np.int32)], False, 1.0,
                      thickness=max(1, int(rng.integers(1, 4) * s)))
    vessels = cv2.GaussianBlur(vessels, (0, 0), 1.2 * s)[..., None]
    img = img * (1 - 0.6 * vessels) + np.array([120, 28, 52], np.float32) * 0.6 * vessels
    light = 0.72 + 0.4 * _noise(rng, h, w, 90 * s)          # uneven surface lighting
    grain = 0.94 + 0.12 * _noise(rng, h, w, 3 * s)
    img *= (light * grain)[..., None]
    spec = _smoothstep((_noise(rng, h, w, 4 * s) * _noise(rng, h, w, 30 * s) - 0.66) / 0.12)
    img = img * (1 - spec[..., None]) + 250.0 * spec[..., None]
    return cv2.GaussianBlur(np.clip(img, 0, 255), (0, 0), 0.7)


@dataclass
class Scene:
    """Everything random about one sequence, drawn up front from one generator."""

    size: tuple[int, int]
    frames: int
    instruments: list[Instrument]
    texture: np.ndarray | None        # Ht x Wt x 3 float32 (None: flat background)
    smoke_field: np.ndarray | None    # Ht x Wt float32
    cam: np.ndarray                   # per-frame (tx, ty, zoom, angle)
    smoke: np.ndarray                 # per-frame smoke density 0..1
    flashes: list[tuple[int, int, float, float, float]]    # (start, length, x, y, radius)
    folds: list[tuple[int, int, int]]                       # (start, length, instrument)
    noise_seed: int


def make_scene(rng: np.random.Generator, frames: int, size: tuple[int, int],
               effects: bool = True) -> Scene:
    """Draw a sequence's scene: instruments, camera path and hard-case events."""
    h, w = size
    s = min(h, w) / 256.0
    n_inst = int(rng.choice([1, 2, 3], p=[0.3, 0.45, 0.25]))
    types = [int(t) for t in rng.integers(1, len(TYPE_CLASSES['synth']), size=n_inst)]
    looks = [LOOKS[t] for t in types]
    if n_inst > 1 and rng.random() < 0.35:
        # Look-alike instruments: shared shaft, wrist and jaw colours; only jaw shapes differ.
        ref = looks[0]
        looks = [replace(lk, shaft=ref.shaft, wrist=ref.wrist, jaw=ref.jaw) for lk in looks]
    sides = rng.permutation(4)[:n_inst]
    instruments = []
    for i, (t_id, lk, side) in enumerate(zip(types, looks, sides)):
        tint = int(rng.integers(-8, 9))
        lk = replace(lk, shaft=_tint(lk.shaft, tint), jaw=_tint(lk.jaw, tint))
        u = rng.uniform(0.2, 0.8)
        # Border point and inward normal for side 0 top, 1 right, 2 bottom, 3 left.
        entry, normal, tangent = {
            0: ((u * w, 0.0), (0.0, 1.0), (1.0, 0.0)),
            1: ((w - 1.0, u * h), (-1.0, 0.0), (0.0, 1.0)),
            2: ((u * w, h - 1.0), (0.0, -1.0), (1.0, 0.0)),
            3: ((0.0, u * h), (1.0, 0.0), (0.0, 1.0)),
        }[int(side)]
        entry, normal = np.array(entry), np.array(normal)
        target = np.array([w, h]) * 0.5 + rng.normal(0, 0.12, 2) * [w, h]
        to_target = target - entry
        ang_n = math.atan2(normal[1], normal[0])
        # Keep the shaft within 45 degrees of the inward normal so retraction hides it.
        off = (math.atan2(to_target[1], to_target[0]) - ang_n + math.pi) % (2 * math.pi) - math.pi
        theta0 = ang_n + float(np.clip(off, -0.7, 0.7))
        tool_len = (lk.wrist_len + lk.jaw_len) * s
        reach = max(20.0 * s, float(np.hypot(*to_target)) - tool_len)
        ramp = float(rng.uniform(6, 14))
        if i == 0 and rng.random() < 0.75:
            enter_t = -ramp                       # present from the first frame
        else:
            enter_t = float(rng.uniform(-ramp, 0.5 * frames))
        # Most instruments stay; some leave after a while (and the view is briefly empty).
        exit_t = float(rng.uniform(enter_t + ramp + 0.3 * frames, 3.0 * frames + 10))
        freq = 2 * math.pi / rng.uniform([60, 80, 50, 40, 25], [160, 200, 120, 90, 60])
        jerks = [(float(rng.uniform(0, frames)),
                  float(rng.choice([-1, 1]) * rng.uniform(0.15, 0.3)))
                 for _ in range(int(rng.poisson(frames / 60)))]
        instruments.append(Instrument(
            type_id=t_id, look=lk, entry=entry, tangent=np.array(tangent), theta0=theta0,
            reach=reach, margin=1.7 * tool_len + lk.shaft_w * s, enter_t=enter_t, exit_t=exit_t,
            ramp=ramp, freq=freq, phase=rng.uniform(0, 2 * math.pi, 5), jerks=jerks))

    m = int(0.25 * max(h, w))
    texture = _tissue(rng, h + 2 * m, w + 2 * m, s) if effects else None
    smoke_field = _noise(rng, h + 2 * m, w + 2 * m, 50 * s) if effects else None
    # Slow camera: drift, a little zoom and roll (per frame tx, ty, zoom, angle).
    t = np.arange(frames, dtype=np.float64)[:, None]
    cf = 2 * math.pi / rng.uniform(90, 260, 4)
    cp = rng.uniform(0, 2 * math.pi, 4)
    waves = np.sin(cf * t + cp)
    cam = np.concatenate([waves[:, :2] * 0.6 * m, 1 + 0.04 * waves[:, 2:3],
                          0.04 * waves[:, 3:4]], axis=1)

    smoke = np.zeros(frames)
    flashes: list[tuple[int, int, float, float, float]] = []
    folds: list[tuple[int, int, int]] = []
    if effects:
        tt = np.arange(frames)
        for _ in range(int(rng.poisson(frames / 90)) + int(rng.random() < 0.5)):
            start, dur = rng.uniform(-5, frames), rng.uniform(10, 35)
            peak = rng.uniform(0.35, 0.7)
            x = (tt - start) / dur
            smoke = np.maximum(smoke, peak * np.where((x > 0) & (x < 1), np.sin(np.pi * x), 0))
        for _ in range(int(rng.poisson(frames / 80))):          # dense bursts, 2-4 frames
            start, dur = int(rng.integers(0, frames)), int(rng.integers(2, 5))
            smoke[start:start + dur] = np.maximum(smoke[start:start + dur], 0.92)
        for _ in range(int(rng.poisson(frames / 25))):
            start = int(rng.integers(0, frames))
            inst = instruments[int(rng.integers(0, n_inst))]
            if rng.random() < 0.7 and inst.insertion(start) > 0.5:
                x, y = inst.tip(start, s)                        # a glint on the jaws
            else:
                x, y = rng.random() * w, rng.random() * h
            flashes.append((start, int(rng.integers(1, 3)), float(x), float(y),
                            float(rng.uniform(8, 26) * s)))
        for _ in range(int(rng.poisson(frames / 70))):
            folds.append((int(rng.integers(0, frames)), int(rng.integers(3, 9)),
                          int(rng.integers(0, n_inst))))
    return Scene(size=(h, w), frames=frames, instruments=instruments, texture=texture,
                 smoke_field=smoke_field, cam=cam, smoke=smoke, flashes=flashes, folds=folds,
                 noise_seed=int(rng.integers(0, 2**31)))


def _tint(c: Rgb, k: int) -> Rgb:
    return tuple(int(np.clip(v + k, 0, 255)) for v in c)  # type: ignore[return-value]


def _draw_instruments(scene: Scene, t: float, s: float) -> tuple[np.ndarray, np.ndarray,
                                                                  np.ndarray]:
    """Colour (H x W x 3 uint8), parts and type (H x W uint8) of all instruments at time t.

    Every colour polygon is drawn with its part and type id, so masks match pixels exactly;
    later instruments are in front.
    """
    h, w = scene.size
    col = np.zeros((h, w, 3), np.uint8)
    parts = np.zeros((h, w), np.uint8)
    typ = np.zeros((h, w), np.uint8)
    for inst in scene.instruments:
        if inst.insertion(t) <= 0.0:
            continue
        for part, colour, poly in inst.pose(t, s):
            pts = [np.round(poly * 16).astype(np.int32)]       # 4 fractional bits (shift=4)
            cv2.fillPoly(col, pts, colour, lineType=cv2.LINE_8, shift=4)
            cv2.fillPoly(parts, pts, part, lineType=cv2.LINE_8, shift=4)
            cv2.fillPoly(typ, pts, inst.type_id, lineType=cv2.LINE_8, shift=4)
    return col, parts, typ


def _background(scene: Scene, i: int) -> np.ndarray:
    """The camera's view of the tissue at frame i (H x W x 3 float32)."""
    h, w = scene.size
    if scene.texture is None:
        return np.broadcast_to(np.array(FLAT_BACKGROUND, np.float32), (h, w, 3)).copy()
    th, tw = scene.texture.shape[:2]
    tx, ty, zoom, ang = scene.cam[i]
    a = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]]) / zoom
    # Inverse map: texture = A (frame - frame centre) + texture centre + drift.
    off = np.array([tw / 2 + tx, th / 2 + ty]) - a @ np.array([w / 2, h / 2])
    mat = np.concatenate([a, off[:, None]], axis=1).astype(np.float32)
    return cv2.warpAffine(scene.texture, mat, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT)


def render_frame(scene: Scene, i: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Frame i of a scene: (H x W x 3 uint8 RGB, {'binary', 'parts', 'type'} -> H x W uint8)."""
    h, w = scene.size
    s = min(h, w) / 256.0
    effects = scene.texture is not None
    bg = _background(scene, i)
    # Motion blur: average three instants of the exposure; masks are the middle instant.
    offsets = (-0.3, 0.0, 0.3) if effects else (0.0,)
    acc = np.zeros((h, w, 3), np.float32)
    for k, dt in enumerate(offsets):
        col, parts_k, typ_k = _draw_instruments(scene, i + dt, s)
        if k == len(offsets) // 2:
            parts, typ = parts_k, typ_k
        acc += np.where((parts_k > 0)[..., None], col.astype(np.float32), bg)
    frame = acc / len(offsets)
    if effects:
        frame = _effects(scene, i, frame, bg, parts, typ, s)
    rgb = np.clip(frame + 0.5, 0, 255).astype(np.uint8)
    binary = (parts > 0).astype(np.uint8)
    return rgb, {'binary': binary, 'parts': parts, 'type': typ}


def _effects(scene: Scene, i: int, frame: np.ndarray, bg: np.ndarray, parts: np.ndarray,
             typ: np.ndarray, s: float) -> np.ndarray:
    """Tissue folds, specular flashes, vignetting, smoke and sensor noise (in place on labels)."""
    h, w = scene.size
    for start, length, k in scene.folds:
        if not start <= i < start + length:
            continue
        inst = scene.instruments[k]
        if inst.insertion(i) <= 0.0:
            continue
        cx, cy = inst.tip(i, s)
        r = (inst.look.wrist_len + inst.look.jaw_len) * s * 1.1
        poly = cv2.ellipse2Poly((int(cx), int(cy)), (int(r), int(0.8 * r)),
                                int(30 * k + 7 * start) % 180, 0, 360, 10)
        fold = np.zeros((h, w), np.uint8)
        cv2.fillPoly(fold, [poly], 1)
        # A fold of tissue in front: labels become background where it covers the tool.
        sel = fold > 0
        shaded = np.roll(bg, (int(9 * s), int(13 * s)), axis=(0, 1)) * 0.85
        frame[sel] = shaded[sel]
        parts[sel] = 0
        typ[sel] = 0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for start, length, x, y, r in scene.flashes:
        if start <= i < start + length:
            glint = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * r * r))
            frame += 230.0 * glint[..., None]
    # Endoscope light falls off towards the corners.
    rr = ((xx - w / 2) / (0.75 * w)) ** 2 + ((yy - h / 2) / (0.75 * h)) ** 2
    frame *= (1.0 - 0.55 * np.clip(rr, 0, 1) ** 1.5)[..., None]
    if scene.smoke[i] > 0:
        th, tw = scene.smoke_field.shape
        oy, ox = (3 * i) % (th - h), (2 * i) % (tw - w)     # smoke drifts
        field_ = scene.smoke_field[oy:oy + h, ox:ox + w]
        a = np.clip(scene.smoke[i] * (0.55 + 0.6 * field_), 0, 0.97)[..., None]
        frame = frame * (1 - a) + np.array([205, 200, 200], np.float32) * a
    noise = np.random.default_rng([scene.noise_seed, i]).normal(0, 2.0, frame.shape)
    return frame + noise.astype(np.float32)


def generate_sequence(rng_or_seed: np.random.Generator | int, frames: int,
                      size: tuple[int, int] = (256, 320), effects: bool = True
                      ) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """Yield `frames` frames of one synthetic sequence.

    Args:
        rng_or_seed: a numpy Generator or an int seed; the sequence depends only on it.
        frames: number of frames.
        size: (H, W) in pixels, each at least 32.
        effects: False draws the instruments alone on a flat `FLAT_BACKGROUND` (no texture,
            blur, smoke, flashes, folds, vignette or noise); used to check masks against pixels.

    Yields:
        (rgb H x W x 3 uint8, {'binary', 'parts', 'type'} -> H x W uint8 class ids).
    """
    if frames < 1:
        raise ValueError(f'frames must be >= 1, got {frames}')
    h, w = size
    if h < 32 or w < 32:
        raise ValueError(f'size must be at least 32x32, got {h}x{w}')
    rng = rng_or_seed if isinstance(rng_or_seed, np.random.Generator) \
        else np.random.default_rng(rng_or_seed)
    scene = make_scene(rng, frames, (h, w), effects)
    for i in range(frames):
        yield render_frame(scene, i)


def generate_dataset(out: str | Path, sequences: int, frames: int, seed: int,
                     size: tuple[int, int] = (256, 320), fps: float = 25.0,
                     val: int | None = None, test: int | None = None) -> DatasetMeta:
    """Write `sequences` synthetic sequences (`seq_000`, ...) and dataset.yaml under `out`.

    Splits keep sequence order: the last `test` sequences are test, the `val` before them val,
    the rest train (None: `layout.auto_splits` defaults; one sequence is in all three splits).
    Sequence i depends only on (seed, i), so adding sequences keeps the earlier ones.
    """
    if sequences < 1:
        raise ValueError(f'sequences must be >= 1, got {sequences}')
    if fps <= 0:
        raise ValueError(f'fps must be > 0, got {fps}')
    out = Path(out)
    names = [f'seq_{i:03d}' for i in range(sequences)]
    splits = auto_splits(names, val, test)      # validate before writing anything
    for i, name in enumerate(names):
        t0 = time.perf_counter()
        rng = np.random.default_rng(np.random.SeedSequence([seed, i]))
        for j, (rgb, masks) in enumerate(generate_sequence(rng, frames, size)):
            write_frame(out, name, frame_stem(j), rgb, masks)
        log.info('%s: %d frames in %.1f s', out / name, frames, time.perf_counter() - t0)
    meta = DatasetMeta(name='synth', fps=float(fps),
                       classes={'binary': list(BINARY_CLASSES), 'parts': list(PARTS_CLASSES),
                                'type': list(TYPE_CLASSES['synth'])},
                       splits=splits)
    write_meta(out, meta)
    return meta



def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `dmnet synth`."""
    p = subparsers.add_parser(
        'synth', help='write a synthetic surgical video dataset in the dmnet layout',
        description='Generate seeded synthetic surgical video (tissue, articulated instruments, '
                    'smoke, specular flashes, occlusions) with binary/parts/type masks. '
                    'Splits: the last --test sequences are test, the --val before them val, the '
                    'rest train; by default one sequence is in every split, two give train + '
                    'val=test, more hold out about 15%% each.')
    p.add_argument('--out', required=True, help='output dataset folder')
    p.add_argument('--sequences', type=int, default=4, help='number of sequences (default 4)')
    p.add_argument('--frames', type=int, default=60, help='frames per sequence (default 60)')
    p.add_argument('--seed', type=int, default=0, help='random seed (default 0)')
    p.add_argument('--size', type=parse_size, default=(256, 320), help='HxW (default 256x320)')
    p.add_argument('--fps', type=float, default=25.0, help='frame rate in the meta (default 25)')
    p.add_argument('--val', type=int, default=None, help='sequences held out for val')
    p.add_argument('--test', type=int, default=None, help='sequences held out for test')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    meta = generate_dataset(args.out, args.sequences, args.frames, args.seed, size=args.size,
                            fps=args.fps, val=args.val, test=args.test)
    print(f'wrote {args.sequences} x {args.frames} frames to {args.out} '
          f'(splits: ' + ', '.join(f'{k}={len(v)}' for k, v in meta.splits.items()) + ')')
    return 0
