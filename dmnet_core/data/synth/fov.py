"""The camera's field of view: what part of the sensor sees the scene at all.

- 'full': the whole frame (cropped robotic video);
- 'borders': black bars left and right (raw da Vinci video), sometimes also top/bottom;
- 'circle': a laparoscope's round view inside a black surround; its radius and centre vary and
  the circle may be cut off by the frame's edges.

Everything outside the view is background (0) in every mask, for every task.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FOV_KINDS = ('full', 'borders', 'circle')


@dataclass(frozen=True)
class Fov:
    """One sequence's field of view (pixels; fixed for the whole sequence, it is the optics)."""

    kind: str
    cx: float = 0.0          # circle centre and radius
    cy: float = 0.0
    r: float = 0.0
    left: int = 0            # black bars ('borders')
    right: int = 0
    top: int = 0
    bottom: int = 0
    edge: float = 1.5        # soft edge width (px) of the circle's rim

    def soft(self, h: int, w: int) -> np.ndarray:
        """Light reaching each pixel through the optics, 0..1 (H x W float32)."""
        if self.kind == 'full':
            return np.ones((h, w), np.float32)
        if self.kind == 'borders':
            a = np.zeros((h, w), np.float32)
            a[self.top:h - self.bottom, self.left:w - self.right] = 1.0
            return a
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        d = np.sqrt((xx + 0.5 - self.cx) ** 2 + (yy + 0.5 - self.cy) ** 2)
        return np.clip((self.r - d) / self.edge + 0.5, 0.0, 1.0).astype(np.float32)

    def inside(self, h: int, w: int) -> np.ndarray:
        """Pixels that belong to the view (H x W bool); labels are background elsewhere."""
        return self.soft(h, w) >= 0.5

    def centre(self, h: int, w: int) -> tuple[float, float]:
        """Optical centre (x, y): where the scope's light is strongest."""
        if self.kind == 'circle':
            return self.cx, self.cy
        return (self.left + (w - self.right)) / 2.0, (self.top + (h - self.bottom)) / 2.0

    def radius(self, h: int, w: int) -> float:
        """About half the view's diagonal extent (px), for light fall-off."""
        if self.kind == 'circle':
            return self.r
        return 0.5 * math.hypot(w - self.left - self.right, h - self.top - self.bottom)

    def entry(self, angle: float, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """Point where a ray from the centre at `angle` leaves the view, and the inward normal.

        For a circle cut off by the frame, the point is on the circle (possibly outside the
        frame: the instrument then enters through the frame's edge, as in real video).
        """
        cx, cy = self.centre(h, w)
        u = np.array([math.cos(angle), math.sin(angle)])
        if self.kind == 'circle':
            return np.array([cx, cy]) + self.r * u, -u
        x0, x1 = self.left, w - 1 - self.right
        y0, y1 = self.top, h - 1 - self.bottom
        # Distance along u to the rectangle's edge.
        ts = []
        if u[0] > 1e-9:
            ts.append((x1 - cx) / u[0])
        if u[0] < -1e-9:
            ts.append((x0 - cx) / u[0])
        if u[1] > 1e-9:
            ts.append((y1 - cy) / u[1])
        if u[1] < -1e-9:
            ts.append((y0 - cy) / u[1])
        t = min(ts)
        p = np.array([cx, cy]) + t * u
        # Inward normal of the side that was hit.
        if abs(p[0] - x0) < 1e-6:
            n = np.array([1.0, 0.0])
        elif abs(p[0] - x1) < 1e-6:
            n = np.array([-1.0, 0.0])
        elif abs(p[1] - y0) < 1e-6:
            n = np.array([0.0, 1.0])
        else:
            n = np.array([0.0, -1.0])
        return p, n


def draw_fov(rng: np.random.Generator, style: str, h: int, w: int) -> Fov:
    """A random field of view for a 'robotic' or 'laparoscopic' sequence."""
    if style == 'robotic':
        u = rng.random()
        if u < 0.55:
            return Fov('full')
        # Raw robotic video: black side bars, a few % to ~15 % of the width each.
        side = int(round(rng.uniform(0.03, 0.15) * w))
        skew = int(round(rng.uniform(-0.02, 0.02) * w))
        tb = int(round(rng.uniform(0.0, 0.05) * h)) if rng.random() < 0.3 else 0
        return Fov('borders', left=max(1, side + skew), right=max(1, side - skew), top=tb,
                   bottom=tb)
    u = rng.random()
    if u < 0.1:
        return Fov('full')          # zoomed-in laparoscope: the circle is off-frame
    # Circle: from well inside the frame to larger than the frame's height (cut off top and
    # bottom, the usual look of 16:9 laparoscopic video), centre jittered.
    small = rng.random() < 0.3
    r = float(rng.uniform(0.38, 0.5) if small else rng.uniform(0.5, 0.9)) * min(h, w)
    cx = w / 2 + rng.normal(0, 0.05) * w
    cy = h / 2 + rng.normal(0, 0.05) * h
    return Fov('circle', cx=float(cx), cy=float(cy), r=r, edge=float(rng.uniform(1.0, 3.0)))
