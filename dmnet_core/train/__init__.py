"""`dmnet train`: train DMNet on clips, validate causally each epoch, keep the best model.

One iteration: a batch of clips (T consecutive frames with masks, plus G global frames from the
same video) goes through `forward_clip` (the Segmenter's stage methods with the ConvLSTM state
carried, back-propagated through time); every frame of the clip is supervised with
cross-entropy (+ optional soft Dice). See `loop` for what is written where.

Modules: `loop` (the training loop), `validation` (per-epoch scoring, best model), `stages`
(the authors' staged schedule), `resume` (resume state, fine-tuning weights), `logs` (CSV /
TensorBoard), `objective` (loss, lr schedule), `data` (clip dataset, epoch sampler), `checks`
(config and dataset checks), `distributed` (torchrun, devices, seeding), `cli` (`dmnet train`).
"""
from dmnet_core.train.checks import check_classes, check_split, validate_config
from dmnet_core.train.cli import apply_overrides, register, run
from dmnet_core.train.data import EpochSampler, build_dataset
from dmnet_core.train.distributed import Dist, resolve_device, seed_everything, setup_distributed
from dmnet_core.train.logs import TRAIN_LOG_FIELDS, VAL_LOG_FIELDS, CsvLog, read_log
from dmnet_core.train.loop import ClipForward, train
from dmnet_core.train.objective import (
    ANY_FOREGROUND,
    IGNORE_INDEX,
    cross_entropy,
    lr_factor,
    param_groups,
    soft_dice_loss,
    weighted_cross_entropy,
)
from dmnet_core.train.resume import init_weights, load_resume, restore, save_resume
from dmnet_core.train.stages import STAGE_NAMES, StagePlan, apply_stage, plan_stages

__all__ = [
    'ANY_FOREGROUND', 'IGNORE_INDEX', 'STAGE_NAMES', 'TRAIN_LOG_FIELDS', 'VAL_LOG_FIELDS',
    'ClipForward', 'CsvLog', 'Dist', 'EpochSampler', 'StagePlan', 'apply_overrides', 'apply_stage',
    'build_dataset', 'check_classes', 'check_split', 'cross_entropy', 'init_weights',
    'load_resume', 'lr_factor', 'param_groups', 'plan_stages', 'read_log', 'register',
    'resolve_device', 'restore', 'run', 'save_resume', 'seed_everything', 'setup_distributed',
    'soft_dice_loss', 'train', 'validate_config', 'weighted_cross_entropy',
]
