"""Segmenter: the stateful, causal inference object and `load_segmenter`."""
import logging

import numpy as np
import pytest
import tiny_models
import torch

from dmnet_core import Segmenter, load_segmenter
from dmnet_core.checkpoint import DEFAULT_CHECKPOINT, save_checkpoint
from dmnet_core.config import ModelConfig
from dmnet_core.model import build_model, init_batchnorm_stats, normalize
from dmnet_core.segmenter import cpu_has_bf16, resize_frame, resolve_device, resolve_precision
from dmnet_core.train.wrapper import forward_clip

H, W = 64, 64


def tiny_config(**memory) -> ModelConfig:
    """The shared tiny DMNet at H x W; `memory` set global-memory fields."""
    return tiny_models.tiny_config(H, W, memory)


def tiny_model(cfg: ModelConfig, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(cfg)
    init_batchnorm_stats(model, torch.randn(2, 3, H, W))
    return model


def tiny_segmenter(cfg: ModelConfig | None = None, seed: int = 0) -> Segmenter:
    cfg = cfg or tiny_config()
    return Segmenter(tiny_model(cfg, seed), cfg, 'cpu', 'fp32')


def frames(n: int, seed: int = 0, size=(H, W)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(n)]


# Admit every frame under the active policy (tests of the bank, not of the thresholds).
ADMIT_ALL = {'alpha': -1e9, 'beta': 1e9}


def test_step_any_size_returns_labels_and_probs():
    seg = tiny_segmenter()
    (img,) = frames(1, size=(50, 70))
    labels = seg.step(img)
    assert labels.shape == (50, 70) and labels.dtype == np.uint8
    labels, probs = seg.step(img, return_probs=True)
    assert probs.shape == (2, 50, 70) and probs.dtype == np.float32
    assert np.allclose(probs.sum(0), 1, atol=1e-5)
    assert np.array_equal(labels, probs.argmax(0))
    assert seg.frames_seen == 2 and seg.last_inference_ms > 0
    assert seg.class_names == ['background', 'instrument'] and seg.task == 'binary'
    assert seg.inference_size == (H, W) and seg.device == torch.device('cpu')
    assert seg.precision == 'fp32' and seg.config.num_classes == 2


@pytest.mark.parametrize('bad,match', [
    (np.zeros((8, 8, 3), np.float32), 'uint8'),
    (np.zeros((8, 8), np.uint8), 'H x W x 3'),
    (np.zeros((8, 8, 4), np.uint8), 'H x W x 3'),
    ([[0]], 'numpy array'),
])
def test_step_rejects_bad_input_loudly(bad, match):
    seg = tiny_segmenter()
    with pytest.raises(ValueError, match=match):
        seg.step(bad)
    assert seg.frames_seen == 0


def test_causal_frame_t_ignores_frame_t_plus_1():
    a = frames(5)
    b = [f.copy() for f in a]
    b[3] = frames(1, seed=7)[0]
    seg_a = tiny_segmenter(tiny_config(**ADMIT_ALL))
    seg_b = tiny_segmenter(tiny_config(**ADMIT_ALL))
    out_a = [seg_a.step(f, return_probs=True)[1] for f in a]
    out_b = [seg_b.step(f, return_probs=True)[1] for f in b]
    for t in range(3):
        assert np.array_equal(out_a[t], out_b[t])
    assert not np.allclose(out_a[3], out_b[3])
    assert not np.allclose(out_a[4], out_b[4])      # the changed frame is remembered


@pytest.mark.parametrize('sampling', ['spread', 'random'])
def test_reset_equals_a_fresh_segmenter(sampling):
    cfg = tiny_config(read_sampling=sampling, n_read=2, **ADMIT_ALL)
    seg = tiny_segmenter(cfg)
    for f in frames(6, seed=1):
        seg.step(f)
    assert seg.memory_size > 0
    seg.reset()
    assert seg.memory_size == 0 and seg.frames_seen == 0
    fresh = tiny_segmenter(cfg)
    for f in frames(6, seed=2):
        assert np.array_equal(seg.step(f, return_probs=True)[1],
                              fresh.step(f, return_probs=True)[1])


def test_bank_is_bounded_over_500_frames_and_caches_keys():
    seg = tiny_segmenter(tiny_config(capacity=6, **ADMIT_ALL))
    calls = []
    original = seg.model.global_key_value

    def counting(f32):
        calls.append(1)
        return original(f32)

    seg.model.global_key_value = counting
    img = frames(4)
    for t in range(500):
        seg.step(img[t % 4][:32, :32])        # tiny frames; the model sees its 64x64 size
        assert seg.memory_size <= 6
    assert seg.memory_size == 6 and seg.frames_seen == 500
    # Each admitted frame's key/value is computed exactly once, never recomputed for reads.
    assert len(calls) == 500


@pytest.mark.parametrize('policy', ['recent', 'uniform'])
def test_simple_policies_stay_bounded(policy):
    seg = tiny_segmenter(tiny_config(policy=policy, capacity=4, uniform_stride=2))
    for f in frames(3) * 10:
        seg.step(f[:32, :32])
        assert seg.memory_size <= 4
    assert seg.memory_size == 4
    if policy == 'recent':
        assert seg.memory_frames == [26, 27, 28, 29]


@pytest.mark.parametrize('output_stride', [4, 2])
def test_frame_by_frame_equals_the_whole_clip(output_stride):
    """With an empty bank (alpha too high to admit), stepping equals forward_clip on the clip."""
    cfg = tiny_config(alpha=1e9)
    cfg.decoder.output_stride = output_stride
    model = tiny_model(cfg)
    if output_stride == 2:                      # a fine stage that changes the output
        torch.nn.init.normal_(model.decoder.fine.head.weight, std=0.3)
    seg = Segmenter(model, cfg, 'cpu', 'fp32')
    # The Segmenter runs a copy with batch norm folded in; the trained network is unchanged.
    assert seg.folded_batchnorms > 0 and seg.model is not model
    imgs = frames(5, seed=3)
    probs = np.stack([seg.step(f, return_probs=True)[1] for f in imgs])
    assert seg.memory_size == 0
    clip = normalize(np.stack(imgs), cfg).unsqueeze(0)          # 1 x T x 3 x H x W
    with torch.no_grad():
        ref = torch.softmax(forward_clip(model.eval(), clip), dim=2)[0].numpy()
    assert np.allclose(probs, ref, atol=1e-4)


def test_frame_by_frame_equals_clip_with_global_frames():
    """forward_clip's batched global read equals the stage methods applied one frame at a time."""
    cfg = tiny_config()
    seg = tiny_segmenter(cfg)
    model = seg.model
    clip = normalize(np.stack(frames(3, seed=4)), cfg).unsqueeze(0)
    glob = normalize(np.stack(frames(2, seed=5)), cfg).unsqueeze(0)
    with torch.no_grad():
        ref = forward_clip(model, clip, glob)
        kvs = [model.global_key_value(model.encode(glob[:, g])[1]) for g in range(2)]
        mem_k = torch.stack([k for k, _ in kvs], 1)
        mem_v = torch.stack([v for _, v in kvs], 1)
        state = None
        for t in range(3):
            skips, f32 = model.encode(clip[:, t])
            logits, state = model.step(skips, f32, state, mem_k, mem_v)
            logits = torch.nn.functional.interpolate(logits, size=(H, W), mode='bilinear')
            assert torch.allclose(logits, ref[:, t], atol=1e-4)


def test_fault_hook_leaves_segmenter_usable():
    seg = tiny_segmenter(tiny_config(**ADMIT_ALL))
    imgs = frames(4)

    def hook(i):
        if i == 2:
            raise RuntimeError('injected fault')

    seg.fault_hook = hook
    seg.step(imgs[0])
    seg.step(imgs[1])
    with pytest.raises(RuntimeError, match='injected'):
        seg.step(imgs[2])
    assert seg.frames_seen == 2
    seg.fault_hook = None
    seg.reset()
    fresh = tiny_segmenter(tiny_config(**ADMIT_ALL))
    for f in imgs:
        assert np.array_equal(seg.step(f, return_probs=True)[1],
                              fresh.step(f, return_probs=True)[1])


def test_load_segmenter_default_and_missing(caplog):
    with caplog.at_level(logging.WARNING):
        seg = load_segmenter(device='cpu', inference_size=(64, 96))
    if not DEFAULT_CHECKPOINT.is_file():
        assert 'randomly initialised' in caplog.text
    assert seg.inference_size == (64, 96)
    assert seg.precision == ('bf16' if cpu_has_bf16() else 'fp32')     # 'auto' on a CPU
    assert seg.step(frames(1, size=(40, 50))[0]).shape == (40, 50)
    with pytest.raises(FileNotFoundError, match='nowhere.safetensors'):
        load_segmenter('nowhere.safetensors', device='cpu')


def test_load_segmenter_options(tmp_path, caplog):
    cfg = tiny_config()
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / 'tiny.safetensors', build_model(cfg), cfg)
    seg = load_segmenter(path, device='cpu', memory={'capacity': 3, 'policy': 'recent'})
    assert seg.config.global_memory.capacity == 3
    for f in frames(5):
        seg.step(f)
    assert seg.memory_size == 3
    with caplog.at_level(logging.WARNING):
        assert load_segmenter(path, device='cpu', precision='fp16').precision == 'fp32'
    assert 'fp16' in caplog.text
    with pytest.raises(ValueError, match='capacityy'):
        load_segmenter(path, device='cpu', memory={'capacityy': 3})
    with pytest.raises(ValueError, match='key_channels'):
        load_segmenter(path, device='cpu', memory={'key_channels': 3})
    with pytest.raises(ValueError, match='multiples of 32'):
        load_segmenter(path, device='cpu', inference_size=(60, 64))
    with pytest.raises(ValueError, match='precision'):
        load_segmenter(path, device='cpu', precision='fp8')
    with pytest.raises(ValueError, match='device'):
        load_segmenter(path, device='tpu')


