"""The `dmnet` node: endoscope images in, instrument masks, overlay, labels and diagnostics out.

Threads: the executor thread runs the subscription callbacks (validate, then put the frame in
a one-slot buffer: a newer frame replaces an unprocessed one, which counts as dropped), the
reset service and the diagnostics timer; the model loop decodes, runs `Segmenter.step` and
publishes. `main()` runs the model loop on the process's main thread and spins the executor in a
background thread: PyTorch's CPU kernels measured about 1.4x slower when called from a second
Python thread (its OpenMP team), so the heavy work stays where it runs fastest. Every received
frame ends up answered, dropped or rejected.

Topics (defaults; the output names are parameters so a second camera can use its own):
  in   image (sensor_msgs/Image, relative: remap it), image/compressed (CompressedImage)
  out  /dmnet/mask (mono8), /dmnet/overlay (rgb8), /dmnet/labels (String JSON, transient
       local), /diagnostics (DiagnosticArray)
  srv  ~/reset (std_srvs/Trigger): clear the video memory.
The memory also resets when the image size changes, when stamps go backwards (a looped bag)
or jump forward by more than `reset.time_jump_s` (a new case), and after a model fault.

Run: `segment_node --ros-args --params-file config/dmnet.yaml -r image:=/endoscope/image_raw`.
"""
from __future__ import annotations

import json
import sys
import threading
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header, String
from std_srvs.srv import Trigger

from dmnet_ros import image_codec, node_params
from dmnet_ros.overlay import blend_overlay, palette_table
from dmnet_ros.stats import FrameStats

NODE_NAME = 'dmnet'
# A fault or rejected frame this recent turns the diagnostics level to ERROR / WARN.
RECENT_S = 5.0
LOG_THROTTLE_S = 2.0
# Exit codes: bad configuration (parameters, checkpoint) vs. anything unexpected.
EXIT_CONFIG = 2
EXIT_ERROR = 1


class StartupError(Exception):
    """A configuration problem found at start-up; the node logs it and exits non-zero."""


@dataclass
class _Frame:
    """A frame waiting in the one-slot buffer (raw or compressed, not decoded yet)."""

    header: Header
    msg: Image | CompressedImage
    compressed: bool


def _qos(reliability: str, depth: int, latched: bool = False) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=(ReliabilityPolicy.RELIABLE if reliability == 'reliable'
                     else ReliabilityPolicy.BEST_EFFORT),
        durability=(DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE),
    )


def _stamp_s(header: Header) -> float:
    return header.stamp.sec + header.stamp.nanosec * 1e-9


