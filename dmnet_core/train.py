"""`dmnet train`: train DMNet on clips, validate causally each epoch, keep the best model.

One iteration: a batch of clips (T consecutive frames with masks, plus G global frames from the
same video) goes through `forward_clip` (the Segmenter's stage methods with the ConvLSTM state
carried, back-propagated through time); every frame of the clip is supervised with
cross-entropy (+ optional soft Dice). AdamW, linear warm-up then cosine/poly decay, gradient
clipping, autocast on CUDA (bf16, or fp16 with a grad scaler).

After each epoch the weights are written to `OUT/last.safetensors` and scored through the same
`Segmenter` code path as `dmnet evaluate` (frame by frame, causal) on the val split; the best
(mean Dice, seed-paper protocol) is copied to `OUT/best.safetensors`.

Resume state (no pickle): `OUT/resume.safetensors` holds the model and optimizer tensors and
the torch RNG states; `OUT/resume.json` the step, scheduler, optimizer hyper-parameters, numpy
and Python RNG states, the best score and the model config. Every iteration also reseeds the
RNGs from (seed, step, rank), and the clip sampler's order is a pure function of (seed, epoch),
so a resumed run draws the same batches and reproduces the loss curve.

Multi-GPU: launch with `torchrun --nproc_per_node N -m dmnet_core.cli train ...`; with
`WORLD_SIZE` > 1 the process group is initialised (NCCL on CUDA, gloo on the CPU), each rank
draws its own shard of the batch indices, gradients are averaged by DistributedDataParallel,
and only rank 0 logs, validates and saves. `batch_size` is per process.

Logs: `OUT/train_log.csv` (per iteration), `OUT/val_log.csv` (per epoch), `OUT/config.yaml`
(the effective config), TensorBoard events in `OUT/tb` when `log: tensorboard`.
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from dmnet_core.config import ExperimentConfig, ModelConfig, load_yaml, save_yaml, to_dict
from dmnet_core.data import layout

log = logging.getLogger(__name__)

IGNORE_INDEX = 255
RESUME_TENSORS = 'resume.safetensors'
RESUME_JSON = 'resume.json'
TRAIN_LOG_FIELDS = ['step', 'epoch', 'loss', 'ce', 'dice_loss', 'lr', 'grad_norm', 'seconds']
VAL_LOG_FIELDS = ['epoch', 'step', 'mean_dice', 'mean_iou', 'binary_dice', 'challenge_iou',
                  'pred_flicker', 'fps', 'best']


# ---------------------------------------------------------------- distributed / devices

@dataclass
class Dist:
    """This process's place in a (possibly single-process) run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str) -> tuple[Dist, torch.device]:
    """Initialise the process group under torchrun (WORLD_SIZE > 1) and pick this rank's device."""
    world = int(os.environ.get('WORLD_SIZE', '1'))
    rank = int(os.environ.get('RANK', '0'))
    local_rank = int(os.environ.get('LOCAL_RANK', '0'))
    dev = resolve_device(device)
    if world > 1:
        if dev.type == 'cuda':
            dev = torch.device('cuda', local_rank)
            torch.cuda.set_device(dev)
        if not dist.is_initialized():
            dist.init_process_group('nccl' if dev.type == 'cuda' else 'gloo')
    return Dist(rank, world, local_rank), dev


