"""The staged schedule: stage bounds and lr, what each stage trains, resume, --new-memories.

Tiny everything, as in test_train.py: 2 synthetic sequences x 8 frames at 64 x 96.
"""
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train import TINY, _yaml

from dmnet_core.checkpoint import load_checkpoint
from dmnet_core.cli import main
from dmnet_core.config import ExperimentConfig, from_dict
from dmnet_core.data.synth import generate_dataset
from dmnet_core.model import build_model
from dmnet_core.train import apply_stage, plan_stages, read_log, train
from dmnet_core.train.stages import drop_frozen_grads, module_grad_norms, stage_lr_factor

STAGES = [1 / 3, 1 / 3, 1 / 3]          # 6 iterations: 2 + 2 + 2


@pytest.fixture(scope='module')
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('synth')
    generate_dataset(root, 2, 8, seed=0, size=(64, 96))
    return root


def _exp(data: Path, out: Path, **train_overrides) -> ExperimentConfig:
    exp = from_dict(ExperimentConfig, TINY)
    exp.data.root = str(data)
    exp.train.out_dir = str(out)
    exp.train.epochs, exp.train.iters_per_epoch = 3, 2
    for k, v in train_overrides.items():
        setattr(exp.train, k, v)
    return exp


def test_plan_bounds_and_errors() -> None:
    plan = plan_stages([0.4, 0.2, 0.4], [], 10)
    assert plan.ends == (4, 6, 10) and plan.last == 2
    assert [plan.name_at(s) for s in (0, 3, 4, 5, 6, 9)] == [
        'single_frame', 'single_frame', 'memory', 'memory', 'all', 'all']
    # Empty stages are skipped; the last non-empty stage is the final one.
    plan = plan_stages([0.0, 0.5, 0.5], [], 4)
    assert [plan.name_at(s) for s in range(4)] == ['memory', 'memory', 'all', 'all']
    assert plan_stages([0.5, 0.5, 0.0], [], 4).last == 1
    assert plan_stages([], [], 7).names == ('all',) and plan_stages([], [], 7).ends == (7,)
    for bad, needle in (([0.5, 0.5], 'train.stages'), ([0.5, 0.6, -0.1], 'train.stages'),
                        ([0.3, 0.3, 0.3], 'summing to 1')):
        with pytest.raises(ValueError, match=needle):
            plan_stages(bad, [], 10)
    with pytest.raises(ValueError, match='train.stage_lr'):
        plan_stages(STAGES, [1.0, 0.0, 1.0], 6)


def test_each_stage_restarts_the_schedule() -> None:
    plan = plan_stages([0.5, 0.25, 0.25], [1.0, 1.0, 0.1], 8)
    lr = [stage_lr_factor(s, plan, 1, 'cosine', 0.0) for s in range(8)]
    assert lr[0] == pytest.approx(1.0) and lr[3] == pytest.approx(0.25)   # stage 1 decays
    assert lr[4] == pytest.approx(1.0)                          # ... stage 2 warms up again
    assert lr[6] == pytest.approx(0.1)                          # stage 3 at its scale
    assert all(a >= b for a, b in zip(lr[:4], lr[1:4]))


def test_apply_stage_switches_and_freezes() -> None:
    model = build_model(from_dict(ExperimentConfig, TINY).model)
    apply_stage(model, 'single_frame')
    assert not model.use_local and not model.use_global
    assert all(p.requires_grad for p in model.parameters())
    apply_stage(model, 'memory')
    assert model.use_local and model.use_global
    for name, p in model.named_parameters():
        assert p.requires_grad is name.startswith(('local_memory.', 'global_memory.')), name
    assert not model.encoder.training and model.local_memory.training
    # Gradients of the frozen part are dropped (the DDP path), memory gradients are kept.
    apply_stage(model, 'all')
    assert all(p.requires_grad for p in model.parameters()) and model.encoder.training
    x = torch.randn(2, 3, 64, 96)
    model(x).sum().backward()
    drop_frozen_grads(model, 'memory')
    assert all(p.grad is None for n, p in model.named_parameters()
               if n.startswith(('encoder.', 'decoder.')))
    norms = module_grad_norms(model)
    assert norms['local_memory'] is not None and norms['local_memory'] > 0
    # A model without memories trains everything in every stage.
    single = from_dict(ExperimentConfig, TINY).model
    single.local_memory.enabled = single.global_memory.enabled = False
    bare = build_model(single)
    apply_stage(bare, 'memory')
    assert all(p.requires_grad for p in bare.parameters()) and bare.encoder.training
    assert module_grad_norms(bare) == {'local_memory': None, 'global_memory': None}


