"""dmnet_core's logging and Python warnings reach the node's ROS logger only."""
from __future__ import annotations

import logging
import warnings

import pytest

from dmnet_ros import log_bridge


class FakeRosLogger:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def __getattr__(self, level: str):
        return lambda text: self.lines.append((level, text))


@pytest.fixture
def restore_logging():
    names = (log_bridge.CORE_LOGGER, log_bridge.WARNINGS_LOGGER)
    saved = {n: (logging.getLogger(n).level, logging.getLogger(n).propagate) for n in names}
    yield
    for n in names:
        logger = logging.getLogger(n)
        for h in [h for h in logger.handlers if isinstance(h, log_bridge.RosLogHandler)]:
            logger.removeHandler(h)
        logger.setLevel(saved[n][0])
        logger.propagate = saved[n][1]
    logging.captureWarnings(False)


def test_core_messages_and_warnings_go_through_the_ros_logger(restore_logging, capsys):
    ros = FakeRosLogger()
    log_bridge.forward_to(ros)
    log_bridge.forward_to(ros, log_bridge.WARNINGS_LOGGER)
    from dmnet_core.segmenter import resolve_device

    logging.getLogger('dmnet_core.segmenter').warning('device auto: CUDA not available, %s',
                                                      'running on the CPU')
    logging.getLogger('dmnet_core.checkpoint').info('loaded')
    logging.getLogger('dmnet_core.checkpoint').debug('not shown')
    logging.getLogger('dmnet_core.x').error('bad')
    with warnings.catch_warnings():
        warnings.simplefilter('always')
        warnings.warn('TypedStorage is deprecated', UserWarning, stacklevel=1)
    assert ros.lines[:3] == [('warning', 'device auto: CUDA not available, running on the CPU'),
                             ('info', 'loaded'), ('error', 'bad')]
    assert ros.lines[3][0] == 'warning' and 'TypedStorage is deprecated' in ros.lines[3][1]
    assert len(ros.lines) == 4
    resolve_device('cpu')
    err = capsys.readouterr().err
    assert 'CUDA not available' not in err and 'TypedStorage' not in err


def test_installing_twice_keeps_one_handler(restore_logging):
    first, second = FakeRosLogger(), FakeRosLogger()
    log_bridge.forward_to(first)
    log_bridge.forward_to(second)
    logging.getLogger('dmnet_core').warning('once')
    assert first.lines == [] and second.lines == [('warning', 'once')]
