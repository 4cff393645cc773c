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


@pytest.mark.parametrize('name', sorted(p.stem for p in CONFIG_DIR.glob('train_*.yaml'))
                         + ['ablation_type'])
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


def test_stage_recipes_change_only_data_and_schedule():
    # Each later stage continues its base's weights (--init), so its model must be the base's.
    for stage, base in [('train_synth_binary_s3', 'train_synth_binary_long'),
                        ('train_synth_binary_v3', 'train_synth_binary_long'),
                        ('train_synth_parts_long', 'train_synth_parts')]:
        a = load_yaml(CONFIG_DIR / f'{stage}.yaml', ExperimentConfig)
        b = load_yaml(CONFIG_DIR / f'{base}.yaml', ExperimentConfig)
        assert a.model == b.model and a.data.augmentation == b.data.augmentation
        assert a.train.out_dir != b.train.out_dir


def test_hires_ablation_differs_only_in_scale():
    # The 256x320 ablation must stay the 128x160 one but for where pixels come from: training
    # windows of 128x160 at the rendered scale, whole frames at inference.
    hi = load_yaml(CONFIG_DIR / 'ablation_type_hires.yaml', ExperimentConfig)
    lo = load_yaml(CONFIG_DIR / 'ablation_type.yaml', ExperimentConfig)
    assert hi.model.input_size == [256, 320] and lo.model.input_size == [128, 160]
    assert hi.data.crop == lo.data.crop == [128, 160]
    # The same 1-1.5x magnification of the rendered frame: zoom range scaled by 256/128.
    assert [s * 128 / 256 for s in hi.data.augmentation.scale] == lo.data.augmentation.scale
    hi.model.input_size = lo.model.input_size
    hi.data.augmentation.scale = lo.data.augmentation.scale
    hi.data.root, hi.train.out_dir = lo.data.root, lo.train.out_dir     # its own 256x320 set
    assert hi == lo


def test_jaw_pretrained_ablation_differs_only_in_its_encoder_start():
    # Item 17's recipe: the same ablation, the encoder started from the jaw-patch classifier.
    jaw = load_yaml(CONFIG_DIR / 'ablation_type_jawpre.yaml', ExperimentConfig)
    base = load_yaml(CONFIG_DIR / 'ablation_type.yaml', ExperimentConfig)
    assert base.model.encoder.weights is None
    assert jaw.model.encoder.weights == 'runs/probe/jaw_mnv2.safetensors'
    assert jaw.model.encoder.name == base.model.encoder.name == 'mobilenet_v2'
    jaw.model.encoder.weights, jaw.train.out_dir = None, base.train.out_dir
    assert jaw == base


@pytest.mark.parametrize('name,base_name', [('train_synth_binary_effl0', 'train_synth_binary'),
                                              ('ablation_type_lite0', 'ablation_type')])
def test_pretrained_lite0_recipes_differ_only_in_their_encoder(name, base_name):
    # The A/B of README's "pretrained encoder" (the shipped binary model, ablation item 18): the
    # base recipe's data, crops, augmentation and schedule, only the encoder (and the input
    # scaling its ImageNet weights expect) changed.
    lite = load_yaml(CONFIG_DIR / f'{name}.yaml', ExperimentConfig)
    base = load_yaml(CONFIG_DIR / f'{base_name}.yaml', ExperimentConfig)
    assert lite.model.encoder.name == 'efficientnet_lite0'
    assert lite.model.encoder.weights == 'imagenet'
    # TensorFlow's (x - 127) / 128 on 0-255 pixels, as mean / std on 0-1 pixels.
    assert all(abs(m * 255 - 127) < 0.5 and abs(s * 255 - 128) < 0.5
               for m, s in zip(lite.model.mean, lite.model.std))
    lite.model.encoder, lite.model.mean, lite.model.std = (base.model.encoder, base.model.mean,
                                                           base.model.std)
    lite.train.out_dir = base.train.out_dir
    assert lite == base


def test_jaw_weighted_ablation_differs_only_in_its_part_weights():
    # README ablation item 19: the Lite0 recipe with the clasper weighed in the loss, nothing else.
    jaws = load_yaml(CONFIG_DIR / 'ablation_type_lite0_jaws.yaml', ExperimentConfig)
    lite = load_yaml(CONFIG_DIR / 'ablation_type_lite0.yaml', ExperimentConfig)
    assert lite.train.part_weights == []
    assert jaws.train.part_weights == [1.0, 1.0, 1.0, 7.0]
    jaws.train.part_weights, jaws.train.out_dir = [], lite.train.out_dir
    assert jaws == lite

