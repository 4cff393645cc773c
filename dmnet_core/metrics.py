"""Segmentation metrics for instrument videos, under the protocols papers report.

Everything comes from one C x C confusion matrix per frame (``bincount(gt * C + pred)``), so
scoring a 1280 x 1024 frame costs a few milliseconds. Class 0 is background; the "mean"
numbers are over the instrument classes 1..C-1 only.

Protocols (all in ``summary()['protocols']``):

- ``seed_paper`` (DMNet, Wang et al. MICCAI 2021, after ISINet/RASNet practice): IoU and Dice
  per frame and class, counted only on frames where the class has more than
  ``min_gt_pixels`` ground-truth pixels; averaged over those frames per class, then over the
  classes that were counted at least once. This is ``mean_iou`` / ``mean_dice``.
- ``challenge_iou`` (EndoVis 2017 challenge style, used by ISINet, MATIS, S3Net): per frame, IoU
  averaged over the instrument classes present in the prediction or the ground truth; frames
  with no instrument in either are skipped; then the mean over frames.
- ``dataset_iou``: per-class IoU (and Dice) from the confusion matrix summed over the whole
  set, averaged over classes that occur in the prediction or the ground truth.

``binary_dice`` merges all instrument classes (any non-zero id) against background and follows
the seed-paper rule (frames with more than ``min_gt_pixels`` instrument pixels).

Temporal stability: the *flicker* of a label sequence is the fraction of pixels whose label
changes between two consecutive frames of the same sequence, averaged over consecutive pairs.
It is computed for the prediction and, as a reference for the real motion, for the ground
truth; ``excess_flicker`` = pred - GT flicker (near 0 for a temporally stable model, positive
when the mask jitters more than the scene moves).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

SEED_RULE = ('per frame and class, only frames where the class has more than {n} ground-truth '
             'pixels; mean over those frames per class, then over instrument classes')
CHALLENGE_RULE = ('per frame, IoU over instrument classes present in prediction or ground truth '
                  '(frames with none skipped); mean over frames')
DATASET_RULE = ('per class, IoU from the confusion matrix summed over all frames; mean over '
                'instrument classes present in prediction or ground truth')
FLICKER_RULE = ('fraction of pixels whose label changes between consecutive frames of a '
                'sequence, mean over consecutive pairs; excess = prediction - ground truth')


def confusion(pred: np.ndarray, gt: np.ndarray, num_classes: int,
              ignore_index: int | None = 255) -> np.ndarray:
    """C x C confusion matrix, rows = ground truth, columns = prediction.

    Args:
        pred: H x W integer class ids.
        gt: H x W integer class ids; pixels equal to ``ignore_index`` are left out.
        num_classes: C.
        ignore_index: void label in the ground truth, or None.

    Raises:
        ValueError: on shape mismatch or ids outside 0..C-1 (other than ``ignore_index``).
    """
    if pred.shape != gt.shape:
        raise ValueError(f'prediction shape {pred.shape} != ground-truth shape {gt.shape}')
    if pred.ndim != 2:
        raise ValueError(f'expected H x W label maps, got shape {pred.shape}')
    p = pred.astype(np.int64, copy=False).ravel()
    g = gt.astype(np.int64, copy=False).ravel()
    if ignore_index is not None:
        keep = g != ignore_index
        if not keep.all():
            p, g = p[keep], g[keep]
    for name, a in (('prediction', p), ('ground truth', g)):
        lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
        if lo < 0 or hi >= num_classes:
            bad = hi if hi >= num_classes else lo
            raise ValueError(f'{name} has class id {bad} outside 0..{num_classes - 1} '
                             f'({num_classes} classes)')
    return np.bincount(g * num_classes + p, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den > 0 else None


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(sum(vals) / len(vals)) if vals else None


def iou_dice_from_confusion(conf: np.ndarray) -> tuple[list[float | None], list[float | None]]:
    """Per-class IoU and Dice; None where the class is in neither prediction nor GT."""
    tp = np.diag(conf).astype(np.float64)
    fp = conf.sum(0) - tp
    fn = conf.sum(1) - tp
    iou = [_ratio(t, t + a + b) for t, a, b in zip(tp, fp, fn)]
    dice = [_ratio(2 * t, 2 * t + a + b) for t, a, b in zip(tp, fp, fn)]
    return iou, dice


class _Accumulator:
    """Running sums for one group of frames (the whole set, or one sequence)."""

    def __init__(self, num_classes: int) -> None:
        c = num_classes
        self.frames = 0
        self.conf = np.zeros((c, c), dtype=np.int64)
        # Seed-paper protocol: per class, sums over counted frames.
        self.iou_sum = np.zeros(c)
        self.dice_sum = np.zeros(c)
        self.counted = np.zeros(c, dtype=np.int64)
        self.bin_dice_sum = 0.0
        self.bin_counted = 0
        self.bin_dice_all: list[float] = []
        self.challenge: list[float] = []
        self.challenge_dice: list[float] = []
        self.flicker_pred: list[float] = []
        self.flicker_gt: list[float] = []

    def add(self, frame: dict, conf: np.ndarray, iou: list, dice: list, counted: np.ndarray,
            bin_counted: bool) -> None:
        self.frames += 1
        self.conf += conf
        for c in np.flatnonzero(counted):
            self.iou_sum[c] += iou[c]
            self.dice_sum[c] += dice[c]
            self.counted[c] += 1
        if bin_counted:
            self.bin_dice_sum += frame['binary_dice']
            self.bin_counted += 1
        self.bin_dice_all.append(frame['binary_dice'])
        if frame['challenge_iou'] is not None:
            self.challenge.append(frame['challenge_iou'])
            self.challenge_dice.append(frame['challenge_dice'])
        if frame['flicker_pred'] is not None:
            self.flicker_pred.append(frame['flicker_pred'])
            self.flicker_gt.append(frame['flicker_gt'])

    def seed_per_class(self) -> tuple[list[float | None], list[float | None]]:
        iou = [_ratio(s, n) for s, n in zip(self.iou_sum, self.counted)]
        dice = [_ratio(s, n) for s, n in zip(self.dice_sum, self.counted)]
        return iou, dice


class SegmentationScorer:
    """Accumulates per-frame scores over sequences and summarises them under named protocols.

    Args:
        class_names: names by class id; id 0 is background.
        min_gt_pixels: the seed paper's rule: a class counts on a frame only with more GT pixels.
        ignore_index: void label in the ground truth, left out of every count (None: none).
    """

    def __init__(self, class_names: list[str], min_gt_pixels: int = 10,
                 ignore_index: int | None = 255) -> None:
        if len(class_names) < 2:
            raise ValueError(f'need background and at least one class, got {class_names}')
        if min_gt_pixels < 0:
            raise ValueError(f'min_gt_pixels must be >= 0, got {min_gt_pixels}')
        self.class_names = list(class_names)
        self.num_classes = len(class_names)
        self.min_gt_pixels = int(min_gt_pixels)
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        """Forget everything scored so far."""
        self._total = _Accumulator(self.num_classes)
        self._seqs: dict[str, _Accumulator] = {}
        self._prev: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.scores: list[dict] = []

    def update(self, pred: np.ndarray, gt: np.ndarray, sequence: str = 'default') -> dict:
        """Score one frame (frames of a sequence must come in temporal order).

        Args:
            pred: H x W predicted class ids.
            gt: H x W ground-truth class ids.
            sequence: the video the frame belongs to (flicker compares consecutive frames).

        Returns:
            Per-frame scores: ``iou``/``dice`` (seed-paper mean over the classes counted on
            this frame, None when none is), ``binary_dice`` (1.0 when both masks are empty),
            ``challenge_iou``, ``per_class_iou``, ``per_class_dice``, ``flicker_pred``,
            ``flicker_gt`` (None on a sequence's first frame), ``sequence``, ``index``.
        """
        pred = np.asarray(pred)
        gt = np.asarray(gt)
        conf = confusion(pred, gt, self.num_classes, self.ignore_index)
        iou, dice = iou_dice_from_confusion(conf)
        gt_pixels = conf.sum(1)
        pred_pixels = conf.sum(0)
        # Seed-paper rule: a class counts on this frame only with > min_gt_pixels GT pixels.
        counted = gt_pixels > self.min_gt_pixels
        counted[0] = False
        inst = range(1, self.num_classes)
        # Challenge IoU: classes present in the prediction or the ground truth.
        present = [c for c in inst if gt_pixels[c] > 0 or pred_pixels[c] > 0]
        # Binary: instrument = any non-zero id; TP = instrument in both (any class).
        b_tp = float(conf[1:, 1:].sum())
        b_gt = float(gt_pixels[1:].sum())
        b_pred = float(pred_pixels[1:].sum())
        b_den = b_gt + b_pred
        binary_dice = 2 * b_tp / b_den if b_den > 0 else 1.0
        flicker_pred = flicker_gt = None
        prev = self._prev.get(sequence)
        if prev is not None and prev[0].shape == pred.shape:
            flicker_pred = float(np.count_nonzero(prev[0] != pred)) / pred.size
            flicker_gt = float(np.count_nonzero(prev[1] != gt)) / gt.size
        self._prev[sequence] = (pred.copy(), gt.copy())
        seq_acc = self._seqs.setdefault(sequence, _Accumulator(self.num_classes))
        frame = {
            'sequence': sequence,
            'index': seq_acc.frames,
            'iou': _mean([iou[c] for c in inst if counted[c]]),
            'dice': _mean([dice[c] for c in inst if counted[c]]),
            'binary_dice': binary_dice,
            'challenge_iou': _mean([iou[c] for c in present]),
            'challenge_dice': _mean([dice[c] for c in present]),
            'per_class_iou': {self.class_names[c]: (iou[c] if counted[c] else None) for c in inst},
            'per_class_dice': {self.class_names[c]: (dice[c] if counted[c] else None)
                               for c in inst},
            'flicker_pred': flicker_pred,
            'flicker_gt': flicker_gt,
        }
        bin_counted = b_gt > self.min_gt_pixels
        for acc in (self._total, seq_acc):
            acc.add(frame, conf, iou, dice, counted, bin_counted)
        self.scores.append(frame)
        return frame

    def _group_summary(self, acc: _Accumulator) -> dict:
        """Headline numbers for one accumulator (shared by the total and each sequence)."""
        names = self.class_names
        s_iou, s_dice = acc.seed_per_class()
        d_iou, d_dice = iou_dice_from_confusion(acc.conf)
        inst = range(1, self.num_classes)
        return {
            'frames': acc.frames,
            'mean_iou': _mean([s_iou[c] for c in inst]),
            'mean_dice': _mean([s_dice[c] for c in inst]),
            'binary_dice': _ratio(acc.bin_dice_sum, acc.bin_counted),
            'binary_dice_all_frames': _mean(acc.bin_dice_all),
            'challenge_iou': _mean(acc.challenge),
            'dataset_iou': _mean([d_iou[c] for c in inst]),
            'pred_flicker': _mean(acc.flicker_pred),
            'gt_flicker': _mean(acc.flicker_gt),
            'instrument_class_accuracy': class_accuracy(acc.conf),
            '_seed': (s_iou, s_dice),
            '_dataset': (d_iou, d_dice),
            '_names': names,
        }

    def summary(self) -> dict:
        """Everything scored so far, JSON-serialisable (undefined values are None).

        Keys: ``mean_dice``, ``mean_iou`` (seed-paper protocol, instrument classes),
        ``binary_dice``, ``instrument_class_accuracy``, ``frames``, ``per_class``, ``protocols``,
        ``per_sequence``, ``temporal_stability``, ``class_names``, ``min_gt_pixels``.
        """
        acc = self._total
        g = self._group_summary(acc)
        s_iou, s_dice = g['_seed']
        d_iou, d_dice = g['_dataset']
        inst = range(1, self.num_classes)
        per_class = {}
        for c, name in enumerate(self.class_names):
            per_class[name] = {'iou': s_iou[c], 'dice': s_dice[c], 'frames': int(acc.counted[c]),
                               'dataset_iou': d_iou[c], 'dataset_dice': d_dice[c],
                               'gt_pixels': int(acc.conf[c].sum()),
                               'pred_pixels': int(acc.conf[:, c].sum())}
        # Background is not counted by the seed protocol; give its whole-set scores instead.
        per_class[self.class_names[0]].update(iou=d_iou[0], dice=d_dice[0], frames=acc.frames)
        inst_names = [self.class_names[c] for c in inst]
        protocols = {
            'seed_paper': {
                'mean_iou': g['mean_iou'], 'mean_dice': g['mean_dice'],
                'per_class_iou': dict(zip(inst_names, s_iou[1:])),
                'per_class_dice': dict(zip(inst_names, s_dice[1:])),
                'min_gt_pixels': self.min_gt_pixels,
                'rule': SEED_RULE.format(n=self.min_gt_pixels),
            },
            'challenge_iou': {
                'mean_iou': g['challenge_iou'], 'mean_dice': _mean(acc.challenge_dice),
                'frames': len(acc.challenge), 'rule': CHALLENGE_RULE,
            },
            'dataset_iou': {
                'mean_iou': g['dataset_iou'], 'mean_dice': _mean([d_dice[c] for c in inst]),
                'per_class_iou': dict(zip(inst_names, d_iou[1:])),
                'per_class_dice': dict(zip(inst_names, d_dice[1:])),
                'rule': DATASET_RULE,
            },
        }
        per_sequence = {}
        for name, sacc in self._seqs.items():
            sg = self._group_summary(sacc)
            per_sequence[name] = {k: v for k, v in sg.items() if not k.startswith('_')}
            per_sequence[name]['excess_flicker'] = _diff(sg['pred_flicker'], sg['gt_flicker'])
        stability = {
            'pred_flicker': g['pred_flicker'], 'gt_flicker': g['gt_flicker'],
            'excess_flicker': _diff(g['pred_flicker'], g['gt_flicker']),
            'pairs': len(acc.flicker_pred), 'rule': FLICKER_RULE,
        }
        return {
            'mean_dice': g['mean_dice'],
            'mean_iou': g['mean_iou'],
            'binary_dice': g['binary_dice'],
            'binary_dice_all_frames': g['binary_dice_all_frames'],
            'challenge_iou': g['challenge_iou'],
            'dataset_iou': g['dataset_iou'],
            'instrument_class_accuracy': g['instrument_class_accuracy'],
            'frames': acc.frames,
            'sequences': len(self._seqs),
            'class_names': list(self.class_names),
            'min_gt_pixels': self.min_gt_pixels,
            'per_class': per_class,
            'protocols': protocols,
            'per_sequence': per_sequence,
            'temporal_stability': stability,
        }


def class_accuracy(conf: np.ndarray) -> float | None:
    """Share of ground-truth instrument pixels found as an instrument that got the right class.

    Separates naming from finding: a multi-class model can find the instruments (binary Dice)
    and still name them wrongly. None for a binary task, where it would always be 1.
    """
    if conf.shape[0] <= 2:
        return None
    found = conf[1:, 1:]
    return _ratio(float(np.trace(found)), float(found.sum()))


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _fmt(v: object, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return '-'
    if isinstance(v, float):
        return f'{v:.{digits}f}'
    return str(v)


def summary_markdown(summary: dict, title: str | None = None) -> str:
    """Markdown tables for a ``SegmentationScorer.summary()`` (extra keys like ``fps`` too)."""
    lines = [f'# {title}', ''] if title else []
    head = [('mean Dice (seed paper)', summary.get('mean_dice')),
            ('mean IoU (seed paper)', summary.get('mean_iou')),
            ('binary Dice (instrument vs background)', summary.get('binary_dice')),
            ('challenge IoU', summary.get('challenge_iou')),
            ('dataset IoU', summary.get('dataset_iou')),
            ('frames', summary.get('frames')),
            ('sequences', summary.get('sequences'))]
    for key in ('fps', 'device', 'checkpoint'):
        if key in summary:
            head.append((key, summary[key]))
    lines += ['| metric | value |', '|---|---|']
    lines += [f'| {k} | {_fmt(v)} |' for k, v in head]
    lines += ['', '## Per class', '',
              '| class | IoU | Dice | frames counted | dataset IoU | dataset Dice |',
              '|---|---|---|---|---|---|']
    for name, pc in summary.get('per_class', {}).items():
        lines.append(f"| {name} | {_fmt(pc.get('iou'))} | {_fmt(pc.get('dice'))} | "
                     f"{_fmt(pc.get('frames'))} | {_fmt(pc.get('dataset_iou'))} | "
                     f"{_fmt(pc.get('dataset_dice'))} |")
    lines += ['', '## Protocols', '', '| protocol | mean IoU | mean Dice | rule |',
              '|---|---|---|---|']
    for name, p in summary.get('protocols', {}).items():
        lines.append(f"| {name} | {_fmt(p.get('mean_iou'))} | {_fmt(p.get('mean_dice'))} | "
                     f"{p.get('rule', '')} |")
    lines += ['', '## Per sequence', '',
              '| sequence | frames | mean Dice | mean IoU | binary Dice | challenge IoU | '
              'pred flicker | GT flicker |', '|---|---|---|---|---|---|---|---|']
    for name, s in summary.get('per_sequence', {}).items():
        lines.append(f"| {name} | {s['frames']} | {_fmt(s['mean_dice'])} | {_fmt(s['mean_iou'])} "
                     f"| {_fmt(s['binary_dice'])} | {_fmt(s['challenge_iou'])} | "
                     f"{_fmt(s['pred_flicker'])} | {_fmt(s['gt_flicker'])} |")
    ts = summary.get('temporal_stability')
    if ts:
        lines += ['', '## Temporal stability', '',
                  f"Flicker: {ts['rule']}.", '',
                  '| prediction | ground truth | excess | pairs |', '|---|---|---|---|',
                  f"| {_fmt(ts['pred_flicker'])} | {_fmt(ts['gt_flicker'])} | "
                  f"{_fmt(ts['excess_flicker'])} | {ts['pairs']} |"]
    return '\n'.join(lines) + '\n'


def plot_per_frame(scores: list[dict], path: str | Path, title: str | None = None) -> Path:
    """Plot per-frame Dice/IoU and flicker (``update()`` results) to an image file.

    Sequence boundaries are dotted vertical lines. Uses matplotlib's Agg backend (no display).
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.arange(len(scores))

    def series(key: str) -> np.ndarray:
        return np.array([np.nan if s.get(key) is None else s[key] for s in scores], dtype=float)

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True)
    for key, label in (('dice', 'Dice (seed)'), ('iou', 'IoU (seed)'),
                       ('binary_dice', 'binary Dice'), ('challenge_iou', 'challenge IoU')):
        ax1.plot(x, series(key), label=label, linewidth=1)
    ax1.set_ylim(0, 1.02)
    ax1.set_ylabel('score')
    ax1.legend(loc='lower left', fontsize=8, ncol=4)
    ax2.plot(x, series('flicker_pred'), label='prediction', linewidth=1)
    ax2.plot(x, series('flicker_gt'), label='ground truth', linewidth=1)
    ax2.set_ylabel('flicker')
    ax2.set_xlabel('frame')
    ax2.legend(loc='upper left', fontsize=8)
    # Dotted lines where a new sequence starts.
    for i in range(1, len(scores)):
        if scores[i].get('sequence') != scores[i - 1].get('sequence'):
            for ax in (ax1, ax2):
                ax.axvline(i - 0.5, color='grey', linestyle=':', linewidth=0.8)
    if title:
        ax1.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_per_class(summary: dict, path: str | Path) -> Path:
    """Bar chart of per-class IoU and Dice (seed-paper protocol) to an image file."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(summary['per_class'])[1:]
    iou = [summary['per_class'][n]['iou'] or 0.0 for n in names]
    dice = [summary['per_class'][n]['dice'] or 0.0 for n in names]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(names) + 2), 3.5))
    ax.bar(x - 0.2, iou, 0.4, label='IoU')
    ax.bar(x + 0.2, dice, 0.4, label='Dice')
    ax.set_xticks(x, names, rotation=20, ha='right', fontsize=8)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
