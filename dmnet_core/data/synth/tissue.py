"""Abdomen-like tissue: a few organ regions with their own colour and texture, shaded as soft
bulges lit from the scope, with vessels, blood, wet highlights and cautery marks.

Materials (RGB, chosen for the general look of laparoscopic and robotic abdominal surgery):
liver (dark red-brown, glossy), gallbladder (pale white-green, glossy), fat (yellow-orange,
lobular), connective tissue (pale white-pink, fibrous), abdominal wall (mauve with fine vessels),
bowel (salmon, folded), and blood. Pale, white and yellow tissue is common on purpose: a
segmenter must learn that bright, unsaturated tissue is not metal.

`make_tissue` returns H x W x 4 float32: RGB (0..255) and a relative distance map (about 1;
smaller = nearer the scope, larger = farther, for the light fall-off). Textures have features
at several scales. `add_strands` (generator revision 3) lays thin pale fibres over a canvas.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

# name -> (base RGB, variation RGB, texture scale in s px, gloss 0..1)
MATERIALS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int], float, float]] = {
    'liver': ((112, 26, 28), (146, 46, 42), 30.0, 0.9),
    'gallbladder': ((205, 208, 192), (176, 190, 168), 40.0, 0.9),
    'fat': ((228, 192, 92), (236, 150, 70), 6.0, 0.5),
    'connective': ((226, 210, 204), (200, 168, 166), 6.0, 0.5),
    'wall': ((172, 96, 122), (140, 70, 100), 50.0, 0.4),
    'bowel': ((214, 134, 112), (180, 96, 86), 12.0, 0.7),
    'muscle': ((170, 54, 50), (196, 92, 80), 10.0, 0.6),
}
# How often each material is picked for a region (pale, white and yellow tissue often).
WEIGHTS = {'liver': 0.16, 'gallbladder': 0.12, 'fat': 0.22, 'connective': 0.16, 'wall': 0.14,
           'bowel': 0.1, 'muscle': 0.1}


def noise(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """Smooth value noise in about [0, 1], features of about `scale` px (H x W float32)."""
    gh, gw = max(2, int(h / scale) + 2), max(2, int(w / scale) + 2)
    g = rng.random((gh, gw), dtype=np.float32)
    return np.clip(cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _material(rng: np.random.Generator, name: str, h: int, w: int, s: float) -> np.ndarray:
    """One material's colour texture over the whole canvas (H x W x 3 float32)."""
    base, var, scale, _ = MATERIALS[name]
    base_a = np.array(base, np.float32) + rng.normal(0, 8, 3).astype(np.float32)
    var_a = np.array(var, np.float32) + rng.normal(0, 8, 3).astype(np.float32)
    big = noise(rng, h, w, 60 * s)[..., None]
    if name == 'fat':
        # Lobules: cells of bright yellow separated by thin darker orange-pink septa.
        cells = noise(rng, h, w, scale * s)
        lob = _smoothstep((cells - 0.35) / 0.3)[..., None]
        col = var_a * (1 - lob) + base_a * lob
        col = col * (1 - 0.5 * big) + np.array([240, 214, 120], np.float32) * 0.5 * big
    elif name == 'connective':
        # Fibres: noise stretched along a random direction, pale on pinker ground.
        ang = rng.uniform(0, 180)
        f = noise(rng, h, w, scale * s)
        f = cv2.GaussianBlur(f, (0, 0), sigmaX=10 * s, sigmaY=1.2 * s)
        rot = cv2.getRotationMatrix2D((w / 2, h / 2), ang, 1.0)
        f = cv2.warpAffine(f, rot, (w, h), borderMode=cv2.BORDER_REFLECT)
        f = np.clip((f - f.mean()) * 4 + 0.5, 0, 1)
        f = (0.6 * f + 0.4 * noise(rng, h, w, 35 * s))[..., None]
        col = var_a * (1 - f) + base_a * f
    elif name == 'bowel':
        # Folds: stripes bent by noise.
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        ang = rng.uniform(0, math.pi)
        warp = 30 * s * noise(rng, h, w, 40 * s)
        ph = (xx * math.cos(ang) + yy * math.sin(ang) + warp) / (scale * s)
        st = (0.5 + 0.5 * np.sin(ph))[..., None]
        col = var_a * (1 - st) + base_a * st
    else:
        mid = noise(rng, h, w, scale * s)[..., None]
        col = base_a * (1 - mid) + var_a * mid
    grain = 0.93 + 0.14 * noise(rng, h, w, 2.5 * s)[..., None]
    return col * grain