def resolve_device(device: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; an unavailable CUDA request is an error."""
    if device == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f'train.device {device!r} not understood; use auto, cpu, cuda, cuda:N'
                         ) from exc
    if dev.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError(f'train.device {device!r} requested but CUDA is not available here')
    if dev.type not in ('cpu', 'cuda'):
        raise ValueError(f'train.device {device!r} not supported; use auto, cpu, cuda, cuda:N')
    return dev


def seed_everything(seed: int, step: int, rank: int) -> None:
    """Reseed torch, numpy and Python from (seed, step, rank): each iteration is reproducible."""
    s = int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])
    torch.manual_seed(s)
    np.random.seed(s)
    random.seed(s)


# ---------------------------------------------------------------- data

class EpochSampler(torch.utils.data.Sampler[int]):
    """Clip indices for one epoch: `iters * batch` per rank, a pure function of (seed, epoch).

    Like `DistributedSampler`, ranks take disjoint shards of one seeded order; unlike it, an
    epoch has a fixed number of iterations (datasets may be smaller or larger than that) and
    can start at an iteration offset, which is what an exact resume needs.
    """

    def __init__(self, n_items: int, iters: int, batch_size: int, seed: int, epoch: int,
                 dist_info: Dist, start_iter: int = 0) -> None:
        if n_items < 1:
            raise ValueError('the training split has no clips')
        self.n_items, self.iters, self.batch = n_items, iters, batch_size
        self.seed, self.epoch, self.dist, self.start = seed, epoch, dist_info, start_iter

    def indices(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        need = self.iters * self.batch * self.dist.world
        order: list[int] = []
        while len(order) < need:             # chain fresh permutations
            order += torch.randperm(self.n_items, generator=g).tolist()
        mine = order[:need][self.dist.rank::self.dist.world]
        return mine[self.start * self.batch:]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices())

    def __len__(self) -> int:
        return (self.iters - self.start) * self.batch


def check_split(root: str | Path, split: str, task: str) -> list[layout.Sequence]:
    """Every frame of the split has its mask for `task`; errors name the missing file."""
    seqs = layout.list_sequences(root, split)
    if not seqs:
        raise ValueError(f'{Path(root) / layout.META_FILE}: split {split!r} has no sequences')
    for seq in seqs:
        frames = seq.frames()
        if not frames:
            raise FileNotFoundError(f'no frames in {seq.path / layout.IMAGE_DIR}')
        for frame in frames:
            mask = seq.mask_path(frame, task)
            if not mask.is_file():
                raise FileNotFoundError(f'mask not found: {mask} (for image {frame})')
    return seqs


def check_classes(root: str | Path, exp: ExperimentConfig) -> None:
    """The dataset's class list for the model's task must have the model's class count."""
    meta = layout.read_meta(root)
    names = meta.classes.get(exp.model.task)
    if names is not None and len(names) != exp.model.num_classes:
        raise ValueError(f'{Path(root) / layout.META_FILE}: task {exp.model.task!r} has '
                         f'{len(names)} classes {names}, model.class_names has '
                         f'{exp.model.num_classes} {exp.model.class_names}')


def build_dataset(exp: ExperimentConfig, dist_info: Dist) -> Any:
    """The training clip dataset (`dmnet_core.data.clips.ClipDataset`)."""
    from dmnet_core.data.clips import ClipDataset
    d = exp.data
    return ClipDataset(d.root, d.train_split, exp.model.task, clip_len=d.clip_len,
                       n_global=d.n_global if exp.model.global_memory.enabled else 0,
                       crop=tuple(d.crop), augment=d.augment, seed=exp.train.seed,
                       aug=d.augmentation)


# ---------------------------------------------------------------- model, loss, schedule

class ClipForward(nn.Module):
    """`forward_clip` as a module's forward, so DistributedDataParallel sees the call."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, clip: torch.Tensor, global_frames: torch.Tensor | None) -> torch.Tensor:
        from dmnet_core.train_wrapper import forward_clip
        return forward_clip(self.model, clip, global_frames)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - mean soft Dice over the foreground classes present in the batch.

    Args:
        logits: N x K x H x W.
        target: N x H x W class ids (IGNORE_INDEX pixels left out).
    """
    k = logits.shape[1]
    valid = (target != IGNORE_INDEX).unsqueeze(1)                    # N x 1 x H x W
    probs = logits.float().softmax(1) * valid
    onehot = F.one_hot(target.clamp(0, k - 1), k).permute(0, 3, 1, 2) * valid
    inter = (probs * onehot).sum((0, 2, 3))
    denom = probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    dice = (2 * inter + 1.0) / (denom + 1.0)                         # K, smoothed
    present = onehot.sum((0, 2, 3))[1:] > 0
    fg = dice[1:][present]
    return 1.0 - fg.mean() if fg.numel() else logits.sum() * 0.0


def lr_factor(step: int, total: int, warmup: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the base lr at `step`: linear warm-up, then cosine or poly decay."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    t = min(1.0, (step - warmup) / span)
    if schedule == 'cosine':
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))
    return min_ratio + (1 - min_ratio) * (1 - t) ** 0.9


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and normalisation weights (1-D parameters)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{'params': decay, 'weight_decay': weight_decay},
            {'params': no_decay, 'weight_decay': 0.0}]


