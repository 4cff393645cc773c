"""One generated sequence: everything random drawn up front (`make_scene`), then frames
rendered one by one (`render_frame`) with their masks and condition tags.

Masks describe the instruments at the middle of the exposure (motion-blurred colours spread a
little beyond them); pixels hidden by a tissue fold or outside the field of view are background,
pixels under smoke, fog or a specular flash keep their instrument label.

Naming: `s` = image scale (min(H, W) / 256); `style` is 'robotic' or 'laparoscopic' per
sequence ('mixed' picks one of them per sequence).

Generator revisions (`generator`): 2 (the default, what the shipped models were trained on)
draws instruments in flat grey metal on the tissue; 3 renders the same scenes and masks, but
metal reflects the tissue around it (its hue and brightness follow the surroundings, as real
steel does under the scope's light) and thin pale fibres (adhesions, connective strands) cross
the tissue as background. Revision 3 draws its extra randomness from its own stream, so a
seed's scene, motion and masks are the same in both. A model trained on revision 3 did better
on generated video of both revisions but worse on real video, so it is opt-in (docs/generator.md).
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace

import cv2
import numpy as np

from dmnet_core.data.synth.camera import camera_motion, draw_camera_path, view
from dmnet_core.data.synth.conditions import CONDITIONS
from dmnet_core.data.synth.fov import Fov, draw_fov
from dmnet_core.data.synth.instruments import (
    BLACK_SHAFT,
    CLASPER,
    LAP_TYPES,
    LOOKS,
    METAL_SHAFT,
    ROBOTIC_TYPES,
    Instrument,
    tint,
)
from dmnet_core.data.synth.optics import (
    Optics,
    apply_blur,
    apply_fog,
    apply_fov,
    apply_light,
    apply_sensor,
    apply_smoke,
    draw_optics,
)
from dmnet_core.data.synth.tissue import add_strands, make_tissue, noise

FLAT_BACKGROUND = (0, 255, 0)   # effects=False background: a colour no instrument uses
STYLES = ('robotic', 'laparoscopic', 'mixed')
# Laparoscopic type ids (4 grasper, 5 hook, 6 clip applier, 7 scissors, 8 suction): how often.
LAP_P = np.array([0.34, 0.22, 0.14, 0.15, 0.15])
FOLD_EVERY = 70.0   # mean frames between tissue folds over an instrument tip
GENERATORS = (2, 3)
GENERATOR = 2       # the default revision (see the module docstring)


@dataclass
class Scene:
    """Everything random about one sequence, drawn up front from one generator."""

    size: tuple[int, int]             # (H, W) the scene is drawn at
    frames: int
    style: str                        # 'robotic' or 'laparoscopic'
    fov: Fov
    instruments: list[Instrument]
    texture: np.ndarray | None        # Ht x Wt x 4 float32: RGB + distance (None: flat)
    smoke_field: np.ndarray | None    # Ht x Wt float32
    cam: np.ndarray                   # per-frame (tx, ty, zoom, angle)
    smoke: np.ndarray                 # per-frame smoke density 0..1
    flashes: list[tuple[int, int, float, float, float]]    # (start, length, x, y, radius)
    folds: list[tuple[int, int, int]]                       # (start, length, instrument)
    optics: Optics
    noise_seed: int
    out_size: tuple[int, int] | None = None   # (H, W) of the written frames; None: `size`
    # Revision 3: per-instrument reflectivity of its metal (0..1; empty: flat metal) and the
    # offset (dx, dy px) of the mirrored surroundings.
    reflect: tuple[float, ...] = ()
    env_shift: tuple[int, int] = (0, 0)

    @property
    def output_size(self) -> tuple[int, int]:
        return self.out_size or self.size

    def view_mask(self) -> np.ndarray:
        """Pixels of the written frame inside the field of view (H_out x W_out bool)."""
        inside = self.fov.inside(*self.size)
        if self.output_size == self.size:
            return inside
        h, w = self.output_size
        return cv2.resize(inside.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0


def _instrument(rng: np.random.Generator, t_id: int, fov: Fov, frames: int,
                size: tuple[int, int], first: bool, s: float,
                same_looks: bool = False) -> Instrument:
    """One instrument entering the view at a random place on its edge, aiming inwards."""
    h, w = size
    lk = LOOKS[t_id]
    if same_looks:      # one colour scheme per style: only the shape tells the type
        ref = LOOKS[ROBOTIC_TYPES[0] if t_id in ROBOTIC_TYPES else LAP_TYPES[0]]
        lk = replace(lk, shaft=ref.shaft, wrist=ref.wrist, jaw=ref.jaw)
    if t_id in LAP_TYPES:
        # Thin shafts (a few % of the width), jaws in proportion; metal or black shaft.
        k = float(rng.uniform(0.55, 1.5)) * lk.shaft_w
        f = k / lk.shaft_w
        lk = replace(lk, shaft_w=k, wrist_len=lk.wrist_len * f, jaw_len=lk.jaw_len * f,
                     jaw_w=lk.jaw_w * f, jaw_tip=lk.jaw_tip * f, jaw_bend=lk.jaw_bend * f,
                     taper=float(rng.uniform(1.1, 1.8)))
        if t_id in (4, 6) and rng.random() < 0.4:
            lk = replace(lk, shaft=BLACK_SHAFT)
        elif t_id in (5, 7) and rng.random() < 0.2:
            lk = replace(lk, shaft=METAL_SHAFT)
    else:
        f = float(rng.uniform(0.75, 1.25))
        lk = replace(lk, shaft_w=lk.shaft_w * f, wrist_len=lk.wrist_len * f,
                     jaw_len=lk.jaw_len * f, jaw_w=lk.jaw_w * f)
    tn = int(rng.integers(-8, 9))
    lk = replace(lk, shaft=tint(lk.shaft, tn), jaw=tint(lk.jaw, tn))
    angle = float(rng.uniform(0, 2 * math.pi))
    entry, normal = fov.entry(angle, h, w)
    cx, cy = fov.centre(h, w)
    spread = 0.5 * min(fov.radius(h, w), 0.5 * min(h, w))
    target = np.array([cx, cy]) + rng.normal(0, 0.5, 2) * spread
    to_target = target - entry
    ang_n = math.atan2(normal[1], normal[0])
    # Keep the shaft within 45 degrees of the inward normal so retraction hides it.
    off = (math.atan2(to_target[1], to_target[0]) - ang_n + math.pi) % (2 * math.pi) - math.pi
    theta0 = ang_n + float(np.clip(off, -0.7, 0.7))
    tool_len = (lk.wrist_len + lk.jaw_len) * s
    reach = max(20.0 * s, float(np.hypot(*to_target)) - tool_len)
    ramp = float(rng.uniform(6, 14))
    enter_t = -ramp if first and rng.random() < 0.75 else float(rng.uniform(-ramp, 0.5 * frames))
    # Most instruments stay; some leave after a while (and the view is briefly empty).
    exit_t = float(rng.uniform(enter_t + ramp + 0.3 * frames, 3.0 * frames + 10))
    freq = 2 * math.pi / rng.uniform([60, 80, 50, 40, 25], [160, 200, 120, 90, 60])
    jerks = [(float(rng.uniform(0, frames)), float(rng.choice([-1, 1]) * rng.uniform(0.15, 0.3)))
             for _ in range(int(rng.poisson(frames / 60)))]
    tangent = np.array([-normal[1], normal[0]])
    return Instrument(type_id=t_id, look=lk, entry=entry, tangent=tangent, theta0=theta0,
                      reach=reach, margin=1.7 * tool_len + lk.shaft_w * lk.taper * s,
                      enter_t=enter_t, exit_t=exit_t, ramp=ramp, freq=freq,
                      phase=rng.uniform(0, 2 * math.pi, 5), jerks=jerks)


def make_scene(rng: np.random.Generator, frames: int, size: tuple[int, int],
               effects: bool = True, style: str = 'mixed', same_looks: bool = False,
               fold_every: float = FOLD_EVERY, generator: int = GENERATOR) -> Scene:
    """Draw a sequence's scene: field of view, instruments, camera path and hard-case events.

    `same_looks` gives every instrument of a style one colour scheme (as da Vinci instruments
    share black shafts and grey wrists), so a type is told by its jaws alone; `fold_every` is
    the mean number of frames between tissue folds over a tip. Neither changes the random
    draws, so defaults give the same video as before. `generator` is the rendering revision
    (`GENERATORS`; see the module docstring).
    """
    if generator not in GENERATORS:
        raise ValueError(f'generator must be one of {GENERATORS}, got {generator!r}')
    if fold_every <= 0:
        raise ValueError(f'fold_every must be > 0, got {fold_every}')
    if style not in STYLES:
        raise ValueError(f'style must be one of {STYLES}, got {style!r}')
    out_size = (int(size[0]), int(size[1]))
    if style == 'mixed':
        style = 'robotic' if rng.random() < 0.5 else 'laparoscopic'
    if effects and rng.random() < 0.4:
        # Wide (16:9-like) video squeezed to the output's aspect, as a segmenter's resize
        # does to real laparoscopic and raw robotic frames: round views become ellipses.
        size = (out_size[0], int(round(out_size[1] * rng.uniform(1.15, 1.45))))
    h, w = size
    s = min(h, w) / 256.0
    fov = draw_fov(rng, style, h, w)
    if style == 'robotic':
        n_inst = int(rng.choice([1, 2, 3], p=[0.3, 0.45, 0.25]))
        types = [int(t) for t in rng.choice(ROBOTIC_TYPES, size=n_inst)]
    else:
        n_inst = int(rng.choice([1, 2, 3], p=[0.35, 0.5, 0.15]))
        types = [int(t) for t in rng.choice(LAP_TYPES, size=n_inst, p=LAP_P)]
    # Look-alike instruments: the first one's colours for all; only the tip shapes differ.
    alike = n_inst > 1 and rng.random() < 0.35
    instruments = []
    for i, t_id in enumerate(types):
        inst = _instrument(rng, t_id, fov, frames, size, i == 0, s, same_looks)
        if alike and i > 0:
            ref = instruments[0].look
            inst.look = replace(inst.look, shaft=ref.shaft, wrist=ref.wrist, jaw=ref.jaw)
        instruments.append(inst)

    m = int(0.25 * max(h, w))
    texture = make_tissue(rng, h + 2 * m, w + 2 * m, s) if effects else None
    smoke_field = noise(rng, h + 2 * m, w + 2 * m, 50 * s) if effects else None
    cam = draw_camera_path(rng, frames, style, m, effects)
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
        for _ in range(int(rng.poisson(frames / fold_every))):
            folds.append((int(rng.integers(0, frames)), int(rng.integers(3, 9)),
                          int(rng.integers(0, n_inst))))
    optics = draw_optics(rng, frames, size, style, effects)
    noise_seed = int(rng.integers(0, 2**31))
    reflect: tuple[float, ...] = ()
    env_shift = (0, 0)
    if effects and generator >= 3:
        # Its own stream: the draws above (scene, motion, masks) stay those of revision 2.
        rng3 = np.random.default_rng([noise_seed, 3])
        reflect = tuple(float(r) for r in rng3.uniform(0.35, 0.9, n_inst))
        env_shift = tuple(int(v) for v in rng3.integers(-40, 41, 2) * s)
        add_strands(rng3, texture, s)
    return Scene(size=(h, w), frames=frames, style=style, fov=fov, instruments=instruments,
                 texture=texture, smoke_field=smoke_field, cam=cam, smoke=smoke,
                 flashes=flashes, folds=folds, optics=optics, noise_seed=noise_seed,
                 out_size=out_size if out_size != size else None,
                 reflect=reflect, env_shift=env_shift)


def _metalness(colour: tuple[int, int, int]) -> float:
    """How much a part colour is bare metal (bright, unsaturated: 1) vs insulation (dark: 0)."""
    c = np.array(colour, np.float32)
    sat = (c.max() - c.min()) / (c.max() + 1e-6)
    return float(np.clip((c.mean() - 60.0) / 100.0, 0.0, 1.0) * (1.0 - sat))


def _mirror(scene: Scene, bg: np.ndarray, s: float) -> np.ndarray | None:
    """What metal mirrors at a frame: the blurred, shifted surroundings relative to their mean
    grey level, per channel so it carries their hue (H x W x 3 float32; None: flat metal)."""
    if not scene.reflect:
        return None
    env = cv2.GaussianBlur(np.roll(bg, scene.env_shift[::-1], axis=(0, 1)), (0, 0), 14 * s)
    return np.clip(env / (float(env.mean()) + 1e-3), 0.35, 1.8)


def _reflections(col: np.ndarray, refl: np.ndarray, mirror: np.ndarray | None) -> np.ndarray:
    """Instrument colours (H x W x 3 float32) with metal mixed towards colour x `mirror` by its
    reflectivity `refl` (H x W)."""
    colf = col.astype(np.float32)
    if mirror is None or not refl.any():
        return colf
    r = refl[..., None]
    return colf * (1.0 - r) + np.clip(colf * mirror, 0, 255) * r


def _draw_instruments(scene: Scene, t: float, s: float
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Colour (H x W x 3 uint8), parts, type, instance (H x W uint8) and reflectivity
    (H x W float32, 0 where nothing mirrors) at time t.

    Every colour polygon is drawn with its part, type and instance id, so masks match pixels
    exactly; later instruments are in front.
    """
    h, w = scene.size
    col = np.zeros((h, w, 3), np.uint8)
    parts = np.zeros((h, w), np.uint8)
    typ = np.zeros((h, w), np.uint8)
    inst_ids = np.zeros((h, w), np.uint8)
    refl = np.zeros((h, w), np.float32)
    for k, inst in enumerate(scene.instruments):
        if inst.insertion(t) <= 0.0:
            continue
        r_k = scene.reflect[k] if scene.reflect else 0.0
        for part, colour, poly in inst.pose(t, s):
            pts = [np.round(poly * 16).astype(np.int32)]       # 4 fractional bits (shift=4)
            cv2.fillPoly(col, pts, colour, lineType=cv2.LINE_8, shift=4)
            cv2.fillPoly(parts, pts, part, lineType=cv2.LINE_8, shift=4)
            cv2.fillPoly(typ, pts, inst.type_id, lineType=cv2.LINE_8, shift=4)
            cv2.fillPoly(inst_ids, pts, k + 1, lineType=cv2.LINE_8, shift=4)
            if r_k:
                cv2.fillPoly(refl, pts, r_k * _metalness(colour), lineType=cv2.LINE_8,
                             shift=4)
    return col, parts, typ, inst_ids, refl