def _vessels(rng: np.random.Generator, h: int, w: int, s: float, count: int) -> np.ndarray:
    """Branching thin lines (H x W float32 0..1): random walks."""
    v = np.zeros((h, w), np.float32)
    for _ in range(count):
        p = rng.random(2) * [w, h]
        ang = rng.uniform(0, 2 * math.pi)
        pts = []
        for _ in range(int(rng.integers(6, 16))):
            pts.append(p.copy())
            ang += rng.normal(0, 0.4)
            p = p + rng.uniform(8, 20) * s * np.array([math.cos(ang), math.sin(ang)])
        cv2.polylines(v, [np.round(np.array(pts)).astype(np.int32)], False,
                      float(rng.uniform(0.5, 1.0)),
                      thickness=max(1, int(round(rng.uniform(0.6, 2.5) * s))))
    return cv2.GaussianBlur(v, (0, 0), 0.8 * s)


def make_tissue(rng: np.random.Generator, h: int, w: int, s: float) -> np.ndarray:
    """A tissue canvas: H x W x 4 float32 (RGB 0..255, relative distance >= 1)."""
    # Organ regions: a Voronoi partition of warped coordinates, blended at the boundaries.
    k = int(rng.integers(3, 8))
    names = list(WEIGHTS)
    p = np.array([WEIGHTS[n] for n in names])
    chosen = [str(n) for n in rng.choice(names, size=k, p=p / p.sum())]
    if rng.random() < 0.6:            # pale or yellow tissue in most scenes, large
        chosen[0] = str(rng.choice(['fat', 'connective', 'gallbladder']))
    seeds = rng.random((k, 2)) * [w, h]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    amp = 45 * s
    wx = xx + amp * (noise(rng, h, w, 70 * s) - 0.5) * 2
    wy = yy + amp * (noise(rng, h, w, 70 * s) - 0.5) * 2
    d = np.stack([np.hypot(wx - sx, wy - sy) for sx, sy in seeds])     # k x H x W
    d_min = d.min(axis=0)
    tau = 5.0 * s
    wts = np.exp(-(d - d_min) / tau)
    wts /= wts.sum(axis=0)
    # Height: each region bulges; low at the boundaries (crevices between organs).
    d_sorted = np.partition(d, 1, axis=0)[:2] if k > 1 else np.stack([d_min, d_min + 80 * s])
    edge = d_sorted[1] - d_sorted[0]            # distance to the nearest boundary (about x2)
    height = np.sqrt(np.clip(edge / (60 * s), 0, 1))
    img = np.zeros((h, w, 3), np.float32)
    gloss = np.zeros((h, w), np.float32)
    cache: dict[str, np.ndarray] = {}
    for i, name in enumerate(chosen):
        if name not in cache:
            cache[name] = _material(rng, name, h, w, s)
        img += cache[name] * wts[i][..., None]
        gloss += MATERIALS[name][3] * wts[i]
    # Fat islands or pale connective strands over the regions, textured, with soft edges.
    film = _smoothstep((noise(rng, h, w, 45 * s) - rng.uniform(0.62, 0.85)) / 0.15)[..., None]
    film_name = 'fat' if rng.random() < 0.6 else 'connective'
    film_tex = cache.get(film_name)
    if film_tex is None:
        film_tex = _material(rng, film_name, h, w, s)
    img = img * (1 - 0.7 * film) + film_tex * 0.7 * film
    # Vessels: red-purple on pale and wall tissue mostly.
    ves = _vessels(rng, h, w, s, int(rng.integers(4, 14)))[..., None]
    ves_col = np.array([rng.uniform(110, 170), rng.uniform(20, 50), rng.uniform(40, 80)],
                       np.float32)
    img = img * (1 - 0.7 * ves) + ves_col * 0.7 * ves
    # Blood: dark red pools and smears, glossy.
    if rng.random() < 0.3:
        blood = _smoothstep((noise(rng, h, w, 80 * s) - rng.uniform(0.72, 0.85)) / 0.1) \
            * (0.65 + 0.35 * noise(rng, h, w, 12 * s))
        img = img * (1 - 0.85 * blood[..., None]) + np.array([92, 8, 12], np.float32) * \
            0.85 * blood[..., None]
        gloss = np.maximum(gloss, blood)
    # Cautery marks: small charred brown-black spots with a whitish rim.
    for _ in range(int(rng.poisson(2.0))):
        cx, cy = rng.random() * w, rng.random() * h
        r = rng.uniform(3, 12) * s
        dd = np.hypot(xx - cx, yy - cy) / r
        dd = dd * (0.8 + 0.4 * noise(rng, h, w, 4 * s))
        core = _smoothstep((1.0 - dd) / 0.3)[..., None]
        rim = (_smoothstep((1.5 - dd) / 0.3) * (1 - core[..., 0]))[..., None]
        img = img * (1 - 0.6 * rim) + np.array([236, 226, 214], np.float32) * 0.6 * rim
        img = img * (1 - 0.9 * core) + np.array([58, 38, 30], np.float32) * 0.9 * core
    # Shading from the scope's light: rounded organs (Lambert on the height map), and wet
    # specular highlights where surfaces face the camera and are glossy.
    bump = (height + 0.15 * noise(rng, h, w, 8 * s)
            + 0.05 * noise(rng, h, w, 2 * s)).astype(np.float32)
    gx = cv2.Sobel(bump, cv2.CV_32F, 1, 0, ksize=3) * (6.0 / s)
    gy = cv2.Sobel(bump, cv2.CV_32F, 0, 1, ksize=3) * (6.0 / s)
    nz = 1.0 / np.sqrt(1.0 + gx * gx + gy * gy)
    img *= (0.45 + 0.55 * nz)[..., None]
    micro = noise(rng, h, w, 3 * s) * noise(rng, h, w, 25 * s)
    spec = _smoothstep((nz ** 4 * micro * gloss - rng.uniform(0.45, 0.6)) / 0.08)
    img = img * (1 - spec[..., None]) + 252.0 * spec[..., None]
    # Distance from the scope: low-frequency field plus a tilt (organs near one side).
    tilt = rng.normal(0, 1, 2)
    ramp = ((xx / w - 0.5) * tilt[0] + (yy / h - 0.5) * tilt[1]) * 0.6
    dist = 0.8 + 0.4 * noise(rng, h, w, 120 * s) + np.clip(ramp, -0.2, 0.5) - 0.15 * height
    dist = np.clip(dist, 0.75, 1.6)
    out = np.concatenate([np.clip(img, 0, 255), dist[..., None]], axis=-1)
    return cv2.GaussianBlur(out.astype(np.float32), (0, 0), 0.6)


