"""`segment_node` as a child process of the replay harness (log file, ready line, stop)."""
from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from dmnet_ros.replay.options import READY_LINE, ReplayError, ReplayOptions


class NodeProcess:
    """`segment_node` as a child process; its output goes to a log file and is watched for
    the ready line. Always stopped by `stop()` (SIGINT, then SIGKILL)."""

    def __init__(self, opts: ReplayOptions, log_path: Path) -> None:
        code = 'import sys; from dmnet_ros.segment_node import main; sys.exit(main())'
        # Reliable input: with the default best-effort reader, Fast DDS loses frames larger
        # than its shared-memory segment (~512 KB, e.g. 854 x 480 rgb8) whole. The node still
        # keeps only the newest frame (depth 1), so rate mode measures its own drops.
        cmd = [sys.executable, '-c', code, '--ros-args', '-r', f'image:={opts.image_topic}',
               '-p', f'device:={opts.device}', '-p', 'input.reliability:=reliable']
        if opts.checkpoint:
            cmd += ['-p', f'checkpoint:={opts.checkpoint}']
        if opts.inference_size:
            h, w = opts.inference_size
            cmd += ['-p', f'inference_size:=[{h}, {w}]']
        for prm in opts.node_params:
            cmd += ['-p', prm]
        env = dict(os.environ)
        # The package's own source tree first (this file is dmnet_ros/replay/child_node.py),
        # so the child imports the same dmnet code.
        root = str(Path(__file__).resolve().parents[2])
        env['PYTHONPATH'] = os.pathsep.join([root] + [p for p in
                                                      env.get('PYTHONPATH', '').split(os.pathsep)
                                                      if p])
        env['PYTHONUNBUFFERED'] = '1'
        env.setdefault('RCUTILS_LOGGING_BUFFERED_STREAM', '0')
        self.log_path = log_path
        self._log = log_path.open('w')
        self._log.write('$ ' + ' '.join(cmd) + '\n')
        self._log.flush()
        self._ready = threading.Event()
        self._tail: collections.deque[str] = collections.deque(maxlen=15)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, text=True, bufsize=1)
        self._reader = threading.Thread(target=self._read, name='node-log', daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._log.write(line)
            self._log.flush()
            self._tail.append(line.rstrip())
            if READY_LINE in line:
                self._ready.set()

    def tail(self) -> str:
        """The node's last log lines on one line (for error messages)."""
        return ' | '.join(x for x in self._tail if x.strip())

    def wait_ready(self, timeout: float) -> None:
        """Block until the node printed its ready line; a clear error if it exits or hangs."""
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.2):
            if self.proc.poll() is not None:
                self._reader.join(timeout=2.0)
                raise ReplayError(f'segment_node exited with code {self.proc.returncode} before '
                                  f'it was ready (log {self.log_path}): {self.tail()}')
            if time.monotonic() > deadline:
                raise ReplayError(f'segment_node not ready after {timeout:.0f} s '
                                  f'(log {self.log_path}): {self.tail()}')

    def stop(self, timeout: float = 10.0) -> int | None:
        """Interrupt the node (it shuts down cleanly on SIGINT), kill it if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5.0)
        self._reader.join(timeout=2.0)
        self._log.close()
        return self.proc.returncode

