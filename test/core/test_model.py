"""DMNet network: shapes per task and backbone, clip gradients, memories-off == backbone."""
import numpy as np
import pytest
import tiny_models
import torch
import torch.nn.functional as F
import torchvision

from dmnet_core.config import ModelConfig, default_class_names
from dmnet_core.model import DMNet, build_model, init_batchnorm_stats, normalize
from dmnet_core.train.wrapper import forward_clip

H, W = 64, 96


def tiny_config(**kw) -> ModelConfig:
    """The shared tiny DMNet at H x W; `kw` set top-level config fields."""
    return tiny_models.tiny_config(H, W, **kw)


def tiny_model(cfg: ModelConfig | None = None, seed: int = 0) -> DMNet:
    """A seeded tiny model whose batch-norm statistics give non-degenerate features."""
    torch.manual_seed(seed)
    model = build_model(cfg or tiny_config())
    init_batchnorm_stats(model, clip(b=2, t=1, seed=99)[:, 0])
    return model


def clip(b=1, t=3, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, t, 3, H, W, generator=g)


@pytest.mark.parametrize('task,dataset', [('binary', 'synth'), ('parts', 'synth'),
                                          ('type', 'endovis17'), ('type', 'endovis18')])
def test_shapes_per_task(task, dataset):
    names = default_class_names(task, dataset)
    cfg = tiny_config(task=task, dataset=dataset, class_names=names)
    model = build_model(cfg).eval()
    with torch.no_grad():
        out = forward_clip(model, clip(b=2, t=2), clip(b=2, t=2, seed=1))
    assert out.shape == (2, 2, len(names), H, W)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize('encoder', ['mobilenet_v2', 'resnet18', 'efficientnet_lite0'])
