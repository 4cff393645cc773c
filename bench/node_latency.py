"""End-to-end latency of the dmnet node: publish a frame -> its mask received (not a test).

Starts `segment_node` as its own process (own DDS domain, localhost discovery), publishes
stamped frames at a fixed rate (or closed loop: the next frame once the previous mask came back),
and reports, at the node's default inference size unless told otherwise:
  - end-to-end latency, measured here: receive time of the mask minus the frame's stamp
    (one machine, one clock), p50 / p95 / max;
  - the node's own figures from /diagnostics: model inference time p50 / p95 and its
    latency (publish time minus stamp);
  - frames sent, answered, dropped by the node, lost;
  - where the node's time per frame went (its `stage_ms.*` diagnostics: take, convert, prepare,
    model, post, publish_mask, camera_info, overlay) and each stage's share of their sum.

    python -m bench.node_latency --frames 60 --rate 5 --json out.json
    python -m bench.node_latency --device cuda --rate 30
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dmnet_core.cli import parse_model_size, parse_size

REPO = Path(__file__).resolve().parents[1]
TOPIC = '/bench/image_raw'
# Raw frames above 0.5 MB need a bigger Fast DDS shared-memory segment on the publisher, else
# most best-effort frames are lost (see the profile); both processes here use it.
FASTDDS_PROFILE = REPO / 'config' / 'fastdds_large_frames.xml'


def _env(domain: int, profile: str) -> dict[str, str]:
    env = dict(os.environ)
    if profile:
        env['FASTDDS_DEFAULT_PROFILES_FILE'] = profile
    else:
        env.pop('FASTDDS_DEFAULT_PROFILES_FILE', None)
    env.update({'ROS_DOMAIN_ID': str(domain), 'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST',
                'PYTHONUNBUFFERED': '1', 'RCUTILS_COLORIZED_OUTPUT': '0',
                'PYTHONPATH': os.pathsep.join(filter(None, [str(REPO),
                                                            env.get('PYTHONPATH', '')]))})
    env.pop('ROS_LOCALHOST_ONLY', None)
    return env


def _node_cmd(args: argparse.Namespace) -> list[str]:
    script = Path(sys.executable).parent / 'segment_node'
    cmd = [str(script)] if script.is_file() else [sys.executable, '-m', 'dmnet_ros.segment_node']
    cmd += ['--ros-args', '--params-file', str(REPO / 'config' / 'dmnet.yaml'),
            '-p', f'device:={args.device}', '-p', f'precision:={args.precision}',
            '-p', 'diagnostics.period_s:=0.5', '-r', f'image:={TOPIC}']
    if args.inference_size:
        h, w = args.inference_size
        cmd += ['-p', f'inference_size:=[{h}, {w}]']
    for extra in args.param:
        cmd += ['-p', extra]
    return cmd


def _wait_ready(proc: subprocess.Popen, log: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors='replace')
        if 'dmnet ready' in text:
            return text
        if proc.poll() is not None:
            raise SystemExit(f'node exited with {proc.returncode}:\n{text[-3000:]}')
        time.sleep(0.1)
    raise SystemExit(f'node not ready after {timeout} s:\n{log.read_text()[-3000:]}')


def run(args: argparse.Namespace) -> dict:
    """Start the node, measure, stop it; returns the results dict."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from dmnet_ros.image_codec import rgb_to_image

    domain = args.domain_id if args.domain_id is not None else 100 + os.getpid() % 100
    env = _env(domain, args.fastdds_profile)
    log = Path(tempfile.mkstemp(prefix='dmnet_bench_', suffix='.log')[1])
    with log.open('wb') as fh:
        proc = subprocess.Popen(_node_cmd(args), env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        node_log = _wait_ready(proc, log, args.startup_timeout)
        for key in ('ROS_DOMAIN_ID', 'ROS_AUTOMATIC_DISCOVERY_RANGE',
                    'FASTDDS_DEFAULT_PROFILES_FILE'):
            if key in env:
                os.environ[key] = env[key]
            else:
                os.environ.pop(key, None)
        ctx = Context()
        rclpy.init(context=ctx, domain_id=domain)
        node = rclpy.create_node('dmnet_bench', context=ctx)
        ex = SingleThreadedExecutor(context=ctx)
        ex.add_node(node)
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        received: dict[tuple[int, int], float] = {}
        diags: list = []
        node.create_subscription(
            Image, '/dmnet/mask',
            lambda m: received.setdefault((m.header.stamp.sec, m.header.stamp.nanosec),
                                          time.time()), qos)
        node.create_subscription(DiagnosticArray, '/diagnostics', diags.append, 10)
        pub = node.create_publisher(Image, TOPIC, qos)
        deadline = time.monotonic() + 20
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            ex.spin_once(timeout_sec=0.05)

        h, w = args.size
        rng = np.random.default_rng(0)
        frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(4)]
        sent: dict[tuple[int, int], float] = {}
        period = 1.0 / args.rate if args.rate > 0 else 0.0
        total = args.warmup + args.frames
        for i in range(total):
            t_send = time.time()
            msg = rgb_to_image(frames[i % 4], 'bgr8')
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(time.time_ns(), 10**9)
            msg.header.frame_id = 'bench'
            key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
            if i >= args.warmup:
                sent[key] = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
            pub.publish(msg)
            if period == 0.0:   # closed loop: wait for this mask (or 5 s)
                until = time.monotonic() + 5.0
                while key not in received and time.monotonic() < until:
                    ex.spin_once(timeout_sec=0.01)
            else:
                until = t_send + period
                while time.time() < until:
                    ex.spin_once(timeout_sec=max(0.0, min(0.01, until - time.time())))
        until = time.monotonic() + 5.0
        while not set(sent) <= set(received) and time.monotonic() < until:
            ex.spin_once(timeout_sec=0.02)
        n_diag = len(diags)
        until = time.monotonic() + 2.0
        while len(diags) < n_diag + 2 and time.monotonic() < until:  # a fresh status
            ex.spin_once(timeout_sec=0.05)
        lat = np.array([(received[k] - t) * 1e3 for k, t in sent.items() if k in received])
        values = {}
        for arr in reversed(diags):
            st = next((s for s in arr.status if 'dmnet' in s.name), None)
            if st is not None:
                values = {kv.key: kv.value for kv in st.values}
                break
        ex.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.unlink(missing_ok=True)

    def pct(q: float) -> float:
        return float(np.percentile(lat, q)) if lat.size else float('nan')

    stages = {k.removeprefix('stage_ms.'): float(v) for k, v in values.items()
              if k.startswith('stage_ms.') and k != 'stage_ms.diagnostics'}
    total = sum(stages.values())

    return {
        'device': values.get('device', args.device),
        'precision': values.get('precision', args.precision),
        'inference_size': values.get('inference_size', ''),
        'input_size': f'{h}x{w}',
        'rate_hz': args.rate,
        'frames_sent': len(sent),
        'masks_received': int(lat.size),
        'fastdds_profile': args.fastdds_profile or '(Fast DDS defaults)',
        'input_reliability': next((p.split(':=')[1] for p in args.param
                                   if p.startswith('input.reliability:=')), 'auto'),
        'node_frames_received': int(values.get('frames_received', -1)),
        'node_frames_dropped': int(values.get('frames_dropped', -1)),
        'e2e_latency_ms_p50': pct(50),
        'e2e_latency_ms_p95': pct(95),
        'e2e_latency_ms_max': float(lat.max()) if lat.size else float('nan'),
        'e2e_latency_ms_mean': float(lat.mean()) if lat.size else float('nan'),
        'node_inference_ms_p50': float(values.get('inference_ms_p50', 'nan')),
        'node_inference_ms_p95': float(values.get('inference_ms_p95', 'nan')),
        'node_latency_ms_p50': float(values.get('latency_ms_p50', 'nan')),
        'node_latency_ms_p95': float(values.get('latency_ms_p95', 'nan')),
        'model_note': next((ln.strip() for ln in node_log.splitlines()
                            if 'randomly initialised' in ln), 'trained checkpoint'),
        'node_warmup_ms': float(values.get('warmup_ms', 'nan')),
        'stage_ms': stages,
        'stage_share': {k: v / total for k, v in stages.items()} if total > 0 else {},
    }


