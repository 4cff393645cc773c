"""`dmnet evaluate`: the causal loop, the report files and keys, errors naming bad input."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dmnet_core.checkpoint import save_checkpoint
from dmnet_core.cli import main
from dmnet_core.config import ModelConfig
from dmnet_core.data import layout
from dmnet_core.data.synth import generate_dataset
from dmnet_core.evaluate import evaluate
from dmnet_core.model import build_model

REPORT_KEYS = {'mean_dice', 'mean_iou', 'binary_dice', 'fps', 'checkpoint', 'device',
               'per_class', 'protocols', 'per_sequence', 'temporal_stability', 'frames',
               'timing', 'split', 'task'}


@pytest.fixture(scope='module')
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('synth')
    # 3 sequences x 6 frames: train seq_000, val seq_001, test seq_002.
    generate_dataset(root, 3, 6, seed=1, size=(64, 96), val=1, test=1)
    return root


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory) -> Path:
    cfg = ModelConfig(input_size=[64, 96])
    cfg.decoder.channels = 16
    cfg.local_memory.hidden = 16
    cfg.global_memory.key_channels, cfg.global_memory.value_channels = 8, 16
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp('ckpt') / 'tiny.safetensors'
    return save_checkpoint(path, build_model(cfg, pretrained=False), cfg)


class Oracle:
    """A stand-in Segmenter that returns the ground truth (or nothing), frame by frame."""

    task = 'binary'
    class_names = ['background', 'instrument']
    last_inference_ms = 1.0

    def __init__(self, data: Path, split: str, blank: bool = False) -> None:
        self.masks = []
        for seq in layout.list_sequences(data, split):
            self.masks += [layout.read_mask(seq.mask_path(f, 'binary')) for f in seq.frames()]
        self.blank, self.i, self.resets = blank, 0, 0

    def reset(self) -> None:
        self.resets += 1

    def step(self, rgb: np.ndarray) -> np.ndarray:
        mask = self.masks[self.i]
        assert mask.shape == rgb.shape[:2]
        self.i += 1
        return np.zeros_like(mask) if self.blank else mask.copy()


def test_oracle_scores_one_and_blank_scores_zero(data) -> None:
    oracle = Oracle(data, 'train')
    rep = evaluate(data, None, segmenter=oracle, split='train')
    assert oracle.resets == 1 and oracle.i == 6 and rep['frames'] == 6
    assert rep['mean_dice'] == 1.0 and rep['mean_iou'] == 1.0 and rep['binary_dice'] == 1.0
    ts = rep['temporal_stability']
    assert ts['excess_flicker'] == pytest.approx(0.0) and ts['pairs'] == 5
    blank = evaluate(data, None, segmenter=Oracle(data, 'train', blank=True), split='train')
    assert blank['mean_dice'] == 0.0 and blank['binary_dice'] == 0.0
    assert blank['temporal_stability']['pred_flicker'] == 0.0


def test_max_frames_and_reset_per_sequence(data) -> None:
    layout.write_meta(data, _meta_with(data, 'both', ['seq_000', 'seq_001']))
    seg = Oracle(data, 'both', blank=True)
    rep = evaluate(data, None, segmenter=seg, split='both', max_frames=2)
    assert seg.resets == 2 and rep['frames'] == 4
    assert set(rep['per_sequence']) == {'seq_000', 'seq_001'}


def _meta_with(data: Path, split: str, names: list[str]) -> layout.DatasetMeta:
    meta = layout.read_meta(data)
    meta.splits[split] = names
    return meta


def test_report_files_and_keys(data, checkpoint, tmp_path) -> None:
    out = tmp_path / 'report'
    rc = main(['evaluate', '--data', str(data), '--out', str(out), '--checkpoint',
               str(checkpoint), '--device', 'cpu', '--no-progress'])
    assert rc == 0
    rep = json.loads((out / 'report.json').read_text())
    assert REPORT_KEYS <= set(rep)
    assert set(rep['protocols']) == {'seed_paper', 'challenge_iou', 'dataset_iou'}
    assert rep['device'] == 'cpu' and rep['checkpoint'] == str(checkpoint)
    assert rep['frames'] == 6 and list(rep['per_sequence']) == ['seq_002']
    assert rep['fps'] > 0
    for v in (rep['mean_dice'], rep['binary_dice']):
        assert v is None or 0.0 <= v <= 1.0
    md = (out / 'report.md').read_text()
    assert '## Per class' in md and 'seq_002' in md
    for name in ('per_frame.png', 'per_class.png'):
        assert (out / name).read_bytes()[:4] == b'\x89PNG'
    assert len((out / 'per_frame.csv').read_text().splitlines()) == 7


def test_inference_size_flag(data, checkpoint, tmp_path, capsys) -> None:
    out = tmp_path / 'r'
    base = ['evaluate', '--data', str(data), '--checkpoint', str(checkpoint), '--device', 'cpu',
            '--no-progress', '--max-frames', '2']
    assert main([*base, '--out', str(out), '--inference-size', '32', '64']) == 0
    rep = json.loads((out / 'report.json').read_text())
    assert rep['inference_size'] == [32, 64] and rep['frames'] == 2
    assert main([*base, '--out', str(tmp_path / 'r2')]) == 0
    assert json.loads((tmp_path / 'r2' / 'report.json').read_text())['inference_size'] == [64, 96]
    assert main([*base, '--out', str(tmp_path / 'r3'), '--inference-size', '30', '64']) == 2
    assert 'multiples of 32' in capsys.readouterr().err


def test_default_checkpoint(data, tmp_path) -> None:
    rep = evaluate(data, tmp_path / 'r', device='cpu', max_frames=2)
    assert rep['frames'] == 2 and 'default' in rep['checkpoint']


def test_class_and_task_mismatch(data) -> None:
    seg = Oracle(data, 'test')
    seg.class_names = ['background', 'a', 'b']
    with pytest.raises(ValueError, match=r'dataset.yaml: task .binary. has 2 classes'):
        evaluate(data, None, segmenter=seg)
    with pytest.raises(ValueError, match="--task 'parts' does not match"):
        evaluate(data, None, segmenter=Oracle(data, 'test'), task='parts')


def test_cli_errors_name_the_input(data, checkpoint, tmp_path, capsys) -> None:
    base = ['evaluate', '--out', str(tmp_path / 'r'), '--device', 'cpu', '--no-progress']
    cases = [
        (['--data', str(tmp_path / 'nope'), '--checkpoint', str(checkpoint)],
         str(tmp_path / 'nope')),
        (['--data', str(data), '--checkpoint', str(tmp_path / 'no.safetensors')],
         'no.safetensors'),
        (['--data', str(data), '--checkpoint', str(checkpoint), '--split', 'bogus'],
         "no split 'bogus'"),
        (['--data', str(data), '--checkpoint', str(checkpoint), '--max-frames', '0'],
         '--max-frames'),
    ]
    for extra, needle in cases:
        assert main(base + extra) == 2, extra
        assert needle in capsys.readouterr().err
    broken = layout.list_sequences(data, 'test')[0]
    mask = broken.mask_path(broken.frames()[3], 'binary')
    saved = mask.read_bytes()
    mask.unlink()
    try:
        assert main(base + ['--data', str(data), '--checkpoint', str(checkpoint)]) == 2
        assert str(mask) in capsys.readouterr().err
    finally:
        mask.write_bytes(saved)


def test_memory_flag_reaches_the_segmenter_and_names_bad_items(data, checkpoint, tmp_path,
                                                               capsys) -> None:
    from dmnet_core.evaluate import parse_memory
    assert parse_memory(['n_read=2', 'alpha=-0.5', 'policy=recent', 'local_enabled=false']) == {
        'n_read': 2, 'alpha': -0.5, 'policy': 'recent', 'local_enabled': False}
    assert parse_memory(None) is None
    base = ['evaluate', '--data', str(data), '--checkpoint', str(checkpoint), '--device', 'cpu',
            '--no-progress', '--max-frames', '2']
    off = tmp_path / 'off'
    assert main([*base, '--out', str(off), '--memory', 'local_enabled=false',
                 'global_enabled=false']) == 0
    rep = json.loads((off / 'report.json').read_text())
    assert rep['memory'] == {'local_enabled': False, 'global_enabled': False}
    assert main([*base, '--out', str(tmp_path / 'r'), '--memory', 'n_read']) == 2
    assert "'n_read': expected KEY=VALUE" in capsys.readouterr().err
    assert main([*base, '--out', str(tmp_path / 'r'), '--memory', 'bogus=1']) == 2
    assert 'bogus' in capsys.readouterr().err
