"""The replay's report: the `report.json` dict from the collected counts, and its summary."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dmnet_ros import bag_io
from dmnet_ros.replay.collect import Collector, OutputRecorder
from dmnet_ros.replay.options import ReplayOptions
from dmnet_ros.report import latency_stats, write_report


def build_report(opts: ReplayOptions, info: bag_io.BagInfo, coll: Collector, *,
                 stamps_rewritten: int, names: list[str], names_from: str, labels: dict | None,
                 node_rc: int | None, wall: float, video_path: Path | None,
                 recorder: OutputRecorder | None) -> dict:
    """Assemble the report of a finished run and write the report folder (`opts.out`).

    Args:
        opts: the run's options.
        info: the replayed bag.
        coll: the collector after every frame was settled.
        stamps_rewritten: frames whose header stamp had to be replaced.
        names: class names used for scoring; `names_from` says where they came from.
        labels: the node's `/dmnet/labels` JSON (None if it never came).
        node_rc: exit code of the node started by the harness (None if external).
        wall: seconds the whole run took.
        video_path: the overlay video written, if any.
        recorder: the `--record-bag` writer, if any.

    Returns:
        The report (also written as report.json / report.md by `dmnet_ros.report`).
    """
    lockstep = opts.mode == 'lockstep'
    out = Path(opts.out)
    report: dict[str, Any] = {
        'bag': str(opts.bag), 'mode': opts.mode, 'rate': opts.rate if not lockstep else None,
        'frames_sent': coll.sent, 'frames_answered': coll.answered,
        'frames_dropped': coll.dropped, 'frames_unmatched': coll.unmatched,
        'frames_resent': coll.resent, 'masks_duplicate': coll.duplicates,
        'masks_late': coll.late, 'masks_malformed': len(coll.bad_masks),
        'frames_in_bag': info.image_count, 'stamps_rewritten': stamps_rewritten,
        'latency_ms': latency_stats(coll.latencies),
        'answered_fps': coll.answered / coll.send_s if coll.send_s > 0 else None,
        'wall_s': wall, 'image_topic': opts.image_topic,
        'gt_topic': info.gt_topic, 'class_names': names, 'class_names_from': names_from,
        'node': {'how': 'external' if opts.external else 'started by replay',
                 'checkpoint': opts.checkpoint or '(shipped model)', 'device': opts.device,
                 'inference_size': list(opts.inference_size) if opts.inference_size else None,
                 'exit_code': node_rc, 'labels': labels,
                 'log': str(out / 'node.log') if not opts.external else None},
    }
    if coll.frame_scores:
        summary = coll.scorer.summary()
        report.update(summary)
        report['frames_scored'] = summary['frames']
        report['gt_binarized'] = coll.gt_binarized
    else:
        report.update({'mean_dice': None, 'mean_iou': None, 'binary_dice': None,
                       'frames_scored': 0})
    files: dict[str, Any] = {}
    if video_path is not None:
        files['overlay_video'] = video_path
    if recorder is not None:
        files['outputs_bag'] = recorder.path
    report['files'] = files
    (out / 'frames.json').write_text(json.dumps(coll.per_frame) + '\n')
    report['files']['frames_json'] = out / 'frames.json'
    write_report(out, report, coll.frame_scores, coll.latencies)
    return report


def summary_lines(report: dict) -> list[str]:
    """The few lines `replay` and `make demo` print."""
    lat = report['latency_ms']

    def f(v: Any, fmt: str) -> str:
        return '-' if v is None else format(v, fmt)

    lines = [f"frames: sent {report['frames_sent']}, answered {report['frames_answered']}, "
             f"dropped {report['frames_dropped']}, unmatched {report['frames_unmatched']}",
             f"latency ms: p50 {f(lat['p50'], '.1f')}, p95 {f(lat['p95'], '.1f')}, "
             f"p99 {f(lat['p99'], '.1f')}"]
    if report.get('mean_dice') is not None or report.get('binary_dice') is not None:
        lines.append(f"scores: mean Dice {f(report.get('mean_dice'), '.4f')}, mean IoU "
                     f"{f(report.get('mean_iou'), '.4f')}, binary Dice "
                     f"{f(report.get('binary_dice'), '.4f')} over {report['frames_scored']} "
                     'frames')
    else:
        lines.append('scores: no ground truth in the bag')
    return lines
