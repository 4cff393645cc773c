"""Write a small montage of generated frames with their parts masks (docs/synth_examples.png).

    python -m bench.synth_examples [--out docs/synth_examples.png] [--seeds 1 2 3]

Rows: robotic and laparoscopic sequences (`dmnet_core.data.synth`, one seed each); each panel
is a frame and, beside it, its parts mask (shaft blue, wrist yellow, clasper magenta; black =
background, the field of view's surround included). Per sequence the frame shown is the one
with the most instrument pixels among frames 10, 20, ..., so that instruments are in view.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from dmnet_core.data.synth import generate_sequence

PART_RGB = np.array([[0, 0, 0], [40, 140, 255], [255, 210, 0], [255, 0, 200]], np.uint8)


def panel(seed: int, style: str, size: tuple[int, int], frames: int) -> np.ndarray:
    """Frame | parts mask (H x 2W x 3 uint8 RGB) for one sequence."""
    best, best_n = None, -1
    for i, (rgb, masks) in enumerate(generate_sequence(seed, frames, size, style=style)):
        n = int(masks['binary'].sum())
        if i % 10 == 0 and i > 0 and n > best_n:
            best, best_n = (rgb, masks['parts']), n
    rgb, parts = best
    gap = np.full((size[0], 4, 3), 255, np.uint8)
    return np.concatenate([rgb, gap, PART_RGB[parts]], axis=1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--out', type=Path, default=Path('docs/synth_examples.png'))
    p.add_argument('--seeds', type=int, nargs='+', default=[1, 2, 3])
    p.add_argument('--scale', type=float, default=0.5, help='downscale of the montage')
    args = p.parse_args(argv)
    size, frames = (256, 320), 41
    rows = []
    for style in ('robotic', 'laparoscopic'):
        cells = [panel(s, style, size, frames) for s in args.seeds]
        sep = np.full((size[0], 12, 3), 255, np.uint8)
        row = cells[0]
        for c in cells[1:]:
            row = np.concatenate([row, sep, c], axis=1)
        rows.append(row)
    sep = np.full((12, rows[0].shape[1], 3), 255, np.uint8)
    img = np.concatenate([rows[0], sep, rows[1]], axis=0)
    img = cv2.resize(img, None, fx=args.scale, fy=args.scale, interpolation=cv2.INTER_AREA)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f'wrote {args.out} ({img.shape[1]}x{img.shape[0]}, '
          f'{args.out.stat().st_size / 1024:.0f} kB)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
