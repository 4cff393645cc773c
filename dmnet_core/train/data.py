"""What the trainer reads: checked dataset splits, the clip dataset, and the epoch sampler."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from dmnet_core.config import ExperimentConfig
from dmnet_core.train.distributed import Dist


class EpochSampler(torch.utils.data.Sampler[int]):
    """Clip indices for one epoch: `iters * batch` per rank, a pure function of (seed, epoch).

    Like `DistributedSampler`, ranks take disjoint shards of one seeded order; unlike it, an
    epoch has a fixed number of iterations (datasets may be smaller or larger than that) and
    can start at an iteration offset, which is what an exact resume needs.
    """

    def __init__(self, n_items: int, iters: int, batch_size: int, seed: int, epoch: int,
                 dist_info: Dist, start_iter: int = 0) -> None:
        if n_items < 1:
            raise ValueError('the training split has no clips')
        self.n_items, self.iters, self.batch = n_items, iters, batch_size
        self.seed, self.epoch, self.dist, self.start = seed, epoch, dist_info, start_iter

    def indices(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        need = self.iters * self.batch * self.dist.world
        order: list[int] = []
        while len(order) < need:             # chain fresh permutations
            order += torch.randperm(self.n_items, generator=g).tolist()
        mine = order[:need][self.dist.rank::self.dist.world]
        return mine[self.start * self.batch:]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices())

    def __len__(self) -> int:
        return (self.iters - self.start) * self.batch


def build_dataset(exp: ExperimentConfig, dist_info: Dist) -> Any:
    """The training clip dataset: data.root's video clips (`dmnet_core.data.clips.ClipDataset`),
    mixed by weight with clips made from real stills (`dmnet_core.data.stills`) when
    `data.stills` names any."""
    from dmnet_core.data.clips import ClipDataset
    d = exp.data
    sources, weights = [], []
    if d.video_weight > 0 or not d.stills:
        sources.append(ClipDataset(
            d.root, d.train_split, exp.model.task, clip_len=d.clip_len,
            # Drawn even for a model without global memory (which ignores them): the same
            # clips and augmentations for every ablation variant.
            n_global=d.n_global, crop=tuple(d.crop), augment=d.augment, seed=exp.train.seed,
            aug=d.augmentation, weight_task='parts' if exp.train.part_weights else None))
        weights.append(d.video_weight)
    if not d.stills:
        return sources[0]
    from dmnet_core.data.stills import MixedClips, StillClipDataset
    from dmnet_core.train.objective import ANY_FOREGROUND
    # A multi-class model learns from a still's binary mask only whether a pixel is instrument.
    foreground = 1 if exp.model.task == 'binary' else ANY_FOREGROUND
    for src in d.stills:
        sources.append(StillClipDataset(src.root, d.clip_len, d.n_global, d.crop,
                                        motion=d.still_motion,
                                        aug=d.augmentation if d.augment else None,
                                        seed=exp.train.seed, foreground=foreground))
        weights.append(src.weight)
    return MixedClips(sources, weights, seed=exp.train.seed)
