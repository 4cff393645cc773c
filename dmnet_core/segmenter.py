"""The video segmenter: one object per stream owns the model, device, precision and video memory.

    seg = load_segmenter()                 # shipped default model, or a path to a checkpoint
    labels = seg.step(rgb_uint8)           # H x W uint8 class ids, same size as the input
    labels, probs = seg.step(rgb, return_probs=True)   # probs K x H x W float32
    seg.reset()                            # new video

Per frame: resize to the inference size, encode once, ELM step with the carried LSTM state and
local window, read n frames of the global bank (cached keys/values), decode, resize the logits
back; then the selection policy decides whether the frame joins the bank. Causal by construction.

Cost at camera sizes: the frame is resized once as uint8 (cv2, area); the labels come
from a cv2 bilinear resize of the quarter-size logits straight to the input size (binary: the one
foreground-minus-background logit, thresholded at 0), the same argmax as upsampling every logit
in torch at a few per cent of its cost. On CUDA (`io_on_device`) the uint8 frame goes up once,
resize, normalise, upsample and argmax run there, and one uint8 mask comes back.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from dmnet_core.allocator import reuse_freed_memory
from dmnet_core.checkpoint import DEFAULT_CHECKPOINT, build_from_checkpoint, shipped_checkpoint
from dmnet_core.config import GlobalMemoryConfig, ModelConfig
from dmnet_core.model.dmnet import DMNet, build_model, init_batchnorm_stats
from dmnet_core.model.fuse import fold_batchnorm
from dmnet_core.model.global_memory import (
    MemoryBank,
    ReadSampler,
    build_policy,
    class_shares,
    update_bank,
)
from dmnet_core.model.label_propagation import MemoryLabels
from dmnet_core.model.local_memory import LocalState
from dmnet_core.model.transforms import normalize

log = logging.getLogger(__name__)

PRECISIONS = ('auto', 'fp32', 'fp16', 'bf16')
# Memory overrides that change behaviour but never weights.
WEIGHT_FREE_KEYS = ('n_read', 'read_sampling', 'capacity', 'policy', 'alpha', 'beta', 'eviction',
                    'uniform_stride', 'seed')
DEFAULT_SEED = 0
# Steps `Segmenter.warm_up` takes: an empty bank, a one-frame bank, one more.
WARMUP_STEPS = 3
# Overrides beside the global memory's: the memories' switches and label propagation's weight.
SWITCH_KEYS = ('local_enabled', 'global_enabled', 'label_propagation', 'local_vote_radius')


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' -> a usable device; an unavailable CUDA is an error."""
    name = str(device)
    if name == 'auto':
        if torch.cuda.is_available():
            return torch.device('cuda')
        log.warning('device auto: CUDA not available, running on the CPU')
        return torch.device('cpu')
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f'device {name!r} not understood; use auto, cpu, cuda or cuda:N') from exc
    if dev.type == 'cuda':
        if not torch.cuda.is_available():
            raise ValueError(f'device {name!r} requested but CUDA is not available here')
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f'device {name!r} requested but only {torch.cuda.device_count()} '
                             'CUDA device(s) exist')
    elif dev.type != 'cpu':
        raise ValueError(f'device {name!r} not supported; use auto, cpu, cuda or cuda:N')
    return dev


