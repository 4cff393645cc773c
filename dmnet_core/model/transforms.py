"""Input normalisation shared by the Segmenter, the trainer and the data loaders."""
from __future__ import annotations

import numpy as np
import torch

from dmnet_core.config import ModelConfig


def normalize(images: np.ndarray | torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """Scale to [0, 1] (uint8 only) and standardise with the model's mean/std.

    Layouts: numpy arrays are channels-last (`H x W x 3` or `... x H x W x 3`) and come back
    channels-first (`3 x H x W` or `... x 3 x H x W`); torch tensors are already channels-first
    (`... x 3 x H x W`) and keep their layout and device. Float input is taken to be in [0, 1].

    Args:
        images: uint8 or float images.
        cfg: supplies `mean` and `std` (RGB).

    Returns:
        float32 tensor, channels-first.
    """
    if isinstance(images, np.ndarray):
        if images.ndim < 3 or images.shape[-1] != 3:
            raise ValueError(f'expected ... x H x W x 3 images, got shape {images.shape}')
        x = torch.from_numpy(np.ascontiguousarray(images)).movedim(-1, -3)
    elif isinstance(images, torch.Tensor):
        if images.ndim < 3 or images.shape[-3] != 3:
            raise ValueError(f'expected ... x 3 x H x W images, got shape {tuple(images.shape)}')
        x = images
    else:
        raise ValueError(f'expected a numpy array or torch tensor, got {type(images).__name__}')
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    elif x.is_floating_point():
        x = x.float()
    else:
        raise ValueError(f'expected uint8 or float images, got {x.dtype}')
    mean = torch.tensor(cfg.mean, dtype=torch.float32, device=x.device).view(3, 1, 1)
    std = torch.tensor(cfg.std, dtype=torch.float32, device=x.device).view(3, 1, 1)
    return (x - mean) / std
