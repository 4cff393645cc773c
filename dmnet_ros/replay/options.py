"""Options, constants and the record of a frame in flight, shared by the replay modules."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dmnet_ros import bag_io

MASK_TOPIC = '/dmnet/mask'
LABELS_TOPIC = '/dmnet/labels'
READY_LINE = 'dmnet ready'
EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
MAX_LOCKSTEP_MISSES = 3     # lockstep gives up after this many unanswered frames in a row


class ReplayError(RuntimeError):
    """The run could not go on (node did not start, no subscriber, ...); the text says why."""


@dataclass
class ReplayOptions:
    """Everything one replay needs; `main` fills it from the command line."""

    bag: Path
    out: Path
    mode: str = 'rate'                       # 'rate' or 'lockstep'
    rate: float = 1.0
    external: bool = False
    checkpoint: str = ''
    device: str = 'auto'
    image_topic: str = bag_io.IMAGE_TOPIC
    gt_topic: str = bag_io.GT_TOPIC
    inference_size: tuple[int, int] | None = None
    timeout: float = 60.0                    # per frame (lockstep) / for the last masks (rate)
    resend: float = 5.0                      # lockstep: re-send an unanswered frame this often
    startup_timeout: float = 180.0           # node start-up and discovery
    record_bag: bool = False
    video: bool = True
    progress: bool = True
    node_params: list[str] = field(default_factory=list)   # extra `name:=value` for the node


@dataclass
class Sent:
    """A frame on its way: kept until its mask arrives or it is declared dropped."""

    index: int
    stamp_ns: int
    t_pub: float
    rgb: np.ndarray
    gt: np.ndarray | None
    sends: int = 1
