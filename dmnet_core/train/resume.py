"""Resume state without pickle, and fine-tuning start weights.

`OUT/resume.safetensors` holds the model and optimizer tensors and the torch RNG states;
`OUT/resume.json` the step, scheduler, optimizer hyper-parameters, numpy and Python RNG
states, the best score and the config. The tensors are written first and the JSON names the
step, so a save interrupted half-way is detected on load.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dmnet_core.config import ExperimentConfig, ModelConfig, from_dict, to_dict

log = logging.getLogger(__name__)

RESUME_TENSORS = 'resume.safetensors'
RESUME_JSON = 'resume.json'


def _json_rng() -> dict:
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {'numpy': [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]),
                      float(np_state[4])],
            'python': [py_state[0], list(py_state[1]), py_state[2]]}


def _set_json_rng(state: dict) -> None:
    n = state['numpy']
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    p = state['python']
    random.setstate((p[0], tuple(p[1]), p[2]))


def save_resume(out: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                scheduler: Any, scaler: Any, step: int, best: float | None,
                exp: ExperimentConfig, ema: Any = None,
                epoch_end_pending: bool = False) -> None:
    """Write resume.safetensors + resume.json atomically (tensors first, JSON names the step).

    `ema`: the run's WeightAverage, if any; its tensors go in as `ema.*`.
    `epoch_end_pending`: `step` ends an epoch whose validation an interrupt cut short.
    """
    from safetensors.torch import save_file
    tensors = {f'model.{k}': v.detach().cpu().contiguous().clone()
               for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update(ema.tensors())
    opt = optimizer.state_dict()
    opt_scalars: dict[str, dict] = {}
    for pid, st in opt['state'].items():
        for key, val in st.items():
            if torch.is_tensor(val):
                tensors[f'optim.{pid}.{key}'] = val.detach().cpu().contiguous().clone()
            else:
                opt_scalars.setdefault(str(pid), {})[key] = val
    tensors['rng.torch'] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors['rng.cuda'] = torch.stack(torch.cuda.get_rng_state_all())
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
              for g in opt['param_groups']]
    meta = {
        'step': step, 'best_score': best, 'param_groups': groups, 'optim_scalars': opt_scalars,
        'optim_state_ids': sorted(int(k) for k in opt['state']),
        'scheduler': scheduler.state_dict(), 'scaler': scaler.state_dict() if scaler else None,
        'rng': _json_rng(), 'config': to_dict(exp), 'time': time.time(),
        'ema_updates': None if ema is None else ema.updates,
        'epoch_end_pending': epoch_end_pending,
    }
    tmp_t, tmp_j = out / (RESUME_TENSORS + '.tmp'), out / (RESUME_JSON + '.tmp')
    save_file(tensors, str(tmp_t), metadata={'step': str(step)})
    tmp_j.write_text(json.dumps(meta))
    os.replace(tmp_t, out / RESUME_TENSORS)
    os.replace(tmp_j, out / RESUME_JSON)


def load_resume(out: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read the resume state; errors name the files."""
    from safetensors import SafetensorError, safe_open
    tpath, jpath = out / RESUME_TENSORS, out / RESUME_JSON
    for p in (tpath, jpath):
        if not p.is_file():
            raise FileNotFoundError(f'--resume: no resume state at {p}')
    try:
        meta = json.loads(jpath.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f'{jpath}: corrupt resume state: {exc}') from exc
    try:
        with safe_open(str(tpath), framework='pt', device='cpu') as f:
            tstep = (f.metadata() or {}).get('step')
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as exc:
        raise ValueError(f'{tpath}: corrupt resume state: {exc}') from exc
    if tstep != str(meta.get('step')):
        raise ValueError(f'{tpath} (step {tstep}) and {jpath} (step {meta.get("step")}) '
                         'disagree: interrupted while saving? remove both to start over')
    return meta, tensors


def restore(meta: dict, tensors: dict[str, torch.Tensor], model: nn.Module,
            optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any) -> None:
    """Load the model, optimizer, scheduler, scaler and RNG states saved by `save_resume`."""
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith('model.')},
                          strict=True)
    state: dict[int, dict] = {int(pid): {} for pid in meta['optim_state_ids']}
    for key, val in tensors.items():
        if key.startswith('optim.'):
            _, pid, name = key.split('.', 2)
            state[int(pid)][name] = val
    for pid, scalars in meta['optim_scalars'].items():
        state[int(pid)].update(scalars)
    groups = [{k: (tuple(v) if k == 'betas' else v) for k, v in g.items()}
              for g in meta['param_groups']]
    optimizer.load_state_dict({'state': state, 'param_groups': groups})
    scheduler.load_state_dict(meta['scheduler'])
    if scaler is not None and meta.get('scaler'):
        scaler.load_state_dict(meta['scaler'])
    torch.set_rng_state(tensors['rng.torch'])
    if 'rng.cuda' in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(tensors['rng.cuda']))
    _set_json_rng(meta['rng'])