@pytest.mark.parametrize('task', ['binary', 'parts', 'type'])
def test_every_task_has_a_shipped_model_that_runs(task):
    # The package ships one model per task; each must load as that task and segment a frame.
    from dmnet_core.checkpoint import SHIPPED_CHECKPOINTS
    assert SHIPPED_CHECKPOINTS[task].is_file(), f'{SHIPPED_CHECKPOINTS[task]} is not shipped'
    seg = load_segmenter(device='cpu', task=task)
    assert seg.task == task and seg.class_names[0] == 'background'
    probs = seg.step(frames(1, size=(48, 60))[0], return_probs=True)[1]
    assert probs.shape[0] == len(seg.class_names) == seg.config.num_classes


def test_load_segmenter_task_picks_the_shipped_model(tmp_path, monkeypatch):
    import dmnet_core.checkpoint as ckpt
    cfg = tiny_config()
    cfg.task, cfg.class_names = 'parts', ['background', 'shaft', 'wrist', 'clasper']
    torch.manual_seed(0)
    parts = save_checkpoint(tmp_path / 'parts.safetensors', build_model(cfg), cfg)
    monkeypatch.setitem(ckpt.SHIPPED_CHECKPOINTS, 'parts', parts)
    monkeypatch.setitem(ckpt.SHIPPED_CHECKPOINTS, 'type', tmp_path / 'absent.safetensors')
    seg = load_segmenter(device='cpu', task='parts')
    assert seg.task == 'parts' and seg.class_names[1] == 'shaft'
    assert load_segmenter(parts, device='cpu', task='parts').task == 'parts'
    with pytest.raises(ValueError, match="task 'binary' asked for.*'parts'"):
        load_segmenter(parts, device='cpu', task='binary')
    with pytest.raises(FileNotFoundError, match="no model shipped for task 'type'.*absent"):
        load_segmenter(device='cpu', task='type')
    with pytest.raises(ValueError, match="unknown task 'tools'"):
        load_segmenter(device='cpu', task='tools')


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the error on a machine without CUDA')
def test_unavailable_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match='CUDA is not available'):
        resolve_device('cuda:0')
    assert resolve_device('auto') == torch.device('cpu')


