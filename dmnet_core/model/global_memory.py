"""Active Global Memory (AGM): readout, bank (store), and selection policies, kept separate.

Legend: `k`/`v` are key/value maps of one frame at 1/32 (B x Ck x h x w, B x Cv x h x w);
`mem_k`/`mem_v` stack N memory frames (B x N x Ck x h x w); a descriptor `d` is one frame's
pooled, centred, unit-norm bottleneck (B x D) used for similarity.

- `attention_read` is the pure space-time-memory readout (also used by the local non-local block).
- `GlobalMemoryReader` holds the learnt key/value projections and fuses a read with the query.
- `MemoryBank` only stores per-frame tensors; it never decides anything.
- `ActivePolicy`, `RecentPolicy`, `UniformPolicy` decide admission and eviction; `ReadSampler`
  decides which n stored frames a read uses. `update_bank` applies a policy to a bank.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def memory_cells(mem: torch.Tensor) -> torch.Tensor:
    """B x N x C x h x w -> B x Nhw x C: every memory cell a row, in the order the reads use."""
    b, _, c = mem.shape[:3]
    return mem.permute(0, 1, 3, 4, 2).reshape(b, -1, c)


def attention_read(q_k: torch.Tensor, mem_k: torch.Tensor, mem_v: torch.Tensor) -> torch.Tensor:
    """Scaled dot-product read of memory values at every query position.

    Each query position attends over all N x h x w memory positions: softmax(q k^T / sqrt(Ck)) v.

    Args:
        q_k: query keys, B x Ck x H x W.
        mem_k: memory keys, B x N x Ck x h x w.
        mem_v: memory values, B x N x Cv x h x w.

    Returns:
        B x Cv x H x W.
    """
    b, _, h, w = q_k.shape
    q = q_k.flatten(2).transpose(1, 2)                                # B x HW x Ck
    out = F.scaled_dot_product_attention(q, memory_cells(mem_k), memory_cells(mem_v))
    return out.transpose(1, 2).reshape(b, mem_v.shape[2], h, w)      # from B x HW x Cv


def attention_weights(q_k: torch.Tensor, mem_k: torch.Tensor) -> torch.Tensor:
    """The weights `attention_read` reads with: B x Ck x H x W, B x N x Ck x h x w ->
    B x HW x Nhw, each row a softmax (q k^T / sqrt(Ck)), in float32.

    Label propagation and the diagnostics need the weights themselves; the read keeps the fused
    SDPA kernel, so a frame with label propagation computes them twice (tiny at 1/32).
    """
    q = q_k.flatten(2).transpose(1, 2).float()                        # B x HW x Ck
    k = memory_cells(mem_k).float()                                   # B x Nhw x Ck
    return torch.softmax(q @ k.transpose(1, 2) / math.sqrt(q_k.shape[1]), dim=-1)


class GlobalMemoryReader(nn.Module):
    """Key/value projections (3x3 convs) and the read fused with the query's own value.

    Args:
        channels: C, the bottleneck width (input and output).
        key_channels: Ck (authors: C/4).
        value_channels: Cv (authors: C/2, so that [read, query value] has C channels).
    """

    def __init__(self, channels: int, key_channels: int, value_channels: int) -> None:
        super().__init__()
        self.key = nn.Conv2d(channels, key_channels, 3, padding=1)
        self.value = nn.Conv2d(channels, value_channels, 3, padding=1)
        # Only needed when 2*Cv != C; with the authors' sizes the concatenation is already C wide.
        self.proj = (nn.Identity() if 2 * value_channels == channels
                     else nn.Conv2d(2 * value_channels, channels, 1))

    def key_value(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """B x C x h x w -> (key B x Ck x h x w, value B x Cv x h x w): features only, as the
        paper stores them."""
        return self.key(f), self.value(f)

    def forward(self, query: torch.Tensor, mem_k: torch.Tensor | None,
                mem_v: torch.Tensor | None) -> torch.Tensor:
        """Read the memory for `query` (B x C x h x w) and return B x C x h x w.

        With no memory (empty bank, or no global frames in training) the query reads itself, so the
        output keeps the same distribution as with a memory instead of a zero read.
        """
        q_k, q_v = self.key_value(query)
        if mem_k is None or mem_v is None:
            mem_k, mem_v = q_k.unsqueeze(1), q_v.unsqueeze(1)
        read = attention_read(q_k, mem_k, mem_v)
        return self.proj(torch.cat([read, q_v], dim=1))

    def read_weights(self, query: torch.Tensor, mem_k: torch.Tensor) -> torch.Tensor:
        """The attention `forward` reads `mem_k` (B x N x Ck x h x w) with: B x hw x Nhw."""
        return attention_weights(self.key(query), mem_k)


def class_shares(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Softmax of B x K x h' x w' logits, area-averaged to B x K x size: each class's share."""
    return F.adaptive_avg_pool2d(torch.softmax(logits.float(), dim=1), size)


