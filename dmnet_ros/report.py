"""The replay report folder: report.json, report.md, plots and an overlay video (no ROS needed).

    DIR/report.json         counts, latency percentiles, scores (keys: `REQUIRED_KEYS`, + scores)
    DIR/report.md           the same as tables
    DIR/dice_over_time.png  per-frame Dice/IoU and flicker (only with ground truth)
    DIR/latency_hist.png    histogram of frame -> mask latency
    DIR/overlay.mp4         prediction | ground truth, tinted over the frame (mp4v)

Scores come from `dmnet_core.metrics` (the project's one definition of the metrics); this
module adds the latency and frame-count parts and renders everything.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from dmnet_ros.overlay import DEFAULT_PALETTE, blend_overlay, palette_table

REQUIRED_KEYS = ('frames_sent', 'frames_answered', 'frames_dropped', 'frames_unmatched',
                 'latency_ms', 'mode', 'rate', 'bag', 'wall_s')
SCORE_KEYS = ('mean_dice', 'mean_iou', 'binary_dice')
# Overlay video panels are scaled down to at most this height (a 1080p bag stays watchable).
VIDEO_MAX_H = 480
GT_PALETTE = [255, 200, 0, 0, 160, 255, 255, 0, 255, 0, 255, 255]   # amber first: GT != pred


def latency_stats(latencies_ms: list[float]) -> dict[str, float | None]:
    """p50/p95/p99/mean/max in milliseconds (None when there is no answered frame)."""
    if not latencies_ms:
        return {'p50': None, 'p95': None, 'p99': None, 'mean': None, 'max': None}
    a = np.asarray(latencies_ms, dtype=np.float64)
    return {'p50': float(np.percentile(a, 50)), 'p95': float(np.percentile(a, 95)),
            'p99': float(np.percentile(a, 99)), 'mean': float(a.mean()), 'max': float(a.max())}


def _clean(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN/inf to None, private `_` keys dropped."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items() if not str(k).startswith('_')}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return '-'
    if isinstance(v, float):
        return f'{v:.{digits}f}'
    return str(v)


def report_markdown(report: dict) -> str:
    """Markdown for a replay report: run, counts, latency, then the metrics module's tables."""
    lat = report.get('latency_ms') or {}
    lines = ['# dmnet replay report', '',
             f"Bag `{report.get('bag')}`, mode **{report.get('mode')}**"
             + (f" (rate {report.get('rate'):g}x)" if report.get('mode') == 'rate' else '')
             + f", node: {report.get('node', {}).get('how', '?')}, "
             f"wall time {_fmt(report.get('wall_s'), 1)} s.", '',
             '| frames | count |', '|---|---|']
    for key in ('frames_sent', 'frames_answered', 'frames_dropped', 'frames_unmatched',
                'frames_resent', 'frames_scored'):
        if key in report:
            lines.append(f'| {key} | {report[key]} |')
    lines += ['', 'Dropped: sent but never answered (the node keeps only the newest frame). '
              'Unmatched: masks whose header stamp matches no frame sent.', '',
              '| latency (ms, frame publish to mask receipt) | value |', '|---|---|']
    lines += [f'| {k} | {_fmt(lat.get(k), 1)} |' for k in ('p50', 'p95', 'p99', 'mean', 'max')]
    if report.get('answered_fps') is not None:
        lines += [f"| throughput (answered frames / s) | {_fmt(report['answered_fps'], 2)} |"]
    lines.append('')
    if report.get('mean_dice') is not None or report.get('per_class'):
        from dmnet_core.metrics import summary_markdown

        lines += ['## Scores', '', summary_markdown(report)]
    else:
        lines.append('No ground truth in the bag (or no answered frame with ground truth): '
                     'latency and counts only.')
    files = report.get('files') or {}
    if files:
        lines += ['', '## Files', ''] + [f'- {k}: `{v}`' for k, v in files.items()]
    return '\n'.join(lines) + '\n'