def validate_config(exp: ExperimentConfig) -> None:
    """Check the training values; errors name the key."""
    t, d = exp.train, exp.data
    checks = [
        (t.epochs >= 1, f'train.epochs must be >= 1, got {t.epochs}'),
        (t.iters_per_epoch >= 1, f'train.iters_per_epoch must be >= 1, got {t.iters_per_epoch}'),
        (t.batch_size >= 1, f'train.batch_size must be >= 1, got {t.batch_size}'),
        (t.lr > 0, f'train.lr must be > 0, got {t.lr}'),
        (t.warmup_iters >= 0, f'train.warmup_iters must be >= 0, got {t.warmup_iters}'),
        (t.schedule in ('cosine', 'poly'),
         f"train.schedule {t.schedule!r} not in ('cosine', 'poly')"),
        (0 <= t.min_lr_ratio <= 1, f'train.min_lr_ratio must be in [0, 1], got {t.min_lr_ratio}'),
        (t.dice_weight >= 0, f'train.dice_weight must be >= 0, got {t.dice_weight}'),
        (t.amp_dtype in ('bf16', 'fp16'), f'train.amp_dtype {t.amp_dtype!r} not in bf16/fp16'),
        (t.log in ('csv', 'tensorboard'), f"train.log {t.log!r} not in ('csv', 'tensorboard')"),
        (t.val_max_frames >= 0, f'train.val_max_frames must be >= 0, got {t.val_max_frames}'),
        (t.save_every >= 0, f'train.save_every must be >= 0, got {t.save_every}'),
        (d.clip_len >= 1, f'data.clip_len must be >= 1, got {d.clip_len}'),
        (d.n_global >= 0, f'data.n_global must be >= 0, got {d.n_global}'),
        (len(d.crop) == 2 and all(c > 0 and c % 32 == 0 for c in d.crop),
         f'data.crop {d.crop} must be two positive multiples of 32'),
        (bool(d.root), 'data.root is empty: give --data DIR or data.root in the YAML'),
    ]
    for ok, msg in checks:
        if not ok:
            raise ValueError(msg)
    exp.model.validate()


# ---------------------------------------------------------------- resume state (no pickle)

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
                exp: ExperimentConfig) -> None:
    """Write resume.safetensors + resume.json atomically (tensors first, JSON names the step)."""
    from safetensors.torch import save_file
    tensors = {f'model.{k}': v.detach().cpu().contiguous().clone()
               for k, v in model.state_dict().items()}
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


def _check_resume_config(meta: dict, exp: ExperimentConfig, where: Path) -> None:
    """The model must be the one being resumed; training-length changes only warn."""
    saved = meta.get('config', {})
    now = to_dict(exp)
    diffs = _diff_dicts(saved.get('model', {}), now['model'], 'model')
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


# ---------------------------------------------------------------- logs

class CsvLog:
    """Append-only CSV with a header; on resume, rows past the resumed step are dropped."""

    def __init__(self, path: Path, fields: list[str], keep_until: int | None) -> None:
        self.path, self.fields = path, fields
        rows = []
        if keep_until is not None and path.is_file():
            with path.open(newline='') as f:
                rows = [r for r in csv.DictReader(f) if int(r['step']) <= keep_until]
        with path.open('w', newline='') as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)

    def write(self, row: dict) -> None:
        with self.path.open('a', newline='') as f:
            csv.DictWriter(f, fieldnames=self.fields, extrasaction='ignore').writerow(row)


def read_log(path: str | Path) -> list[dict]:
    """Rows of a train/val CSV log with numeric values as floats (step and epoch as ints)."""
    with Path(path).open(newline='') as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        row: dict[str, Any] = {}
        for k, v in r.items():
            if k in ('step', 'epoch'):
                row[k] = int(v)
            else:
                try:
                    row[k] = float(v) if v != '' else None
                except ValueError:
                    row[k] = v
        out.append(row)
    return out


