"""dmnet_core: the DMNet model and everything that needs no ROS (never imports rclpy)."""
from dmnet_core.config import (
    DataConfig,
    ExperimentConfig,
    GlobalMemoryConfig,
    LocalMemoryConfig,
    ModelConfig,
    TrainConfig,
)
from dmnet_core.model import DMNet, build_model
from dmnet_core.segmenter import Segmenter, load_segmenter

__all__ = [
    'DMNet', 'DataConfig', 'ExperimentConfig', 'GlobalMemoryConfig', 'LocalMemoryConfig',
    'ModelConfig', 'Segmenter', 'TrainConfig', 'build_model', 'load_segmenter',
]
