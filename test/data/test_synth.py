"""The synthetic generator: determinism, masks that match the drawn pixels, speed, CLI."""
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from dmnet_core.cli import main as dmnet_main
from dmnet_core.data.layout import list_sequences, read_mask, read_meta
from dmnet_core.data.synth import (
    FLAT_BACKGROUND,
    generate_dataset,
    generate_sequence,
    make_scene,
)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*'))
            if p.is_file()}


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    kw = dict(sequences=2, frames=5, size=(64, 96))
    generate_dataset(tmp_path / 'a', seed=3, **kw)
    generate_dataset(tmp_path / 'b', seed=3, **kw)
    generate_dataset(tmp_path / 'c', seed=4, **kw)
    a, b, c = (_files(tmp_path / n) for n in 'abc')
    assert len(a) == 1 + 2 * 5 * 4          # meta + (image + 3 masks) per frame
    assert a == b
    assert a.keys() == c.keys()
    assert any(a[k] != c[k] for k in a if k.endswith('.png') and '/images/' in k)


def test_masks_are_exactly_the_drawn_instruments():
    # On a flat background without effects, every non-background pixel is instrument.
    seen = 0
    for seed in range(4):
        for rgb, masks in generate_sequence(seed, 12, (96, 128), effects=False):
            drawn = np.any(rgb != np.array(FLAT_BACKGROUND, np.uint8), axis=-1)
            assert np.array_equal(drawn, masks['binary'] == 1)
            assert np.array_equal(masks['parts'] > 0, drawn)
            assert np.array_equal(masks['type'] > 0, drawn)
            assert set(np.unique(masks['parts'])) <= {0, 1, 2, 3}
            assert set(np.unique(masks['type'])) <= {0, 1, 2, 3}
            seen += int(drawn.any())
    assert seen > 20                      # instruments were actually on screen


def test_effects_keep_masks_consistent_and_instruments_distinct():
    sat_in, sat_out, parts_seen = [], [], set()
    for rgb, masks in generate_sequence(7, 30, (128, 160)):
        b = masks['binary'] == 1
        assert np.array_equal(b, masks['parts'] > 0)
        assert np.array_equal(b, masks['type'] > 0)
        parts_seen |= set(np.unique(masks['parts']).tolist())
        if b.sum() > 200:
            sat = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1].astype(float)
            sat_in.append(sat[b].mean())
            sat_out.append(sat[~b].mean())
    assert parts_seen == {0, 1, 2, 3}
    # Metallic grey instruments against red tissue: far less saturated.
    assert np.mean(sat_in) < 0.6 * np.mean(sat_out)


def test_hard_cases_occur():
    rng_scenes = [make_scene(np.random.default_rng(s), 150, (64, 96)) for s in range(12)]
    assert any(sc.smoke.max() > 0.9 for sc in rng_scenes)           # dense smoke bursts
    assert any(0.2 < sc.smoke.max() < 0.9 for sc in rng_scenes)     # lighter smoke
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


def test_sixty_frames_take_a_few_seconds(tmp_path):
    t0 = time.perf_counter()
    meta = generate_dataset(tmp_path, sequences=1, frames=60, seed=0)
    elapsed = time.perf_counter() - t0
    assert elapsed < 10.0, f'60 frames at 256x320 took {elapsed:.1f} s'
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
    assert meta.classes['type'] == ['background', 'forceps', 'needle_driver', 'scissors']
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