def plot_latency(latencies_ms: list[float], path: str | Path) -> Path:
    """Histogram of latencies with p50/p95/p99 marked."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    if latencies_ms:
        ax.hist(latencies_ms, bins=min(50, max(5, len(latencies_ms) // 2)), color='tab:blue')
        stats = latency_stats(latencies_ms)
        for key, colour in (('p50', 'green'), ('p95', 'orange'), ('p99', 'red')):
            ax.axvline(stats[key], color=colour, linestyle='--', linewidth=1,
                       label=f'{key} {stats[key]:.1f} ms')
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, 'no answered frames', ha='center', va='center',
                transform=ax.transAxes)
    ax.set_xlabel('latency (ms): frame published -> mask received')
    ax.set_ylabel('frames')
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(out_dir: str | Path, report: dict, frame_scores: list[dict],
                 latencies_ms: list[float]) -> dict[str, Path]:
    """Write report.json, report.md and the plots into `out_dir`; returns the written paths.

    Args:
        report: the replay's report (counts, `latency_ms`, metrics summary keys, ...).
        frame_scores: per-frame results of `SegmentationScorer.update` (empty: no GT).
        latencies_ms: one latency per answered frame.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = dict(report.get('files') or {})
    files['latency_hist'] = plot_latency(latencies_ms, out / 'latency_hist.png')
    if frame_scores:
        from dmnet_core.metrics import plot_per_frame

        files['dice_over_time'] = plot_per_frame(frame_scores, out / 'dice_over_time.png',
                                                 title='per-frame scores (answered frames)')
    files['report_json'] = out / 'report.json'
    files['report_md'] = out / 'report.md'
    report['files'] = {k: str(v) for k, v in files.items()}
    clean = _clean(report)
    (out / 'report.json').write_text(json.dumps(clean, indent=2) + '\n')
    (out / 'report.md').write_text(report_markdown(clean))
    return files


class OverlayVideo:
    """mp4 of the replay: frame tinted with the prediction, beside it tinted with the GT.

    Args:
        path: the .mp4 to write (codec 'mp4v', which every OpenCV build writes).
        fps: playback rate (the bag's frame rate).
        with_gt: two panels (prediction | ground truth) when True, one otherwise.
    """

    def __init__(self, path: str | Path, fps: float, with_gt: bool) -> None:
        self.path = Path(path)
        self.fps = float(fps) if fps and fps > 0 else 25.0
        self.with_gt = with_gt
        self.frames = 0
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None     # panel (W, H), even numbers
        self._pred_lut = palette_table(DEFAULT_PALETTE)
        self._gt_lut = palette_table(GT_PALETTE)

    def _panel(self, rgb: np.ndarray, mask: np.ndarray | None, lut: np.ndarray,
               label: str) -> np.ndarray:
        img = rgb if mask is None else blend_overlay(rgb, mask, lut, 0.5)
        img = cv2.resize(img, self._size, interpolation=cv2.INTER_AREA)
        cv2.putText(img, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1,
                    cv2.LINE_AA)
        return img

    def add(self, rgb: np.ndarray, pred: np.ndarray | None, gt: np.ndarray | None,
            note: str = '') -> None:
        """Append one frame (`pred` None: the frame was dropped, shown untinted)."""
        h, w = rgb.shape[:2]
        if self._size is None:
            scale = min(1.0, VIDEO_MAX_H / h)
            self._size = (max(2, int(w * scale) // 2 * 2), max(2, int(h * scale) // 2 * 2))
            width = self._size[0] * (2 if self.with_gt else 1)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*'mp4v'),
                                           self.fps, (width, self._size[1]))
            if not self._writer.isOpened():
                raise OSError(f'cannot write video: {self.path}')
        if pred is not None and pred.shape != (h, w):
            pred = cv2.resize(pred, (w, h), interpolation=cv2.INTER_NEAREST)
        label = 'prediction' if pred is not None else 'no mask (dropped)'
        panels = [self._panel(rgb, pred, self._pred_lut, f'{label} {note}'.strip())]
        if self.with_gt:
            panels.append(self._panel(rgb, gt, self._gt_lut,
                                      'ground truth' if gt is not None else 'no ground truth'))
        frame = np.concatenate(panels, axis=1)
        self._writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> Path | None:
        """Finish the file; None when no frame was added."""
        if self._writer is None:
            return None
        self._writer.release()
        self._writer = None
        return self.path
