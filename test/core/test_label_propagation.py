"""Label propagation: the memory reads' attention carries stored predictions' types forward."""
import numpy as np
import pytest
import tiny_models
import torch

from dmnet_core import Segmenter, load_segmenter
from dmnet_core.checkpoint import save_checkpoint
from dmnet_core.config import default_class_names
from dmnet_core.model import build_model, init_batchnorm_stats
from dmnet_core.model.global_memory import attention_read, attention_weights
from dmnet_core.model.label_propagation import (
    MemoryLabels,
    apply_type_prior,
    cells,
    type_prior,
)

H, W = 64, 96
TYPES = default_class_names('type', 'synth')
K = len(TYPES)


def type_config(**fields):
    return tiny_models.tiny_config(H, W, task='type', class_names=list(TYPES), **fields)


def type_model(cfg=None, seed=0):
    torch.manual_seed(seed)
    model = build_model(cfg or type_config())
    g = torch.Generator().manual_seed(99)
    init_batchnorm_stats(model, torch.randn(2, 3, H, W, generator=g))
    return model.eval()


def pure_shares(b, n, cls, size=(2, 3)):
    """B x N x K x h x w shares of frames whose every cell is class `cls` (background 0)."""
    s = torch.zeros(b, n, K, *size)
    s[:, :, cls] = 1.0
    return s


def test_prior_follows_the_attended_cell_and_is_uniform_without_instrument():
    # Two memory cells: cell 0 is all type 2, cell 1 all background. Query 0 reads cell 0,
    # query 1 reads cell 1.
    shares = torch.zeros(1, 2, K)
    shares[0, 0, 2] = 1.0
    shares[0, 1, 0] = 1.0
    attn = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    pi = type_prior([(attn, shares)], (1, 2))
    assert pi.shape == (1, K - 1, 1, 2)
    assert torch.allclose(pi.sum(1), torch.ones(1, 1, 2))
    assert int(pi[0, :, 0, 0].argmax()) + 1 == 2
    assert abs(float(pi[0, 1, 0, 0]) - (1 + 0.02 / (K - 1)) / 1.02) < 1e-6
    assert torch.allclose(pi[0, :, 0, 1], torch.full((K - 1,), 1 / (K - 1)))
    assert type_prior([], (1, 2)) is None


def test_prior_sums_both_memories_by_instrument_mass():
    local = torch.zeros(1, 1, K)
    local[0, 0, 1] = 0.3                          # a little type 1
    glob = torch.zeros(1, 1, K)
    glob[0, 0, 3] = 0.9                           # much type 3
    one = torch.ones(1, 1, 1)
    pi = type_prior([(one, local), (one, glob)], (1, 1))[0, :, 0, 0]
    assert pi[2] > pi[0] > pi[1]                  # type 3, then type 1, then the rest
    assert abs(float(pi[2]) - (0.9 + 0.02 / 8) / 1.22) < 1e-6


def test_apply_keeps_background_and_renames_among_types():
    logits = torch.log(torch.tensor([0.4, 0.35, 0.25] + [1e-4] * (K - 3)))[None, :, None, None]
    prior = torch.full((1, K - 1, 1, 1), 0.01)
    prior[0, 1] = 1 - 0.01 * (K - 2)              # the memories say type 2
    out = apply_type_prior(logits, prior, 2.0)
    p_in, p_out = torch.softmax(logits, 1), torch.softmax(out, 1)
    assert torch.allclose(p_out[:, 0], p_in[:, 0], atol=1e-6)
    assert torch.allclose(p_out.sum(1), torch.ones(1, 1, 1), atol=1e-6)
    assert int(p_in[0, 1:].argmax()) == 0 and int(p_out[0, 1:].argmax()) == 1
    # the decoder's channels-last layout is kept (the Segmenter's argmax runs on it)
    wide = torch.randn(1, K, 8, 10).contiguous(memory_format=torch.channels_last)
    assert apply_type_prior(wide, torch.full((1, K - 1, 2, 3), 1 / (K - 1)), 2.0).is_contiguous(
        memory_format=torch.channels_last)
    # gamma 0, and a task with a single instrument class, are left alone
    assert apply_type_prior(logits, prior, 0.0) is logits
    binary = torch.randn(1, 2, 4, 4)
    assert apply_type_prior(binary, torch.ones(1, 1, 1, 1), 2.0) is binary


