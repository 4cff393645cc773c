"""Are the memories read? Probes of a running Segmenter, and the active rule's admission rate.

`MemoryProbe` hooks the memory modules of `Segmenter.model` (forward hooks: the inference code
is untouched) and recomputes, for every read, what the fused attention kernel does not expose:

- `global_entropy`: entropy of the global read's attention over the N x h x w memory positions,
  divided by log(N h w): 1 = uniform (the read ignores the content), near 0 = sharp.
  Only reads of a non-empty bank count; `global_self_reads` counts the others.
- `global_share`: the read's share of the fused features, |read| / (|read| + |query value|)
  (tandem fusion concatenates the two before the decoder; Frobenius norms per frame).
- `local_entropy`: the same for the local non-local read over the T x h x w window positions.
- `local_past_mass`: attention mass the non-local read puts on the previous frames of the window
  (0 = it only looks at the current frame).
- `local_share`: |W(read)| / (|P(h)| + |W(read)|), the non-local branch's share of ELM's output.

`RecordingPolicy` is the active policy that also records each frame's representativeness r and
descriptor; `admit_sweep` replays the rule (r > alpha and s < beta, s = -distance to the last
admitted frame) offline for a grid of (alpha, beta) and gives the admission rate of each. The
replay is exact for the recorded r, which come from one pass with the configured policy (a
different bank would change the predictions, and r, slightly).
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from dmnet_core.model.global_memory import (
    ActivePolicy,
    MemoryBank,
    MemoryEntry,
    attention_weights,
    descriptor_distance,
    memory_cells,
)

__all__ = ['MemoryProbe', 'RecordingPolicy', 'admit_sweep', 'attention_stats', 'probe_segmenter',
           'shadowed']


@contextmanager
def shadowed(owner: object, name: str, replacement: object) -> Iterator[None]:
    """`owner.name` is `replacement` inside the block, as it was after it.

    For a call no hook sees: a method that is not a module's forward (set on one instance, the
    class is untouched) or a module-level function another module looks up at call time.
    """
    own = vars(owner)
    had, saved = name in own, own.get(name)
    setattr(owner, name, replacement)
    try:
        yield
    finally:
        if had:
            setattr(owner, name, saved)
        else:
            delattr(owner, name)


def attention_stats(q_k: torch.Tensor, mem_k: torch.Tensor, mem_v: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The read `attention_read` computes, with its weights exposed.

    Args:
        q_k: B x Ck x H x W query keys.
        mem_k: B x N x Ck x h x w memory keys.
        mem_v: B x N x Cv x h x w memory values.

    Returns:
        (read B x Cv x H x W, normalised entropy B, attention mass per memory frame B x N).
    """
    b, _, h, w = q_k.shape
    n = mem_k.shape[1]
    attn = attention_weights(q_k, mem_k)                                   # B x HW x NHW
    v = memory_cells(mem_v).float()                                        # B x NHW x Cv
    positions = attn.shape[-1]
    ent = -(attn * attn.clamp_min(1e-12).log()).sum(-1).mean(-1)           # B
    ent = ent / math.log(positions) if positions > 1 else torch.zeros_like(ent)
    per_frame = attn.unflatten(-1, (n, -1)).sum(-1).mean(1)                # B x N
    read = (attn @ v).transpose(1, 2).reshape(b, -1, h, w)
    return read, ent, per_frame


def _share(a: torch.Tensor, b: torch.Tensor) -> float:
    na, nb = float(a.float().norm()), float(b.float().norm())
    return na / (na + nb) if na + nb > 0 else float('nan')


@dataclass
class ProbeRecords:
    """Per-read values collected by `MemoryProbe` (one entry per frame and read)."""

    global_entropy: list[float] = field(default_factory=list)
    global_share: list[float] = field(default_factory=list)
    global_self_reads: int = 0
    local_entropy: list[float] = field(default_factory=list)
    local_past_mass: list[float] = field(default_factory=list)
    local_share: list[float] = field(default_factory=list)

    def summary(self) -> dict:
        """Mean of each record (None when never read) and the read counts."""
        def mean(v: list[float]) -> float | None:
            return float(np.mean(v)) if v else None
        return {
            'global_entropy': mean(self.global_entropy),
            'global_share': mean(self.global_share),
            'global_bank_reads': len(self.global_entropy),
            'global_self_reads': self.global_self_reads,
            'local_entropy': mean(self.local_entropy),
            'local_past_mass': mean(self.local_past_mass),
            'local_share': mean(self.local_share),
            'local_reads': len(self.local_entropy),
        }


