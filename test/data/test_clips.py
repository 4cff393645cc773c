"""ClipDataset and SequenceFrames on small fabricated datasets in the dmnet layout."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from dmnet_core.config import AugmentConfig, DataConfig, from_dict
from dmnet_core.data.clips import Augment, ClipDataset, SequenceFrames
from dmnet_core.data.layout import DatasetMeta, list_sequences, write_frame, write_meta
from dmnet_core.data.synth import generate_dataset

H, W = 48, 64


def _make(root: Path, n_frames=(8, 6), same=False, seed=0) -> Path:
    """Sequences s0, s1 whose frames encode (sequence, frame) in the red channel (grey
    texture elsewhere) and whose binary mask is the bright square of the green channel.

    same=True: every frame of a sequence is identical (for consistency checks).
    """
    rng = np.random.default_rng(seed)
    names = []
    for k, n in enumerate(n_frames):
        name = f's{k}'
        names.append(name)
        texture = rng.integers(0, 255, (H, W))
        for i in range(n):
            rgb = np.zeros((H, W, 3), np.uint8)
            rgb[..., 0] = 0 if same else 100 * k + 10 * i
            rgb[..., 2] = texture
            rgb[10:30, 20:45, 1] = 255
            mask = (rgb[..., 1] > 0).astype(np.uint8)
            write_frame(root, name, f'{i:06d}', rgb, {'binary': mask})
    write_meta(root, DatasetMeta(name='synth', fps=25.0,
                                 classes={'binary': ['background', 'instrument']},
                                 splits={'train': names, 'val': names[1:]}))
    return root


def test_shapes_dtypes_len_and_collate(tmp_path):
    root = _make(tmp_path)
    ds = ClipDataset(root, 'train', 'binary', clip_len=3, n_global=2, crop=(64, 96))
    assert len(ds) == (8 - 3 + 1) + (6 - 3 + 1)
    s = ds[0]
    assert s['clip'].shape == (3, 3, 64, 96) and s['clip'].dtype == torch.uint8
    assert s['masks'].shape == (3, 64, 96) and s['masks'].dtype == torch.int64
    assert s['global_frames'].shape == (2, 3, 64, 96) and s['global_frames'].dtype == torch.uint8
    assert s['global_masks'].shape == (2, 64, 96) and s['global_masks'].dtype == torch.int64
    assert s['sequence'] == 's0' and s['start'] == 0
    assert set(torch.unique(s['masks']).tolist()) == {0, 1}
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert batch['clip'].shape == (2, 3, 3, 64, 96)
    none = ClipDataset(root, 'val', 'binary', clip_len=2, n_global=0, crop=(32, 32))[0]
    assert none['global_frames'].shape == (0, 3, 32, 32)
    assert none['global_masks'].shape == (0, 32, 32)


def test_global_frames_come_from_the_whole_sequence(tmp_path):
    root = _make(tmp_path)
    ds = ClipDataset(root, 'train', 'binary', clip_len=3, n_global=3, crop=(H, W),
                     augment=False, seed=5)
    future = False
    for idx in range(len(ds)):
        s = ds[idx]
        k = int(s['sequence'][1:])
        red = s['clip'][:, 0].flatten(1)
        # Plain resize at the source size: the red channel still names sequence and frame.
        assert red.min(1).values.tolist() == red.max(1).values.tolist()
        assert red[:, 0].tolist() == [100 * k + 10 * (s['start'] + t) for t in range(3)]
        g = s['global_frames'][:, 0].flatten(1)[:, 0].tolist()
        gi = s['global_index'].tolist()
        assert g == [100 * k + 10 * j for j in gi]           # same sequence, stated frames
        assert not set(gi) & set(range(s['start'], s['start'] + 3))   # outside the clip
        future |= max(gi) >= s['start'] + 3
    assert future                                            # future frames are drawn too


def test_augmentation_is_shared_by_clip_and_global_frames(tmp_path):
    root = _make(tmp_path, same=True)
    ds = ClipDataset(root, 'train', 'binary', clip_len=4, n_global=2, crop=(40, 56),
                     augment=True, seed=1)
    plain = ClipDataset(root, 'train', 'binary', clip_len=4, n_global=2, crop=(40, 56),
                        augment=False)
    differs = 0
    for idx in range(0, len(ds), 2):
        s = ds[idx]
        frames = torch.cat([s['clip'], s['global_frames']])
        masks = torch.cat([s['masks'], s['global_masks']])
        # Identical source frames stay identical after one sample's augmentation.
        assert all(torch.equal(frames[0], f) for f in frames[1:])
        assert all(torch.equal(masks[0], m) for m in masks[1:])
        # The mask still covers the bright square (geometry applied to both alike).
        bright = frames[0, 1] > 128
        agree = (bright == (masks[0] == 1)).float().mean().item()
        assert agree > 0.97, agree
        differs += int(not torch.equal(s['clip'], plain[idx]['clip']))
    assert differs >= 3


FULL = AugmentConfig(gamma=0.5, blur_p=1.0, noise_p=1.0, jpeg_p=1.0, hue=8.0, saturation=0.4,
                     brightness=30.0, contrast=0.4)


def test_photometric_augmentation_is_one_draw_per_clip(tmp_path):
    # Gamma, blur and JPEG are the same for every frame of a sample; only the sensor noise
    # pattern is drawn per frame, with one sigma for the whole sample.
    root = _make(tmp_path, same=True)
    no_noise = AugmentConfig(**{**FULL.__dict__, 'noise_p': 0.0})
    ds = ClipDataset(root, 'train', 'binary', clip_len=4, n_global=2, crop=(40, 56), seed=2,
                     aug=no_noise)
    noisy = ClipDataset(root, 'train', 'binary', clip_len=4, n_global=2, crop=(40, 56), seed=2,
                        aug=FULL)
    plain = ClipDataset(root, 'train', 'binary', clip_len=4, n_global=2, crop=(40, 56),
                        seed=2)
    for idx in range(0, len(ds), 3):
        s = ds[idx]
        frames = torch.cat([s['clip'], s['global_frames']])
        assert all(torch.equal(frames[0], f) for f in frames[1:])
        assert not torch.equal(frames[0], plain[idx]['clip'][0])   # gamma/blur/JPEG applied
        n = noisy[idx]
        nf = torch.cat([n['clip'], n['global_frames']]).float()
        diffs = [(nf[k] - nf[0]).std().item() for k in range(1, len(nf))]
        assert min(diffs) > 0.5                      # noise differs between frames ...
        assert max(diffs) < 1.6 * min(diffs) + 1.0   # ... with the same strength
        assert torch.equal(n['masks'], s['masks'])   # photometry never touches labels


def test_augment_draw_keeps_the_old_draws_and_config_validates():
    src = (48, 64)
    old = Augment.draw(np.random.default_rng(5), src)
    new = Augment.draw(np.random.default_rng(5), src, cfg=FULL)
    for k in ('y0', 'x0', 'h', 'w', 'flip'):
        assert getattr(old, k) == getattr(new, k)
    assert new.gamma != 1.0 and new.blur_sigma > 0 and new.noise_sigma > 0
    assert 30 <= new.jpeg_quality <= 90
    cfg = from_dict(DataConfig, {'augmentation': {'gamma': 0.2, 'jpeg_p': 0.5}})
    assert cfg.augmentation.gamma == 0.2 and cfg.augmentation.blur_p == 0.0
    with pytest.raises(ValueError, match='augmentation.jpeg_quality'):
        AugmentConfig(jpeg_quality=[0, 200]).validate()
    with pytest.raises(ValueError, match='augmentation.blur_p'):
        AugmentConfig(blur_p=1.5).validate()
    with pytest.raises(ValueError, match='unknown key'):
        from_dict(DataConfig, {'augmentation': {'gama': 0.2}})


def test_deterministic_for_seed_and_index(tmp_path):
    root = _make(tmp_path)
    a = ClipDataset(root, 'train', 'binary', clip_len=2, n_global=2, crop=(32, 48), seed=3)
    b = ClipDataset(root, 'train', 'binary', clip_len=2, n_global=2, crop=(32, 48), seed=3)
    c = ClipDataset(root, 'train', 'binary', clip_len=2, n_global=2, crop=(32, 48), seed=4)
    for idx in (0, 4, 9):
        sa, sb = a[idx], b[idx]
        for key in ('clip', 'masks', 'global_frames', 'global_masks', 'global_index'):
            assert torch.equal(sa[key], sb[key])
        assert torch.equal(a[idx]['clip'], sa['clip'])          # repeatable
    assert any(not torch.equal(a[i]['clip'], c[i]['clip']) for i in range(len(a)))


def test_large_frames_are_resized_with_scale_augmentation(tmp_path):
    root = generate_dataset(tmp_path, sequences=1, frames=4, seed=0, size=(128, 160))
    assert root.splits['train'] == ['seq_000']
    ds = ClipDataset(tmp_path, 'train', 'parts', clip_len=2, n_global=1, crop=(64, 80))
    s = ds[1]
    assert s['clip'].shape == (2, 3, 64, 80)
    assert int(s['masks'].max()) <= 3
    plain = ClipDataset(tmp_path, 'train', 'parts', clip_len=2, n_global=1, crop=(64, 80),
                        augment=False)
    assert plain[0]['clip'].shape == (2, 3, 64, 80)


def test_errors_name_the_file(tmp_path):
    root = _make(tmp_path)
    (root / 's1' / 'masks' / 'binary' / '000003.png').unlink()
    with pytest.raises(FileNotFoundError, match=r's1/masks/binary/000003\.png'):
        ClipDataset(root, 'train', 'binary')
    with pytest.raises(ValueError, match='no .parts. task'):
        ClipDataset(root, 'train', 'parts')
    ds = ClipDataset(root, None, 'binary', clip_len=2, n_global=0, augment=False,
                     sequences=['s0'])
    bad = root / 's0' / 'images' / '000001.png'
    bad.write_bytes(b'not a png')
    with pytest.raises(ValueError, match=r'cannot decode image: .*s0/images/000001\.png'):
        ds[0]
    with pytest.raises(KeyError, match='no split'):
        ClipDataset(root, 'test', 'binary')


def test_sequence_frames_in_order(tmp_path):
    root = _make(tmp_path)
    seq = list_sequences(root, 'val')[0]
    items = list(SequenceFrames(seq, 'binary'))
    assert [st for st, _, _ in items] == [f'{i:06d}' for i in range(6)]
    assert [int(rgb[0, 0, 0]) for _, rgb, _ in items] == [100 + 10 * i for i in range(6)]
    assert all(m is not None and m.shape == (H, W) for _, _, m in items)
    assert all(m is None for _, _, m in SequenceFrames(root / 's1', 'parts'))
    (root / 's1' / 'masks' / 'binary' / '000002.png').unlink()
    with pytest.raises(FileNotFoundError, match=r's1/masks/binary/000002\.png'):
        list(SequenceFrames(root / 's1', 'binary'))


def test_weight_masks_warp_with_the_task_masks(tmp_path):
    # The parts masks come back warped exactly as the type masks: on generated frames an
    # instrument pixel of one is an instrument pixel of the other, after zoom, flip and shift.
    generate_dataset(tmp_path, 2, 6, seed=3, size=(64, 96))
    ds = ClipDataset(tmp_path, 'train', 'type', clip_len=3, n_global=2, crop=(64, 96),
                     augment=True, seed=2, weight_task='parts')
    plain = ClipDataset(tmp_path, 'train', 'type', clip_len=3, n_global=2, crop=(64, 96),
                        augment=True, seed=2)
    for idx in range(len(ds)):
        s = ds[idx]
        assert s['weight_masks'].shape == s['masks'].shape == (3, 64, 96)
        assert s['weight_masks'].dtype == torch.int64
        assert torch.equal(s['weight_masks'] > 0, s['masks'] > 0)
        assert int(s['weight_masks'].max()) <= 3                  # parts ids, not type ids
        # Asking for them changes nothing else in the sample.
        ref = plain[idx]
        assert 'weight_masks' not in ref
        for key in ('clip', 'masks', 'global_frames', 'global_masks'):
            assert torch.equal(s[key], ref[key]), key
    # A parts mask with an id past the data set's parts classes is named, not indexed past.
    bad = sorted((tmp_path / 'seq_000' / 'masks' / 'parts').iterdir())[1]
    cv2.imwrite(str(bad), np.full((64, 96), 7, np.uint8))
    with pytest.raises(ValueError, match=f'mask value 7 >= 4 classes of task parts: {bad}'):
        for idx in range(len(ds)):
            ds[idx]
    gone = tmp_path / 'seq_000' / 'masks' / 'parts'
    for f in gone.iterdir():
        f.unlink()
    gone.rmdir()
    with pytest.raises(FileNotFoundError, match='no parts masks for sequence seq_000'):
        ClipDataset(tmp_path, 'train', 'type', weight_task='parts')
