"""Are DMNet's memories used? Read diagnostics and the active rule's calibration.

    python -m experiments.memory_ablation.diagnose_memory [--checkpoint CKPT]
        [--data runs/ablation/data --split val] [--train-log runs/ablation/dmnet/train_log.csv]

On generated validation video (never the real clip, never the held-out test seed):
- attention entropy of the global read and of the local non-local read (1 = uniform: the read
  ignores what it reads), the attention mass the local read puts on past frames, and each
  memory branch's share of the fused features (norm ratio); see dmnet_core.memory_diagnostics;
- how often the active rule admits frames with the checkpoint's alpha/beta, the distributions of
  r (representativeness) and s (similarity of consecutive frames), and the admission rate for a
  grid of alpha x beta (replayed on the recorded scores);
- from training logs: the gradient norms of the memory modules per stage, and their share of
  the whole network's gradient norm;
- with `--calibrate-beta B ...`: the val mIoU with each beta (alpha and the rest as stored),
  switched at inference; the calibration that the active rule's thresholds ask for, on val only.

Prints the tables and writes `--json`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--checkpoint', type=Path,
                    default=REPO / 'dmnet_core' / 'models' / 'type.safetensors',
                    help="default: the ablation's DMNet, shipped as the type model")
    ap.add_argument('--data', type=Path, default=REPO / 'runs' / 'ablation' / 'data')
    ap.add_argument('--split', default='val')
    ap.add_argument('--max-frames', type=int, default=None, help='first N frames per sequence')
    ap.add_argument('--alphas', type=float, nargs='+',
                    default=[-1.2, -0.9, -0.6, -0.3, -0.2, -0.1])
    ap.add_argument('--betas', type=float, nargs='+', default=[-1.0, -0.5, -0.3, -0.2, -0.1, -0.05])
    ap.add_argument('--train-log', type=Path, nargs='*', default=[],
                    help='train_log.csv files: memory gradient norms per stage')
    ap.add_argument('--calibrate-beta', type=float, nargs='*', default=[],
                    help='score the split (mIoU) with each of these betas')
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--json', type=Path, default=REPO / 'experiments' / 'memory_ablation'
                    / 'results' / 'ablation_diagnostics.json')
    return ap.parse_args(argv)


def probe(args: argparse.Namespace) -> dict:
    """Run the checkpoint over the split with probes; reads, admissions, recorded scores."""
    from dmnet_core.data import layout
    from dmnet_core.segmenter import load_segmenter
    from experiments.memory_ablation.memory_diagnostics import (
        admit_sweep,
        probe_segmenter,
        score_distributions,
    )
    seg = load_segmenter(args.checkpoint, args.device, precision='fp32')
    g = seg.config.global_memory
    sequences = layout.list_sequences(args.data, args.split)
    admitted = frames = 0
    bank_sizes: list[int] = []
    per_seq = []
    with probe_segmenter(seg) as (probes, recorder):
        for seq in sequences:
            seg.reset()
            start = len(recorder.records) if recorder else 0
            for f in seq.frames()[:args.max_frames or None]:
                seg.step(layout.read_image(f))
                admitted += seg.last_admitted
                frames += 1
                bank_sizes.append(seg.memory_size)
            if recorder:
                per_seq.append(recorder.records[start:])
    out = {'checkpoint': str(args.checkpoint), 'data': str(args.data), 'split': args.split,
           'frames': frames, 'reads': probes.records.summary(),
           'policy': g.policy, 'alpha': g.alpha, 'beta': g.beta, 'capacity': g.capacity,
           'admitted': admitted, 'admit_rate': admitted / frames if frames else None,
           'mean_bank_size': float(np.mean(bank_sizes)) if bank_sizes else None}
    if per_seq:
        out['scores'] = score_distributions(per_seq)
        out['admit_sweep'] = admit_sweep(per_seq, args.alphas, args.betas)
    return out


def calibrate_beta(args: argparse.Namespace) -> list[dict]:
    """Seed-protocol mIoU and mDice on the split for each beta in --calibrate-beta."""
    from experiments.memory_ablation.score_ablation import score
    rows = []
    for beta in args.calibrate_beta:
        row = score(args.checkpoint, args, memory={'beta': beta})
        rows.append({'beta': beta, 'mean_iou': row['mean_iou'], 'mean_dice': row['mean_dice']})
    return rows


def gradient_norms(paths: list[Path]) -> dict:
    """Mean gradient norms per stage from train_log.csv files (memory modules and all)."""
    from dmnet_core.train import read_log
    out = {}
    for path in paths:
        rows = read_log(path)
        stages: dict[str, dict] = {}
        for stage in dict.fromkeys(r.get('stage') or 'all' for r in rows):
            sel = [r for r in rows if (r.get('stage') or 'all') == stage]
            entry: dict = {'iterations': len(sel)}
            for key in ('grad_norm', 'grad_norm_local_memory', 'grad_norm_global_memory'):
                vals = [r[key] for r in sel if r.get(key) is not None]
                entry[key] = float(np.mean(vals)) if vals else None
            for key in ('grad_norm_local_memory', 'grad_norm_global_memory'):
                # Share of the whole network's (pre-clip) gradient norm, per iteration.
                ratios = [r[key] / r['grad_norm'] for r in sel
                          if r.get(key) is not None and r.get('grad_norm')]
                entry[key.replace('grad_norm', 'share')] = (float(np.mean(ratios)) if ratios
                                                            else None)
            stages[stage] = entry
        out[str(path)] = stages
    return out


def _f(v: object, digits: int = 3) -> str:
    return '-' if v is None else f'{float(v):.{digits}f}'


def report(res: dict) -> str:
    r = res['reads']
    lines = [f"{res['checkpoint']} on {res['data']} ({res['split']}, {res['frames']} frames)",
             '', '| read | attention entropy (1 = uniform) | share of fused features | reads |',
             '|---|---|---|---|',
             f"| global | {_f(r['global_entropy'])} | {_f(r['global_share'])} "
             f"| {r['global_bank_reads']} (+{r['global_self_reads']} self) |",
             f"| local non-local | {_f(r['local_entropy'])} | {_f(r['local_share'])} "
             f"| {r['local_reads']} (mass on past frames {_f(r['local_past_mass'])}) |",
             '', f"active rule ({res['policy']}, alpha {res['alpha']}, beta {res['beta']}, "
             f"capacity {res['capacity']}): admitted {res['admitted']} of {res['frames']} "
             f"frames ({_f(res['admit_rate'])}), mean bank size {_f(res['mean_bank_size'], 1)}"]
    if res.get('scores'):
        s = res['scores']
        for key, label in (('r', 'r = -mean entropy'),
                           ('s_consecutive', 's = -distance, consecutive frames')):
            if s[key]:
                lines.append(f'{label}: ' + ', '.join(f'{k} {v:.3f}' for k, v in s[key].items()))
    if res.get('admit_sweep'):
        betas = sorted({x['beta'] for x in res['admit_sweep']})
        alphas = sorted({x['alpha'] for x in res['admit_sweep']})
        cell = {(x['alpha'], x['beta']): x['admit_rate'] for x in res['admit_sweep']}
        lines += ['', 'admission rate (alpha rows, beta columns):', '',
                  '| alpha | ' + ' | '.join(f'beta {b:g}' for b in betas) + ' |',
                  '|---|' + '---|' * len(betas)]
        for a in alphas:
            lines.append(f'| {a:g} | ' + ' | '.join(_f(cell[(a, b)]) for b in betas) + ' |')
    if res.get('beta_calibration'):
        lines += ['', f"beta calibration on {res['split']} (alpha {res['alpha']}):", '',
                  '| beta | mIoU | mDice |', '|---|---|---|']
        lines += [f"| {r['beta']:g} | {_f(r['mean_iou'])} | {_f(r['mean_dice'])} |"
                  for r in res['beta_calibration']]
    for path, stages in res.get('gradients', {}).items():
        lines += ['', f'gradient norms, {path}:', '',
                  '| stage | iterations | all | local memory (share) | global memory (share) |',
                  '|---|---|---|---|---|']
        for stage, e in stages.items():
            lines.append(f"| {stage} | {e['iterations']} | {_f(e['grad_norm'])} "
                         f"| {_f(e['grad_norm_local_memory'])} ({_f(e['share_local_memory'])}) "
                         f"| {_f(e['grad_norm_global_memory'])} "
                         f"({_f(e['share_global_memory'])}) |")
    return '\n'.join(lines) + '\n'


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for p in (args.checkpoint, *args.train_log):
        if not p.is_file():
            print(f'diagnose_memory: file not found: {p}', file=sys.stderr)
            return 2
    res = probe(args)
    res['gradients'] = gradient_norms(args.train_log)
    res['beta_calibration'] = calibrate_beta(args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=1))
    print(report(res))
    print(f'wrote {args.json}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
