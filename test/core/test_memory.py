"""Memories: the readout, the ConvLSTM/ELM state, read sampling, selection and eviction policies."""
import math

import pytest
import torch

from dmnet_core.model.global_memory import (
    ActivePolicy,
    MemoryBank,
    MemoryEntry,
    ReadSampler,
    RecentPolicy,
    UniformPolicy,
    attention_read,
    build_policy,
    frame_descriptor,
    representativeness,
    update_bank,
)
from dmnet_core.model.local_memory import ConvLSTMCell, EfficientLocalMemory


def test_attention_read_matches_explicit_softmax():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 3, 5, generator=g)
    mk = torch.randn(2, 3, 4, 3, 5, generator=g)
    mv = torch.randn(2, 3, 6, 3, 5, generator=g)
    out = attention_read(q, mk, mv)
    assert out.shape == (2, 6, 3, 5)
    # Explicit: weights over all N*h*w memory positions for each query position.
    keys = mk.permute(0, 1, 3, 4, 2).reshape(2, -1, 4)            # B x NHW x Ck
    vals = mv.permute(0, 1, 3, 4, 2).reshape(2, -1, 6)            # B x NHW x Cv
    qs = q.flatten(2).transpose(1, 2)                              # B x HW x Ck
    w = torch.softmax(qs @ keys.transpose(1, 2) / math.sqrt(4), dim=-1)
    ref = (w @ vals).transpose(1, 2).reshape(2, 6, 3, 5)
    assert torch.allclose(out, ref, atol=1e-5)


def test_convlstm_cell_takes_and_returns_state():
    cell = ConvLSTMCell(8, 5)
    x = torch.randn(2, 8, 3, 4)
    h, c = cell(x)
    assert h.shape == c.shape == (2, 5, 3, 4)
    h2, c2 = cell(x, (h, c))
    assert not torch.allclose(h2, h)
    assert h.abs().max() <= 1


@pytest.mark.parametrize('window', [1, 3])
def test_elm_window_is_bounded(window):
    elm = EfficientLocalMemory(16, 8, window)
    state = None
    for _ in range(6):
        out, state = elm(torch.randn(1, 16, 2, 3), state)
        assert out.shape == (1, 16, 2, 3)
    assert len(state.keys) == len(state.values) == window


def test_local_vote_radius_keeps_the_near_cells_and_the_rows_total():
    """vote_radius r >= 0: label propagation's local vote keeps, in each previous frame, only the
    cells within r (Chebyshev) of the query cell, rescaled to what the read took from the past;
    -1, or a radius that covers the grid, is the read's own attention."""
    torch.manual_seed(0)
    elm = EfficientLocalMemory(16, 8, 3)
    state = None
    for _ in range(3):
        _, state = elm(torch.randn(1, 16, 3, 4) * 3, state)
    full = elm.read_weights(state)                          # 1 x 12 x 24
    torch.testing.assert_close(elm.vote_weights(state), full)
    elm.vote_radius = 0
    same = elm.vote_weights(state)
    torch.testing.assert_close(same.sum(-1), full.sum(-1))
    cells = same.unflatten(-1, (2, 12))                     # 1 x 12 x 2 frames x 12 cells
    off = ~torch.eye(12, dtype=torch.bool)
    assert cells[0][:, :, :][off[:, None, :].expand(12, 2, 12)].abs().max() == 0
    assert (cells[0].diagonal(dim1=0, dim2=2) > 0).all()
    ratio = cells / full.unflatten(-1, (2, 12))             # the frames keep their proportions
    diag = ratio[0].diagonal(dim1=0, dim2=2)                # 2 x 12
    torch.testing.assert_close(diag[0], diag[1])
    elm.vote_radius = 1
    near = elm.vote_weights(state).unflatten(-1, (2, 12))[0]
    assert near[0, :, 2:4].abs().max() == 0 and near[0, :, 6].abs().max() == 0   # cell (0,0)
    assert (near[0, :, [0, 1, 4, 5]] > 0).all()
    elm.vote_radius = 3
    torch.testing.assert_close(elm.vote_weights(state), full)


def test_read_sampler_modes():
    spread = ReadSampler('spread', 4)
    assert spread.indices(3) == [0, 1, 2]
    assert spread.indices(16) == [0, 5, 10, 15]           # oldest and newest included
    assert spread.indices(16) == spread.indices(16)       # deterministic
    assert ReadSampler('latest', 4).indices(10) == [6, 7, 8, 9]
    rnd = ReadSampler('random', 4, seed=3)
    draws = [rnd.indices(20) for _ in range(5)]
    assert all(len(set(d)) == 4 and max(d) < 20 for d in draws)
    assert len({tuple(d) for d in draws}) > 1
    rnd.reset()
    assert [rnd.indices(20) for _ in range(5)] == draws   # reset reseeds: reproducible
    with pytest.raises(ValueError, match='sampling'):
        ReadSampler('everything', 4)


def confident_logits(confident: bool) -> torch.Tensor:
    """1 x 2 x 4 x 4 logits: near one-hot (low entropy) or flat (high entropy)."""
    logits = torch.zeros(1, 2, 4, 4)
    if confident:
        logits[:, 1] = 8.0
    return logits


