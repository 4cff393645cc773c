"""Checks before training starts: the training values, the dataset's splits and classes.

Every error names the bad key, file or value.
"""
from __future__ import annotations

from pathlib import Path

from dmnet_core.config import ExperimentConfig
from dmnet_core.data import layout


def validate_config(exp: ExperimentConfig) -> None:
    """Check the training values; errors name the key."""
    t, d = exp.train, exp.data
    checks = [
        (t.epochs >= 1, f'train.epochs must be >= 1, got {t.epochs}'),
        (t.iters_per_epoch >= 1, f'train.iters_per_epoch must be >= 1, got {t.iters_per_epoch}'),
        (t.batch_size >= 1, f'train.batch_size must be >= 1, got {t.batch_size}'),
        (t.lr > 0, f'train.lr must be > 0, got {t.lr}'),
        (t.warmup_iters >= 0, f'train.warmup_iters must be >= 0, got {t.warmup_iters}'),
        (t.schedule in ('cosine', 'poly'),
         f"train.schedule {t.schedule!r} not in ('cosine', 'poly')"),
        (0 <= t.min_lr_ratio <= 1, f'train.min_lr_ratio must be in [0, 1], got {t.min_lr_ratio}'),
        (0 <= t.ema_decay < 1, f'train.ema_decay must be in [0, 1), got {t.ema_decay}'),
        (all(w >= 0 for w in t.part_weights) and (not t.part_weights or sum(t.part_weights) > 0),
         f'train.part_weights must be >= 0 and not all 0, got {t.part_weights}'),
        (t.dice_weight >= 0, f'train.dice_weight must be >= 0, got {t.dice_weight}'),
        (t.amp_dtype in ('bf16', 'fp16'), f'train.amp_dtype {t.amp_dtype!r} not in bf16/fp16'),
        (t.log in ('csv', 'tensorboard'), f"train.log {t.log!r} not in ('csv', 'tensorboard')"),
        (t.val_max_frames >= 0, f'train.val_max_frames must be >= 0, got {t.val_max_frames}'),
        (t.save_every >= 0, f'train.save_every must be >= 0, got {t.save_every}'),
        (d.clip_len >= 1, f'data.clip_len must be >= 1, got {d.clip_len}'),
        (d.n_global >= 0, f'data.n_global must be >= 0, got {d.n_global}'),
        (len(d.crop) == 2 and all(c > 0 and c % 32 == 0 for c in d.crop),
         f'data.crop {d.crop} must be two positive multiples of 32'),
        (bool(d.root), 'data.root is empty: give --data DIR or data.root in the YAML'),
        (d.video_weight >= 0, f'data.video_weight must be >= 0, got {d.video_weight}'),
        (all(s.weight >= 0 for s in d.stills),
         f'data.stills weights must be >= 0, got {[s.weight for s in d.stills]}'),
        (d.video_weight > 0 or any(s.weight > 0 for s in d.stills),
         'data.video_weight and every data.stills weight are 0: nothing to train on'),
        (all(s.root for s in d.stills), 'data.stills: every source needs a root folder'),
        (not t.init_from_binary or t.init_checkpoint,
         'train.init_from_binary needs a binary checkpoint: train.init_checkpoint or --init'),
        (not (d.stills and t.part_weights),
         'train.part_weights need parts masks, which data.stills do not have'),
    ]
    for ok, msg in checks:
        if not ok:
            raise ValueError(msg)
    exp.model.validate()
    d.still_motion.validate()


def check_split(root: str | Path, split: str, task: str) -> list[layout.Sequence]:
    """Every frame of the split has its mask for `task`; errors name the missing file."""
    seqs = layout.list_sequences(root, split)
    if not seqs:
        raise ValueError(f'{Path(root) / layout.META_FILE}: split {split!r} has no sequences')
    for seq in seqs:
        frames = seq.frames()
        if not frames:
            raise FileNotFoundError(f'no frames in {seq.path / layout.IMAGE_DIR}')
        for frame in frames:
            mask = seq.mask_path(frame, task)
            if not mask.is_file():
                raise FileNotFoundError(f'mask not found: {mask} (for image {frame})')
    return seqs


def check_classes(root: str | Path, exp: ExperimentConfig) -> None:
    """The dataset's class list for the model's task must have the model's class count."""
    meta = layout.read_meta(root)
    if exp.train.part_weights:
        parts = meta.classes.get('parts')
        if parts is None:
            raise ValueError(f'{Path(root) / layout.META_FILE}: train.part_weights needs the '
                             f"data set's 'parts' masks; it has {sorted(meta.classes)}")
        if len(parts) != len(exp.train.part_weights):
            raise ValueError(f'train.part_weights has {len(exp.train.part_weights)} values, '
                             f'the data set has {len(parts)} parts classes {parts}')
    names = meta.classes.get(exp.model.task)
    if names is not None and len(names) != exp.model.num_classes:
        raise ValueError(f'{Path(root) / layout.META_FILE}: task {exp.model.task!r} has '
                         f'{len(names)} classes {names}, model.class_names has '
                         f'{exp.model.num_classes} {exp.model.class_names}')