def cpu_has_bf16() -> bool:
    """Does oneDNN run bf16 convolutions natively here (AVX-512-BF16 or AMX)?"""
    try:
        return bool(torch.backends.mkldnn.is_available()
                    and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> fp16 on CUDA; on the CPU bf16 where it is native (see `cpu_has_bf16`), else
    fp32. fp16 falls back to fp32 on the CPU, and so does bf16 on a CPU without native bf16.

    bf16 is the CPU default because it kept the accuracy (docs/performance.md: within 0.5 Dice
    points on Endoscapes val and generated test) at 1.07-1.26x the fp32 speed, the margin that
    keeps the default model above 30 FPS on a 2-core CPU."""
    if precision not in PRECISIONS:
        raise ValueError(f'precision {precision!r} not in {PRECISIONS}')
    if precision == 'auto':
        if device.type == 'cuda':
            return 'fp16'
        return 'bf16' if cpu_has_bf16() else 'fp32'
    if device.type != 'cuda' and (precision == 'fp16'
                                  or (precision == 'bf16' and not cpu_has_bf16())):
        log.warning('precision %s is not used on this %s; running fp32', precision, device)
        return 'fp32'
    return precision


def resize_frame(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """H x W x C uint8 -> h x w x C: area averaging when shrinking, bilinear otherwise.

    cv2's area resize is fast (SIMD) for whole-number factors and about 4x slower otherwise
    (1920x1080 -> 256x320: 6 ms here). So where both sides shrink by 2x or more and divide
    evenly, the whole-number part goes first (1920x1080 -> 320x270, a plain box average), then
    the small rest (-> 320x256): 2.3 ms, the same box filter up to where the boxes' edges fall.
    cv2 takes strided rows (a view of a padded message) as they are: no copy first.
    """
    h, w = size
    H, W = image.shape[:2]
    if not (H > h and W > w):
        return cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    fy, fx = H // h, W // w
    if fy >= 2 and fx >= 2 and H % fy == 0 and W % fx == 0 and (H // fy, W // fx) != (h, w):
        image = cv2.resize(image, (W // fx, H // fy), interpolation=cv2.INTER_AREA)
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)


class Segmenter:
    """Stateful, causal video segmentation with DMNet.

    Args:
        model: the trained network; the Segmenter runs its own eval-mode copy (`self.model`),
            with batch norm folded into the convolutions, on `device`.
        config: its configuration (memory settings as used here).
        device: where to run.
        precision: 'fp32', 'fp16' or 'bf16' (the latter two autocast: fp16 on CUDA only, bf16
            on CUDA and on CPUs with native bf16).
        inference_size: (H, W), multiples of 32; frames are resized to it and back.
    """

    def __init__(self, model: DMNet, config: ModelConfig, device: torch.device | str = 'cpu',
                 precision: str = 'fp32', inference_size: tuple[int, int] | None = None) -> None:
        self.device = torch.device(device)
        self.precision = resolve_precision(precision, self.device)
        self.config = config
        size = tuple(inference_size or config.input_size)
        if len(size) != 2 or any(int(s) <= 0 or int(s) % 32 for s in size):
            raise ValueError(f'inference_size {size} must be two positive multiples of 32')
        self.inference_size: tuple[int, int] = (int(size[0]), int(size[1]))
        # An inference copy: batch norm folded into the convolutions (the caller's model is
        # untouched, so a trainer can keep training it). Channels-last is faster on both CUDA
        # and CPU (oneDNN convolutions, max pooling).
        net, self.folded_batchnorms = fold_batchnorm(model)
        self.channels_last = True
        self.model = net.to(self.device, memory_format=torch.channels_last)
        if self.model.local_memory is not None:       # weight-free, so a load-time override
            self.model.local_memory.vote_radius = config.local_memory.vote_radius
        g = config.global_memory
        self.capacity = g.capacity
        self.policy = build_policy(g.policy, alpha=g.alpha, beta=g.beta, eviction=g.eviction,
                                   uniform_stride=g.uniform_stride)
        self.sampler = ReadSampler(g.read_sampling, g.n_read, g.seed)
        self.bank = MemoryBank()
        self.local_state: LocalState | None = None
        # Label propagation (`ModelConfig.label_propagation`): the class shares of the ELM
        # window's previous frames, oldest first (the bank keeps its own).
        self.label_propagation = float(config.label_propagation)
        self.local_window = config.local_memory.window
        self.local_shares: list[torch.Tensor] = []
        self.frames_seen = 0
        self.last_inference_ms = 0.0
        self.last_admitted = False
        self.compiled = False                  # set by compile_network()
        self.compile_error: str | None = None
        # Frame in and labels out on the device (resize, normalise, upsample, argmax there):
        # the CUDA path; tests switch it on for the CPU too.
        self.io_on_device = self.device.type == 'cuda'
        self._buffers: dict[str, torch.Tensor] = {}
        self.last_timings: dict[str, float] = {}
        # Test hook: called with the frame index at the start of `step` (may raise).
        self.fault_hook: Callable[[int], None] | None = None

    # ---------------------------------------------------------------- public attributes

    @property
    def class_names(self) -> list[str]:
        return list(self.config.class_names)

    @property
    def task(self) -> str:
        return self.config.task

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def memory_size(self) -> int:
        """Frames in the global bank now."""
        return len(self.bank)

    @property
    def memory_frames(self) -> list[int]:
        """Frame indices (since reset) held by the global bank, oldest first."""
        return self.bank.frames

    def reset(self) -> None:
        """Forget the video: LSTM state, local window, global bank, policy and sampler state."""
        self.local_state = None
        self.local_shares = []
        self.bank.clear()
        self.policy.reset()
        self.sampler.reset()
        self.frames_seen = 0
        self.last_admitted = False

    def compile_network(self) -> bool:
        """torch.compile the convolutional bulk (encoder, decoder) and warm it up.

        Shapes are static (frames are resized to `inference_size`), so it compiles once, on a
        blank frame here rather than on the first real one; the memory is reset afterwards. The
        small, data-dependent memory modules stay eager. Needs a C++ compiler on a CPU.

        Returns:
            True if compiled (`self.compiled`); False if compiling failed, e.g. no compiler:
            the eager modules are back, `self.compile_error` says why (also logged).
        """
        if self.compiled:
            return True
        eager = (self.model.encoder, self.model.decoder)
        try:
            self.model.encoder = torch.compile(eager[0], dynamic=False)
            self.model.decoder = torch.compile(eager[1], dynamic=False)
            self.step(np.zeros((*self.inference_size, 3), dtype=np.uint8))
        except Exception as exc:  # torch.compile fails lazily, with many exception types
            self.model.encoder, self.model.decoder = eager
            text = str(exc).strip()
            self.compile_error = f'{type(exc).__name__}: {text.splitlines()[0] if text else ""}'
            log.warning('torch.compile failed, running eagerly: %s', self.compile_error)
            return False
        finally:
            self.reset()
        self.compiled, self.compile_error = True, None
        return True

    # ---------------------------------------------------------------- inference

    def _check(self, image: np.ndarray) -> None:
        if not isinstance(image, np.ndarray):
            raise ValueError(f'step expects a numpy array, got {type(image).__name__}')
        if image.dtype != np.uint8:
            raise ValueError(f'step expects a uint8 RGB image, got dtype {image.dtype}')
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f'step expects an H x W x 3 RGB image, got shape {image.shape}')
        if image.shape[0] < 1 or image.shape[1] < 1:
            raise ValueError(f'step got an empty image of shape {image.shape}')

    def _autocast(self) -> torch.autocast:
        dtype = {'fp16': torch.float16, 'bf16': torch.bfloat16}.get(self.precision)
        return torch.autocast(self.device.type, dtype=dtype or torch.float32,
                              enabled=dtype is not None)

    def _prepare(self, image: np.ndarray, bgr: bool = False) -> torch.Tensor:
        """H x W x 3 uint8 -> 1 x 3 x h x w normalised on the device, at the inference size.

        On the host: one cv2 resize of the uint8 frame (area when shrinking), the channel swap
        of a BGR frame after it (at the small size). With `io_on_device`: the uint8 frame goes
        up once (through a pinned buffer on CUDA) and is resized and normalised there.
        """
        if self.io_on_device:
            return self._prepare_on_device(image, bgr)
        h, w = self.inference_size
        if image.shape[:2] != (h, w):
            image = resize_frame(image, (h, w))
        if bgr:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        # Upload uint8 and normalise on the device: a quarter of the bytes of a float32 copy.
        x = torch.from_numpy(np.ascontiguousarray(image)).to(self.device, non_blocking=True)
        x = normalize(x.movedim(-1, -3), self.config).unsqueeze(0)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _staging(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        """A reusable uint8 host buffer (pinned on CUDA, so copies can be asynchronous)."""
        buf = self._buffers.get(name)
        if buf is None or tuple(buf.shape) != tuple(shape):
            buf = torch.empty(shape, dtype=torch.uint8, pin_memory=self.device.type == 'cuda')
            self._buffers[name] = buf
        return buf

    def _prepare_on_device(self, image: np.ndarray, bgr: bool) -> torch.Tensor:
        """The GPU input path: upload uint8 once, resize and normalise on the device."""
        src = torch.from_numpy(np.ascontiguousarray(image))
        if self.device.type == 'cuda':
            buf = self._staging('in', tuple(src.shape))
            buf.copy_(src)
            src = buf.to(self.device, non_blocking=True)
        x = src.permute(2, 0, 1).unsqueeze(0).float()            # 1 x 3 x H x W, 0..255
        if bgr:
            x = x.flip(1)
        h, w = self.inference_size
        if tuple(x.shape[-2:]) != (h, w):
            shrink = x.shape[-2] > h and x.shape[-1] > w
            x = F.interpolate(x, size=(h, w), mode='area') if shrink else \
                F.interpolate(x, size=(h, w), mode='bilinear', align_corners=False)
        x = normalize(x[0].div_(255.0), self.config).unsqueeze(0)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _labels_on_host(self, logits: torch.Tensor, height: int, width: int) -> np.ndarray:
        """1 x K x h' x w' logits -> H x W uint8 labels with cv2's SIMD bilinear resize.

        Equal to the argmax of the bilinearly upsampled logits (torch's `align_corners=False`
        and cv2's INTER_LINEAR sample the same points): binary thresholds the one upsampled
        foreground-minus-background logit, K classes keep a running maximum plane by plane.
        """
        lo = logits[0].float().contiguous().numpy()              # K x h' x w'
        size = (width, height)
        if lo.shape[0] == 2:
            up = cv2.resize(lo[1] - lo[0], size, interpolation=cv2.INTER_LINEAR)
            return np.greater(up, 0.0).view(np.uint8)
        best = cv2.resize(lo[0], size, interpolation=cv2.INTER_LINEAR)
        labels = np.zeros((height, width), dtype=np.uint8)
        for k in range(1, lo.shape[0]):
            up = cv2.resize(lo[k], size, interpolation=cv2.INTER_LINEAR)
            labels[up > best] = k             # strictly greater: ties keep the first class
            np.maximum(best, up, out=best)
        return labels

    def _labels_on_device(self, logits: torch.Tensor, height: int, width: int) -> np.ndarray:
        """The GPU output path: upsample and argmax on the device, one uint8 copy back."""
        lo = logits.float()
        if lo.shape[1] == 2:
            up = F.interpolate(lo[:, 1:2] - lo[:, 0:1], size=(height, width), mode='bilinear',
                               align_corners=False)
            labels = (up[0, 0] > 0).to(torch.uint8)
        else:
            up = F.interpolate(lo, size=(height, width), mode='bilinear', align_corners=False)
            labels = up.argmax(dim=1)[0].to(torch.uint8)
        if self.device.type != 'cuda':
            return labels.numpy()
        out = self._staging('out', (height, width))
        out.copy_(labels, non_blocking=True)
        torch.cuda.current_stream(self.device).synchronize()
        return out.numpy().copy()        # the pinned buffer is reused by the next step

    def step(self, image: np.ndarray, return_probs: bool = False, *, bgr: bool = False
             ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Segment the next frame of the video.

        Args:
            image: H x W x 3 uint8 RGB, any size (rows may be strided, e.g. a message's view).
            return_probs: also return class probabilities.
            bgr: the image is BGR (swapped after the resize, at the inference size).

        Returns:
            labels H x W uint8 class ids, or (labels, probs K x H x W float32).
        """
        self._check(image)
        frame = self.frames_seen
        if self.fault_hook is not None:
            self.fault_hook(frame)
        height, width = image.shape[:2]
        t0 = time.perf_counter()
        x = self._prepare(image, bgr)
        with torch.inference_mode():
            if self.device.type == 'cuda':
                torch.cuda.synchronize(self.device)
            start = time.perf_counter()
            with self._autocast():
                skips, f32 = self.model.encode(x)
                mem_k = mem_v = None
                read: list[int] = []
                if self.model.use_global and len(self.bank):
                    read = self.sampler.indices(len(self.bank))
                    mem_k, mem_v = self.bank.gather(read)
                stored = None
                if self.label_propagation:
                    stored = MemoryLabels(
                        local=torch.stack(self.local_shares, 1) if self.local_shares else None,
                        global_=self.bank.gather_shares(read) if read else None,
                        gamma=self.label_propagation)
                logits, state = self.model.step(skips, f32, self.local_state, mem_k, mem_v,
                                                stored)
                # What this frame was predicted to be, kept beside its memories (1 x K x h x w).
                shares = class_shares(logits, f32.shape[-2:]) if self.label_propagation else None
                admitted = False
                if self.model.use_global:
                    # The bank is only written after this frame's prediction (causal).
                    admitted = update_bank(
                        self.bank, self.policy, self.capacity, frame, logits, f32,
                        self.model.global_key_value, shares)
            if self.device.type == 'cuda':
                torch.cuda.synchronize(self.device)
            model_end = time.perf_counter()
            # One resize from the output stride of the inference size straight to the input size.
            probs = None
            if return_probs:
                up = F.interpolate(logits.float(), size=(height, width), mode='bilinear',
                                   align_corners=False)
                labels = up.argmax(dim=1)[0].to(torch.uint8).cpu().numpy()
                probs = torch.softmax(up[0], dim=0).cpu().numpy().astype(np.float32, copy=False)
            elif self.io_on_device:
                labels = self._labels_on_device(logits, height, width)
            else:
                labels = self._labels_on_host(logits, height, width)
            end = time.perf_counter()
            self.last_inference_ms = (end - start) * 1000.0
            self.last_timings = {'prepare_ms': (start - t0) * 1000.0,
                                 'model_ms': (model_end - start) * 1000.0,
                                 'post_ms': (end - model_end) * 1000.0}
        # Commit the state only once everything succeeded.
        self.local_state = state
        if shares is not None and state is not None:
            kept = [*self.local_shares, shares]
            self.local_shares = kept[max(len(kept) - (self.local_window - 1), 0):]
        self.last_admitted = admitted
        self.frames_seen = frame + 1
        if return_probs:
            return labels, probs
        return labels

    def warm_up(self, steps: int = WARMUP_STEPS) -> float:
        """Steps on stand-in frames at the inference size, then `reset()`, so that the first
        real frame runs at normal speed: oneDNN / cuDNN primitives, allocator pages and
        compiled graphs are made here. The first steps of a video are the slow ones (an empty,
        then a one-frame bank), hence more than one step.

        Args:
            steps: frames stepped (a blank one, then seeded noise).

        Returns:
            the warm-up's wall time in milliseconds.
        """
        rng = np.random.default_rng(0)
        t0 = time.perf_counter()
        try:
            for i in range(max(1, steps)):
                frame = (np.zeros((*self.inference_size, 3), dtype=np.uint8) if i == 0 else
                         rng.integers(0, 256, (*self.inference_size, 3), dtype=np.uint8))
                self.step(frame)
        finally:
            self.reset()
        return (time.perf_counter() - t0) * 1000.0


def _apply_memory_overrides(cfg: ModelConfig, memory: dict[str, Any]) -> tuple[ModelConfig,
                                                                               bool | None,
                                                                               bool | None]:
    """Copy `cfg` with global-memory overrides; return (config, local_enabled, global_enabled)."""
    if not isinstance(memory, dict):
        raise ValueError(f'memory overrides must be a dict, got {type(memory).__name__}')
    cfg = copy.deepcopy(cfg)
    memory = dict(memory)
    local = memory.pop('local_enabled', None)
    glob = memory.pop('global_enabled', memory.pop('enabled', None))
    if 'label_propagation' in memory:
        gamma = memory.pop('label_propagation')
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)):
            raise ValueError(f'memory override label_propagation must be a number, got {gamma!r}')
        cfg.label_propagation = float(gamma)
    if 'local_vote_radius' in memory:
        radius = memory.pop('local_vote_radius')
        if isinstance(radius, bool) or not isinstance(radius, int) or radius < -1:
            raise ValueError(f'memory override local_vote_radius must be an integer >= -1, '
                             f'got {radius!r}')
        cfg.local_memory.vote_radius = radius
    for name, value in (('local_enabled', local), ('global_enabled', glob)):
        if value is not None and not isinstance(value, bool):
            raise ValueError(f'memory override {name} must be true/false, got {value!r}')
    fields = {f.name for f in dataclasses.fields(GlobalMemoryConfig)}
    unknown = sorted(set(memory) - fields)
    if unknown:
        raise ValueError(f'unknown memory override(s) {unknown}; known: '
                         f'{sorted(WEIGHT_FREE_KEYS + SWITCH_KEYS)}')
    weighty = sorted(set(memory) - set(WEIGHT_FREE_KEYS))
    if weighty:
        raise ValueError(f'memory override(s) {weighty} would change the weights; '
                         f'only {list(WEIGHT_FREE_KEYS)} can be changed at load time')
    cfg.global_memory = dataclasses.replace(cfg.global_memory, **memory)
    if local is not None:
        if local and not cfg.local_memory.enabled:
            raise ValueError('memory override local_enabled=true: the model has no local memory')
        cfg.local_memory.enabled = local
    if glob is not None:
        if glob and not cfg.global_memory.enabled:
            raise ValueError('memory override global_enabled=true: the model has no global memory')
        cfg.global_memory.enabled = glob
    cfg.validate()
    return cfg, local, glob