# ---------------------------------------------------------------- scores used by the policy

def representativeness(logits: torch.Tensor) -> torch.Tensor:
    """r = -mean pixel entropy (nats) of softmax(logits): B x K x h x w -> B (confident = high)."""
    logp = F.log_softmax(logits.float(), dim=1)
    entropy = -(logp.exp() * logp).sum(dim=1)          # B x h x w
    return -entropy.flatten(1).mean(dim=1)


def frame_descriptor(f32: torch.Tensor, grid: int = 4) -> torch.Tensor:
    """Pooled, centred, unit-norm descriptor of a bottleneck: B x C x h x w -> B x D.

    Average pooling to at most grid x grid keeps coarse layout (where the instruments are);
    centring and L2 normalisation make the Euclidean distance between two descriptors
    sqrt(2 - 2 rho), rho their correlation: 0 for identical frames, 2 at most, independent of
    the feature scale. This is what `beta` is compared with (s = -distance).
    """
    h, w = f32.shape[-2:]
    d = F.adaptive_avg_pool2d(f32.float(), (min(grid, h), min(grid, w))).flatten(1)
    d = d - d.mean(dim=1, keepdim=True)
    return F.normalize(d, dim=1)


def descriptor_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Euclidean distance between two D-dimensional descriptors."""
    return float(torch.linalg.vector_norm(a.float() - b.float()))


# ---------------------------------------------------------------- the store

@dataclass
class MemoryEntry:
    """One stored frame: its cached key/value (never recomputed), descriptor and frame index."""

    key: torch.Tensor          # 1 x Ck x h x w
    value: torch.Tensor        # 1 x Cv x h x w
    descriptor: torch.Tensor   # D
    frame: int
    shares: torch.Tensor | None = None   # 1 x K x h x w class shares of its prediction


@dataclass
class MemoryBank:
    """A list of stored frames, oldest first. It stores and gathers; policies decide."""

    entries: list[MemoryEntry] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, entry: MemoryEntry) -> None:
        self.entries.append(entry)

    def remove(self, indices: list[int]) -> None:
        for i in sorted(set(indices), reverse=True):
            del self.entries[i]

    def clear(self) -> None:
        self.entries.clear()

    @property
    def frames(self) -> list[int]:
        return [e.frame for e in self.entries]

    def newest(self) -> MemoryEntry | None:
        return self.entries[-1] if self.entries else None

    def gather(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Stack the chosen entries: (B x N x Ck x h x w, B x N x Cv x h x w)."""
        keys = torch.stack([self.entries[i].key for i in indices], dim=1)
        values = torch.stack([self.entries[i].value for i in indices], dim=1)
        return keys, values

    def gather_shares(self, indices: list[int]) -> torch.Tensor | None:
        """The chosen entries' class shares, B x N x K x h x w; None if any has none."""
        shares = [self.entries[i].shares for i in indices]
        return None if any(s is None for s in shares) else torch.stack(shares, dim=1)


# ---------------------------------------------------------------- policies

class ReadSampler:
    """Which n of the M stored frames a read uses; its cost never grows with the video.

    Args:
        mode: 'spread' (evenly over the bank, oldest and newest included; deterministic),
            'latest' (the n newest) or 'random' (n distinct, seeded; `reset` reseeds).
        n: frames per read.
        seed: seed of the 'random' mode.
    """

    def __init__(self, mode: str, n: int, seed: int = 0) -> None:
        if mode not in ('spread', 'latest', 'random'):
            raise ValueError(f'read sampling {mode!r} not in spread/latest/random')
        self.mode, self.n, self.seed = mode, n, seed
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def indices(self, size: int) -> list[int]:
        """Indices into a bank of `size` frames, oldest first."""
        if size <= self.n:
            return list(range(size))
        if self.mode == 'latest' or self.n == 1:
            return list(range(size - self.n, size))
        if self.mode == 'spread':
            return [int(i) for i in np.linspace(0, size - 1, self.n).round()]
        return sorted(int(i) for i in self.rng.choice(size, self.n, replace=False))


