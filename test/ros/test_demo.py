"""`make demo`'s driver in-process, the node and the replay stood in for (test_replay runs them).

What is checked here is the demo's own work: its checks of the input, the bag it writes, the
options it hands the replay, and what it prints and returns for each outcome.
"""
from pathlib import Path

import pytest

from dmnet_ros import bag_io, demo, replay


def test_bad_input_is_exit_2_before_anything_is_written(tmp_path, capsys) -> None:
    assert demo.main(['--out', str(tmp_path / 'o'), '--frames', '1']) == 2
    assert '--frames must be >= 2' in capsys.readouterr().err
    assert demo.main(['--out', str(tmp_path / 'o'), '--checkpoint', str(tmp_path / 'no')]) == 2
    assert 'checkpoint not found' in capsys.readouterr().err
    assert not (tmp_path / 'o').exists()
    assert demo.shipped_checkpoint().name == 'default.safetensors'


def _fake_replay(monkeypatch, outcome):
    seen = {}

    def run_replay(opts):
        seen['opts'] = opts
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(replay, 'run_replay', run_replay)
    monkeypatch.setattr(replay, 'summary_lines', lambda report: ['frames: sent 3'])
    return seen


def test_writes_the_bag_and_replays_it_in_lockstep(tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / 'demo'
    (out / 'report').mkdir(parents=True)
    (out / 'report' / 'stale.txt').write_text('from an earlier run')
    report = {'files': {'report_md': str(out / 'report' / 'report.md'),
                        'overlay_video': str(out / 'report' / 'overlay.mp4')}}
    seen = _fake_replay(monkeypatch, report)
    assert demo.main(['--out', str(out), '--frames', '3', '--size', '64x64',
                      '--device', 'cpu']) == 0
    opts = seen['opts']
    assert opts.mode == 'lockstep' and opts.device == 'cpu' and opts.checkpoint == ''
    assert Path(opts.bag) == out / 'demo_bag' and (out / 'demo_bag').is_dir()
    assert not (out / 'report' / 'stale.txt').exists()          # a rerun replaces the report
    text = capsys.readouterr().out
    assert '[1/3]' in text and '[3/3] results' in text and 'frames: sent 3' in text
    assert 'overlay.mp4' in text


@pytest.mark.parametrize('error,code', [(replay.ReplayError('node died'), 1),
                                        (bag_io.BagError('bad bag'), 2)])
def test_a_failed_replay_is_reported_with_its_exit_code(tmp_path, monkeypatch, capsys,
                                                        error, code) -> None:
    _fake_replay(monkeypatch, error)
    assert demo.main(['--out', str(tmp_path / 'demo'), '--frames', '2', '--size', '64x64']) == code
    assert str(error) in capsys.readouterr().err


def test_replay_runs_as_a_module(monkeypatch) -> None:
    """`python -m dmnet_ros.replay` is the `replay` console script."""
    import runpy
    import sys
    monkeypatch.setattr(sys, 'argv', ['replay', '--help'])
    monkeypatch.delitem(sys.modules, 'dmnet_ros.replay.__main__', raising=False)
    with pytest.raises(SystemExit) as exc:
        runpy.run_module('dmnet_ros.replay', run_name='__main__')
    assert exc.value.code == 0
