"""Optical-flow baselines: warping, DIS and RAFT flow, the blended prior (tiny sizes)."""
import cv2
import numpy as np
import pytest
import torch

from bench.baselines import (
    DisFlow,
    FlowBaseline,
    RaftFlow,
    base_grid,
    make_flow,
    warp_numpy,
    warp_torch,
)


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth random RGB texture (DIS needs gradients everywhere), uint8 h x w x 3."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 4, w // 4, 3), dtype=np.uint8)
    return cv2.GaussianBlur(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC), (5, 5), 0)


def _disc_mask(h: int, w: int, cx: int, cy: int, r: int) -> np.ndarray:
    ys, xs = np.mgrid[:h, :w]
    return ((xs - cx) ** 2 + (ys - cy) ** 2 <= r * r).astype(np.float32)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1))


def test_zero_flow_is_identity() -> None:
    src = torch.rand(2, 3, 16, 20)
    out = warp_torch(src, torch.zeros(2, 2, 16, 20))
    assert torch.allclose(out, src, atol=1e-5)
    src_np = np.random.default_rng(1).random((16, 20, 5)).astype(np.float32)
    np.testing.assert_allclose(warp_numpy(src_np, np.zeros((16, 20, 2), np.float32)), src_np,
                               atol=1e-5)


def test_integer_shift_matches_roll() -> None:
    # out(y, x) = src(y + 2, x + 3): content moves up 2 and left 3.
    src = torch.rand(1, 4, 24, 32)
    flow = torch.zeros(1, 2, 24, 32)
    flow[:, 0], flow[:, 1] = 3.0, 2.0
    out = warp_torch(src, flow, base_grid(24, 32))
    assert torch.allclose(out[..., :-2, :-3], src[..., 2:, 3:], atol=1e-5)
    out_np = warp_numpy(src[0].permute(1, 2, 0).numpy().copy(),
                        flow[0].permute(1, 2, 0).numpy().copy())
    np.testing.assert_allclose(out_np, out[0].permute(1, 2, 0).numpy(), atol=1e-4)


def test_bad_shapes_are_named() -> None:
    with pytest.raises(ValueError, match='warp_torch'):
        warp_torch(torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 9))
    with pytest.raises(ValueError, match='preset'):
        DisFlow('slowest')
    with pytest.raises(ValueError, match='flow kind'):
        make_flow('farneback')


@pytest.mark.parametrize('dx, dy', [(4, 0), (3, -2)])
def test_dis_flow_warps_previous_mask_onto_shifted_frame(dx: int, dy: int) -> None:
    h, w = 64, 96
    big = _texture(h + 16, w + 16)
    # The scene moves by (dx, dy) between frames: cur(y, x) = prev(y - dy, x - dx).
    prev = big[8:8 + h, 8:8 + w]
    cur = big[8 - dy:8 - dy + h, 8 - dx:8 - dx + w]
    grey = [cv2.cvtColor(im, cv2.COLOR_RGB2GRAY) for im in (cur, prev)]
    flow = DisFlow('medium').flow_numpy(*grey)
    inner = (slice(12, -12), slice(12, -12))
    assert np.median(flow[inner][..., 0]) == pytest.approx(-dx, abs=0.5)
    assert np.median(flow[inner][..., 1]) == pytest.approx(-dy, abs=0.5)
    prev_mask = _disc_mask(h, w, 44, 30, 12)
    cur_mask = _disc_mask(h, w, 44 + dx, 30 + dy, 12)
    warped = warp_numpy(prev_mask, flow) > 0.5
    assert _iou(warped, cur_mask > 0.5) > 0.85
    assert _iou(prev_mask > 0.5, cur_mask > 0.5) < _iou(warped, cur_mask > 0.5)


def test_raft_small_shapes_and_finite() -> None:
    torch.manual_seed(0)
    raft = RaftFlow('cpu', num_flow_updates=2)
    # Below RAFT's 128-pixel minimum and off the 8-pixel grid: padded inside, cropped back.
    a, b = torch.rand(1, 3, 60, 72), torch.rand(1, 3, 60, 72)
    flow = raft(a, b)
    assert flow.shape == (1, 2, 60, 72) and torch.isfinite(flow).all()


class _FakeBackbone:
    """Backbone stand-in: probabilities = a fixed disc per call, frames from the RGB input."""

    def __init__(self, masks: list[np.ndarray]) -> None:
        self.masks = list(masks)

    def __call__(self, rgb: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        fg = torch.from_numpy(self.masks.pop(0))
        probs = torch.stack((1.0 - fg, fg))[None]
        frame = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
        return frame, probs


def test_flow_baseline_blends_warped_prior() -> None:
    h, w, dx = 64, 96, 4
    big = _texture(h, w + 16, seed=3)
    prev, cur = big[:, 8:8 + w], big[:, 8 - dx:8 - dx + w]
    m0 = _disc_mask(h, w, 40, 32, 12)
    m1 = _disc_mask(h, w, 40 + dx, 32, 12)
    base = FlowBaseline(_FakeBackbone([m0, np.zeros_like(m1), m0]), DisFlow('medium'),
                        prior_weight=0.5)
    labels0, probs0 = base.step(prev, return_probs=True)
    np.testing.assert_array_equal(labels0, m0.astype(np.uint8))   # first frame: no prior
    # The backbone sees nothing on frame 1; the warped prior alone puts p(fg) = 0.5 on the
    # moved disc and ~0 elsewhere.
    _, probs1 = base.step(cur, return_probs=True)
    assert probs1.shape == (2, h, w) and np.isfinite(probs1).all()
    assert _iou(probs1[1] > 0.25, m1 > 0.5) > 0.85
    assert base.last_inference_ms > 0.0
    base.reset()
    labels2 = base.step(cur)                                       # after reset: no prior
    np.testing.assert_array_equal(labels2, m0.astype(np.uint8))