@pytest.mark.parametrize('fusion', ['tandem', 'additive'])
def test_shapes_per_backbone_and_fusion(encoder, fusion):
    cfg = tiny_config(fusion=fusion)
    cfg.encoder.name = encoder
    model = build_model(cfg).eval()
    x = clip(t=1)[:, 0]
    skips, f32 = model.encode(x)
    assert f32.shape == (1, 32, H // 32, W // 32)
    assert [s.shape[-2:] for s in skips][0] == (H // 4, W // 4)
    with torch.no_grad():
        logits, state = model.step(skips, f32)
        assert logits.shape == (1, 2, H // 4, W // 4)
        assert model(x).shape == (1, 2, H, W)
    assert len(state.keys) == 1


@pytest.mark.parametrize('encoder', ['mobilenet_v2', 'resnet18', 'efficientnet_lite0'])
def test_output_stride_two_gives_logits_at_half_resolution(encoder):
    cfg = tiny_config()
    cfg.encoder.name, cfg.decoder.output_stride = encoder, 2
    model = tiny_model(cfg).eval()
    x = clip(t=1)[:, 0]
    skips, f32 = model.encode(x)
    assert [s.shape[-2:] for s in skips][:2] == [(H // 2, W // 2), (H // 4, W // 4)]
    with torch.no_grad():
        logits, _ = model.step(skips, f32)
        assert logits.shape == (1, 2, H // 2, W // 2)
        assert model(x).shape == (1, 2, H, W)


def test_fine_stage_starts_as_the_stride_four_model_then_learns():
    """Stride-4 weights in a stride-2 model: the fine stage is all that is new, its zero head
    gives the upsampled stride-4 logits, and one step on the head brings gradient to the rest."""
    coarse = tiny_model().eval()
    cfg = tiny_config()
    cfg.decoder.output_stride = 2
    fine = build_model(cfg, pretrained=False)
    result = fine.load_state_dict(coarse.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert result.missing_keys and all(k.startswith('decoder.fine.') for k in result.missing_keys)
    fine.eval()
    x = clip(t=1)[:, 0]
    with torch.no_grad():
        want = F.interpolate(coarse.step(*coarse.encode(x))[0], size=(H // 2, W // 2),
                             mode='bilinear', align_corners=False)
        got = fine.step(*fine.encode(x))[0]
    assert torch.allclose(got, want, atol=1e-5)

    target = torch.zeros(1, H, W, dtype=torch.long)
    target[:, H // 4:H // 2, W // 4:W // 2] = 1
    head = fine.decoder.fine.head
    F.cross_entropy(fine(x), target).backward()
    assert head.weight.grad.abs().sum() > 0            # the zero head is what learns first
    with torch.no_grad():
        head.weight -= 10.0 * head.weight.grad
    fine.zero_grad()
    F.cross_entropy(fine(x), target).backward()
    for name, p in fine.decoder.fine.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize('fusion,memory', [('tandem', {}), ('additive', {})])
def test_gradient_reaches_every_parameter(fusion, memory):
    torch.manual_seed(0)
    cfg = tiny_models.tiny_config(H, W, memory, fusion=fusion)
    model = build_model(cfg).train()
    labels = torch.randint(0, 2, (2, 3, H, W))
    logits = forward_clip(model, clip(b=2, t=3), clip(b=2, t=2, seed=1))
    loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(0, 1))
    loss.backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f'no gradient for {dead}'


def test_gradient_flows_back_through_time():
    """BPTT: the loss on the last frame reaches the first frame's input through the ConvLSTM."""
    model = build_model(tiny_config()).eval()
    x = clip(t=3).requires_grad_(True)
    forward_clip(model, x)[:, -1].sum().backward()
    assert x.grad[:, 0].abs().sum() > 0


def test_clip_forward_is_causal_within_clip():
    model = build_model(tiny_config()).eval()
    a = clip(t=3)
    b = a.clone()
    b[:, 2] = torch.randn_like(b[:, 2])
    with torch.no_grad():
        out_a, out_b = forward_clip(model, a), forward_clip(model, b)
    assert torch.equal(out_a[:, :2], out_b[:, :2])
    assert not torch.allclose(out_a[:, 2], out_b[:, 2])


def test_memories_off_is_exactly_the_backbone():
    cfg = tiny_config()
    cfg.local_memory.enabled = False
    cfg.global_memory.enabled = False
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    assert {k.split('.')[0] for k in model.state_dict()} == {'encoder', 'decoder'}
    x = clip(t=3)
    with torch.no_grad():
        out = forward_clip(model, x, clip(t=2, seed=1))
        # The encoder batched over the clip as forward_clip does, then the bare decoder per frame.
        skips, f32 = model.encoder(x.flatten(0, 1))
        for t in range(3):
            ref = model.decoder([s[t:t + 1] for s in skips], f32[t:t + 1])
            ref = F.interpolate(ref, size=(H, W), mode='bilinear', align_corners=False)
            assert torch.equal(out[:, t], ref)
            # A single image through DMNet.forward is the bare backbone too.
            single = F.interpolate(model.decoder(*model.encoder(x[:, t])), size=(H, W),
                                   mode='bilinear', align_corners=False)
            assert torch.equal(model(x[:, t]), single)
            assert torch.allclose(out[:, t], single, atol=1e-5)


def test_switched_off_memories_match_a_backbone_with_the_same_weights():
    torch.manual_seed(0)
    full = build_model(tiny_config()).eval()
    off_cfg = tiny_config()
    off_cfg.local_memory.enabled = False
    off_cfg.global_memory.enabled = False
    backbone = build_model(off_cfg).eval()
    backbone.load_state_dict({k: v for k, v in full.state_dict().items()
                              if k.startswith(('encoder.', 'decoder.'))})
    full.set_memory_enabled(local=False, global_=False)
    x = clip(t=2)
    with torch.no_grad():
        assert torch.equal(forward_clip(full, x), forward_clip(backbone, x))
    with pytest.raises(ValueError, match='built without'):
        backbone.set_memory_enabled(local=True)


def test_global_frames_change_the_output_only_when_global_memory_is_on():
    model = tiny_model()
    x, g1, g2 = clip(t=2), clip(t=2, seed=1), clip(t=2, seed=2)
    with torch.no_grad():
        assert not torch.allclose(forward_clip(model, x, g1), forward_clip(model, x, g2))
        model.set_memory_enabled(global_=False)
        assert torch.equal(forward_clip(model, x, g1), forward_clip(model, x, g2))


def test_forward_clip_rejects_bad_shapes():
    model = build_model(tiny_config()).eval()
    with pytest.raises(ValueError, match='B x T x 3'):
        forward_clip(model, torch.zeros(1, 3, H, W))
    with pytest.raises(ValueError, match='global_frames'):
        forward_clip(model, clip(t=2), torch.zeros(1, 2, 3, 32, 32))


def test_encoder_weights_load_from_a_local_torchvision_file(tmp_path):
    net = torchvision.models.mobilenet_v2(weights=None)
    with torch.no_grad():
        net.features[0][0].weight.fill_(0.25)
    path = tmp_path / 'mobilenet_v2_imagenet.pth'
    torch.save(net.state_dict(), path)
    cfg = tiny_config()
    cfg.encoder.weights = str(path)
    model = build_model(cfg)
    assert torch.equal(model.encoder.stage4[0][0].weight, net.features[0][0].weight)
    assert torch.equal(model.encoder.stage32b.conv[0][0].weight, net.features[17].conv[0][0].weight)
    cfg.encoder.weights = str(tmp_path / 'absent.pth')
    with pytest.raises(FileNotFoundError, match='absent.pth'):
        build_model(cfg)
    torch.save({'features.0.0.weight': torch.zeros(1)}, tmp_path / 'wrong.pth')
    cfg.encoder.weights = str(tmp_path / 'wrong.pth')
    with pytest.raises(ValueError, match='wrong.pth'):
        build_model(cfg)


def test_build_model_is_stateless_and_validates():
    model = build_model(tiny_config())
    assert isinstance(model, DMNet)
    assert not list(model.buffers()) or all('running' in n or 'num_batches' in n
                                            for n, _ in model.named_buffers())
    with pytest.raises(ValueError, match='fusion'):
        build_model(tiny_config(fusion='sideways'))


def test_normalize_layouts_and_values():
    cfg = tiny_config()
    img = np.full((4, 5, 3), 255, np.uint8)
    x = normalize(img, cfg)
    assert x.shape == (3, 4, 5) and x.dtype == torch.float32
    expected = (1 - torch.tensor(cfg.mean)) / torch.tensor(cfg.std)
    assert torch.allclose(x[:, 0, 0], expected)
    batch = torch.zeros(2, 3, 3, 4, 5, dtype=torch.uint8)
    assert normalize(batch, cfg).shape == (2, 3, 3, 4, 5)
    assert torch.allclose(normalize(batch.float(), cfg), normalize(batch, cfg))
    with pytest.raises(ValueError, match='H x W x 3'):
        normalize(np.zeros((4, 5), np.uint8), cfg)
    with pytest.raises(ValueError, match='uint8 or float'):
        normalize(torch.zeros(3, 4, 5, dtype=torch.int32), cfg)

