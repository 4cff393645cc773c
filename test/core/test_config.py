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
    cfg = ModelConfig()
    cfg.decoder.output_stride = 8
    with pytest.raises(ValueError, match='output_stride'):
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


def test_base_file_is_merged_under_the_stage(tmp_path):
    (tmp_path / 'stage1.yaml').write_text(
        'model:\n  task: parts\n  global_memory: {capacity: 7, n_read: 2}\n'
        'train: {lr: 0.001, epochs: 15}\n')
    (tmp_path / 'more').mkdir()
    (tmp_path / 'more' / 'stage2.yaml').write_text(
        'base: ../stage1.yaml\nmodel:\n  global_memory: {n_read: 3}\ntrain: {lr: 0.0005}\n')
    exp = load_yaml(tmp_path / 'more' / 'stage2.yaml', ExperimentConfig)
    # Nested keys merge one by one: the stage changes n_read and lr, keeps the rest.
    assert (exp.model.task, exp.model.global_memory.capacity) == ('parts', 7)
    assert (exp.model.global_memory.n_read, exp.train.lr, exp.train.epochs) == (3, 5e-4, 15)


def test_base_errors_name_the_file(tmp_path):
    (tmp_path / 'a.yaml').write_text('base: b.yaml\n')
    (tmp_path / 'b.yaml').write_text('base: a.yaml\n')
    with pytest.raises(ValueError, match='loops back'):
        load_yaml(tmp_path / 'a.yaml', ExperimentConfig)
    (tmp_path / 'c.yaml').write_text('base: missing.yaml\n')
    with pytest.raises(FileNotFoundError, match='missing.yaml'):
        load_yaml(tmp_path / 'c.yaml', ExperimentConfig)
    (tmp_path / 'd.yaml').write_text('base: 3\n')
    with pytest.raises(ValueError, match='d.yaml: base: expected a file name'):
        load_yaml(tmp_path / 'd.yaml', ExperimentConfig)



REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted((REPO / 'recipes').rglob('*.yaml'))


@pytest.mark.parametrize('path', RECIPES, ids=lambda p: str(p.relative_to(REPO)))
def test_recipes_load_and_validate(path):
    exp = load_yaml(path, ExperimentConfig)
    exp.model.validate()


def test_every_config_and_recipe_file_is_used():
    """config/ holds what the node installs; recipes/ what a shipped model or a documented
    example was trained with. Every file there is named where it is used."""
    from dmnet_core.checkpoint import SHIPPED_CHECKPOINTS, SHIPPED_RECIPES

    users = [REPO / 'README.md', REPO / 'launch' / 'segment.launch.py',
             REPO / 'recipes' / 'README.md',
             *sorted((REPO / 'docs').glob('*.md')),
             *(p.with_suffix('.yaml') for p in SHIPPED_CHECKPOINTS.values())]
    text = '\n'.join(p.read_text() for p in users if p.is_file())
    files = [p for p in (REPO / 'config').iterdir()] + RECIPES
    assert files
    for path in files:
        rel = path.relative_to(REPO).as_posix()
        names = ([path.name] if path.parent.name == 'config'
                 else [rel, path.relative_to(REPO / 'recipes').as_posix()])
        assert any(n in text for n in names), (
            f'{rel} is used by no shipped model and no documented example')
    assert sorted(p.name for p in (REPO / 'config').iterdir()) == [
        'dmnet.yaml', 'fastdds_large_frames.xml']
    for task, recipe in SHIPPED_RECIPES.items():
        assert (REPO / recipe).is_file()
        assert recipe in SHIPPED_CHECKPOINTS[task].with_suffix('.yaml').read_text()
