"""Score the memory ablation and write its table to experiments/memory_ablation/results/.

    python -m experiments.memory_ablation.score_ablation [--models DIR] [--data DIR] ...

- Held-out video: `--data` (default runs/ablation/test_seed<SEED>), generated with `dmnet synth`
  from `--test-seed` (7919: nothing was trained, tuned or selected on it) when missing; with
  `--data`, the seed recorded is `--test-seed` if given, else unknown (null); its
  `--split` (test) is scored causally, frame by frame, as `dmnet evaluate` does.
- Per model (single_frame, local_only, global_only, dmnet): mIoU and mDice under the seed-paper
  protocol and the challenge IoU/Dice, per-condition mIoU (when the sequences carry
  conditions.json), parameters, and ms per frame on this machine, timed round-robin (one frame
  for each model in turn, so background load hits all alike).
- Global-memory policies (active, recent, uniform) switched at inference on the DMNet weights,
  and a sweep of the bank capacity x n_read.
- The real CholecSeg8k clip (evaluation only): binary Dice (any instrument class) and flicker
  of DMNet with and without its memories, and of the single-frame model.

Writes JSON (`--json`, default experiments/memory_ablation/results/ablation.json) and the
markdown tables (`--md`, default the JSON's path with .md).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.machine import cpu_name
from experiments.memory_ablation.train_ablation import (
    FOUR,
    MODELS,
    SYNTH_ARGS,
    VARIANTS,
    model_path,
)

REPO = Path(__file__).resolve().parents[2]

POLICIES = ('active', 'recent', 'uniform')
MEMORY_OFF = {'local_enabled': False, 'global_enabled': False}
DEFAULT_CLIP = REPO.parent / 'shared' / 'data' / 'cholecseg8k_clip' / 'video_pixel'
# Held-out seed of the committed table: nothing was trained, tuned or selected on it.
DEFAULT_TEST_SEED = 7919


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--models', type=Path, default=MODELS,
                    help='folder with <variant>.safetensors (default: the committed ones, '
                         'DMNet being the shipped type model)')
    ap.add_argument('--data', type=Path, default=None,
                    help='held-out dataset (default runs/ablation/test_seed<SEED>)')
    ap.add_argument('--variants', nargs='+', default=list(FOUR), choices=list(VARIANTS),
                    help='models to score (MODELS/<name>.safetensors); single_frame and dmnet '
                         'are always among them (baseline, policies, sweep, real clip)')
    ap.add_argument('--split', default='test')
    ap.add_argument('--test-seed', type=int, default=None,
                    help='seed of the held-out set (default 7919 without --data; with --data, '
                         'recorded in the results and used to generate DIR when missing)')
    ap.add_argument('--test-sequences', type=int, default=4)
    ap.add_argument('--test-frames', type=int, default=100)
    ap.add_argument('--test-size', default='128x160')
    ap.add_argument('--synth-args', default=SYNTH_ARGS,
                    help='extra `dmnet synth` arguments (default: those of the training set)')
    ap.add_argument('--max-frames', type=int, default=None, help='first N frames per sequence')
    ap.add_argument('--timing-frames', type=int, default=40,
                    help='frames of the round-robin timing (default 40)')
    ap.add_argument('--capacity', type=int, nargs='*', default=[4, 8, 16, 32])
    ap.add_argument('--n-read', type=int, nargs='*', default=[1, 2, 4, 8])
    ap.add_argument('--real-clip', type=Path, default=DEFAULT_CLIP,
                    help='CholecSeg8k clip folder (skipped when absent)')
    ap.add_argument('--label-propagation', type=float, default=None, metavar='GAMMA',
                    help="label propagation's weight for every model, policy and sweep run "
                         "(model.label_propagation; default: each checkpoint's own)")
    ap.add_argument('--local-vote-radius', type=int, default=None, metavar='R',
                    help="the local vote's radius for every model with a local memory "
                         "(model.local_memory.vote_radius: -1 every cell, 0 the same cell; "
                         "default: each checkpoint's own)")
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    ap.add_argument('--json', type=Path, default=MODELS / 'results' / 'ablation.json')
    ap.add_argument('--md', type=Path, default=None,
                    help='markdown tables (default: --json with .md, so scoring a side '
                         'experiment into its own --json leaves the committed table alone)')
    args = ap.parse_args(argv)
    if args.data is None:
        args.test_seed = DEFAULT_TEST_SEED if args.test_seed is None else args.test_seed
        args.data = REPO / 'runs' / 'ablation' / f'test_seed{args.test_seed}'
    return args


def ensure_test_data(args: argparse.Namespace) -> list[str] | None:
    """Generate the held-out set when missing: all but one sequence in the test split."""
    from dmnet_core.cli import main as dmnet
    if (args.data / 'dataset.yaml').is_file():
        return None
    if args.test_seed is None:
        raise SystemExit(f'score_ablation: {args.data} has no dataset.yaml; give --test-seed to '
                         'generate it there')
    n = args.test_sequences
    cmd = ['synth', '--out', str(args.data), '--sequences', str(n + 1), '--frames',
           str(args.test_frames), '--seed', str(args.test_seed), '--size', args.test_size,
           '--val', '0', '--test', str(n), *args.synth_args.split()]
    print('dmnet', ' '.join(cmd), flush=True)
    if dmnet(cmd) != 0:
        raise SystemExit(f'score_ablation: dmnet synth failed for {args.data}')
    return cmd


def parameters(path: Path) -> dict:
    """Parameter counts of the trained network (batch norm unfolded), total and per memory."""
    from dmnet_core.checkpoint import build_from_checkpoint
    model, cfg = build_from_checkpoint(path)

    def count(module: object) -> int:
        return 0 if module is None else sum(p.numel() for p in module.parameters())
    return {'params': count(model), 'params_local_memory': count(model.local_memory),
            'params_global_memory': count(model.global_memory),
            'local': cfg.local_memory.enabled, 'global': cfg.global_memory.enabled}


def overrides(args: argparse.Namespace, memory: dict | None = None) -> dict | None:
    """`memory` plus `--label-propagation` and `--local-vote-radius` when given (None when there
    is nothing to change; the radius changes nothing in a model without a local memory)."""
    for key in ('label_propagation', 'local_vote_radius'):
        value = getattr(args, key, None)                    # other scripts' args lack them
        if value is not None:
            memory = {**(memory or {}), key: value}
    return memory


def score(path: Path, args: argparse.Namespace, memory: dict | None = None) -> dict:
    """Causal scores of one checkpoint (with optional memory overrides) on the held-out split."""
    from dmnet_core.evaluate import score_split
    from dmnet_core.segmenter import load_segmenter
    seg = load_segmenter(path, args.device, precision='fp32', memory=overrides(args, memory))
    summary, _, timing = score_split(seg, args.data, args.split, max_frames=args.max_frames)
    ch = summary['protocols']['challenge_iou']
    row = {'mean_iou': summary['mean_iou'], 'mean_dice': summary['mean_dice'],
           'challenge_iou': ch['mean_iou'], 'challenge_dice': ch['mean_dice'],
           'binary_dice': summary['binary_dice'], 'frames': summary['frames'],
           'instrument_class_accuracy': summary['instrument_class_accuracy'],
           'pred_flicker': summary['temporal_stability']['pred_flicker'],
           'inference_ms_mean': timing['inference_ms_mean']}
    if 'per_condition' in summary:
        row['per_condition_miou'] = {k: v['mean_iou'] for k, v in
                                     summary['per_condition'].items()}
        row['per_condition_frames'] = {k: v['frames'] for k, v in
                                       summary['per_condition'].items()}
        row['per_condition_class_accuracy'] = {k: v['instrument_class_accuracy'] for k, v in
                                               summary['per_condition'].items()}
    return row


def round_robin_ms(paths: dict[str, Path], args: argparse.Namespace) -> dict[str, float]:
    """Median `Segmenter.step` inference ms per model, stepping the models frame by frame in
    turn on the first test sequence (after 3 warm-up frames)."""
    from dmnet_core.data import layout
    from dmnet_core.segmenter import load_segmenter
    seq = layout.list_sequences(args.data, args.split)[0]
    frames = [layout.read_image(f) for f in seq.frames()[:args.timing_frames + 3]]
    segs = {k: load_segmenter(p, args.device, precision='fp32', memory=overrides(args))
            for k, p in paths.items()}
    ms: dict[str, list[float]] = {k: [] for k in segs}
    for i, rgb in enumerate(frames):
        for k, seg in segs.items():
            seg.step(rgb)
            if i >= 3:
                ms[k].append(seg.last_inference_ms)
    return {k: float(np.median(v)) for k, v in ms.items()}


def real_clip(paths: dict[str, tuple[Path, dict | None]], clip: Path, device: str) -> dict:
    """Binary Dice (any instrument class vs the clip's instrument mask) and flicker."""
    from dmnet_core.data import layout
    from dmnet_core.data.preprocess import preprocess
    from dmnet_core.metrics import SegmentationScorer
    from dmnet_core.segmenter import load_segmenter
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / 'clip'
        preprocess('cholecseg8k', clip, root)
        seqs = [s for s in layout.list_sequences(root) if s.has_masks('binary')]
        data = [(s.name, layout.read_image(f), layout.read_mask(s.mask_path(f, 'binary')))
                for s in seqs for f in s.frames()]
        for name, (path, memory) in paths.items():
            seg = load_segmenter(path, device, precision='fp32', memory=memory)
            scorer = SegmentationScorer(['background', 'instrument'])
            last = None
            for seq, rgb, gt in data:
                if seq != last:
                    seg.reset()
                    last = seq
                pred = (seg.step(rgb) > 0).astype(np.uint8)
                scorer.update(pred, (gt > 0).astype(np.uint8), seq)
            s = scorer.summary()
            out[name] = {'binary_dice': s['binary_dice'], 'frames': s['frames'],
                         'pred_flicker': s['temporal_stability']['pred_flicker'],
                         'gt_flicker': s['temporal_stability']['gt_flicker']}
    return out


def _f(v: object, scale: float = 1.0, digits: int = 2) -> str:
    return '-' if v is None else f'{float(v) * scale:.{digits}f}'


def markdown(res: dict) -> str:
    """The markdown tables of results/ablation.md."""
    models = res['models']
    base = models.get('single_frame', {}).get('mean_iou')
    base_ms = res['timing_ms'].get('single_frame')
    seed = res['test_data']['seed']
    lines = [f"Held-out generated video: `{res['test_data']['path']}` split "
             f"`{res['test_data']['split']}` (seed {'not given' if seed is None else seed}, "
             f"{res['test_data']['frames']} frames), task `type`. mIoU/mDice: seed-paper "
             'protocol; challenge: EndoVis challenge IoU/Dice; all in %. ms: median '
             f"`Segmenter.step` on {res['machine']} ({res['threads']} threads), round-robin."
             + ('' if res.get('label_propagation') is None else
                f" Label propagation gamma {res['label_propagation']:g} for every model.")
             + ('' if res.get('local_vote_radius') is None else
                f" Local vote radius {res['local_vote_radius']} for every local memory."),
             '', '| model | local | global | mIoU | mDice | challenge IoU | challenge Dice '
             '| Δ mIoU | ms/frame | × backbone | parameters |',
             '|---|---|---|---|---|---|---|---|---|---|---|']
    for name, r in models.items():
        delta = None if base is None or r['mean_iou'] is None else r['mean_iou'] - base
        ms = res['timing_ms'].get(name)
        lines.append(
            f"| {name} | {'✓' if r['local'] else ''} | {'✓' if r['global'] else ''} "
            f"| {_f(r['mean_iou'], 100)} | {_f(r['mean_dice'], 100)} "
            f"| {_f(r['challenge_iou'], 100)} | {_f(r['challenge_dice'], 100)} "
            f"| {_f(delta, 100)} | {_f(ms, 1, 1)} "
            f"| {_f(ms / base_ms if ms and base_ms else None, 1, 2)} | {r['params']:,} |")
    conds = sorted({c for r in models.values() for c in r.get('per_condition_miou', {})},
                   key=lambda c: (c != 'clean', c))
    if conds:
        frames = next(iter(models.values())).get('per_condition_frames', {})
        lines += ['', 'Per-condition mIoU (%) (frames with each tag; clean = none):', '',
                  '| model | ' + ' | '.join(f'{c} ({frames.get(c, 0)})' for c in conds) + ' |',
                  '|---|' + '---|' * len(conds)]
        for name, r in models.items():
            pc = r.get('per_condition_miou', {})
            lines.append(f'| {name} | ' + ' | '.join(_f(pc.get(c), 100) for c in conds) + ' |')
    if res.get('policies'):
        lines += ['', 'Global-memory policy at inference (DMNet weights):', '',
                  '| policy | mIoU | mDice | challenge IoU |', '|---|---|---|---|']
        for p, r in res['policies'].items():
            lines.append(f"| {p} | {_f(r['mean_iou'], 100)} | {_f(r['mean_dice'], 100)} "
                         f"| {_f(r['challenge_iou'], 100)} |")
    if res.get('sweep'):
        caps = sorted({r['capacity'] for r in res['sweep']})
        reads = sorted({r['n_read'] for r in res['sweep']})
        cell = {(r['capacity'], r['n_read']): r['mean_iou'] for r in res['sweep']}
        lines += ['', 'DMNet mIoU (%) by bank capacity (rows) and n_read (columns):', '',
                  '| capacity | ' + ' | '.join(f'n_read {n}' for n in reads) + ' |',
                  '|---|' + '---|' * len(reads)]
        for c in caps:
            lines.append(f'| {c} | ' + ' | '.join(_f(cell.get((c, n)), 100) for n in reads)
                         + ' |')
    if res.get('real_clip'):
        lines += ['', 'Real CholecSeg8k clip (evaluation only): binary Dice of any instrument '
                  'class, flicker = share of pixels whose label changes between frames:', '',
                  '| model | binary Dice | flicker | GT flicker |', '|---|---|---|---|']
        for name, r in res['real_clip'].items():
            lines.append(f"| {name} | {_f(r['binary_dice'], 1, 4)} "
                         f"| {_f(r['pred_flicker'], 1, 5)} | {_f(r['gt_flicker'], 1, 5)} |")
    return '\n'.join(lines) + '\n'


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    names = dict.fromkeys(['single_frame', *args.variants, 'dmnet'])   # ordered, unique
    paths = {v: model_path(args.models, v) for v in names}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        print(f'score_ablation: checkpoint(s) not found: {missing}', file=sys.stderr)
        return 2
    synth_cmd = ensure_test_data(args)
    t0 = time.perf_counter()
    res: dict = {'test_data': {'path': str(args.data), 'split': args.split,
                               'seed': args.test_seed, 'synth_command': synth_cmd,
                               'max_frames': args.max_frames},
                 'label_propagation': args.label_propagation,
                 'local_vote_radius': args.local_vote_radius,
                 'machine': cpu_name(),
                 'threads': torch.get_num_threads(), 'models': {}}
    for name, path in paths.items():
        res['models'][name] = {**parameters(path), **score(path, args)}
        print(f"{name}: mIoU {_f(res['models'][name]['mean_iou'], 100)}", flush=True)
    res['test_data']['frames'] = res['models']['dmnet']['frames']
    res['timing_ms'] = round_robin_ms(paths, args)
    dmnet = paths['dmnet']
    res['policies'] = {p: score(dmnet, args, {'policy': p}) for p in POLICIES}
    res['sweep'] = [{'capacity': c, 'n_read': n,
                     **score(dmnet, args, {'capacity': c, 'n_read': n})}
                    for c in args.capacity for n in args.n_read if n <= c]
    if args.real_clip and args.real_clip.is_dir():
        runs = {'dmnet': (dmnet, overrides(args)),
                'dmnet_memory_off': (dmnet, overrides(args, MEMORY_OFF)),
                'single_frame': (paths['single_frame'], overrides(args))}
        runs.update({v: (paths[v], overrides(args)) for v in names if v not in FOUR})
        res['real_clip'] = real_clip(runs, args.real_clip, args.device)
    else:
        print(f'score_ablation: no real clip at {args.real_clip}: skipped', flush=True)
    res['seconds'] = round(time.perf_counter() - t0, 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=1))
    args.md = args.md or args.json.with_suffix('.md')
    args.md.parent.mkdir(parents=True, exist_ok=True)
    args.md.write_text('# Memory ablation\n\n' + markdown(res))
    print(markdown(res))
    print(f'wrote {args.json} and {args.md} in {res["seconds"]} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
