"""Zero-shot scores of a model on real annotated folders (evaluation only, never training).

Runs the Segmenter causally, frame by frame, over each folder (`dmnet_core.real_eval`: the
CholecSeg8k clip layout or the Endoscapes layout, recognised by their folders) and prints a
table (and writes JSON / Markdown):
- binary Dice, mean over the frames with an instrument (any instrument class against the
  folder's tool mask), and dataset-level (all pixels of all frames at once);
- on frames without an instrument (Endoscapes' black frames): how many got any instrument
  pixel, and the share of their pixels so labelled;
- `surround_instrument_share` (CholecSeg8k): share of the pixels outside the scope's circular
  view labelled instrument;
- flicker (share of pixels whose label changes between consecutive frames), prediction and GT;
- with `--no-memory`, the same with both memories off.
With `--montage` it also writes a picture of a few frames: frame | prediction | GT.

    python -m bench.real_clip                          # shipped binary model, the clip
    python -m bench.real_clip --data ../shared/data/endoscapes_seg/val \\
        --data ../shared/data/cholecseg8k_clip --no-memory --markdown out.md
    python -m bench.real_clip --checkpoint runs/x/best.safetensors --json out.json
    python -m bench.real_clip --task parts             # any part counts as instrument
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from dmnet_core.real_eval import RealFrame, score_real

DEFAULT_CLIP = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'cholecseg8k_clip'


def montage(frames: list[tuple[str, RealFrame, np.ndarray]], path: Path,
            stems: list[str] | None = None, picks: int = 3) -> None:
    """Rows of frame | prediction (green) | ground truth (magenta), each row 320 px high."""
    if stems:
        chosen = [f for f in frames if f[1].stem in stems]
        missing = sorted(set(stems) - {f[1].stem for f in chosen})
        if missing:
            raise ValueError(f'--montage-stems: no frame named {missing}')
    else:
        chosen = [frames[k] for k in np.linspace(0, len(frames) - 1, picks).astype(int)]
    rows = []
    for _, f, pred in chosen:
        over, ref = f.rgb.copy(), f.rgb.copy()
        over[pred > 0] = 0.45 * over[pred > 0] + 0.55 * np.array([0, 255, 0])
        ref[f.gt > 0] = 0.45 * ref[f.gt > 0] + 0.55 * np.array([255, 0, 255])
        gap = np.full((f.rgb.shape[0], 6, 3), 255, np.uint8)
        row = np.concatenate([f.rgb, gap, over, gap, ref], axis=1)
        scale = 320 / row.shape[0]
        rows.append(cv2.resize(row, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 6), (0, width - r.shape[1]), (0, 0)), constant_values=255)
            for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(rows)[:-6], cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_PNG_COMPRESSION, 9])


def _pct(v: float | None) -> str:
    return '-' if v is None else f'{100 * v:.2f} %'


def _f(v: float | None) -> str:
    return '-' if v is None else f'{v:.4f}'


def _short(folder: str) -> str:
    """A folder's name, with its parent's where the name is a split ('endoscapes_seg/val')."""
    p = Path(folder)
    return f'{p.parent.name}/{p.name}' if p.name in ('train', 'val', 'test') else p.name


def markdown(res: dict) -> str:
    """One table row per folder and memory setting."""
    lines = [f"Model: {res['checkpoint']} (task {res['task']}, inference "
             f"{res['inference_size'][0]}x{res['inference_size'][1]})", '',
             '| data | memories | frames (with instrument) | binary Dice | dataset-level Dice '
             '| empty frames with instrument px | instrument px on empty frames '
             '| surround labelled | flicker (GT) | ms/frame |',
             '|---|---|---|---|---|---|---|---|---|---|']
    for s in res['sets']:
        for name in ('memory_on', 'memory_off'):
            if name not in s:
                continue
            r = s[name]
            lines.append(
                f"| {_short(s['data'])} "
                f"| {name.split('_')[1]} | {r['frames']} ({r['frames_with_instrument']}) "
                f"| {_f(r['binary_dice'])} | {_f(r['binary_dice_dataset'])} "
                f"| {r['empty_frames_with_fp']} of {r['empty_frames']} "
                f"| {_pct(r['empty_frame_instrument_share'])} "
                f"| {_pct(r['surround_instrument_share'])} "
                f"| {_f(r['pred_flicker'])} ({_f(r['gt_flicker'])}) | {r['ms_per_frame']:.1f} |")
    return '\n'.join(lines) + '\n'


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--data', '--clip', dest='data', type=Path, action='append', default=None,
                    help='a real folder (CholecSeg8k clip with video_pixel/, or Endoscapes with '
                         'images/ + masks/); repeat for several (default: the CholecSeg8k clip)')
    ap.add_argument('--checkpoint', default=None, help='default: the model shipped for --task')
    ap.add_argument('--task', default=None, help='shipped model to use: binary, parts or type')
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--precision', default='fp32',
                    help="'fp32' (default), 'auto' (what the node runs), 'bf16' or 'fp16'")
    ap.add_argument('--inference-size', default=None, help="HxW (default: the checkpoint's)")
    ap.add_argument('--no-memory', action='store_true', help='also score with both memories off')
    ap.add_argument('--json', type=Path, default=None)
    ap.add_argument('--markdown', type=Path, default=None, help='write the table as Markdown')
    ap.add_argument('--montage', type=Path, default=None,
                    help='write a PNG of a few frames of the first folder')
    ap.add_argument('--montage-stems', default=None,
                    help='comma-separated frame stems for --montage (default: 3 evenly spaced)')
    args = ap.parse_args(argv)

    from dmnet_core.cli import parse_size
    from dmnet_core.segmenter import load_segmenter

    folders = args.data or [DEFAULT_CLIP]
    size = parse_size(args.inference_size) if args.inference_size else None
    seg = load_segmenter(args.checkpoint, args.device, precision=args.precision,
                         inference_size=size, task=args.task)
    off = None
    if args.no_memory:
        off = load_segmenter(args.checkpoint, args.device, precision=args.precision,
                             inference_size=size, task=args.task,
                             memory={'local_enabled': False, 'global_enabled': False})
    res = {'checkpoint': args.checkpoint or f'shipped ({seg.task})', 'task': seg.task,
           'inference_size': list(seg.inference_size), 'precision': seg.precision, 'sets': []}
    for i, folder in enumerate(folders):
        try:
            on = score_real(seg, folder, keep=bool(args.montage) and i == 0)
        except (FileNotFoundError, ValueError) as exc:
            print(f'real_clip: {exc}', file=sys.stderr)
            return 2
        if 'kept' in on:
            stems = args.montage_stems.split(',') if args.montage_stems else None
            try:
                montage(on.pop('kept'), args.montage, stems)
            except ValueError as exc:
                print(f'real_clip: {exc}', file=sys.stderr)
                return 2
        s = {'data': str(folder), 'memory_on': on}
        if off is not None:
            s['memory_off'] = score_real(off, folder)
        res['sets'].append(s)
    # The first folder's figures also at the top level, where earlier versions put the clip's.
    res.update({'clip': res['sets'][0]['data'],
                **{k: v for k, v in res['sets'][0].items() if k.startswith('memory_')}})
    table = markdown(res)
    print(table, end='')
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
