"""An exponential moving average of the weights, validated and saved in place of the raw ones.

Short CPU runs on a few validation sequences pick their checkpoint from a val score that swings
by 0.1-0.3 between epochs (the memory ablation's runs): the chosen epoch is partly luck.
Averaging the weights over the last few hundred steps smooths that out (as timm's ModelEma
does); the optimizer keeps training the raw weights, which live on in the resume state.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

EMA_PREFIX = 'ema.'


class WeightAverage:
    """EMA of every float tensor of a model's state dict (parameters and BN statistics).

    The decay warms up as min(decay, (1 + n) / (10 + n)) after n updates, so early averages
    are not dominated by the starting weights. Integer buffers (BN step counts) are copied.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f'EMA decay must be in (0, 1), got {decay}')
        self.decay = decay
        self.updates = 0
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def current_decay(self) -> float:
        """The decay of the latest update."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        for k, v in model.state_dict().items():
            avg = self.state[k]
            if avg.is_floating_point():
                avg.lerp_(v.detach(), 1.0 - d)
            else:
                avg.copy_(v)

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """The model holds the averaged weights inside the block, its own ones after."""
        own = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.state)
        try:
            yield model
        finally:
            model.load_state_dict(own)

    def tensors(self) -> dict[str, torch.Tensor]:
        """For the resume state: `ema.<key>` -> CPU tensor."""
        return {EMA_PREFIX + k: v.detach().cpu().contiguous().clone()
                for k, v in self.state.items()}

    def load(self, tensors: dict[str, torch.Tensor], updates: int) -> bool:
        """Restore from resume tensors; False (state untouched) when they hold no average."""
        saved = {k[len(EMA_PREFIX):]: v for k, v in tensors.items() if k.startswith(EMA_PREFIX)}
        if not saved:
            return False
        if set(saved) != set(self.state):
            raise ValueError('resume state: the weight average does not match the model '
                             f'({len(saved)} tensors saved, {len(self.state)} in the model)')
        for k, v in saved.items():
            self.state[k].copy_(v)
        self.updates = int(updates)
        return True
