"""`replay`: play a rosbag2 bag through the dmnet node and score what comes back.

    replay --bag BAG --out DIR [--lockstep | --rate R] [--external] [--checkpoint PATH]
           [--device D] [--inference-size HxW] [--timeout S] [--record-bag]

The harness reads the bag with `rosbags` (sqlite3 or mcap), publishes its image topic through
rclpy with the bag's header stamps, collects `/dmnet/mask`, matches masks to frames by header
stamp and writes the report folder (see `dmnet_ros.report`). By default it starts the node
itself (`segment_node` as a child process, log in DIR/node.log); `--external` uses a running one.

Modes:
    rate R     frames leave at R x the recorded rate (default 1.0). The node keeps only the
               newest frame, so a slow node drops frames: what a live camera would see.
    lockstep   frame i+1 leaves only after the mask of frame i arrived (or --timeout passed;
               the frame is re-sent every --resend s meanwhile): the accuracy mode, nothing
               dropped.

Latency = the harness's wall clock at mask receipt minus at frame publish (bag stamps are in
the past). Counting: every frame sent ends up answered (a mask with its stamp arrived) or
dropped; masks with a stamp that matches no frame sent are counted as unmatched.
"""
from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from dmnet_core.cli import parse_model_size
from dmnet_ros import bag_io
from dmnet_ros.report import OverlayVideo, latency_stats, write_report

log = logging.getLogger('replay')

MASK_TOPIC = '/dmnet/mask'
LABELS_TOPIC = '/dmnet/labels'
READY_LINE = 'dmnet ready'
EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
MAX_LOCKSTEP_MISSES = 3     # lockstep gives up after this many unanswered frames in a row


class ReplayError(RuntimeError):
    """The run could not go on (node did not start, no subscriber, ...); the text says why."""


@dataclass
class ReplayOptions:
    """Everything one replay needs; `main` fills it from the command line."""

    bag: Path
    out: Path
    mode: str = 'rate'                       # 'rate' or 'lockstep'
    rate: float = 1.0
    external: bool = False
    checkpoint: str = ''
    device: str = 'auto'
    image_topic: str = bag_io.IMAGE_TOPIC
    gt_topic: str = bag_io.GT_TOPIC
    inference_size: tuple[int, int] | None = None
    timeout: float = 60.0                    # per frame (lockstep) / for the last masks (rate)
    resend: float = 5.0                      # lockstep: re-send an unanswered frame this often
    startup_timeout: float = 180.0           # node start-up and discovery
    record_bag: bool = False
    video: bool = True
    progress: bool = True
    node_params: list[str] = field(default_factory=list)   # extra `name:=value` for the node


@dataclass
class _Sent:
    """A frame on its way: kept until its mask arrives or it is declared dropped."""

    index: int
    stamp_ns: int
    t_pub: float
    rgb: np.ndarray
    gt: np.ndarray | None
    sends: int = 1


# --- node process ---------------------------------------------------------------------------

