"""Instruments: robotic (articulated, wristed) and laparoscopic (long rigid thin shafts).

An `Instrument` knows its look and its motion; `pose(t, s)` returns its polygons at (fractional)
frame t, back to front, each with its part id (shaft / wrist / clasper), so that the colour image
and every mask are drawn from the very same polygons.

Parts of laparoscopic instruments (they have no wrist): the insulated or metal tube and its
collar are shaft; grasper, scissors and clip-applier jaws and the hook's bare tip are clasper;
a suction tube is shaft from end to end.

Naming: `s` = image scale (min(H, W) / 256); lengths in `Look` are in units of `s` pixels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

SHAFT, WRIST, CLASPER = 1, 2, 3  # PARTS_CLASSES ids
Rgb = tuple[int, int, int]

# Type ids (TYPE_CLASSES['synth']): 1-3 robotic, 4-8 laparoscopic.
ROBOTIC_TYPES = (1, 2, 3)
LAP_TYPES = (4, 5, 6, 7, 8)
KIND = {1: 'robotic', 2: 'robotic', 3: 'robotic', 4: 'grasper', 5: 'hook', 6: 'clip_applier',
        7: 'lap_scissors', 8: 'suction'}


@dataclass(frozen=True)
class Look:
    """How one instrument type looks (RGB colours, sizes in units of s)."""

    shaft: Rgb
    wrist: Rgb           # robotic wrist; laparoscopic: the metal collar at the shaft's end
    jaw: Rgb
    shaft_w: float       # shaft diameter (at the tip end)
    wrist_len: float     # robotic wrist length; laparoscopic: collar length
    jaw_len: float
    jaw_w: float         # width of one jaw at its base
    jaw_tip: float       # half width at the jaw's tip (0 = pointed)
    jaw_bend: float      # sideways bend of the jaw's middle (curved scissor blades)
    taper: float = 1.0   # shaft width far away / at the tip (perspective of a long shaft)


# Robotic: black shaft + broad silver jaws; grey shaft + short dark blunt jaws; black shaft +
# thin curved pale-gold blades.
LOOKS = {
    1: Look((38, 38, 44), (150, 150, 156), (190, 190, 196), 24, 20, 30, 11, 3.5, 0.0),
    2: Look((100, 103, 110), (58, 58, 64), (118, 118, 124), 26, 16, 20, 12, 5.0, 0.0),
    3: Look((32, 32, 36), (160, 160, 162), (205, 185, 135), 22, 22, 30, 7, 0.5, 4.0),
    # Laparoscopic (5 mm class, thin): grasper with fenestrated silver jaws on a metal or black
    # shaft; hook (black insulated, bare L-shaped wire tip); clip applier (metal, broad jaws
    # holding a gold clip); scissors (black, curved blades); suction tube (bright metal).
    4: Look((165, 166, 170), (205, 205, 210), (185, 186, 190), 9, 6, 20, 5, 1.5, 0.0, 1.4),
    5: Look((28, 28, 32), (185, 185, 190), (200, 200, 204), 9, 5, 12, 2, 1.0, 0.0, 1.4),
    6: Look((150, 152, 158), (200, 200, 205), (175, 176, 182), 11, 7, 18, 6, 4.0, 0.0, 1.4),
    7: Look((26, 26, 30), (180, 180, 186), (195, 190, 170), 9, 6, 18, 4, 0.5, 3.0, 1.4),
    8: Look((178, 180, 185), (205, 205, 210), (178, 180, 185), 11, 0, 0, 0, 0.0, 0.0, 1.4),
}
METAL_SHAFT, BLACK_SHAFT = (165, 166, 170), (28, 28, 32)
CLIP_GOLD = (214, 178, 96)


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


def scale_rgb(c: Rgb, k: float) -> Rgb:
    return tuple(int(min(255, v * k)) for v in c)  # type: ignore[return-value]


def lighten(c: Rgb, k: float) -> Rgb:
    return tuple(int(v + (255 - v) * k) for v in c)  # type: ignore[return-value]


def tint(c: Rgb, k: int) -> Rgb:
    return tuple(int(np.clip(v + k, 0, 255)) for v in c)  # type: ignore[return-value]


Part = tuple[int, Rgb, np.ndarray]      # (part id, colour, polygon N x 2 float)


def _cylinder(out: list[Part], part: int, colour: Rgb, p0: np.ndarray, p1: np.ndarray,
              w0: float, w1: float) -> None:
    """A shaded cylinder: dark rim, body, a specular stripe along the axis (subtle on dark,
    matte insulation; bright on metal)."""
    out.append((part, scale_rgb(colour, 0.7), _quad(p0, p1, w0, w1)))
    out.append((part, colour, _quad(p0, p1, 0.7 * w0, 0.7 * w1)))
    k = 0.55 if sum(colour) > 240 else 0.3
    out.append((part, lighten(colour, k), _quad(p0, p1, 0.14 * w0, 0.14 * w1)))


def _jaws(out: list[Part], lk: Look, p_jaw: np.ndarray, d2: np.ndarray, opening: float,
          s: float, fenestrated: bool = False) -> None:
    """Two jaws (robotic clasper, grasper, scissor blades) opening by `opening` radians."""
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
        if fenestrated:     # the window of a fenestrated grasper jaw (dark, still clasper)
            a, b = base + dj * 0.25 * lk.jaw_len * s, base + dj * 0.75 * lk.jaw_len * s
            out.append((CLASPER, scale_rgb(lk.jaw, 0.35), _quad(a, b, 0.3 * half, 0.22 * half)))
        out.append((CLASPER, lighten(lk.jaw, 0.4), _quad(base, mid, 0.2 * half, 0.1 * half)))


@dataclass
class Instrument:
    """One instrument's look and motion; `pose(t)` gives its polygons at (fractional) frame t."""

    type_id: int
    look: Look
    entry: np.ndarray            # point on the view's edge (x, y)
    tangent: np.ndarray          # edge direction at the entry (for sliding)
    theta0: float                # shaft direction angle (radians, image coordinates)
    reach: float                 # shaft length inside the view at full insertion (px)
    margin: float                # how far outside the edge the tip sits when retracted
    enter_t: float               # insertion starts (negative: already in at frame 0)
    exit_t: float                # retraction starts (beyond the end: stays)
    ramp: float                  # frames to enter / leave
    freq: np.ndarray             # angular frequencies (rad/frame) of the slow motions
    phase: np.ndarray
    jerks: list[tuple[float, float]] = field(default_factory=list)  # (time, angle step)

    @property
    def kind(self) -> str:
        return KIND[self.type_id]

    def insertion(self, t: float) -> float:
        """0 (outside) .. 1 (fully in)."""
        return float(_smoothstep((t - self.enter_t) / self.ramp)
                     * (1.0 - _smoothstep((t - self.exit_t) / self.ramp)))

    def _axis(self, t: float, s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(far point outside the view, tool end of the shaft, shaft direction) at time t."""
        f, ph = self.freq, self.phase
        ins = self.insertion(t)
        theta = self.theta0 + 0.18 * math.sin(f[0] * t + ph[0])
        for tj, step in self.jerks:          # sudden fast moves (motion blur)
            theta += step * float(_smoothstep((t - tj) / 3.0))
        d = np.array([math.cos(theta), math.sin(theta)])
        entry = self.entry + self.tangent * (14.0 * s * math.sin(f[1] * t + ph[1]))
        depth = -self.margin + ins * (self.margin + self.reach
                                      + 10.0 * s * math.sin(f[2] * t + ph[2]))
        end = entry + d * depth
        far = entry - d * (3.0 * self.margin + 60.0 * s)    # shaft starts well outside
        return far, end, d

    def pose(self, t: float, s: float) -> list[Part]:
        """Draw list (part id, colour, polygon N x 2 float) back to front, at frame time t."""
        far, end, d = self._axis(t, s)
        if self.kind == 'robotic':
            return self._robotic(t, s, far, end, d)
        return self._laparoscopic(t, s, far, end, d)

    def _robotic(self, t: float, s: float, far: np.ndarray, p_wrist: np.ndarray,
                 d: np.ndarray) -> list[Part]:
        lk, f, ph = self.look, self.freq, self.phase
        d2 = _rot(d, 0.55 * math.sin(f[3] * t + ph[3]))     # wrist articulation
        p_jaw = p_wrist + d2 * (lk.wrist_len * s)
        opening = 0.5 * max(0.0, math.sin(f[4] * t + ph[4]))  # closed part of the time
        hw = 0.5 * lk.shaft_w * s
        out: list[Part] = []
        _cylinder(out, SHAFT, lk.shaft, far, p_wrist, hw, hw)
        ww = 0.85 * hw
        out.append((WRIST, lk.wrist, _quad(p_wrist, p_jaw, ww, ww)))
        out.append((WRIST, lighten(lk.wrist, 0.35), _quad(p_wrist, p_jaw, 0.25 * ww, 0.25 * ww)))
        _jaws(out, lk, p_jaw, d2, opening, s)
        return out

    def _laparoscopic(self, t: float, s: float, far: np.ndarray, end: np.ndarray,
                      d: np.ndarray) -> list[Part]:
        """Rigid tube from outside the view to `end`, a metal collar, then the tool tip."""
        lk, f, ph = self.look, self.freq, self.phase
        hw = 0.5 * lk.shaft_w * s
        out: list[Part] = []
        _cylinder(out, SHAFT, lk.shaft, far, end, hw * lk.taper, hw)
        if self.kind == 'suction':
            # Rounded open end with side holes: all shaft.
            cap = end + d * hw
            out.append((SHAFT, scale_rgb(lk.shaft, 0.8), _quad(end, cap, hw, 0.6 * hw)))
            for k in (1.5, 3.0):
                c = end - d * (k * hw)
                out.append((SHAFT, scale_rgb(lk.shaft, 0.3), _quad(c - d * 0.3 * hw,
                                                                   c + d * 0.3 * hw,
                                                                   0.3 * hw, 0.3 * hw)))
            return out
        p_tip = end + d * (lk.wrist_len * s)
        _cylinder(out, SHAFT, lk.wrist, end, p_tip, 0.9 * hw, 0.85 * hw)   # metal collar
        if self.kind == 'hook':
            # Bare wire: straight, then bent to one side (an L).
            bend = d * (lk.jaw_len * s)
            p1 = p_tip + bend
            side = _rot(d, 1.35 if ph[4] > math.pi else -1.35)
            p2 = p1 + side * (0.45 * lk.jaw_len * s)
            wire = 0.5 * lk.jaw_w * s
            out.append((CLASPER, lk.jaw, _quad(p_tip, p1, 1.2 * wire, wire)))
            out.append((CLASPER, lk.jaw, _quad(p1 - d * wire, p2, wire, 0.8 * wire)))
            out.append((CLASPER, lighten(lk.jaw, 0.5), _quad(p_tip, p1, 0.35 * wire,
                                                             0.3 * wire)))
            return out
        opening = 0.45 * max(0.0, math.sin(f[4] * t + ph[4]))
        if self.kind == 'clip_applier':
            opening *= 0.4
            _jaws(out, lk, p_tip, d, opening, s)
            # The clip held between the jaws (clasper: it moves with them).
            a, b = p_tip + d * (0.45 * lk.jaw_len * s), p_tip + d * (0.95 * lk.jaw_len * s)
            out.append((CLASPER, CLIP_GOLD, _quad(a, b, 0.22 * lk.jaw_w * s,
                                                  0.18 * lk.jaw_w * s)))
            return out
        _jaws(out, lk, p_tip, d, opening, s, fenestrated=self.kind == 'grasper')
        return out

    def tip(self, t: float, s: float) -> np.ndarray:
        """Centre of the tool tip (clasper, or the suction tube's end) at time t (x, y)."""
        polys = [p for part, _, p in self.pose(t, s) if part == CLASPER]
        if not polys:
            far, end, d = self._axis(t, s)
            return end
        return np.concatenate(polys).mean(axis=0)

    def tool_length(self, s: float) -> float:
        """Length of the part beyond the shaft (wrist or collar, and jaws) in px."""
        return (self.look.wrist_len + self.look.jaw_len) * s
