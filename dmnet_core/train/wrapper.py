"""Training-only forward over clips: the same stage methods the Segmenter calls, with BPTT.

The data loader draws global frames from the whole video, future ones included, as the authors
trained; inference (`Segmenter`) stays causal. `normalize` (defined in
`dmnet_core.model.transforms`) turns uint8 images into the model's input.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dmnet_core.model.dmnet import DMNet
from dmnet_core.model.global_memory import class_shares
from dmnet_core.model.label_propagation import MemoryLabels
from dmnet_core.model.transforms import normalize

__all__ = ['forward_clip', 'normalize']


def forward_clip(model: DMNet, clip: torch.Tensor,
                 global_frames: torch.Tensor | None = None,
                 label_propagation: float = 0.0) -> torch.Tensor:
    """Run a clip frame by frame with the ConvLSTM state carried through it (back-propagated).

    Frame t's local window is the clip's frames max(0, t-T+1)..t, exactly as in inference; every
    frame reads the same global frames (all G of them). Without global frames each query reads
    itself, as the Segmenter does while its bank is empty.

    Args:
        model: the network.
        clip: normalised frames, B x T x 3 x H x W.
        global_frames: normalised memory frames B x G x 3 x H x W, or None.
        label_propagation: gamma > 0 trains through label propagation as the Segmenter runs it:
            each frame's type prior is read from the local window's previous clip frames'
            predictions and the memory frames' own predictions (both detached), so the loss
            reaches the reads' keys through the prior.

    Returns:
        logits B x T x K x H x W at input resolution.
    """
    if clip.ndim != 5 or clip.shape[2] != 3:
        raise ValueError(f'clip must be B x T x 3 x H x W, got {tuple(clip.shape)}')
    b, t, _, h, w = clip.shape
    frames = clip.flatten(0, 1)                                  # BT x 3 x H x W
    use_global = global_frames is not None and model.use_global
    if use_global:
        if global_frames.ndim != 5 or global_frames.shape[0] != b or \
                global_frames.shape[2:] != clip.shape[2:]:
            raise ValueError(f'global_frames must be B x G x 3 x {h} x {w}, '
                             f'got {tuple(global_frames.shape)}')
        g = global_frames.shape[1]
        frames = torch.cat([frames, global_frames.flatten(0, 1)])
    # One batched encoder pass for clip and global frames (batch-norm sees them together).
    skips, f32 = model.encode(frames)
    mem_k = mem_v = g_shares = None
    if use_global:
        if label_propagation > 0:
            # What the Segmenter would have predicted for each memory frame on its own (no
            # history), detached: at inference the bank holds the model's predictions, not GT.
            # In train mode this pass also feeds batch-norm statistics, from frames of the
            # same videos.
            with torch.no_grad():
                g_logits, _ = model.step([s[b * t:] for s in skips], f32[b * t:])
            g_shares = class_shares(g_logits, f32.shape[-2:]).unflatten(0, (b, g))
        k, v = model.global_key_value(f32[b * t:])
        mem_k = k.unflatten(0, (b, g))                           # B x G x Ck x h x w
        mem_v = v.unflatten(0, (b, g))
    skips = [s[:b * t].unflatten(0, (b, t)) for s in skips]      # each B x T x Cs x hs x ws
    f32 = f32[:b * t].unflatten(0, (b, t))                       # B x T x C x h x w
    state, out, kept = None, [], []
    window = model.local_memory.window - 1 if model.local_memory is not None else 0
    for i in range(t):
        labels = None
        if label_propagation > 0:
            labels = MemoryLabels(local=torch.stack(kept, 1) if kept else None,
                                  global_=g_shares, gamma=label_propagation)
        logits, state = model.step([s[:, i] for s in skips], f32[:, i], state, mem_k, mem_v,
                                   labels)
        if label_propagation > 0 and window > 0:
            kept = [*kept, class_shares(logits.detach(), f32.shape[-2:])][-window:]
        out.append(F.interpolate(logits, size=(h, w), mode='bilinear', align_corners=False))
    return torch.stack(out, dim=1)

