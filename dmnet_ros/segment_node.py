"""The `dmnet` node: endoscope images in, instrument masks, overlay, labels and diagnostics out.

Reads as: parameters (node_params) -> convert (image_codec) -> `Segmenter.step` -> publish.
The pieces around it live in modules of their own: the lifecycle transitions (what configure,
activate, deactivate and cleanup create and free) in `lifecycle`, the input subscription, its
QoS and camera_info in `transport`, /diagnostics in `diagnostics`, the process (signals,
executor, autostart, exit codes) in `node_process`. With `autostart: true` (the default) the
process configures and activates the node by itself.

Threads: the executor thread runs the subscription callbacks (validate, then put the frame in
a one-slot buffer: a newer frame replaces an unprocessed one, which counts as dropped), the
reset service, the diagnostics timer and the lifecycle services; the model loop converts (a
view of `msg.data` for rgb8/bgr8 frames, no copy), runs `Segmenter.step` and publishes. Each
stage's time is in the diagnostics (`stage_ms.*`); the model is warmed up at configure. The
process runs the model loop on its main thread (PyTorch's CPU kernels measured about 1.4x slower
from a second Python thread). `~/reset` only records the
request, so it answers at once; the model loop clears the memory before its next frame. Every
received frame ends up answered, dropped or rejected; frames the transport lost are counted.

Topics (relative names resolve in the node's namespace: /dmnet/mask at the root,
/left/dmnet/mask under /left):
  in   image (sensor_msgs/Image, relative: remap it) or, with image_transport:=compressed,
       <image>/compressed (CompressedImage); camera_info beside the image (CameraInfo)
  out  dmnet/mask (mono8), dmnet/overlay (rgb8), dmnet/labels (String JSON, transient local),
       dmnet/camera_info (the camera's CameraInfo whose stamp equals the mask's, with the
       mask's header; waited for up to `camera_info.wait_s`), /diagnostics (in every state)
  srv  ~/reset (std_srvs/Trigger): clear the video memory; the lifecycle services.
The memory also resets when the image size changes, when stamps go backwards (a looped bag)
or jump forward by more than `reset.time_jump_s` (a new case), and after a model fault.

Run: `segment_node --ros-args --params-file config/dmnet.yaml -r image:=/endoscope/image_raw`.
"""
from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleNode
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from dmnet_ros import diagnostics, image_codec, node_params, transport
from dmnet_ros.lifecycle import ManagedNode, StartupError  # noqa: F401 (StartupError: API)
from dmnet_ros.overlay import blend_overlay, palette_table
from dmnet_ros.stats import FrameStats

NODE_NAME = 'dmnet'
LOG_THROTTLE_S = 2.0
CAMERA_INFO_KEEP = 10       # recent CameraInfo messages kept to pair by stamp


@dataclass
class _Frame:
    """A frame waiting in the one-slot buffer (raw or compressed, not decoded yet)."""

    header: Header
    msg: Image | CompressedImage
    compressed: bool


def _stamp_s(header: Header) -> float:
    return header.stamp.sec + header.stamp.nanosec * 1e-9


def _stamp_key(header: Header) -> tuple[int, int]:
    return header.stamp.sec, header.stamp.nanosec


