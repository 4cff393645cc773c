"""Python `logging` records of dmnet_core through a ROS logger (dmnet_core never imports rclpy).

dmnet_core reports through `logging.getLogger('dmnet_core...')` (e.g. "device auto: CUDA not
available, running on the CPU"). Without a handler Python prints such a warning raw on stderr,
beside the ROS logger's formatted lines and not on /rosout; the node process installs this
bridge so every message carries the node's logger name and severity; Python warnings (e.g.
torch's UserWarnings) go the same way.
"""
from __future__ import annotations

import logging
from typing import Any

CORE_LOGGER = 'dmnet_core'
WARNINGS_LOGGER = 'py.warnings'     # Python warnings, once logging.captureWarnings is on


class RosLogHandler(logging.Handler):
    """Forwards each record to an rclpy logger at the matching severity."""

    def __init__(self, ros_logger: Any) -> None:
        super().__init__(level=logging.INFO)
        self.ros_logger = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            if record.levelno >= logging.CRITICAL:
                self.ros_logger.fatal(text)
            elif record.levelno >= logging.ERROR:
                self.ros_logger.error(text)
            elif record.levelno >= logging.WARNING:
                self.ros_logger.warning(text)
            elif record.levelno >= logging.INFO:
                self.ros_logger.info(text)
            else:
                self.ros_logger.debug(text)
        except Exception:  # a log line must never take the node down
            self.handleError(record)


def forward_to(ros_logger: Any, name: str = CORE_LOGGER) -> RosLogHandler:
    """Route logger `name` (and its children) to `ros_logger` only; returns the handler."""
    if name == WARNINGS_LOGGER:
        logging.captureWarnings(True)
    logger = logging.getLogger(name)
    for old in [h for h in logger.handlers if isinstance(h, RosLogHandler)]:
        logger.removeHandler(old)
    handler = RosLogHandler(ros_logger)
    handler.setFormatter(logging.Formatter('%(message)s'))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if name != WARNINGS_LOGGER else logging.WARNING)
    logger.propagate = False        # not also Python's last-resort stderr line
    return handler
