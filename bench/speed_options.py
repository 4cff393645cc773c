"""The model's own CPU speed at 256x320 and what each speed option costs in accuracy.

Options, each on the shipped default model (or --checkpoint, any DMNet):
  fp32            the default: batch norm folded, channels-last, eager
  contiguous      channels-last off
  bf16            autocast bf16 (needs native bf16: AVX-512-BF16 or AMX; `lscpu` says)
  compile         torch.compile of encoder and decoder (start-up time reported)
  compile+bf16    both
(int8: torch 2.14's torch.ao has no PT2E quantizer any more (it moved to the torchao package,
not installed here), and FX mode cannot trace the encoder's SAME-padding convs; with those left
fp32 the encoder's outputs were off by 28-54 % (relative mean error) and the step slower, so no
int8 option is offered; see docs/performance.md.)
Speed: steps per second on frames at the inference size, options interleaved round by round so
that a machine's background load hits them alike. Accuracy: binary Dice at full resolution on
`--endoscapes` (frames with an instrument; class 6 = instrument; the memory reset per video) and
mean Dice on a generated held-out set (`dmnet synth` seed 2, generator 3). Also the labels path:
today's (bilinear upsample of the logits, argmax at full size: `step(return_probs=True)`) against
the cv2 path of `step()`.

    .venv/bin/python -m bench.speed_options --json bench/results/cpu_speed_options.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]

from dmnet_core import load_segmenter  # noqa: E402
from dmnet_core.data.synth.dataset import generate_dataset  # noqa: E402
from dmnet_core.evaluate import score_split  # noqa: E402

OPTIONS = ('fp32', 'contiguous', 'bf16', 'compile', 'compile+bf16')
ENDOSCAPES = REPO.parent / 'shared' / 'data' / 'endoscapes_seg' / 'val'
INSTRUMENT = 6


def endoscapes_frames(root: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(video id, RGB frame, binary GT) in file order."""
    out = []
    for img in sorted((root / 'images').glob('*.jpg')):
        mask = cv2.imread(str(root / 'masks' / (img.stem + '.png')), cv2.IMREAD_GRAYSCALE)
        rgb = cv2.cvtColor(cv2.imread(str(img)), cv2.COLOR_BGR2RGB)
        out.append((img.stem.split('_')[0], rgb, (mask == INSTRUMENT).astype(np.uint8)))
    return out


def dice_endoscapes(seg, frames, old_path: bool = False) -> float:
    """Binary Dice averaged over frames that contain an instrument, at full resolution."""
    scores, video = [], None
    for vid, rgb, gt in frames:
        if vid != video:
            seg.reset()
            video = vid
        pred = seg.step(rgb, return_probs=True)[0] if old_path else seg.step(rgb)
        pred = pred > 0
        if gt.any():
            inter = np.logical_and(pred, gt).sum()
            scores.append(2.0 * inter / (pred.sum() + gt.sum()))
    return float(np.mean(scores))