def test_read_weights_are_the_weights_the_reads_use():
    model = type_model()
    torch.manual_seed(1)
    f = [torch.randn(1, 32, H // 32, W // 32) for _ in range(3)]
    state = None
    for x in f:
        out, state = model.local_memory(x, state)
    lm = model.local_memory
    full = attention_weights(lm.query(state.h), torch.stack(state.keys, 1))
    values = torch.stack(state.values, 1)
    read = attention_read(lm.query(state.h), torch.stack(state.keys, 1), values)
    assert torch.allclose((full @ cells(values)).transpose(1, 2).reshape(read.shape), read,
                          atol=1e-5)
    prev = lm.read_weights(state)                 # the previous 2 frames' cells only
    hw = f[0][0, 0].numel()
    assert prev.shape == (1, hw, 2 * hw)
    assert torch.equal(prev, full[..., :2 * hw])
    gm = model.global_memory
    mem_k = torch.stack([gm.key_value(x)[0] for x in f], 1)
    mem_v = torch.stack([gm.key_value(x)[1] for x in f], 1)
    weights = gm.read_weights(f[0], mem_k)
    read = attention_read(gm.key_value(f[0])[0], mem_k, mem_v)
    assert torch.allclose((weights @ cells(mem_v)).transpose(1, 2).reshape(read.shape), read,
                          atol=1e-5)


@pytest.mark.parametrize('local,glob', [(True, True), (True, False), (False, True)])
def test_step_names_what_the_memories_stored(local, glob):
    cfg = type_config()
    cfg.local_memory.enabled, cfg.global_memory.enabled = local, glob
    model = type_model(cfg)
    g = torch.Generator().manual_seed(3)
    xs = torch.randn(3, 1, 3, H, W, generator=g)
    with torch.no_grad():
        state = None
        for x in xs[:2]:
            skips, f32 = model.encode(x)
            _, state = model.step(skips, f32, state)
        skips, f32 = model.encode(xs[2])
        mem_k = torch.stack([model.global_key_value(f32)[0]] * 2, 1) if glob else None
        mem_v = torch.stack([model.global_key_value(f32)[1]] * 2, 1) if glob else None
        plain, _ = model.step(skips, f32, state, mem_k, mem_v)
        for cls in (1, 5):
            labels = MemoryLabels(local=pure_shares(1, 2, cls) if local else None,
                                  global_=pure_shares(1, 2, cls) if glob else None, gamma=16.0)
            named, _ = model.step(skips, f32, state, mem_k, mem_v, labels)
            best_type = named[:, 1:].argmax(1) + 1
            assert (best_type == cls).all()
            # background's probability is the network's own
            assert torch.allclose(torch.log_softmax(plain, 1)[:, 0], named[:, 0], atol=1e-5)
        off, _ = model.step(skips, f32, state, mem_k, mem_v,
                            MemoryLabels(local=None, global_=None, gamma=2.0))
        assert torch.equal(off, plain)            # nothing stored: nothing propagated


def test_local_vote_radius_0_names_each_cell_after_the_same_place():
    """Two previous frames whose left column was named forceps (1) and the rest scissors (3):
    with vote_radius 0 the prior of every cell is what that cell was named; with the trained
    vote over every cell (-1) the left cells also hear the scissors around them."""
    cfg = type_config()
    cfg.global_memory.enabled = False
    model = type_model(cfg)
    g = torch.Generator().manual_seed(3)
    xs = torch.randn(3, 1, 3, H, W, generator=g)
    stored = pure_shares(1, 2, 3)
    stored[:, :, :, :, 0] = 0
    stored[:, :, 1, :, 0] = 1.0                               # column 0: forceps
    with torch.no_grad():
        state = None
        for x in xs:
            skips, f32 = model.encode(x)
            _, state = model.step(skips, f32, state)
        labels = MemoryLabels(local=stored, global_=None, gamma=2.0)
        priors = {}
        for radius in (-1, 0):
            model.local_memory.vote_radius = radius
            priors[radius] = model.type_prior(f32, None, state, None, labels)  # 1 x T x 2 x 3
    same = priors[0]
    assert (same[0, 0, :, 0] > 0.9).all() and (same[0, 2, :, 1:] > 0.9).all()
    assert (priors[-1][0, 0, :, 0] < same[0, 0, :, 0] - 0.05).all()


def test_local_vote_radius_is_a_load_time_setting(tmp_path):
    cfg = type_config(label_propagation=2.0)
    path = save(tmp_path, type_model(cfg), cfg)
    frames = video(6, seed=2)
    assert load_segmenter(path, 'cpu').model.local_memory.vote_radius == -1
    near = load_segmenter(path, 'cpu', memory={'local_vote_radius': 0})
    assert near.model.local_memory.vote_radius == 0 and near.config.local_memory.vote_radius == 0
    trained = load_segmenter(path, 'cpu')
    labels = [(near.step(f), trained.step(f)) for f in frames]
    assert any(not np.array_equal(a, b) for a, b in labels[1:])
    for bad in (-2, 0.5, True, 'same'):
        with pytest.raises(ValueError, match='local_vote_radius'):
            load_segmenter(path, 'cpu', memory={'local_vote_radius': bad})
    cfg.local_memory.vote_radius = -3
    with pytest.raises(ValueError, match='vote_radius must be an integer >= -1'):
        cfg.validate()


def save(tmp_path, model, cfg, name='m'):
    path = tmp_path / f'{name}.safetensors'
    save_checkpoint(path, model, cfg)
    return path


def video(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (H, W, 3), dtype=np.uint8) for _ in range(n)]


def test_segmenter_keeps_what_each_memory_frame_was_named(tmp_path):
    cfg = type_config(label_propagation=2.0)
    cfg.global_memory.policy = 'recent'
    model = type_model(cfg)
    seg = Segmenter(model, cfg)
    for rgb in video(5):
        seg.step(rgb)
    # ELM window 3: the two previous frames; the bank: every frame, each with its shares
    assert len(seg.local_shares) == 2
    assert all(s.shape == (1, K, H // 32, W // 32) for s in seg.local_shares)
    assert all(torch.allclose(s.sum(1), torch.ones(1)) for s in seg.local_shares)
    assert all(e.shares is not None for e in seg.bank.entries)
    seg.reset()
    assert seg.local_shares == [] and len(seg.bank) == 0
    # off (the default): nothing is kept and the labels are the paper's
    path = save(tmp_path, model, cfg)
    off = load_segmenter(path, 'cpu', memory={'label_propagation': 0})
    assert off.label_propagation == 0
    frames = video(6, seed=1)
    off_labels = [off.step(f) for f in frames]
    assert off.local_shares == [] and all(e.shares is None for e in off.bank.entries)
    on = load_segmenter(path, 'cpu')
    on_labels = [on.step(f) for f in frames]
    assert np.array_equal(on_labels[0], off_labels[0])    # frame 0 has no memory yet
    assert any(not np.array_equal(a, b) for a, b in zip(on_labels[1:], off_labels[1:]))


def test_label_propagation_is_validated(tmp_path):
    cfg = type_config(label_propagation=-1.0)
    with pytest.raises(ValueError, match='label_propagation'):
        cfg.validate()
    path = save(tmp_path, type_model(), type_config())
    with pytest.raises(ValueError, match='label_propagation'):
        load_segmenter(path, 'cpu', memory={'label_propagation': 'lots'})
    with pytest.raises(ValueError, match='label_propagation'):
        load_segmenter(path, 'cpu', memory={'label_propagation': 40})
