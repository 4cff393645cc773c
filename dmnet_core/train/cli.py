"""`dmnet train`: the command-line flags, which override the YAML."""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

from dmnet_core.config import ExperimentConfig, load_yaml, read_config
from dmnet_core.train.loop import train


def apply_overrides(exp: ExperimentConfig, args: argparse.Namespace) -> ExperimentConfig:
    """Command-line flags override the YAML."""
    exp = copy.deepcopy(exp)
    if getattr(args, 'init', None):
        # Fine-tuning keeps the checkpoint's architecture and classes; flags below still apply.
        from dmnet_core.checkpoint import load_checkpoint

        wanted = exp.model
        if not exp.train.init_from_binary:      # else the YAML's classes, the head is split
            exp.model, _, _ = load_checkpoint(args.init)
            # The inference size is no part of the architecture: one the YAML names is what
            # validation runs at and what the new checkpoint carries. A named output stride
            # of 2 adds the decoder's fine stage, which starts at zero (init_weights).
            named = _named_model_keys(getattr(args, 'config', None))
            if 'input_size' in named:
                exp.model.input_size = list(wanted.input_size)
            if 'output_stride' in (named.get('decoder') or {}):
                exp.model.decoder.output_stride = wanted.decoder.output_stride
        exp.train.init_checkpoint = str(args.init)
        if getattr(args, 'new_memories', False):
            # Stage 2 from a single-frame network: the YAML's memories, built fresh where the
            # checkpoint has none (memories it has keep its sizes and weights).
            exp.train.init_new_memories = True
            for name in ('local_memory', 'global_memory'):
                if not getattr(exp.model, name).enabled:
                    setattr(exp.model, name, copy.deepcopy(getattr(wanted, name)))
    elif getattr(args, 'new_memories', False):
        raise ValueError('--new-memories needs --init CHECKPOINT')
    simple = {'data': ('data', 'root'), 'out': ('train', 'out_dir'),
              'device': ('train', 'device'), 'epochs': ('train', 'epochs'),
              'iters': ('train', 'iters_per_epoch'), 'batch_size': ('train', 'batch_size'),
              'lr': ('train', 'lr'), 'seed': ('train', 'seed'), 'log': ('train', 'log'),
              'val_frames': ('train', 'val_max_frames'), 'workers': ('data', 'num_workers'),
              'clip_len': ('data', 'clip_len'), 'ema_decay': ('train', 'ema_decay')}
    for arg, (section, key) in simple.items():
        value = getattr(args, arg, None)
        if value is not None:
            setattr(getattr(exp, section), key, value)
    if args.crop is not None:
        exp.data.crop = list(args.crop)
        exp.model.input_size = list(args.crop)
    if args.no_local:
        exp.model.local_memory.enabled = False
    if args.no_global:
        exp.model.global_memory.enabled = False
    if getattr(args, 'label_propagation', None) is not None:
        exp.model.label_propagation = args.label_propagation
    if args.no_amp:
        exp.train.amp = False
    if getattr(args, 'stages', None) is not None:
        exp.train.stages = list(args.stages)
    if getattr(args, 'stage_lr', None) is not None:
        exp.train.stage_lr = list(args.stage_lr)
    return exp


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `dmnet train`."""
    p = subparsers.add_parser(
        'train', help='train DMNet (validation each epoch, best model kept, resumable)',
        description='Train DMNet from an ExperimentConfig YAML; flags override it. The '
                    'single-frame baseline is the same command with --no-local --no-global; '
                    "the authors' staged schedule is --stages (with --init and --new-memories "
                    'to start it from a single-frame checkpoint). '
                    'Multi-GPU: torchrun --nproc_per_node N -m dmnet_core.cli train ...')
    p.add_argument('--config', required=True, help='ExperimentConfig YAML')
    p.add_argument('--data', default=None, help='dataset folder (overrides data.root)')
    p.add_argument('--out', default=None, help='output folder (overrides train.out_dir)')
    p.add_argument('--resume', action='store_true', help='continue from OUT/resume.*')
    p.add_argument('--device', default=None, help="'auto', 'cpu', 'cuda', 'cuda:N'")
    p.add_argument('--epochs', type=int, default=None)
    p.add_argument('--iters', type=int, default=None, help='iterations per epoch')
    p.add_argument('--batch-size', type=int, default=None, help='clips per iteration (per GPU)')
    p.add_argument('--lr', type=float, default=None)
    p.add_argument('--seed', type=int, default=None)
    p.add_argument('--crop', type=int, nargs=2, default=None, metavar=('H', 'W'),
                   help='training crop and model input size (multiples of 32)')
    p.add_argument('--clip-len', type=int, default=None, help='frames per training clip')
    p.add_argument('--workers', type=int, default=None, help='data loader workers')
    p.add_argument('--val-frames', type=int, default=None,
                   help='validate on the first N frames of each val sequence (0: all)')
    p.add_argument('--log', default=None, choices=('csv', 'tensorboard'))
    p.add_argument('--no-local', action='store_true', help='build without the local memory')
    p.add_argument('--no-global', action='store_true', help='build without the global memory')
    p.add_argument('--label-propagation', type=float, default=None, metavar='GAMMA',
                   help="train (and run) with label propagation's prior over the types "
                        '(model.label_propagation; 0: off)')
    p.add_argument('--no-amp', action='store_true', help='no autocast on CUDA')
    p.add_argument('--init', default=None, metavar='CHECKPOINT',
                   help='fine-tune: start from these weights, with their model config (but the '
                        "YAML's model.input_size where it names one; memories switched off by "
                        '--no-local/--no-global are dropped)')
    p.add_argument('--new-memories', action='store_true',
                   help="with --init: build the config's memories fresh where the checkpoint "
                        'has none (stage 2 of the staged schedule from a single-frame network)')
    p.add_argument('--stages', type=float, nargs=3, default=None,
                   metavar=('SINGLE_FRAME', 'MEMORY', 'ALL'),
                   help="the authors' staged schedule: fractions of the iterations for the "
                        'single-frame network, the memory modules alone, then everything')
    p.add_argument('--stage-lr', type=float, nargs=3, default=None, metavar=('S1', 'S2', 'S3'),
                   help='learning-rate multiplier of each stage')
    p.add_argument('--ema-decay', type=float, default=None, metavar='D',
                   help='validate and save a moving average of the weights with decay D '
                        '(e.g. 0.99; 0 = off, the default)')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Entry point of `dmnet train`."""
    exp = apply_overrides(load_yaml(args.config, ExperimentConfig), args)
    result = train(exp, resume=args.resume)
    if result['rank'] == 0:
        val = result['val'] or {}
        print(f"step {result['step']}  loss {_num(result['final_loss'])}  "
              f"val mean_dice {_num(val.get('mean_dice'))}  best {_num(result['best_score'])}"
              f"  -> {result['best']}")
    if result['interrupted']:
        # Ctrl-C: the state is saved, but the run is not finished; 130 (128 + SIGINT) lets a
        # calling script stop rather than go on to its next run.
        print(f"dmnet train: interrupted at step {result['step']}; `dmnet train ... --resume` "
              f"continues from {result['out_dir']}", file=sys.stderr)
        return 130
    return 0


def _named_model_keys(config: str | None) -> dict:
    """The model section as the YAML (with its base: chain) writes it; {} without one."""
    if not config:
        return {}
    model = read_config(Path(config)).get('model') or {}
    return model if isinstance(model, dict) else {}


def _num(v: object) -> str:
    return '' if v is None else f'{float(v):.6f}'
