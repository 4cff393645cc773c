"""Mask tinting for `/dmnet/overlay`: instruments blended per class over the frame (pure numpy)."""
from __future__ import annotations

import numpy as np

# RGB per class id 1..N (background is never tinted), flattened as the `overlay.palette`
# parameter stores it; cycled when a task has more classes than colours.
DEFAULT_PALETTE: list[int] = [
    0, 255, 0,      # 1 green
    255, 0, 255,    # 2 magenta
    0, 160, 255,    # 3 sky blue
    255, 200, 0,    # 4 amber
    255, 60, 60,    # 5 red
    0, 255, 255,    # 6 cyan
    160, 90, 255,   # 7 violet
    255, 255, 255,  # 8 white
]


def palette_table(palette: list[int], num_classes: int = 256) -> np.ndarray:
    """Flat [r, g, b, r, g, b, ...] -> a `num_classes x 3` uint8 lookup table, row 0 unused.

    Raises:
        ValueError: when the list is empty, not a multiple of 3, or has values outside 0..255.
    """
    if len(palette) == 0 or len(palette) % 3:
        raise ValueError(f'palette needs r,g,b triplets; got {len(palette)} values')
    if any(int(v) < 0 or int(v) > 255 for v in palette):
        raise ValueError('palette values must lie in 0..255')
    colours = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    table = np.zeros((num_classes, 3), dtype=np.uint8)
    # Class c >= 1 takes colour (c - 1) mod len(colours).
    idx = (np.arange(1, num_classes) - 1) % len(colours)
    table[1:] = colours[idx]
    return table


def blend_overlay(rgb: np.ndarray, mask: np.ndarray, table: np.ndarray,
                  alpha: float) -> np.ndarray:
    """Tint every non-background pixel with its class colour.

    Args:
        rgb: `H x W x 3` uint8 frame.
        mask: `H x W` uint8 class ids (0 = background, left untouched).
        table: `K x 3` uint8 colours from `palette_table`, K > max class id.
        alpha: weight of the class colour, 0 (frame only) .. 1 (colour only).

    Returns:
        `H x W x 3` uint8, a new array.
    """
    if rgb.shape[:2] != mask.shape:
        raise ValueError(f'frame {rgb.shape[:2]} and mask {mask.shape} differ in size')
    out = rgb.copy()
    fg = mask > 0
    if not fg.any() or alpha <= 0.0:
        return out
    # Blend only the N foreground pixels: N x 3 in float32, back to uint8 with rounding.
    colour = table[mask[fg]].astype(np.float32)
    pix = rgb[fg].astype(np.float32)
    out[fg] = np.clip((1.0 - alpha) * pix + alpha * colour + 0.5, 0, 255).astype(np.uint8)
    return out