class NodeProcess:
    """`segment_node` as a child process; its output goes to a log file and is watched for
    the ready line. Always stopped by `stop()` (SIGINT, then SIGKILL)."""

    def __init__(self, opts: ReplayOptions, log_path: Path) -> None:
        code = 'import sys; from dmnet_ros.segment_node import main; sys.exit(main())'
        # Reliable input: with the default best-effort reader, Fast DDS loses frames larger
        # than its shared-memory segment (~512 KB, e.g. 854 x 480 rgb8) whole. The node still
        # keeps only the newest frame (depth 1), so rate mode measures its own drops.
        cmd = [sys.executable, '-c', code, '--ros-args', '-r', f'image:={opts.image_topic}',
               '-p', f'device:={opts.device}', '-p', 'input.reliability:=reliable']
        if opts.checkpoint:
            cmd += ['-p', f'checkpoint:={opts.checkpoint}']
        if opts.inference_size:
            h, w = opts.inference_size
            cmd += ['-p', f'inference_size:=[{h}, {w}]']
        for prm in opts.node_params:
            cmd += ['-p', prm]
        env = dict(os.environ)
        # The package's own source tree first, so the child imports the same dmnet code.
        root = str(Path(__file__).resolve().parents[1])
        env['PYTHONPATH'] = os.pathsep.join([root] + [p for p in
                                                      env.get('PYTHONPATH', '').split(os.pathsep)
                                                      if p])
        env['PYTHONUNBUFFERED'] = '1'
        env.setdefault('RCUTILS_LOGGING_BUFFERED_STREAM', '0')
        self.log_path = log_path
        self._log = log_path.open('w')
        self._log.write('$ ' + ' '.join(cmd) + '\n')
        self._log.flush()
        self._ready = threading.Event()
        self._tail: collections.deque[str] = collections.deque(maxlen=15)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, text=True, bufsize=1)
        self._reader = threading.Thread(target=self._read, name='node-log', daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._log.write(line)
            self._log.flush()
            self._tail.append(line.rstrip())
            if READY_LINE in line:
                self._ready.set()

    def tail(self) -> str:
        """The node's last log lines on one line (for error messages)."""
        return ' | '.join(x for x in self._tail if x.strip())

    def wait_ready(self, timeout: float) -> None:
        """Block until the node printed its ready line; a clear error if it exits or hangs."""
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.2):
            if self.proc.poll() is not None:
                self._reader.join(timeout=2.0)
                raise ReplayError(f'segment_node exited with code {self.proc.returncode} before '
                                  f'it was ready (log {self.log_path}): {self.tail()}')
            if time.monotonic() > deadline:
                raise ReplayError(f'segment_node not ready after {timeout:.0f} s '
                                  f'(log {self.log_path}): {self.tail()}')

    def stop(self, timeout: float = 10.0) -> int | None:
        """Interrupt the node (it shuts down cleanly on SIGINT), kill it if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5.0)
        self._reader.join(timeout=2.0)
        self._log.close()
        return self.proc.returncode


# --- ROS side -------------------------------------------------------------------------------

class RosLink:
    """The harness's rclpy node in its own context: image publisher, mask and labels
    subscriptions, spun on a background thread."""

    def __init__(self, image_topic: str, lockstep: bool) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import (
            DurabilityPolicy,
            HistoryPolicy,
            QoSProfile,
            ReliabilityPolicy,
        )
        from sensor_msgs.msg import Image
        from std_msgs.msg import String

        self._rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(args=[], context=self.context)
        self.node = rclpy.create_node('dmnet_replay', context=self.context)
        # Reliable in both modes: a reliable writer reaches best-effort and reliable readers,
        # and a best-effort one loses large frames (Fast DDS drops whole 1 MB+ samples when a
        # fragment misses). Rate mode keeps only the newest frame, as a camera driver would.
        pub_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10 if lockstep else 1,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)
        self.pub = self.node.create_publisher(Image, image_topic, pub_qos)
        # Masks: reliable (the node's output QoS), deep enough for a burst of answers.
        mask_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                              reliability=ReliabilityPolicy.RELIABLE,
                              durability=DurabilityPolicy.VOLATILE)
        self.on_mask: Any = None
        self.mask_sub = self.node.create_subscription(Image, MASK_TOPIC, self._mask_cb,
                                                      mask_qos)
        labels_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                                reliability=ReliabilityPolicy.RELIABLE,
                                durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.labels: dict | None = None
        self._labels_event = threading.Event()
        self.node.create_subscription(String, LABELS_TOPIC, self._labels_cb, labels_qos)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, name='replay-spin', daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # shutdown races end the spin; nothing to report
            pass

    def _mask_cb(self, msg: Any) -> None:
        t = time.monotonic()
        if self.on_mask is not None:
            self.on_mask(msg, t)

    def _labels_cb(self, msg: Any) -> None:
        try:
            self.labels = json.loads(msg.data)
        except ValueError:
            log.warning('unparseable %s: %r', LABELS_TOPIC, msg.data[:200])
            return
        self._labels_event.set()

    def wait_labels(self, timeout: float) -> dict | None:
        """The node's `/dmnet/labels` JSON (transient local), or None after `timeout`."""
        self._labels_event.wait(timeout)
        return self.labels

    def wait_connected(self, timeout: float, image_topic: str) -> None:
        """Until the node subscribes to the images and publishes masks (DDS discovery)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pub.get_subscription_count() > 0 and self.mask_sub.get_publisher_count() > 0:
                return
            time.sleep(0.05)
        raise ReplayError(
            f'no node found: subscribers on {image_topic}: {self.pub.get_subscription_count()}, '
            f'publishers on {MASK_TOPIC}: {self.mask_sub.get_publisher_count()} after '
            f'{timeout:.0f} s (same ROS_DOMAIN_ID? is segment_node running?)')

    def publish(self, rgb: np.ndarray, stamp_ns: int, frame_id: str) -> float:
        """Publish one rgb8 frame; returns the monotonic publish time."""
        from dmnet_ros.image_codec import rgb_to_image

        msg = rgb_to_image(rgb, 'rgb8')
        sec, nsec = bag_io.ns_to_sec_nsec(stamp_ns)
        msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nsec
        msg.header.frame_id = frame_id
        t = time.monotonic()
        self.pub.publish(msg)
        return t

    def close(self) -> None:
        """Stop spinning and shut this context down (the node process is not touched)."""
        self.on_mask = None
        try:
            self.executor.shutdown(timeout_sec=2.0)
            self.node.destroy_node()
        finally:
            if self.context.ok():
                self._rclpy.shutdown(context=self.context)
            self._thread.join(timeout=5.0)


# --- matching and scoring ---------------------------------------------------------------------

class Collector:
    """Matches masks to frames by stamp and finalizes frames in order: score, video, bag.

    Thread-safety: `on_mask` runs on the executor thread; everything else on the main thread.
    """

    def __init__(self, class_names: list[str], value_to_class: dict[int, int] | None,
                 sequence: str, video: OverlayVideo | None, recorder: Any,
                 gt_topic: str) -> None:
        from dmnet_core.metrics import SegmentationScorer

        self.class_names = class_names
        self._lut = None
        if value_to_class:
            # Mask values -> class ids (e.g. binary_255: 255 -> 1); unknown values stay.
            self._lut = np.arange(256, dtype=np.uint8)
            for v, c in value_to_class.items():
                self._lut[int(v)] = int(c)
        self.scorer = SegmentationScorer(class_names)
        self.sequence = sequence
        self.video = video
        self.recorder = recorder
        self.gt_topic = gt_topic
        self._cond = threading.Condition()
        self._answers: dict[int, tuple[float, np.ndarray]] = {}
        self._pending: collections.OrderedDict[int, _Sent] = collections.OrderedDict()
        self._known: set[int] = set()          # every stamp ever sent
        self._done: set[int] = set()           # stamps finalized
        self._last_answered_index = -1
        self.sent = self.answered = self.dropped = 0
        self.unmatched = self.duplicates = self.late = self.resent = 0
        self.gt_binarized = False
        self.latencies: list[float] = []
        self.frame_scores: list[dict] = []
        self.per_frame: list[dict] = []
        self.bad_masks: list[str] = []
        self.send_s = 0.0                      # seconds from first publish to last answer

    # executor thread
    def on_mask(self, msg: Any, t_recv: float) -> None:
        from dmnet_ros.image_codec import image_to_array

        stamp = bag_io.stamp_to_ns(msg.header.stamp)
        try:
            mask = np.array(image_to_array(msg))
        except ValueError as exc:
            with self._cond:
                self.bad_masks.append(str(exc))
            return
        if mask.ndim == 3:
            mask = mask[:, :, 0]
        if self._lut is not None:
            mask = self._lut[mask]
        with self._cond:
            if stamp not in self._known:
                self.unmatched += 1
            elif stamp in self._answers:
                self.duplicates += 1
            elif stamp in self._done:
                self.late += 1          # arrived after its frame was declared dropped
            else:
                self._answers[stamp] = (t_recv, mask)
                sent = self._pending.get(stamp)
                if sent is not None:
                    self._last_answered_index = max(self._last_answered_index, sent.index)
            self._cond.notify_all()

    # main thread
    def add(self, sent: _Sent) -> None:
        """Register a frame before it is published (its mask may come back at once)."""
        with self._cond:
            self._pending[sent.stamp_ns] = sent
            self._known.add(sent.stamp_ns)
            self.sent += 1

    def wait_answer(self, stamp: int, timeout: float) -> bool:
        """True once the mask of `stamp` arrived (waits up to `timeout` s)."""
        with self._cond:
            return self._cond.wait_for(lambda: stamp in self._answers, timeout)

    def pending(self) -> int:
        """Frames sent and not settled yet."""
        with self._cond:
            return len(self._pending)

    def finalize(self, now: float, timeout: float, force: bool = False) -> None:
        """Settle frames from the oldest: answered, or dropped once a later frame was answered
        (the node answers in order), `timeout` passed since publish, or `force`."""
        while True:
            with self._cond:
                if not self._pending:
                    return
                stamp, sent = next(iter(self._pending.items()))
                answer = self._answers.pop(stamp, None)
                if answer is None and not (force or self._last_answered_index > sent.index
                                           or now - sent.t_pub > timeout):
                    return
                del self._pending[stamp]
                self._done.add(stamp)
            self._settle(sent, answer)

    def _settle(self, sent: _Sent, answer: tuple[float, np.ndarray] | None) -> None:
        record: dict[str, Any] = {'index': sent.index, 'stamp_ns': sent.stamp_ns,
                                  'sends': sent.sends}
        pred = None
        if answer is None:
            self.dropped += 1
            record['answered'] = False
        else:
            t_recv, pred = answer
            self.answered += 1
            latency = (t_recv - sent.t_pub) * 1e3
            self.latencies.append(latency)
            record.update(answered=True, latency_ms=latency)
            if pred.shape != sent.rgb.shape[:2]:
                # The node answers at input resolution; anything else is resized for scoring.
                h, w = sent.rgb.shape[:2]
                pred = cv2.resize(pred, (w, h), interpolation=cv2.INTER_NEAREST)
                record['resized'] = True
            if sent.gt is not None:
                record.update(self._score(pred, sent.gt))
        self.per_frame.append(record)
        if self.video is not None:
            self.video.add(sent.rgb, pred, sent.gt, note=f'#{sent.index}')
        if self.recorder is not None:
            self.recorder.write(sent, pred, answer[0] if answer else None, self.gt_topic)

    def _score(self, pred: np.ndarray, gt: np.ndarray) -> dict:
        n = len(self.class_names)
        gt_ids = gt
        if n == 2 and int(gt.max(initial=0)) > 1:
            # A binary model scored on a parts/type ground truth: any instrument is class 1.
            gt_ids = ((gt > 0) & (gt != 255)).astype(np.uint8)
            self.gt_binarized = True
        scores = self.scorer.update(pred, gt_ids, sequence=self.sequence)
        self.frame_scores.append(scores)
        return {'dice': scores['dice'], 'iou': scores['iou'],
                'binary_dice': scores['binary_dice']}


class OutputRecorder:
    """`--record-bag`: frames, the node's masks and the ground truth into a new bag.

    Log time of a mask = frame stamp + measured latency, so `ros2 bag play` shows the delay.
    """

    def __init__(self, path: Path, image_topic: str) -> None:
        self.path = path
        self.image_topic = image_topic
        self._bag = bag_io.BagWriter(path, 'sqlite3', {'dmnet.recorded_by': 'replay'})
        self._bag.__enter__()
        self._t0: float | None = None

    def write(self, sent: _Sent, pred: np.ndarray | None, t_recv: float | None,
              gt_topic: str) -> None:
        stamp = sent.stamp_ns
        self._bag.write(self.image_topic, bag_io.rgb_to_msg(sent.rgb, stamp), stamp)
        if sent.gt is not None:
            self._bag.write(gt_topic, bag_io.mask_to_msg(sent.gt, stamp), stamp)
        if pred is not None and t_recv is not None:
            delay = int(max(0.0, t_recv - sent.t_pub) * 1e9)
            self._bag.write(MASK_TOPIC, bag_io.mask_to_msg(pred, stamp), stamp + delay)

    def close(self) -> None:
        self._bag.__exit__(None, None, None)


# --- the run ----------------------------------------------------------------------------------

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
                import shutil
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
    if video is not None and video_path is not None:
        files['overlay_video'] = video_path
    if recorder is not None:
        files['outputs_bag'] = recorder.path
    report['files'] = files
    (out / 'frames.json').write_text(json.dumps(coll.per_frame) + '\n')
    report['files']['frames_json'] = out / 'frames.json'
    write_report(out, report, coll.frame_scores, coll.latencies)
    return report


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
        sent = _Sent(frame.index, stamp, 0.0, frame.rgb, gt)
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


# --- command line -------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    """The `replay` command line."""
    p = argparse.ArgumentParser(
        prog='replay', description='Replay a rosbag2 bag through the dmnet node and write a '
        'report folder (report.json, report.md, plots, overlay.mp4).')
    p.add_argument('--bag', required=True, type=Path, help='rosbag2 folder (or .db3/.mcap file)')
    p.add_argument('--out', required=True, type=Path, help='report folder (created)')
    mode = p.add_mutually_exclusive_group()
    mode.add_argument('--lockstep', action='store_true',
                      help='next frame only after the previous mask arrived (nothing dropped)')
    mode.add_argument('--rate', type=float, default=None,
                      help='publish at R x the recorded rate (default mode, R=1.0)')
    p.add_argument('--external', action='store_true',
                   help='use a running segment_node instead of starting one')
    p.add_argument('--checkpoint', default='', help="node checkpoint ('' = shipped model)")
    p.add_argument('--device', default='auto', help='node device: auto, cpu, cuda, cuda:N')
    p.add_argument('--image-topic', default=bag_io.IMAGE_TOPIC)
    p.add_argument('--gt-topic', default=bag_io.GT_TOPIC)
    p.add_argument('--inference-size', type=parse_model_size, default=None,
                   help="node inference size HxW (default: the checkpoint's)")
    p.add_argument('--timeout', type=float, default=60.0,
                   help='seconds to wait for a mask (lockstep: per frame) (default 60)')
    p.add_argument('--resend', type=float, default=5.0,
                   help='lockstep: re-send an unanswered frame after S seconds (default 5)')
    p.add_argument('--startup-timeout', type=float, default=180.0,
                   help='seconds for the node to start and be discovered (default 180)')
    p.add_argument('--record-bag', action='store_true',
                   help='also record frames, masks and ground truth into DIR/outputs_bag')
    p.add_argument('--no-video', action='store_true', help='skip overlay.mp4')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    p.add_argument('--node-param', action='append', default=[], metavar='NAME:=VALUE',
                   help='extra node parameter (repeatable)')
    return p


def options_from_args(args: argparse.Namespace) -> ReplayOptions:
    """Check the numbers and paths of the command line; build the options."""
    for name in ('timeout', 'resend', 'startup_timeout'):
        if getattr(args, name) <= 0:
            raise ValueError(f'--{name.replace("_", "-")} must be > 0, got {getattr(args, name)}')
    if args.checkpoint and not Path(args.checkpoint).is_file():
        raise FileNotFoundError(f'checkpoint not found: {args.checkpoint}')
    return ReplayOptions(
        bag=args.bag, out=args.out, mode='lockstep' if args.lockstep else 'rate',
        rate=1.0 if args.rate is None else args.rate, external=args.external,
        checkpoint=args.checkpoint, device=args.device, image_topic=args.image_topic,
        gt_topic=args.gt_topic, inference_size=args.inference_size, timeout=args.timeout,
        resend=args.resend, startup_timeout=args.startup_timeout, record_bag=args.record_bag,
        video=not args.no_video, progress=not args.no_progress, node_params=args.node_param)


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


def _raise_interrupt(signum: int, frame: Any) -> None:
    """SIGTERM handler: unwind like Ctrl-C."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Console script `replay`: 0 done, 2 bad input (one line), 1 the run failed."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(name)s: %(message)s')
    previous = None
    if threading.current_thread() is threading.main_thread():
        # SIGTERM unwinds like Ctrl-C, so the node child is always stopped.
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        opts = options_from_args(args)
        report = run_replay(opts)
    except (bag_io.BagError, FileNotFoundError, ValueError) as exc:
        print(f'replay: error: {exc}', file=sys.stderr)
        return EXIT_BAD_INPUT
    except ReplayError as exc:
        print(f'replay: failed: {exc}', file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print('replay: interrupted', file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    for line in summary_lines(report):
        print(line)
    print(f"report: {args.out / 'report.md'}"
          + (f"; overlay video: {report['files']['overlay_video']}"
             if 'overlay_video' in report['files'] else ''))
    return 0


if __name__ == '__main__':
    sys.exit(main())
