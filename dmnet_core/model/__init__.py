"""The DMNet network: encoder, local and global memories, decoder, and input normalisation."""
from dmnet_core.model.dmnet import DMNet, build_model, init_batchnorm_stats
from dmnet_core.model.global_memory import (
    ActivePolicy,
    GlobalMemoryReader,
    MemoryBank,
    ReadSampler,
    RecentPolicy,
    UniformPolicy,
    attention_read,
    build_policy,
    update_bank,
)
from dmnet_core.model.local_memory import ConvLSTMCell, EfficientLocalMemory, LocalState
from dmnet_core.model.transforms import normalize

__all__ = [
    'ActivePolicy', 'ConvLSTMCell', 'DMNet', 'EfficientLocalMemory', 'GlobalMemoryReader',
    'LocalState', 'MemoryBank', 'ReadSampler', 'RecentPolicy', 'UniformPolicy', 'attention_read',
    'build_model', 'build_policy', 'init_batchnorm_stats', 'normalize', 'update_bank',
]
