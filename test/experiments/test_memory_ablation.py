"""experiments/memory_ablation end to end on a tiny set: train the four variants, score them,
diagnose.

Tiny everything: 3 generated sequences of 8 frames at 64 x 96, 5 iterations per run.
"""
import importlib
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from dmnet_core.checkpoint import load_checkpoint
from dmnet_core.data.synth import generate_dataset

REPO = Path(__file__).resolve().parents[2]
CLIP = REPO.parent / 'shared' / 'data' / 'cholecseg8k_clip' / 'video_pixel'
if not CLIP.is_dir():
    CLIP = Path('/work/shared/data/cholecseg8k_clip/video_pixel')


def _script(name: str):
    """The experiment's module `name` (run as `python -m experiments.memory_ablation.NAME`)."""
    return importlib.import_module(f'experiments.memory_ablation.{name}')


def test_one_copy_of_each_checkpoint_and_modules_not_path_hacks() -> None:
    """The committed DMNet is the shipped type model, not a second copy of it; the scripts
    of bench/ and experiments/ run as modules, never by putting the repository on sys.path."""
    import hashlib
    train = _script('train_ablation')
    assert train.model_path(train.MODELS, 'dmnet') == train.SHIPPED_DMNET
    assert train.model_path(train.MODELS, 'local_only') == train.MODELS / 'local_only.safetensors'
    digests: dict[str, Path] = {}
    for path in sorted(REPO.glob('**/*.safetensors')):
        if '.venv' in path.parts or 'runs' in path.parts:
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert digest not in digests, f'{path} is a copy of {digests[digest]}'
        digests[digest] = path
    for folder in ('bench', 'experiments'):
        for path in (REPO / folder).rglob('*.py'):
            assert 'sys.path.insert' not in path.read_text(), path


