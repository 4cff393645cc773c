"""The `segment_node` process: signals, executor, autostart and exit codes.

Clean stops: rclpy's own signal handlers are off (they shut the context down under a model
step that is about to publish: "publisher's context is invalid"). SIGINT and SIGTERM instead
ask the model loop to return; when the main thread is loading the model, inside a step or
waiting for a frame, the handler raises `Interrupted` so that it stops at once. The
process then stops the executor, destroys the node and exits 0. `ros2 launch` sends SIGINT,
then SIGTERM: both end the same way.

One executor thread runs every callback (frames, reset, diagnostics, lifecycle services); the
model runs on the main thread, so a slow step never delays them. A single-threaded executor:
rclpy's multi-threaded one took large frames measurably slower here (bench/camera_rates.py,
1280x1024 at 30 Hz: 16-24 frames answered of 90 against 33-37), and the only long callback, a
manager's configure loading a model, runs while no frame is taken anyway.

Exit codes: 0 stopped by a signal or shut down, 2 bad configuration (a parameter or the model
at start-up: one line through the ROS logger), 1 anything unexpected.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import rclpy
from rclpy._rclpy_pybind11 import RCLError, UnknownROSArgsError
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.signals import SignalHandlerOptions

from dmnet_ros import dds_profile, log_bridge

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CONFIG = 2
PRIMARY_STATES = (1, 2, 3)  # lifecycle_msgs/State: unconfigured, inactive, active


class Interrupted(BaseException):
    """Raised by the signal handler to abandon model loading or a step (not an Exception)."""


class _Stopper:
    """SIGINT/SIGTERM handler: flags the stop, interrupts heavy work on the main thread."""

    def __init__(self) -> None:
        self.node: Any = None
        self.loading = False
        self.signalled = False

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, _signum: int, _frame: FrameType | None) -> None:
        first = not self.signalled
        self.signalled = True
        node = self.node
        if node is not None:
            node._stopping = True   # no lock: this runs on the main thread, maybe inside it
        if first and (self.loading or (node is not None and (node.in_step or node.idle))):
            raise Interrupted()


def _spin(executor: SingleThreadedExecutor) -> None:
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException, Interrupted):
        pass
    except Exception as exc:  # report, never a bare traceback
        rclpy.logging.get_logger('dmnet').error(
            f'executor stopped: {type(exc).__name__}: {exc}')


def _one_line(exc: BaseException) -> str:
    return ' '.join(str(exc).split())


def run(node_factory: Callable[[], Any], args: list[str] | None = None) -> int:
    """Run a SegmentNode until a signal or shutdown; returns the process exit code.

    Args:
        node_factory: builds the node (declares and checks the parameters).
        args: command line (None = sys.argv).
    """
    stopper = _Stopper()
    stopper.loading = True              # until the model loop runs, a signal ends it all
    stopper.install()
    logger = rclpy.logging.get_logger('dmnet')
    # Before rclpy.init: Fast DDS reads its profile when the participant is created.
    _, profile_line = dds_profile.apply_large_frames()
    try:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except RCLError as exc:     # e.g. `-p mask_topic:=` (rcl logs its own line first)
        logger.fatal(f'invalid parameter or argument: {_one_line(exc).split(", at ")[0]}')
        return EXIT_CONFIG
    except UnknownROSArgsError as exc:      # e.g. `--ros-args -h`
        logger.fatal(f'unknown ROS arguments {_one_line(exc)} (segment_node --help for usage)')
        return EXIT_CONFIG
    node = executor = spinner = None
    code = EXIT_OK
    try:
        try:
            node = node_factory()
        except (ParameterException, TypeError, ValueError) as exc:
            logger.fatal(f'invalid parameter: {_one_line(exc)}')
            node, code = None, EXIT_CONFIG
        if node is not None:
            stopper.node = node
            node.get_logger().info(profile_line)
            # dmnet_core's Python logging and Python warnings (torch's) through the ROS logger.
            log_bridge.forward_to(node.get_logger())
            log_bridge.forward_to(node.get_logger(), log_bridge.WARNINGS_LOGGER)
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            spinner = threading.Thread(target=_spin, args=(executor,), name='dmnet-executor',
                                       daemon=True)
            spinner.start()
            code = _serve(node, stopper)
    except Interrupted:
        pass
    except Exception as exc:  # report, never a bare traceback
        logger.fatal(f'fatal: {type(exc).__name__}: {_one_line(exc)}')
        code = EXIT_ERROR
    finally:
        stopper.loading = False
        stopper.signalled = True        # a second signal during the teardown does nothing
        code = _teardown(node, executor, spinner, code)
    return code


def _serve(node: Any, stopper: _Stopper) -> int:
    """Autostart (configure, activate), then the model loop until a signal or shutdown."""
    if node.p['autostart']:
        if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            # A signal that lands inside rclpy's transition code (not in on_configure) makes
            # the transition fail: that is a stop, not a bad configuration.
            return EXIT_OK if stopper.signalled else EXIT_CONFIG
        node.trigger_activate()
    else:
        node.get_logger().info('dmnet unconfigured: waiting for a lifecycle manager '
                               '(configure, then activate)')
    stopper.loading = False
    if stopper.signalled:
        return EXIT_OK
    node.run_model_loop()               # returns on SIGINT/SIGTERM or lifecycle shutdown
    return EXIT_OK


def _teardown(node: Any, executor: Any, spinner: threading.Thread | None, code: int) -> int:
    """Stop the executor, shut the lifecycle down, destroy the node and the context."""
    if executor is not None:
        executor.shutdown(timeout_sec=1.0)
    if spinner is not None:
        spinner.join(timeout=2.0)
        if spinner.is_alive():
            # A lifecycle callback (a manager's configure loading a model) still runs: leave
            # without waiting for it rather than tear the node down under it.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    if node is not None:
        node.request_stop()
        state = getattr(getattr(node, '_state_machine', None), 'current_state', (0, ''))
        if state[0] in PRIMARY_STATES:
            node.trigger_shutdown()     # frees the model; the transition is published
        node.destroy_node()
    if rclpy.ok():
        rclpy.shutdown()
    return code
