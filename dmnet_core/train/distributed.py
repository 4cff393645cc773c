"""This process's place in a (possibly multi-process) run, its device, and per-step seeding.

Multi-GPU: launch with `torchrun --nproc_per_node N -m dmnet_core.cli train ...`; with
`WORLD_SIZE` > 1 the process group is initialised (NCCL on CUDA, gloo on the CPU).
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass
class Dist:
    """This process's place in a (possibly single-process) run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str) -> tuple[Dist, torch.device]:
    """Initialise the process group under torchrun (WORLD_SIZE > 1) and pick this rank's device."""
    world = int(os.environ.get('WORLD_SIZE', '1'))
    rank = int(os.environ.get('RANK', '0'))
    local_rank = int(os.environ.get('LOCAL_RANK', '0'))
    dev = resolve_device(device)
    if world > 1:
        if dev.type == 'cuda':
            dev = torch.device('cuda', local_rank)
            torch.cuda.set_device(dev)
        if not dist.is_initialized():
            dist.init_process_group('nccl' if dev.type == 'cuda' else 'gloo')
    return Dist(rank, world, local_rank), dev


def resolve_device(device: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; an unavailable CUDA request is an error."""
    if device == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f'train.device {device!r} not understood; use auto, cpu, cuda, cuda:N'
                         ) from exc
    if dev.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError(f'train.device {device!r} requested but CUDA is not available here')
    if dev.type not in ('cpu', 'cuda'):
        raise ValueError(f'train.device {device!r} not supported; use auto, cpu, cuda, cuda:N')
    return dev


def seed_everything(seed: int, step: int, rank: int) -> None:
    """Reseed torch, numpy and Python from (seed, step, rank): each iteration is reproducible."""
    s = int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])
    torch.manual_seed(s)
    np.random.seed(s)
    random.seed(s)
