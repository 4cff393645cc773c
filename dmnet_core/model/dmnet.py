"""DMNet: encoder, Efficient Local Memory, Active Global Memory, Light-Weight RefineNet decoder.

The network is stateless: per-video state (ConvLSTM state, local window, global bank) is passed in
and returned, and owned by `Segmenter` (inference) or `forward_clip` (training). Stage methods:

    encode(x)                          B x 3 x H x W -> (skips, f32 B x C x H/32 x W/32)
    local_step(f32, state)             -> (ELM output B x C x h x w, new LocalState)
    global_key_value(f32)              -> memory (key B x Ck x h x w, value B x Cv x h x w)
    fuse(f32, local_out, mem_k, mem_v) -> the bottleneck fed to the decoder, B x C x h x w
    decode(skips, bottleneck)          -> logits B x K x H/s x W/s
    step(skips, f32, state, mem_k, mem_v[, labels]) -> (logits at 1/s, new state): everything
                                       after `encode`; `labels` propagates stored predictions

s, the output stride, is 4 (the authors') or 2 (`output_stride=2`: the decoder's fine stage).

`forward(x)` is a single image with no history, at input resolution.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dmnet_core.config import ModelConfig
from dmnet_core.model.decoder import RefineDecoder
from dmnet_core.model.encoder import build_encoder
from dmnet_core.model.global_memory import GlobalMemoryReader
from dmnet_core.model.label_propagation import MemoryLabels, apply_type_prior, cells, type_prior
from dmnet_core.model.local_memory import EfficientLocalMemory, LocalState

FUSIONS = ('tandem', 'additive')


class DMNet(nn.Module):
    """The dual-memory network (Wang et al., MICCAI 2021).

    Args:
        num_classes: K, output classes (background included).
        encoder: one of `config.ENCODERS` ('mobilenet_v2', the paper's, by default).
        channels: C, bottleneck and decoder width (256 in the paper).
        local_enabled: build the Efficient Local Memory.
        local_hidden: ConvLSTM hidden channels.
        local_window: T, local frames including the current one.
        local_vote_radius: label propagation's local vote from cells within this radius of the
            query cell (-1: every cell).
        global_enabled: build the Active Global Memory read.
        key_channels: Ck of the global keys.
        value_channels: Cv of the global values.
        fusion: 'tandem' (ELM output queries the bank) or 'additive' (ELM + read of the raw frame).
        encoder_weights: optional ImageNet weights for the encoder (a local file, or 'imagenet').
        output_stride: 4, or 2 for the decoder's fine stage on the encoder's 1/2 feature.
    """

    def __init__(self, num_classes: int, *, encoder: str = 'mobilenet_v2', channels: int = 256,
                 local_enabled: bool = True, local_hidden: int = 256, local_window: int = 5,
                 local_vote_radius: int = -1,
                 global_enabled: bool = True, key_channels: int = 64, value_channels: int = 128,
                 fusion: str = 'tandem', encoder_weights: str | Path | None = None,
                 output_stride: int = 4) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f'fusion {fusion!r} not in {FUSIONS}')
        if output_stride not in (2, 4):
            raise ValueError(f'output_stride {output_stride!r} not in (2, 4)')
        self.num_classes, self.channels, self.fusion = num_classes, channels, fusion
        fine = output_stride == 2
        self.encoder = build_encoder(encoder, channels, encoder_weights, half=fine)
        self.decoder = RefineDecoder(self.encoder.skip_groups, channels, num_classes,
                                     fine_channels=self.encoder.half_channels if fine else None)
        # Disabled memories are not built at all, so a memory-free model is exactly the backbone.
        self.local_memory = (EfficientLocalMemory(channels, local_hidden, local_window,
                                                  local_vote_radius)
                             if local_enabled else None)
        self.global_memory = (GlobalMemoryReader(channels, key_channels, value_channels)
                              if global_enabled else None)
        self.use_local = local_enabled
        self.use_global = global_enabled

    def set_memory_enabled(self, local: bool | None = None, global_: bool | None = None) -> None:
        """Switch built memories off (or back on) at run time without touching the weights."""
        if local is not None:
            if local and self.local_memory is None:
                raise ValueError('cannot enable the local memory: this model was built without it')
            self.use_local = local
        if global_ is not None:
            if global_ and self.global_memory is None:
                raise ValueError('cannot enable the global memory: this model was built without it')
            self.use_global = global_

    # ---------------------------------------------------------------- stages

    def encode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """B x 3 x H x W (normalised) -> (skips finest first, f32 B x C x H/32 x W/32)."""
        return self.encoder(x)

    def local_step(self, f32: torch.Tensor, state: LocalState | None
                   ) -> tuple[torch.Tensor, LocalState]:
        """ELM for one frame: f32 and the carried state -> (B x C x h x w, new state)."""
        return self.local_memory(f32, state)

    def global_key_value(self, f32: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Key/value of a memory frame from its bottleneck (cached by the bank once made)."""
        return self.global_memory.key_value(f32)

    def fuse(self, f32: torch.Tensor, local_out: torch.Tensor | None,
             mem_k: torch.Tensor | None, mem_v: torch.Tensor | None) -> torch.Tensor:
        """Combine the frame, the ELM output and the global read into the decoder's bottleneck.

        Args:
            f32: the frame's bottleneck, B x C x h x w.
            local_out: ELM output or None (local memory off).
            mem_k: global memory keys B x N x Ck x h x w, or None (the query reads itself).
            mem_v: global memory values B x N x Cv x h x w, or None.
        """
        local_out = local_out if self.use_local else None
        if not self.use_global:
            return f32 if local_out is None else local_out
        read = self.global_memory(self._global_query(f32, local_out), mem_k, mem_v)
        if self.fusion == 'tandem' or local_out is None:
            return read
        # Additive: the raw frame queries the bank, the ELM output is added.
        return read + local_out

    def _global_query(self, f32: torch.Tensor, local_out: torch.Tensor | None) -> torch.Tensor:
        """What reads the bank: the ELM output in tandem fusion, else the frame itself."""
        return local_out if self.fusion == 'tandem' and local_out is not None else f32

    def decode(self, skips: list[torch.Tensor], bottleneck: torch.Tensor) -> torch.Tensor:
        """Skips and bottleneck -> logits B x K x H/s x W/s."""
        return self.decoder(skips, bottleneck)

    def step(self, skips: list[torch.Tensor], f32: torch.Tensor, state: LocalState | None = None,
             mem_k: torch.Tensor | None = None, mem_v: torch.Tensor | None = None,
             labels: MemoryLabels | None = None) -> tuple[torch.Tensor, LocalState | None]:
        """Everything after `encode` for one frame: the shared path of training and inference.

        `labels`: what the remembered frames were predicted to be; with gamma > 0 the reads'
        attention carries their instrument types to this frame (label propagation; the
        Segmenter, and `forward_clip` when trained with it).

        Returns:
            logits B x K x H/s x W/s (log-probabilities when labels were propagated), and the
            new local state (None when ELM is off).
        """
        local_out = None
        if self.use_local:
            local_out, state = self.local_step(f32, state)
        else:
            state = None
        logits = self.decode(skips, self.fuse(f32, local_out, mem_k, mem_v))
        if labels is not None and labels.gamma > 0:
            prior = self.type_prior(f32, local_out, state, mem_k, labels)
            if prior is not None:
                logits = apply_type_prior(logits, prior, labels.gamma)
        return logits, state

    def type_prior(self, f32: torch.Tensor, local_out: torch.Tensor | None,
                   state: LocalState | None, mem_k: torch.Tensor | None,
                   labels: MemoryLabels) -> torch.Tensor | None:
        """The memories' prior over instrument types, B x (K-1) x h x w, or None (no read)."""
        reads = []
        if self.use_local and state is not None and labels.local is not None:
            weights = self.local_memory.vote_weights(state)          # B x hw x (n-1)hw
            m = weights.shape[-1] // f32[0, 0].numel()
            if m:
                reads.append((weights, cells(labels.local[:, labels.local.shape[1] - m:])))
        if self.use_global and mem_k is not None and labels.global_ is not None:
            query = self._global_query(f32, local_out)
            reads.append((self.global_memory.read_weights(query, mem_k), cells(labels.global_)))
        return type_prior(reads, f32.shape[-2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """A single image without history: B x 3 x H x W -> logits B x K x H x W."""
        skips, f32 = self.encode(x)
        logits, _ = self.step(skips, f32)
        return F.interpolate(logits, size=x.shape[-2:], mode='bilinear', align_corners=False)


def build_model(cfg: ModelConfig, pretrained: bool = True) -> DMNet:
    """Build DMNet from a `ModelConfig`.

    Args:
        cfg: the model configuration (validated here).
        pretrained: load `cfg.encoder.weights` when set; False when a checkpoint supplies weights.
    """
    cfg.validate()
    return DMNet(
        cfg.num_classes,
        encoder=cfg.encoder.name,
        channels=cfg.decoder.channels,
        local_enabled=cfg.local_memory.enabled,
        local_hidden=cfg.local_memory.hidden,
        local_window=cfg.local_memory.window,
        local_vote_radius=cfg.local_memory.vote_radius,
        global_enabled=cfg.global_memory.enabled,
        key_channels=cfg.global_memory.key_channels,
        value_channels=cfg.global_memory.value_channels,
        fusion=cfg.fusion,
        encoder_weights=cfg.encoder.weights if pretrained else None,
        output_stride=cfg.decoder.output_stride,
    )


@torch.no_grad()
def init_batchnorm_stats(model: nn.Module, images: torch.Tensor) -> None:
    """Set batch-norm running statistics from `images` (B x 3 x H x W) with one train-mode pass.

    An untrained network in eval mode uses mean 0 / variance 1, and features shrink towards zero
    layer by layer; this gives a randomly initialised stand-in (and tests) non-degenerate features.
    Only the statistics change, never a weight; the model is left in eval mode.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None                  # cumulative average over this one pass
    model.train()
    model.encode(images)
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    model.eval()