def default_model() -> tuple[DMNet, ModelConfig]:
    """The shipped default checkpoint, or a seeded random stand-in (logged) until one ships."""
    if DEFAULT_CHECKPOINT.is_file():
        return build_from_checkpoint(DEFAULT_CHECKPOINT)
    log.warning('no trained default model shipped at %s: using a randomly initialised DMNet '
                '(seed %d); its masks are meaningless', DEFAULT_CHECKPOINT, DEFAULT_SEED)
    cfg = ModelConfig()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(DEFAULT_SEED)
        model = build_model(cfg, pretrained=False)
        init_batchnorm_stats(model, torch.randn(2, 3, *cfg.input_size))
    return model.eval(), cfg


def load_segmenter(checkpoint: str | Path | None = None, device: str = 'auto', *,
                   precision: str = 'auto', inference_size: tuple[int, int] | None = None,
                   memory: dict[str, Any] | None = None,
                   torch_compile: bool = False, task: str | None = None) -> Segmenter:
    """Load a Segmenter: the public entry point for the node, the CLIs and outside scripts.

    Args:
        checkpoint: a `.safetensors` checkpoint; None loads the model shipped for `task`: the
            default binary model `dmnet_core/models/default.safetensors` (or a seeded random
            stand-in, with a log line), `parts.safetensors` or `type.safetensors`.
        device: 'auto' (CUDA if available, else CPU with a warning), 'cpu', 'cuda', 'cuda:N'.
        precision: 'auto' (fp16 on CUDA; bf16 on a CPU with native bf16, else fp32), 'fp32',
            'fp16', 'bf16'.
        inference_size: (H, W) multiples of 32, overriding the config's `input_size`.
        memory: GlobalMemoryConfig overrides that do not change weights (alpha, beta, n_read,
            capacity, policy, eviction, read_sampling, uniform_stride, seed), plus `local_enabled`
            / `global_enabled` to switch a memory off, `label_propagation` (gamma, 0 = off) and
            `local_vote_radius` (-1 every cell, r >= 0 the local vote from within r cells).
        torch_compile: torch.compile encoder and decoder (`Segmenter.compile_network`; ~20 % faster
            per step on the 2-core CPU here, a few seconds to a minute at start-up; falls back
            to eager with a warning if compiling fails).
        task: None or '' = any (the binary default when no checkpoint is given); 'binary',
            'parts' or 'type' picks the shipped model for that task, or, with a checkpoint,
            checks that the checkpoint is for it.

    Raises:
        FileNotFoundError: the checkpoint path does not exist (names it).
        ValueError: bad device, precision, size, overrides, a checkpoint that does not fit, or
            one for another task.

    On a CPU this also sets glibc's malloc thresholds for the whole process (see
    `dmnet_core.allocator`; `DMNET_DEFAULT_MALLOC=1` opts out).
    """
    dev = resolve_device(device)
    if dev.type == 'cpu':
        # Per-frame activations reuse heap pages instead of page-faulting fresh ones each step.
        reuse_freed_memory()
    if checkpoint is None and task and task != 'binary':
        checkpoint = shipped_checkpoint(task)
    if checkpoint is None:
        model, cfg = default_model()
    else:
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f'checkpoint not found: {path}')
        model, cfg = build_from_checkpoint(path)
    if task and cfg.task != task:
        raise ValueError(f'task {task!r} asked for, but checkpoint '
                         f'{checkpoint or DEFAULT_CHECKPOINT} is for {cfg.task!r}')
    if memory:
        cfg, local, glob = _apply_memory_overrides(cfg, memory)
        model.set_memory_enabled(local=local, global_=glob)
    seg = Segmenter(model, cfg, dev, precision, inference_size)
    if torch_compile:
        seg.compile_network()
    return seg
