"""As a lab runs it: a best-effort controller at 1920x1080, then a camera that dies.

Starts `segment_node` the way README says (no launch file: default parameters, `device` and the
remap), a reliable camera stand-in (test/ros/camera_process.py) in its own process, and counts
what a `qos_profile_sensor_data` subscriber of /dmnet/mask (what most controllers use) and a
reliable one receive. Then a second camera runs until it is killed (SIGKILL: no goodbye on the
graph), and the time from the kill to the first WARN of '/dmnet: segmentation' on
/diagnostics is printed beside `diagnostics.stale_s` + one period.

    .venv/bin/python -m bench.controller_check                     # 1920x1080, 2 Hz, 10 frames
    DMNET_FASTDDS_LARGE_FRAMES=0 .venv/bin/python -m bench.controller_check   # the node without
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _load_test_utils():
    """The cross-process helpers of the ROS tests (test/ros/rostest_utils.py), by file: the
    repository's test/ is no package (and `test` is the standard library's)."""
    spec = importlib.util.spec_from_file_location('rostest_utils',
                                                  REPO / 'test' / 'ros' / 'rostest_utils.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_utils = _load_test_utils()
DiagnosticsWatch, NodeProcess, RosClient, ros_env = (
    _utils.DiagnosticsWatch, _utils.NodeProcess, _utils.RosClient, _utils.ros_env)

CAMERA = REPO / 'test' / 'ros' / 'camera_process.py'
TOPIC = '/cam/image_raw'


def camera(env: dict, args: argparse.Namespace, count: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(CAMERA), '--topic', TOPIC, '--width', str(args.width),
         '--height', str(args.height), '--encoding', 'bgr8', '--reliability', 'reliable',
         '--count', str(count), '--rate', str(args.rate), '--linger', '1.0'],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def main(argv: list[str] | None = None) -> int:
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image

    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--width', type=int, default=1920)
    p.add_argument('--height', type=int, default=1080)
    p.add_argument('--rate', type=float, default=2.0)
    p.add_argument('--count', type=int, default=10)
    p.add_argument('--device', default='cpu')
    args = p.parse_args(argv)
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    env = ros_env()
    if os.environ.get('DMNET_FASTDDS_LARGE_FRAMES') is not None:
        env['DMNET_FASTDDS_LARGE_FRAMES'] = os.environ['DMNET_FASTDDS_LARGE_FRAMES']
    out: dict = {'size': f'{args.width}x{args.height}', 'rate_hz': args.rate}
    with NodeProcess({'device': args.device}, remaps={'image': TOPIC}, env=env) as node, \
            RosClient(env, name='controller_check') as client:
        node.wait_ready(300)
        out['node_profile_line'] = next(
            (x.split(']: ', 1)[-1] for x in node.output().splitlines()
             if 'large-frame profile' in x), '')
        best_effort = client.subscribe(Image, '/dmnet/mask', qos_profile_sensor_data)
        reliable = client.subscribe(Image, '/dmnet/mask',
                                    QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
        diag = DiagnosticsWatch(client, node='/dmnet')
        diag.wait(lambda s, v: True, 60, 'diagnostics')
        cam = camera(env, args, args.count)
        client.wait_for(lambda: cam.poll() is not None, 300, 'the camera to finish')
        report = json.loads(next(x for x in cam.stdout.read().splitlines()
                                 if x.startswith('{')))
        sent = {tuple(s) for s in report['stamps']}
        diag.wait_settled(120)
        client.spin_for(2.0)

        def got(col) -> int:
            return len({(m.header.stamp.sec, m.header.stamp.nanosec) for m in col.messages}
                       & sent)
        values = diag.latest()[1]
        out.update(sent=len(sent), answered=int(values['frames_answered']),
                   best_effort_masks=got(best_effort), reliable_masks=got(reliable))

        # The camera dies while it streams: SIGKILL (its publisher stays matched until the DDS
        # lease ends), then SIGINT (it leaves the graph).
        stale_s, period = 3.0, 1.0      # the node's defaults (config/dmnet.yaml)
        out['bound_s'] = stale_s + period
        for sig in (signal.SIGKILL, signal.SIGINT):
            cam = camera(env, args, 10_000)
            before = len(reliable.messages)
            client.wait_for(lambda b=before: len(reliable.messages) >= b + 2, 300,
                            'masks flowing')
            diag.wait(lambda s, v: 'no frame' not in s.message, 60, 'frames flowing')
            os.kill(cam.pid, sig)
            killed = time.monotonic()
            status, _ = diag.wait(lambda s, v: s.level == s.WARN and 'no frame' in s.message, 60,
                                  'WARN after the kill')
            waited = round(time.monotonic() - killed, 2)
            freq = next(st for st in diag.collector.messages[-1].status
                        if st.name == '/dmnet: input frequency')
            out[f'{sig.name}_warn_after_s'] = waited
            out[f'{sig.name}_warn_message'] = status.message
            out[f'{sig.name}_input_frequency'] = f'level {freq.level[0]}: {freq.message}'
            cam.wait()
            if sig == signal.SIGINT:    # once the graph knows: the node names the cause
                status, _ = diag.wait(lambda s, v: 'no publisher matched' in s.message, 60,
                                      'no publisher matched')
                out['SIGINT_then'] = status.message
        node.stop()
    print(json.dumps(out, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