class SegmentNode(Node):
    """Parameters are declared (and checked) in __init__; `load_model` and `start` follow."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.segmenter = None
        # Checked before declaring, so a bad override from a params file fails at start-up.
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.p = node_params.declare_all(self)
        self.add_post_set_parameters_callback(self._after_set_parameters)
        self.stats = FrameStats()
        self._cond = threading.Condition()
        self._slot: _Frame | None = None
        self._busy = False
        self._stopping = False
        self._model_lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._palette = palette_table(list(self.p['overlay.palette']))
        self._hook_calls = 0
        self._last_size: tuple[int, int] | None = None
        self._last_stamp: float | None = None
        self._bank_size = 0
        self._frames_since_reset = 0
        self._hardware_id = ''

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
            elif prm.name == 'debug.inject_fault_every':
                self._install_fault_hook()
            elif prm.name == 'mask_value_mode' and self.segmenter is not None:
                self._publish_labels()

    def _install_fault_hook(self) -> None:
        """TEST HOOK: every n-th step raises as a CUDA fault would (see node_params)."""
        n = int(self.p['debug.inject_fault_every'])
        if self.segmenter is None:
            return
        if n <= 0:
            self.segmenter.fault_hook = None
            return

        def hook(_frame_index: int) -> None:
            self._hook_calls += 1
            if self._hook_calls % n == 0:
                raise RuntimeError('CUDA error: injected')

        self.segmenter.fault_hook = hook

    # -- start-up ------------------------------------------------------------------------
    def load_model(self) -> None:
        """Build the Segmenter from the parameters.

        Raises:
            StartupError: missing or corrupt checkpoint, impossible device or task mismatch.
        """
        # Imported here: torch is heavy, and parameter errors should surface before it loads.
        from dmnet_core import load_segmenter

        p = self.p
        ckpt = p['checkpoint'] or None
        try:
            seg = load_segmenter(ckpt, p['device'], precision=p['precision'],
                                 inference_size=node_params.inference_size(p),
                                 memory=node_params.memory_overrides(p))
        except FileNotFoundError as exc:
            raise StartupError(str(exc)) from exc
        except (ValueError, RuntimeError) as exc:
            raise StartupError(f'cannot load model (checkpoint={p["checkpoint"]!r}, '
                               f'device={p["device"]!r}): {exc}') from exc
        if p['task'] and seg.task != p['task']:
            raise StartupError(f'task={p["task"]!r} but checkpoint '
                               f'{p["checkpoint"] or "(shipped model)"} is for {seg.task!r}')
        if p['mask_value_mode'] == 'binary_255' and seg.task != 'binary':
            raise StartupError(f'mask_value_mode=binary_255 needs the binary task, '
                               f'model is {seg.task!r}')
        if p['torch_compile']:
            self.get_logger().info('torch.compile of encoder and decoder (one-off, may take a '
                                   'minute)...')
            if not seg.compile_network():
                self.get_logger().warning(f'torch.compile failed, running eagerly: '
                                          f'{seg.compile_error}')
        self.segmenter = seg
        self._hardware_id = f'dmnet/{seg.device}'
        self.get_logger().info(
            f'model loaded: task={seg.task} classes={len(seg.class_names)} device={seg.device} '
            f'precision={seg.precision} inference_size={list(seg.inference_size)} '
            f'compiled={seg.compiled}')
        if p['device'] == 'auto' and str(seg.device).startswith('cpu'):
            self.get_logger().warning('device=auto: no CUDA device available, '
                                      'falling back to CPU (slower)')
        self._install_fault_hook()

    def start(self, worker_thread: bool = True) -> None:
        """Create publishers, subscriptions, the service, the timer and the model loop.

        Args:
            worker_thread: run the model loop in a thread of its own; `main()` passes False and
                runs `run_model_loop()` on the main thread instead.
        """
        p = self.p
        out_qos = _qos(p['output.reliability'], int(p['output.depth']))
        in_qos = _qos(p['input.reliability'], int(p['input.depth']))
        self._mask_pub = self.create_publisher(Image, p['mask_topic'], out_qos)
        self._overlay_pub = self.create_publisher(Image, p['overlay_topic'], out_qos)
        self._labels_pub = self.create_publisher(String, p['labels_topic'],
                                                 _qos('reliable', 1, latched=True))
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._publish_labels()
        if worker_thread:
            self._worker = threading.Thread(target=self._worker_loop, name='dmnet-worker',
                                            daemon=True)
            self._worker.start()
        self.create_subscription(Image, 'image', self._on_image, in_qos)
        if p['compressed_topic']:
            self.create_subscription(CompressedImage, p['compressed_topic'],
                                     self._on_compressed, in_qos)
        self.create_service(Trigger, '~/reset', self._on_reset)
        self.create_timer(float(p['diagnostics.period_s']), self._publish_diagnostics)
        self.get_logger().info(
            f'dmnet ready: listening on {self.resolve_topic_name("image")}, publishing '
            f'{self._mask_pub.topic_name} on {self.segmenter.device}')

    def run_model_loop(self) -> None:
        """Run the model loop in the calling thread until `request_stop()`."""
        self._worker_loop()

    def request_stop(self) -> None:
        """Ask the model loop to return (the frame in the slot, if any, counts as dropped)."""
        with self._cond:
            self._stopping = True
            if self._slot is not None:
                self._slot = None
                self.stats.on_dropped()
            self._cond.notify_all()

    def stop(self) -> None:
        """Stop the model loop and wait for its thread, if it has one."""
        self.request_stop()
        if self._worker is not None:
            self._worker.join(timeout=10.0)

    def _publish_labels(self) -> None:
        seg = self.segmenter
        binary_255 = self.p['mask_value_mode'] == 'binary_255'
        values = {name: (255 if binary_255 and i > 0 else i)
                  for i, name in enumerate(seg.class_names)}
        self._labels_pub.publish(String(data=json.dumps({
            'task': seg.task,
            'class_names': list(seg.class_names),
            'mask_value_mode': self.p['mask_value_mode'],
            'values': values,
        })))

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
        self.stats.on_received()
        try:
            image_codec.validate_image(msg)
        except image_codec.ImageDecodeError as exc:
            self._reject(f'image ({msg.encoding!r} {msg.height}x{msg.width} '
                         f'step {msg.step}): {exc}')
            return
        self._offer(_Frame(msg.header, msg, compressed=False))

    def _on_compressed(self, msg: CompressedImage) -> None:
        self.stats.on_received()
        try:
            image_codec.validate_compressed(msg)
        except image_codec.ImageDecodeError as exc:
            self._reject(f'compressed image: {exc}')
            return
        self._offer(_Frame(msg.header, msg, compressed=True))

    def _on_reset(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        before = self._reset('service call')
        resp.success = True
        resp.message = f'video memory cleared ({before} frames in the bank before)'
        return resp

    # -- worker thread -------------------------------------------------------------------
    def _worker_loop(self) -> None:
        while True:
            with self._cond:
                while self._slot is None and not self._stopping:
                    self._cond.wait(timeout=0.5)
                if self._stopping:
                    return
                frame, self._slot = self._slot, None
                self._busy = True
            try:
                self._process(frame)
            except Exception as exc:  # never let the worker die: count it and go on
                self.stats.on_fault(f'{type(exc).__name__}: {exc}')
                self.get_logger().error(f'unexpected error on a frame: {exc!r}',
                                        throttle_duration_sec=LOG_THROTTLE_S)
            finally:
                with self._cond:
                    self._busy = False

    def _reset(self, reason: str) -> int:
        """Clear the video memory; returns the bank size before."""
        with self._model_lock:
            before = int(self.segmenter.memory_size)
            self.segmenter.reset()
            self._bank_size = int(self.segmenter.memory_size)
            self._frames_since_reset = int(self.segmenter.frames_seen)
        self.stats.on_reset(reason)
        self.get_logger().info(f'memory reset: {reason}')
        return before

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

    def _process(self, frame: _Frame) -> None:
        try:
            if frame.compressed:
                rgb = image_codec.compressed_to_rgb(frame.msg)
            else:
                rgb = image_codec.decode_image(frame.msg, bool(self.p['use_cv_bridge']))
        except image_codec.ImageDecodeError as exc:
            self._reject(f'decode: {exc}')
            return
        h, w = rgb.shape[:2]
        self._auto_reset(frame.header, (h, w))
        with self._model_lock:
            try:
                mask = self.segmenter.step(rgb)
            except Exception as exc:  # CUDA OOM / CUDA errors: log, reset, go on
                self._on_model_fault(exc)
                return
            inference_ms = float(self.segmenter.last_inference_ms)
            self._bank_size = int(self.segmenter.memory_size)
            self._frames_since_reset = int(self.segmenter.frames_seen)
        mask = np.asarray(mask, dtype=np.uint8)
        if mask.shape != (h, w):  # the contract is input resolution; enforce it
            mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
        out = np.where(mask > 0, 255, 0).astype(np.uint8) \
            if self.p['mask_value_mode'] == 'binary_255' else mask
        self._mask_pub.publish(image_codec.mask_to_image(out, frame.header))
        if self._overlay_pub.get_subscription_count() > 0:
            over = blend_overlay(rgb, mask, self._palette, float(self.p['overlay.alpha']))
            self._overlay_pub.publish(image_codec.array_to_image(over, 'rgb8', frame.header))
        latency_ms = None
        stamp = _stamp_s(frame.header)
        if stamp > 0:
            latency_ms = (self.get_clock().now().nanoseconds * 1e-9 - stamp) * 1e3
        self.stats.on_answered(latency_ms, inference_ms)

    def _on_model_fault(self, exc: BaseException) -> None:
        """Called with the model lock held: the frame is dropped and the memory cleared."""
        err = f'{type(exc).__name__}: {exc}'
        self.stats.on_fault(err)
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
        self.stats.on_reset('fault')

    # -- diagnostics (executor thread) ---------------------------------------------------
    def diagnostics_values(self) -> dict[str, Any]:
        """Everything /diagnostics reports, as plain values."""
        snap = self.stats.snapshot()
        seg = self.segmenter
        with self._cond:
            pending = int(self._slot is not None) + int(self._busy)
        vals: dict[str, Any] = {
            k: v for k, v in snap.items() if not k.startswith('seconds_since')}
        vals.update({
            'frames_pending': pending,
            'memory_bank_size': self._bank_size,
            'frames_since_reset': self._frames_since_reset,
            'device': str(seg.device),
            'precision': str(seg.precision),
            'inference_size': 'x'.join(str(int(x)) for x in seg.inference_size),
            'task': seg.task,
        })
        vals['_fault_recent'] = snap['seconds_since_fault'] < RECENT_S
        vals['_reject_recent'] = snap['seconds_since_reject'] < RECENT_S
        return vals

    def _publish_diagnostics(self) -> None:
        vals = self.diagnostics_values()
        status = DiagnosticStatus(name=f'{self.get_fully_qualified_name()}: segmentation',
                                  hardware_id=self._hardware_id)
        fault_recent, reject_recent = vals.pop('_fault_recent'), vals.pop('_reject_recent')
        if fault_recent:
            status.level, status.message = DiagnosticStatus.ERROR, \
                f'model fault: {vals["last_error"]}'
        elif reject_recent:
            status.level, status.message = DiagnosticStatus.WARN, \
                f'rejected frames: {vals["last_error"]}'
        else:
            status.level, status.message = DiagnosticStatus.OK, 'ok'
        status.values = [KeyValue(key=k, value=(f'{v:.3f}' if isinstance(v, float) else str(v)))
                         for k, v in vals.items()]
        arr = DiagnosticArray(status=[status])
        arr.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(arr)



def _spin(executor: SingleThreadedExecutor, node: SegmentNode) -> None:
    """Executor thread: callbacks until shutdown, then wake the model loop so it returns."""
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as exc:  # report, never a bare traceback
        print(f'[dmnet] executor stopped: {type(exc).__name__}: {exc}', file=sys.stderr,
              flush=True)
    finally:
        node.request_stop()


def main(args: list[str] | None = None) -> int:
    """Console entry point `segment_node`; returns the process exit code."""
    rclpy.init(args=args)
    node: SegmentNode | None = None
    code = 0
    try:
        try:
            node = SegmentNode()
        except Exception as exc:  # rclpy's InvalidParameterValueException & co.
            print(f'[dmnet] invalid parameter: {exc}', file=sys.stderr, flush=True)
            return EXIT_CONFIG
        try:
            node.load_model()
        except StartupError as exc:
            node.get_logger().fatal(str(exc))
            return EXIT_CONFIG
        node.start(worker_thread=False)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        spinner = threading.Thread(target=_spin, args=(executor, node), name='dmnet-executor',
                                   daemon=True)
        spinner.start()
        try:
            node.run_model_loop()          # returns once the executor stops (shutdown, SIGINT)
        except KeyboardInterrupt:
            pass
        executor.shutdown(timeout_sec=1.0)
        spinner.join(timeout=5.0)
    except Exception as exc:  # report, never a bare traceback
        print(f'[dmnet] fatal: {type(exc).__name__}: {exc}', file=sys.stderr, flush=True)
        code = EXIT_ERROR
    finally:
        if node is not None:
            node.stop()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return code


if __name__ == '__main__':
    sys.exit(main())