def _background(scene: Scene, i: int) -> np.ndarray:
    """The camera's view of the tissue at frame i (H x W x 4 float32: RGB + distance)."""
    h, w = scene.size
    if scene.texture is None:
        flat = np.broadcast_to(np.array(FLAT_BACKGROUND + (1,), np.float32), (h, w, 4))
        return flat.copy()
    return view(scene.texture, scene.cam[i], scene.size)


def _camera_motion(scene: Scene, i: int) -> np.ndarray:
    """Image-space displacement (dx, dy px) of the view centre across frame i's exposure."""
    return camera_motion(scene.cam, i, scene.size, scene.texture.shape[:2])


def render_frame(scene: Scene, i: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Frame i of a scene: (H x W x 3 uint8 RGB, {'binary', 'parts', 'type'} -> H x W uint8)."""
    rgb, masks, _ = render_frame_tagged(scene, i)
    return rgb, masks


def render_frame_tagged(scene: Scene, i: int
                        ) -> tuple[np.ndarray, dict[str, np.ndarray], list[str]]:
    """Frame i with its masks and its condition tags (`conditions.CONDITIONS`, in order)."""
    h, w = scene.size
    s = min(h, w) / 256.0
    effects = scene.texture is not None
    bg4 = _background(scene, i)
    bg, dist = bg4[..., :3], bg4[..., 3]
    # Motion blur: average three instants of the exposure; masks are the middle instant.
    offsets = (-0.3, 0.0, 0.3) if effects else (0.0,)
    acc = np.zeros((h, w, 3), np.float32)
    mirror = _mirror(scene, bg, s)          # once per frame: the background is the same
    for k, dt in enumerate(offsets):
        col, parts_k, typ_k, inst_k, refl = _draw_instruments(scene, i + dt, s)
        if k == len(offsets) // 2:
            parts, typ, inst_ids = parts_k, typ_k, inst_k
        acc += np.where((parts_k > 0)[..., None], _reflections(col, refl, mirror), bg)
    frame = acc / len(offsets)
    inside = scene.fov.inside(h, w)
    tags: set[str] = set()
    if effects:
        # Instruments are nearer the scope than the tissue behind them: lit more.
        dist = np.where(parts > 0, np.minimum(dist, 0.85), dist)
        frame = _folds(scene, i, frame, bg, parts, typ, inst_ids, inside, s, tags)
        frame = _flashes(scene, i, frame, inside, tags)
        o = scene.optics
        frame = apply_light(frame, dist, scene.fov, o, i)
        frame = apply_blur(frame, float(o.defocus[i]), _camera_motion(scene, i))
        frame = apply_smoke(frame, float(scene.smoke[i]), scene.smoke_field, i)
        frame = apply_fog(frame, o, i)
    frame = apply_fov(frame, scene.fov.soft(h, w))
    rgb = apply_sensor(frame, scene.optics, np.random.default_rng([scene.noise_seed, i]))
    # Outside the view is background for every task.
    parts[~inside] = 0
    typ[~inside] = 0
    binary = (parts > 0).astype(np.uint8)
    if effects:
        _motion_tags(scene, i, binary, s, tags)
    masks = {'binary': binary, 'parts': parts, 'type': typ}
    if scene.output_size != scene.size:
        ho, wo = scene.output_size
        rgb = cv2.resize(rgb, (wo, ho), interpolation=cv2.INTER_AREA)
        masks = {k: cv2.resize(m, (wo, ho), interpolation=cv2.INTER_NEAREST)
                 for k, m in masks.items()}
    return rgb, masks, [c for c in CONDITIONS if c in tags]


def _folds(scene: Scene, i: int, frame: np.ndarray, bg: np.ndarray, parts: np.ndarray,
           typ: np.ndarray, inst_ids: np.ndarray, inside: np.ndarray, s: float,
           tags: set[str]) -> np.ndarray:
    """A fold of tissue in front of an instrument's tip: labels become background there."""
    h, w = scene.size
    for start, length, k in scene.folds:
        if not start <= i < start + length:
            continue
        inst = scene.instruments[k]
        if inst.insertion(i) <= 0.0:
            continue
        cx, cy = inst.tip(i, s)
        r = max(inst.tool_length(s), 3.0 * inst.look.shaft_w * s) * 1.1
        poly = cv2.ellipse2Poly((int(cx), int(cy)), (int(r), int(0.8 * r)),
                                int(30 * k + 7 * start) % 180, 0, 360, 10)
        fold = np.zeros((h, w), np.uint8)
        cv2.fillPoly(fold, [poly], 1)
        sel = fold > 0
        tip_px = (parts == CLASPER) & (inst_ids == k + 1) & inside
        if inst.kind == 'suction':        # no clasper: its open end is the tip
            yy, xx = np.mgrid[0:h, 0:w]
            near = np.hypot(xx - cx, yy - cy) < 2.0 * inst.look.shaft_w * s
            tip_px = (inst_ids == k + 1) & inside & near
        hidden = int((tip_px & sel).sum())
        if hidden >= max(4, 0.3 * int(tip_px.sum())):
            tags.add('tip_occluded')
        shaded = np.roll(bg, (int(9 * s), int(13 * s)), axis=(0, 1)) * 0.85
        frame[sel] = shaded[sel]
        parts[sel] = 0
        typ[sel] = 0
        inst_ids[sel] = 0
    return frame


def _flashes(scene: Scene, i: int, frame: np.ndarray, inside: np.ndarray,
             tags: set[str]) -> np.ndarray:
    """Specular flashes: bright glints (on a tip or on wet tissue)."""
    h, w = scene.size
    yy = xx = None
    for start, length, x, y, r in scene.flashes:
        if start <= i < start + length:
            if yy is None:
                yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
            glint = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * r * r))
            frame = frame + 230.0 * glint[..., None]
            if (glint[inside] > 0.5).any():
                tags.add('specular_flash')
    if scene.smoke[i] >= 0.5:
        tags.add('smoke_burst')
    return frame


