"""Checkpoints: safetensors + config round trip, named mismatches, refused pickles, convert."""
import json
import logging
import pathlib

import pytest
import tiny_models
import torch
import yaml
from safetensors.torch import save_file

from dmnet_core.checkpoint import (
    CheckpointMismatchError,
    build_from_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from dmnet_core.cli import main as dmnet_main
from dmnet_core.config import ModelConfig, default_class_names, save_yaml, to_dict
from dmnet_core.model import build_model


def tiny_config() -> ModelConfig:
    return tiny_models.tiny_config(64, 64)


def tiny_model(cfg=None):
    torch.manual_seed(0)
    return build_model(cfg or tiny_config())


class Exploit:
    """Unpickling this would create a marker file: a stand-in for arbitrary code execution."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_round_trip_with_config_and_extra(tmp_path):
    cfg = tiny_config()
    model = tiny_model(cfg)
    path = save_checkpoint(tmp_path / 'm.safetensors', model, cfg, extra={'epoch': 3, 'miou': 0.5})
    # The readable sidecar mirrors the embedded config, but loading needs only the weights file.
    assert yaml.safe_load((tmp_path / 'm.yaml').read_text()) == to_dict(cfg)
    (tmp_path / 'm.yaml').unlink()
    cfg2, state, extra = load_checkpoint(path)
    assert cfg2 == cfg and extra == {'epoch': 3, 'miou': 0.5}
    loaded, cfg3 = build_from_checkpoint(path)
    assert cfg3 == cfg and not loaded.training
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k


def test_half_storage_loads_back_as_float32(tmp_path):
    cfg = tiny_config()
    model = tiny_model(cfg)
    full = save_checkpoint(tmp_path / 'full.safetensors', model, cfg)
    half = save_checkpoint(tmp_path / 'half.safetensors', model, cfg, half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    _, state, _ = load_checkpoint(half)
    w = state['decoder.head.weight']
    assert w.dtype == torch.float32
    assert torch.allclose(w, model.state_dict()['decoder.head.weight'], atol=1e-3)


def test_class_count_mismatch_is_named(tmp_path):
    path = save_checkpoint(tmp_path / 'bin.safetensors', tiny_model(), tiny_config())
    other = tiny_config()
    other.task, other.dataset = 'type', 'endovis17'
    other.class_names = default_class_names('type', 'endovis17')
    with pytest.raises(CheckpointMismatchError, match=r'class count.*2 classes.*8') as err:
        build_from_checkpoint(path, other)
    assert 'decoder.head.weight' in str(err.value)
    assert isinstance(err.value, ValueError)


def test_shape_and_key_mismatches_are_named(tmp_path):
    path = save_checkpoint(tmp_path / 'm.safetensors', tiny_model(), tiny_config())
    wider = tiny_config()
    wider.local_memory.hidden = 24
    with pytest.raises(CheckpointMismatchError, match=r'local_memory\.cell\.gates\.weight'):
        build_from_checkpoint(path, wider)
    no_memory = tiny_config()
    no_memory.local_memory.enabled = False
    with pytest.raises(CheckpointMismatchError, match=r'unexpected keys.*local_memory'):
        build_from_checkpoint(path, no_memory)
    resnet = tiny_config()
    resnet.encoder.name = 'resnet18'
    with pytest.raises(CheckpointMismatchError, match=r'missing keys.*encoder\.layer1'):
        build_from_checkpoint(path, resnet)


def test_missing_and_corrupt_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='absent.safetensors'):
        load_checkpoint(tmp_path / 'absent.safetensors')
    bad = tmp_path / 'corrupt.safetensors'
    bad.write_bytes(b'\x00garbage' * 10)
    with pytest.raises(ValueError, match='corrupt.safetensors'):
        build_from_checkpoint(bad)
    plain = tmp_path / 'plain.safetensors'
    save_file({'w': torch.zeros(2)}, str(plain))
    with pytest.raises(ValueError, match='no dmnet model_config'):
        load_checkpoint(plain)
    truncated = tmp_path / 'trunc.safetensors'
    save_checkpoint(truncated, tiny_model(), tiny_config())
    truncated.write_bytes(truncated.read_bytes()[:-1000])
    with pytest.raises(ValueError, match='trunc.safetensors'):
        build_from_checkpoint(truncated)


def test_crafted_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / 'pwned'
    evil = tmp_path / 'evil.pth'
    torch.save({'decoder.head.weight': torch.zeros(1), 'payload': Exploit(marker)}, evil)
    assert not marker.exists()
    cfg_yaml = tmp_path / 'cfg.yaml'
    save_yaml(tiny_config(), cfg_yaml)
    with pytest.raises(ValueError, match='evil.pth.*refused'):
        build_from_checkpoint(evil, cfg_yaml)
    assert dmnet_main(['convert', '--pth', str(evil), '--config', str(cfg_yaml),
                       '--out', str(tmp_path / 'out.safetensors')]) == 2
    assert not marker.exists()
    assert not (tmp_path / 'out.safetensors').exists()


def test_pth_needs_a_config_and_converts(tmp_path):
    cfg = tiny_config()
    model = tiny_model(cfg)
    pth = tmp_path / 'foreign.pth'
    # A typical foreign checkpoint: wrapped, with DataParallel prefixes.
    torch.save({'state_dict': {f'module.{k}': v for k, v in model.state_dict().items()}}, pth)
    with pytest.raises(ValueError, match='config'):
        load_checkpoint(pth)
    exp_yaml = tmp_path / 'exp.yaml'
    exp_yaml.write_text(yaml.safe_dump({'model': to_dict(cfg)}))
    out = tmp_path / 'converted.safetensors'
    assert dmnet_main(['convert', '--pth', str(pth), '--config', str(exp_yaml),
                       '--out', str(out)]) == 0
    loaded, cfg2 = build_from_checkpoint(out)
    assert cfg2 == cfg
    assert torch.equal(loaded.state_dict()['decoder.head.weight'],
                       model.state_dict()['decoder.head.weight'])
    assert json.loads(json.dumps(load_checkpoint(out)[2])) == {'converted_from': 'foreign.pth'}


def test_convert_reports_a_mismatch_without_traceback(tmp_path, capsys):
    pth = tmp_path / 'm.pt'
    torch.save(tiny_model().state_dict(), pth)
    other = tiny_config()
    other.decoder.channels = 48
    save_yaml(other, tmp_path / 'other.yaml')
    code = dmnet_main(['convert', '--pth', str(pth), '--config', str(tmp_path / 'other.yaml'),
                       '--out', str(tmp_path / 'o.safetensors')])
    assert code == 2
    assert 'shape mismatches' in capsys.readouterr().err


# Options retired after the memory ablation, each at its "off" value and at another value.
RETIRED = [('local_memory', 'query', 'hidden', 'key'),
           ('local_memory', 'residual', False, True),
           ('global_memory', 'mask_value', False, True),
           ('global_memory', 'mask_value_init', 'zero', 'default'),
           ('global_memory', 'key_position', 0, 2)]


def _with_metadata_config(src, dst, edit) -> pathlib.Path:
    """A copy of checkpoint `src` whose stored model_config is edited by `edit(dict)`."""
    from safetensors import safe_open
    from safetensors.torch import save_file
    with safe_open(str(src), framework='pt') as f:
        meta = dict(f.metadata())
        state = {k: f.get_tensor(k) for k in f.keys()}
    data = json.loads(meta['model_config'])
    edit(data)
    meta['model_config'] = json.dumps(data)
    save_file(state, str(dst), metadata=meta)
    return dst


@pytest.mark.parametrize('section,key,off,on', RETIRED)
def test_a_retired_option_at_its_off_value_is_dropped(tmp_path, caplog, section, key, off, on):
    cfg = tiny_config()
    model = tiny_model(cfg)
    src = save_checkpoint(tmp_path / 'm.safetensors', model, cfg)
    old = _with_metadata_config(src, tmp_path / 'old.safetensors',
                                lambda d: d[section].__setitem__(key, off))
    with caplog.at_level(logging.DEBUG, logger='dmnet_core.config'):
        loaded, cfg2 = build_from_checkpoint(old)
    assert cfg2 == cfg
    assert f'{section}.{key}: dropped the retired option' in caplog.text
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k


@pytest.mark.parametrize('section,key,off,on', RETIRED)
def test_a_retired_option_set_on_is_an_error_naming_it(tmp_path, section, key, off, on):
    cfg = tiny_config()
    src = save_checkpoint(tmp_path / 'm.safetensors', tiny_model(cfg), cfg)
    bad = _with_metadata_config(src, tmp_path / 'bad.safetensors',
                                lambda d: d[section].__setitem__(key, on))
    with pytest.raises(ValueError, match=rf'{section}\.{key}: .* is a retired option'):
        load_checkpoint(bad)


def test_retired_training_option_in_a_run_config(tmp_path):
    """A run's config.yaml from before the clean-up: memory_gt_masks 0 loads, 0.5 does not."""
    from dmnet_core.config import ExperimentConfig, load_yaml
    path = tmp_path / 'config.yaml'
    path.write_text('train:\n  memory_gt_masks: 0\nmodel:\n  global_memory:\n'
                    '    mask_value: false\n    key_position: 0\n')
    assert load_yaml(path, ExperimentConfig) == ExperimentConfig()
    path.write_text('train:\n  memory_gt_masks: 0.5\n')
    with pytest.raises(ValueError, match=r'train\.memory_gt_masks: 0\.5 is a retired option'):
        load_yaml(path, ExperimentConfig)
    # A bool is not a number here: `residual: 0` is not the off value False.
    path.write_text('model:\n  local_memory:\n    residual: 0\n')
    with pytest.raises(ValueError, match='model.local_memory.residual'):
        load_yaml(path, ExperimentConfig)


def test_shipped_checkpoints_load_after_the_retirement():
    """type.safetensors stores every retired option at its off value: dropped, then built."""
    from dmnet_core.checkpoint import SHIPPED_CHECKPOINTS
    for task, path in SHIPPED_CHECKPOINTS.items():
        _, cfg = build_from_checkpoint(path)
        assert cfg.task == task
