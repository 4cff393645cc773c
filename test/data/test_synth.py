"""The generator: determinism, masks that match the drawn pixels (per style), the field of
view's surround, condition tags, CLI."""
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from dmnet_core.cli import main as dmnet_main
from dmnet_core.config import TYPE_CLASSES
from dmnet_core.data.layout import list_sequences, read_mask, read_meta
from dmnet_core.data.synth import (
    CONDITIONS,
    FLAT_BACKGROUND,
    LAP_TYPES,
    ROBOTIC_TYPES,
    generate_dataset,
    generate_sequence,
    make_scene,
    read_conditions,
    render_frame,
    render_frame_tagged,
)
from dmnet_core.data.synth import scene as scene_module


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*'))
            if p.is_file()}


@pytest.mark.parametrize('style', ['robotic', 'laparoscopic', 'mixed'])
def test_same_seed_same_bytes_other_seed_differs(tmp_path, style):
    kw = dict(sequences=2, frames=5, size=(64, 96), style=style)
    generate_dataset(tmp_path / 'a', seed=3, **kw)
    generate_dataset(tmp_path / 'b', seed=3, **kw)
    generate_dataset(tmp_path / 'c', seed=4, **kw)
    a, b, c = (_files(tmp_path / n) for n in 'abc')
    # meta + per sequence conditions.json + (image + 3 masks) per frame
    assert len(a) == 1 + 2 + 2 * 5 * 4
    assert a == b
    assert a.keys() == c.keys()
    assert any(a[k] != c[k] for k in a if k.endswith('.png') and '/images/' in k)


@pytest.mark.parametrize('style', ['robotic', 'laparoscopic'])
def test_masks_are_exactly_the_drawn_instruments(style):
    # Without effects: inside the view every non-flat pixel is instrument; outside it is black
    # and background. (The circle's 1-3 px soft rim is left out of the pixel comparison.)
    seen = 0
    for seed in range(6):
        scene = make_scene(np.random.default_rng(seed), 12, (96, 128), effects=False,
                           style=style)
        soft = scene.fov.soft(96, 128)
        full, none = soft == 1.0, soft == 0.0
        for i in range(12):
            rgb, masks = render_frame(scene, i)
            drawn = np.any(rgb != np.array(FLAT_BACKGROUND, np.uint8), axis=-1)
            assert np.array_equal(drawn[full], masks['binary'][full] == 1)
            assert np.array_equal(masks['parts'] > 0, masks['binary'] == 1)
            assert np.array_equal(masks['type'] > 0, masks['binary'] == 1)
            for m in masks.values():
                assert not m[~scene.fov.inside(96, 128)].any()
            assert not rgb[none].any()
            assert set(np.unique(masks['parts'])) <= {0, 1, 2, 3}
            types = set(np.unique(masks['type'])) - {0}
            assert types <= set(ROBOTIC_TYPES if style == 'robotic' else LAP_TYPES)
            seen += int(drawn[full].any())
    assert seen > 30                      # instruments were actually on screen


@pytest.mark.parametrize('style', ['robotic', 'laparoscopic'])
def test_effects_keep_masks_consistent_and_surround_background(style):
    parts_seen, kinds, widths, squeezed = set(), set(), [], 0
    for seed in range(4):
        scene = make_scene(np.random.default_rng(seed + 10), 20, (128, 160), style=style)
        kinds.add(scene.fov.kind)
        outside = ~scene.view_mask()
        squeezed += scene.output_size != scene.size
        for i in range(0, 20, 2):
            rgb, masks = render_frame(scene, i)
            assert rgb.shape == (128, 160, 3) and masks['parts'].shape == (128, 160)
            b = masks['binary'] == 1
            assert np.array_equal(b, masks['parts'] > 0)
            assert np.array_equal(b, masks['type'] > 0)
            assert not b[outside].any()
            if outside.any():
                # The surround stays dark (no light reaches the sensor there).
                assert rgb[outside].astype(float).mean() < 12
            parts_seen |= set(np.unique(masks['parts']).tolist())
        widths += [inst.look.shaft_w for inst in scene.instruments]
    assert squeezed >= 1          # some sequences are wide video squeezed to 160 px
    if style == 'robotic':
        assert parts_seen == {0, 1, 2, 3}
        assert kinds <= {'full', 'borders'}
    else:
        assert {0, 1, 3} <= parts_seen and 2 not in parts_seen   # no wrist on rigid tools
        assert 'circle' in kinds
        assert min(widths) < 12                                  # thin shafts (units of s)


