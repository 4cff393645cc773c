"""Thread-safe frame counters, rates and latency percentiles for the node's diagnostics."""
from __future__ import annotations

import collections
import threading
import time

import numpy as np


class RateMeter:
    """Events per second over a sliding window of monotonic timestamps."""

    def __init__(self, window_s: float = 5.0, maxlen: int = 2000) -> None:
        self.window_s = window_s
        self._times: collections.deque[float] = collections.deque(maxlen=maxlen)

    def tick(self, now: float | None = None) -> None:
        self._times.append(time.monotonic() if now is None else now)

    def rate(self, now: float | None = None, idle_s: float | None = None) -> float:
        """Rate in Hz over the window; 0 with fewer than two events in it, or none for `idle_s`."""
        now = time.monotonic() if now is None else now
        recent = [t for t in self._times if now - t <= self.window_s]
        if len(recent) < 2 or (idle_s is not None and now - recent[-1] > idle_s):
            return 0.0
        span = recent[-1] - recent[0]
        return (len(recent) - 1) / span if span > 0 else 0.0


# Where a frame's time goes, in order (milliseconds; `take` and `diagnostics` run on the
# executor thread, the rest in the model loop): the subscription callback, message -> array,
# resize + normalise, the network, labels at the input size, then the three publications;
# `diagnostics` is the timer's own cost per period.
STAGES = ('take', 'convert', 'prepare', 'model', 'post', 'publish_mask', 'camera_info',
          'overlay', 'diagnostics')


