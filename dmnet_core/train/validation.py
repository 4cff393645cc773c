"""Validation during training: score a checkpoint as `dmnet evaluate` does, pick the best."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from dmnet_core.config import ExperimentConfig
from dmnet_core.train.logs import CsvLog


def validate_checkpoint(exp: ExperimentConfig, ckpt: Path, device: torch.device,
                        memory_off: bool = False) -> dict:
    """Score `ckpt` on the val split through the Segmenter, as `dmnet evaluate` does.

    `memory_off`: score the single-frame network (stage `single_frame` of a memory model).
    """
    from dmnet_core.evaluate import evaluate
    from dmnet_core.segmenter import load_segmenter
    memory = {'local_enabled': False, 'global_enabled': False} if memory_off else None
    seg = load_segmenter(ckpt, str(device), precision='fp32' if device.type == 'cpu' else 'auto',
                         memory=memory)
    report = evaluate(exp.data.root, None, segmenter=seg, split=exp.data.val_split,
                      max_frames=exp.train.val_max_frames or None)
    if exp.data.val_stills:
        from dmnet_core.real_eval import score_real
        report['real'] = {root: score_real(seg, root) for root in exp.data.val_stills}
    return report


def _real_scores(report: dict) -> list[float]:
    """Binary Dice of each real val folder a report scored."""
    return [r['binary_dice'] for r in (report.get('real') or {}).values()
            if r.get('binary_dice') is not None]


def real_dice(report: dict) -> float | None:
    """Mean binary Dice over the real val folders of a report (None: none scored)."""
    scores = _real_scores(report)
    return sum(scores) / len(scores) if scores else None


def selection_score(report: dict) -> float:
    """Model selection score: the val split's seed-paper mean Dice (else binary Dice, else 0),
    averaged with each real val folder's binary Dice when there are any."""
    score = 0.0
    for key in ('mean_dice', 'binary_dice'):
        if report.get(key) is not None:
            score = float(report[key])
            break
    real = _real_scores(report)
    return (score + sum(real)) / (1 + len(real))


def copy_checkpoint(src: Path, dst: Path) -> None:
    """Copy a checkpoint and the YAML config beside it."""
    shutil.copyfile(src, dst)
    shutil.copyfile(src.with_suffix('.yaml'), dst.with_suffix('.yaml'))


def log_validation(val_log: CsvLog, tb: Any, bar: Any, report: dict, epoch: int, step: int,
             improved: bool) -> None:
    """One row of val_log.csv, TensorBoard scalars and a progress-bar line."""
    ts = report['temporal_stability']
    val_log.write({'epoch': epoch + 1, 'step': step,
                   **{k: _num(report.get(k)) for k in
                      ('mean_dice', 'mean_iou', 'binary_dice', 'challenge_iou', 'fps')},
                   'pred_flicker': _num(ts['pred_flicker']), 'best': int(improved),
                   'real_binary_dice': _num(real_dice(report)),
                   'selection': _num(selection_score(report))})
    if tb is not None:
        for k in ('mean_dice', 'mean_iou', 'binary_dice'):
            if report.get(k) is not None:
                tb.add_scalar(f'val/{k}', report[k], step)
    real = real_dice(report)
    bar.write(f'epoch {epoch + 1}: val mean Dice {_num(report["mean_dice"])} '
              f'mean IoU {_num(report["mean_iou"])}'
              + ('' if real is None else f' real binary Dice {real:.4f}')
              + (' (best)' if improved else ''))


def _num(v: Any) -> str:
    return '' if v is None else f'{float(v):.6f}'