def _tensorboard(out: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning('log: tensorboard requested but the tensorboard package is not installed '
                    '(pip install tensorboard); logging to %s only', out / 'train_log.csv')
        return None
    return SummaryWriter(str(out / 'tb'))


# ---------------------------------------------------------------- the loop

def _validate(exp: ExperimentConfig, ckpt: Path, device: torch.device) -> dict:
    """Score `ckpt` on the val split through the Segmenter, as `dmnet evaluate` does."""
    from dmnet_core.evaluate import evaluate
    from dmnet_core.segmenter import load_segmenter
    seg = load_segmenter(ckpt, str(device), precision='fp32' if device.type == 'cpu' else 'auto')
    return evaluate(exp.data.root, None, segmenter=seg, split=exp.data.val_split,
                    max_frames=exp.train.val_max_frames or None)


def _score(report: dict) -> float:
    """Model selection score: seed-paper mean Dice, else binary Dice, else 0."""
    for key in ('mean_dice', 'binary_dice'):
        if report.get(key) is not None:
            return float(report[key])
    return 0.0


def train(exp: ExperimentConfig, resume: bool = False, *,
          stop_after: int | None = None) -> dict:
    """Train DMNet as configured; see the module docstring for what is written where.

    Args:
        exp: the experiment (model, data, training settings).
        resume: continue from `OUT/resume.*` (same step, optimizer, schedule, RNG).
        stop_after: stop after this many iterations in total, saving resume state, as an
            interruption would (used to test resume).

    Returns:
        `out_dir`, `last`, `best` (paths), `step`, `epoch`, `best_score`, `losses` (this
        call's per-iteration losses), `final_loss`, `val` (last validation headline),
        `resumed_from`, `interrupted`.
    """
    exp = copy.deepcopy(exp)
    validate_config(exp)
    root = Path(exp.data.root)
    if not root.is_dir():
        raise FileNotFoundError(f'dataset folder not found: {root}')
    check_classes(root, exp)
    check_split(root, exp.data.train_split, exp.model.task)
    if exp.data.val_split:
        check_split(root, exp.data.val_split, exp.model.task)
    t = exp.train
    dist_info, device = setup_distributed(t.device)
    out = Path(t.out_dir)
    if dist_info.main:
        out.mkdir(parents=True, exist_ok=True)
    # Resume state is read before anything consumes randomness.
    meta = tensors = None
    if resume:
        meta, tensors = load_resume(out)
        _check_resume_config(meta, exp, out / RESUME_JSON)
    start_step = int(meta['step']) if meta else 0
    if dist_info.main:
        save_yaml(exp, out / 'config.yaml')

    from dmnet_core.checkpoint import save_checkpoint
    from dmnet_core.model import build_model, normalize

    torch.manual_seed(t.seed)
    raw = build_model(exp.model).to(device)
    net: nn.Module = ClipForward(raw)
    if dist_info.world > 1:
        net = nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == 'cuda' else None,
            # A built global memory without global frames leaves its key/value heads unused.
            find_unused_parameters=exp.model.global_memory.enabled and exp.data.n_global == 0)
    optimizer = torch.optim.AdamW(param_groups(raw, t.weight_decay), lr=t.lr)
    total = t.epochs * t.iters_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total, t.warmup_iters, t.schedule, t.min_lr_ratio))
    use_amp = t.amp and device.type == 'cuda'
    amp_dtype = torch.bfloat16 if t.amp_dtype == 'bf16' else torch.float16
    if use_amp and amp_dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        log.warning('bf16 not supported on %s: using fp16 autocast', device)
        amp_dtype = torch.float16
    scaler = (torch.amp.GradScaler('cuda') if use_amp and amp_dtype == torch.float16 else None)
    best = None
    if t.init_checkpoint and meta is None:
        init_weights(raw, exp.model, t.init_checkpoint)
    if meta is not None:
        restore(meta, tensors, raw, optimizer, scheduler, scaler)
        best = meta.get('best_score')
        log.info('resumed from %s at step %d (best %s)', out / RESUME_JSON, start_step, best)

    dataset = build_dataset(exp, dist_info)
    train_log = val_log = tb = None
    if dist_info.main:
        keep = start_step if resume else None
        train_log = CsvLog(out / 'train_log.csv', TRAIN_LOG_FIELDS, keep)
        val_log = CsvLog(out / 'val_log.csv', VAL_LOG_FIELDS, keep)
        tb = _tensorboard(out) if t.log == 'tensorboard' else None
    from tqdm import tqdm
    bar = tqdm(total=total, initial=start_step, disable=not dist_info.main, desc='train',
               unit='it', dynamic_ncols=True, mininterval=1.0)
    losses: list[float] = []
    last_val: dict | None = None
    step = start_step
    last_path, best_path = out / 'last.safetensors', out / 'best.safetensors'
    interrupted = False
    t_start = time.perf_counter()

    def save_state() -> None:
        if dist_info.main:
            save_resume(out, raw, optimizer, scheduler, scaler, step, best, exp)

    try:
        while step < total:
            epoch, it0 = divmod(step, t.iters_per_epoch)
            sampler = EpochSampler(len(dataset), t.iters_per_epoch, t.batch_size, t.seed, epoch,
                                   dist_info, start_iter=it0)
            loader = torch.utils.data.DataLoader(
                dataset, batch_size=t.batch_size, sampler=sampler, drop_last=True,
                num_workers=exp.data.num_workers, pin_memory=device.type == 'cuda')
            # Fresh augmentation draws each epoch, still a pure function of (seed, epoch, index).
            if hasattr(dataset, 'seed'):
                dataset.seed = int(np.random.SeedSequence([t.seed, epoch]).generate_state(1)[0])
            raw.train()
            for batch in loader:
                seed_everything(t.seed, step, dist_info.rank)
                # B x T x 3 x H x W uint8 -> normalised float; masks B x T x H x W.
                clip = normalize(batch['clip'].to(device, non_blocking=True), exp.model)
                masks = batch['masks'].to(device, non_blocking=True).long()
                glob = None
                if raw.use_global and 'global_frames' in batch and batch['global_frames'].numel():
                    glob = normalize(batch['global_frames'].to(device, non_blocking=True),
                                     exp.model)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                    logits = net(clip, glob)                   # B x T x K x H x W
                flat = logits.flatten(0, 1).float()            # BT x K x H x W
                target = masks.flatten(0, 1)
                ce = F.cross_entropy(flat, target, ignore_index=IGNORE_INDEX)
                dl = soft_dice_loss(flat, target) if t.dice_weight > 0 else ce.new_zeros(())
                loss = ce + t.dice_weight * dl
                if not torch.isfinite(loss):
                    raise FloatingPointError(f'loss is {loss.item()} at step {step}: lower '
                                             'train.lr or disable amp')
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                else:
                    loss.backward()
                gnorm = torch.nn.utils.clip_grad_norm_(raw.parameters(), t.grad_clip) \
                    if t.grad_clip > 0 else torch.zeros(())
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                lr = optimizer.param_groups[0]['lr']
                scheduler.step()
                step += 1
                if dist_info.world > 1:
                    # Log the mean loss over ranks (each rank saw its own shard of the batch).
                    mean = loss.detach().clone()
                    dist.all_reduce(mean)
                    value = float(mean) / dist_info.world
                else:
                    value = float(loss.detach())
                losses.append(value)
                if dist_info.main:
                    row = {'step': step, 'epoch': epoch, 'loss': f'{value:.6f}',
                           'ce': f'{float(ce.detach()):.6f}',
                           'dice_loss': f'{float(dl.detach()):.6f}',
                           'lr': f'{lr:.6g}', 'grad_norm': f'{float(gnorm):.4f}',
                           'seconds': f'{time.perf_counter() - t_start:.2f}'}
                    train_log.write(row)
                    if tb is not None:
                        tb.add_scalar('train/loss', value, step)
                        tb.add_scalar('train/lr', lr, step)
                bar.update()
                bar.set_postfix(loss=f'{value:.4f}', lr=f'{lr:.2e}', refresh=False)
                if t.save_every and step % t.save_every == 0 and step % t.iters_per_epoch:
                    save_state()
                if stop_after is not None and step >= stop_after and step < total:
                    interrupted = True
                    break
            if interrupted:
                save_state()
                break
            # End of an epoch: last checkpoint, causal validation, best model, resume state.
            if dist_info.main:
                extra = {'epoch': epoch + 1, 'step': step, 'loss': losses[-1] if losses else None}
                save_checkpoint(last_path, raw, exp.model, extra=extra)
                if exp.data.val_split:
                    last_val = _validate(exp, last_path, device)
                    score = _score(last_val)
                    improved = best is None or score > best
                    if improved:
                        best = score
                        shutil.copyfile(last_path, best_path)
                        shutil.copyfile(last_path.with_suffix('.yaml'),
                                        best_path.with_suffix('.yaml'))
                    ts = last_val['temporal_stability']
                    val_log.write({'epoch': epoch + 1, 'step': step,
                                   **{k: _num(last_val.get(k)) for k in
                                      ('mean_dice', 'mean_iou', 'binary_dice', 'challenge_iou',
                                       'fps')},
                                   'pred_flicker': _num(ts['pred_flicker']), 'best': int(improved)})
                    if tb is not None:
                        for k in ('mean_dice', 'mean_iou', 'binary_dice'):
                            if last_val.get(k) is not None:
                                tb.add_scalar(f'val/{k}', last_val[k], step)
                    bar.write(f'epoch {epoch + 1}: val mean Dice {_num(last_val["mean_dice"])} '
                              f'mean IoU {_num(last_val["mean_iou"])}'
                              + (' (best)' if improved else ''))
                else:
                    shutil.copyfile(last_path, best_path)
                save_state()
            if dist_info.world > 1:
                dist.barrier()
    except KeyboardInterrupt:
        # Keep what was done: the next `--resume` continues from here.
        interrupted = True
        save_state()
        log.warning('interrupted at step %d; resume state saved in %s', step, out)
    finally:
        bar.close()
        if tb is not None:
            tb.close()
        if dist_info.world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    return {
        'out_dir': str(out), 'last': str(last_path), 'best': str(best_path), 'step': step,
        'epoch': step // t.iters_per_epoch, 'best_score': best, 'losses': losses,
        'final_loss': losses[-1] if losses else None,
        'val': None if last_val is None else {k: last_val.get(k) for k in
                                              ('mean_dice', 'mean_iou', 'binary_dice', 'fps')},
        'resumed_from': start_step if resume else None, 'interrupted': interrupted,
        'rank': dist_info.rank,
    }


