"""What reaches the node from a camera in another process: frames sent / received / answered /
dropped / lost in transport, per frame size and camera QoS, at camera rate.

Starts `segment_node` with default parameters (plus `device` and, for the "keeps up" rows, a
small `inference_size`) on a private localhost-only ROS domain, then runs the camera stand-in
(test/ros/camera_process.py) once per size and QoS, reading the node's own counters from
/diagnostics before and after. Prints a Markdown table (and writes JSON with --json).

    python -m bench.camera_rates --seconds 3
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _rostest_utils():
    """The ROS tests' helpers (test/ros/rostest_utils.py: node process, client, diagnostics)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'rostest_utils', REPO / 'test' / 'ros' / 'rostest_utils.py')
    module = importlib.util.module_from_spec(spec)
    sys.modules['rostest_utils'] = module
    spec.loader.exec_module(module)
    return module


_utils = _rostest_utils()
DiagnosticsWatch, NodeProcess, RosClient, ros_env = (
    _utils.DiagnosticsWatch, _utils.NodeProcess, _utils.RosClient, _utils.ros_env)

SIZES = ((640, 480), (1280, 1024), (1920, 1080))
COUNTERS = ('frames_received', 'frames_answered', 'frames_dropped', 'frames_lost_in_transport',
            'frames_skipped_in_transport')


def _counters(diag: DiagnosticsWatch) -> dict[str, int]:
    v = diag.latest()[1]
    return {k: int(v[k]) for k in COUNTERS}


def run_model(env: dict, model: str, params: dict, args: argparse.Namespace) -> list[dict]:
    """One node process, every size and camera QoS against it."""
    rows = []
    with NodeProcess(params, remaps={'image': '/cam/image_raw'}, env=env) as node, \
            RosClient(env, name='camera_rates') as client:
        node.wait_ready(300)
        diag = DiagnosticsWatch(client, node='/dmnet')
        for width, height in args.sizes:
            for qos in args.qos:
                # Let 'auto' settle on the publishers now present (none) before a new camera.
                diag.wait(lambda s, v: v['input_reliability'] == 'reliable'
                          and v['frames_pending'] == '0', 60, 'node idle')
                before = _counters(diag)
                count = int(args.rate * args.seconds)
                cam = subprocess.Popen(
                    [sys.executable, str(REPO / 'test' / 'ros' / 'camera_process.py'),
                     '--width', str(width), '--height', str(height), '--encoding', 'bgr8',
                     '--reliability', qos, '--count', str(count), '--rate', str(args.rate),
                     '--depth', str(args.camera_depth), '--linger', '1.0'],
                    env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                client.wait_for(lambda c=cam: c.poll() is not None, 300, 'camera')
                out = cam.stdout.read()
                sent = json.loads(next(x for x in out.splitlines() if x.startswith('{')))['sent']
                after = diag.wait_settled(120)
                client.spin_for(1.5)
                after = _counters(diag)
                row = {'model': model, 'size': f'{width}x{height}', 'camera_qos': qos,
                       'rate_hz': args.rate, 'sent': sent,
                       **{k.removeprefix('frames_'): after[k] - before[k] for k in COUNTERS}}
                rows.append(row)
                print(json.dumps(row), flush=True)
        node.stop()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--seconds', type=float, default=3.0, help='camera run length per row')
    p.add_argument('--rate', type=float, default=30.0, help='camera rate (Hz)')
    p.add_argument('--device', default='cpu')
    p.add_argument('--camera-depth', type=int, default=10,
                   help="the camera's publisher history depth (rclcpp's default is 10)")
    p.add_argument('--small', default='64,64', help="'keeps up' inference size H,W")
    p.add_argument('--json', type=Path, help='also write the rows here')
    p.add_argument('--sizes', default=','.join(f'{w}x{h}' for w, h in SIZES),
                   help='frame sizes WxH, comma-separated')
    p.add_argument('--qos', default='reliable,best_effort', help='camera QoS to run')
    p.add_argument('--models', default='small,default', help='model steps to run')
    p.add_argument('-p', '--param', action='append', default=[],
                   help='extra node parameter name:=value (YAML value), repeatable')
    args = p.parse_args(argv)
    args.sizes = [tuple(int(x) for x in s.split('x')) for s in args.sizes.split(',')]
    args.qos = args.qos.split(',')
    extra = {k: yaml.safe_load(v) for k, v in (x.split(':=', 1) for x in args.param)}
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    env = ros_env()
    h, w = (int(x) for x in args.small.split(','))
    rows = []
    if 'small' in args.models:
        rows += run_model(env, f'small {h}x{w}', {'device': args.device,
                                                  'inference_size': [h, w], **extra}, args)
    if 'default' in args.models:
        rows += run_model(env, 'default', {'device': args.device, **extra}, args)
    print('\n| model step | frame | camera QoS | sent | received | answered | dropped '
          '(newest wins) | lost (event) | skipped (seq. gaps) |')
    print('|---|---|---|---|---|---|---|---|---|')
    for r in rows:
        print(f"| {r['model']} | {r['size']} | {r['camera_qos']} | {r['sent']} | "
              f"{r['received']} | {r['answered']} | {r['dropped']} | {r['lost_in_transport']} | "
              f"{r['skipped_in_transport']} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
