"""Loss, learning-rate schedule, optimizer parameter groups and the training-value checks."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = 255
# Target of a pixel known to be some instrument but not which class: a real still's binary mask
# in a multi-class (parts, type) run. Its loss is on P(any foreground) = 1 - P(background).
ANY_FOREGROUND = 254


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor,
                   per_frame: bool = False) -> torch.Tensor:
    """1 - mean soft Dice over the foreground classes present.

    With `per_frame` the Dice is taken per frame and class and averaged over the (frame, class)
    pairs where the class is present, as the per-frame Dice metric weighs a frame with a small
    tool like one with a large one; otherwise the batch's pixels are pooled per class.
    Frames with ANY_FOREGROUND pixels add one more term, the Dice of P(any foreground) against
    every foreground pixel; their ANY_FOREGROUND pixels are left out of the class terms.

    Args:
        logits: N x K x H x W.
        target: N x H x W class ids (IGNORE_INDEX pixels left out).
    """
    k = logits.shape[1]
    dims = (2, 3) if per_frame else (0, 2, 3)
    probs = logits.float().softmax(1)
    anyfg = target == ANY_FOREGROUND
    valid = ((target != IGNORE_INDEX) & ~anyfg).unsqueeze(1)        # N x 1 x H x W
    onehot = F.one_hot(target.clamp(0, k - 1), k).permute(0, 3, 1, 2) * valid
    area = onehot.sum(dims)                                          # N x K or K
    dice = _soft_dice(probs * valid, onehot, dims)
    terms = [dice[..., 1:][area[..., 1:] > 0]]
    if anyfg.any():
        frames = anyfg.flatten(1).any(1)                             # N
        known = (target[frames] != IGNORE_INDEX).unsqueeze(1)        # n x 1 x H x W
        fg_p = (1 - probs[frames, :1]) * known
        fg_t = (target[frames] != 0).unsqueeze(1) & known
        terms.append(_soft_dice(fg_p, fg_t, dims).reshape(-1))
    fg = torch.cat(terms)
    return 1.0 - fg.mean() if fg.numel() else logits.sum() * 0.0


def _soft_dice(p: torch.Tensor, t: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Smoothed soft Dice of probabilities `p` against 0/1 `t`, summed over `dims`."""
    return (2 * (p * t).sum(dims) + 1.0) / (p.sum(dims) + t.sum(dims) + 1.0)


def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pixel cross-entropy, where an ANY_FOREGROUND pixel costs -log P(any foreground)
    (IGNORE_INDEX pixels left out); without such pixels, `F.cross_entropy`.

    Args:
        logits: N x K x H x W.
        target: N x H x W class ids.
    """
    anyfg = target == ANY_FOREGROUND
    if not anyfg.any():
        return F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)
    ce = F.cross_entropy(logits, target.masked_fill(anyfg, IGNORE_INDEX),
                         ignore_index=IGNORE_INDEX, reduction='none')
    # -log(1 - p_bg) = logsumexp(all logits) - logsumexp(foreground logits)
    ce = ce + anyfg * (logits.logsumexp(1) - logits[:, 1:].logsumexp(1))
    n = (target != IGNORE_INDEX).sum().clamp_min(1)
    return ce.sum() / n


def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                           weight: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged with a weight per pixel (IGNORE_INDEX pixels left out).

    Args:
        logits: N x K x H x W.
        target: N x H x W class ids.
        weight: N x H x W, >= 0 (e.g. a weight per instrument part).
    """
    weight = weight * (target != IGNORE_INDEX)
    ce = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction='none')
    return (ce * weight).sum() / weight.sum().clamp_min(1e-6)


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
