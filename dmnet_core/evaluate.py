"""`dmnet evaluate`: score a checkpoint on a dataset split, causally, as the node runs it.

The stateful `Segmenter` sees each test sequence frame by frame (`reset()` between sequences),
so the local ConvLSTM and the global bank only ever hold past frames. Scores come from
`dmnet_core.metrics.SegmentationScorer` (protocols documented there). Outputs, in REPORT_DIR:

    report.json     summary (mean_dice, mean_iou, binary_dice, per_class, protocols, per_sequence,
                    temporal_stability) + fps, timing, checkpoint, device, split, task
    report.md       the same as markdown tables
    per_frame.csv   one row per frame
    per_frame.png, per_class.png   plots

Sequences that carry `conditions.json` (the generator's per-frame tags: smoke burst, tip
occluded, ...) also get `per_condition` in the report: the scores of the frames with each tag,
and of the clean frames (no tag). A frame with two tags counts in both.

The trainer calls `score_split` with its in-training Segmenter for validation: same code path.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from dmnet_core.data import layout
from dmnet_core.data.synth.conditions import read_conditions
from dmnet_core.metrics import (
    SegmentationScorer,
    plot_per_class,
    plot_per_frame,
    summary_markdown,
)

log = logging.getLogger(__name__)


def check_classes(data: str | Path, task: str, class_names: list[str]) -> None:
    """Fail clearly when the dataset's classes for `task` do not match the model's.

    Raises:
        ValueError: naming the dataset file, the task and both class lists.
    """
    meta = layout.read_meta(data)
    ds_names = meta.classes.get(task)
    meta_path = Path(data) / layout.META_FILE
    if ds_names is None:
        if meta.classes:
            raise ValueError(f"{meta_path}: no classes for task {task!r} (the model's task); "
                             f'the dataset has tasks {sorted(meta.classes)}')
        return
    if len(ds_names) != len(class_names):
        raise ValueError(f'{meta_path}: task {task!r} has {len(ds_names)} classes {ds_names}, '
                         f'the model has {len(class_names)} {list(class_names)}')
    if list(ds_names) != list(class_names):
        log.warning('class names differ (dataset %s, model %s); scoring by id',
                    ds_names, list(class_names))


CLEAN = 'clean'


class ConditionScores:
    """One `SegmentationScorer` per condition tag (and `clean`), fed the tagged frames.

    Args:
        class_names: the model's classes.
        min_gt_pixels: the seed paper's rule, as for the whole split.
    """

    def __init__(self, class_names: list[str], min_gt_pixels: int) -> None:
        self.class_names, self.min_gt_pixels = list(class_names), min_gt_pixels
        self.scorers: dict[str, SegmentationScorer] = {}

    def update(self, pred: np.ndarray, gt: np.ndarray, sequence: str,
               tags: Iterable[str]) -> None:
        for tag in (list(tags) or [CLEAN]):
            scorer = self.scorers.get(tag)
            if scorer is None:
                scorer = self.scorers[tag] = SegmentationScorer(self.class_names,
                                                                self.min_gt_pixels)
            scorer.update(pred, gt, sequence)

    def summary(self) -> dict:
        """{tag: frames, mean_iou, mean_dice (seed protocol), challenge_iou, binary_dice,
        instrument_class_accuracy}.

        Flicker is left out: a tag's frames are not consecutive.
        """
        out = {}
        for tag in sorted(self.scorers, key=lambda t: (t != CLEAN, t)):
            s = self.scorers[tag].summary()
            out[tag] = {k: s[k] for k in ('frames', 'mean_iou', 'mean_dice', 'challenge_iou',
                                          'binary_dice', 'instrument_class_accuracy')}
        return out


def score_split(segmenter: Any, data: str | Path, split: str = 'test',
                max_frames: int | None = None, min_gt_pixels: int = 10,
                progress: bool = False) -> tuple[dict, list[dict], dict]:
    """Run `segmenter` over every sequence of a split and score it against the GT masks.

    Args:
        segmenter: object with `step(rgb_uint8) -> labels`, `reset()`, `task`, `class_names`,
            `last_inference_ms` (a `dmnet_core.segmenter.Segmenter`).
        data: dataset folder in the dmnet layout.
        split: split name from the dataset's `dataset.yaml`.
        max_frames: score only the first N frames of each sequence (None/0: all).
        min_gt_pixels: the seed paper's per-class pixel threshold.
        progress: show a tqdm bar.

    Returns:
        (summary, per-frame scores, timing) where timing has `fps`, `step_ms_mean`,
        `step_ms_p50`, `step_ms_p95`, `inference_ms_mean` (the first frame, a warm-up, left out).
    """
    task = segmenter.task
    class_names = list(segmenter.class_names)
    check_classes(data, task, class_names)
    try:
        sequences = layout.list_sequences(data, split)
    except KeyError as exc:                     # unknown split: a plain message, not a repr
        raise ValueError(exc.args[0]) from exc
    if not sequences:
        raise ValueError(f'{Path(data) / layout.META_FILE}: split {split!r} has no sequences')
    scorer = SegmentationScorer(class_names, min_gt_pixels=min_gt_pixels)
    by_condition = ConditionScores(class_names, min_gt_pixels)
    jobs = []
    tagged = {}
    for seq in sequences:
        conditions = read_conditions(seq.path)
        if conditions is not None:
            tagged[seq.name] = conditions
        frames = seq.frames()
        if not frames:
            raise FileNotFoundError(f'no frames in {seq.path / layout.IMAGE_DIR}')
        if not seq.has_masks(task):
            raise FileNotFoundError(f'no {task!r} masks for sequence {seq.name}: '
                                    f'{seq.path / layout.MASK_DIR / task}')
        jobs.append((seq, frames[:max_frames] if max_frames else frames))
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=sum(len(f) for _, f in jobs), desc=f'evaluate {split}', unit='frame')
    step_ms: list[float] = []
    infer_ms: list[float] = []
    for seq, frames in jobs:
        segmenter.reset()
        for frame in frames:
            rgb = layout.read_image(frame)
            gt = layout.read_mask(seq.mask_path(frame, task))
            if gt.shape != rgb.shape[:2]:
                raise ValueError(f'mask {seq.mask_path(frame, task)} is {gt.shape}, '
                                 f'image {frame} is {rgb.shape[:2]}')
            t0 = time.perf_counter()
            pred = segmenter.step(rgb)
            step_ms.append((time.perf_counter() - t0) * 1e3)
            infer_ms.append(float(getattr(segmenter, 'last_inference_ms', float('nan'))))
            if pred.shape != gt.shape:
                raise ValueError(f'segmenter returned {pred.shape} for {frame} '
                                 f'({gt.shape[0]} x {gt.shape[1]})')
            frame_scores = scorer.update(pred, gt, seq.name)
            if seq.name in tagged:
                # A frame the file does not list is left out of the per-condition scores.
                tags = tagged[seq.name].get(Path(frame).stem)
                if tags is not None:
                    by_condition.update(pred, gt, seq.name, tags)
                    frame_scores['conditions'] = '+'.join(tags) or CLEAN
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    # The first frame pays for lazy initialisation (CUDA context, cudnn autotune): skip it.
    timed = np.array(step_ms[1:] if len(step_ms) > 1 else step_ms)
    inf = np.array(infer_ms[1:] if len(infer_ms) > 1 else infer_ms)
    timing = {
        'fps': float(1e3 / timed.mean()) if timed.mean() > 0 else None,
        'step_ms_mean': float(timed.mean()),
        'step_ms_p50': float(np.percentile(timed, 50)),
        'step_ms_p95': float(np.percentile(timed, 95)),
        'inference_ms_mean': float(np.nanmean(inf)) if np.isfinite(inf).any() else None,
        'timed_frames': int(timed.size),
    }
    summary = scorer.summary()
    if tagged:
        summary['per_condition'] = by_condition.summary()
    return summary, scorer.scores, timing


def write_report(report: dict, scores: list[dict], out: str | Path) -> Path:
    """Write report.json, report.md, per_frame.csv and the plots into `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / 'report.json').write_text(json.dumps(report, indent=2))
    title = f"DMNet evaluation: {report.get('data', '')} ({report.get('split', '')})"
    (out / 'report.md').write_text(summary_markdown(report, title=title)
                                   + condition_markdown(report.get('per_condition')))
    fields = ['sequence', 'index', 'dice', 'iou', 'binary_dice', 'challenge_iou',
              'flicker_pred', 'flicker_gt', 'conditions']
    with (out / 'per_frame.csv').open('w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction='ignore')
        writer.writeheader()
        writer.writerows(scores)
    plot_per_frame(scores, out / 'per_frame.png', title=title)
    plot_per_class(report, out / 'per_class.png')
    return out / 'report.json'


def condition_markdown(per_condition: dict | None) -> str:
    """The per-condition table for report.md ('' without conditions)."""
    if not per_condition:
        return ''
    lines = ['', '## Per condition (frames with each tag; clean = no tag)', '',
             '| condition | frames | mIoU | mDice | challenge IoU | binary Dice |',
             '|---|---|---|---|---|---|']
    for tag, r in per_condition.items():
        lines.append(f"| {tag} | {r['frames']} | {_f(r['mean_iou'])} | {_f(r['mean_dice'])} "
                     f"| {_f(r['challenge_iou'])} | {_f(r['binary_dice'])} |")
    return '\n'.join(lines) + '\n'


def evaluate(data: str | Path, out: str | Path | None, checkpoint: str | Path | None = None,
             device: str = 'auto', split: str = 'test', segmenter: Any = None, *,
             task: str | None = None, precision: str = 'auto', max_frames: int | None = None,
             min_gt_pixels: int = 10, progress: bool = False,
             inference_size: tuple[int, int] | None = None,
             memory: dict[str, Any] | None = None) -> dict:
    """Evaluate a checkpoint (default: the shipped model) on a split; write the report.

    Args:
        data: dataset folder in the dmnet layout.
        out: report folder (None: write nothing, just return the summary).
        checkpoint: safetensors checkpoint; None = the shipped default model.
        device: 'auto', 'cpu', 'cuda', 'cuda:1', ...
        split: split of the dataset to score.
        segmenter: an already built Segmenter (then checkpoint/device/precision are unused).
        task: must equal the model's task when given (GT masks are read for the model's task).
        precision: Segmenter precision ('auto', 'fp32', 'fp16', 'bf16').
        max_frames: first N frames per sequence only.
        min_gt_pixels: seed-paper per-class threshold.
        progress: show a tqdm bar.
        inference_size: (H, W) the model runs at (multiples of 32); None = the checkpoint's.
        memory: memory settings that change no weight (`load_segmenter`'s `memory`).

    Returns:
        The report written to report.json.
    """
    data = Path(data)
    if not data.is_dir():
        raise FileNotFoundError(f'dataset folder not found: {data}')
    ckpt_name = None
    if segmenter is None:
        from dmnet_core.segmenter import load_segmenter
        if checkpoint is not None and not Path(checkpoint).is_file():
            raise FileNotFoundError(f'checkpoint not found: {checkpoint}')
        segmenter = load_segmenter(checkpoint, device, precision=precision,
                                   inference_size=inference_size, memory=memory)
        if checkpoint is None:
            from dmnet_core.checkpoint import DEFAULT_CHECKPOINT
            ckpt_name = (str(DEFAULT_CHECKPOINT) if DEFAULT_CHECKPOINT.is_file() else
                         f'none shipped at {DEFAULT_CHECKPOINT}: random stand-in')
        else:
            ckpt_name = str(checkpoint)
    if task is not None and task != segmenter.task:
        raise ValueError(f"--task {task!r} does not match the model's task "
                         f"{segmenter.task!r}; ground truth is read for the model's task")
    summary, scores, timing = score_split(segmenter, data, split, max_frames=max_frames,
                                          min_gt_pixels=min_gt_pixels, progress=progress)
    report = {
        'mean_dice': summary['mean_dice'],
        'mean_iou': summary['mean_iou'],
        'binary_dice': summary['binary_dice'],
        'fps': timing['fps'],
        'checkpoint': ckpt_name if ckpt_name is not None else str(checkpoint or 'in-memory'),
        'device': str(getattr(segmenter, 'device', device)),
        'data': str(data),
        'split': split,
        'task': segmenter.task,
        'inference_size': list(getattr(segmenter, 'inference_size', []) or []),
        'memory': dict(memory or {}),
        'timing': timing,
        **{k: v for k, v in summary.items() if k not in ('mean_dice', 'mean_iou', 'binary_dice')},
    }
    if out is not None:
        path = write_report(report, scores, out)
        log.info('wrote %s (mean Dice %s, mean IoU %s, %.1f fps)', path,
                 _f(report['mean_dice']), _f(report['mean_iou']), timing['fps'] or 0.0)
    return report


def _f(v: float | None) -> str:
    return '-' if v is None else f'{v:.4f}'


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `dmnet evaluate`."""
    p = subparsers.add_parser(
        'evaluate', help='score a checkpoint on a dataset split (frame by frame, causal)',
        description='Run the stateful Segmenter over each sequence of a split and write '
                    'report.json, report.md and plots.')
    p.add_argument('--data', required=True, help='dataset folder in the dmnet layout')
    p.add_argument('--out', required=True, help='report folder (created)')
    p.add_argument('--checkpoint', default=None,
                   help='safetensors checkpoint (default: the shipped model)')
    p.add_argument('--device', default='auto', help="'auto', 'cpu', 'cuda', 'cuda:N'")
    p.add_argument('--split', default='test', help='split in dataset.yaml (default: test)')
    p.add_argument('--task', default=None, choices=('binary', 'parts', 'type'),
                   help="must match the model's task (checked)")
    p.add_argument('--precision', default='auto', help="'auto', 'fp32', 'fp16', 'bf16'")
    p.add_argument('--max-frames', type=int, default=None,
                   help='score only the first N frames of each sequence')
    p.add_argument('--min-gt-pixels', type=int, default=10,
                   help='seed-paper rule: count a class on a frame above this many GT pixels')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    p.add_argument('--inference-size', type=int, nargs=2, default=None, metavar=('H', 'W'),
                   help="size the model runs at, multiples of 32 (default: the checkpoint's)")
    p.add_argument('--memory', nargs='+', default=None, metavar='KEY=VALUE',
                   help="memory settings that change no weight, as the node's memory.* "
                        'parameters: alpha, beta, n_read, capacity, policy, eviction, '
                        'read_sampling, uniform_stride, seed, label_propagation, '
                        'local_vote_radius, local_enabled, global_enabled')
    p.set_defaults(func=run)


def parse_memory(items: list[str] | None) -> dict[str, Any] | None:
    """['n_read=2', 'policy=recent', 'local_enabled=false'] -> {'n_read': 2, ...}."""
    if not items:
        return None
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition('=')
        if not sep or not key or not text:
            raise ValueError(f'--memory {item!r}: expected KEY=VALUE')
        value: Any = text
        if text.lower() in ('true', 'false'):
            value = text.lower() == 'true'
        else:
            for kind in (int, float):
                try:
                    value = kind(text)
                    break
                except ValueError:
                    continue
        out[key] = value
    return out


def run(args: argparse.Namespace) -> int:
    """Entry point of `dmnet evaluate`."""
    if args.max_frames is not None and args.max_frames < 1:
        raise ValueError(f'--max-frames must be >= 1, got {args.max_frames}')
    report = evaluate(args.data, args.out, args.checkpoint, args.device, args.split,
                      task=args.task, precision=args.precision, max_frames=args.max_frames,
                      min_gt_pixels=args.min_gt_pixels, progress=not args.no_progress,
                      inference_size=args.inference_size, memory=parse_memory(args.memory))
    print(f"mean_dice {_f(report['mean_dice'])}  mean_iou {_f(report['mean_iou'])}  "
          f"binary_dice {_f(report['binary_dice'])}  fps {report['fps'] or 0:.1f}  "
          f"-> {Path(args.out) / 'report.json'}")
    if report.get('per_condition'):
        print('per condition mIoU: ' + ', '.join(
            f"{tag} {_f(r['mean_iou'])} ({r['frames']} frames)"
            for tag, r in report['per_condition'].items()))
    return 0
