"""The model's own CPU speed at 256x320 and what each speed option costs in accuracy.

Options, each on the shipped default model (or --checkpoint, any DMNet):
  fp32            batch norm folded, channels-last, eager (the default on a CPU without bf16)
  contiguous      channels-last off
  bf16            autocast bf16, the CPU default where native (AVX-512-BF16 or AMX; `lscpu` says)
  compile         torch.compile of encoder and decoder (start-up time reported)
  compile+bf16    both
(int8: torch 2.14's torch.ao has no PT2E quantizer any more (it moved to the torchao package,
not installed here), and FX mode cannot trace the encoder's SAME-padding convs; with those left
fp32 the encoder's outputs were off by 28-54 % (relative mean error) and the step slower, so no
int8 option is offered; see docs/performance.md.)
Speed: steps per second on frames at the inference size, options interleaved round by round so
that a machine's background load hits them alike. Accuracy: binary Dice at full resolution on
`--endoscapes` (frames with an instrument; class 6 = instrument; the memory reset per video) and
mean Dice on a generated held-out set (`dmnet synth` seed 2, generator 3).

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

import numpy as np
import torch

from dmnet_core import load_segmenter
from dmnet_core.data.synth.dataset import generate_dataset
from dmnet_core.evaluate import score_split
from dmnet_core.real_eval import score_real

REPO = Path(__file__).resolve().parents[1]

OPTIONS = ('fp32', 'contiguous', 'bf16', 'compile', 'compile+bf16')
ENDOSCAPES = REPO.parent / 'shared' / 'data' / 'endoscapes_seg' / 'val'


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
                info[opt]['endoscapes_dice'] = score_real(seg, args.endoscapes)['binary_dice']
                summary, _, _ = score_split(seg, tmp, 'test')
                info[opt]['generated_dice'] = summary['mean_dice']
                print(opt, json.dumps(info[opt]), flush=True)
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
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
