"""The authors' staged schedule: single-frame network, then the memory modules, then everything.

`train.stages` gives three fractions of the run's iterations (summing to 1):

1. `single_frame`: the memories are switched off (`DMNet.set_memory_enabled`), so the
   encoder and decoder learn alone; the memory weights get no gradient.
2. `memory`: only `local_memory` and `global_memory` are trained; the encoder and decoder
   are frozen (no gradient, batch norm in eval mode so its statistics stay too).
3. `all`: everything is trained.

An empty list is one `all` stage (the plain run). Each stage restarts the learning-rate
schedule (warm-up, then decay over the stage) scaled by `train.stage_lr`. The stage is a pure
function of the step, so `--resume` lands in the right stage with the right schedule.

A model built without memories has nothing to train in stage 2 and nothing to switch off in
stage 1: it trains every parameter in every stage, so an ablation's single-frame network gets
as many updates, on the same batches and learning rates, as the memory variants.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from dmnet_core.train.objective import lr_factor

STAGE_NAMES = ('single_frame', 'memory', 'all')
MEMORY_MODULES = ('local_memory', 'global_memory')


@dataclass(frozen=True)
class StagePlan:
    """Where each stage starts and ends, in iterations.

    Attributes:
        names: stage names, in order.
        ends: the step at which each stage ends (cumulative; the last equals the total).
        lr_scales: learning-rate multiplier of each stage.
    """

    names: tuple[str, ...]
    ends: tuple[int, ...]
    lr_scales: tuple[float, ...]

    @property
    def total(self) -> int:
        return self.ends[-1]

    def index_at(self, step: int) -> int:
        """The stage the iteration `step` (0-based) belongs to; empty stages are skipped."""
        for i, end in enumerate(self.ends):
            if step < end:
                return i
        return len(self.ends) - 1

    def name_at(self, step: int) -> str:
        return self.names[self.index_at(step)]

    def span(self, index: int) -> tuple[int, int]:
        """(first step, end step) of stage `index`."""
        return (self.ends[index - 1] if index else 0), self.ends[index]

    @property
    def last(self) -> int:
        """Index of the last stage with iterations: its checkpoints are the final model's."""
        return max(i for i in range(len(self.ends)) if self.span(i)[1] > self.span(i)[0])


def plan_stages(fractions: list[float], lr_scales: list[float], total: int) -> StagePlan:
    """Turn `train.stages` fractions into iteration bounds over `total` iterations.

    Args:
        fractions: [] (one stage) or three fractions >= 0 summing to 1.
        lr_scales: [] (all 1) or one multiplier per stage.
        total: iterations of the whole run.

    Raises:
        ValueError: naming `train.stages` or `train.stage_lr`.
    """
    if not fractions:
        if lr_scales and len(lr_scales) != 1:
            raise ValueError(f'train.stage_lr {lr_scales}: without train.stages give one '
                             'value or none')
        return StagePlan(('all',), (total,), (lr_scales[0] if lr_scales else 1.0,))
    if len(fractions) != len(STAGE_NAMES) or any(f < 0 for f in fractions) \
            or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f'train.stages {fractions} must be three fractions >= 0 summing to 1 '
                         f'({", ".join(STAGE_NAMES)})')
    if lr_scales and (len(lr_scales) != len(STAGE_NAMES) or any(s <= 0 for s in lr_scales)):
        raise ValueError(f'train.stage_lr {lr_scales} must be three multipliers > 0')
    ends, acc = [], 0.0
    for f in fractions:
        acc += f
        ends.append(int(round(acc * total)))
    ends[-1] = total
    scales = tuple(lr_scales) if lr_scales else (1.0,) * len(STAGE_NAMES)
    return StagePlan(STAGE_NAMES, tuple(ends), scales)


def stage_lr_factor(step: int, plan: StagePlan, warmup: int, schedule: str,
                    min_ratio: float) -> float:
    """Multiplier of the base lr at `step`: each stage warms up and decays over its own span."""
    i = plan.index_at(step)
    start, end = plan.span(i)
    length = end - start
    return plan.lr_scales[i] * lr_factor(step - start, length, min(warmup, length), schedule,
                                         min_ratio)


def has_memory(model: nn.Module) -> bool:
    return any(getattr(model, m, None) is not None for m in MEMORY_MODULES)


def is_memory_param(name: str) -> bool:
    return name.split('.', 1)[0] in MEMORY_MODULES


def apply_stage(model: nn.Module, stage: str, freeze: bool = True) -> None:
    """Put a `DMNet` in train mode for `stage`.

    Args:
        model: the network (not a DDP wrapper).
        stage: one of STAGE_NAMES.
        freeze: in stage `memory`, also turn `requires_grad` off for the frozen parameters
            (no backward through the encoder: much faster). Under DistributedDataParallel the
            set of gradient-carrying parameters must not change, so the trainer passes False
            and drops those gradients with `drop_frozen_grads` instead.
    """
    if stage not in STAGE_NAMES:
        raise ValueError(f'stage {stage!r} not in {STAGE_NAMES}')
    model.train()
    built_local = getattr(model, 'local_memory', None) is not None
    built_global = getattr(model, 'global_memory', None) is not None
    memory = has_memory(model)
    if stage == 'single_frame' and memory:
        model.set_memory_enabled(local=False, global_=False)
    else:
        model.set_memory_enabled(local=built_local, global_=built_global)
    frozen = stage == 'memory' and memory
    for name, p in model.named_parameters():
        p.requires_grad_(not (frozen and freeze and not is_memory_param(name)))
    if frozen:
        # Frozen batch norm: running statistics stay as stage 1 left them.
        for name, module in model.named_children():
            if name not in MEMORY_MODULES:
                module.eval()


def drop_frozen_grads(model: nn.Module, stage: str) -> None:
    """Stage `memory`: forget gradients of everything but the memories (AdamW then skips them)."""
    if stage != 'memory' or not has_memory(model):
        return
    for name, p in model.named_parameters():
        if not is_memory_param(name):
            p.grad = None


def module_grad_norms(model: nn.Module) -> dict[str, float | None]:
    """L2 norm of the gradients of each memory module (None: not built or no gradient yet).

    Read after backward and before clipping: how much the loss pulls on each memory.
    """
    out: dict[str, float | None] = {}
    for name in MEMORY_MODULES:
        module = getattr(model, name, None)
        grads = [] if module is None else [p.grad.detach().float().norm()
                                           for p in module.parameters() if p.grad is not None]
        out[name] = float(sum(g * g for g in grads) ** 0.5) if grads else None
    return out
