"""Label propagation: the memories' own reads carry the stored predictions' types forward.

The memory reads attend from each 1/32 cell of the current frame to the cells of remembered
frames. Label propagation (as in self-supervised video object segmentation) reads, through the
same attention weights, what those frames were predicted to be, and uses it as a prior over the
instrument types; no weights are added. Legend: `A` attention B x HW x M over M remembered
cells; `S` those cells' class shares B x M x K (class 0 = background); `pi` the prior over the
T = K - 1 instrument types, B x T x h x w.

Why: the paper's memories store features, and what a memory frame was predicted to be stays a
small part of them, so a look-alike instrument named right a few frames ago is not named right
now. Voting over the right cells is what the memories can add (the memory ablation,
experiments/memory_ablation/README.md, measures it).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dmnet_core.model.global_memory import memory_cells

# Instrument mass that pulls a prior towards uniform: a read that found little votes little.
EPS = 0.02


@dataclass
class MemoryLabels:
    """What the memories were predicted to be, beside their keys/values.

    local: class shares of the ELM window's previous frames, B x M x K x h x w (oldest first;
        the M newest previous frames are used), or None.
    global_: class shares of the bank frames being read, B x N x K x h x w (same order as the
        keys), or None.
    gamma: weight of the prior (0: off).
    """

    local: torch.Tensor | None
    global_: torch.Tensor | None
    gamma: float


def cells(shares: torch.Tensor) -> torch.Tensor:
    """B x N x K x h x w -> B x Nhw x K, in the order `attention_weights` uses."""
    return memory_cells(shares).float()


def type_prior(reads: list[tuple[torch.Tensor, torch.Tensor]], size: tuple[int, int]
               ) -> torch.Tensor | None:
    """Prior over the instrument types from one or more reads.

    Args:
        reads: (A B x hw x M, S B x M x K) pairs; their instrument mass is summed, so each memory
            counts by how much instrument its read found.
        size: (h, w) of the query grid.

    Returns:
        pi, B x (K-1) x h x w, each cell a distribution; None without reads.
    """
    if not reads:
        return None
    votes = sum(a @ s[..., 1:] for a, s in reads)                     # B x hw x T
    types = votes.shape[-1]
    pi = (votes + EPS / types) / (votes.sum(-1, keepdim=True) + EPS)
    return pi.transpose(1, 2).reshape(pi.shape[0], types, *size)


def apply_type_prior(logits: torch.Tensor, prior: torch.Tensor, gamma: float) -> torch.Tensor:
    """Rename, never find: keep p(background), split the rest among types as p_t pi_t^gamma.

    Args:
        logits: B x K x H x W.
        prior: B x (K-1) x h x w (bilinearly resized to H x W).
        gamma: the prior's weight (0 returns `logits`).

    Returns:
        log-probabilities B x K x H x W (argmax and softmax as for logits).
    """
    if gamma == 0 or logits.shape[1] < 3:        # binary: one type, nothing to rename
        return logits
    logp = F.log_softmax(logits.float(), dim=1)
    log_pi = torch.log(F.interpolate(prior, size=logits.shape[-2:], mode='bilinear',
                                     align_corners=False).clamp_min(1e-12))
    types = logp[:, 1:] + gamma * log_pi
    # log p(instrument) + log p(type | instrument), the latter renormalised with the prior.
    types = torch.logsumexp(logp[:, 1:], 1, keepdim=True) + types - torch.logsumexp(types, 1,
                                                                                    keepdim=True)
    out = torch.cat([logp[:, :1], types], dim=1).to(logits.dtype)
    # Keep the decoder's layout: a channels-last argmax over K is several times faster on a CPU.
    if logits.is_contiguous(memory_format=torch.channels_last):
        out = out.contiguous(memory_format=torch.channels_last)
    return out