def test_memories_switched_off_at_load_equal_the_backbone(tmp_path):
    cfg = tiny_config()
    full = tiny_model(cfg)       # the trained network (a Segmenter runs a folded copy of it)
    path = save_checkpoint(tmp_path / 'full.safetensors', full, cfg)
    seg = load_segmenter(path, device='cpu', precision='fp32',
                         memory={'local_enabled': False, 'global_enabled': False})
    assert not seg.model.use_local and not seg.model.use_global
    off = tiny_config()
    off.local_memory.enabled = off.global_memory.enabled = False
    backbone = build_model(off)
    backbone.load_state_dict({k: v for k, v in full.state_dict().items()
                              if k.startswith(('encoder.', 'decoder.'))})
    seg_backbone = Segmenter(backbone, off, 'cpu', 'fp32')
    for f in frames(3):
        assert np.array_equal(seg.step(f, return_probs=True)[1],
                              seg_backbone.step(f, return_probs=True)[1])
    assert seg.memory_size == 0
    off_path = save_checkpoint(tmp_path / 'backbone.safetensors', backbone, off)
    with pytest.raises(ValueError, match='no local memory'):
        load_segmenter(off_path, device='cpu', memory={'local_enabled': True})


def test_compiled_network_matches_eager_and_starts_clean():
    seg = tiny_segmenter()
    eager = tiny_segmenter()
    assert seg.compile_network() is True, seg.compile_error
    assert seg.compiled and seg.compile_error is None
    # The warm-up frame left nothing behind.
    assert seg.frames_seen == 0 and seg.memory_size == 0 and seg.local_state is None
    for f in frames(4, seed=7):
        got = seg.step(f, return_probs=True)[1]
        ref = eager.step(f, return_probs=True)[1]
        assert np.allclose(got, ref, atol=1e-4)