class SegmentNode(ManagedNode, LifecycleNode):
    """Parameters are declared (and checked) in __init__; the lifecycle does the rest."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.segmenter = None
        # Checked before declaring, so a bad override from a params file fails at start-up.
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.p = node_params.declare_all(self)
        self.add_post_set_parameters_callback(self._after_set_parameters)
        self.stats = FrameStats(idle_s=float(self.p['diagnostics.stale_s']))
        self.diag_cfg = diagnostics.DiagConfig.from_params(self.p)
        # Frames, reset and diagnostics in a group of their own, apart from the lifecycle
        # services (matters only if the node is spun by a multi-threaded executor).
        self.io_group = MutuallyExclusiveCallbackGroup()
        self._cond = threading.Condition()
        self._slot: _Frame | None = None
        self._busy = False
        self._stopping = False
        self._reset_request: str | None = None
        self._model_lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._palette = palette_table(list(self.p['overlay.palette']))
        self._hook_calls = 0
        self._last_size: tuple[int, int] | None = None
        self._last_stamp: float | None = None
        self._bank_size = 0
        self._frames_since_reset = 0
        self._camera_infos: collections.deque[CameraInfo] = collections.deque(
            maxlen=CAMERA_INFO_KEEP)
        self._info_lock = threading.Lock()
        # Masks whose CameraInfo has not arrived yet: stamp -> (mask header, give-up time).
        self._info_pending: dict[tuple[int, int], tuple[Header, float]] = {}
        self._info_seen = False         # a CameraInfo arrived since activation
        self._info_publishers = 0       # camera_info publishers (checked every period)
        self.outputs_lock = threading.Lock()     # publishers vs. their destruction
        # The output gate: open only while active. Deactivate closes it under outputs_lock, so
        # once it returns no mask, overlay or camera_info leaves the node; `_epoch` changes on
        # every activate/deactivate, so a step begun before a deactivate is never published.
        self._outputs_open = False
        self._epoch = 0
        self._configure_error = ''
        self._input: transport.ImageInput | None = None
        self._pubs: dict[str, Any] = {}
        self._active_since: float | None = None
        # True while the model loop is inside a step or waiting for a frame: a signal may then
        # abandon it at once (see node_process).
        self.in_step = False
        self.idle = False
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_service(Trigger, '~/reset', self._on_reset, callback_group=self.io_group)
        # /diagnostics in every lifecycle state, from construction to destruction.
        self._diag_timer = self.create_timer(float(self.p['diagnostics.period_s']),
                                             self._publish_diagnostics,
                                             callback_group=self.io_group)

    # -- parameters ----------------------------------------------------------------------
    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        for prm in params:
            reason = node_params.check_value(prm.name, prm.value)
            if reason is None and prm.name == 'mask_value_mode' and self.segmenter is not None \
                    and prm.value == 'binary_255' and self.segmenter.task != 'binary':
                reason = f'mask_value_mode=binary_255 needs the binary task, model is ' \
                         f'{self.segmenter.task!r}'
            if reason is not None:
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _after_set_parameters(self, params: list[Parameter]) -> None:
        for prm in params:
            self.p[prm.name] = prm.value
            if prm.name == 'overlay.palette':
                self._palette = palette_table(list(prm.value))
            elif prm.name.startswith('debug.'):
                self._install_debug_hook()
            elif prm.name == 'mask_value_mode' and 'labels' in self._pubs:
                self._publish_labels()

    def _install_debug_hook(self) -> None:
        """TEST HOOKS through `Segmenter.fault_hook`: faults every n-th step, slow steps."""
        n = int(self.p['debug.inject_fault_every'])
        delay = float(self.p['debug.step_delay_s'])
        if self.segmenter is None:
            return
        if n <= 0 and delay <= 0:
            self.segmenter.fault_hook = None
            return

        def hook(_frame_index: int) -> None:
            if delay > 0:
                time.sleep(delay)
            self._hook_calls += 1
            if n > 0 and self._hook_calls % n == 0:
                raise RuntimeError('CUDA error: injected')

        self.segmenter.fault_hook = hook

    # -- input (executor thread) ---------------------------------------------------------
    def _reject(self, error: str) -> None:
        self.stats.on_rejected(error)
        self.get_logger().error(f'rejected frame: {error}', throttle_duration_sec=LOG_THROTTLE_S)

    def _offer(self, frame: _Frame) -> None:
        """Put a frame in the one-slot buffer; an unprocessed older frame is dropped."""
        with self._cond:
            if self._slot is not None:
                self.stats.on_dropped()
            self._slot = frame
            self._cond.notify()

    def _on_image(self, msg: Image) -> None:
        t0 = time.perf_counter()
        self.stats.on_received()
        try:
            image_codec.validate_image(msg)
        except image_codec.ImageDecodeError as exc:
            self._reject(f'image ({msg.encoding!r} {msg.height}x{msg.width} '
                         f'step {msg.step}): {exc}')
            return
        self._offer(_Frame(msg.header, msg, compressed=False))
        self.stats.on_stages(take=(time.perf_counter() - t0) * 1e3)

    def _on_compressed(self, msg: CompressedImage) -> None:
        t0 = time.perf_counter()
        self.stats.on_received()
        try:
            image_codec.validate_compressed(msg)
        except image_codec.ImageDecodeError as exc:
            self._reject(f'compressed image: {exc}')
            return
        self._offer(_Frame(msg.header, msg, compressed=True))
        self.stats.on_stages(take=(time.perf_counter() - t0) * 1e3)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        """Keep it; publish it at once for a mask already waiting for this stamp."""
        with self._info_lock:
            self._camera_infos.append(msg)
            self._info_seen = True
            waiting = self._info_pending.pop(_stamp_key(msg.header), None)
        if waiting is not None:
            with self.outputs_lock:
                if self._outputs_open and 'camera_info' in self._pubs:
                    self._send_camera_info(msg, waiting[0])
        self._expire_camera_info()

    def _on_reset(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        """Answers at once: the model loop clears the memory before its next frame."""
        if self.segmenter is None:
            resp.success, resp.message = False, 'not configured: no model, no video memory'
            return resp
        with self._cond:
            self._reset_request = 'service call'
            self._cond.notify_all()
        resp.success = True
        resp.message = (f'video memory cleared before the next frame ({self._bank_size} frames '
                        f'in the bank)')
        return resp

    # -- model loop ----------------------------------------------------------------------
    def run_model_loop(self) -> None:
        """Take frames and reset requests until `request_stop()`."""
        while True:
            with self._cond:
                self.idle = True        # a signal may interrupt the wait at once
                while self._slot is None and self._reset_request is None \
                        and not self._stopping:
                    self._cond.wait(timeout=0.5)
                self.idle = False
                if self._stopping:
                    return
                frame, self._slot = self._slot, None
                reset, self._reset_request = self._reset_request, None
                self._busy = frame is not None
            try:
                if reset is not None and self.segmenter is not None:
                    self._reset(reset)
                if frame is not None:
                    self._process(frame)
            except Exception as exc:  # never let the loop die: count it and go on
                self.stats.on_fault(f'{type(exc).__name__}: {exc}')
                self.get_logger().error(f'unexpected error on a frame: {exc!r}',
                                        throttle_duration_sec=LOG_THROTTLE_S)
            finally:
                with self._cond:
                    self._busy = False

    def _reset(self, reason: str) -> None:
        """Clear the video memory (model loop only)."""
        with self._model_lock:
            if self.segmenter is None:
                return
            self.segmenter.reset()
            self._bank_size = int(self.segmenter.memory_size)
            self._frames_since_reset = int(self.segmenter.frames_seen)
        self.stats.on_reset(reason)
        self.get_logger().info(f'memory reset: {reason}')

    def _auto_reset(self, header: Header, size: tuple[int, int]) -> None:
        """Reset on a new image size, a backward stamp or a forward jump (stamp 0 = unstamped)."""
        stamp = _stamp_s(header)
        reason = None
        if self._last_size is not None and size != self._last_size:
            reason = f'image size changed {self._last_size} -> {size}'
        elif stamp > 0 and self._last_stamp is not None:
            jump = float(self.p['reset.time_jump_s'])
            if stamp < self._last_stamp:
                reason = f'stamp went backwards by {self._last_stamp - stamp:.3f} s'
            elif jump > 0 and stamp - self._last_stamp > jump:
                reason = f'stamp jumped forward by {stamp - self._last_stamp:.3f} s'
        self._last_size = size
        if stamp > 0:
            self._last_stamp = stamp
        if reason is not None and self._frames_since_reset > 0:
            self._reset(reason)

    def _convert(self, frame: _Frame) -> tuple[np.ndarray, bool]:
        """The frame as (H x W x 3 uint8, is_bgr): 3-channel raw frames stay views of msg.data."""
        if frame.compressed:
            return image_codec.compressed_to_rgb(frame.msg), False
        view = image_codec.image_view(frame.msg)
        if view is not None:
            return view
        return image_codec.decode_image(frame.msg, bool(self.p['use_cv_bridge'])), False

    def _process(self, frame: _Frame) -> None:
        epoch = self._epoch             # a deactivate from here on discards this frame
        # 1. convert
        t0 = time.perf_counter()
        try:
            image, bgr = self._convert(frame)
        except image_codec.ImageDecodeError as exc:
            self._reject(f'decode: {exc}')
            return
        h, w = image.shape[:2]
        self._auto_reset(frame.header, (h, w))
        # 2. step
        t1 = time.perf_counter()
        with self._model_lock:
            seg = self.segmenter
            if seg is None:             # cleaned up while the frame waited
                self.stats.on_dropped()
                return
            try:
                self.in_step = True
                mask = seg.step(image, bgr=bgr)
            except Exception as exc:  # CUDA OOM / CUDA errors: log, reset, go on
                self._on_model_fault(exc)
                return
            finally:
                self.in_step = False
            inference_ms = float(seg.last_inference_ms)
            timings = dict(seg.last_timings)
            self._bank_size = int(seg.memory_size)
            self._frames_since_reset = int(seg.frames_seen)
        t2 = time.perf_counter()
        # 3. publish (under the outputs lock: a cleanup may destroy the publishers meanwhile)
        mask = np.asarray(mask, dtype=np.uint8)
        if mask.shape != (h, w):  # the contract is input resolution; enforce it
            mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
        # binary_255: the 0/1 labels times 255, one vectorised pass.
        out = np.multiply(mask, np.uint8(255)) if self.p['mask_value_mode'] == 'binary_255' \
            else mask
        with self.outputs_lock:
            # Stopping, unconfigured, or deactivated since this frame was taken: publish nothing.
            if self._stopping or not self._pubs or not self._outputs_open \
                    or epoch != self._epoch:
                self.stats.on_dropped()
                return
            self._pubs['mask'].publish(image_codec.mask_to_image(out, frame.header))
            t3 = time.perf_counter()
            self._publish_camera_info(frame.header)
            t4 = time.perf_counter()
            if self._pubs['overlay'].get_subscription_count() > 0:
                rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if bgr else image
                over = blend_overlay(rgb, mask, self._palette, float(self.p['overlay.alpha']))
                self._pubs['overlay'].publish(image_codec.array_to_image(over, 'rgb8',
                                                                         frame.header))
            t5 = time.perf_counter()
        self.stats.on_answered(self._latency_ms(frame.header), inference_ms)
        self.stats.on_stages(
            convert=(t1 - t0) * 1e3, prepare=timings.get('prepare_ms', 0.0),
            model=timings.get('model_ms', 0.0), post=timings.get('post_ms', 0.0),
            publish_mask=(t3 - t2) * 1e3, camera_info=(t4 - t3) * 1e3, overlay=(t5 - t4) * 1e3)

    def _latency_ms(self, header: Header) -> float | None:
        """Node clock minus stamp, only when the stamp is in the node's clock."""
        stamp = _stamp_s(header)
        if stamp <= 0:
            return None
        delay = self.get_clock().now().nanoseconds * 1e-9 - stamp
        in_clock = diagnostics.stamp_in_clock(delay, self.diag_cfg)
        self.stats.on_stamp_delay(delay, in_clock)
        return delay * 1e3 if in_clock else None

    def _publish_camera_info(self, header: Header) -> None:
        """The camera's CameraInfo with this mask's stamp, now or when it arrives (exact time).

        Called with the outputs lock held. No CameraInfo of that stamp yet: the mask waits for
        it up to `camera_info.wait_s` (`_on_camera_info` publishes it), then counts as
        camera_info_missing. A camera that publishes no camera_info is not waited for.
        """
        key = _stamp_key(header)
        missing = 0
        with self._info_lock:
            info = next((i for i in reversed(self._camera_infos)
                         if _stamp_key(i.header) == key), None)
            if info is None and (self._info_seen or self._info_publishers > 0):
                wait = float(self.p['camera_info.wait_s'])
                if wait > 0:
                    if len(self._info_pending) >= CAMERA_INFO_KEEP * 4:   # bounded
                        self._info_pending.pop(next(iter(self._info_pending)))
                        missing += 1
                    self._info_pending[key] = (header, time.monotonic() + wait)
                else:
                    missing += 1
        if info is not None:
            self._send_camera_info(info, header)
        elif missing:
            self.stats.on_camera_info(missing=missing)

    def _send_camera_info(self, info: CameraInfo, header: Header) -> None:
        """Publish a copy of `info` with the mask's header (outputs lock held)."""
        out = CameraInfo()
        for field in CameraInfo.get_fields_and_field_types():
            setattr(out, field, getattr(info, field))
        out.header = header
        self._pubs['camera_info'].publish(out)
        self.stats.on_camera_info(paired=1)

    def _expire_camera_info(self, drop_all: bool = False) -> None:
        """Give up on masks whose CameraInfo did not come in time (all of them: `drop_all`)."""
        now = time.monotonic()
        with self._info_lock:
            gone = [k for k, (_, until) in self._info_pending.items() if drop_all or until < now]
            for k in gone:
                del self._info_pending[k]
        if gone:
            self.stats.on_camera_info(missing=len(gone))

    def _on_model_fault(self, exc: BaseException) -> None:
        """Called with the model lock held: the frame is dropped and the memory cleared."""
        err = f'{type(exc).__name__}: {exc}'
        self.get_logger().error(f'model fault, resetting the memory: {err}',
                                throttle_duration_sec=LOG_THROTTLE_S)
        try:
            self.segmenter.reset()
            if str(self.segmenter.device).startswith('cuda'):
                import torch  # only on CUDA: hand freed blocks back after an OOM
                torch.cuda.empty_cache()
        except Exception as reset_exc:  # a broken device: keep reporting, keep running
            self.get_logger().error(f'reset after fault failed: {reset_exc!r}')
        self._bank_size = int(self.segmenter.memory_size)
        self._frames_since_reset = int(self.segmenter.frames_seen)
        # Counted once the reset is done, so whoever sees the fault count sees the reset too.
        self.stats.on_reset('fault')
        self.stats.on_fault(err)

    # -- diagnostics (executor thread) ---------------------------------------------------
    def diagnostics_values(self) -> dict[str, Any]:
        """Everything /diagnostics reports, as plain values."""
        vals: dict[str, Any] = self.stats.snapshot()
        seg = self.segmenter
        inp = self._input
        with self._cond:
            pending = int(self._slot is not None) + int(self._busy)
        vals.update({
            'frames_pending': pending,
            'memory_bank_size': self._bank_size,
            'frames_since_reset': self._frames_since_reset,
            'device': str(seg.device) if seg is not None else self.p['device'],
            'precision': str(seg.precision) if seg is not None else self.p['precision'],
            'inference_size': ('x'.join(str(int(x)) for x in seg.inference_size)
                               if seg is not None else 'none'),
            'task': seg.task if seg is not None else '',
            'input_topic': inp.topic if inp is not None else '',
            'input_reliability': inp.reliability if inp is not None else '',
            'publishers': inp.publisher_count() if inp is not None else 0,
            'active': inp is not None,
            'lifecycle_state': ('active' if inp is not None else 'inactive' if seg is not None
                                else 'unconfigured'),
            'configure_error': self._configure_error if seg is None else '',
            'seconds_active': (time.monotonic() - self._active_since
                               if self._active_since is not None else 0.0),
        })
        return vals

    def _publish_diagnostics(self) -> None:
        t0 = time.perf_counter()
        if self._input is not None:
            line = self._input.refresh()
            if line:
                self.get_logger().info(line)
            self._info_publishers = self._input.camera_info_publisher_count()
        self._expire_camera_info()
        vals = self.diagnostics_values()
        # hardware_id names the instance: two cameras' nodes are told apart.
        name = self.get_fully_qualified_name()
        hw = f'{name}@{vals["device"]}'
        cfg = self.diag_cfg
        arr = DiagnosticArray(status=[
            diagnostics.segmentation_status(vals, cfg, name, hw),
            diagnostics.frequency_status(vals, cfg, name, hw, self.stats.rate_window_s),
            diagnostics.timestamp_status(vals, self.stats.take_delay_window(), cfg, name, hw),
        ])
        arr.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(arr)
        self.stats.on_stages(diagnostics=(time.perf_counter() - t0) * 1e3)


def main(args: list[str] | None = None) -> int:
    """Console entry point `segment_node`; returns the process exit code."""
    import sys

    from dmnet_ros.node_process import run

    argv = sys.argv if args is None else args
    own = argv[1:argv.index('--ros-args')] if '--ros-args' in argv else argv[1:]
    if '-h' in own or '--help' in own:
        print(node_params.help_text(), end='')
        return 0
    return run(SegmentNode, args)


if __name__ == '__main__':
    import sys

    sys.exit(main())
