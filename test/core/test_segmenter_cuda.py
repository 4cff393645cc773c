"""Segmenter on CUDA: autocast precisions, device placement, bounded bank. Skipped without a GPU."""
import numpy as np
import pytest
import torch

from dmnet_core import load_segmenter
from dmnet_core.checkpoint import save_checkpoint
from dmnet_core.config import ModelConfig
from dmnet_core.model import build_model, init_batchnorm_stats

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    cfg = ModelConfig(input_size=[128, 160])
    cfg.global_memory.capacity = 5
    torch.manual_seed(0)
    model = build_model(cfg)
    init_batchnorm_stats(model, torch.randn(2, 3, 128, 160))
    return save_checkpoint(tmp_path_factory.mktemp('ckpt') / 'm.safetensors', model, cfg)


def frames(n, size=(120, 150)):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(n)]


@pytest.mark.parametrize('precision,expected', [('auto', 'fp16'), ('fp32', 'fp32'),
                                                ('bf16', 'bf16')])
def test_cuda_step_per_precision(checkpoint, precision, expected):
    seg = load_segmenter(checkpoint, device='cuda', precision=precision,
                         memory={'alpha': -1e9, 'beta': 1e9})
    assert seg.device.type == 'cuda' and seg.precision == expected
    for img in frames(12):
        labels, probs = seg.step(img, return_probs=True)
        assert labels.shape == (120, 150) and labels.dtype == np.uint8
        assert probs.dtype == np.float32 and np.isfinite(probs).all()
        assert seg.memory_size <= 5
    assert seg.memory_size == 5 and seg.last_inference_ms > 0
    assert all(e.key.device.type == 'cuda' for e in seg.bank.entries)


def test_fp16_agrees_with_fp32(checkpoint):
    ref = load_segmenter(checkpoint, device='cuda', precision='fp32')
    half = load_segmenter(checkpoint, device='cuda', precision='fp16')
    for img in frames(4):
        p32 = ref.step(img, return_probs=True)[1]
        p16 = half.step(img, return_probs=True)[1]
        assert np.abs(p32 - p16).max() < 0.05


def test_missing_cuda_index_is_a_clear_error(checkpoint):
    with pytest.raises(ValueError, match='CUDA device'):
        load_segmenter(checkpoint, device=f'cuda:{torch.cuda.device_count()}')
