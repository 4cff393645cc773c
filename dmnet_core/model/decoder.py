"""Light-Weight RefineNet decoder (Nekrasov et al., BMVC 2018), as the DMNet authors use it.

From the 1/32 bottleneck to 1/4: chained residual pooling (CRP), a 1x1 adapter, bilinear upsampling,
then the sum with 1x1-projected skips of the next scale and a ReLU6; a 3x3 class head at 1/4.
All convolutions are bias-free 1x1 at width `C` except the head; no normalisation layers.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SeparableMaxPool2d(nn.Module):
    """k x k max pooling, stride 1, 'same' size, as a 1 x k pass then a k x 1 pass.

    The max over a square window is the max over its rows' maxima, and both passes pad with
    -inf as MaxPool2d does, so the values equal `nn.MaxPool2d(k, 1, k // 2)`'s exactly, for
    2k comparisons per position instead of k^2 (CRP's pooling was ~18 % of a CPU step).
    """

    def __init__(self, kernel: int) -> None:
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError(f'kernel must be odd for same-size pooling, got {kernel}')
        self.kernel = kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, p = self.kernel, self.kernel // 2
        return F.max_pool2d(F.max_pool2d(x, (1, k), 1, (0, p)), (k, 1), 1, (p, 0))


class CRPBlock(nn.Module):
    """Chained residual pooling: x + sum_i conv_i(maxpool(... conv_1(maxpool(x))))."""

    def __init__(self, channels: int, stages: int = 4) -> None:
        super().__init__()
        self.pool = SeparableMaxPool2d(5)
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 1, bias=False)
                                   for _ in range(stages))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == 'cpu':
            # CPU max pooling is ~15x faster channels-last (no index bookkeeping); same values.
            x = x.contiguous(memory_format=torch.channels_last)
        top = x
        for conv in self.convs:
            top = conv(self.pool(top))
            x = x + top
        return x


class RefineDecoder(nn.Module):
    """Light-Weight RefineNet over a bottleneck and grouped skips.

    Args:
        skip_groups: channels of the skips per scale, finest first (the encoder's `skip_groups`).
        channels: C, the decoder width (the bottleneck has C channels already).
        num_classes: output classes.
        crp_stages: pooling stages per CRP block (4 in the authors' code).
    """

    def __init__(self, skip_groups: list[list[int]], channels: int, num_classes: int,
                 crp_stages: int = 4) -> None:
        super().__init__()
        self.group_sizes = [len(g) for g in skip_groups]
        coarse_first = list(reversed(skip_groups))
        # One CRP per level: 1/32 then each skip scale (1/16, 1/8, 1/4).
        self.crp = nn.ModuleList(CRPBlock(channels, crp_stages)
                                 for _ in range(len(skip_groups) + 1))
        self.adapt = nn.ModuleList(nn.Conv2d(channels, channels, 1, bias=False)
                                   for _ in skip_groups)
        self.lateral = nn.ModuleList(
            nn.ModuleList(nn.Conv2d(c, channels, 1, bias=False) for c in group)
            for group in coarse_first)
        self.head = nn.Conv2d(channels, num_classes, 3, padding=1, bias=True)
        self.act = nn.ReLU6()

    def forward(self, skips: list[torch.Tensor], f32: torch.Tensor) -> torch.Tensor:
        """Skips (flat, finest first) and f32 B x C x H/32 x W/32 -> logits B x K x H/4 x W/4."""
        groups, i = [], 0
        for n in self.group_sizes:
            groups.append(skips[i:i + n])
            i += n
        x = self.crp[0](f32)
        for level, group in enumerate(reversed(groups)):
            x = self.adapt[level](x)
            x = F.interpolate(x, size=group[0].shape[-2:], mode='bilinear', align_corners=False)
            for lateral, skip in zip(self.lateral[level], group):
                x = x + lateral(skip)
            x = self.crp[level + 1](self.act(x))
        return self.head(x)