def test_styles_vary_the_field_of_view():
    kinds = {style: [make_scene(np.random.default_rng(s), 2, (64, 96), style=style).fov.kind
                     for s in range(30)] for style in ('robotic', 'laparoscopic', 'mixed')}
    assert kinds['laparoscopic'].count('circle') >= 20
    assert 'borders' in kinds['robotic'] and 'circle' not in kinds['robotic']
    assert 'circle' in kinds['mixed'] and set(kinds['mixed']) - {'circle'}
    radii = [make_scene(np.random.default_rng(s), 2, (64, 96), style='laparoscopic').fov
             for s in range(30)]
    cut = [f for f in radii if f.kind == 'circle' and (f.cy - f.r < 0 or f.cy + f.r > 64)]
    inner = [f for f in radii if f.kind == 'circle' and f.cy - f.r >= 0 and f.cy + f.r <= 64]
    assert cut and inner          # circles cut off by the frame and circles fully inside


def test_hard_cases_occur():
    rng_scenes = [make_scene(np.random.default_rng(s), 150, (64, 96)) for s in range(12)]
    assert any(sc.smoke.max() > 0.9 for sc in rng_scenes)           # dense smoke bursts
    assert any(((sc.smoke > 0.2) & (sc.smoke < 0.9)).any() for sc in rng_scenes)  # lighter
    assert all(sc.flashes for sc in rng_scenes)                      # specular flashes
    assert sum(bool(sc.folds) for sc in rng_scenes) >= 6             # tissue-fold occlusions
    assert any(len(sc.instruments) == 3 for sc in rng_scenes)
    assert any(i.exit_t < 150 for sc in rng_scenes for i in sc.instruments)  # leaving
    assert any(i.enter_t > 0 for sc in rng_scenes for i in sc.instruments)   # entering
    # Look-alikes: two instruments of different types with the same shaft and jaw colours
    # (up to the small per-instrument tint).
    def alike(sc):
        ins = sc.instruments
        return any(a.type_id != b.type_id
                   and np.abs(np.subtract(a.look.jaw, b.look.jaw)).max() <= 16
                   and np.abs(np.subtract(a.look.shaft, b.look.shaft)).max() <= 16
                   for i, a in enumerate(ins) for b in ins[i + 1:])
    assert any(alike(sc) for sc in rng_scenes)


def test_one_sequence_is_every_split(tmp_path):
    # Speed is a benchmark's business (bench/synth_examples.py prints timings), not a test's.
    meta = generate_dataset(tmp_path, sequences=1, frames=60, seed=0)
    assert meta.splits == {'train': ['seq_000'], 'val': ['seq_000'], 'test': ['seq_000']}
    (seq,) = list_sequences(tmp_path)
    assert len(seq.frames()) == 60
    m = read_mask(seq.mask_path(seq.frames()[30], 'type'))
    assert m.shape == (256, 320) and m.dtype == np.uint8


def test_cli_writes_layout_and_splits(tmp_path, capsys):
    out = tmp_path / 'synth'
    rc = dmnet_main(['synth', '--out', str(out), '--sequences', '4', '--frames', '3',
                     '--seed', '1', '--size', '64x96', '--val', '1', '--test', '2', '--fps', '10'])
    assert rc == 0
    meta = read_meta(out)
    assert meta.name == 'synth' and meta.fps == 10.0
    assert meta.splits == {'train': ['seq_000'], 'val': ['seq_001'],
                           'test': ['seq_002', 'seq_003']}
    assert meta.classes['type'] == TYPE_CLASSES['synth']
    assert meta.classes['type'][:4] == ['background', 'forceps', 'needle_driver', 'scissors']
    assert sorted(p.name for p in (out / 'seq_002' / 'masks').iterdir()) == \
        ['binary', 'parts', 'type']
    assert sorted(p.name for p in (out / 'seq_002' / 'images').iterdir()) == \
        ['000000.png', '000001.png', '000002.png']