def test_failed_compile_falls_back_to_eager(monkeypatch):
    seg = tiny_segmenter()
    ref = tiny_segmenter()
    encoder = seg.model.encoder

    class Broken(torch.nn.Module):   # torch.compile fails on the first call, not before
        def forward(self, *_a, **_k):
            raise RuntimeError('InductorError: no working C++ compiler found\nmore detail')

    def broken_compile(module, **_kw):
        return Broken()

    monkeypatch.setattr(torch, 'compile', broken_compile)
    assert seg.compile_network() is False
    assert not seg.compiled and seg.model.encoder is encoder
    assert seg.compile_error == 'RuntimeError: InductorError: no working C++ compiler found'
    assert seg.frames_seen == 0
    f = frames(1, seed=2)[0]
    assert np.array_equal(seg.step(f, return_probs=True)[1], ref.step(f, return_probs=True)[1])

# -- the input and output paths at any frame size ----------------------------------------

def _reference_labels(logits: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """The torch path: bilinear upsample of every logit, argmax at the full size."""
    up = torch.nn.functional.interpolate(logits, size=size, mode='bilinear', align_corners=False)
    return up.argmax(1)[0].to(torch.uint8).numpy()


@pytest.mark.parametrize('classes', [2, 5])
def test_host_labels_equal_the_argmax_of_upsampled_logits(classes):
    """cv2's resize of the logit(s) samples where torch's bilinear does: the same argmax,
    except where two classes tie to float rounding."""
    seg = tiny_segmenter()
    logits = torch.randn(1, classes, 16, 20, generator=torch.Generator().manual_seed(classes))
    for size in ((64, 80), (480, 854), (1080, 1920), (7, 9)):
        got = seg._labels_on_host(logits, *size)
        ref = _reference_labels(logits, size)
        assert got.shape == size and got.dtype == np.uint8
        up = torch.nn.functional.interpolate(logits, size=size, mode='bilinear',
                                             align_corners=False)[0]
        top2 = up.topk(2, dim=0).values
        near_tie = (top2[0] - top2[1]).abs().numpy() < 1e-4
        assert np.array_equal(got[~near_tie], ref[~near_tie]), size
        assert set(np.unique(got)) <= set(range(classes))


def test_labels_match_the_probs_path_at_camera_sizes():
    """step() (cv2 post-processing) and step(return_probs=True) (torch) agree per pixel."""
    seg = tiny_segmenter()
    for size in ((480, 640), (1024, 1280), (1080, 1920)):
        (img,) = frames(1, seed=size[0], size=size)
        seg.reset()
        fast = seg.step(img)
        seg.reset()
        labels, probs = seg.step(img, return_probs=True)
        assert fast.shape == size and fast.dtype == np.uint8
        assert (fast != labels).mean() < 1e-4, size
        assert set(seg.last_timings) == {'prepare_ms', 'model_ms', 'post_ms'}


def test_bgr_and_strided_views_equal_a_contiguous_rgb_frame():
    """A BGR frame swapped after the resize and a padded-row view give the same labels."""
    ref, bgr, view = tiny_segmenter(), tiny_segmenter(), tiny_segmenter()
    for img in frames(3, seed=3, size=(120, 150)):
        padded = np.zeros((120, 150 * 3 + 8), dtype=np.uint8)       # step padding, as a message
        padded[:, :450] = img[:, :, ::-1].reshape(120, 450)
        strided = padded[:, :450].reshape(120, 150, 3)
        assert not strided.flags['C_CONTIGUOUS']
        want = ref.step(img)
        assert np.array_equal(bgr.step(np.ascontiguousarray(img[:, :, ::-1]), bgr=True), want)
        assert np.array_equal(view.step(strided, bgr=True), want)


def test_device_io_path_agrees_with_the_host_path_on_the_cpu():
    """The CUDA input/output path (resize, normalise, upsample, argmax in torch), run on the
    CPU: at a whole shrink ratio torch's area mode is cv2's INTER_AREA up to uint8 rounding."""
    host, dev = tiny_segmenter(), tiny_segmenter()
    dev.io_on_device = True
    for img in frames(3, seed=5, size=(256, 192)):                 # 4x and 3x
        a = host.step(img)
        b = dev.step(np.ascontiguousarray(img[:, :, ::-1]), bgr=True)
        assert b.shape == a.shape and b.dtype == np.uint8
        assert (a != b).mean() < 0.005
        xa, xb = host._prepare(img), dev._prepare(img)
        assert float((xa - xb).abs().max()) < 0.02           # half a grey level, normalised
    dev.reset()
    for size in ((240, 300), (32, 40)):                        # uneven shrink; enlarged
        (img,) = frames(1, seed=6, size=size)
        assert dev.step(img).shape == size


def test_warm_up_leaves_a_fresh_segmenter():
    seg, fresh = tiny_segmenter(), tiny_segmenter()
    assert seg.warm_up() > 0
    assert seg.frames_seen == 0 and seg.memory_size == 0 and seg.local_state is None
    for img in frames(3, seed=9):
        assert np.array_equal(seg.step(img, return_probs=True)[1],
                              fresh.step(img, return_probs=True)[1])


def test_auto_precision_is_bf16_on_a_cpu_only_where_native(monkeypatch):
    from dmnet_core import segmenter as segmod
    cpu = torch.device('cpu')
    monkeypatch.setattr(segmod, 'cpu_has_bf16', lambda: True)
    assert resolve_precision('auto', cpu) == 'bf16'
    assert resolve_precision('fp32', cpu) == 'fp32'
    monkeypatch.setattr(segmod, 'cpu_has_bf16', lambda: False)
    assert resolve_precision('auto', cpu) == 'fp32'
    assert resolve_precision('auto', torch.device('cuda')) == 'fp16'


def test_bf16_on_the_cpu_where_native(monkeypatch):
    """bf16 runs on a CPU with native bf16 (autocast), else falls back to fp32 with a warning."""
    from dmnet_core import segmenter as segmod
    cfg = tiny_config()
    model = tiny_model(cfg)
    monkeypatch.setattr(segmod, 'cpu_has_bf16', lambda: False)
    assert Segmenter(model, cfg, 'cpu', 'bf16').precision == 'fp32'
    monkeypatch.setattr(segmod, 'cpu_has_bf16', lambda: True)
    seg, ref = Segmenter(model, cfg, 'cpu', 'bf16'), Segmenter(model, cfg, 'cpu', 'fp32')
    assert seg.precision == 'bf16'
    for img in frames(3, seed=11, size=(96, 120)):
        labels, probs = seg.step(img, return_probs=True)
        ref_labels, ref_probs = ref.step(img, return_probs=True)
        assert np.isfinite(probs).all() and np.abs(probs - ref_probs).max() < 0.1
        assert (labels != ref_labels).mean() < 0.05


def test_resize_frame_is_an_area_average_and_bilinear_when_growing():
    import cv2
    # A smooth 1920x1080 frame: whole-number pre-shrink then the rest agree with one area resize.
    yy, xx = np.mgrid[0:1080, 0:1920]
    smooth = np.stack([(xx / 1920 * 255), (yy / 1080 * 255), ((xx + yy) % 512) / 2],
                      -1).astype(np.uint8)
    area = cv2.resize(smooth, (320, 256), interpolation=cv2.INTER_AREA).astype(int)
    out = resize_frame(smooth, (256, 320))
    assert out.shape == (256, 320, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - area).mean() < 1.0
    # Sizes without a whole-number pre-shrink (640x480 -> 256x320) are one area resize.
    (img,) = frames(1, size=(480, 640))
    assert np.array_equal(resize_frame(img, (256, 320)),
                          cv2.resize(img, (320, 256), interpolation=cv2.INTER_AREA))
    # Growing (or growing on one side) is bilinear.
    small = img[:100, :200]
    assert np.array_equal(resize_frame(small, (256, 320)),
                          cv2.resize(small, (320, 256), interpolation=cv2.INTER_LINEAR))
