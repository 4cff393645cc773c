"""Helpers for tests that run real ROS 2 processes (the node, the replay harness).

Isolation: every test process uses its own DDS domain (`ROS_DOMAIN_ID` = 100 + pid % 100) and
localhost-only discovery, in its own environment and in every child it starts, so parallel test
runs on one machine never see each other's topics.

    env = ros_env()                                  # also applied to os.environ by RosClient
    with NodeProcess(params={'inference_size': [64, 64]}, env=env) as node:
        node.wait_ready()                            # waits for the 'dmnet ready' log line
        with RosClient(env) as client:
            sub = client.subscribe(Image, '/dmnet/mask')
            client.wait_for(lambda: sub.messages, timeout=20)
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
PARAMS_FILE = REPO / 'config' / 'dmnet.yaml'
READY_LINE = 'dmnet ready'
if str(REPO) not in sys.path:  # this checkout's packages, as in the children (see ros_env)
    sys.path.insert(0, str(REPO))


def domain_id() -> int:
    """This test process's DDS domain: 100..199 from the pid (valid for Fast DDS ports)."""
    return 100 + os.getpid() % 100


def ros_env(domain: int | None = None, **extra: str) -> dict[str, str]:
    """A clean child environment: own domain, localhost discovery, 1 thread, unbuffered logs."""
    env = dict(os.environ)
    for key in ('ROS_LOCALHOST_ONLY', 'ROS_STATIC_PEERS', 'FASTRTPS_DEFAULT_PROFILES_FILE',
                'FASTDDS_DEFAULT_PROFILES_FILE', 'ROS_DISCOVERY_SERVER'):
        env.pop(key, None)
    env.update({
        'ROS_DOMAIN_ID': str(domain_id() if domain is None else domain),
        'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST',
        'RMW_IMPLEMENTATION': env.get('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp'),
        'PYTHONUNBUFFERED': '1',
        'RCUTILS_COLORIZED_OUTPUT': '0',
        'RCUTILS_LOGGING_BUFFERED_STREAM': '0',
        'OMP_NUM_THREADS': '1',
        # The source tree first, so children import this checkout's dmnet_core/dmnet_ros even
        # where the editable install predates a package.
        'PYTHONPATH': os.pathsep.join([str(REPO)] + [p for p in
                                                     env.get('PYTHONPATH', '').split(os.pathsep)
                                                     if p]),
    })
    env.update(extra)
    return env


def apply_ros_env(env: dict[str, str]) -> None:
    """Copy the ROS variables of `env` into this process (before rclpy.init)."""
    for key in ('ROS_DOMAIN_ID', 'ROS_AUTOMATIC_DISCOVERY_RANGE', 'RMW_IMPLEMENTATION'):
        os.environ[key] = env[key]
    for key in ('ROS_LOCALHOST_ONLY', 'ROS_STATIC_PEERS', 'ROS_DISCOVERY_SERVER'):
        os.environ.pop(key, None)


def executable(name: str, module: str) -> list[str]:
    """The installed console script beside sys.executable, else `python -m module`."""
    script = Path(sys.executable).parent / name
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, '-m', module]


def node_command(params: dict[str, Any] | None = None, remaps: dict[str, str] | None = None,
                 params_file: Path | None = PARAMS_FILE,
                 name: str = 'segment_node', module: str = 'dmnet_ros.segment_node'
                 ) -> list[str]:
    """argv for a node: `--params-file` first, then `-p` overrides and `-r` remappings."""
    cmd = executable(name, module) + ['--ros-args']
    if params_file is not None:
        cmd += ['--params-file', str(params_file)]
    for key, value in (params or {}).items():
        # Flow-style YAML keeps lists as [a, b] and strings quoted where needed.
        text = yaml.safe_dump(value, default_flow_style=True).strip()
        text = text.removesuffix('\n...').removesuffix('...').strip()
        cmd += ['-p', f'{key}:={text}']
    for src, dst in (remaps or {}).items():
        cmd += ['-r', f'{src}:={dst}']
    return cmd