def test_cli_bad_values_are_clear(tmp_path, capsys):
    with pytest.raises(SystemExit):
        dmnet_main(['synth', '--out', str(tmp_path), '--size', '64by96'])
    assert 'HxW' in capsys.readouterr().err
    rc = dmnet_main(['synth', '--out', str(tmp_path), '--sequences', '2', '--frames', '2',
                     '--size', '64x96', '--val', '1', '--test', '1'])
    assert rc == 2
    assert 'val=1 and test=1 of 2' in capsys.readouterr().err


def test_conditions_json_lists_every_frame_and_matches_the_render(tmp_path):
    generate_dataset(tmp_path, sequences=2, frames=30, seed=2, size=(96, 128), style='mixed')
    for seq in list_sequences(tmp_path):
        cond = read_conditions(seq.path)
        stems = [p.stem for p in seq.frames()]
        assert cond is not None and sorted(cond) == stems          # every frame listed
        assert all(set(t) <= set(CONDITIONS) for t in cond.values())
    # The tags are those of the rendered frames (same scene, same seed).
    rng = np.random.default_rng(np.random.SeedSequence([2, 0]))
    tags: list[list[str]] = []
    list(generate_sequence(rng, 30, (96, 128), tags=tags))
    assert [read_conditions(tmp_path / 'seq_000')[f'{i:06d}'] for i in range(30)] == tags
    assert read_conditions(tmp_path / 'missing') is None
    (tmp_path / 'bad').mkdir()
    (tmp_path / 'bad' / 'conditions.json').write_text('{"names": [], "frames": {"0": ["x"]}}')
    with pytest.raises(ValueError, match='bad/conditions.json'):
        read_conditions(tmp_path / 'bad')


def test_condition_tags_are_true_of_the_frames():
    counts = {c: 0 for c in CONDITIONS}
    for seed in range(4):
        scene = make_scene(np.random.default_rng(seed), 90, (64, 80))
        for i in range(90):
            _, masks, tags = render_frame_tagged(scene, i)
            for t in tags:
                counts[t] += 1
            if 'smoke_burst' in tags:
                assert scene.smoke[i] >= 0.5
            else:
                assert scene.smoke[i] < 0.5
            if 'instrument_entering' in tags or 'fast_move' in tags:
                assert masks['binary'].any()        # an instrument is in view
            if 'tip_occluded' in tags:
                assert any(s <= i < s + n for s, n, _ in scene.folds)
            if 'specular_flash' in tags:
                assert any(s <= i < s + n for s, n, *_ in scene.flashes)
    assert all(counts[c] > 0 for c in CONDITIONS), counts


def test_same_looks_leaves_only_shape_to_tell_types_apart():
    # Defaults keep the per-type colours and the same random draws (same geometry).
    for seed in range(6):
        base = make_scene(np.random.default_rng(seed), 10, (64, 96), style='robotic')
        same = make_scene(np.random.default_rng(seed), 10, (64, 96), style='robotic',
                          same_looks=True)
        assert [i.type_id for i in base.instruments] == [i.type_id for i in same.instruments]
        for a, b in zip(base.instruments, same.instruments):
            assert (a.look.jaw_len, a.look.jaw_w, a.look.jaw_bend) == \
                (b.look.jaw_len, b.look.jaw_w, b.look.jaw_bend)
    # With same_looks, wrist and jaw colours no longer depend on the type (shafts carry only a
    # per-instrument tint, drawn the same way for every type).
    wrists, jaws = set(), set()
    types = set()
    for seed in range(20):
        scene = make_scene(np.random.default_rng(seed), 4, (64, 96), style='robotic',
                           same_looks=True)
        for inst in scene.instruments:
            types.add(inst.type_id)
            wrists.add(inst.look.wrist)
            jaws.add(inst.look.jaw)
    assert types == set(ROBOTIC_TYPES)
    assert len(wrists) == 1
    spread = np.ptp(np.array(sorted(jaws)), axis=0)
    assert spread.max() <= 16                  # the +-8 tint only