def run_model_only(args: argparse.Namespace) -> dict:
    """The node's inference step alone (load_segmenter + step), no ROS needed."""
    from dmnet_core import load_segmenter

    seg = load_segmenter(None, args.device, precision=args.precision,
                         inference_size=args.inference_size)
    h, w = args.size
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(4)]
    wall, model = [], []
    for i in range(args.warmup + args.frames):
        t0 = time.perf_counter()
        seg.step(frames[i % 4])        # resize, transfer, model, argmax, back to numpy
        if i >= args.warmup:
            wall.append((time.perf_counter() - t0) * 1e3)
            model.append(seg.last_inference_ms)
    wall_a, model_a = np.array(wall), np.array(model)
    return {
        'device': str(seg.device), 'precision': seg.precision,
        'inference_size': 'x'.join(map(str, seg.inference_size)), 'input_size': f'{h}x{w}',
        'frames': len(wall), 'memory_bank_size': seg.memory_size,
        'step_wall_ms_p50': float(np.percentile(wall_a, 50)),
        'step_wall_ms_p95': float(np.percentile(wall_a, 95)),
        'node_inference_ms_p50': float(np.percentile(model_a, 50)),
        'node_inference_ms_p95': float(np.percentile(model_a, 95)),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--frames', type=int, default=60, help='measured frames (after warm-up)')
    ap.add_argument('--warmup', type=int, default=5, help='frames sent first, not measured')
    ap.add_argument('--rate', type=float, default=5.0,
                    help='frames per second; 0 = closed loop (next frame after each mask)')
    ap.add_argument('--size', type=parse_size, default=(480, 640), help='input frame HxW')
    ap.add_argument('--inference-size', type=parse_model_size, default=None,
                    help="model HxW (default: the node's default, the checkpoint's size)")
    ap.add_argument('--device', default='cpu', help='auto | cpu | cuda | cuda:N')
    ap.add_argument('--precision', default='auto', help='auto | fp32 | fp16 | bf16')
    ap.add_argument('--domain-id', type=int, default=None, help='ROS_DOMAIN_ID (default from pid)')
    ap.add_argument('--startup-timeout', type=float, default=90.0)
    ap.add_argument('--param', action='append', default=[], metavar='NAME:=VALUE',
                    help='extra node parameter, e.g. input.reliability:=reliable (repeatable)')
    ap.add_argument('--fastdds-profile', default=str(FASTDDS_PROFILE),
                    help="Fast DDS XML profile for the node and the publisher ('' = defaults)")
    ap.add_argument('--model-only', action='store_true',
                    help='no ROS: time Segmenter.step in-process (e.g. on a GPU machine '
                         'without ROS 2)')
    ap.add_argument('--json', type=Path, default=None, help='write the results here')
    args = ap.parse_args(argv)
    if args.frames < 1 or args.rate < 0:
        ap.error('--frames must be >= 1 and --rate >= 0')
    res = run_model_only(args) if args.model_only else run(args)
    width = max(len(k) for k in res)
    for k, v in res.items():
        if isinstance(v, dict):
            v = ', '.join(f'{n} {x:.3g}' for n, x in v.items())
        print(f'{k:<{width}}  {v:.1f}' if isinstance(v, float) else f'{k:<{width}}  {v}')
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))
    return 0 if res.get('masks_received', res.get('frames')) else 1


if __name__ == '__main__':
    sys.exit(main())
