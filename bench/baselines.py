"""Optical-flow temporal baselines in the spirit of MF-TAPNet, for the speed comparison.

A flow baseline is DMNet's single-frame backbone (encoder + decoder, both memories off) plus
a temporal prior: the previous frame's fused class probabilities, warped onto the current
frame by dense optical flow, are blended with the current probabilities:

    p_t = (1 - w) * softmax(backbone(x_t)) + w * warp(p_{t-1}, F_{t -> t-1})

with w = `prior_weight` (0.5 by default); p_0 is the backbone's own output. Flow is
computed from the current frame to the previous one at the inference size, so backward
warping is exact: warp(p, F)(y, x) = p(y + F_y(y, x), x + F_x(y, x)).

Two flows, as the issue asks: a deep one (torchvision's RAFT-small architecture with random
weights -- its cost does not depend on the weights, and nothing is ever downloaded) and a
classical one (OpenCV DIS on grey frames). Only the cost is the point here; with random RAFT
weights the prior is noise.

Naming: `h, w` = inference size; `H, W` = the input frame's size.
"""
from __future__ import annotations

import time
from typing import Protocol

import cv2
import numpy as np
import torch
import torch.nn.functional as F

FLOW_KINDS = ('raft', 'dis')
RAFT_MIN_SIDE = 128                 # RAFT's 4-level correlation pyramid at 1/8
DIS_PRESETS = {
    'ultrafast': cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    'fast': cv2.DISOPTICAL_FLOW_PRESET_FAST,
    'medium': cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


def base_grid(h: int, w: int, device: torch.device | str = 'cpu') -> torch.Tensor:
    """Pixel coordinates `1 x 2 x h x w` (channel 0 = x, channel 1 = y), float32."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32, device=device),
                            torch.arange(w, dtype=torch.float32, device=device), indexing='ij')
    return torch.stack((xs, ys))[None]


def warp_torch(src: torch.Tensor, flow: torch.Tensor,
               grid: torch.Tensor | None = None) -> torch.Tensor:
    """Backward-warp `src` (B x C x h x w) by `flow` (B x 2 x h x w, pixels, x then y).

    Output pixel (y, x) samples `src` at (y + flow_y, x + flow_x), bilinearly; samples outside
    the image take the nearest border value.

    Args:
        src: the map to warp (the previous frame's probabilities).
        flow: current -> source displacement per output pixel.
        grid: optional cached `base_grid(h, w)` on the same device.
    """
    if src.shape[-2:] != flow.shape[-2:] or flow.shape[1] != 2:
        raise ValueError(f'warp_torch: src {tuple(src.shape)} and flow {tuple(flow.shape)} '
                         'must be B x C x h x w and B x 2 x h x w')
    h, w = flow.shape[-2:]
    if grid is None:
        grid = base_grid(h, w, flow.device)
    pos = grid + flow.float()
    # grid_sample wants B x h x w x 2 in [-1, 1] with align_corners=True: -1 = pixel 0.
    sx = pos[:, 0] * (2.0 / max(w - 1, 1)) - 1.0
    sy = pos[:, 1] * (2.0 / max(h - 1, 1)) - 1.0
    out = F.grid_sample(src.float(), torch.stack((sx, sy), dim=-1), mode='bilinear',
                        padding_mode='border', align_corners=True)
    return out.to(src.dtype)


def warp_numpy(src: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """`warp_torch` with OpenCV: `src` h x w (x C) float32, `flow` h x w x 2 (x then y)."""
    if src.shape[:2] != flow.shape[:2] or flow.shape[-1] != 2:
        raise ValueError(f'warp_numpy: src {src.shape} and flow {flow.shape} must be '
                         'h x w (x C) and h x w x 2')
    h, w = flow.shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(src, xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


class FlowEstimator(Protocol):
    """Dense flow from `cur` to `prev`: both 1 x 3 x h x w float in [0, 1] on the device."""

    name: str

    def __call__(self, cur: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """Return 1 x 2 x h x w flow in pixels (x then y) on the inputs' device."""
        ...


class RaftFlow:
    """Deep flow: torchvision's RAFT-small architecture, random weights (cost only).

    Args:
        device: where RAFT runs.
        num_flow_updates: GRU refinement steps (torchvision's default is 12).
        dtype: autocast dtype on CUDA (fp16/bf16) or None for fp32.
    """

    name = 'raft_small'

    def __init__(self, device: torch.device | str = 'cpu', num_flow_updates: int = 12,
                 dtype: torch.dtype | None = None) -> None:
        from torchvision.models.optical_flow import raft_small

        self.device = torch.device(device)
        # weights=None: random init, never a download; only the cost is measured.
        self.model = raft_small(weights=None, progress=False).eval().to(self.device)
        self.num_flow_updates = num_flow_updates
        self.dtype = dtype if self.device.type == 'cuda' else None

    @torch.inference_mode()
    def __call__(self, cur: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        h, w = cur.shape[-2:]
        # RAFT needs multiples of 8 and at least 128 pixels a side (its correlation pyramid):
        # pad by edge replication, crop the flow back.
        ph, pw = max(-(-h // 8) * 8, RAFT_MIN_SIDE), max(-(-w // 8) * 8, RAFT_MIN_SIDE)
        pads = (0, pw - w, 0, ph - h)
        # RAFT expects images in [-1, 1].
        a, b = (F.pad(x * 2.0 - 1.0, pads, mode='replicate') if pads != (0, 0, 0, 0)
                else x * 2.0 - 1.0 for x in (cur, prev))
        with torch.autocast(self.device.type, dtype=self.dtype or torch.float32,
                            enabled=self.dtype is not None):
            flow = self.model(a, b, num_flow_updates=self.num_flow_updates)[-1][..., :h, :w]
        # Random weights can overflow in half precision; keep the warp finite.
        return torch.nan_to_num(flow.float(), nan=0.0, posinf=0.0, neginf=0.0)


class DisFlow:
    """Classical flow: OpenCV DIS on grey frames, on the CPU whatever the device.

    Args:
        preset: 'ultrafast', 'fast' or 'medium'.
    """

    def __init__(self, preset: str = 'fast') -> None:
        if preset not in DIS_PRESETS:
            raise ValueError(f'DIS preset {preset!r} not in {sorted(DIS_PRESETS)}')
        self.name = f'dis_{preset}'
        self.dis = cv2.DISOpticalFlow_create(DIS_PRESETS[preset])

    def flow_numpy(self, cur_grey: np.ndarray, prev_grey: np.ndarray) -> np.ndarray:
        """Flow h x w x 2 float32 from uint8 grey `cur_grey` to `prev_grey`."""
        return self.dis.calc(cur_grey, prev_grey, None)

    def __call__(self, cur: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        flow = self.flow_numpy(_to_grey(cur), _to_grey(prev))
        # h x w x 2 -> 1 x 2 x h x w on the frames' device.
        return torch.from_numpy(flow).permute(2, 0, 1)[None].to(cur.device)


def _to_grey(img: torch.Tensor) -> np.ndarray:
    """1 x 3 x h x w float RGB in [0, 1] -> h x w uint8 grey (ITU-R 601 weights)."""
    r, g, b = img[0].float()
    grey = (0.299 * r + 0.587 * g + 0.114 * b) * 255.0
    return grey.clamp_(0, 255).to(torch.uint8).cpu().numpy()


def make_flow(kind: str, device: torch.device | str = 'cpu', *,
              dtype: torch.dtype | None = None, dis_preset: str = 'fast') -> FlowEstimator:
    """A flow estimator by name: 'raft' (deep) or 'dis' (classical)."""
    if kind == 'raft':
        return RaftFlow(device, dtype=dtype)
    if kind == 'dis':
        return DisFlow(dis_preset)
    raise ValueError(f'unknown flow kind {kind!r}; expected one of {FLOW_KINDS}')


class Backbone(Protocol):
    """Single-frame segmentation: uint8 H x W x 3 RGB -> (frame 1 x 3 x h x w in [0, 1],
    probabilities 1 x C x h x w), both on the device at the inference size."""

    def __call__(self, rgb: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        ...


class FlowBaseline:
    """Backbone + flow-warped previous prediction as a temporal prior (see module docstring).

    The same per-frame contract as `Segmenter`: `step(rgb) -> labels`, `reset()`,
    `last_inference_ms`.

    Args:
        backbone: single-frame segmentation at the inference size (`Backbone`).
        flow: a `FlowEstimator` (`RaftFlow` or `DisFlow`).
        prior_weight: w in the blend, in [0, 1).
    """

    def __init__(self, backbone: Backbone, flow: FlowEstimator, prior_weight: float = 0.5) -> None:
        if not 0.0 <= prior_weight < 1.0:
            raise ValueError(f'prior_weight must be in [0, 1), got {prior_weight}')
        self.backbone = backbone
        self.flow = flow
        self.prior_weight = prior_weight
        self.last_inference_ms = 0.0
        self._grid: torch.Tensor | None = None
        self.reset()

    def reset(self) -> None:
        """Forget the previous frame (call at a cut or a new video)."""
        self._prev_frame: torch.Tensor | None = None
        self._prev_probs: torch.Tensor | None = None

    @torch.inference_mode()
    def step(self, rgb: np.ndarray, return_probs: bool = False):
        """Segment one uint8 H x W x 3 RGB frame; labels h x w uint8 (inference size).

        With `return_probs=True`, returns `(labels, probs C x h x w float32 numpy)`.
        """
        start = time.perf_counter()
        frame, probs = self.backbone(rgb)
        if self._prev_frame is not None and self._prev_frame.shape == frame.shape:
            flow = self.flow(frame, self._prev_frame)
            if self._grid is None or self._grid.shape[-2:] != flow.shape[-2:]:
                self._grid = base_grid(*flow.shape[-2:], device=flow.device)
            prior = warp_torch(self._prev_probs, flow, self._grid)
            probs = torch.lerp(probs.float(), prior.float(), self.prior_weight)
        self._prev_frame, self._prev_probs = frame, probs
        labels = probs[0].argmax(0).to(torch.uint8).cpu().numpy()
        self.last_inference_ms = (time.perf_counter() - start) * 1000.0
        if return_probs:
            return labels, probs[0].float().cpu().numpy()
        return labels
