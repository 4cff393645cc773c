"""`dmnet preprocess`: real datasets as distributed -> the dmnet layout.

    dmnet preprocess --dataset endovis17 --src DIR --out DIR [--folds {seed,ternaus}] [--fold K]
    dmnet preprocess --dataset endovis18 --src DIR --out DIR
    dmnet preprocess --dataset cholecseg8k --src DIR --out DIR [--val-videos 12,20]
                     [--test-videos 48,55]

The converters live in `endovis.py` (2017, 2018) and `cholecseg.py`; their docstrings give the
source layouts, label mappings and splits.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dmnet_core.data.cholecseg import convert_cholecseg8k
from dmnet_core.data.endovis import FOLDS, convert_endovis17, convert_endovis18
from dmnet_core.data.layout import DatasetMeta

DATASETS = ('endovis17', 'endovis18', 'cholecseg8k')
# Options each converter takes (others passed to `preprocess` are an error).
_OPTIONS = {'endovis17': {'folds', 'fold'}, 'endovis18': set(),
            'cholecseg8k': {'val_videos', 'test_videos'}}


def preprocess(dataset: str, src: str | Path, out: str | Path, **opts: Any) -> DatasetMeta:
    """Convert `src` (dataset as distributed) into the dmnet layout under `out`.

    Args:
        dataset: 'endovis17', 'endovis18' or 'cholecseg8k'.
        src: the unpacked dataset folder.
        out: output folder (created; existing files of the same names are replaced).
        **opts: endovis17: folds ('seed' | 'ternaus'), fold (0-3); cholecseg8k: val_videos,
            test_videos (lists of video ids). None values mean the default.
    """
    if dataset not in DATASETS:
        raise ValueError(f'unknown dataset {dataset!r}; expected one of {DATASETS}')
    opts = {k: v for k, v in opts.items() if v is not None}
    unknown = sorted(set(opts) - _OPTIONS[dataset])
    if unknown:
        raise ValueError(f'option(s) {unknown} do not apply to {dataset}; '
                         f'it takes {sorted(_OPTIONS[dataset]) or "none"}')
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise FileNotFoundError(f'source folder not found: {src}')
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise ValueError(f'output folder {out} must not be inside the source folder {src}')
    if dataset == 'endovis17':
        return convert_endovis17(src, out, **opts)
    if dataset == 'endovis18':
        return convert_endovis18(src, out)
    return convert_cholecseg8k(src, out, **opts)


def _video_list(text: str) -> list[str]:
    return [v for v in text.split(',') if v.strip()]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `dmnet preprocess`."""
    p = subparsers.add_parser(
        'preprocess', help='convert EndoVis 2017/2018 or CholecSeg8k into the dmnet layout',
        description='Convert a dataset as distributed into the dmnet layout (dataset.yaml, '
                    '<seq>/images, <seq>/masks/<task>).')
    p.add_argument('--dataset', required=True, choices=DATASETS)
    p.add_argument('--src', required=True, help='the unpacked dataset folder')
    p.add_argument('--out', required=True, help='output dataset folder')
    p.add_argument('--folds', choices=sorted(FOLDS), default=None,
                   help="endovis17: cross-validation folds, 'seed' ({1,3},{2,5},{4,8},{6,7}, "
                        "default) or 'ternaus' ({1,3},{2,6},{4,8},{5,7})")
    p.add_argument('--fold', type=int, default=None,
                   help='endovis17: fold (0-3) whose sequences form the val split (default 0)')
    p.add_argument('--val-videos', type=_video_list, default=None,
                   help='cholecseg8k: comma-separated video ids for val (e.g. 12,20)')
    p.add_argument('--test-videos', type=_video_list, default=None,
                   help='cholecseg8k: comma-separated video ids for test')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    opts: dict[str, Any] = {}
    if args.dataset == 'endovis17':
        opts = {'folds': args.folds, 'fold': args.fold}
    elif args.dataset == 'cholecseg8k':
        opts = {'val_videos': args.val_videos, 'test_videos': args.test_videos}
    else:
        ignored = [f for f in ('folds', 'fold', 'val_videos', 'test_videos')
                   if getattr(args, f) is not None]
        if ignored:
            raise ValueError(f'option(s) {ignored} do not apply to {args.dataset}')
    meta = preprocess(args.dataset, args.src, args.out, **opts)
    counts = ', '.join(f'{k}={len(v)}' for k, v in meta.splits.items())
    print(f'wrote {meta.name} to {args.out} (sequences per split: {counts})')
    return 0
