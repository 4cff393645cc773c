"""The narrow DMNet the core tests share (C=32, ConvLSTM hidden 16, window 3): fast on a CPU."""
from __future__ import annotations

from typing import Any

from dmnet_core.config import ModelConfig


def tiny_config(height: int, width: int, memory: dict[str, Any] | None = None,
                **fields: Any) -> ModelConfig:
    """A small ModelConfig; `fields` set top-level fields, `memory` global-memory ones."""
    cfg = ModelConfig(input_size=[height, width])
    cfg.decoder.channels = 32
    cfg.local_memory.hidden = 16
    cfg.local_memory.window = 3
    cfg.global_memory.key_channels = 8
    cfg.global_memory.value_channels = 16
    for k, v in fields.items():
        setattr(cfg, k, v)
    for k, v in (memory or {}).items():
        setattr(cfg.global_memory, k, v)
    return cfg
