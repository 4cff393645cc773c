"""The training loop: train DMNet on clips, validate causally each epoch, keep the best model.

One iteration: a batch of clips (T consecutive frames with masks, plus G global frames from the
same video) goes through `forward_clip` (the Segmenter's stage methods with the ConvLSTM state
carried, back-propagated through time); every frame of the clip is supervised with
cross-entropy (+ optional soft Dice). AdamW, linear warm-up then cosine/poly decay, gradient
clipping, autocast on CUDA (bf16, or fp16 with a grad scaler).

After each epoch the weights are written to `OUT/last.safetensors` and scored through the same
`Segmenter` code path as `dmnet evaluate` (frame by frame, causal) on the val split; the best
(mean Dice, seed-paper protocol) is copied to `OUT/best.safetensors`. With `train.ema_decay`
both hold the moving average of the weights (`dmnet_core.train.ema`) instead of the raw ones.

Resume state (no pickle): `OUT/resume.safetensors` holds the model and optimizer tensors and
the torch RNG states; `OUT/resume.json` the step, scheduler, optimizer hyper-parameters, numpy
and Python RNG states, the best score and the model config. Every iteration also reseeds the
RNGs from (seed, step, rank), and the clip sampler's order is a pure function of (seed, epoch),
so a resumed run draws the same batches and reproduces the loss curve.

Multi-GPU: launch with `torchrun --nproc_per_node N -m dmnet_core.cli train ...`; with
`WORLD_SIZE` > 1 the process group is initialised (NCCL on CUDA, gloo on the CPU), each rank
draws its own shard of the batch indices, gradients are averaged by DistributedDataParallel,
and only rank 0 logs, validates and saves. `batch_size` is per process.

Staged schedule (`train.stages`, see `stages`): single-frame network, memories alone, then
everything; only epochs of the last stage can become `best`.

Logs: `OUT/train_log.csv` (per iteration, with the stage and the memory modules' gradient
norms), `OUT/val_log.csv` (per epoch), `OUT/config.yaml`
(the effective config), TensorBoard events in `OUT/tb` when `log: tensorboard`.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from dmnet_core.config import ExperimentConfig, save_yaml
from dmnet_core.train.checks import check_classes, check_split, validate_config
from dmnet_core.train.data import EpochSampler, build_dataset
from dmnet_core.train.distributed import seed_everything, setup_distributed
from dmnet_core.train.ema import WeightAverage
from dmnet_core.train.logs import TRAIN_LOG_FIELDS, VAL_LOG_FIELDS, CsvLog, open_tensorboard
from dmnet_core.train.objective import (
    cross_entropy,
    param_groups,
    soft_dice_loss,
    weighted_cross_entropy,
)
from dmnet_core.train.resume import (
    RESUME_JSON,
    check_resume_config,
    init_weights,
    load_resume,
    restore,
    save_resume,
)
from dmnet_core.train.stages import (
    StagePlan,
    apply_stage,
    drop_frozen_grads,
    module_grad_norms,
    plan_stages,
    stage_lr_factor,
)
from dmnet_core.train.validation import (
    copy_checkpoint,
    log_validation,
    selection_score,
    validate_checkpoint,
)

log = logging.getLogger(__name__)


class ClipForward(nn.Module):
    """`forward_clip` as a module's forward, so DistributedDataParallel sees the call."""

    def __init__(self, model: nn.Module, label_propagation: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.label_propagation = label_propagation

    def forward(self, clip: torch.Tensor, global_frames: torch.Tensor | None) -> torch.Tensor:
        from dmnet_core.train.wrapper import forward_clip
        return forward_clip(self.model, clip, global_frames,
                            label_propagation=self.label_propagation)


@dataclass
class _Amp:
    """Autocast settings: on CUDA only; fp16 comes with a gradient scaler."""

    enabled: bool
    dtype: torch.dtype
    scaler: Any


def _amp(exp: ExperimentConfig, device: torch.device) -> _Amp:
    t = exp.train
    enabled = t.amp and device.type == 'cuda'
    dtype = torch.bfloat16 if t.amp_dtype == 'bf16' else torch.float16
    if enabled and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        log.warning('bf16 not supported on %s: using fp16 autocast', device)
        dtype = torch.float16
    scaler = torch.amp.GradScaler('cuda') if enabled and dtype == torch.float16 else None
    return _Amp(enabled, dtype, scaler)


def _check_inputs(exp: ExperimentConfig) -> StagePlan:
    """Config, dataset and stage checks before anything is written; returns the stage plan."""
    validate_config(exp)
    t = exp.train
    plan = plan_stages(t.stages, t.stage_lr, t.epochs * t.iters_per_epoch)
    root = Path(exp.data.root)
    if not root.is_dir():
        raise FileNotFoundError(f'dataset folder not found: {root}')
    check_classes(root, exp)
    check_split(root, exp.data.train_split, exp.model.task)
    if exp.data.val_split:
        check_split(root, exp.data.val_split, exp.model.task)
    from dmnet_core.data.endoscapes import find_stills
    for folder in [s.root for s in exp.data.stills] + exp.data.val_stills:
        find_stills(folder)                    # names a missing folder or mask now
    return plan


def _train_step(batch: dict, exp: ExperimentConfig, raw: nn.Module, net: nn.Module,
                optimizer: torch.optim.Optimizer, amp: _Amp, device: torch.device,
                stage: str, step: int) -> dict:
    """One optimisation step on a batch; returns the loss terms and gradient norms (tensors)."""
    from dmnet_core.model import normalize

    t = exp.train
    # B x T x 3 x H x W uint8 -> normalised float; masks B x T x H x W.
    clip = normalize(batch['clip'].to(device, non_blocking=True), exp.model)
    masks = batch['masks'].to(device, non_blocking=True).long()
    glob = None
    if raw.use_global and 'global_frames' in batch and batch['global_frames'].numel():
        glob = normalize(batch['global_frames'].to(device, non_blocking=True), exp.model)
    with torch.autocast(device.type, dtype=amp.dtype, enabled=amp.enabled):
        logits = net(clip, glob)                               # B x T x K x H x W
    flat = logits.flatten(0, 1).float()                        # BT x K x H x W
    target = masks.flatten(0, 1)
    if t.part_weights:
        # Per-pixel weight by part (B x T x H x W part ids); a weighted mean over valid pixels.
        parts = batch['weight_masks'].to(device, non_blocking=True).long().flatten(0, 1)
        ce = weighted_cross_entropy(flat, target,
                                    torch.tensor(t.part_weights, device=device)[parts])
    else:
        ce = cross_entropy(flat, target)
    dl = soft_dice_loss(flat, target, t.dice_per_frame) if t.dice_weight > 0 else ce.new_zeros(())
    loss = ce + t.dice_weight * dl
    if not torch.isfinite(loss):
        raise FloatingPointError(f'loss is {loss.item()} at step {step}: lower train.lr or '
                                 'disable amp')
    optimizer.zero_grad(set_to_none=True)
    if amp.scaler is not None:
        amp.scaler.scale(loss).backward()
        amp.scaler.unscale_(optimizer)
    else:
        loss.backward()
    drop_frozen_grads(raw, stage)
    memory_norms = module_grad_norms(raw)                       # before clipping
    params = [p for p in raw.parameters() if p.grad is not None]
    gnorm = torch.nn.utils.clip_grad_norm_(params, t.grad_clip) \
        if t.grad_clip > 0 and params else torch.zeros(())
    if amp.scaler is not None:
        amp.scaler.step(optimizer)
        amp.scaler.update()
    else:
        optimizer.step()
    return {'loss': loss.detach(), 'ce': ce.detach(), 'dice_loss': dl.detach(),
            'grad_norm': gnorm, **{f'grad_norm_{k}': v for k, v in memory_norms.items()}}


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
        `resumed_from`, `interrupted`, `stages` (name, first step, end step of each).
    """
    exp = copy.deepcopy(exp)
    plan = _check_inputs(exp)
    t = exp.train
    dist_info, device = setup_distributed(t.device)
    out = Path(t.out_dir)
    if dist_info.main:
        out.mkdir(parents=True, exist_ok=True)
    # Resume state is read before anything consumes randomness.
    meta = tensors = None
    if resume:
        meta, tensors = load_resume(out)
        check_resume_config(meta, exp, out / RESUME_JSON)
    start_step = int(meta['step']) if meta else 0
    if dist_info.main:
        save_yaml(exp, out / 'config.yaml')

    from dmnet_core.checkpoint import save_checkpoint
    from dmnet_core.model import build_model

    torch.manual_seed(t.seed)
    # ImageNet weights only for a fresh start; a checkpoint or a resume brings its own.
    raw = build_model(exp.model, pretrained=meta is None and not t.init_checkpoint).to(device)
    net: nn.Module = ClipForward(raw, exp.model.label_propagation)
    staged = len(plan.names) > 1
    if dist_info.world > 1:
        net = nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == 'cuda' else None,
            # A built global memory without global frames leaves its key/value heads unused;
            # so does a stage that switches the memories off.
            find_unused_parameters=staged or (exp.model.global_memory.enabled
                                              and exp.data.n_global == 0))
    optimizer = torch.optim.AdamW(param_groups(raw, t.weight_decay), lr=t.lr)
    total = plan.total
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: stage_lr_factor(s, plan, t.warmup_iters, t.schedule,
                                             t.min_lr_ratio))
    amp = _amp(exp, device)
    best = None
    if t.init_checkpoint and meta is None:
        init_weights(raw, exp.model, t.init_checkpoint, new_memories=t.init_new_memories,
                     from_binary=t.init_from_binary)
    if meta is not None:
        restore(meta, tensors, raw, optimizer, scheduler, amp.scaler)
        best = meta.get('best_score')
        log.info('resumed from %s at step %d (best %s)', out / RESUME_JSON, start_step, best)
    # Built after init/restore, so the average starts at the weights training starts from.
    ema = WeightAverage(raw, t.ema_decay) if t.ema_decay > 0 else None
    if ema is not None and meta is not None and not ema.load(tensors, meta.get('ema_updates') or 0):
        log.warning('%s holds no weight average: starting it from the resumed weights',
                    out / RESUME_JSON)

    dataset = build_dataset(exp, dist_info)
    train_log = val_log = tb = None
    if dist_info.main:
        keep = start_step if resume else None
        train_log = CsvLog(out / 'train_log.csv', TRAIN_LOG_FIELDS, keep)
        val_log = CsvLog(out / 'val_log.csv', VAL_LOG_FIELDS, keep)
        tb = open_tensorboard(out) if t.log == 'tensorboard' else None
    from tqdm import tqdm
    bar = tqdm(total=total, initial=start_step, disable=not dist_info.main, desc='train',
               unit='it', dynamic_ncols=True, mininterval=1.0)
    losses: list[float] = []
    last_val: dict | None = None
    step = start_step
    last_path, best_path = out / 'last.safetensors', out / 'best.safetensors'
    interrupted = False
    t_start = time.perf_counter()
    freeze = dist_info.world == 1      # DDP needs a fixed set of gradient-carrying parameters

    # The step whose epoch end (validation, best, resume state) is done. An interrupt at an
    # epoch's last step but before its end finished leaves it pending, for --resume to finish.
    ended_at = None if meta and meta.get('epoch_end_pending') else start_step

    def save_state() -> None:
        if dist_info.main:
            pending = step > 0 and step % t.iters_per_epoch == 0 and ended_at != step
            save_resume(out, raw, optimizer, scheduler, amp.scaler, step, best, exp, ema=ema,
                        epoch_end_pending=pending)

    def end_epoch(epoch: int, stage: str) -> None:
        """Last checkpoint, causal validation, best model, resume state (rank 0)."""
        nonlocal best, last_val, ended_at
        if dist_info.main:
            extra = {'epoch': epoch + 1, 'step': step, 'loss': losses[-1] if losses else None,
                     'stage': stage, 'ema_decay': t.ema_decay}
            with ema.applied(raw) if ema is not None else contextlib.nullcontext():
                save_checkpoint(last_path, raw, exp.model, extra=extra)
            # Only the last stage trains the final model: earlier ones never become best.
            final_stage = plan.index_at(step - 1) == plan.last
            if exp.data.val_split:
                last_val = validate_checkpoint(exp, last_path, device,
                                               memory_off=stage == 'single_frame')
                score = selection_score(last_val)
                improved = final_stage and (best is None or score > best)
                if improved:
                    best = score
                    copy_checkpoint(last_path, best_path)
                log_validation(val_log, tb, bar, last_val, epoch, step, improved)
            elif final_stage:
                copy_checkpoint(last_path, best_path)
            ended_at = step
            save_state()
        if dist_info.world > 1:
            dist.barrier()

    try:
        if ended_at is None:
            stage = plan.name_at(step - 1)
            apply_stage(raw, stage, freeze=freeze)
            epoch = step // t.iters_per_epoch - 1
            log.info('finishing the end of epoch %d, which an interrupt cut short', epoch + 1)
            end_epoch(epoch, stage)
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
            stage = None
            for batch in loader:
                if plan.name_at(step) != stage:
                    stage = plan.name_at(step)
                    apply_stage(raw, stage, freeze=freeze)
                seed_everything(t.seed, step, dist_info.rank)
                terms = _train_step(batch, exp, raw, net, optimizer, amp, device, stage, step)
                if ema is not None:
                    ema.update(raw)
                lr = optimizer.param_groups[0]['lr']
                scheduler.step()
                step += 1
                loss = terms['loss']
                if dist_info.world > 1:
                    # Log the mean loss over ranks (each rank saw its own shard of the batch).
                    loss = loss.clone()
                    dist.all_reduce(loss)
                    loss = loss / dist_info.world
                value = float(loss)
                losses.append(value)
                if dist_info.main:
                    row = {'step': step, 'epoch': epoch, 'stage': stage, 'loss': f'{value:.6f}',
                           'lr': f'{lr:.6g}', 'seconds': f'{time.perf_counter() - t_start:.2f}'}
                    for k in ('ce', 'dice_loss'):
                        row[k] = f'{float(terms[k]):.6f}'
                    for k in ('grad_norm', 'grad_norm_local_memory', 'grad_norm_global_memory'):
                        row[k] = '' if terms[k] is None else f'{float(terms[k]):.4f}'
                    train_log.write(row)
                    if tb is not None:
                        tb.add_scalar('train/loss', value, step)
                        tb.add_scalar('train/lr', lr, step)
                        for k in ('grad_norm_local_memory', 'grad_norm_global_memory'):
                            if terms[k] is not None:
                                tb.add_scalar(f'train/{k}', terms[k], step)
                bar.update()
                bar.set_postfix(loss=f'{value:.4f}', lr=f'{lr:.2e}', stage=stage, refresh=False)
                if t.save_every and step % t.save_every == 0 and step % t.iters_per_epoch:
                    save_state()
                if _stop(stop_after, step, total) and step % t.iters_per_epoch:
                    interrupted = True           # mid-epoch; at an epoch's end, after it
                    break
            if interrupted:
                save_state()
                break
            end_epoch(epoch, stage)
            if _stop(stop_after, step, total):
                interrupted = True
                break
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
        'stages': [(n, *plan.span(i)) for i, n in enumerate(plan.names)],
    }


def _stop(stop_after: int | None, step: int, total: int) -> bool:
    return stop_after is not None and stop_after <= step < total
