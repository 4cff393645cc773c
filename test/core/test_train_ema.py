"""`train.ema_decay`: checkpoints hold a moving average of the weights; resume keeps it."""
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from test_train import TINY, _yaml
from torch import nn

from dmnet_core.checkpoint import load_checkpoint
from dmnet_core.cli import main
from dmnet_core.config import ExperimentConfig, from_dict
from dmnet_core.data.synth import generate_dataset
from dmnet_core.train import train
from dmnet_core.train.ema import WeightAverage


def test_average_follows_the_weights_and_leaves_them_alone() -> None:
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = WeightAverage(net, decay=0.5)
    w0 = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
    ema.update(net)                         # warm-up: decay min(0.5, 2/11) = 2/11
    assert ema.current_decay() == pytest.approx(2 / 11)
    torch.testing.assert_close(ema.state['0.weight'], w0 + 9 / 11)
    net[1].num_batches_tracked += 3         # integer buffers are copied, not averaged
    ema.update(net)
    assert int(ema.state['1.num_batches_tracked']) == 3
    raw = net[0].weight.detach().clone()
    with ema.applied(net):
        torch.testing.assert_close(net[0].weight, ema.state['0.weight'])
    torch.testing.assert_close(net[0].weight, raw)
    with pytest.raises(ValueError, match='decay must be in'):
        WeightAverage(net, decay=1.0)
    other = WeightAverage(nn.Linear(2, 2), decay=0.9)
    with pytest.raises(ValueError, match='does not match the model'):
        other.load(ema.tensors(), 2)


@pytest.fixture(scope='module')
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('synth')
    generate_dataset(root, 2, 8, seed=0, size=(64, 96))
    return root


def _exp(data: Path, out: Path) -> ExperimentConfig:
    exp = from_dict(ExperimentConfig, TINY)
    exp.data.root, exp.train.out_dir, exp.train.ema_decay = str(data), str(out), 0.9
    return exp


def test_checkpoints_hold_the_average_and_resume_keeps_it(data, tmp_path) -> None:
    straight = train(_exp(data, tmp_path / 'straight'))
    out = Path(straight['out_dir'])
    cfg, saved, extra = load_checkpoint(out / 'last.safetensors')
    assert extra['ema_decay'] == 0.9
    with safe_open(str(out / 'resume.safetensors'), framework='pt') as f:
        raw = {k[6:]: f.get_tensor(k) for k in f.keys() if k.startswith('model.')}
        avg = {k[4:]: f.get_tensor(k) for k in f.keys() if k.startswith('ema.')}
    key = 'decoder.head.weight'
    # last.safetensors is the average, not the trained weights.
    torch.testing.assert_close(saved[key].float(), avg[key].float())
    assert not torch.allclose(saved[key].float(), raw[key].float())
    # Interrupted and resumed: the same average as the straight run.
    exp = _exp(data, tmp_path / 'resumed')
    assert train(exp, stop_after=4)['interrupted']
    train(exp, resume=True)
    _, resumed, _ = load_checkpoint(tmp_path / 'resumed' / 'last.safetensors')
    for k in saved:
        torch.testing.assert_close(resumed[k], saved[k], rtol=1e-4, atol=1e-5)


def test_cli_flag_and_bad_value(data, tmp_path, capsys) -> None:
    cfg = str(_yaml(tmp_path, data))
    rc = main(['train', '--config', cfg, '--out', str(tmp_path / 'o'), '--ema-decay', '1.5'])
    assert rc == 2 and 'train.ema_decay must be in [0, 1), got 1.5' in capsys.readouterr().err
