"""`dmnet synth`: write generated sequences in the dmnet layout, with condition tags."""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from dmnet_core.cli import parse_size
from dmnet_core.config import BINARY_CLASSES, PARTS_CLASSES, TYPE_CLASSES
from dmnet_core.data.layout import DatasetMeta, auto_splits, frame_stem, write_frame, write_meta
from dmnet_core.data.synth.conditions import write_conditions
from dmnet_core.data.synth.scene import (
    FOLD_EVERY,
    GENERATOR,
    GENERATORS,
    STYLES,
    generate_sequence,
)

log = logging.getLogger(__name__)


def generate_dataset(out: str | Path, sequences: int, frames: int, seed: int,
                     size: tuple[int, int] = (256, 320), fps: float = 25.0,
                     val: int | None = None, test: int | None = None,
                     style: str = 'mixed', same_looks: bool = False,
                     fold_every: float = FOLD_EVERY, generator: int = GENERATOR) -> DatasetMeta:
    """Write `sequences` generated sequences (`seq_000`, ...) and dataset.yaml under `out`.

    Splits keep sequence order: the last `test` sequences are test, the `val` before them val,
    the rest train (None: `layout.auto_splits` defaults; one sequence is in all three splits).
    Sequence i depends only on (seed, i, style), so adding sequences keeps the earlier ones.
    Each sequence also gets `conditions.json` (per-frame condition tags). `same_looks` and
    `fold_every` make instrument types harder to tell from one frame (see `make_scene`);
    `generator` is the rendering revision (`scene.GENERATORS`).
    """
    if sequences < 1:
        raise ValueError(f'sequences must be >= 1, got {sequences}')
    if fps <= 0:
        raise ValueError(f'fps must be > 0, got {fps}')
    if style not in STYLES:
        raise ValueError(f'style must be one of {STYLES}, got {style!r}')
    if generator not in GENERATORS:
        raise ValueError(f'generator must be one of {GENERATORS}, got {generator!r}')
    out = Path(out)
    names = [f'seq_{i:03d}' for i in range(sequences)]
    splits = auto_splits(names, val, test)      # validate before writing anything
    for i, name in enumerate(names):
        t0 = time.perf_counter()
        rng = np.random.default_rng(np.random.SeedSequence([seed, i]))
        tags: list[list[str]] = []
        stems = []
        for j, (rgb, masks) in enumerate(generate_sequence(
                rng, frames, size, style=style, tags=tags, same_looks=same_looks,
                fold_every=fold_every, generator=generator)):
            stems.append(frame_stem(j))
            write_frame(out, name, stems[-1], rgb, masks)
        write_conditions(out / name, dict(zip(stems, tags)))
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
        'synth', help='write a generated surgical video dataset in the dmnet layout',
        description='Generate seeded surgical-looking video (abdominal tissue, robotic and '
                    'laparoscopic instruments, circular scope views, smoke, fogging, specular '
                    'flashes, occlusions) with binary/parts/type masks and per-frame condition '
                    'tags. Splits: the last --test sequences are test, the --val before them '
                    'val, the rest train; by default one sequence is in every split, two give '
                    'train + val=test, more hold out about 15%% each.')
    p.add_argument('--out', required=True, help='output dataset folder')
    p.add_argument('--sequences', type=int, default=4, help='number of sequences (default 4)')
    p.add_argument('--frames', type=int, default=60, help='frames per sequence (default 60)')
    p.add_argument('--seed', type=int, default=0, help='random seed (default 0)')
    p.add_argument('--size', type=parse_size, default=(256, 320), help='HxW (default 256x320)')
    p.add_argument('--fps', type=float, default=25.0, help='frame rate in the meta (default 25)')
    p.add_argument('--val', type=int, default=None, help='sequences held out for val')
    p.add_argument('--test', type=int, default=None, help='sequences held out for test')
    p.add_argument('--style', choices=STYLES, default='mixed',
                   help='robotic (da Vinci-like), laparoscopic (round scope view, thin rigid '
                        'instruments) or mixed: one of the two per sequence (default)')
    p.add_argument('--same-looks', action='store_true',
                   help='every instrument of a style wears one colour scheme (as da Vinci '
                        'instruments do), so only the jaws tell types apart')
    p.add_argument('--fold-every', type=float, default=FOLD_EVERY,
                   help='mean frames between tissue folds hiding an instrument tip '
                        f'(default {FOLD_EVERY:g}; smaller = more tip occlusions)')
    p.add_argument('--generator', type=int, choices=GENERATORS, default=GENERATOR,
                   help='rendering revision: 2 flat grey metal (what the shipped models were '
                        'trained on); 3 metal mirrors the tissue and pale fibres cross it (same '
                        f'scenes and masks for a seed; default {GENERATOR})')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    meta = generate_dataset(args.out, args.sequences, args.frames, args.seed, size=args.size,
                            fps=args.fps, val=args.val, test=args.test, style=args.style,
                            same_looks=args.same_looks, fold_every=args.fold_every,
                            generator=args.generator)
    print(f'wrote {args.sequences} x {args.frames} frames ({args.style}, generator '
          f'{args.generator}) to {args.out} '
          f'(splits: ' + ', '.join(f'{k}={len(v)}' for k, v in meta.splits.items()) + ')')
    return 0