class MemoryProbe:
    """Forward hooks on a DMNet's memory modules; see the module docstring for the records.

    Use as a context manager around `Segmenter.step` calls:

        with MemoryProbe(seg.model) as probe:
            for frame in frames: seg.step(frame)
        probe.records.summary()
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.records = ProbeRecords()
        self._stack = ExitStack()

    def __enter__(self) -> MemoryProbe:
        reader = getattr(self.model, 'global_memory', None)
        if reader is not None:
            self._stack.callback(reader.register_forward_hook(self._global).remove)
        if getattr(self.model, 'local_memory', None) is not None:
            self._stack.callback(
                self.model.local_memory.register_forward_hook(self._local).remove)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    @torch.no_grad()
    def _global(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        query, mem_k, mem_v = args[:3]
        q_k, q_v = module.key_value(query)
        if mem_k is None or mem_v is None:
            self.records.global_self_reads += 1
            return
        read, ent, _ = attention_stats(q_k, mem_k, mem_v)
        self.records.global_entropy.append(float(ent.mean()))
        self.records.global_share.append(_share(read, q_v))

    @torch.no_grad()
    def _local(self, module: nn.Module, args: tuple, output: tuple) -> None:
        _, state = output
        keys, values = torch.stack(state.keys, 1), torch.stack(state.values, 1)
        read, ent, per_frame = attention_stats(module.ask(state), keys, values)
        self.records.local_entropy.append(float(ent.mean()))
        # The current frame is the last of the window.
        self.records.local_past_mass.append(float(per_frame[:, :-1].sum(1).mean()))
        self.records.local_share.append(_share(module.out(read), module.out_proj(state.h)))


class RecordingPolicy(ActivePolicy):
    """The active policy, recording (frame, r, descriptor) of every frame it is offered."""

    def __init__(self, alpha: float, beta: float, eviction: str = 'redundant') -> None:
        super().__init__(alpha, beta, eviction)
        self.records: list[tuple[int, float, torch.Tensor]] = []
        self._descriptor: torch.Tensor | None = None

    def similarity(self, descriptor: torch.Tensor, bank: MemoryBank) -> float:
        self._descriptor = descriptor.detach().float().cpu()
        return super().similarity(descriptor, bank)

    def admit(self, frame: int, r: float, s: float) -> bool:
        self.records.append((frame, float(r), self._descriptor))
        return super().admit(frame, r, s)


def admit_sweep(sequences: Sequence[Sequence[tuple[int, float, torch.Tensor]]],
                alphas: Sequence[float], betas: Sequence[float]) -> list[dict]:
    """Admission rate of the active rule for each (alpha, beta), replayed on recorded frames.

    Args:
        sequences: per video, the (frame, r, descriptor) records of `RecordingPolicy`, in order.
        alphas: representativeness thresholds (r = -mean entropy in nats, so alpha <= 0).
        betas: similarity thresholds (s = -descriptor distance, in [-2, 0]).

    Returns:
        One dict per (alpha, beta): `alpha`, `beta`, `admitted`, `frames`, `admit_rate`.
    """
    frames = sum(len(s) for s in sequences)
    out = []
    for alpha in alphas:
        for beta in betas:
            policy = ActivePolicy(alpha, beta)
            admitted = 0
            for seq in sequences:
                bank = MemoryBank()
                for frame, r, d in seq:
                    if policy.admit(frame, r, policy.similarity(d, bank)):
                        admitted += 1
                        # Only the newest entry matters to the rule; keys are not needed.
                        bank.entries[:] = [MemoryEntry(torch.empty(0), torch.empty(0), d, frame)]
            out.append({'alpha': alpha, 'beta': beta, 'admitted': admitted, 'frames': frames,
                        'admit_rate': admitted / frames if frames else None})
    return out


def score_distributions(sequences: Sequence[Sequence[tuple[int, float, torch.Tensor]]]
                        ) -> dict:
    """Percentiles (5, 25, 50, 75, 95) of r and of s between consecutive frames: where to put
    alpha and beta."""
    r = [x[1] for seq in sequences for x in seq]
    s = [-descriptor_distance(a[2], b[2]) for seq in sequences for a, b in zip(seq, seq[1:])]
    q = (5, 25, 50, 75, 95)

    def pct(v: list[float]) -> dict | None:
        return {f'p{p}': float(x) for p, x in zip(q, np.percentile(v, q))} if v else None
    return {'r': pct(r), 's_consecutive': pct(s)}


@contextmanager
def probe_segmenter(segmenter: object) -> Iterator[tuple[MemoryProbe, RecordingPolicy | None]]:
    """Probe a Segmenter's reads and, with the active policy, record what it is offered.

    Yields (probe, recording policy or None); the Segmenter's own policy is restored after.
    """
    own = segmenter.policy
    recorder = None
    if isinstance(own, ActivePolicy):
        recorder = RecordingPolicy(own.alpha, own.beta, own.eviction)
        segmenter.policy = recorder
    try:
        with MemoryProbe(segmenter.model) as probe:
            yield probe, recorder
    finally:
        segmenter.policy = own
