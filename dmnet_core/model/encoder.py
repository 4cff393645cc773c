"""Encoders: MobileNetV2 (the paper's) and ResNet-18; skips at 1/4, 1/8, 1/16, a 1/32 bottleneck.

Legend: `f4`, `f8`, `f16` are stride-4/8/16 skip features; `f32` is the stride-32 bottleneck,
already projected to the decoder width `C`. Encoders return `(skips, f32)` with `skips` a flat
list, finest first; `skip_groups` gives the channels of each skip, grouped by scale (finest first),
which is how the decoder knows which skips share a resolution.

Weights are never downloaded: torchvision constructors get `weights=None`; ImageNet weights come
only from a local file in torchvision's state-dict format (`.pth`/`.pt` read with
`torch.load(weights_only=True)`, or `.safetensors`).
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch
import torchvision
from torch import nn

ENCODERS = ('mobilenet_v2', 'resnet18')


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a plain state dict from `.safetensors` or a weights-only torch file; never run code.

    Args:
        path: the file.

    Raises:
        FileNotFoundError: the file does not exist (names it).
        ValueError: the file is not a plain tensor dictionary (names it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'weights file not found: {path}')
    if path.suffix == '.safetensors':
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise ValueError(f'{path}: not a readable safetensors file: {exc}') from exc
    try:
        # weights_only=True refuses arbitrary pickled objects (no code runs).
        data = torch.load(str(path), map_location='cpu', weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ValueError(f'{path}: refused or unreadable as a weights-only torch file '
                         f'(only plain tensor dictionaries are accepted): {exc}') from exc
    return _unwrap_state_dict(data, path)


def _unwrap_state_dict(data: object, path: Path) -> dict[str, torch.Tensor]:
    """Take the tensor dictionary out of common checkpoint wrappers, strip `module.` prefixes."""
    if isinstance(data, dict):
        for key in ('state_dict', 'model', 'model_state_dict', 'net'):
            if key in data and isinstance(data[key], dict):
                data = data[key]
                break
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ValueError(f'{path}: expected a dictionary of tensors (a state dict)')
    return {k.removeprefix('module.'): v for k, v in data.items()}


def _load_torchvision(net: nn.Module, path: str | Path) -> None:
    """Load a torchvision-format state dict into `net`, ignoring only the classifier head."""
    state = load_state_dict_file(path)
    state = {k: v for k, v in state.items() if not k.startswith(('classifier.', 'fc.'))}
    try:
        result = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:   # shape mismatches
        raise ValueError(f'{path}: does not fit torchvision {type(net).__name__}: {exc}') from exc
    missing = [k for k in result.missing_keys if not k.startswith(('classifier.', 'fc.'))]
    if missing or result.unexpected_keys:
        raise ValueError(f'{path}: not a torchvision {type(net).__name__} state dict; '
                         f'missing {missing[:8]}, unexpected {result.unexpected_keys[:8]}')


def conv1x1(cin: int, cout: int, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, bias=bias)


class MobileNetV2Encoder(nn.Module):
    """torchvision MobileNetV2 features; stages 14-16 (160 ch) and 17 (320 ch) fused to `C` at 1/32.

    Args:
        channels: C, the bottleneck / decoder width.
        weights: optional local ImageNet state dict (torchvision format).
    """

    skip_groups = [[24], [32], [64, 96]]

    def __init__(self, channels: int, weights: str | Path | None = None) -> None:
        super().__init__()
        net = torchvision.models.mobilenet_v2(weights=None)
        if weights:
            _load_torchvision(net, weights)
        f = net.features
        self.stage4 = f[0:4]        # 24 ch, 1/4
        self.stage8 = f[4:7]        # 32 ch, 1/8
        self.stage16a = f[7:11]     # 64 ch, 1/16
        self.stage16b = f[11:14]    # 96 ch, 1/16
        self.stage32a = f[14:17]    # 160 ch, 1/32
        self.stage32b = f[17]       # 320 ch, 1/32 (features[18], the 1280-ch head, is dropped)
        # The authors' fusion of the last two stages (their conv7/conv8), as in LW-RefineNet.
        self.fuse32a = conv1x1(160, channels)
        self.fuse32b = conv1x1(320, channels)
        self.act = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """B x 3 x H x W -> ([f4, f8, f16a, f16b], f32 B x C x H/32 x W/32)."""
        f4 = self.stage4(x)
        f8 = self.stage8(f4)
        f16a = self.stage16a(f8)
        f16b = self.stage16b(f16a)
        f32a = self.stage32a(f16b)
        f32b = self.stage32b(f32a)
        f32 = self.act(self.fuse32a(f32a) + self.fuse32b(f32b))
        return [f4, f8, f16a, f16b], f32


class ResNet18Encoder(nn.Module):
    """torchvision ResNet-18; layer4 (512 ch) projected to `C` at 1/32.

    Args:
        channels: C, the bottleneck / decoder width.
        weights: optional local ImageNet state dict (torchvision format).
    """

    skip_groups = [[64], [128], [256]]

    def __init__(self, channels: int, weights: str | Path | None = None) -> None:
        super().__init__()
        net = torchvision.models.resnet18(weights=None)
        if weights:
            _load_torchvision(net, weights)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2 = net.layer1, net.layer2
        self.layer3, self.layer4 = net.layer3, net.layer4
        self.fuse32 = conv1x1(512, channels)
        self.act = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """B x 3 x H x W -> ([f4, f8, f16], f32 B x C x H/32 x W/32)."""
        f4 = self.layer1(self.stem(x))
        f8 = self.layer2(f4)
        f16 = self.layer3(f8)
        f32 = self.act(self.fuse32(self.layer4(f16)))
        return [f4, f8, f16], f32


def build_encoder(name: str, channels: int,
                  weights: str | Path | None = None) -> MobileNetV2Encoder | ResNet18Encoder:
    """Build an encoder by config name ('mobilenet_v2' or 'resnet18')."""
    if name == 'mobilenet_v2':
        return MobileNetV2Encoder(channels, weights)
    if name == 'resnet18':
        return ResNet18Encoder(channels, weights)
    raise ValueError(f'unknown encoder {name!r}; expected one of {ENCODERS}')
