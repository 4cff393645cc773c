"""Inference rewrites: batch norm folded into convolutions, separable max pooling."""
import pytest
import torch
from test_model import clip, tiny_config  # same tiny network as the model tests
from torch import nn

from dmnet_core.model import build_model, init_batchnorm_stats
from dmnet_core.model.decoder import SeparableMaxPool2d
from dmnet_core.model.fuse import fold_batchnorm
from dmnet_core.train.wrapper import forward_clip


@pytest.mark.parametrize('channels_last', [False, True])
def test_separable_pool_equals_square_max_pool(channels_last):
    # Negative values everywhere near the border: the padding must act as -inf, not 0.
    x = torch.randn(2, 7, 13, 17) - 3.0
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    assert torch.equal(SeparableMaxPool2d(5)(x), nn.MaxPool2d(5, stride=1, padding=2)(x))
    assert torch.equal(SeparableMaxPool2d(3)(x), nn.MaxPool2d(3, stride=1, padding=1)(x))
    with pytest.raises(ValueError, match='odd'):
        SeparableMaxPool2d(4)


@pytest.mark.parametrize('encoder', ['mobilenet_v2', 'resnet18', 'efficientnet_lite0'])
def test_folded_network_matches_and_leaves_the_original_alone(encoder):
    cfg = tiny_config()
    cfg.encoder.name = encoder
    torch.manual_seed(0)
    model = build_model(cfg)
    # Non-trivial statistics and affine parameters, so a wrong fold shows.
    init_batchnorm_stats(model, clip(b=2, t=1, seed=5)[:, 0])
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())

    folded, count = fold_batchnorm(model)

    assert count == n_bn > 0
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    x = clip(t=3, seed=1)
    with torch.no_grad():
        ref = forward_clip(model.eval(), x)
        out = forward_clip(folded, x)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