def build(option: str, checkpoint: str | None):
    """A Segmenter with `option` applied; returns (segmenter, start-up seconds)."""
    t0 = time.perf_counter()
    precision = 'bf16' if 'bf16' in option else 'fp32'
    seg = load_segmenter(checkpoint, 'cpu', precision=precision,
                         torch_compile=option.startswith('compile'))
    if option.startswith('compile') and not seg.compiled:
        raise RuntimeError(f'compile failed: {seg.compile_error}')
    if option == 'contiguous':
        seg.model = seg.model.to(memory_format=torch.contiguous_format)
        seg.channels_last = False
    seg.warm_up()
    return seg, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--checkpoint', default=None, help='default: the shipped default model')
    p.add_argument('--options', default=','.join(OPTIONS))
    p.add_argument('--rounds', type=int, default=5,
                   help='interleaved timing rounds (0: accuracy only)')
    p.add_argument('--steps', type=int, default=20, help='steps per option per round')
    p.add_argument('--endoscapes', type=Path, default=ENDOSCAPES)
    p.add_argument('--synth-sequences', type=int, default=3, help='generated test sequences')
    p.add_argument('--synth-frames', type=int, default=30)
    p.add_argument('--no-accuracy', action='store_true')
    p.add_argument('--json', type=Path)
    args = p.parse_args(argv)
    options = args.options.split(',')
    frames = endoscapes_frames(args.endoscapes) if not args.no_accuracy else []
    segs, info = {}, {}
    for opt in options:
        try:
            segs[opt], startup = build(opt, args.checkpoint)
            info[opt] = {'startup_s': startup, 'precision': segs[opt].precision}
        except Exception as exc:  # an option this machine cannot run: reported, not fatal
            info[opt] = {'error': f'{type(exc).__name__}: {str(exc).splitlines()[0][:200]}'}
        print(opt, json.dumps(info[opt]), flush=True)
    # Speed: frames at the inference size, options interleaved.
    size = next(iter(segs.values())).inference_size
    rng = np.random.default_rng(0)
    inputs = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(4)]
    times: dict[str, list[float]] = {o: [] for o in segs}
    for _ in range(args.rounds):
        for opt, seg in segs.items():
            seg.reset()
            for i in range(args.steps):
                t0 = time.perf_counter()
                seg.step(inputs[i % 4])
                times[opt].append(time.perf_counter() - t0)
    for opt, ts in times.items():
        if not ts:
            continue
        ms = np.array(ts) * 1e3
        info[opt].update({'step_ms_p50': float(np.median(ms)), 'step_ms_mean': float(ms.mean()),
                          'fps_p50': float(1e3 / np.median(ms))})
    base = info.get('fp32', {}).get('step_ms_p50')
    if not args.no_accuracy:
        with tempfile.TemporaryDirectory() as tmp:
            generate_dataset(tmp, sequences=args.synth_sequences + 1, frames=args.synth_frames,
                             seed=2, size=size, val=0, test=args.synth_sequences, generator=3)
            for opt, seg in segs.items():
                info[opt]['endoscapes_dice'] = dice_endoscapes(seg, frames)
                summary, _, _ = score_split(seg, tmp, 'test')
                info[opt]['generated_dice'] = summary['mean_dice']
                print(opt, json.dumps(info[opt]), flush=True)
            if 'fp32' in segs:
                info['fp32']['endoscapes_dice_old_path'] = dice_endoscapes(segs['fp32'], frames,
                                                                           old_path=True)
    result = {
        'what': 'Segmenter.step at the inference size on the CPU, options interleaved; Dice: '
                'Endoscapes val binary (frames with an instrument) and generated test (seed 2, '
                'generator 3)',
        'inference_size': list(size), 'threads': torch.get_num_threads(),
        'omp_num_threads': os.environ.get('OMP_NUM_THREADS', ''),
        'checkpoint': args.checkpoint or '(shipped default)', 'options': info,
    }
    print('\n| option | step ms p50 | FPS | x fp32 | Endoscapes Dice | generated Dice | '
          'start-up s |')
    print('|---|---|---|---|---|---|---|')
    for opt in options:
        r = info[opt]
        if 'error' in r:
            print(f'| {opt} | failed: {r["error"]} | | | | | |')
            continue
        ms = r.get('step_ms_p50', float('nan'))
        print(f"| {opt} | {ms:.1f} | {1e3 / ms:.1f} | "
              f"{base / ms if base else float('nan'):.2f} | "
              f"{r.get('endoscapes_dice', float('nan')):.4f} | "
              f"{r.get('generated_dice', float('nan')):.4f} | {r['startup_s']:.1f} |")
    if 'endoscapes_dice_old_path' in info.get('fp32', {}):
        print(f"\nlabels path on Endoscapes val (fp32): today's torch upsample + argmax "
              f"{info['fp32']['endoscapes_dice_old_path']:.4f}, cv2 path "
              f"{info['fp32']['endoscapes_dice']:.4f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
