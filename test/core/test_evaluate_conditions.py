"""Per-condition scores in `dmnet evaluate`: read from conditions.json, absent without it."""
import json
from pathlib import Path

import numpy as np
import pytest

from dmnet_core.data import layout
from dmnet_core.data.synth import generate_dataset
from dmnet_core.evaluate import evaluate, read_conditions


class OracleUnlessTagged:
    """A stand-in segmenter: the ground truth on frames listed in `wrong`, else all background."""

    task = 'binary'
    class_names = ['background', 'instrument']
    last_inference_ms = 1.0

    def __init__(self, data: Path, split: str, right: set[tuple[str, str]]) -> None:
        self.frames = [(seq.name, f, seq.mask_path(f, 'binary'))
                       for seq in layout.list_sequences(data, split) for f in seq.frames()]
        self.right, self.i = right, 0

    def reset(self) -> None:
        """Sequences come in order; the frame counter runs on."""

    def step(self, rgb: np.ndarray) -> np.ndarray:
        seq, frame, mask = self.frames[self.i]
        self.i += 1
        gt = layout.read_mask(mask)
        return gt if (seq, frame.stem) in self.right else np.zeros_like(gt)


@pytest.fixture()
def data(tmp_path) -> Path:
    root = tmp_path / 'synth'
    generate_dataset(root, 2, 6, seed=3, size=(64, 96))       # test split: seq_001
    (root / 'seq_001' / 'conditions.json').unlink(missing_ok=True)
    return root


def test_per_condition_scores(data, tmp_path) -> None:
    seq = data / 'seq_001'
    stems = [f.stem for f in sorted((seq / 'images').glob('*.png'))]
    frames = {s: [] for s in stems}
    frames[stems[2]] = ['smoke_burst']
    frames[stems[3]] = ['smoke_burst', 'fast_move']
    del frames[stems[5]]                                        # not listed: left out
    (seq / 'conditions.json').write_text(json.dumps(
        {'names': ['smoke_burst', 'fast_move', 'tip_occluded'], 'frames': frames}))
    right = {('seq_001', s) for s in stems[:2] + stems[4:]}    # wrong on the smoky frames
    seg = OracleUnlessTagged(data, 'test', right)
    report = evaluate(data, tmp_path / 'report', segmenter=seg, split='test')
    pc = report['per_condition']
    assert list(pc) == ['clean', 'fast_move', 'smoke_burst']
    assert pc['clean']['frames'] == 3 and pc['smoke_burst']['frames'] == 2
    assert pc['fast_move']['frames'] == 1
    # Every frame of this sequence shows an instrument (seed 3): right = 1, wrong = 0.
    assert all(layout.read_mask(seq / 'masks' / 'binary' / f'{s}.png').sum() > 10
               for s in stems)
    assert pc['clean']['binary_dice'] == pytest.approx(1.0)
    assert pc['clean']['mean_iou'] == pytest.approx(1.0)
    assert pc['smoke_burst']['binary_dice'] == pytest.approx(0.0)
    assert pc['fast_move']['mean_iou'] == pytest.approx(0.0)
    saved = json.loads((tmp_path / 'report' / 'report.json').read_text())
    assert saved['per_condition'] == pc
    md = (tmp_path / 'report' / 'report.md').read_text()
    assert '| smoke_burst | 2 |' in md
    assert 'smoke_burst+fast_move' in (tmp_path / 'report' / 'per_frame.csv').read_text()


def test_no_conditions_file_no_table(data, tmp_path) -> None:
    seg = OracleUnlessTagged(data, 'test', set())
    report = evaluate(data, None, segmenter=seg, split='test')
    assert 'per_condition' not in report


def test_bad_conditions_file_is_named(data, tmp_path) -> None:
    path = data / 'seq_001' / 'conditions.json'
    path.write_text('{not json')
    with pytest.raises(ValueError, match='conditions.json'):
        read_conditions(data / 'seq_001')
    path.write_text(json.dumps({'names': ['smoke_burst'], 'frames': {'000000': ['rain']}}))
    with pytest.raises(ValueError, match="frame 000000: tags \\['rain'\\]"):
        evaluate(data, None, segmenter=OracleUnlessTagged(data, 'test', set()), split='test')
    (data / 'seq_000' / 'conditions.json').unlink(missing_ok=True)   # the generator writes one
    assert read_conditions(data / 'seq_000') is None


def test_cli_prints_per_condition(data, tmp_path, capsys) -> None:
    from tiny_models import tiny_config

    from dmnet_core.checkpoint import save_checkpoint
    from dmnet_core.cli import main
    from dmnet_core.model import build_model
    seq = data / 'seq_001'
    stems = [f.stem for f in sorted((seq / 'images').glob('*.png'))]
    (seq / 'conditions.json').write_text(json.dumps(
        {'names': ['fast_move'], 'frames': {s: ['fast_move'] if i < 2 else []
                                            for i, s in enumerate(stems)}}))
    cfg = tiny_config(64, 96)
    save_checkpoint(tmp_path / 'tiny.safetensors', build_model(cfg), cfg)
    rc = main(['evaluate', '--data', str(data), '--out', str(tmp_path / 'r'), '--checkpoint',
               str(tmp_path / 'tiny.safetensors'), '--device', 'cpu', '--no-progress'])
    assert rc == 0
    out = capsys.readouterr().out
    assert 'per condition mIoU: clean' in out and 'fast_move' in out and '(2 frames)' in out