def _model_tensors(out: Path) -> dict[str, torch.Tensor]:
    return {k[6:]: v for k, v in load_file(str(out / 'resume.safetensors')).items()
            if k.startswith('model.')}


def test_staged_run_trains_what_each_stage_names(data, tmp_path) -> None:
    straight = train(_exp(data, tmp_path / 'straight', stages=STAGES))
    assert straight['stages'] == [('single_frame', 0, 2), ('memory', 2, 4), ('all', 4, 6)]
    out = tmp_path / 'run'
    train(_exp(data, out, stages=STAGES), stop_after=2)
    after1 = _model_tensors(out)
    train(_exp(data, out, stages=STAGES), resume=True, stop_after=4)
    after2 = _model_tensors(out)
    rest = train(_exp(data, out, stages=STAGES), resume=True)
    after3 = _model_tensors(out)
    for k in after1:
        memory = k.startswith(('local_memory.', 'global_memory.'))
        same12 = torch.equal(after1[k], after2[k])
        # Stage 2: only the memories move; the encoder/decoder (batch-norm statistics too)
        # stay as stage 1 left them.
        assert same12 is not memory or k.endswith('num_batches_tracked'), k
    assert not all(torch.equal(after2[k], after3[k]) for k in after2
                   if k.startswith('encoder.') and 'running' not in k)
    # Resumed in three pieces, the same loss curve as in one go.
    log = read_log(out / 'train_log.csv')
    assert [r['loss'] for r in log] == pytest.approx(straight['losses'], rel=1e-5)
    assert [r['stage'] for r in log] == ['single_frame'] * 2 + ['memory'] * 2 + ['all'] * 2
    # Memory gradients: none while the memories are off, logged once they train.
    assert all(r['grad_norm_local_memory'] is None for r in log[:2])
    assert all(r['grad_norm_local_memory'] > 0 and r['grad_norm_global_memory'] > 0
               for r in log[2:])
    # Only an epoch of the last stage can be the best model.
    val = read_log(out / 'val_log.csv')
    assert [r['best'] for r in val] == [0, 0, 1]
    _, _, extra = load_checkpoint(Path(rest['best']))
    assert extra['step'] == 6 and extra['stage'] == 'all'


def test_new_memories_from_a_single_frame_checkpoint(data, tmp_path, capsys) -> None:
    cfg = str(_yaml(tmp_path, data))
    single = tmp_path / 'single'
    assert main(['train', '--config', cfg, '--out', str(single), '--no-local', '--no-global',
                 '--epochs', '1', '--iters', '1']) == 0
    start = single / 'last.safetensors'
    _, w0, _ = load_checkpoint(start)
    out = tmp_path / 'stage23'
    assert main(['train', '--config', cfg, '--out', str(out), '--init', str(start),
                 '--new-memories', '--no-global', '--stages', '0', '0.5', '0.5',
                 '--epochs', '1', '--iters', '2']) == 0
    model_cfg, w1, _ = load_checkpoint(out / 'last.safetensors')
    assert model_cfg.local_memory.enabled and not model_cfg.global_memory.enabled
    assert model_cfg.local_memory.hidden == TINY['model']['local_memory']['hidden']
    assert any(k.startswith('local_memory.') for k in w1)
    # The first stage is `memory`: the encoder still has the single-frame weights... then
    # stage `all` moves it; the head's class count and sizes come from the checkpoint.
    assert set(w0) < set(w1)
    log = read_log(out / 'train_log.csv')
    assert [r['stage'] for r in log] == ['memory', 'all']
    # Without --new-memories the single-frame checkpoint's config is kept: no memories.
    plain = tmp_path / 'plain'
    assert main(['train', '--config', cfg, '--out', str(plain), '--init', str(start),
                 '--epochs', '1', '--iters', '1']) == 0
    assert not load_checkpoint(plain / 'last.safetensors')[0].local_memory.enabled
    capsys.readouterr()
    assert main(['train', '--config', cfg, '--out', str(tmp_path / 'x'), '--new-memories']) == 2
    assert '--new-memories needs --init' in capsys.readouterr().err
    assert main(['train', '--config', cfg, '--out', str(tmp_path / 'y'),
                 '--stages', '0.5', '0.5', '0.5']) == 2
    assert 'train.stages' in capsys.readouterr().err