@pytest.fixture(scope='module')
def trained(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp('ablation')
    argv = ['--data', str(root / 'data'), '--runs', str(root / 'runs'),
            '--models-out', str(root / 'models'), '--stage1-iters', '5', '--iters', '5',
            '--iters-per-epoch', '5', '--synth-sequences', '3', '--synth-frames', '8',
            '--synth-size', '64x96', '--synth-val', '1', '--synth-test', '1',
            '--crop', '64', '96', '--batch-size', '2',
            '--clip-len', '3', '--workers', '0', '--val-frames', '3', '--device', 'cpu']
    assert _script('train_ablation').main(argv) == 0
    return {'root': root, 'argv': argv}


def test_train_four_variants_identically(trained, capsys) -> None:
    models = trained['root'] / 'models'
    flags = {'single_frame': (False, False), 'local_only': (True, False),
             'global_only': (False, True), 'dmnet': (True, True)}
    configs = {}
    for name, (local, glob) in flags.items():
        path = models / f'{name}.safetensors'
        cfg, _, extra = load_checkpoint(path)
        assert (cfg.local_memory.enabled, cfg.global_memory.enabled) == (local, glob), name
        assert cfg.task == 'type' and extra['variant'] == name
        assert path.with_suffix('.yaml').is_file()
        with safe_open(str(path), framework='pt') as f:
            assert f.get_tensor('decoder.head.weight').dtype.is_floating_point
            assert str(f.get_tensor('decoder.head.weight').dtype) == 'torch.float16'
        configs[name] = cfg
    # Everything but the memory switches is the same model.
    assert len({(c.input_size[0], c.input_size[1], c.decoder.channels, tuple(c.class_names))
                for c in configs.values()}) == 1
    recipe = json.loads((models / 'recipe.json').read_text())
    assert set(recipe['train_commands']) == {'stage1', *flags}
    # By default the memories are trained (and run) through label propagation; single_frame,
    # with nothing to read labels from, trains exactly as before.
    assert recipe['label_propagation'] == 2
    # --clip-len is stage 2's (every variant alike); stage 1 keeps the config's clips.
    assert '--clip-len' not in recipe['train_commands']['stage1']
    assert all(cmd[cmd.index('--clip-len') + 1] == '3' for name, cmd in
               recipe['train_commands'].items() if name != 'stage1')
    for name, cfg in configs.items():
        cmd = recipe['train_commands'][name]
        lp = cmd[cmd.index('--label-propagation') + 1] if '--label-propagation' in cmd else None
        assert (lp, cfg.label_propagation) == ((None, 0.0) if name == 'single_frame'
                                               else ('2', 2.0)), name
    # The local vote's radius is an inference setting written at export, the same for all.
    default = _script('train_ablation').parse_args([]).local_vote_radius
    assert recipe['local_vote_radius'] == default
    assert {c.local_memory.vote_radius for c in configs.values()} == {default}
    synth = recipe['synth_command']
    assert synth[:2] == ['dmnet', 'synth'] and synth[synth.index('--val') + 1] == '1'
    for name in flags:
        cmd = recipe['train_commands'][name]
        assert '--new-memories' in cmd and cmd[cmd.index('--stages') + 1:][:3] == ['0', '0.3',
                                                                                  '0.7']
        assert recipe['wall_seconds'][name] > 0
    # The same number of updates for all; the memory variants start with the memory stage.
    from dmnet_core.train import read_log
    runs = trained['root'] / 'runs'
    stages = {n: [r['stage'] for r in read_log(runs / n / 'train_log.csv')] for n in flags}
    assert all(len(s) == 5 for s in stages.values())
    assert stages['dmnet'] == ['memory'] * 2 + ['all'] * 3 == stages['local_only']
    # Run again: every run is finished, nothing is retrained.
    capsys.readouterr()
    assert _script('train_ablation').main(trained['argv']) == 0
    assert capsys.readouterr().out.count('skipped') == 5


def test_export_writes_the_vote_radius_and_keeps_the_weights(trained, tmp_path) -> None:
    script = _script('train_ablation')
    run = trained['root'] / 'runs' / 'local_only'
    paths = {r: script.export('local_only', run, tmp_path / str(r), {}, r) for r in (-1, 0)}
    (cfg_all, w_all, _), (cfg_same, w_same, _) = (load_checkpoint(paths[r]) for r in (-1, 0))
    assert (cfg_all.local_memory.vote_radius, cfg_same.local_memory.vote_radius) == (-1, 0)
    assert w_all.keys() == w_same.keys() and all((w_all[k] == w_same[k]).all() for k in w_all)
    with pytest.raises(SystemExit):
        script.parse_args(['--local-vote-radius', '-2'])


def test_score_writes_the_tables(trained, tmp_path) -> None:
    data = tmp_path / 'heldout'
    generate_dataset(data, 3, 6, seed=7919, size=(64, 96), val=0, test=2)
    for seq in ('seq_001', 'seq_002'):
        stems = sorted(p.stem for p in (data / seq / 'images').glob('*.png'))
        frames = {s: (['smoke_burst'] if i % 2 else []) for i, s in enumerate(stems)}
        (data / seq / 'conditions.json').write_text(json.dumps(
            {'names': ['smoke_burst', 'fast_move'], 'frames': frames}))
    out = tmp_path / 'results'
    argv = ['--models', str(trained['root'] / 'models'), '--data', str(data),
            '--timing-frames', '2', '--capacity', '2', '4', '--n-read', '1', '2',
            '--real-clip', str(CLIP), '--json', str(out / 'a.json'), '--md', str(out / 'a.md')]
    assert _script('score_ablation').main(argv) == 0
    res = json.loads((out / 'a.json').read_text())
    assert res['test_data']['seed'] is None        # --data alone: which seed made it is unknown
    assert list(res['models']) == ['single_frame', 'local_only', 'global_only', 'dmnet']
    for r in res['models'].values():
        assert 0.0 <= r['mean_iou'] <= 1.0 and r['frames'] == 12
        assert r['per_condition_frames'] == {'clean': 6, 'smoke_burst': 6}
        acc = r['instrument_class_accuracy']         # type task: naming scored apart
        assert acc is None or 0.0 <= acc <= 1.0
        assert set(r['per_condition_class_accuracy']) == {'clean', 'smoke_burst'}
    m = res['models']
    assert m['single_frame']['params'] < m['global_only']['params'] < m['dmnet']['params']
    assert m['dmnet']['params'] == (m['single_frame']['params'] + m['dmnet']['params_local_memory']
                                    + m['dmnet']['params_global_memory'])
    assert set(res['timing_ms']) == set(m) and all(v > 0 for v in res['timing_ms'].values())
    assert list(res['policies']) == ['active', 'recent', 'uniform']
    assert [(r['capacity'], r['n_read']) for r in res['sweep']] == [(2, 1), (2, 2), (4, 1),
                                                                    (4, 2)]
    md = (out / 'a.md').read_text()
    assert '| model | local | global | mIoU |' in md and 'smoke_burst (6)' in md
    assert '(seed not given, 12 frames)' in md
    if CLIP.is_dir():                                  # evaluation only, never trained on
        assert set(res['real_clip']) == {'dmnet', 'dmnet_memory_off', 'single_frame'}
        assert res['real_clip']['dmnet']['frames'] == 72
    # A missing checkpoint is named.
    (trained['root'] / 'models' / 'dmnet.safetensors').rename(tmp_path / 'moved.safetensors')
    try:
        assert _script('score_ablation').main(argv) == 2
    finally:
        (tmp_path / 'moved.safetensors').rename(trained['root'] / 'models' / 'dmnet.safetensors')


def test_score_held_out_seed_and_path(tmp_path) -> None:
    score = _script('score_ablation')
    args = score.parse_args([])
    assert args.test_seed == 7919 and args.data.name == 'test_seed7919'
    assert score.parse_args(['--test-seed', '7925']).data.name == 'test_seed7925'
    args = score.parse_args(['--data', str(tmp_path / 'set'), '--test-seed', '7925'])
    assert args.test_seed == 7925 and args.data == tmp_path / 'set'
    # A missing --data set is generated only from a seed the caller names.
    args = score.parse_args(['--data', str(tmp_path / 'set')])
    with pytest.raises(SystemExit, match='set has no dataset.yaml; give --test-seed'):
        score.ensure_test_data(args)


def test_diagnose(trained, tmp_path, capsys) -> None:
    root = trained['root']
    out = tmp_path / 'diag.json'
    argv = ['--checkpoint', str(root / 'models' / 'dmnet.safetensors'), '--data',
            str(root / 'data'), '--train-log', str(root / 'runs' / 'dmnet' / 'train_log.csv'),
            '--alphas', '-2', '0', '--betas', '-0.5', '1', '--json', str(out),
            '--calibrate-beta', '-1', '0.5']
    assert _script('diagnose_memory').main(argv) == 0
    res = json.loads(out.read_text())
    assert res['frames'] == 8 and res['reads']['local_reads'] == 8
    rates = {(x['alpha'], x['beta']): x['admit_rate'] for x in res['admit_sweep']}
    assert rates[(-2.0, 1.0)] == 1.0 and rates[(0.0, 1.0)] == 0.0      # r is in [-ln 4, 0]
    grads = res['gradients'][str(root / 'runs' / 'dmnet' / 'train_log.csv')]
    assert list(grads) == ['memory', 'all'] and grads['memory']['grad_norm_local_memory'] > 0
    assert [r['beta'] for r in res['beta_calibration']] == [-1.0, 0.5]
    assert all(0.0 <= r['mean_iou'] <= 1.0 for r in res['beta_calibration'])
    printed = capsys.readouterr().out
    assert 'admission rate' in printed and 'beta calibration on val' in printed
    assert _script('diagnose_memory').main(['--checkpoint', str(tmp_path / 'none')]) == 2


def test_effective_config_takes_the_data_sets_type_classes(tmp_path) -> None:
    import argparse

    from dmnet_core.config import ExperimentConfig, load_yaml
    from dmnet_core.data.layout import read_meta, write_meta
    generate_dataset(tmp_path / 'd', 1, 2, seed=0, size=(64, 96))
    meta = read_meta(tmp_path / 'd')
    meta.classes['type'] = ['background', 'forceps', 'needle_driver', 'scissors', 'suction']
    write_meta(tmp_path / 'd', meta)
    args = argparse.Namespace(config=REPO / 'recipes' / 'type' / 'type_synth.yaml',
                              data=tmp_path / 'd', runs=tmp_path)
    path = _script('train_ablation').effective_config(args)
    exp = load_yaml(path, ExperimentConfig)
    assert exp.model.class_names[-1] == 'suction' and exp.model.num_classes == 5
    source = load_yaml(REPO / 'recipes' / 'type' / 'type_synth.yaml', ExperimentConfig)
    assert exp.model.task == 'type' and exp.train == source.train     # the rest as in the YAML
    assert exp.data == source.data and exp.model.input_size == source.model.input_size


def test_size_and_schedule_flags_pass_through_to_dmnet_train() -> None:
    script = _script('train_ablation')
    args = script.parse_args(['--seed', '3', '--ema-decay', '0.99', '--crop', '64', '96'])
    flags = script.common_flags(args)
    for pair in (['--seed', '3'], ['--ema-decay', '0.99'], ['--crop', '64', '96']):
        i = flags.index(pair[0])
        assert flags[i:i + len(pair)] == pair
    assert '--lr' not in flags                   # unset flags leave the config's values


def test_label_propagation_goes_to_the_memory_variants_only() -> None:
    script = _script('train_ablation')
    assert script.variant_flags('single_frame', 2.0) == ['--no-local', '--no-global']
    assert script.variant_flags('dmnet', 2.0) == ['--label-propagation', '2']
    assert script.variant_flags('local_only', 0.5)[-2:] == ['--label-propagation', '0.5']
    assert script.variant_flags('dmnet', 0.0) == []                 # off: training without it
    assert script.variant_flags('dmnet_lp', 4.0).count('--label-propagation') == 1
    with pytest.raises(SystemExit):
        script.parse_args(['--label-propagation', '-1'])


def test_score_passes_the_local_vote_radius_to_every_model(tmp_path) -> None:
    score = _script('score_ablation')
    args = score.parse_args(['--data', str(tmp_path), '--local-vote-radius', '0'])
    assert score.overrides(args) == {'local_vote_radius': 0}
    assert score.overrides(args, {'local_enabled': False}) == {'local_enabled': False,
                                                               'local_vote_radius': 0}
    assert score.overrides(score.parse_args(['--data', str(tmp_path)])) is None   # as trained


def _fake_score(path: Path, miou: dict, tip: dict) -> Path:
    models = {v: {'mean_iou': m, 'per_condition_miou': {'tip_occluded': tip[v]}}
              for v, m in miou.items()}
    path.write_text(json.dumps({'machine': 'cpu', 'test_data': {'seed': 7919}, 'models': models}))
    return path


def test_summarize_draws_pairs_each_gain_with_its_own_single_frame(tmp_path, capsys) -> None:
    summarize = _script('summarize_draws')
    a = _fake_score(tmp_path / 'a.json',
                    {'single_frame': 0.20, 'local_only': 0.30, 'global_only': 0.25, 'dmnet': 0.26},
                    {'single_frame': 0.1, 'local_only': 0.2, 'global_only': 0.1, 'dmnet': 0.3})
    b = _fake_score(tmp_path / 'b.json',
                    {'single_frame': 0.30, 'local_only': 0.28, 'global_only': 0.33, 'dmnet': 0.34},
                    {'single_frame': 0.2, 'local_only': 0.2, 'global_only': 0.4, 'dmnet': 0.3})
    out = tmp_path / 'sum.json'
    assert summarize.main([f'first={a}', str(b), '--json', str(out), '--md',
                           str(tmp_path / 'sum.md')]) == 0
    res = json.loads(out.read_text())
    assert [d['label'] for d in res['draws']] == ['first', 'b']
    # Gains are per draw: local +10 then -2 (mean +4, sd sqrt(72)), dmnet +6 then +4.
    assert res['gain']['local_only']['mean'] == pytest.approx(4.0)
    assert res['gain']['local_only']['sd'] == pytest.approx(72 ** 0.5)
    assert res['gain']['local_only']['draws_meeting_bar'] == 1
    assert res['gain']['dmnet']['mean'] == pytest.approx(5.0)
    assert res['gain']['dmnet']['draws_meeting_bar'] == 2 and res['gain']['dmnet']['mean_meets_bar']
    assert res['gain']['global_only']['min'] == pytest.approx(3.0)
    assert res['per_condition_mean_gain']['tip_occluded']['dmnet'] == pytest.approx(15.0)
    assert '2 of 2' in (tmp_path / 'sum.md').read_text()


def test_summarize_draws_leaves_a_condition_out_where_a_set_scored_none(tmp_path) -> None:
    # A condition on a few frames can have no class over the GT-pixel rule: None in that file.
    summarize = _script('summarize_draws')
    miou = {'single_frame': 0.2, 'local_only': 0.3, 'global_only': 0.3, 'dmnet': 0.3}
    a = _fake_score(tmp_path / 'a.json', miou, dict.fromkeys(miou, None))
    b = _fake_score(tmp_path / 'b.json', miou, {**dict.fromkeys(miou, 0.3), 'single_frame': 0.1})
    res = summarize.summarize([summarize.load_draw(f'run={a}'), summarize.load_draw(f'run={b}')])
    assert res['per_condition_mean_gain']['tip_occluded']['dmnet'] == pytest.approx(20.0)


def test_summarize_draws_averages_one_draw_over_its_held_out_sets(tmp_path) -> None:
    summarize = _script('summarize_draws')
    tip = dict.fromkeys(('single_frame', 'local_only', 'global_only', 'dmnet'), 0.1)
    a = _fake_score(tmp_path / 'a.json', {'single_frame': 0.20, 'local_only': 0.30,
                                          'global_only': 0.20, 'dmnet': 0.30}, tip)
    b = _fake_score(tmp_path / 'b.json', {'single_frame': 0.40, 'local_only': 0.30,
                                          'global_only': 0.40, 'dmnet': 0.34}, tip)
    res = summarize.summarize([summarize.load_draw(f'run={a}'), summarize.load_draw(f'run={b}')])
    (draw,) = res['draws']
    assert draw['miou']['single_frame'] == pytest.approx(30.0)
    assert draw['gain']['dmnet'] == pytest.approx(2.0) and draw['gain']['local_only'] == 0.0
    assert draw['test_seeds'] == [7919, 7919] and res['gain']['dmnet']['sd'] is None


def test_summarize_draws_compares_the_chosen_variants(tmp_path) -> None:
    """--variants: draws without local_only, a further DMNet variant held to DMNet's bar."""
    summarize = _script('summarize_draws')
    a = _fake_score(tmp_path / 'a.json', {'single_frame': 0.20, 'dmnet': 0.22, 'dmnet_lp': 0.25},
                    {'single_frame': 0.1, 'dmnet': 0.1, 'dmnet_lp': 0.2})
    md = tmp_path / 'sum.md'
    assert summarize.main([str(a), '--variants', 'dmnet', 'dmnet_lp', '--md', str(md)]) == 0
    res = summarize.summarize([summarize.load_draw(str(a), ('dmnet', 'dmnet_lp'))],
                              ('dmnet', 'dmnet_lp'))
    assert res['gain']['dmnet_lp']['mean'] == pytest.approx(5.0)
    assert res['gain']['dmnet_lp']['bar'] == 3.0 and res['gain']['dmnet_lp']['mean_meets_bar']
    assert not res['gain']['dmnet']['mean_meets_bar'] and 'local_only' not in res['gain']
    assert '| single_frame | DMNet | dmnet_lp |' in md.read_text()
    with pytest.raises(SystemExit, match='no scores for local_only'):
        summarize.main([str(a)])


def test_summarize_draws_tables_every_set_alike_and_reads_aliases(tmp_path) -> None:
    """The paper-like table: means over held-out sets, each gain against its own set's
    single_frame, costs as round-robin ratios; --alias reads `*_lp` scores as the variant."""
    summarize = _script('summarize_draws')

    def scored(path: Path, sf: float, dm: float, ms: tuple[float, float], name: str) -> Path:
        models = {'single_frame': {'mean_iou': sf, 'mean_dice': sf + 0.1, 'params': 10,
                                   'pred_flicker': 0.02, 'local': False, 'global': False},
                  name: {'mean_iou': dm, 'mean_dice': dm + 0.1, 'params': 12,
                         'pred_flicker': 0.01, 'local': True, 'global': True}}
        path.write_text(json.dumps({'test_data': {'seed': 1}, 'models': models,
                                    'timing_ms': {'single_frame': ms[0], name: ms[1]}}))
        return path
    a = scored(tmp_path / 'a.json', 0.40, 0.50, (10.0, 12.0), 'dmnet')
    b = scored(tmp_path / 'b.json', 0.60, 0.58, (20.0, 22.0), 'dmnet_lp')
    md = tmp_path / 'sum.md'
    out = tmp_path / 'sum.json'
    assert summarize.main([f'c={a}', f'c={b}', '--variants', 'dmnet', '--alias',
                           'dmnet_lp=dmnet', '--json', str(out), '--md', str(md)]) == 0
    row = json.loads(out.read_text())['per_set']['dmnet']
    # Gains +10 and -2: mean +4, standard error sd/sqrt(2) = 6; one set of two over +3.
    assert row['gain'] == pytest.approx(4.0) and row['gain_se'] == pytest.approx(6.0)
    assert row['sets_meeting_bar'] == 1 and row['sets'] == 2
    assert row['mean_iou'] == pytest.approx(54.0) and row['mean_dice'] == pytest.approx(64.0)
    # Ratios 1.2 and 1.1 (not 34 ms / 30 ms): each set's own round robin.
    assert row['x_backbone'] == pytest.approx(1.15) and row['x_backbone_max'] == pytest.approx(1.2)
    assert row['pred_flicker'] == pytest.approx(0.01) and row['challenge_iou'] is None
    assert '| DMNet | ✓ | ✓ | 54.00 | 64.00 |  |  | +4.00 ± 6.00 | 1 of 2 (+3) |' in md.read_text()
    with pytest.raises(SystemExit, match='no scores for dmnet'):
        summarize.main([str(b), '--variants', 'dmnet'])
    with pytest.raises(SystemExit, match="--alias 'dmnet_lp' is not SCORED=AS"):
        summarize.main([str(b), '--variants', 'dmnet', '--alias', 'dmnet_lp'])


def test_summarize_draws_names_a_bad_file(tmp_path) -> None:
    summarize = _script('summarize_draws')
    bad = tmp_path / 'partial.json'
    bad.write_text(json.dumps({'models': {'single_frame': {'mean_iou': 0.2}}}))
    with pytest.raises(SystemExit, match='partial.json has no scores for local_only'):
        summarize.main([str(bad)])
    with pytest.raises(SystemExit, match='cannot read .*missing.json'):
        summarize.main([str(tmp_path / 'missing.json')])


def test_summarize_draws_sets_finding_against_naming(tmp_path) -> None:
    summarize = _script('summarize_draws')
    variants = ('single_frame', 'local_only', 'global_only', 'dmnet')
    files = []
    for i, acc in enumerate((0.4, 0.6)):
        models = {v: {'mean_iou': 0.2, 'binary_dice': 0.8 + 0.1 * i,
                      'instrument_class_accuracy': acc + (0.1 if v == 'dmnet' else 0.0),
                      'per_condition_class_accuracy': {'tip_occluded': acc / 2}}
                  for v in variants}
        p = tmp_path / f's{i}.json'
        p.write_text(json.dumps({'machine': 'cpu', 'test_data': {'seed': 7922 + i},
                                 'models': models}))
        files.append(f'd={p}')
    res = summarize.summarize([summarize.load_draw(f) for f in files])
    fn = res['finding_naming']
    assert fn['single_frame']['binary_dice'] == pytest.approx(85.0)
    assert fn['single_frame']['class_accuracy'] == pytest.approx(50.0)
    assert fn['dmnet']['class_accuracy'] == pytest.approx(60.0)
    assert fn['dmnet']['class_accuracy_tip_occluded'] == pytest.approx(25.0)
    assert fn['dmnet']['class_accuracy_clean'] is None           # no clean frames scored
    assert 'class accuracy, tip_occluded' in summarize.to_markdown(res)
    # Files scored before the figure existed: no table, no error.
    old = tmp_path / 'old.json'
    old.write_text(json.dumps({'models': {v: {'mean_iou': 0.2} for v in variants}}))
    assert summarize.summarize([summarize.load_draw(str(old))])['finding_naming'] == {}


def test_naming_headroom_votes_by_ground_truth_type() -> None:
    nh = _script('naming_headroom')
    gt = np.array([[1, 1, 1, 2, 0]], dtype=np.uint8)
    # One sequence, 3 classes + background: type 1 named right 3, 1, then 0 times of 3; type 2
    # always right; the background pixel predicted 1 is not a found pixel.
    preds = ([1, 1, 1, 2, 1], [1, 2, 2, 2, 1], [2, 2, 2, 2, 1])
    frames = [nh.found_confusion(np.array([p], np.uint8), gt, 3) for p in preds]
    assert frames[1].tolist() == [[0, 0, 0], [0, 1, 2], [0, 0, 1]]
    r = nh.headroom([frames])
    assert r['found_pixels'] == 12
    assert r['frame'] == pytest.approx(7 / 12)           # 4 + 2 + 1
    # Causal vote for type 1: 3:0, then 4:2 (right), then 4:5 (wrong from then on).
    assert r['causal_vote'] == pytest.approx((4 + 4 + 1) / 12)
    # Sequence vote: type 1 named 1 four times and 2 five times: all of type 1 wrong.
    assert r['sequence_vote'] == pytest.approx(3 / 12)
    assert r['confusion'] == [[4, 5], [0, 3]]            # instrument types only
    assert nh.headroom([[]])['frame'] is None


def test_naming_by_part_counts_found_pixels_of_each_part() -> None:
    nh = _script('naming_headroom')
    gt = np.array([[1, 1, 1, 2, 0, 2]], dtype=np.uint8)
    parts = np.array([[1, 1, 3, 3, 0, 2]], dtype=np.uint8)     # shaft, shaft, clasper, ...
    pred = np.array([[1, 2, 1, 1, 1, 0]], dtype=np.uint8)      # last pixel not found
    ok, n = np.zeros(4, np.int64), np.zeros(4, np.int64)
    nh.add_part_counts(pred, gt, parts, ok, n)
    assert n.tolist() == [0, 2, 0, 2]          # the background and unfound pixels do not count
    assert ok.tolist() == [0, 1, 0, 1]


def _jaw_set(root: Path) -> None:
    """One sequence, one frame: a forceps (type 1) with 9 clasper pixels around (20, 30) and a
    scissors (type 3) with 2 (below --min-clasper)."""
    import cv2

    from dmnet_core.data.layout import DatasetMeta, write_meta
    write_meta(root, DatasetMeta(name='synth', splits={'train': ['seq_000']}))
    seq = root / 'seq_000'
    for d in ('images', 'masks/type', 'masks/parts'):
        (seq / d).mkdir(parents=True)
    img = np.zeros((48, 64, 3), np.uint8)
    img[19:22, 29:32] = (0, 0, 255)                            # BGR red at the forceps jaws
    types = np.zeros((48, 64), np.uint8)
    parts = np.zeros((48, 64), np.uint8)
    types[10:22, 29:32], parts[10:19, 29:32], parts[19:22, 29:32] = 1, 1, 3
    types[40:44, 5:8], parts[40:44, 5:8], parts[40, 5:7] = 3, 1, 3
    cv2.imwrite(str(seq / 'images' / '000000.png'), img)
    cv2.imwrite(str(seq / 'masks' / 'type' / '000000.png'), types)
    cv2.imwrite(str(seq / 'masks' / 'parts' / '000000.png'), parts)


def test_jaw_probe_cuts_patches_around_each_instruments_jaws(tmp_path) -> None:
    jp = _script('jaw_probe')
    _jaw_set(tmp_path)
    x, y, seqs = jp.patches(tmp_path, 8, min_clasper=6)
    assert y.tolist() == [1] and seqs == ['seq_000']           # the 2-pixel jaw is left out
    assert x.shape == (1, 8, 8, 3)
    assert x[0, 4, 4].tolist() == [255, 0, 0]                  # centred on the jaws, in RGB
    assert x[0, 0, 0].tolist() == [0, 0, 0]
    with pytest.raises(SystemExit, match='no data set'):
        jp.patches(tmp_path / 'missing', 8, 6)


def test_jaw_probe_encoder_loads_as_dmnet_encoder_weights(tmp_path) -> None:
    from dmnet_core.model.encoder import build_encoder
    jp = _script('jaw_probe')
    generate_dataset(tmp_path / 'd', sequences=2, frames=3, size=(64, 80), seed=3, val=0,
                     test=0, style='robotic', same_looks=True)
    out = tmp_path / 'enc.safetensors'
    r = jp.main(['--train', str(tmp_path / 'd'), '--test', str(tmp_path / 'd'), '--patch', '32',
                 '--epochs', '1', '--arch', 'mobilenet_v2', '--min-clasper', '1',
                 '--save-encoder', str(out)])
    assert r['n_train'] > 0 and 0.0 <= r['test_accuracy'] <= 1.0
    enc = build_encoder('mobilenet_v2', 16, out)               # torchvision keys, head ignored
    from safetensors.torch import load_file
    saved = load_file(str(out))
    assert enc.stage4[0][0].weight.equal(saved['features.0.0.weight'])


def test_jaw_probe_names_a_missing_mask(tmp_path) -> None:
    jp = _script('jaw_probe')
    _jaw_set(tmp_path)
    (tmp_path / 'seq_000' / 'masks' / 'parts' / '000000.png').unlink()
    with pytest.raises(SystemExit, match='mask not found: .*parts/000000.png'):
        jp.patches(tmp_path, 8, 6)


def test_summarize_draws_knows_every_trained_variant() -> None:
    """Every variant train_ablation.py can train has a bar to be summarised against."""
    summarize, train = _script('summarize_draws'), _script('train_ablation')
    assert set(summarize.BARS) | set(summarize.EXTRA_BARS) == set(train.VARIANTS) - {'single_frame'}


def test_oracle_bank_with_label_propagation_swaps_what_the_memories_keep(tmp_path) -> None:
    """With --label-propagation, 'truth' makes the ELM window and the bank keep the masks."""
    import math

    import tiny_models
    import torch

    from dmnet_core import segmenter as segmenter_module
    from dmnet_core.checkpoint import save_checkpoint
    from dmnet_core.config import default_class_names
    from dmnet_core.data import layout
    from dmnet_core.model import build_model, init_batchnorm_stats
    from dmnet_core.model.global_memory import class_shares
    from dmnet_core.segmenter import load_segmenter

    data = tmp_path / 'data'
    generate_dataset(data, 2, 5, seed=3, size=(64, 96), val=1, test=0)
    cfg = tiny_models.tiny_config(64, 96, {'alpha': -math.inf, 'beta': math.inf},
                                  task='type', class_names=default_class_names('type'))
    torch.manual_seed(0)
    model = build_model(cfg)
    init_batchnorm_stats(model, torch.randn(2, 3, 64, 96))
    save_checkpoint(tmp_path / 'dmnet.safetensors', model, cfg)
    oracle = _script('oracle_bank')
    mask_logits = oracle.mask_logits
    seqs = layout.list_sequences(data, 'val')
    seg = load_segmenter(tmp_path / 'dmnet.safetensors', 'cpu', precision='fp32',
                         memory={'label_propagation': 16.0})
    last = seqs[-1].frames()[-1]
    mask = torch.from_numpy(layout.read_mask(seqs[-1].mask_path(last, 'type')).astype(np.int64))
    truth_shares = torch.softmax(mask_logits(mask[None], 9, (2, 3)), 1)
    kept = {}
    for mode in ('own', 'truth'):
        kept[mode] = oracle.run_mode(seg, seqs, mode, 0), seg.local_shares[-1]
        assert segmenter_module.class_shares is class_shares      # restored
    assert kept['own'][0].sum() == kept['truth'][0].sum()
    # what the ELM window keeps of the last frame: its mask's class shares, or not
    assert torch.allclose(kept['truth'][1], truth_shares, atol=1e-5)
    assert not torch.allclose(kept['own'][1], truth_shares, atol=1e-2)
    # without label propagation there is nothing to swap
    with pytest.raises(SystemExit, match='--label-propagation must be > 0'):
        oracle.main(['--models', str(tmp_path), '--data', str(data), '--variants', 'dmnet',
                     '--label-propagation', '0'])
    with pytest.raises(SystemExit, match='no checkpoint'):
        oracle.main(['--models', str(tmp_path / 'none'), '--data', str(data)])
    out = tmp_path / 'o.json'
    assert oracle.main(['--models', str(tmp_path), '--data', str(data), '--variants', 'dmnet',
                        '--label-propagation', '2', '--json', str(out)]) == 0
    assert json.loads(out.read_text())['label_propagation'] == 2.0


def test_oracle_mask_logits_give_each_classes_area_share() -> None:
    import torch
    mask_logits = _script('oracle_bank').mask_logits
    masks = torch.tensor([[[0, 0, 1, 1], [0, 2, 1, 255]]])           # 1 x 2 x 4, one ignored
    shares = torch.softmax(mask_logits(masks, 3, (1, 2)), dim=1)[0, :, 0]   # K x 2 cells
    torch.testing.assert_close(shares[:, 0], torch.tensor([0.75, 0.0, 0.25]), atol=1e-5, rtol=0)
    # The right cell: three pixels of class 1 and one ignored, which counts as no class.
    torch.testing.assert_close(shares[:, 1], torch.tensor([0.0, 1.0, 0.0]), atol=1e-5, rtol=0)
    raw = mask_logits(masks, 3, (1, 2)).exp()[0, :, 0, 1]
    torch.testing.assert_close(raw.sum(), torch.tensor(0.75), atol=1e-4, rtol=0)


def test_score_ablation_label_propagation_reaches_every_run() -> None:
    """--label-propagation joins each run's memory settings; scripts without it are unchanged."""
    import argparse
    score = _script('score_ablation')
    args = score.parse_args(['--label-propagation', '2'])
    assert score.overrides(args) == {'label_propagation': 2.0}
    assert score.overrides(args, {'policy': 'recent'}) == {'policy': 'recent',
                                                           'label_propagation': 2.0}
    assert score.overrides(score.parse_args([]), {'n_read': 2}) == {'n_read': 2}
    assert score.overrides(argparse.Namespace(), None) is None     # e.g. diagnose_memory's args


def test_train_ablation_stops_when_a_run_is_interrupted(tmp_path, monkeypatch) -> None:
    """Ctrl-C in one `dmnet train` (exit 130) stops the script; it does not go on to the next
    variant, and the interrupted run's wall time is kept for the resume."""
    import dmnet_core.cli
    train_ablation = _script('train_ablation')
    monkeypatch.setattr(dmnet_core.cli, 'main', lambda argv: 130)
    times: dict = {}
    with pytest.raises(SystemExit, match='dmnet interrupted; run the same command again'):
        train_ablation.run_training('dmnet', ['train'], tmp_path / 'dmnet', 800, times)
    assert 'dmnet' in times
    # A resume adds its time to the interrupted run's; a fresh start (no resume state, e.g. the
    # folder was moved away) does not inherit an earlier run's time.
    (tmp_path / 'dmnet').mkdir()
    (tmp_path / 'dmnet' / 'resume.json').write_text('{"step": 400}')
    times['dmnet'] = 1000.0
    with pytest.raises(SystemExit):
        train_ablation.run_training('dmnet', ['train'], tmp_path / 'dmnet', 800, times)
    assert times['dmnet'] >= 1000.0
    (tmp_path / 'dmnet' / 'resume.json').unlink()
    with pytest.raises(SystemExit):
        train_ablation.run_training('dmnet', ['train'], tmp_path / 'dmnet', 800, times)
    assert times['dmnet'] < 1000.0
    monkeypatch.setattr(dmnet_core.cli, 'main', lambda argv: 1)
    with pytest.raises(SystemExit, match=r'failed for dmnet \(rc 1\)'):
        train_ablation.run_training('dmnet', ['train'], tmp_path / 'dmnet', 800, times)
