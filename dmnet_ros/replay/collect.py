"""Matching masks to frames by stamp, scoring them, and `--record-bag`."""
from __future__ import annotations

import collections
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from dmnet_ros import bag_io
from dmnet_ros.replay.options import MASK_TOPIC, Sent
from dmnet_ros.report import OverlayVideo


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
        self._pending: collections.OrderedDict[int, Sent] = collections.OrderedDict()
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
    def add(self, sent: Sent) -> None:
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

    def _settle(self, sent: Sent, answer: tuple[float, np.ndarray] | None) -> None:
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

    def write(self, sent: Sent, pred: np.ndarray | None, t_recv: float | None,
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

