"""Soak: 10,000+ frames through the model (and optionally the ROS 2 node); memory must stay flat.

    python -m bench.soak --frames 10000 --size 64x80 --json out/soak.json
    python -m bench.soak --frames 2000 --size 64x80 --node --json out/soak_node.json

The global memory bank and every buffer are bounded, so after a short settling period the
process's resident memory (and CUDA memory on a GPU) must not grow with the number of frames.
The frames are one long generated surgical sequence (`dmnet_core.data.synth`), rendered on the
fly. The global memory uses `policy='recent'` by default so that the bank fills up and evicts
on every frame whatever the (possibly untrained) weights say: the worst case for growth.

Reported: RSS (and CUDA allocated / reserved) at the start (after `--settle` frames) and the
end, samples along the way, the growth per 1000 frames, the bank size, frames per second, and
`flat` = growth below `--tolerance-mb`. With `--node`, the same for the node process, frames
sent one at a time (each waits for its mask).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bench import latency
from dmnet_core.cli import parse_model_size, parse_size

log = logging.getLogger('bench.soak')


def frame_source(size: tuple[int, int], frames: int, seed: int) -> Iterator[np.ndarray]:
    """`frames` frames of one long generated sequence, rendered lazily (H x W x 3 uint8)."""
    from dmnet_core.data.synth import generate_sequence

    for rgb, _ in generate_sequence(seed, frames, size):
        yield rgb


def cuda_mb(device: str) -> dict[str, float]:
    if not device.startswith('cuda'):
        return {}
    import torch

    torch.cuda.synchronize()
    return {'cuda_allocated_mb': round(torch.cuda.memory_allocated() / 2**20, 2),
            'cuda_reserved_mb': round(torch.cuda.memory_reserved() / 2**20, 2)}


def summarize(samples: list[dict[str, Any]], settle: int, tolerance_mb: float,
              key: str = 'rss_mb') -> dict[str, Any]:
    """Start (first sample at or after `settle`) vs end, growth per 1000 frames, verdict."""
    after = [s for s in samples if s['frame'] >= settle] or samples
    start, end = after[0], after[-1]
    span = max(end['frame'] - start['frame'], 1)
    growth = end[key] - start[key]
    # Least-squares slope over all settled samples: robust to one noisy end point.
    if len(after) >= 3:
        x = np.array([s['frame'] for s in after], dtype=np.float64)
        y = np.array([s[key] for s in after], dtype=np.float64)
        slope = float(np.polyfit(x, y, 1)[0]) * 1000.0
    else:
        slope = growth / span * 1000.0
    out = {f'{key}_start': start[key], f'{key}_end': end[key], f'{key}_max':
           max(s[key] for s in after), 'start_frame': start['frame'], 'end_frame': end['frame'],
           f'{key}_growth': round(growth, 2), f'{key}_slope_per_1000_frames': round(slope, 3)}
    out['flat'] = bool(growth < tolerance_mb)
    return out


def soak_model(args: argparse.Namespace) -> dict[str, Any]:
    """Step one Segmenter over `args.frames` frames, sampling memory every `args.every`."""
    from dmnet_core import load_segmenter

    seg = load_segmenter(args.checkpoint, args.device, precision=args.precision,
                         inference_size=args.inference_size, memory={'policy': args.policy})
    samples: list[dict[str, Any]] = []
    bank_max, ms = 0, []
    t0 = time.perf_counter()
    for i, rgb in enumerate(frame_source(args.size, args.frames, args.seed)):
        start = time.perf_counter()
        seg.step(rgb)
        ms.append((time.perf_counter() - start) * 1000.0)
        bank_max = max(bank_max, seg.memory_size)
        if i % args.every == 0 or i == args.frames - 1:
            samples.append({'frame': i, 'rss_mb': round(latency.rss_mb(), 2),
                            'bank_size': seg.memory_size, **cuda_mb(args.device)})
            if i % (args.every * 10) == 0:
                log.info('model frame %d: rss %.1f MiB, bank %d, %.2f ms/frame', i,
                         samples[-1]['rss_mb'], seg.memory_size, float(np.median(ms[-200:])))
    wall = time.perf_counter() - t0
    out = {'frames': args.frames, 'wall_s': round(wall, 1), 'fps': round(args.frames / wall, 1),
           **latency.stats_ms(ms), 'bank_size_end': seg.memory_size, 'bank_size_max': bank_max,
           'capacity': seg.capacity, 'frames_seen': seg.frames_seen,
           'rss': summarize(samples, args.settle, args.tolerance_mb), 'samples': samples}
    out['bounded_bank'] = bank_max <= seg.capacity
    if args.device.startswith('cuda'):
        out['cuda'] = summarize(samples, args.settle, args.tolerance_mb, 'cuda_allocated_mb')
    return out


def soak_node(args: argparse.Namespace, frames: int) -> dict[str, Any]:
    """Send `frames` frames through the node one at a time; sample the node process's RSS."""
    import psutil
    import rclpy

    domain_id = 100 + (os.getpid() + 37) % 100
    os.environ['ROS_DOMAIN_ID'] = str(domain_id)
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    params = latency.node_params(args.checkpoint, args.device, args.precision,
                                 args.inference_size, {'policy': args.policy})
    out_dir = args.json.parent if args.json else Path('out')
    out_dir.mkdir(parents=True, exist_ok=True)
    samples: list[dict[str, Any]] = []
    ms: list[float] = []
    lost = 0
    with latency.node_process(params, domain_id, out_dir / 'soak_node.log') as proc:
        node_ps = psutil.Process(proc.pid)
        rclpy.init()
        client = latency.NodeClient()
        try:
            if not client.spin_until(lambda: proc.poll() is not None or client.ready(), 90.0) \
                    or proc.poll() is not None:
                raise RuntimeError(f'the dmnet node did not come up (exit code {proc.poll()}; '
                                   f"log: {out_dir / 'soak_node.log'})")
            t0 = time.perf_counter()
            for i, rgb in enumerate(frame_source(args.size, frames, args.seed)):
                e2e = client.roundtrip(rgb, i, 20.0)
                if e2e is None:
                    lost += 1
                else:
                    ms.append(e2e)
                if i % args.every == 0 or i == frames - 1:
                    samples.append({'frame': i, 'rss_mb': round(node_ps.memory_info().rss
                                                                / 2**20, 2),
                                    'probe_rss_mb': round(latency.rss_mb(), 2)})
                    if i % (args.every * 10) == 0:
                        log.info('node frame %d: node rss %.1f MiB, %.2f ms end to end', i,
                                 samples[-1]['rss_mb'], float(np.median(ms[-200:] or [0])))
            wall = time.perf_counter() - t0
        finally:
            client.close()
            rclpy.shutdown()
    return {'frames': frames, 'wall_s': round(wall, 1), 'lost_frames': lost,
            'e2e': latency.stats_ms(ms) if ms else None,
            'rss': summarize(samples, args.settle, args.tolerance_mb),
            'probe_rss': summarize(samples, args.settle, args.tolerance_mb, 'probe_rss_mb'),
            'samples': samples}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--frames', type=int, default=10000, help='frames through the model')
    p.add_argument('--size', type=parse_size, default=(64, 80),
                   help='HxW of the generated frames (default 64x80)')
    p.add_argument('--inference-size', type=parse_model_size, default=(64, 64),
                   help='HxW the model runs at, multiples of 32 (default 64x64)')
    p.add_argument('--node', action='store_true', help='also soak the ROS 2 node')
    p.add_argument('--node-frames', type=int, default=None,
                   help='frames through the node (default: --frames)')
    p.add_argument('--json', type=Path, default=None, help='write the results here')
    p.add_argument('--device', default='cpu', help='cpu | cuda | cuda:N')
    p.add_argument('--precision', default='fp32', choices=('fp32', 'fp16', 'bf16'))
    p.add_argument('--checkpoint', default=None, help='a .safetensors checkpoint')
    p.add_argument('--policy', default='recent', choices=('recent', 'active', 'uniform'),
                   help="global memory admission (default 'recent': the bank is always full)")
    p.add_argument('--every', type=int, default=100, help='sample memory every N frames')
    p.add_argument('--settle', type=int, default=500,
                   help='frames before the start measurement (allocator warm-up)')
    p.add_argument('--tolerance-mb', type=float, default=20.0,
                   help='largest RSS growth from start to end still called flat')
    p.add_argument('--seed', type=int, default=11, help='synthetic sequence seed')
    p.add_argument('--skip-model', action='store_true', help='only the node (with --node)')
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    args = build_parser().parse_args(argv)
    if args.frames < 1 or args.every < 1:
        print('soak: error: --frames and --every must be >= 1', file=sys.stderr)
        return 2
    if args.checkpoint and not Path(args.checkpoint).is_file():
        print(f'soak: error: checkpoint not found: {args.checkpoint}', file=sys.stderr)
        return 2
    args.settle = min(args.settle, args.frames // 2)
    result: dict[str, Any] = {'size': latency.size_str(args.size),
                              'inference_size': latency.size_str(args.inference_size),
                              'policy': args.policy, 'machine': latency.machine_info(args.device)}
    code = 0
    try:
        if not args.skip_model:
            result['model'] = soak_model(args)
        if args.node:
            result['node'] = soak_node(args, args.node_frames or args.frames)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f'soak: error: {exc}', file=sys.stderr)
        result['error'] = str(exc)
        code = 1
    print_report(result)
    growing = [k for k in ('model', 'node') if k in result and not result[k]['rss']['flat']]
    if growing and not code:
        print(f"soak: memory grew beyond {args.tolerance_mb} MiB in: {', '.join(growing)}",
              file=sys.stderr)
        code = 3
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f'wrote {args.json}')
    return code


