"""Light-Weight RefineNet decoder (Nekrasov et al., BMVC 2018), as the DMNet authors use it.

From the 1/32 bottleneck to 1/4: chained residual pooling (CRP), a 1x1 adapter, bilinear upsampling,
then the sum with 1x1-projected skips of the next scale and a ReLU6; a 3x3 class head at 1/4.
All convolutions are bias-free 1x1 at width `C` except the head; no normalisation layers.

`FineStage` optionally carries the output on to 1/2 with the encoder's 1/2 feature: at 256x384 a
1/4 logit covers ~8x8 pixels of an 854x480 frame, wider than a grasper's jaw or a hook's tip.
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


class FineStage(nn.Module):
    """Stride-2 refinement: a logit correction at 1/2 added to the upsampled 1/4 logits.

    The decoder's 1/4 features (reduced to `width`) are upsampled and summed with the projected
    1/2 skip, mixed by a depthwise-separable 3x3, and a 3x3 head gives the correction. The head
    starts at zero, so a stride-4 model given this stage starts with its own output (up to the
    order of two bilinear resizes) and the stage learns only the residual detail.

    Args:
        skip_channels: channels of the encoder's 1/2 feature.
        channels: C, the decoder width at 1/4.
        num_classes: K.
        width: channels at 1/2 (kept narrow: the 1/2 grid has 4x the 1/4 grid's cells).
    """

    def __init__(self, skip_channels: int, channels: int, num_classes: int,
                 width: int = 32) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, width, 1, bias=False)
        self.lateral = nn.Conv2d(skip_channels, width, 1, bias=False)
        self.mix = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, groups=width, bias=False),
            nn.Conv2d(width, width, 1, bias=False), nn.ReLU6())
        self.head = nn.Conv2d(width, num_classes, 3, padding=1, bias=True)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor, logits: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        """x B x C x H/4 x W/4, logits B x K x H/4 x W/4, f2 B x c x H/2 x W/2
        -> logits B x K x H/2 x W/2."""
        size = f2.shape[-2:]
        y = F.interpolate(self.reduce(x), size=size, mode='bilinear', align_corners=False)
        y = self.mix(F.relu6(y + self.lateral(f2)))
        up = F.interpolate(logits, size=size, mode='bilinear', align_corners=False)
        return up + self.head(y)


class RefineDecoder(nn.Module):
    """Light-Weight RefineNet over a bottleneck and grouped skips.

    Args:
        skip_groups: channels of the skips per scale, finest first (the encoder's `skip_groups`).
        channels: C, the decoder width (the bottleneck has C channels already).
        num_classes: output classes.
        crp_stages: pooling stages per CRP block (4 in the authors' code).
        fine_channels: channels of the encoder's 1/2 feature, which then leads the skips, for
            logits at 1/2 (`FineStage`); None: logits at 1/4, as the authors'.
    """

    def __init__(self, skip_groups: list[list[int]], channels: int, num_classes: int,
                 crp_stages: int = 4, fine_channels: int | None = None) -> None:
        super().__init__()
        self.fine = (FineStage(fine_channels, channels, num_classes)
                     if fine_channels is not None else None)
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
        """Skips (flat, finest first) and f32 B x C x H/32 x W/32 -> logits B x K x H/4 x W/4
        (H/2 x W/2 with the fine stage, whose 1/2 skip comes first)."""
        f2 = None
        if self.fine is not None:
            f2, skips = skips[0], skips[1:]
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
        logits = self.head(x)
        return logits if self.fine is None else self.fine(x, logits, f2)