class NodeProcess:
    """A ROS node in its own process group, output captured to a file; always stopped on exit.

    Args:
        params: `-p` overrides on top of `params_file`.
        remaps: topic remappings, e.g. {'image': '/endoscope/image_raw'}.
        env: child environment (default `ros_env()`).
        cmd: a full argv instead of the segment_node one (e.g. the replay harness).
    """

    def __init__(self, params: dict[str, Any] | None = None,
                 remaps: dict[str, str] | None = None, env: dict[str, str] | None = None,
                 params_file: Path | None = PARAMS_FILE, cmd: list[str] | None = None) -> None:
        self.cmd = cmd or node_command(params, remaps, params_file)
        self.env = env or ros_env()
        self._log = tempfile.NamedTemporaryFile(prefix='dmnet_node_', suffix='.log', delete=False)
        self.log_path = Path(self._log.name)
        self.proc: subprocess.Popen | None = None

    def start(self) -> NodeProcess:
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def output(self) -> str:
        """Everything the process wrote so far (stdout and stderr)."""
        return self.log_path.read_text(errors='replace')

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_for_output(self, text: str, timeout: float = 30.0) -> None:
        """Wait until `text` appears in the output; fail early if the process exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if not self.alive():
                raise AssertionError(f'process exited with {self.proc.returncode} before '
                                     f'printing {text!r}:\n{self.output()[-4000:]}')
            time.sleep(0.1)
        raise AssertionError(f'no {text!r} within {timeout} s:\n{self.output()[-4000:]}')

    def wait_ready(self, timeout: float = 40.0) -> None:
        self.wait_for_output(READY_LINE, timeout)

    def wait_exit(self, timeout: float = 40.0) -> int:
        """Wait for the process to end by itself; returns its exit code."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f'process still running after {timeout} s:\n'
                                 f'{self.output()[-4000:]}') from exc

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGINT, then SIGKILL of this process's own group if it does not end in time."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=timeout)
        self._log.close()
        return self.proc.returncode

    def stop_cleanly(self, timeout: float = 10.0) -> None:
        """`stop()`, and fail with the process's output unless SIGINT ended it with exit 0."""
        rc = self.stop(timeout)
        assert rc == 0, f'unclean exit on SIGINT (exit {rc}):\n{self.output()[-3000:]}'

    def __enter__(self) -> NodeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        with contextlib.suppress(OSError):
            self.log_path.unlink()


class Collector:
    """Messages received on one subscription, in arrival order (thread-safe append)."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self._lock = threading.Lock()

    def __call__(self, msg: Any) -> None:
        with self._lock:
            self.messages.append(msg)

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()

    def __len__(self) -> int:
        return len(self.messages)


class RosClient:
    """A test-side rclpy node in a fresh Context, spun by the test while it waits.

    Args:
        env: the ROS variables (domain, discovery range) are applied to os.environ first.
        name: node name.
    """

    def __init__(self, env: dict[str, str] | None = None, name: str = 'dmnet_test') -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor

        apply_ros_env(env or ros_env())
        self.context = Context()
        rclpy.init(context=self.context, domain_id=int(os.environ['ROS_DOMAIN_ID']))
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def subscribe(self, msg_type: type, topic: str, qos: Any = 10) -> Collector:
        col = Collector()
        self.node.create_subscription(msg_type, topic, col, qos)
        return col

    def spin_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=min(0.05, max(0.0, deadline - time.monotonic())))

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 20.0,
                 what: str = 'condition') -> Any:
        """Spin until `predicate()` is truthy; returns its value or fails naming `what`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            self.executor.spin_once(timeout_sec=0.05)
        value = predicate()
        if value:
            return value
        raise AssertionError(f'timed out after {timeout} s waiting for {what}')

    def wait_for_subscriber(self, publisher: Any, timeout: float = 20.0) -> None:
        """Wait until `publisher` is matched by at least one subscription."""
        self.wait_for(lambda: publisher.get_subscription_count() > 0, timeout,
                      f'a subscriber on {publisher.topic_name}')

    def wait_for_publisher(self, topic: str, timeout: float = 20.0) -> None:
        """Wait until some node publishes `topic`."""
        self.wait_for(lambda: self.node.count_publishers(topic) > 0, timeout,
                      f'a publisher on {topic}')

    def call(self, srv_type: type, name: str, request: Any, timeout: float = 20.0) -> Any:
        """Call a service and spin until the response arrives."""
        client = self.node.create_client(srv_type, name)
        self.wait_for(lambda: client.service_is_ready(), timeout, f'service {name}')
        future = client.call_async(request)
        self.wait_for(future.done, timeout, f'response from {name}')
        self.node.destroy_client(client)
        return future.result()

    def close(self) -> None:
        import rclpy

        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        with contextlib.suppress(Exception):
            rclpy.shutdown(context=self.context)

    def __enter__(self) -> RosClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _matches(status_name: str, name_contains: str, node: str | None) -> bool:
    """The node's statuses are named '<fully qualified node name>: segmentation'."""
    if node is not None:
        return status_name.split(':', 1)[0] == node
    return name_contains in status_name