def _motion_tags(scene: Scene, i: int, binary: np.ndarray, s: float, tags: set[str]) -> None:
    """fast_move (a visible tip or the camera moves fast) and instrument_entering."""
    h, w = scene.size
    if not binary.any():
        return
    if float(np.hypot(*_camera_motion(scene, i))) > 4.0 * s:
        tags.add('fast_move')
    ins_mask = scene.fov.inside(h, w)
    for inst in scene.instruments:
        a = inst.insertion(i)
        if a <= 0.0:
            continue
        tip = inst.tip(i, s)
        x, y = int(round(tip[0])), int(round(tip[1]))
        tip_in_view = 0 <= x < w and 0 <= y < h and bool(ins_mask[y, x])
        speed = 0.5 * float(np.hypot(*(inst.tip(i + 1, s) - inst.tip(i - 1, s))))
        if tip_in_view and speed > 4.0 * s:
            tags.add('fast_move')
        # Entering: on its way in (insertion rising, not yet full) with its tip in view.
        if tip_in_view and a < 0.98 and inst.insertion(i + 1) > a:
            tags.add('instrument_entering')


def generate_sequence(rng_or_seed: np.random.Generator | int, frames: int,
                      size: tuple[int, int] = (256, 320), effects: bool = True,
                      style: str = 'mixed', tags: list[list[str]] | None = None,
                      same_looks: bool = False, fold_every: float = FOLD_EVERY,
                      generator: int = GENERATOR
                      ) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """Yield `frames` frames of one generated sequence.

    Args:
        rng_or_seed: a numpy Generator or an int seed; the sequence depends only on it.
        frames: number of frames.
        size: (H, W) in pixels, each at least 32.
        effects: False draws the instruments alone on a flat `FLAT_BACKGROUND` inside a black
            field-of-view surround (no texture, light, blur, smoke, flashes, folds or noise);
            used to check masks against pixels.
        style: 'robotic', 'laparoscopic' or 'mixed' (one of the two, drawn per sequence).
        tags: if given, each frame's condition tags are appended to it.
        same_looks, fold_every: harder type cues, see `make_scene`.
        generator: rendering revision (`GENERATORS`, default `GENERATOR`; module docstring).

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
    scene = make_scene(rng, frames, (h, w), effects, style, same_looks, fold_every, generator)
    for i in range(frames):
        rgb, masks, frame_tags = render_frame_tagged(scene, i)
        if tags is not None:
            tags.append(frame_tags)
        yield rgb, masks
