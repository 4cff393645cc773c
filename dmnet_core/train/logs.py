"""Training logs: per-iteration and per-epoch CSV files, optional TensorBoard."""
from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# grad_norm: all parameters before clipping; grad_norm_<module>: one memory module's share
# (empty when the module is not built or got no gradient, e.g. in stage single_frame).
TRAIN_LOG_FIELDS = ['step', 'epoch', 'loss', 'ce', 'dice_loss', 'lr', 'grad_norm', 'seconds',
                    'stage', 'grad_norm_local_memory', 'grad_norm_global_memory']
VAL_LOG_FIELDS = ['epoch', 'step', 'mean_dice', 'mean_iou', 'binary_dice', 'challenge_iou',
                  'pred_flicker', 'fps', 'best', 'real_binary_dice', 'selection']


class CsvLog:
    """Append-only CSV with a header; on resume, rows past the resumed step are dropped."""

    def __init__(self, path: Path, fields: list[str], keep_until: int | None) -> None:
        self.path, self.fields = path, fields
        rows = []
        if keep_until is not None and path.is_file():
            with path.open(newline='') as f:
                rows = [r for r in csv.DictReader(f) if int(r['step']) <= keep_until]
        with path.open('w', newline='') as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)

    def write(self, row: dict) -> None:
        with self.path.open('a', newline='') as f:
            csv.DictWriter(f, fieldnames=self.fields, extrasaction='ignore').writerow(row)


def read_log(path: str | Path) -> list[dict]:
    """Rows of a train/val CSV log with numeric values as floats (step and epoch as ints)."""
    with Path(path).open(newline='') as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        row: dict[str, Any] = {}
        for k, v in r.items():
            if k in ('step', 'epoch'):
                row[k] = int(v)
            else:
                try:
                    row[k] = float(v) if v != '' else None
                except ValueError:
                    row[k] = v
        out.append(row)
    return out


def open_tensorboard(out: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning('log: tensorboard requested but the tensorboard package is not installed '
                    '(pip install tensorboard); logging to %s only', out / 'train_log.csv')
        return None
    return SummaryWriter(str(out / 'tb'))
