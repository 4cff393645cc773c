"""One replay run: read the bag, start or find the node, send every frame, settle, report."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from dmnet_ros import bag_io
from dmnet_ros.replay.child_node import NodeProcess
from dmnet_ros.replay.collect import Collector, OutputRecorder
from dmnet_ros.replay.options import (
    LABELS_TOPIC,
    MAX_LOCKSTEP_MISSES,
    ReplayError,
    ReplayOptions,
    Sent,
)
from dmnet_ros.replay.results import build_report
from dmnet_ros.replay.ros_link import RosLink
from dmnet_ros.report import OverlayVideo


def _class_names(labels: dict | None, opts: ReplayOptions, info: bag_io.BagInfo
                 ) -> tuple[list[str], dict[int, int] | None, str]:
    """Class names for scoring, mask value -> class id map, and where they came from."""
    if labels and isinstance(labels.get('class_names'), list):
        names = [str(n) for n in labels['class_names']]
        values = labels.get('values')
        lut = None
        if isinstance(values, dict) and labels.get('mask_value_mode', 'class_ids') != 'class_ids':
            lut = {int(v): names.index(k) for k, v in values.items() if k in names}
        return names, lut, LABELS_TOPIC
    if opts.checkpoint:
        from dmnet_core.checkpoint import load_checkpoint

        cfg, _, _ = load_checkpoint(opts.checkpoint)
        return list(cfg.class_names), None, f'checkpoint {opts.checkpoint}'
    if 'dmnet.class_names' in info.custom:
        return list(json.loads(info.custom['dmnet.class_names'])), None, 'bag custom_data'
    from dmnet_core.config import BINARY_CLASSES

    return list(BINARY_CLASSES), None, 'default (binary)'


def _gt_lookup(info: bag_io.BagInfo) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Ground truth by header stamp and by log time (bags with zero stamps match by log)."""
    if info.gt_topic is None:
        return {}, {}
    by_stamp: dict[int, np.ndarray] = {}
    by_log: dict[int, np.ndarray] = {}
    for stamp, log_ns, mask in bag_io.read_masks(info.path, info.gt_topic):
        if stamp:
            by_stamp[stamp] = mask
        by_log[log_ns] = mask
    return by_stamp, by_log


def run_replay(opts: ReplayOptions) -> dict:
    """Replay `opts.bag` through the node and write the report folder; returns the report.

    Raises:
        bag_io.BagError: missing or unreadable bag, or no image topic in it.
        ReplayError: the node did not start or could not be reached.
    """
    t_start = time.monotonic()
    if opts.mode not in ('rate', 'lockstep'):
        raise ValueError(f"mode must be 'rate' or 'lockstep', got {opts.mode!r}")
    if opts.rate <= 0:
        raise ValueError(f'--rate must be > 0, got {opts.rate}')
    info = bag_io.inspect_bag(opts.bag, opts.image_topic, opts.gt_topic)
    gt_by_stamp, gt_by_log = _gt_lookup(info)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    lockstep = opts.mode == 'lockstep'
    node_proc: NodeProcess | None = None
    link: RosLink | None = None
    video: OverlayVideo | None = None
    recorder: OutputRecorder | None = None
    bar = None
    video_path: Path | None = None
    node_rc: int | None = None
    try:
        if not opts.external:
            node_proc = NodeProcess(opts, out / 'node.log')
        link = RosLink(opts.image_topic, lockstep)
        if node_proc is not None:
            node_proc.wait_ready(opts.startup_timeout)
        link.wait_connected(opts.startup_timeout if opts.external else 30.0, opts.image_topic)
        labels = link.wait_labels(5.0)
        names, value_map, names_from = _class_names(labels, opts, info)
        fps = float(info.custom.get('dmnet.fps', 0) or 0) or (
            (info.image_count - 1) / info.duration_s if info.duration_s > 0 else 25.0)
        if opts.video:
            video = OverlayVideo(out / 'overlay.mp4', fps, with_gt=info.gt_topic is not None)
        if opts.record_bag:
            rec_path = out / 'outputs_bag'
            if rec_path.exists():
                shutil.rmtree(rec_path)
            recorder = OutputRecorder(rec_path, opts.image_topic)
        sequence = info.custom.get('dmnet.sequence') or Path(opts.bag).name
        coll = Collector(names, value_map, sequence, video, recorder, opts.gt_topic)
        link.on_mask = coll.on_mask
        bar = tqdm(total=info.image_count, unit='frame', desc=f'replay {opts.mode}',
                   disable=not opts.progress or None)
        stamps_rewritten = _send_all(opts, info, link, coll, gt_by_stamp, gt_by_log, bar)
    finally:
        if bar is not None:
            bar.close()
        if link is not None:
            link.close()
        if node_proc is not None:
            node_rc = node_proc.stop()
        if video is not None:
            video_path = video.close()
        if recorder is not None:
            recorder.close()

    wall = time.monotonic() - t_start
    return build_report(opts, info, coll, stamps_rewritten=stamps_rewritten, names=names,
                        names_from=names_from, labels=labels, node_rc=node_rc, wall=wall,
                        video_path=video_path, recorder=recorder)