def check_resume_config(meta: dict, exp: ExperimentConfig, where: Path) -> None:
    """The model must be the one being resumed; training-length changes only warn."""
    saved = meta.get('config', {})
    now = to_dict(exp)
    saved_model = saved.get('model', {})
    try:
        # A field added since the run started takes its default, which keeps the old behaviour.
        saved_model = to_dict(from_dict(ModelConfig, saved_model))
    except (TypeError, ValueError):
        pass                                    # a key this version lacks: the diff names it
    diffs = _diff_dicts(saved_model, now['model'], 'model')
    if diffs:
        raise ValueError(f'{where}: --resume with a different model config: ' + '; '.join(diffs))
    tdiffs = _diff_dicts(saved.get('train', {}), now['train'], 'train')
    tdiffs += _diff_dicts(saved.get('data', {}), now['data'], 'data')
    if tdiffs:
        log.warning('resuming with changed settings (the loss curve will differ): %s',
                    '; '.join(tdiffs))


def _diff_dicts(a: Any, b: Any, where: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff_dicts(a.get(k), b.get(k), f'{where}.{k}')
        return out
    return [] if a == b else [f'{where}: saved {a!r}, now {b!r}']


def init_weights(model: nn.Module, cfg: ModelConfig, path: str | Path,
                 new_memories: bool = False, from_binary: bool = False) -> None:
    """Load fine-tuning start weights; memories this model was built without are dropped.

    Everything the model has must come from the checkpoint with the same shape, so a
    checkpoint of another architecture or class count fails loudly, naming the keys.

    Args:
        model: the freshly built network.
        cfg: its config.
        path: the checkpoint.
        new_memories: memory modules the checkpoint lacks keep their fresh initialisation
            (stage 2 of the staged schedule, started from a single-frame network).
        from_binary: the checkpoint is a binary model and this one has more classes (parts,
            type): its class head starts with the checkpoint's background row for background
            and a copy of the instrument row for every other class, so P(background) starts
            as the binary model's and training only has to split instruments into classes.

    A decoder fine stage (`decoder.output_stride: 2`) the checkpoint lacks keeps its fresh
    initialisation: its head starts at zero, so the model starts with the checkpoint's output.
    """
    from dmnet_core.checkpoint import check_state_dict, load_checkpoint

    _, state, _ = load_checkpoint(path)
    own = model.state_dict()
    dropped = sorted(k for k in state if k not in own
                     and k.split('.')[0] in ('local_memory', 'global_memory'))
    state = {k: v for k, v in state.items() if k not in dropped}
    fresh = []
    if new_memories:
        fresh = sorted(k for k in own if k not in state
                       and k.split('.')[0] in ('local_memory', 'global_memory'))
        state.update({k: own[k] for k in fresh})
    if from_binary:                     # before the fill below: only checkpoint heads split
        state = _split_binary_head(state, cfg, path)
    if not any(k.startswith('decoder.fine.') for k in state):
        fine = sorted(k for k in own if k.startswith('decoder.fine.'))
        state.update({k: own[k] for k in fine})
        fresh += fine
    check_state_dict(model, state, cfg, source=str(path))
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
    log.info('initialised from %s%s%s', path,
             f' (dropped {len(dropped)} memory tensors)' if dropped else '',
             f' ({len(fresh)} tensors freshly initialised)' if fresh else '')


def _split_binary_head(state: dict[str, torch.Tensor], cfg: ModelConfig,
                       path: str | Path) -> dict[str, torch.Tensor]:
    """`state` with its 2-class head widened to cfg's K classes: rows [bg, fg, fg, ...], the
    foreground biases lowered by log(K - 1)."""
    head = state.get('decoder.head.weight')
    if head is None or head.shape[0] != 2 or cfg.num_classes <= 2:
        found = 'no class head' if head is None else f'{head.shape[0]} classes'
        raise ValueError(f'train.init_from_binary needs a binary checkpoint (2 classes) and a '
                         f'model of more classes: {path} has {found}, the config '
                         f'{cfg.num_classes} ({cfg.class_names})')
    k = cfg.num_classes
    rows = [0] + [1] * (k - 1)
    bias = state['decoder.head.bias'][rows].clone()
    # The K - 1 copies share the instrument's probability: P(background) starts as the binary's.
    bias[1:] -= math.log(k - 1)
    out = {**state, 'decoder.head.weight': state['decoder.head.weight'][rows],
           'decoder.head.bias': bias}
    if 'decoder.fine.head.weight' in state:
        # The fine stage adds a correction to those logits: copied rows, no second shift.
        for name in ('decoder.fine.head.weight', 'decoder.fine.head.bias'):
            out[name] = state[name][rows]
    return out
