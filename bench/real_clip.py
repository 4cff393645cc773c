"""Zero-shot scores of a model on the real CholecSeg8k clip (evaluation only, never training).

Runs the Segmenter causally, frame by frame, over the 72 real laparoscopic frames beside the
checkout and prints (and writes as JSON):
- binary Dice (any instrument class against the clip's grasper/L-hook mask), the seed-paper
  protocol of `dmnet_core.metrics` (per frame, then the mean over frames);
- dataset-level binary Dice (all pixels of all frames at once);
- `surround_instrument_share`: the share of the pixels outside the endoscope's circular view
  (CholecSeg8k watershed class 50) that the model labels instrument;
- flicker (share of pixels whose label changes between consecutive frames), prediction and GT.
With `--montage` it also writes a picture of a few frames: frame | prediction overlay | GT.

    python -m bench.real_clip                          # shipped binary model
    python -m bench.real_clip --checkpoint runs/x/best.safetensors --json out.json
    python -m bench.real_clip --task parts             # any part counts as instrument
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CLIP = REPO.parent / 'shared' / 'data' / 'cholecseg8k_clip'
SURROUND_CLASS = 50          # CholecSeg8k watershed id of the black surround


def load_clip(clip: Path) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(stem, RGB frame, binary GT, surround mask) per frame, in time order."""
    frames = sorted((clip / 'video_pixel').glob('frame_*_endo.png'),
                    key=lambda p: int(p.stem.split('_')[1]))
    if not frames:
        raise FileNotFoundError(f'no frame_*_endo.png under {clip / "video_pixel"}')
    out = []
    for f in frames:
        n = f.stem.split('_')[1]
        shed = f.with_name(f'frame_{n}_endo_watershed_mask.png')
        if not shed.is_file():
            raise FileNotFoundError(f'missing ground truth {shed}')
        rgb = cv2.cvtColor(cv2.imread(str(f), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        ids = cv2.imread(str(shed), cv2.IMREAD_GRAYSCALE)
        out.append((f.stem, rgb, np.isin(ids, (31, 32)).astype(np.uint8),
                    ids == SURROUND_CLASS))
    return out


def score(seg, data: list) -> tuple[dict, list[np.ndarray]]:
    """Causal scores of one Segmenter over the clip, and its binary predictions."""
    from dmnet_core.metrics import SegmentationScorer

    scorer = SegmentationScorer(['background', 'instrument'])
    seg.reset()
    inter = total = surround_hits = surround_px = 0
    preds, t0 = [], time.perf_counter()
    for _, rgb, gt, surround in data:
        pred = (seg.step(rgb) > 0).astype(np.uint8)
        scorer.update(pred, gt, 'clip')
        inter += int((pred & gt).sum())
        total += int(pred.sum() + gt.sum())
        surround_hits += int(pred[surround].sum())
        surround_px += int(surround.sum())
        preds.append(pred)
    s = scorer.summary()
    return {
        'frames': len(data),
        'binary_dice': s['binary_dice'],
        'binary_dice_dataset': 2 * inter / total if total else None,
        'surround_instrument_share': surround_hits / surround_px if surround_px else None,
        'pred_flicker': s['temporal_stability']['pred_flicker'],
        'gt_flicker': s['temporal_stability']['gt_flicker'],
        'ms_per_frame': 1000 * (time.perf_counter() - t0) / len(data),
    }, preds


def montage(data: list, preds: list[np.ndarray], path: Path, picks: int = 3) -> None:
    """Rows of frame | prediction (green) | ground truth (magenta), half size."""
    rows = []
    for k in np.linspace(0, len(data) - 1, picks).astype(int):
        _, rgb, gt, _ = data[k]
        over = rgb.copy()
        over[preds[k] > 0] = (0.45 * over[preds[k] > 0] + 0.55 * np.array([0, 255, 0]))
        ref = rgb.copy()
        ref[gt > 0] = (0.45 * ref[gt > 0] + 0.55 * np.array([255, 0, 255]))
        gap = np.full((rgb.shape[0], 6, 3), 255, np.uint8)
        rows.append(np.concatenate([rgb, gap, over, gap, ref], axis=1))
        rows.append(np.full((6, rows[-1].shape[1], 3), 255, np.uint8))
    img = np.concatenate(rows[:-1], axis=0)
    img = cv2.resize(img, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--clip', type=Path, default=DEFAULT_CLIP,
                    help='the CholecSeg8k clip folder (with video_pixel/)')
    ap.add_argument('--checkpoint', default=None, help='default: the model shipped for --task')
    ap.add_argument('--task', default=None, help='shipped model to use: binary, parts or type')
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--inference-size', default=None, help="HxW (default: the checkpoint's)")
    ap.add_argument('--no-memory', action='store_true', help='also score with both memories off')
    ap.add_argument('--json', type=Path, default=None)
    ap.add_argument('--montage', type=Path, default=None, help='write a PNG of a few frames')
    args = ap.parse_args(argv)
    if not (args.clip / 'video_pixel').is_dir():
        print(f'real_clip: clip folder not found: {args.clip / "video_pixel"}', file=sys.stderr)
        return 2

    from dmnet_core.cli import parse_size
    from dmnet_core.segmenter import load_segmenter

    size = parse_size(args.inference_size) if args.inference_size else None
    try:
        data = load_clip(args.clip)
    except FileNotFoundError as exc:
        print(f'real_clip: {exc}', file=sys.stderr)
        return 2
    seg = load_segmenter(args.checkpoint, args.device, precision='fp32', inference_size=size,
                         task=args.task)
    res = {'clip': str(args.clip), 'checkpoint': args.checkpoint or f'shipped ({seg.task})',
           'task': seg.task, 'inference_size': list(seg.inference_size)}
    res['memory_on'], preds = score(seg, data)
    if args.montage:
        montage(data, preds, args.montage)
    if args.no_memory:
        off = load_segmenter(args.checkpoint, args.device, precision='fp32', inference_size=size,
                             task=args.task,
                             memory={'local_enabled': False, 'global_enabled': False})
        res['memory_off'] = score(off, data)[0]
    for name in ('memory_on', 'memory_off'):
        if name in res:
            r = res[name]
            print(f'{name}: binary Dice {r["binary_dice"]:.4f} (dataset-level '
                  f'{r["binary_dice_dataset"]:.4f}), surround labelled instrument '
                  f'{100 * r["surround_instrument_share"]:.2f} %, flicker '
                  f'{r["pred_flicker"]:.4f} (GT {r["gt_flicker"]:.4f}), '
                  f'{r["ms_per_frame"]:.1f} ms/frame, {r["frames"]} frames')
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