def add_strands(rng: np.random.Generator, tex: np.ndarray, s: float) -> None:
    """Thin pale fibres over the tissue (adhesions, connective strands), in place on an
    H x W x 4 canvas: thin, bright and unsaturated like an instrument's jaw, but background."""
    h, w = tex.shape[:2]
    alpha = np.zeros((h, w), np.float32)
    core = np.zeros((h, w), np.float32)
    for _ in range(int(rng.poisson(2.5))):
        p0 = rng.random(2) * [w, h]
        ang = rng.uniform(0, 2 * math.pi)
        length = rng.uniform(40, 180) * s
        p2 = p0 + length * np.array([math.cos(ang), math.sin(ang)])
        p1 = (p0 + p2) / 2 + rng.normal(0, 0.25 * length, 2)       # a sagging curve
        u = np.linspace(0, 1, 24)[:, None]
        pts = (1 - u) ** 2 * p0 + 2 * u * (1 - u) * p1 + u ** 2 * p2
        pts = [np.round(pts * 16).astype(np.int32)]
        width = rng.uniform(0.8, 3.5) * s
        cv2.polylines(alpha, pts, False, float(rng.uniform(0.55, 0.95)),
                      thickness=max(1, int(round(width))), lineType=cv2.LINE_AA, shift=4)
        cv2.polylines(core, pts, False, 1.0, thickness=max(1, int(round(0.35 * width))),
                      lineType=cv2.LINE_AA, shift=4)
    if not alpha.any():
        return
    alpha = cv2.GaussianBlur(alpha, (0, 0), 0.6 * s)[..., None]
    core = cv2.GaussianBlur(core, (0, 0), 0.5 * s)[..., None]
    colour = np.array([rng.uniform(215, 245), rng.uniform(195, 230), rng.uniform(185, 220)],
                      np.float32)
    rgb = tex[..., :3]
    shade = 0.75 + 0.25 * (rgb.mean(axis=-1, keepdims=True) / 255.0)    # lit like the tissue
    rgb[:] = rgb * (1 - alpha) + colour * shade * alpha
    rgb[:] = np.clip(rgb + 40.0 * core * alpha, 0, 255)              # wet sheen along the fibre
