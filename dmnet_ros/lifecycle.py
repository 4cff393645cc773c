"""The lifecycle of the `dmnet` node: what configure, activate, deactivate, cleanup and
shutdown create and free (a mixin of SegmentNode, which owns the state these methods use).

configure   build the Segmenter from the parameters set now (a new checkpoint, device or
            precision takes effect here), create the publishers
activate    subscribe the input (transport.ImageInput), open the output gate: frames flow
deactivate  close the output gate (a step in progress is discarded: once deactivate returns
            nothing is published), unsubscribe: frames are not taken; the model stays loaded
cleanup     destroy the publishers, free the model and its GPU memory
shutdown    all of the above, and the model loop returns (the process then exits 0)
"""
from __future__ import annotations

import json
import threading
import time
from typing import Any

from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String

from dmnet_ros import node_params, transport


class StartupError(Exception):
    """A configuration problem found when building the model; logged, configure fails."""


class ManagedNode:
    """Lifecycle transitions for SegmentNode (mixed in before rclpy's LifecycleNode)."""

    p: dict[str, Any]
    segmenter: Any

    # -- transitions -----------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Build the model from the parameters now set, create the publishers."""
        try:
            self.load_model()
        except StartupError as exc:
            if getattr(self, '_stopping', False):
                # A stop signal broke the load, and torch re-raised it as another error
                # ("could not determine the shape ..."): a stop, not a faulty model.
                self.get_logger().info('stopped while loading the model')
                return TransitionCallbackReturn.FAILURE
            self.get_logger().error(str(exc))
            self._configure_error = str(exc)        # /diagnostics says why (WARN)
            return TransitionCallbackReturn.FAILURE
        self._configure_error = ''
        self._create_outputs()
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe: frames flow."""
        self._activate_input()
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe: no frame is taken (a frame waiting in the slot counts as dropped)."""
        self._deactivate_input()
        self.get_logger().info('dmnet inactive: not taking frames')
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Destroy the publishers, free the model and its GPU memory."""
        self._destroy_outputs()
        self._free_model()
        self.get_logger().info('dmnet unconfigured: model freed')
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate_input()
        self._destroy_outputs()
        self._free_model()
        self.request_stop()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f'error in lifecycle state {state.label}: freeing the model')
        self._deactivate_input()
        self._destroy_outputs()
        self._free_model()
        return TransitionCallbackReturn.SUCCESS

    # -- configure: model and outputs ----------------------------------------------------
    def load_model(self) -> None:
        """Build the Segmenter from the parameters.

        Raises:
            StartupError: missing or corrupt checkpoint, impossible device or task mismatch.
        """
        # Imported here: torch is heavy, and parameter errors should surface before it loads.
        from dmnet_core import load_segmenter
        from dmnet_core.segmenter import WARMUP_STEPS

        p = self.p
        ckpt = p['checkpoint'] or None
        for note in node_params.deprecations(p):
            self.get_logger().warning(note)
        self.get_logger().info(f'loading model: checkpoint={p["checkpoint"] or "(shipped model)"} '
                               f'task={p["task"] or "(any)"} device={p["device"]} '
                               f'precision={p["precision"]}')
        try:
            # No checkpoint and a task: the model shipped for that task; with a checkpoint,
            # load_segmenter checks that it is for the task.
            seg = load_segmenter(ckpt, p['device'], precision=p['precision'],
                                 inference_size=node_params.inference_size(p),
                                 memory=node_params.memory_overrides(p), task=p['task'] or None)
        except FileNotFoundError as exc:
            raise StartupError(str(exc)) from exc
        except (ValueError, RuntimeError) as exc:
            raise StartupError(f'cannot load model (checkpoint={p["checkpoint"]!r}, '
                               f'device={p["device"]!r}): {exc}') from exc
        if p['mask_value_mode'] == 'binary_255' and seg.task != 'binary':
            raise StartupError(f'mask_value_mode=binary_255 needs the binary task, '
                               f'model is {seg.task!r}')
        if p['torch_compile']:
            self.get_logger().info('torch.compile of encoder and decoder (one-off, may take a '
                                   'minute)...')
            if not seg.compile_network():
                self.get_logger().warning(f'torch.compile failed, running eagerly: '
                                          f'{seg.compile_error}')
        # Warm before active: the first real frame then runs at normal speed (not counted as
        # a frame; diagnostics report it as warmup_ms / warmup_steps).
        try:
            warm_ms = seg.warm_up()
        except Exception as exc:  # a model that cannot step is a configuration problem
            raise StartupError(f'model warm-up failed: {type(exc).__name__}: {exc}') from exc
        self.stats.on_warmup(warm_ms, WARMUP_STEPS)
        with self._model_lock:
            self.segmenter = seg
            self._bank_size = 0
            self._frames_since_reset = 0
            self._last_size = self._last_stamp = None
        self.get_logger().info(
            f'model loaded: task={seg.task} classes={len(seg.class_names)} device={seg.device} '
            f'precision={seg.precision} inference_size={list(seg.inference_size)} '
            f'compiled={seg.compiled} warm-up={warm_ms:.0f} ms '
            f'checkpoint={p["checkpoint"] or "(shipped model)"}')
        self._install_debug_hook()

    def _free_model(self) -> None:
        with self._model_lock:
            seg, self.segmenter = self.segmenter, None
        if seg is None:
            return
        on_cuda = str(seg.device).startswith('cuda')
        del seg
        if on_cuda:
            import gc

            import torch  # only on CUDA: hand the freed blocks back to the driver
            gc.collect()
            torch.cuda.empty_cache()

    def _create_outputs(self) -> None:
        p = self.p
        out_qos = transport.qos(p['output.reliability'], int(p['output.depth']))
        self._pubs = {
            'mask': self.create_publisher(Image, p['mask_topic'], out_qos),
            'overlay': self.create_publisher(Image, p['overlay_topic'], out_qos),
            'camera_info': self.create_publisher(
                CameraInfo, transport.sibling_topic(p['mask_topic'], 'camera_info'), out_qos),
            'labels': self.create_publisher(String, p['labels_topic'],
                                            transport.qos('reliable', 1, latched=True)),
        }
        self._publish_labels()

    def _destroy_outputs(self) -> None:
        with self.outputs_lock:      # not while the model loop publishes
            for pub in self._pubs.values():
                self.destroy_publisher(pub)
            self._pubs = {}

    def _publish_labels(self) -> None:
        seg = self.segmenter
        binary_255 = self.p['mask_value_mode'] == 'binary_255'
        values = {name: (255 if binary_255 and i > 0 else i)
                  for i, name in enumerate(seg.class_names)}
        self._pubs['labels'].publish(String(data=json.dumps({
            'task': seg.task,
            'class_names': list(seg.class_names),
            'mask_value_mode': self.p['mask_value_mode'],
            'values': values,
        })))

    # -- activate: input -----------------------------------------------------------------
    def _activate_input(self) -> None:
        self._input = transport.ImageInput(
            self, self.p, self._on_image, self._on_compressed, self._on_camera_info,
            self.stats.on_lost, self.stats.on_skipped, group=self.io_group)
        self._input.start()
        self._active_since = time.monotonic()
        with self._info_lock:
            self._info_seen = False
        self._info_publishers = self._input.camera_info_publisher_count()
        with self.outputs_lock:
            self._epoch += 1
            self._outputs_open = True
        kind = 'compressed' if self._input.compressed else 'raw'
        self.get_logger().info(
            f'dmnet ready: listening on {self._input.topic} ({kind}, '
            f'{self._input.reliability}), camera_info {self._input.camera_info_topic}, '
            f'publishing {self._pubs["mask"].topic_name} on {self.segmenter.device}')

    def _deactivate_input(self) -> None:
        # First the gate: waits for a publish in progress, then nothing more leaves; a step
        # still running is discarded when it ends (its epoch is gone).
        with self.outputs_lock:
            self._outputs_open = False
            self._epoch += 1
        self._expire_camera_info(drop_all=True)
        if self._input is not None:
            self._input.stop()
            self._input = None
        self._active_since = None
        with self._cond:
            if self._slot is not None:
                self._slot = None
                self.stats.on_dropped()

    def start(self, worker_thread: bool = True) -> None:
        """Without the lifecycle (in-process tests): outputs, input and a model-loop thread.

        Args:
            worker_thread: run the model loop in a thread of its own.
        """
        self._create_outputs()
        if worker_thread:
            self._worker = threading.Thread(target=self.run_model_loop, name='dmnet-worker',
                                            daemon=True)
            self._worker.start()
        self._activate_input()

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
