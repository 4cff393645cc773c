"""Retrain the four models of the memory ablation identically, with `dmnet train`.

    python -m experiments.memory_ablation.train_ablation [--data DIR] [--stage1-iters N] ...

The defaults are the recipe of the committed checkpoints (README.md here, "What was tried"):
ImageNet Lite0 start with the jaws weighed (recipes/type/type_synth.yaml), 960 generated
20-frame sequences, 3,200 single-frame iterations, then 800 per variant at 0.3x the learning
rate on 9-frame clips, the memories trained through label propagation (gamma 2).

1. Data: `--data` (default runs/ablation_lp/data); generated with `dmnet synth` when missing.
   The model's class names are the data set's type classes (RUNS/config.yaml is `--config`
   with them).
2. Stage 1 (the authors' single-frame training), shared by all four: the backbone alone,
   `--no-local --no-global`, `--stage1-iters` iterations -> RUNS/stage1/last.safetensors.
3. Each variant starts from those weights (`--init ... --new-memories`) and trains `--iters`
   more iterations under `--stages 0 F 1-F`: the memory modules alone (a fraction F), then
   everything. single_frame has no memory, so it trains everything throughout: the same number
   of updates on the same batches with the same learning rates. `--label-propagation` goes to
   every variant with a memory (single_frame has nothing to read labels from).
4. Each variant's best checkpoint (generated val split) is stored in fp16 as
   `--models-out`/<variant>.safetensors (default runs/ablation_lp/models) with its config beside
   it, and `recipe.json` records the commands, iterations and wall times. The committed ones
   are in this folder, DMNet's as dmnet_core/models/type.safetensors.

Every run is resumable: run the script again with the same arguments and finished runs are
skipped, an interrupted one continues with `--resume`. The defaults are the real recipe; a
smoke run: `--stage1-iters 5 --iters 5 --iters-per-epoch 5 --synth-sequences 3 ...`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench.machine import cpu_name

REPO = Path(__file__).resolve().parents[2]
# The committed checkpoints of the ablation: single_frame, local_only and global_only here;
# DMNet is the shipped type model (one copy of each checkpoint).
MODELS = REPO / 'experiments' / 'memory_ablation'
SHIPPED_DMNET = REPO / 'dmnet_core' / 'models' / 'type.safetensors'

# Robotic instruments that share one colour scheme (types differ by their jaws only, as on
# da Vinci video) and a tissue fold over a tip every 20 frames on average: frames on which one
# image cannot name the type, which is what the paper's memories are for.
SYNTH_ARGS = '--style robotic --same-looks --fold-every 20 --generator 2'

VARIANTS = {                          # name -> `dmnet train` flags
    'single_frame': ['--no-local', '--no-global'],
    'local_only': ['--no-global'],
    'global_only': ['--no-local'],
    'dmnet': [],
}
# Trained through label propagation (gamma 2), so the reads' keys learn from the
# prior over the types and the type logits learn to leave room for it.
VARIANTS.update({'local_only_lp': ['--no-global', '--label-propagation', '2'],
                 'global_only_lp': ['--no-local', '--label-propagation', '2'],
                 'dmnet_lp': ['--label-propagation', '2']})
# The local memory on 9-frame training clips, as many frames per sample as the global
# variants encode (5 clip + 4 memory frames), so that the chain of stored predictions is
# trained over more than 4 frames.
VARIANTS['local_only_lp_clip9'] = ['--no-global', '--label-propagation', '2', '--clip-len', '9']
FOUR = ('single_frame', 'local_only', 'global_only', 'dmnet')   # the paper's ablation


def model_path(models: Path, variant: str) -> Path:
    """`models`/<variant>.safetensors; in the committed folder DMNet is the shipped type model."""
    path = models / f'{variant}.safetensors'
    if variant == 'dmnet' and not path.is_file() and models.resolve() == MODELS.resolve():
        return SHIPPED_DMNET
    return path


def gpu_name() -> str | None:
    import torch
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--config', type=Path,
                    default=REPO / 'recipes' / 'type' / 'type_synth.yaml')
    ap.add_argument('--data', type=Path, default=REPO / 'runs' / 'ablation_lp' / 'data')
    ap.add_argument('--runs', type=Path, default=REPO / 'runs' / 'ablation_lp',
                    help='training folders (stage1/, <variant>/)')
    ap.add_argument('--models-out', type=Path, default=REPO / 'runs' / 'ablation_lp' / 'models',
                    help='where <variant>.safetensors (fp16) and recipe.json go')
    ap.add_argument('--variants', nargs='+', default=list(FOUR), choices=list(VARIANTS),
                    help="models to train (default: the four of the paper's ablation)")
    ap.add_argument('--stage1-iters', type=int, default=3200,
                    help='single-frame iterations, shared (default 3200)')
    ap.add_argument('--iters', type=int, default=800,
                    help='iterations of each variant after stage 1 (default 800)')
    ap.add_argument('--iters-per-epoch', type=int, default=200,
                    help='validation and checkpoint period (divides both iteration counts)')
    ap.add_argument('--memory-fraction', type=float, default=0.3,
                    help='share of --iters that trains the memory modules alone (default 0.3)')
    ap.add_argument('--stage-lr', type=float, nargs=3, default=[1.0, 0.3, 0.3],
                    help='lr multipliers of the three stages (default 1 0.3 0.3)')
    ap.add_argument('--label-propagation', type=float, default=2.0, metavar='GAMMA',
                    help='train every variant with a memory through label propagation '
                         '(dmnet train --label-propagation; default 2, 0: off)')
    ap.add_argument('--local-vote-radius', type=int, default=0, metavar='R',
                    help="written into the exported checkpoints' local_memory.vote_radius, an "
                         'inference setting (training votes over every cell either way): -1 '
                         'every cell, 0 the same cell (default 0, as the committed checkpoints)')
    for flag in ('--batch-size', '--workers', '--val-frames', '--seed'):
        ap.add_argument(flag, type=int, default=None, help='passed to dmnet train')
    ap.add_argument('--clip-len', type=int, default=9,
                    help='frames per training clip of every variant after stage 1 (default 9)')
    ap.add_argument('--stage1-clip-len', type=int, default=None,
                    help="frames per training clip of stage 1 (default: the config's, 5)")
    ap.add_argument('--lr', type=float, default=None, help='passed to dmnet train')
    ap.add_argument('--ema-decay', type=float, default=None, help='passed to dmnet train')
    ap.add_argument('--device', default=None, help='passed to dmnet train')
    ap.add_argument('--crop', type=int, nargs=2, default=None, help='passed to dmnet train')
    ap.add_argument('--synth-sequences', type=int, default=960)
    ap.add_argument('--synth-frames', type=int, default=20)
    ap.add_argument('--synth-seed', type=int, default=21)
    ap.add_argument('--synth-size', default='128x160')
    ap.add_argument('--synth-val', type=int, default=24, help='val sequences (default 24)')
    ap.add_argument('--synth-test', type=int, default=24, help='test sequences (default 24)')
    ap.add_argument('--synth-args', default=SYNTH_ARGS,
                    help=f"extra `dmnet synth` arguments (default '{SYNTH_ARGS}')")
    args = ap.parse_args(argv)
    for name in ('stage1_iters', 'iters'):
        n = getattr(args, name)
        if n < 1 or n % args.iters_per_epoch:
            ap.error(f'--{name.replace("_", "-")} {n} must be a positive multiple of '
                     f'--iters-per-epoch {args.iters_per_epoch}')
    if not 0.0 <= args.memory_fraction < 1.0:
        ap.error(f'--memory-fraction {args.memory_fraction} must be in [0, 1)')
    if args.label_propagation < 0:
        ap.error(f'--label-propagation {args.label_propagation:g} must be >= 0')
    if args.local_vote_radius < -1:
        ap.error(f'--local-vote-radius {args.local_vote_radius} must be >= -1')
    return args


def variant_flags(variant: str, label_propagation: float) -> list[str]:
    """The variant's `dmnet train` flags, with `--label-propagation` unless it has no memory
    or sets its own."""
    flags = VARIANTS[variant]
    has_memory = not {'--no-local', '--no-global'} <= set(flags)
    if label_propagation > 0 and has_memory and '--label-propagation' not in flags:
        flags = [*flags, '--label-propagation', f'{label_propagation:g}']
    return flags


def ensure_data(args: argparse.Namespace) -> list[str]:
    """Generate the training set when missing; returns the `dmnet synth` command either way."""
    from dmnet_core.cli import main as dmnet
    cmd = ['synth', '--out', str(args.data), '--sequences', str(args.synth_sequences),
           '--frames', str(args.synth_frames), '--seed', str(args.synth_seed),
           '--size', args.synth_size, '--val', str(args.synth_val),
           '--test', str(args.synth_test), *args.synth_args.split()]
    if (args.data / 'dataset.yaml').is_file():
        print(f'data: {args.data} exists, not regenerated', flush=True)
        return cmd
    print('dmnet', ' '.join(cmd), flush=True)
    if dmnet(cmd) != 0:
        raise SystemExit(f'train_ablation: dmnet synth failed for {args.data}')
    return cmd


def effective_config(args: argparse.Namespace) -> Path:
    """`--config` with the data set's type classes (the generator's list may grow).

    Written to RUNS/config.yaml, which every run of the ablation uses.
    """
    from dmnet_core.config import ExperimentConfig, load_yaml, save_yaml
    from dmnet_core.data.layout import read_meta
    exp = load_yaml(args.config, ExperimentConfig)
    names = read_meta(args.data).classes.get(exp.model.task)
    if names and list(names) != exp.model.class_names:
        print(f'class names from {args.data}: {names}', flush=True)
        exp.model.class_names = list(names)
    path = args.runs / 'config.yaml'
    save_yaml(exp, path)
    return path


def common_flags(args: argparse.Namespace) -> list[str]:
    flags = ['--config', str(args.config), '--data', str(args.data),
             '--iters', str(args.iters_per_epoch)]
    for name in ('batch_size', 'workers', 'val_frames', 'seed', 'lr', 'ema_decay', 'device'):
        value = getattr(args, name)
        if value is not None:
            flags += [f'--{name.replace("_", "-")}', str(value)]
    if args.crop:
        flags += ['--crop', *map(str, args.crop)]
    return flags


def run_training(name: str, cmd: list[str], out: Path, total: int, times: dict) -> None:
    """`dmnet train` unless finished; resume an interrupted run; add this call's wall time.

    A run that starts afresh (no resume state: a new or emptied folder) starts its time at 0.
    """
    from dmnet_core.cli import main as dmnet
    state = out / 'resume.json'
    if not state.is_file():
        times.pop(name, None)
    else:
        step = json.loads(state.read_text())['step']
        if step >= total:
            print(f'{name}: done ({step} iterations), skipped', flush=True)
            return
        cmd = [*cmd, '--resume']
    print(f'{name}: dmnet', ' '.join(cmd), flush=True)
    t0 = time.perf_counter()
    rc = dmnet(cmd)
    times[name] = round(times.get(name, 0.0) + time.perf_counter() - t0, 1)
    if rc == 130:
        raise SystemExit(f'train_ablation: {name} interrupted; run the same command again to '
                         'resume it')
    if rc != 0:
        raise SystemExit(f'train_ablation: dmnet train failed for {name} (rc {rc})')


def export(variant: str, run: Path, out: Path, extra: dict, vote_radius: int = -1) -> Path:
    """The run's best checkpoint -> OUT/<variant>.safetensors in fp16 (config YAML beside), with
    `vote_radius` as its local memory's inference setting."""
    from dmnet_core.checkpoint import build_from_checkpoint, load_checkpoint, save_checkpoint
    src = run / 'best.safetensors'
    model, cfg = build_from_checkpoint(src)
    _, _, info = load_checkpoint(src)
    cfg.local_memory.vote_radius = vote_radius          # weight-free: the weights are the run's
    dst = out / f'{variant}.safetensors'
    save_checkpoint(dst, model, cfg, extra={**extra, 'variant': variant,
                                            'best_epoch': info.get('epoch'),
                                            'best_step': info.get('step')}, half=True)
    return dst


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.runs.mkdir(parents=True, exist_ok=True)
    args.models_out.mkdir(parents=True, exist_ok=True)
    times_path = args.runs / 'wall_times.json'
    times = json.loads(times_path.read_text()) if times_path.is_file() else {}
    synth_cmd = ensure_data(args)
    source_config = args.config
    args.config = effective_config(args)
    flags = common_flags(args)
    ipe = args.iters_per_epoch
    stage1 = args.runs / 'stage1'
    commands = {}
    cmd = ['train', *flags, '--out', str(stage1), '--epochs', str(args.stage1_iters // ipe),
           *VARIANTS['single_frame']]
    if args.stage1_clip_len is not None:
        cmd += ['--clip-len', str(args.stage1_clip_len)]
    commands['stage1'] = cmd
    try:
        run_training('stage1', cmd, stage1, args.stage1_iters, times)
        f = args.memory_fraction
        stages = ['--stages', '0', f'{f:g}', f'{1 - f:g}']
        if args.stage_lr:
            stages += ['--stage-lr', *map(str, args.stage_lr)]
        for variant in args.variants:
            out = args.runs / variant
            cmd = ['train', *flags, '--clip-len', str(args.clip_len), '--out', str(out),
                   '--epochs', str(args.iters // ipe), '--init', str(stage1 / 'last.safetensors'),
                   '--new-memories', *stages, *variant_flags(variant, args.label_propagation)]
            commands[variant] = cmd
            run_training(variant, cmd, out, args.iters, times)
    finally:
        times_path.write_text(json.dumps(times, indent=1))
    recipe = {'config': str(source_config.relative_to(REPO)
                            if source_config.is_relative_to(REPO) else source_config),
              'effective_config': str(args.config),
              'synth_command': ['dmnet', *synth_cmd], 'stage1_iters': args.stage1_iters,
              'iters': args.iters, 'memory_fraction': args.memory_fraction,
              'label_propagation': args.label_propagation,
              'local_vote_radius': args.local_vote_radius,
              'train_commands': {k: ['dmnet', *v] for k, v in commands.items()},
              'wall_seconds': times, 'machine': cpu_name(), 'gpu': gpu_name()}
    for variant in args.variants:
        dst = export(variant, args.runs / variant, args.models_out,
                     {'ablation_stage1_iters': args.stage1_iters, 'ablation_iters': args.iters},
                     args.local_vote_radius)
        print(f'{variant}: {dst}', flush=True)
    # Variants trained later (e.g. the mask-value ones) join the recipe beside the four.
    recipe_path = args.models_out / 'recipe.json'
    if recipe_path.is_file():
        earlier = json.loads(recipe_path.read_text()).get('train_commands', {})
        recipe['train_commands'] = {**earlier, **recipe['train_commands']}
    recipe_path.write_text(json.dumps(recipe, indent=1))
    print(f'wall times (s): {times}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