def test_fold_every_sets_how_often_a_tip_is_hidden():
    def occluded(fold_every):
        n = 0
        for seed in range(4):
            tags: list[list[str]] = []
            list(generate_sequence(seed, 60, (64, 80), style='robotic', tags=tags,
                                   fold_every=fold_every))
            n += sum('tip_occluded' in t for t in tags)
        return n

    assert occluded(10.0) > 2 * occluded(70.0)
    with pytest.raises(ValueError, match='fold_every'):
        make_scene(np.random.default_rng(0), 4, (64, 96), fold_every=0)


def test_synth_cli_takes_the_type_cue_options(tmp_path):
    assert dmnet_main(['synth', '--out', str(tmp_path), '--sequences', '1', '--frames', '3',
                       '--size', '64x80', '--style', 'robotic', '--same-looks',
                       '--fold-every', '5']) == 0
    assert len(list((tmp_path / 'seq_000' / 'images').glob('*.png'))) == 3


def test_revision_3_changes_the_look_not_the_scene_or_masks():
    # Revision 3 draws from its own stream: same masks and tags as revision 2 for a seed, but
    # the metal mirrors the tissue (instrument pixels change) and pale fibres cross the tissue.
    metal_changed = background_changed = 0
    for seed in range(4):
        out = {}
        for g in (2, 3):
            tags: list[list[str]] = []
            out[g] = (list(generate_sequence(seed, 6, (96, 128), style='laparoscopic',
                                             tags=tags, generator=g)), tags)
        (f2, t2), (f3, t3) = out[2], out[3]
        assert t2 == t3
        for (rgb2, m2), (rgb3, m3) in zip(f2, f3):
            for k in m2:
                assert np.array_equal(m2[k], m3[k])
            diff = np.abs(rgb2.astype(int) - rgb3.astype(int)).sum(axis=-1) > 12
            metal_changed += int((diff & (m2['binary'] == 1)).sum())
            background_changed += int((diff & (m2['binary'] == 0)).sum())
    assert metal_changed > 100
    assert background_changed > 100


def test_revision_3_metal_takes_the_surroundings_hue():
    # A bare metal part (grey) in a red scene turns red-ish; dark insulation stays dark.
    scene = make_scene(np.random.default_rng(0), 4, (64, 80), style='robotic')
    scene = replace(scene, reflect=(1.0,) * len(scene.instruments), env_shift=(0, 0))
    col = np.full((64, 80, 3), 160, np.uint8)
    bg = np.zeros((64, 80, 3), np.float32)
    bg[...] = (200, 60, 50)
    refl = np.zeros((64, 80), np.float32)
    refl[:, :40] = 1.0
    out = scene_module._reflections(col, refl, scene_module._mirror(scene, bg, 0.25))
    r, g, b = out[10, 10]
    assert r > 160 > g and r > b
    assert np.allclose(out[10, 60], 160)              # no reflectivity: colour unchanged
    assert scene_module._metalness((28, 28, 32)) == 0.0
    assert scene_module._metalness((165, 166, 170)) > 0.9


def test_generator_revision_is_checked(tmp_path, capsys):
    with pytest.raises(ValueError, match='generator'):
        make_scene(np.random.default_rng(0), 4, (64, 96), generator=1)
    with pytest.raises(SystemExit):
        dmnet_main(['synth', '--out', str(tmp_path), '--generator', '7'])
    assert '--generator' in capsys.readouterr().err
    assert dmnet_main(['synth', '--out', str(tmp_path / 'g3'), '--sequences', '1', '--frames',
                       '2', '--size', '64x80', '--generator', '3']) == 0
    assert 'generator 3' in capsys.readouterr().out
    assert len(list((tmp_path / 'g3' / 'seq_000' / 'images').glob('*.png'))) == 2