class ActivePolicy:
    """The paper's active selection: admit frame t if r > alpha and s < beta.

    r = -mean pixel entropy of the prediction; s = -distance of the frame's descriptor to the most
    recently added one (s = -inf for an empty bank, so the first confident frame always enters).
    At capacity, 'oldest' drops the oldest entry; 'redundant' finds the closest pair among the bank
    and the candidate and drops the older frame of that pair (never the candidate itself).

    Args:
        alpha: representativeness threshold.
        beta: similarity threshold.
        eviction: 'redundant' or 'oldest'.
    """

    needs_scores = True

    def __init__(self, alpha: float, beta: float, eviction: str = 'redundant') -> None:
        if eviction not in ('redundant', 'oldest'):
            raise ValueError(f'eviction {eviction!r} not in redundant/oldest')
        self.alpha, self.beta, self.eviction = alpha, beta, eviction

    def reset(self) -> None:
        """Stateless."""

    def similarity(self, descriptor: torch.Tensor, bank: MemoryBank) -> float:
        newest = bank.newest()
        if newest is None:
            return -math.inf
        return -descriptor_distance(descriptor, newest.descriptor)

    def admit(self, frame: int, r: float, s: float) -> bool:
        return r > self.alpha and s < self.beta

    def evict(self, bank: MemoryBank, descriptor: torch.Tensor) -> list[int]:
        if self.eviction == 'oldest' or len(bank) < 2:
            return [0]
        d = torch.stack([e.descriptor.float() for e in bank.entries] + [descriptor.float()])
        dist = torch.cdist(d, d)                                   # (M+1) x (M+1)
        dist.fill_diagonal_(math.inf)
        i, j = divmod(int(torch.argmin(dist)), dist.shape[1])
        # The candidate is the last row, so min(i, j) is a stored frame: the older of the pair.
        return [min(i, j)]


class RecentPolicy:
    """Ablation: the bank is the most recent `capacity` frames (admit all, evict the oldest)."""

    needs_scores = False

    def reset(self) -> None:
        """Stateless."""

    def admit(self, frame: int, r: float, s: float) -> bool:
        return True

    def evict(self, bank: MemoryBank, descriptor: torch.Tensor) -> list[int]:
        return [0]


class UniformPolicy:
    """Ablation: frames spread uniformly over the whole past within a fixed capacity.

    Admits every `stride`-th frame; when full, drops every second stored frame and doubles the
    stride, so the bank always covers the whole video at an even spacing.

    Args:
        stride: initial admission stride in frames.
    """

    needs_scores = False

    def __init__(self, stride: int) -> None:
        self.initial_stride = max(int(stride), 1)
        self.stride = self.initial_stride

    def reset(self) -> None:
        self.stride = self.initial_stride

    def admit(self, frame: int, r: float, s: float) -> bool:
        return frame % self.stride == 0

    def evict(self, bank: MemoryBank, descriptor: torch.Tensor) -> list[int]:
        drop = list(range(1, len(bank), 2))
        self.stride *= 2
        return drop or [0]


Policy = ActivePolicy | RecentPolicy | UniformPolicy


def build_policy(policy: str, *, alpha: float, beta: float, eviction: str,
                 uniform_stride: int) -> Policy:
    """Build a selection policy by name ('active', 'recent', 'uniform')."""
    if policy == 'active':
        return ActivePolicy(alpha, beta, eviction)
    if policy == 'recent':
        return RecentPolicy()
    if policy == 'uniform':
        return UniformPolicy(uniform_stride)
    raise ValueError(f'global memory policy {policy!r} not in active/recent/uniform')


def update_bank(bank: MemoryBank, policy: Policy, capacity: int, frame: int,
                logits: torch.Tensor, f32: torch.Tensor,
                key_value: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
                shares: torch.Tensor | None = None) -> bool:
    """Offer frame `frame` to the bank after its prediction; return whether it was admitted.

    Args:
        bank: the store (batch size 1).
        policy: decides admission and eviction.
        capacity: most frames the bank may hold.
        frame: the frame index since reset.
        logits: the frame's prediction, 1 x K x h' x w' (any resolution).
        f32: the frame's bottleneck, 1 x C x h x w.
        key_value: f32 -> (key, value); called only for admitted frames, whose key/value is cached.
        shares: the frame's class shares at 1/32 (1 x K x h x w), kept for label propagation.
    """
    descriptor = frame_descriptor(f32)[0]
    if policy.needs_scores:
        r = float(representativeness(logits)[0])
        s = policy.similarity(descriptor, bank)
    else:
        r, s = 0.0, 0.0
    if not policy.admit(frame, r, s):
        return False
    while len(bank) >= capacity:
        bank.remove(policy.evict(bank, descriptor))
    key, value = key_value(f32)
    bank.add(MemoryEntry(key=key, value=value, descriptor=descriptor, frame=frame,
                         shares=shares))
    return True