def init_weights(model: nn.Module, cfg: ModelConfig, path: str | Path) -> None:
    """Load fine-tuning start weights; memories this model was built without are dropped.

    Everything the model has must come from the checkpoint with the same shape, so a
    checkpoint of another architecture or class count fails loudly, naming the keys.
    """
    from dmnet_core.checkpoint import check_state_dict, load_checkpoint

    _, state, _ = load_checkpoint(path)
    own = model.state_dict()
    dropped = sorted(k for k in state if k not in own
                     and k.split('.')[0] in ('local_memory', 'global_memory'))
    state = {k: v for k, v in state.items() if k not in dropped}
    check_state_dict(model, state, cfg, source=str(path))
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
    log.info('initialised from %s%s', path,
             f' (dropped {len(dropped)} memory tensors)' if dropped else '')


def _num(v: Any) -> str:
    return '' if v is None else f'{float(v):.6f}'


# ---------------------------------------------------------------- CLI

def apply_overrides(exp: ExperimentConfig, args: argparse.Namespace) -> ExperimentConfig:
    """Command-line flags override the YAML."""
    exp = copy.deepcopy(exp)
    if getattr(args, 'init', None):
        # Fine-tuning keeps the checkpoint's architecture and classes; flags below still apply.
        from dmnet_core.checkpoint import load_checkpoint

        exp.model, _, _ = load_checkpoint(args.init)
        exp.train.init_checkpoint = str(args.init)
    simple = {'data': ('data', 'root'), 'out': ('train', 'out_dir'),
              'device': ('train', 'device'), 'epochs': ('train', 'epochs'),
              'iters': ('train', 'iters_per_epoch'), 'batch_size': ('train', 'batch_size'),
              'lr': ('train', 'lr'), 'seed': ('train', 'seed'), 'log': ('train', 'log'),
              'val_frames': ('train', 'val_max_frames'), 'workers': ('data', 'num_workers'),
              'clip_len': ('data', 'clip_len')}
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
    if args.no_amp:
        exp.train.amp = False
    return exp


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `dmnet train`."""
    p = subparsers.add_parser(
        'train', help='train DMNet (validation each epoch, best model kept, resumable)',
        description='Train DMNet from an ExperimentConfig YAML; flags override it. The '
                    'single-frame baseline is the same command with --no-local --no-global. '
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
    p.add_argument('--no-amp', action='store_true', help='no autocast on CUDA')
    p.add_argument('--init', default=None, metavar='CHECKPOINT',
                   help='fine-tune: start from these weights, with their model config '
                        '(memories switched off by --no-local/--no-global are dropped)')
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
    return 0


__all__ = ['EpochSampler', 'apply_overrides', 'lr_factor', 'read_log', 'soft_dice_loss',
           'train']
