"""Typed configuration: YAML round trip and errors that name the bad key or value."""
from pathlib import Path

import pytest

from dmnet_core.config import (
    ExperimentConfig,
    ModelConfig,
    default_class_names,
    from_dict,
    load_yaml,
    save_yaml,
)

CONFIG_DIR = Path(__file__).resolve().parents[2] / 'config'


def test_yaml_round_trip(tmp_path):
    exp = ExperimentConfig()
    exp.model.task = 'type'
    exp.model.class_names = default_class_names('type', 'endovis17')
    exp.model.global_memory.capacity = 7
    exp.train.lr = 3e-4
    save_yaml(exp, tmp_path / 'exp.yaml')
    back = load_yaml(tmp_path / 'exp.yaml', ExperimentConfig)
    assert back == exp
    assert back.model.num_classes == 8


def test_unknown_key_is_named():
    with pytest.raises(ValueError, match=r'global_memory.*unknown key.*capacityy'):
        from_dict(ModelConfig, {'global_memory': {'capacityy': 3}})


def test_wrong_type_is_named():
    with pytest.raises(ValueError, match=r'global_memory.n_read: expected an integer'):
        from_dict(ModelConfig, {'global_memory': {'n_read': 'four'}})


def test_validate_rejects_bad_values():
    cfg = ModelConfig(input_size=[250, 320])
    with pytest.raises(ValueError, match='multiples of 32'):
        cfg.validate()
    cfg = ModelConfig()
    cfg.global_memory.policy = 'greedy'
    with pytest.raises(ValueError, match='policy'):
        cfg.validate()
    ModelConfig().validate()


def test_missing_file_and_bad_yaml_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.yaml'):
        load_yaml(tmp_path / 'nope.yaml', ExperimentConfig)
    bad = tmp_path / 'bad.yaml'
    bad.write_text('model: [unclosed\n')
    with pytest.raises(ValueError, match='bad.yaml'):
        load_yaml(bad, ExperimentConfig)


def test_class_names_per_task():
    assert default_class_names('binary') == ['background', 'instrument']
    assert default_class_names('parts')[1:] == ['shaft', 'wrist', 'clasper']
    assert default_class_names('type', 'cholecseg8k') == ['background', 'grasper', 'l_hook']
    with pytest.raises(ValueError):
        default_class_names('type', 'nope')


@pytest.mark.parametrize('name', ['train_synth_binary', 'train_synth_binary_long',
                                  'train_synth_parts', 'ablation_type', 'train_synth',
                                  'train_endovis17', 'train_cholecseg8k'])
def test_committed_recipes_load_and_validate(name):
    exp = load_yaml(CONFIG_DIR / f'{name}.yaml', ExperimentConfig)
    exp.model.validate()


def test_binary_stage2_recipe_continues_the_stage1_model():
    # Stage 2 starts from stage 1's weights (--init), so its model section must be stage 1's.
    stage1 = load_yaml(CONFIG_DIR / 'train_synth_binary.yaml', ExperimentConfig)
    stage2 = load_yaml(CONFIG_DIR / 'train_synth_binary_long.yaml', ExperimentConfig)
    assert stage2.model == stage1.model
    assert stage2.data.root != stage1.data.root
    assert stage2.train.out_dir != stage1.train.out_dir
