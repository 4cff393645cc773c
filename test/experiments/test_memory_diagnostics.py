"""Memory diagnostics: the exposed attention matches the model's read; probes; admit sweep."""
import math

import numpy as np
import pytest
import tiny_models
import torch

from dmnet_core.model import build_model, init_batchnorm_stats
from dmnet_core.model.global_memory import attention_read
from dmnet_core.segmenter import Segmenter
from experiments.memory_ablation.memory_diagnostics import (
    MemoryProbe,
    admit_sweep,
    attention_stats,
    probe_segmenter,
    score_distributions,
)

H, W = 64, 64


def _segmenter(**memory) -> Segmenter:
    cfg = tiny_models.tiny_config(H, W, memory)
    torch.manual_seed(0)
    model = build_model(cfg)
    init_batchnorm_stats(model, torch.randn(2, 3, H, W))
    return Segmenter(model, cfg, 'cpu', 'fp32')


def _frames(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(n)]


def test_attention_stats_matches_the_read() -> None:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 8, 3, 4, generator=g)
    k = torch.randn(2, 3, 8, 3, 4, generator=g)
    v = torch.randn(2, 3, 5, 3, 4, generator=g)
    read, ent, per_frame = attention_stats(q, k, v)
    torch.testing.assert_close(read, attention_read(q, k, v), rtol=1e-4, atol=1e-5)
    assert ((ent > 0) & (ent < 1)).all()
    torch.testing.assert_close(per_frame.sum(1), torch.ones(2))
    # Identical keys: uniform attention, entropy exactly 1 (normalised).
    _, ent, per_frame = attention_stats(q, torch.zeros_like(k), v)
    torch.testing.assert_close(ent, torch.ones(2))
    torch.testing.assert_close(per_frame, torch.full((2, 3), 1 / 3))
    # One key far more similar than the rest: a sharp read, low entropy, mass on its frame.
    same = q[:, :, :1, :1].expand_as(q)                  # one query vector everywhere
    sharp = torch.zeros_like(k)
    sharp[:, 1, :, 0, 0] = same[:, :, 0, 0] * 10
    _, ent, per_frame = attention_stats(same, sharp, v)
    assert (ent < 0.2).all() and (per_frame[:, 1] > 0.9).all()


def test_probe_records_every_read_and_unhooks() -> None:
    seg = _segmenter(alpha=-math.inf, beta=math.inf)      # the bank takes every frame
    with MemoryProbe(seg.model) as probe:
        for f in _frames(4):
            seg.step(f)
    s = probe.records.summary()
    assert s['global_self_reads'] == 1 and s['global_bank_reads'] == 3   # first frame: empty
    assert s['local_reads'] == 4
    for key in ('global_entropy', 'global_share', 'local_entropy', 'local_share'):
        assert 0.0 < s[key] < 1.0, key
    # The first frame's window has no past frame; later ones do (window 3).
    assert probe.records.local_past_mass[0] == 0.0
    assert all(0 < m < 1 for m in probe.records.local_past_mass[1:])
    seg.step(_frames(1)[0])
    assert s['local_reads'] == len(probe.records.local_entropy)   # hooks removed
    # Without the memories there is nothing to read.
    seg.reset()
    seg.model.set_memory_enabled(local=False, global_=False)
    with MemoryProbe(seg.model) as probe:
        seg.step(_frames(1)[0])
    assert probe.records.summary()['local_reads'] == 0


def test_recorded_replay_reproduces_the_segmenters_admissions() -> None:
    seg = _segmenter(alpha=-0.57, beta=-0.01)
    admitted = 0
    with probe_segmenter(seg) as (_, recorder):
        for f in _frames(8):
            seg.step(f)
            admitted += seg.last_admitted
    assert len(recorder.records) == 8
    assert 0 < admitted < 8                                    # the rule is exercised
    rows = admit_sweep([recorder.records], [-0.57, -math.inf, math.inf], [-0.01])
    assert rows[0]['admitted'] == admitted and rows[0]['frames'] == 8
    assert rows[1]['admitted'] >= admitted and rows[2]['admitted'] == 0
    assert type(seg.policy).__name__ == 'ActivePolicy'           # restored


def test_admit_sweep_rule() -> None:
    d0, d1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])   # distance sqrt(2)
    seq = [(0, -0.1, d0), (1, -0.1, d0), (2, -0.1, d1), (3, -0.9, d0)]
    rows = {(r['alpha'], r['beta']): r['admitted']
            for r in admit_sweep([seq, seq], [-0.5, -1.0], [-1.0, 0.5])}
    # alpha -0.5: frame 3 is not confident; beta -1: frame 1 repeats frame 0 (s = 0 > -1).
    assert rows[(-0.5, -1.0)] == 2 * 2
    assert rows[(-0.5, 0.5)] == 3 * 2
    # alpha -1: frame 3 counts, and it differs from frame 2 (the newest admitted).
    assert rows[(-1.0, -1.0)] == 3 * 2
    dist = score_distributions([seq])
    assert dist['r']['p50'] == pytest.approx(-0.1)
    assert dist['s_consecutive']['p5'] == pytest.approx(-math.sqrt(2), rel=1e-3)


def test_shadowed_restores_what_it_replaced_even_on_error() -> None:
    import types

    from experiments.memory_ablation.memory_diagnostics import shadowed

    class Reader:
        def key_value(self):
            return 'class'

    r = Reader()
    with shadowed(r, 'key_value', lambda: 'shadow'):
        assert r.key_value() == 'shadow' and Reader().key_value() == 'class'
    assert r.key_value() == 'class' and 'key_value' not in vars(r)
    module = types.SimpleNamespace(class_shares=lambda: 'own')
    with pytest.raises(RuntimeError), shadowed(module, 'class_shares', lambda: 'truth'):
        assert module.class_shares() == 'truth'
        raise RuntimeError
    assert module.class_shares() == 'own'
