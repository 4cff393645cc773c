"""Few-shot check on real laparoscopic frames: a script, not a unit test.

Takes the 72-frame CholecSeg8k clip (beside the checkout in ../shared, never copied into it),
converts it with `dmnet preprocess`, splits it in time (first 36 frames: fine-tuning, last 36:
evaluation), fine-tunes the shipped model twice with `dmnet train --init` (DMNet, and the same
weights as the single-frame backbone with both memories off), and scores each with the causal
`dmnet evaluate`. It also scores the shipped synthetic-trained model as it is (zero-shot).

What it shows and what it does not: adjacent frames of one clip are highly correlated, and the
instrument (one grasper, ~1.3 % of the pixels) barely moves, so this measures whether the
pipeline adapts to real frames end to end, not how well dmnet generalises; 36 frames of one
patient are no benchmark.

    python -m bench.fewshot_cholec [--clip DIR] [--out DIR] [--iters N] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CLIP = REPO.parent / 'shared' / 'data' / 'cholecseg8k_clip' / 'video_pixel'


def split_in_time(src_root: Path, out: Path, n_train: int) -> None:
    """One preprocessed sequence -> two sequences (first n_train frames, the rest), as links."""
    from dmnet_core.data import layout

    (seq,) = layout.list_sequences(src_root)
    meta = layout.read_meta(src_root)
    frames = seq.frames()
    parts = {'fewshot_train': frames[:n_train], 'fewshot_test': frames[n_train:]}
    for name, chunk in parts.items():
        for f in chunk:
            for src, dst in ((f, out / name / layout.IMAGE_DIR / f.name),
                             *((seq.mask_path(f, t), out / name / layout.MASK_DIR / t / f.name)
                               for t in ('binary', 'type') if seq.has_masks(t))):
                dst.parent.mkdir(parents=True, exist_ok=True)
                if not dst.exists():
                    os.symlink(src.resolve(), dst)
    meta.splits = {'train': ['fewshot_train'], 'val': ['fewshot_train'], 'test': ['fewshot_test']}
    meta.folds = {}
    layout.write_meta(out, meta)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--clip', type=Path, default=DEFAULT_CLIP,
                    help='folder of frame_N_endo*.png (default: ../shared/... beside the repo)')
    ap.add_argument('--out', type=Path, default=REPO / 'runs' / 'fewshot_cholec')
    ap.add_argument('--checkpoint', default=None, help='start weights (default: shipped model)')
    ap.add_argument('--iters', type=int, default=60, help='fine-tuning iterations per model')
    ap.add_argument('--batch-size', type=int, default=2)
    ap.add_argument('--crop', type=int, nargs=2, default=[256, 448], metavar=('H', 'W'))
    ap.add_argument('--lr', type=float, default=3e-4)
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--json', type=Path, default=None)
    args = ap.parse_args(argv)
    if not args.clip.is_dir():
        print(f'fewshot_cholec: clip folder not found: {args.clip}', file=sys.stderr)
        return 2

    from dmnet_core.checkpoint import DEFAULT_CHECKPOINT
    from dmnet_core.cli import main as dmnet
    from dmnet_core.config import ExperimentConfig, save_yaml
    from dmnet_core.data.preprocess import preprocess
    from dmnet_core.evaluate import evaluate

    start = Path(args.checkpoint or DEFAULT_CHECKPOINT)
    out = args.out
    preprocess('cholecseg8k', args.clip, out / 'preprocessed')
    data = out / 'data'
    split_in_time(out / 'preprocessed', data, n_train=36)

    results: dict = {'clip': str(args.clip), 'train_frames': 36, 'test_frames': 36,
                     'start_checkpoint': str(start), 'iters': args.iters,
                     'crop': args.crop, 'device': args.device}
    t0 = time.perf_counter()
    zero = evaluate(data, out / 'eval_zero_shot', checkpoint=start, device=args.device,
                    split='test')
    results['zero_shot'] = {k: zero[k] for k in ('mean_dice', 'mean_iou', 'binary_dice')}
    # The model section comes from the start checkpoint (--init); this sets the short schedule.
    exp = ExperimentConfig()
    exp.train.warmup_iters = 5
    exp.train.dice_weight = 0.5
    exp.train.seed = 0
    config = out / 'fewshot.yaml'
    save_yaml(exp, config)
    for name, flags in (('dmnet', []), ('backbone', ['--no-local', '--no-global'])):
        run_dir = out / f'train_{name}'
        t = time.perf_counter()
        rc = dmnet(['train', '--config', str(config), '--data', str(data), '--out', str(run_dir),
                    '--init', str(start), '--epochs', '1', '--iters', str(args.iters),
                    '--batch-size', str(args.batch_size), '--crop', *map(str, args.crop),
                    '--lr', str(args.lr), '--device', args.device, '--workers', '0',
                    '--val-frames', '0', *flags])
        if rc != 0:
            return rc
        train_s = time.perf_counter() - t
        rep = evaluate(data, out / f'eval_{name}', checkpoint=run_dir / 'last.safetensors',
                       device=args.device, split='test')
        results[name] = {k: rep[k] for k in ('mean_dice', 'mean_iou', 'binary_dice', 'fps')}
        results[name]['train_s'] = round(train_s, 1)
    results['wall_s'] = round(time.perf_counter() - t0, 1)

    print('\nFew-shot on CholecSeg8k (fine-tune on frames 1-36, evaluate on 37-72, causal):')
    print(f'{"model":<34}{"mean Dice":>10}{"mean IoU":>10}')
    rows = [('shipped model, zero-shot', results['zero_shot']),
            ('DMNet, fine-tuned', results['dmnet']),
            ('single-frame backbone, fine-tuned', results['backbone'])]
    for label, r in rows:
        print(f'{label:<34}{r["mean_dice"]:>10.4f}{r["mean_iou"]:>10.4f}')
    print(f'wall time {results["wall_s"]} s on {args.device}')
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