def _send_all(opts: ReplayOptions, info: bag_io.BagInfo, link: RosLink, coll: Collector,
              gt_by_stamp: dict, gt_by_log: dict, bar: Any) -> int:
    """Publish every frame (rate or lockstep) and settle all of them; returns how many header
    stamps had to be replaced (zero or repeated stamps cannot be matched)."""
    lockstep = opts.mode == 'lockstep'
    used: set[int] = set()
    rewritten = 0
    t0 = first_log = None
    last_stamp = 0
    misses = 0                      # lockstep: consecutive frames without an answer
    send_start = time.monotonic()
    for frame in bag_io.iter_frames(info.path, opts.image_topic):
        stamp = frame.stamp_ns
        if stamp == 0 or stamp in used:
            # Unmatchable stamp: use the log time, or just after the previous one.
            stamp = frame.log_ns if frame.log_ns not in used else last_stamp + 1
            while stamp in used:
                stamp += 1
            rewritten += 1
        used.add(stamp)
        last_stamp = stamp
        gt = gt_by_stamp.get(frame.stamp_ns) if frame.stamp_ns else None
        if gt is None:
            gt = gt_by_log.get(frame.log_ns)
        if gt is not None and gt.shape != frame.rgb.shape[:2]:
            raise bag_io.BagError(f'bag {info.path}: ground truth {gt.shape} and image '
                                  f'{frame.rgb.shape[:2]} differ in size at frame {frame.index}')
        if not lockstep:
            if t0 is None:
                t0, first_log = time.monotonic(), frame.log_ns
            target = t0 + (frame.log_ns - first_log) / 1e9 / opts.rate
            while (delay := target - time.monotonic()) > 0:
                time.sleep(min(delay, 0.01))
                coll.finalize(time.monotonic(), opts.timeout)
        sent = Sent(frame.index, stamp, 0.0, frame.rgb, gt)
        coll.add(sent)
        sent.t_pub = link.publish(frame.rgb, stamp, bag_io.FRAME_ID)
        if lockstep:
            deadline = sent.t_pub + opts.timeout
            while not coll.wait_answer(stamp, min(opts.resend, max(0.0, deadline -
                                                                     time.monotonic()))):
                if time.monotonic() >= deadline:
                    break
                # Lost on the way (best-effort reader) or still busy: send it again.
                sent.sends += 1
                coll.resent += 1
                sent.t_pub = link.publish(frame.rgb, stamp, bag_io.FRAME_ID)
            answered = coll.wait_answer(stamp, 0.0)
            coll.finalize(time.monotonic(), opts.timeout, force=True)
            misses = 0 if answered else misses + 1
            if misses >= MAX_LOCKSTEP_MISSES:
                raise ReplayError(
                    f'{misses} frames in a row got no mask within {opts.timeout:g} s each '
                    f'(frame {frame.index}, {frame.rgb.shape[1]}x{frame.rgb.shape[0]}); with '
                    '--external, a best-effort node input can lose large frames: run the node '
                    'with input.reliability:=reliable')
        else:
            coll.finalize(time.monotonic(), opts.timeout)
        bar.update(1)
        bar.set_postfix(answered=coll.answered, dropped=coll.dropped, refresh=False)
    # Rate mode: wait for the last answers (bounded), then settle whatever is left.
    deadline = time.monotonic() + opts.timeout
    while coll.pending() and time.monotonic() < deadline:
        time.sleep(0.01)
        coll.finalize(time.monotonic(), opts.timeout)
    coll.send_s = time.monotonic() - send_start
    coll.finalize(time.monotonic(), opts.timeout, force=True)
    return rewritten