def print_report(result: dict[str, Any]) -> None:
    where = result['machine']['cuda_device'] or result['machine']['cpu_model']
    print(f"\nsoak @ {result['size']} (inference {result['inference_size']}, policy "
          f"{result['policy']}) on {where}")
    m = result.get('model')
    if m:
        r = m['rss']
        print(f"model: {m['frames']} frames in {m['wall_s']} s ({m['fps']} FPS, median "
              f"{m['median_ms']:.2f} ms); bank {m['bank_size_end']}/{m['capacity']} "
              f"(max {m['bank_size_max']})")
        print(f"  RSS {r['rss_mb_start']:.1f} MiB @ frame {r['start_frame']} -> "
              f"{r['rss_mb_end']:.1f} MiB @ frame {r['end_frame']} (growth "
              f"{r['rss_mb_growth']:+.1f} MiB, slope {r['rss_mb_slope_per_1000_frames']:+.2f} "
              f"MiB/1000 frames): {'flat' if r['flat'] else 'GROWING'}")
        if 'cuda' in m:
            c = m['cuda']
            print(f"  CUDA allocated {c['cuda_allocated_mb_start']:.1f} -> "
                  f"{c['cuda_allocated_mb_end']:.1f} MiB: {'flat' if c['flat'] else 'GROWING'}")
    n = result.get('node')
    if n:
        r = n['rss']
        e2e = n['e2e'] or {}
        print(f"node: {n['frames']} frames in {n['wall_s']} s, lost {n['lost_frames']}, "
              f"end-to-end median {e2e.get('median_ms', float('nan')):.2f} ms")
        print(f"  node RSS {r['rss_mb_start']:.1f} -> {r['rss_mb_end']:.1f} MiB (growth "
              f"{r['rss_mb_growth']:+.1f} MiB): {'flat' if r['flat'] else 'GROWING'}")
    if result.get('error'):
        print(f"error: {result['error']}")


if __name__ == '__main__':
    sys.exit(main())