def feature(pattern: int) -> torch.Tensor:
    """1 x 8 x 4 x 4 constructed bottleneck: distinct patterns differ, equal ones are identical."""
    g = torch.Generator().manual_seed(pattern)
    return torch.rand(1, 8, 4, 4, generator=g)


def kv(f):
    return f[:, :2], f[:, :4]


def test_representativeness_prefers_confident_predictions():
    r_conf = float(representativeness(confident_logits(True))[0])
    r_flat = float(representativeness(confident_logits(False))[0])
    assert r_flat == pytest.approx(-math.log(2), abs=1e-6)
    assert r_conf > -0.01 > r_flat


def test_descriptor_distance_is_scale_free_and_bounded():
    f = feature(0)
    d1, d2 = frame_descriptor(f), frame_descriptor(3 * f + 1)
    assert torch.allclose(d1, d2, atol=1e-6)               # centred and unit norm
    d3 = frame_descriptor(feature(1))
    assert 0 < float(torch.linalg.vector_norm(d1 - d3)) <= 2


def test_active_selection_prefers_confident_and_novel_frames():
    policy = ActivePolicy(alpha=-0.3, beta=-0.2, eviction='redundant')
    bank = MemoryBank()
    # An uncertain frame is refused even into an empty bank.
    assert not update_bank(bank, policy, 4, 0, confident_logits(False), feature(0), kv)
    # A confident frame enters the empty bank.
    assert update_bank(bank, policy, 4, 1, confident_logits(True), feature(0), kv)
    # Confident but identical to the newest entry: refused (not novel).
    assert not update_bank(bank, policy, 4, 2, confident_logits(True), feature(0), kv)
    # Confident and dissimilar: admitted.
    assert update_bank(bank, policy, 4, 3, confident_logits(True), feature(1), kv)
    # Dissimilar but uncertain: refused.
    assert not update_bank(bank, policy, 4, 4, confident_logits(False), feature(2), kv)
    assert bank.frames == [1, 3]


def test_redundant_eviction_drops_a_near_duplicate():
    policy = ActivePolicy(alpha=-1.0, beta=10.0, eviction='redundant')
    bank = MemoryBank()
    patterns = [0, 1, 0, 2]        # frame 2 repeats frame 0's content
    for frame, p in enumerate(patterns):
        update_bank(bank, policy, 4, frame, confident_logits(True), feature(p), kv)
    assert bank.frames == [0, 1, 2, 3]
    update_bank(bank, policy, 4, 4, confident_logits(True), feature(3), kv)
    # The closest pair is frames 0 and 2; the older one (0) goes, the new frame enters.
    assert bank.frames == [1, 2, 3, 4]


def test_oldest_eviction_and_capacity():
    policy = build_policy('active', alpha=-10.0, beta=10.0, eviction='oldest', uniform_stride=1)
    bank = MemoryBank()
    for frame in range(10):
        update_bank(bank, policy, 3, frame, confident_logits(False), feature(frame), kv)
        assert len(bank) <= 3
    assert bank.frames == [7, 8, 9]


def test_stored_key_value_is_computed_once_per_admitted_frame():
    calls = []

    def counting_kv(f):
        calls.append(1)
        return kv(f)

    policy = RecentPolicy()
    bank = MemoryBank()
    for frame in range(7):
        update_bank(bank, policy, 4, frame, confident_logits(True), feature(frame), counting_kv)
    assert len(calls) == 7 and len(bank) == 4
    keys, values = bank.gather([0, 3])
    assert keys.shape == (1, 2, 2, 4, 4) and values.shape == (1, 2, 4, 4, 4)
    assert torch.equal(keys[:, 1], kv(feature(6))[0])


def test_uniform_policy_covers_the_whole_past_within_capacity():
    policy = UniformPolicy(stride=1)
    bank = MemoryBank()
    for frame in range(64):
        update_bank(bank, policy, 8, frame, confident_logits(True), feature(frame % 5), kv)
        assert len(bank) <= 8
    frames = bank.frames
    gaps = {b - a for a, b in zip(frames, frames[1:])}
    assert frames[0] == 0 and len(gaps) == 1              # evenly spaced from the first frame
    assert frames[-1] >= 64 - 2 * gaps.pop()
    policy.reset()
    assert policy.stride == 1


def test_bank_store_primitives():
    bank = MemoryBank()
    for i in range(5):
        bank.add(MemoryEntry(torch.zeros(1, 2, 1, 1), torch.zeros(1, 3, 1, 1), torch.zeros(4), i))
    bank.remove([3, 1, 3])
    assert bank.frames == [0, 2, 4] and bank.newest().frame == 4
    bank.clear()
    assert len(bank) == 0 and bank.newest() is None
    with pytest.raises(ValueError, match='policy'):
        build_policy('greedy', alpha=0, beta=0, eviction='oldest', uniform_stride=1)
    with pytest.raises(ValueError, match='eviction'):
        ActivePolicy(0, 0, eviction='random')
