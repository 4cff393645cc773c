"""What reaches the node from a camera in another process: frames sent / received / answered /
dropped / lost in transport, per frame size and camera QoS, at camera rate; beside it the
standalone `Segmenter.step` rate at each size, measured in the same run (same environment and
threads as the node, before the node starts), the ratio answered / standalone, and where the
node's time per answered frame went (its `stage_total_ms.*` diagnostics over the row).

Starts `segment_node` with default parameters (plus `device` and, for the "keeps up" rows, a
small `inference_size`) on a private localhost-only ROS domain, then runs the camera stand-in
(test/ros/camera_process.py) once per size and QoS, reading the node's own counters from
/diagnostics before and after. Prints a Markdown table (and writes JSON with --json).

    python -m bench.camera_rates --seconds 3
    python -m bench.camera_rates --seconds 5 --sizes 640x480,1280x1024,1920x1080 \
        --qos reliable --models default --json bench/results/camera_rates.json
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
STAGES = ('take', 'convert', 'prepare', 'model', 'post', 'publish_mask', 'camera_info',
          'overlay', 'diagnostics')
# The step alone, in a process like the node's: seconds, then one JSON line.
STANDALONE = """
import json, sys, time
import numpy as np
from dmnet_core import load_segmenter
args = json.loads(sys.argv[1])
size = args['inference_size'] if args['inference_size'] else None
seg = load_segmenter(None, args['device'], inference_size=size)
seg.warm_up()
rng = np.random.default_rng(0)
out = {}
for w, h in args['sizes']:
    frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(4)]
    seg.reset()
    for f in frames:
        seg.step(f)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < args['seconds'] or n < 5:
        seg.step(frames[n % 4])
        n += 1
    out[f'{w}x{h}'] = n / (time.perf_counter() - t0)
print(json.dumps(out))
"""


def _counters(diag: DiagnosticsWatch) -> dict[str, float]:
    v = diag.latest()[1]
    out = {k: int(v[k]) for k in COUNTERS}
    out.update({f'stage_total_ms.{s}': float(v.get(f'stage_total_ms.{s}', 0.0))
                for s in STAGES})
    return out


def standalone_rates(env: dict, params: dict, args: argparse.Namespace) -> dict[str, float]:
    """`Segmenter.step` per second at each frame size, alone, in the node's environment."""
    spec = {'device': params.get('device', 'cpu'),
            'inference_size': params.get('inference_size'), 'seconds': args.standalone_seconds,
            'sizes': [list(s) for s in args.sizes]}
    out = subprocess.run([sys.executable, '-c', STANDALONE, json.dumps(spec)], env=env,
                         capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_model(env: dict, model: str, params: dict, args: argparse.Namespace) -> list[dict]:
    """One node process, every size and camera QoS against it."""
    rows = []
    alone = standalone_rates(env, params, args)
    print(json.dumps({'model': model, 'standalone_steps_per_s': alone}), flush=True)
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
                # Per second of camera time; the standalone rate of the same size and run.
                row['answered_per_s'] = row['answered'] * args.rate / max(sent, 1)
                row['standalone_per_s'] = alone[f'{width}x{height}']
                row['answered_over_standalone'] = row['answered_per_s'] / row['standalone_per_s']
                n = max(row['answered'], 1)
                row['stage_ms'] = {
                    s: (after[f'stage_total_ms.{s}'] - before[f'stage_total_ms.{s}'])
                    / (max(row['received'], 1) if s == 'take' else n)
                    for s in STAGES if s != 'diagnostics'}
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
    p.add_argument('--fastdds-profile', default='',
                   help="Fast DDS XML profile for the node and the camera, e.g. "
                        "config/fastdds_large_frames.xml ('' = Fast DDS defaults)")
    p.add_argument('--standalone-seconds', type=float, default=4.0,
                   help='seconds of standalone steps per size')
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
    if args.fastdds_profile:
        env['FASTDDS_DEFAULT_PROFILES_FILE'] = str(Path(args.fastdds_profile).resolve())
    h, w = (int(x) for x in args.small.split(','))
    rows = []
    if 'small' in args.models:
        rows += run_model(env, f'small {h}x{w}', {'device': args.device,
                                                  'inference_size': [h, w], **extra}, args)
    if 'default' in args.models:
        rows += run_model(env, 'default', {'device': args.device, **extra}, args)
    print('\n| model step | frame | camera QoS | sent | received | answered | dropped '
          '(newest wins) | lost (event) | skipped (seq. gaps) | answered/s | standalone/s | '
          'ratio |')
    print('|---|---|---|---|---|---|---|---|---|---|---|---|')
    for r in rows:
        print(f"| {r['model']} | {r['size']} | {r['camera_qos']} | {r['sent']} | "
              f"{r['received']} | {r['answered']} | {r['dropped']} | {r['lost_in_transport']} | "
              f"{r['skipped_in_transport']} | {r['answered_per_s']:.1f} | "
              f"{r['standalone_per_s']:.1f} | {r['answered_over_standalone']:.2f} |")
    names = [s for s in STAGES if s != 'diagnostics']
    print('\nNode time per answered frame, ms (take: per received frame, executor thread)\n')
    print('| model step | frame | camera QoS | ' + ' | '.join(names) + ' | sum |')
    print('|---|---|---|' + '---|' * (len(names) + 1))
    for r in rows:
        st = r['stage_ms']
        print(f"| {r['model']} | {r['size']} | {r['camera_qos']} | "
              + ' | '.join(f'{st[s]:.1f}' for s in names)
              + f" | {sum(st[s] for s in names if s != 'take'):.1f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
