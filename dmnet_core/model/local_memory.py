"""Efficient Local Memory (ELM): a ConvLSTM plus a non-local read over the last T frames at 1/32.

Legend: `f` is a frame's bottleneck (B x C x h x w); `h`, `c` the ConvLSTM state
(B x Hd x h x w); the window caches each local frame's non-local key (B x C/4 x h x w) and value
(B x C/2 x h x w), computed once when the frame arrives.

The ConvLSTM gives the local receptive field in time (short-range dynamics); the non-local read lets
every position of the current frame look at every position of the T local frames (global in space).
Both the recurrent cell and the module take their state and return the new one, so a training clip
and frame-by-frame inference run exactly the same code.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dmnet_core.model.global_memory import attention_read, attention_weights


class ConvLSTMCell(nn.Module):
    """One-layer convolutional LSTM cell: forward(x, (h, c)) -> (h, c).

    Args:
        in_channels: channels of x.
        hidden: Hd, channels of h and c.
        kernel: convolution kernel (3 in the paper).
    """

    def __init__(self, in_channels: int, hidden: int, kernel: int = 3) -> None:
        super().__init__()
        self.hidden = hidden
        # All four gates from one convolution over [x, h].
        self.gates = nn.Conv2d(in_channels + hidden, 4 * hidden, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """x B x Cin x h x w, state (h, c) or None for zeros -> (h, c), each B x Hd x h x w."""
        if state is None:
            zeros = x.new_zeros(x.shape[0], self.hidden, *x.shape[-2:])
            state = (zeros, zeros)
        h, c = state
        i, f, o, g = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


@dataclass
class LocalState:
    """What ELM carries from frame to frame: the LSTM state and the window's cached keys/values."""

    h: torch.Tensor
    c: torch.Tensor
    keys: list[torch.Tensor]      # up to T entries, oldest first, each B x C/4 x h x w
    values: list[torch.Tensor]    # each B x C/2 x h x w


class EfficientLocalMemory(nn.Module):
    """ELM: out = P(h_t) + W(NL(theta(h_t); phi(f_i), g(f_i) for the last T frames i)).

    The paper's form: the frame reaches the decoder only through the ConvLSTM's gates,
    and the non-local read asks with theta(h_t), a projection of the ConvLSTM state.

    Args:
        channels: C, bottleneck width (input and output).
        hidden: Hd, ConvLSTM hidden channels (P is a 1x1 projection when Hd != C).
        window: T, local frames including the current one.
        vote_radius: which cells label propagation's vote (`vote_weights`) takes names from: -1
            every cell the read attends to; r >= 0 only those within r cells of the query cell.
            Holds no weights, so it can change after training.
    """

    def __init__(self, channels: int, hidden: int, window: int, vote_radius: int = -1) -> None:
        super().__init__()
        ck, cv = max(channels // 4, 1), max(channels // 2, 1)
        self.window = window
        self.vote_radius = vote_radius
        self.cell = ConvLSTMCell(channels, hidden, 3)
        self.out_proj = nn.Conv2d(hidden, channels, 1) if hidden != channels else nn.Identity()
        self.query = nn.Conv2d(hidden, ck, 1)          # theta
        self.key = nn.Conv2d(channels, ck, 1)          # phi
        self.value = nn.Conv2d(channels, cv, 1)        # g
        self.out = nn.Conv2d(cv, channels, 1)          # W

    def forward(self, f: torch.Tensor, state: LocalState | None = None
                ) -> tuple[torch.Tensor, LocalState]:
        """One frame: f B x C x h x w and the previous state -> (B x C x h x w, new state)."""
        h, c = self.cell(f, None if state is None else (state.h, state.c))
        keep = self.window - 1            # previous frames kept beside the current one
        prev_k = state.keys[len(state.keys) - keep:] if state is not None and keep > 0 else []
        prev_v = state.values[len(state.values) - keep:] if state is not None and keep > 0 else []
        keys = [*prev_k, self.key(f)]
        values = [*prev_v, self.value(f)]
        # Non-local: every position of frame t attends over T x h x w local positions.
        read = attention_read(self.query(h), torch.stack(keys, 1), torch.stack(values, 1))
        out = self.out_proj(h) + self.out(read)
        return out, LocalState(h=h, c=c, keys=keys, values=values)

    def ask(self, state: LocalState) -> torch.Tensor:
        """The query the frame `state` was made for read with, theta(h_t): B x C/4 x h x w."""
        return self.query(state.h)

    def read_weights(self, state: LocalState) -> torch.Tensor:
        """The non-local read's attention of the frame `state` was made for, over the previous
        frames' cells only: B x hw x (n-1)hw (rows sum to at most 1; what is missing went to the
        current frame itself)."""
        weights = attention_weights(self.ask(state), torch.stack(state.keys, 1))
        return weights[..., :weights.shape[-1] - state.keys[-1][0, 0].numel()]

    def vote_weights(self, state: LocalState) -> torch.Tensor:
        """`read_weights` as label propagation votes with them, B x hw x (n-1)hw: with
        `vote_radius` r >= 0 each row keeps only the previous frames' cells within r of its
        own cell, rescaled to the row's total (how much the read took from the past)."""
        weights = self.read_weights(state)
        if self.vote_radius < 0 or weights.shape[-1] == 0:
            return weights
        h, w = state.keys[-1].shape[-2:]
        ys, xs = torch.meshgrid(torch.arange(h, device=weights.device),
                                torch.arange(w, device=weights.device), indexing='ij')
        cell = torch.stack([ys.flatten(), xs.flatten()], 1)                 # hw x 2
        near = (cell[:, None] - cell[None]).abs().amax(-1) <= self.vote_radius  # hw x hw
        kept = weights * near.repeat(1, weights.shape[-1] // (h * w)).to(weights.dtype)
        scale = weights.sum(-1, keepdim=True) / kept.sum(-1, keepdim=True).clamp_min(1e-12)
        return kept * scale