def diagnostics_values(msg: Any, name_contains: str = 'dmnet', node: str | None = None
                       ) -> dict[str, str] | None:
    """key -> value of the first matching status in a DiagnosticArray (see `_matches`)."""
    for status in msg.status:
        if _matches(status.name, name_contains, node):
            return {kv.key: kv.value for kv in status.values}
    return None


def latest_diagnostics(collector: Collector, name_contains: str = 'dmnet',
                       node: str | None = None) -> tuple[Any, dict[str, str]] | None:
    """(status, values) of the newest matching status in the collected DiagnosticArrays."""
    for msg in reversed(collector.messages):
        for status in msg.status:
            if _matches(status.name, name_contains, node):
                return status, {kv.key: kv.value for kv in status.values}
    return None


def set_parameters(client: RosClient, node_name: str, values: dict[str, Any],
                   timeout: float = 20.0) -> list[Any]:
    """Set parameters on a remote node; returns one SetParametersResult per value."""
    from rclpy.parameter import Parameter
    from rclpy.parameter_client import AsyncParameterClient

    pc = AsyncParameterClient(client.node, node_name)
    client.wait_for(pc.services_are_ready, timeout, f'parameter services of {node_name}')
    future = pc.set_parameters([Parameter(k, value=v) for k, v in values.items()])
    client.wait_for(future.done, timeout, f'set_parameters on {node_name}')
    return list(future.result().results)


def list_parameters(client: RosClient, node_name: str, timeout: float = 20.0) -> list[str]:
    """Names of every parameter a remote node declares."""
    from rclpy.parameter_client import AsyncParameterClient

    pc = AsyncParameterClient(client.node, node_name)
    client.wait_for(pc.services_are_ready, timeout, f'parameter services of {node_name}')
    future = pc.list_parameters()
    client.wait_for(future.done, timeout, f'list_parameters on {node_name}')
    return list(future.result().result.names)


class DiagnosticsWatch:
    """Follows the newest `/diagnostics` status of one node.

    Args:
        client: the test node that subscribes.
        name_contains: match statuses whose name contains this.
        node: or match one node exactly by its fully qualified name, e.g. '/right/dmnet'.
    """

    def __init__(self, client: RosClient, name_contains: str = 'dmnet',
                 node: str | None = None) -> None:
        from diagnostic_msgs.msg import DiagnosticArray

        self.client = client
        self.name_contains = name_contains
        self.node = node
        self.collector = client.subscribe(DiagnosticArray, '/diagnostics')

    def latest(self) -> tuple[Any, dict[str, str]] | None:
        return latest_diagnostics(self.collector, self.name_contains, self.node)

    def value(self, key: str, default: str = '') -> str:
        got = self.latest()
        return got[1].get(key, default) if got else default

    def count(self, key: str) -> int:
        """An integer counter from the newest status (0 before the first one)."""
        return int(self.value(key, '0'))

    def wait(self, predicate: Callable[[Any, dict[str, str]], bool], timeout: float = 20.0,
             what: str = 'diagnostics') -> tuple[Any, dict[str, str]]:
        """Spin until the newest status satisfies `predicate(status, values)`."""
        def check() -> tuple[Any, dict[str, str]] | None:
            got = self.latest()
            return got if got is not None and predicate(*got) else None
        try:
            return self.client.wait_for(check, timeout, what)
        except AssertionError as exc:
            raise AssertionError(f'{exc}; last diagnostics: {self.latest()}') from None

    def wait_settled(self, timeout: float = 20.0) -> dict[str, str]:
        """Wait until every received frame is accounted for (answered, dropped or rejected)."""
        def settled(_s: Any, v: dict[str, str]) -> bool:
            return (int(v['frames_pending']) == 0 and int(v['frames_received'])
                    == int(v['frames_answered']) + int(v['frames_dropped'])
                    + int(v['frames_rejected']))
        return self.wait(settled, timeout, 'all frames accounted for')[1]
