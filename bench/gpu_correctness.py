"""A quick CUDA correctness check of the Segmenter (run by bench/gpu_check.sh; no rclpy).

On the same generated frames: CUDA fp32 against the CPU, CUDA fp16 against CUDA fp32 (label
agreement, largest probability difference), masks at the input's shape, no NaN or Inf, and a
bank that stays bounded. Writes a JSON report; exit code 1 when a check fails.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bench import latency
from dmnet_core.cli import parse_model_size, parse_size

# Random (untrained) weights put many pixels near a tie between classes, so fp16 rounding can
# flip some labels; the probability bound is the sharper check.
MIN_AGREEMENT = 0.97
MAX_PROB_DIFF = {'fp16': 0.05, 'bf16': 0.1, 'fp32': 1e-3}


def run_variant(seg: Any, frames: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    labels, probs = [], []
    seg.reset()
    for rgb in frames:
        lab, p = seg.step(rgb, return_probs=True)
        labels.append(lab)
        probs.append(p)
    return labels, probs


def compare(name: str, ref: tuple[list, list], got: tuple[list, list], frames: list[np.ndarray],
            max_diff: float) -> dict[str, Any]:
    """Agreement of labels, probability difference, shapes and finiteness of `got`."""
    agree = float(np.mean([np.mean(a == b) for a, b in zip(ref[0], got[0])]))
    diff = float(max(np.abs(a - b).max() for a, b in zip(ref[1], got[1])))
    shapes = all(lab.shape == rgb.shape[:2] and lab.dtype == np.uint8
                 for lab, rgb in zip(got[0], frames))
    finite = all(np.isfinite(p).all() for p in got[1])
    ok = shapes and finite and agree >= MIN_AGREEMENT and diff <= max_diff
    return {'check': name, 'label_agreement': round(agree, 5), 'max_prob_diff': round(diff, 5),
            'shapes_ok': shapes, 'finite': finite, 'max_prob_diff_allowed': max_diff,
            'ok': bool(ok)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--device', default='cuda')
    p.add_argument('--size', type=parse_size, default=(240, 320),
                   help='frame size (the model resizes to --inference-size)')
    p.add_argument('--inference-size', type=parse_model_size, default=(256, 320))
    p.add_argument('--frames', type=int, default=12)
    p.add_argument('--json', type=Path, default=None)
    args = p.parse_args(argv)

    import torch

    from dmnet_core import load_segmenter

    if args.device.startswith('cuda') and not torch.cuda.is_available():
        print('gpu_correctness: error: CUDA is not available here', file=sys.stderr)
        return 2
    frames = latency.make_frames(args.size, args.frames)
    # 'recent' fills the bank so the global read is exercised from the second frame on.
    mem = {'policy': 'recent', 'capacity': 4}

    def make(device: str, precision: str) -> Any:
        return load_segmenter(None, device, precision=precision,
                              inference_size=args.inference_size, memory=mem)

    cpu = run_variant(make('cpu', 'fp32'), frames)
    seg32 = make(args.device, 'fp32')
    cuda32 = run_variant(seg32, frames)
    checks = [compare('cuda fp32 vs cpu fp32', cpu, cuda32, frames, MAX_PROB_DIFF['fp32'] * 10)]
    for prec in ('fp16', 'bf16'):
        seg = make(args.device, prec)
        checks.append(compare(f'cuda {prec} vs cuda fp32', cuda32, run_variant(seg, frames),
                              frames, MAX_PROB_DIFF[prec]))
        checks[-1]['precision_used'] = seg.precision
    checks.append({'check': 'bank bounded', 'bank_size': seg32.memory_size,
                   'capacity': seg32.capacity, 'ok': seg32.memory_size <= seg32.capacity})
    ok = all(c['ok'] for c in checks)
    report = {'device': args.device, 'size': latency.size_str(args.size),
              'inference_size': latency.size_str(args.inference_size), 'frames': args.frames,
              'machine': latency.machine_info(args.device), 'checks': checks, 'ok': ok}
    for c in checks:
        vals = ', '.join(f'{k}={v}' for k, v in c.items() if k not in ('check', 'ok'))
        print(f"[{'PASS' if c['ok'] else 'FAIL'}] {c['check']}: {vals}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