class FrameStats:
    """Counters shared by the subscription callbacks, the worker and the diagnostics timer.

    Invariant once the worker is idle: received == answered + dropped + rejected. Frames the
    transport lost before they reached the node are counted apart (`lost_in_transport`, from
    rclpy's message_lost event; `skipped_in_transport`, from gaps in the publisher's sequence
    numbers, which also covers frames overwritten in the reader queue), as are frames whose
    stamps are not in the node's clock.
    """

    def __init__(self, latency_window: int = 200, idle_s: float | None = None) -> None:
        self._lock = threading.Lock()
        self.idle_s = idle_s              # rates read 0 after this long without an event
        self.received = 0
        self.answered = 0
        self.dropped = 0
        self.rejected = 0
        self.faults = 0
        self.resets = 0
        self.last_error = ''
        self.last_error_time = -1e9       # monotonic time of the last model fault
        self.last_reject_time = -1e9      # monotonic time of the last rejected frame
        self.last_reset_reason = ''
        self.inference_ms = 0.0
        self.lost_in_transport = 0
        self.skipped_in_transport = 0     # publisher sequence-number gaps
        self.last_lost_time = -1e9        # monotonic time of the last transport loss
        self.last_received_time = -1e9    # monotonic time of the last received frame
        self.stamps_off_clock = 0         # frames stamped outside the node's clock
        self.camera_info_paired = 0       # dmnet/camera_info published (stamp = the mask's)
        self.camera_info_missing = 0      # masks whose CameraInfo never came in time
        self.last_stamp_offset_s = 0.0    # node clock - stamp of the newest answered frame
        # Stamp delays since the last diagnostics update (timestamp status), seconds.
        self._delay_min: float | None = None
        self._delay_max: float | None = None
        self._latency_ms: collections.deque[float] = collections.deque(maxlen=latency_window)
        self._inference_ms: collections.deque[float] = collections.deque(maxlen=latency_window)
        self._in_rate = RateMeter()
        self.rate_window_s = self._in_rate.window_s
        self._out_rate = RateMeter()
        self._stages: dict[str, collections.deque[float]] = {
            name: collections.deque(maxlen=latency_window) for name in STAGES}
        self._stage_total_ms = dict.fromkeys(STAGES, 0.0)   # since start (per-run means)
        self.warmup_ms = 0.0              # the configure-time warm-up, apart from the frames
        self.warmup_steps = 0

    def on_received(self) -> None:
        with self._lock:
            self.received += 1
            self.last_received_time = time.monotonic()
            self._in_rate.tick()

    def on_lost(self, n: int) -> None:
        """Frames the transport lost (rclpy message_lost event: total_count_change)."""
        if n <= 0:
            return
        with self._lock:
            self.lost_in_transport += n
            self.last_lost_time = time.monotonic()

    def on_skipped(self, n: int) -> None:
        """Frames missing between two received ones (publisher sequence numbers)."""
        if n <= 0:
            return
        with self._lock:
            self.skipped_in_transport += n
            self.last_lost_time = time.monotonic()

    def on_stamp_delay(self, delay_s: float, in_clock: bool) -> None:
        """Node clock minus a frame's stamp; `in_clock` False counts it as off the clock."""
        with self._lock:
            self.last_stamp_offset_s = delay_s
            self._delay_min = delay_s if self._delay_min is None else min(self._delay_min,
                                                                          delay_s)
            self._delay_max = delay_s if self._delay_max is None else max(self._delay_max,
                                                                          delay_s)
            if not in_clock:
                self.stamps_off_clock += 1

    def take_delay_window(self) -> tuple[float | None, float | None]:
        """(earliest, latest) stamp delay since the previous call, then start a new window."""
        with self._lock:
            out = (self._delay_min, self._delay_max)
            self._delay_min = self._delay_max = None
            return out

    def on_camera_info(self, paired: int = 0, missing: int = 0) -> None:
        """CameraInfo published with a mask (`paired`), or given up on (`missing`)."""
        with self._lock:
            self.camera_info_paired += paired
            self.camera_info_missing += missing

    def on_rejected(self, error: str) -> None:
        with self._lock:
            self.rejected += 1
            self.last_error = error
            self.last_reject_time = time.monotonic()

    def on_dropped(self, n: int = 1) -> None:
        with self._lock:
            self.dropped += n

    def on_fault(self, error: str) -> None:
        """A model failure: the frame counts as dropped, the error is kept for diagnostics."""
        with self._lock:
            self.faults += 1
            self.dropped += 1
            self.last_error = error
            self.last_error_time = time.monotonic()

    def on_reset(self, reason: str) -> None:
        with self._lock:
            self.resets += 1
            self.last_reset_reason = reason

    def on_answered(self, latency_ms: float | None, inference_ms: float) -> None:
        with self._lock:
            self.answered += 1
            self.inference_ms = inference_ms
            self._inference_ms.append(inference_ms)
            self._out_rate.tick()
            if latency_ms is not None:
                self._latency_ms.append(latency_ms)

    def on_stages(self, **ms: float) -> None:
        """Milliseconds spent per stage (names from STAGES) on one frame or period."""
        with self._lock:
            for name, value in ms.items():
                self._stages[name].append(float(value))
                self._stage_total_ms[name] += float(value)

    def on_warmup(self, ms: float, steps: int) -> None:
        """The model's warm-up at configure: reported apart, never counted as frames."""
        with self._lock:
            self.warmup_ms = float(ms)
            self.warmup_steps = int(steps)

    def snapshot(self) -> dict[str, float | int | str]:
        """A consistent copy of everything the diagnostics report."""
        with self._lock:
            lat = np.asarray(self._latency_ms, dtype=np.float64)
            inf = np.asarray(self._inference_ms, dtype=np.float64)
            now = time.monotonic()
            return {
                'frames_received': self.received,
                'frames_answered': self.answered,
                'frames_dropped': self.dropped,
                'frames_rejected': self.rejected,
                'faults': self.faults,
                'resets': self.resets,
                'last_error': self.last_error,
                'last_reset_reason': self.last_reset_reason,
                'inference_ms': self.inference_ms,
                'inference_ms_p50': float(np.percentile(inf, 50)) if inf.size else 0.0,
                'inference_ms_p95': float(np.percentile(inf, 95)) if inf.size else 0.0,
                'latency_ms_p50': float(np.percentile(lat, 50)) if lat.size else 0.0,
                'latency_ms_p95': float(np.percentile(lat, 95)) if lat.size else 0.0,
                'input_rate_hz': self._in_rate.rate(now, self.idle_s),
                'output_rate_hz': self._out_rate.rate(now, self.idle_s),
                'seconds_since_fault': now - self.last_error_time,
                'seconds_since_reject': now - self.last_reject_time,
                'seconds_since_lost': now - self.last_lost_time,
                'seconds_since_frame': now - self.last_received_time,
                'frames_lost_in_transport': self.lost_in_transport,
                'frames_skipped_in_transport': self.skipped_in_transport,
                'stamps_off_clock': self.stamps_off_clock,
                'camera_info_paired': self.camera_info_paired,
                'camera_info_missing': self.camera_info_missing,
                'stamp_offset_s': self.last_stamp_offset_s,
                'latency_samples': int(lat.size),
                'warmup_ms': self.warmup_ms,
                'warmup_steps': self.warmup_steps,
                **{f'stage_ms.{name}': float(np.mean(v))
                   for name, v in self._stages.items() if v},
                **{f'stage_total_ms.{name}': total
                   for name, total in self._stage_total_ms.items() if total > 0},
            }
