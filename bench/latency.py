"""Speed of DMNet against its peers, side by side, on the same frames, in one process run.

    python -m bench.latency --json out/latency.json --plot out/latency.png

Per frame, after warm-up, on one generated surgical sequence (`dmnet_core.data.synth`), the
wall-clock time of one `step(rgb)` call (resize, normalise, network, resize back, argmax and
the copy of the labels to the host) for:

  backbone     DMNet with both memories off (the single-frame cost floor)
  local_only   DMNet with the Efficient Local Memory only
  global_only  DMNet with the Active Global Memory only
  dmnet        both memories (the paper's model)
  flow         the backbone + the previous prediction warped by RAFT-small flow (deep flow)
  dis          the backbone + the previous prediction warped by OpenCV DIS flow (classical)

The variants are stepped round-robin, frame by frame, so background load on a shared machine
hits them alike. Global-memory variants use the override `policy='recent'` so that the bank is
populated and every read uses `n_read` frames whatever the (untrained) weights say; the JSON
records it. Then: cost against the number of global-memory frames, cost against image size
(a small plot with `--plot`), and ROS 2 end-to-end latency of the `dmnet` node on the same
frames against the bare `Segmenter.step` (skipped with `--skip-ros`, which imports no rclpy).

JSON keys (medians in ms per frame): backbone_ms, dmnet_ms, local_only_ms, global_only_ms,
flow_baseline_ms, dis_baseline_ms, ros_overhead_ratio (node end-to-end / bare step), plus
`<key>_p95_ms`, `fps`, `ratio_to_backbone`, `peak_memory`, `memory_sweep`, `size_sweep`,
`ros`, `machine` and the run's settings.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bench.machine import cpu_name
from dmnet_core.cli import parse_model_size

REPO = Path(__file__).resolve().parents[1]

# The variants in table order: (name, JSON key of the median).
VARIANTS = (
    ('backbone', 'backbone_ms'),
    ('local_only', 'local_only_ms'),
    ('global_only', 'global_only_ms'),
    ('dmnet', 'dmnet_ms'),
    ('flow', 'flow_baseline_ms'),
    ('dis', 'dis_baseline_ms'),
)
# Memory overrides per DMNet variant; 'recent' keeps the bank full with untrained weights.
BANK_FILL = {'policy': 'recent'}
MEMORY_VARIANTS = {
    'backbone': {'local_enabled': False, 'global_enabled': False},
    'local_only': {'local_enabled': True, 'global_enabled': False},
    'global_only': {'local_enabled': False, 'global_enabled': True, **BANK_FILL},
    'dmnet': {'local_enabled': True, 'global_enabled': True, **BANK_FILL},
}
SWEEP_SIZES = ((128, 160), (256, 320), (512, 640), (1024, 1280))
SWEEP_BANK = (1, 2, 4, 8, 16)
# RAFT's all-pairs correlation volume grows with the square of the pixel count (1.6 GB in
# fp32 at 1024x1280): on the CPU the deep-flow baseline stops at this many pixels.
RAFT_CPU_MAX_PIXELS = 512 * 640
SEQUENCE_SEED = 7

log = logging.getLogger('bench.latency')


# ---------------------------------------------------------------------------- helpers

def size_str(size: tuple[int, int]) -> str:
    return f'{size[0]}x{size[1]}'


def stats_ms(samples: list[float]) -> dict[str, float]:
    """Median, p95, mean and FPS of per-frame times in ms."""
    a = np.asarray(samples, dtype=np.float64)
    med = float(np.median(a))
    return {'median_ms': round(med, 3), 'p95_ms': round(float(np.percentile(a, 95)), 3),
            'mean_ms': round(float(a.mean()), 3), 'fps': round(1000.0 / med, 2) if med else 0.0,
            'n': int(a.size)}


def rss_mb() -> float:
    """Resident set size of this process now, MiB."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def machine_info(device: str) -> dict[str, Any]:
    """Where the figures came from: CPU, cores, threads, torch/torchvision, CUDA device."""
    import torch
    import torchvision

    info: dict[str, Any] = {
        'cpu_model': cpu_name(), 'cpu_cores': os.cpu_count(),
        'cpu_affinity': len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else None,
        'torch_threads': torch.get_num_threads(), 'torch': torch.__version__,
        'torchvision': torchvision.__version__, 'python': platform.python_version(),
        'platform': platform.platform(), 'device': device, 'cuda_device': None,
        # Other jobs on a shared machine inflate p95s; the load average says how busy it was.
        'load_average_1_5_15': [round(v, 2) for v in os.getloadavg()],
    }
    with contextlib.suppress(ImportError, OSError):
        import psutil

        info['ram_gb'] = round(psutil.virtual_memory().total / 2**30, 1)
    if device.startswith('cuda') and torch.cuda.is_available():
        info['cuda_device'] = torch.cuda.get_device_name(torch.device(device))
        info['cuda_version'] = torch.version.cuda
    return info


def make_frames(size: tuple[int, int], n: int, seed: int = SEQUENCE_SEED) -> list[np.ndarray]:
    """`n` frames (H x W x 3 uint8 RGB) of one generated surgical sequence."""
    from dmnet_core.data.synth import generate_sequence

    return [rgb for rgb, _ in generate_sequence(seed, n, size)]


def sync(device: str) -> None:
    if device.startswith('cuda'):
        import torch

        torch.cuda.synchronize()


# ---------------------------------------------------------------------------- variants

class SegmenterBackbone:
    """The `Backbone` of `dmnet_core.baselines.FlowBaseline` from a memory-free Segmenter.

    Uses the Segmenter's own resizing, normalisation, autocast and network stages, so the
    flow baselines run exactly the backbone that the `backbone` variant times.
    """

    def __init__(self, seg: Any) -> None:
        import torch

        self.seg = seg
        cfg = seg.config
        self.mean = torch.tensor(cfg.mean, device=seg.device).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.std, device=seg.device).view(1, 3, 1, 1)

    def __call__(self, rgb: np.ndarray) -> tuple[Any, Any]:
        import torch
        import torch.nn.functional as F

        seg = self.seg
        x = seg._prepare(rgb)                          # 1 x 3 x h x w, normalised, on device
        with seg._autocast():
            skips, f32 = seg.model.encode(x)
            logits, _ = seg.model.step(skips, f32)     # 1 x K x h/4 x w/4
        logits = F.interpolate(logits.float(), size=x.shape[-2:], mode='bilinear',
                               align_corners=False)
        # Flow wants the frame in [0, 1]: undo the normalisation (cheaper than a 2nd resize).
        frame = (x * self.std + self.mean).clamp_(0.0, 1.0)
        return frame.contiguous(), torch.softmax(logits, dim=1)


class FlowStepper:
    """Wrap `FlowBaseline` so its labels come back at the input size, like `Segmenter.step`."""

    def __init__(self, baseline: Any) -> None:
        self.baseline = baseline

    def reset(self) -> None:
        self.baseline.reset()

    @property
    def memory_size(self) -> int:
        return 1 if self.baseline._prev_frame is not None else 0

    def step(self, rgb: np.ndarray) -> np.ndarray:
        import cv2

        labels = self.baseline.step(rgb)
        if labels.shape != rgb.shape[:2]:
            labels = cv2.resize(labels, (rgb.shape[1], rgb.shape[0]),
                                interpolation=cv2.INTER_NEAREST)
        return labels


def build_variants(args: argparse.Namespace, size: tuple[int, int],
                   names: tuple[str, ...] | None = None,
                   memory_extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Steppers (`step(rgb)`, `reset()`) for the named variants at inference size `size`."""
    import torch

    from bench.baselines import DisFlow, FlowBaseline, RaftFlow
    from dmnet_core import load_segmenter

    names = names or tuple(n for n, _ in VARIANTS)
    out: dict[str, Any] = {}
    for name in names:
        mem = dict(MEMORY_VARIANTS.get(name, MEMORY_VARIANTS['backbone']))
        if memory_extra and mem.get('global_enabled'):
            mem.update(memory_extra)
        seg = load_segmenter(args.checkpoint, args.device, precision=args.precision,
                             inference_size=size, memory=mem)
        if args.compile and not seg.compile_network():
            raise RuntimeError('--compile: torch.compile failed (see the warning above)')
        if name in MEMORY_VARIANTS:
            out[name] = seg
        elif name == 'flow':
            dtype = {'fp16': torch.float16, 'bf16': torch.bfloat16}.get(seg.precision)
            flow = RaftFlow(seg.device, dtype=dtype)
            out[name] = FlowStepper(FlowBaseline(SegmenterBackbone(seg), flow))
        elif name == 'dis':
            out[name] = FlowStepper(FlowBaseline(SegmenterBackbone(seg), DisFlow(args.dis_preset)))
        else:
            raise ValueError(f'unknown variant {name!r}')
    return out


def time_round_robin(steppers: dict[str, Any], frames: list[np.ndarray], warmup: int,
                     device: str) -> dict[str, list[float]]:
    """Step every variant on every frame in turn; per-frame ms after `warmup` frames."""
    times: dict[str, list[float]] = {name: [] for name in steppers}
    for s in steppers.values():
        s.reset()
    for i, rgb in enumerate(frames):
        for name, s in steppers.items():
            sync(device)
            start = time.perf_counter()
            s.step(rgb)
            sync(device)
            if i >= warmup:
                times[name].append((time.perf_counter() - start) * 1000.0)
    return times


def cuda_peaks(steppers: dict[str, Any], frames: list[np.ndarray]) -> dict[str, float]:
    """Peak CUDA memory allocated (MiB) per variant over a few frames, each on its own."""
    import torch

    peaks = {}
    for name, s in steppers.items():
        s.reset()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        for rgb in frames:
            s.step(rgb)
        torch.cuda.synchronize()
        peaks[name] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return peaks


# ---------------------------------------------------------------------------- sweeps

def memory_sweep(args: argparse.Namespace, frames: list[np.ndarray],
                 banks: tuple[int, ...]) -> list[dict[str, Any]]:
    """DMNet cost against the number of global-memory frames read (n_read = capacity = n).

    All bank sizes step round-robin on the same frames, after enough warm-up frames that
    every bank is full and every read uses n frames.
    """
    timed = max(5, min(args.frames, 15))
    steppers = {n: build_variants(args, args.size, ('dmnet',),
                                  memory_extra={'n_read': n, 'capacity': n})['dmnet']
                for n in banks}
    warm = max(banks) + max(args.warmup, 2)
    clip = [frames[i % len(frames)] for i in range(warm + timed)]
    times = time_round_robin(steppers, clip, warm, args.device)
    rows = []
    for n, seg in steppers.items():
        row = {'frames': n, **stats_ms(times[n]), 'bank_size': seg.memory_size}
        rows.append(row)
        log.info('memory sweep n=%d: %.1f ms (bank %d)', n, row['median_ms'], seg.memory_size)
    return rows


def size_sweep(args: argparse.Namespace, sizes: tuple[tuple[int, int], ...]
               ) -> list[dict[str, Any]]:
    """Cost of backbone, DMNet and the flow baselines against the image size."""
    rows = []
    ref_pixels = 256 * 320
    for size in sizes:
        pixels = size[0] * size[1]
        # Fewer frames where a frame costs more: about the same time per size point.
        scale = 1.0 if args.device.startswith('cuda') else max(1.0, pixels / ref_pixels)
        n = max(3, int(round(min(args.frames, 15) / scale)))
        warm = max(1, int(round(min(args.warmup, 3) / scale)))
        names = ['backbone', 'dmnet', 'dis']
        skipped = []
        if args.device.startswith('cuda') or pixels <= RAFT_CPU_MAX_PIXELS:
            names.append('flow')
        else:
            skipped.append('flow')
        t0 = time.perf_counter()
        try:
            frames = make_frames(size, n + warm)
            steppers = build_variants(args, size, tuple(names))
            times = time_round_robin(steppers, frames, warm, args.device)
        except RuntimeError as exc:   # out of memory on a small machine: report, go on
            log.warning('size sweep %s failed: %s', size_str(size), exc)
            rows.append({'size': size_str(size), 'error': str(exc)[:300]})
            continue
        row: dict[str, Any] = {'size': size_str(size), 'pixels': pixels,
                               'frames': n, 'warmup': warm, 'skipped': skipped}
        for name in names:
            row[f'{name}_ms'] = stats_ms(times[name])['median_ms']
        rows.append(row)
        log.info('size sweep %s: %s (%.0f s)', size_str(size),
                 {k: v for k, v in row.items() if k.endswith('_ms')}, time.perf_counter() - t0)
        del steppers
    return rows


# ---------------------------------------------------------------------------- ROS 2

@contextlib.contextmanager
def node_process(node_args: list[str], domain_id: int, log_path: Path | None = None
                 ) -> Iterator[Any]:
    """Start `python -m dmnet_ros.segment_node` on a private, localhost-only ROS domain."""
    import subprocess

    env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id),
               ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST', PYTHONUNBUFFERED='1')
    out = open(log_path, 'w') if log_path else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, '-m', 'dmnet_ros.segment_node', '--ros-args',
                             *node_args], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log_path:
            out.close()


def node_params(checkpoint: str | None, device: str, precision: str,
                size: tuple[int, int], memory: dict[str, Any],
                torch_compile: bool = False) -> list[str]:
    """`-p name:=value` arguments for the node."""
    args = ['-p', f'device:={device}', '-p', f'precision:={precision}',
            '-p', f'torch_compile:={str(torch_compile).lower()}',
            '-p', f'inference_size:=[{size[0]},{size[1]}]',
            '-p', "compressed_topic:=''", '-p', 'diagnostics.period_s:=1.0']
    if checkpoint:
        args += ['-p', f'checkpoint:={checkpoint}']
    for key, value in memory.items():
        value = str(value).lower() if isinstance(value, bool) else value
        args += ['-p', f'memory.{key}:={value}']
    return args


class NodeClient:
    """Publishes frames on `image` and waits for the matching `/dmnet/mask` (by stamp).

    Must be built after `rclpy.init()` with the node's ROS_DOMAIN_ID in the environment.
    """

    def __init__(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        self.node = Node('dmnet_latency_probe')
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.pub = self.node.create_publisher(Image, 'image', qos)
        self.received: dict[tuple[int, int], float] = {}
        self.node.create_subscription(Image, '/dmnet/mask', self._on_mask, qos)
        # The node's own figures (inference_ms_p50 & co.), from its latest /diagnostics.
        self.diagnostics: dict[str, str] = {}
        self.diagnostics_count = 0
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)

    def _on_diagnostics(self, msg: Any) -> None:
        for status in msg.status:
            if 'segmentation' in status.name:
                self.diagnostics = {kv.key: kv.value for kv in status.values}
                self.diagnostics_count += 1

    def _on_mask(self, msg: Any) -> None:
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        self.received[key] = time.perf_counter()

    def spin_until(self, done: Callable[[], bool], timeout_s: float) -> bool:
        import rclpy

        end = time.perf_counter() + timeout_s
        while not done():
            left = end - time.perf_counter()
            if left <= 0:
                return False
            # spin_once returns as soon as a message arrives; a long timeout costs no latency
            # and keeps this process off the CPU that the node's model needs (2 cores here).
            rclpy.spin_once(self.node, timeout_sec=min(left, 0.5))
        return True

    def ready(self) -> bool:
        """True once the node subscribes to `image` and publishes `/dmnet/mask` to us."""
        return (self.pub.get_subscription_count() > 0
                and self.node.count_publishers('/dmnet/mask') > 0)

    def roundtrip(self, rgb: np.ndarray, index: int, timeout_s: float) -> float | None:
        """Publish one frame, wait for its mask; end-to-end ms or None on timeout."""
        from builtin_interfaces.msg import Time
        from std_msgs.msg import Header

        from dmnet_ros.image_codec import rgb_to_image

        # Stamps 40 ms apart (25 FPS), starting at 1 s: 0 means 'unstamped' to the node.
        ns = 1_000_000_000 + index * 40_000_000
        stamp = Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)
        key = (stamp.sec, stamp.nanosec)
        msg = rgb_to_image(rgb, 'rgb8', Header(stamp=stamp, frame_id='endoscope'))
        start = time.perf_counter()
        self.pub.publish(msg)
        if not self.spin_until(lambda: key in self.received, timeout_s):
            return None
        return (self.received.pop(key) - start) * 1000.0

    def close(self) -> None:
        self.node.destroy_node()


def measure_node_latency(frames: list[np.ndarray], warmup: int, *, checkpoint: str | None,
                         device: str, precision: str, size: tuple[int, int],
                         memory: dict[str, Any], domain_id: int | None = None,
                         startup_timeout_s: float = 90.0, frame_timeout_s: float = 20.0,
                         settle_s: float = 0.05, torch_compile: bool = False,
                         log_path: Path | None = None) -> dict[str, Any]:
    """End-to-end publish-to-mask latency of the node against the bare `Segmenter.step`.

    The same frames go, one at a time (each waits for its mask), through the node, and right
    after each one through an identically configured Segmenter in this process, so that load
    on a shared machine hits both alike. `settle_s` of idle time separates the two timed
    calls: libgomp's threads spin-wait after a parallel region, and on 2 cores the spinning
    pool of one process slows the other one's call by 30-60% (measured), which is not ROS
    overhead.
    """
    import rclpy

    from dmnet_core import load_segmenter

    domain_id = domain_id if domain_id is not None else 100 + os.getpid() % 100
    os.environ['ROS_DOMAIN_ID'] = str(domain_id)
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    bare = load_segmenter(checkpoint, device, precision=precision, inference_size=size,
                          memory=memory, torch_compile=torch_compile)
    import psutil

    e2e: list[float] = []
    step: list[float] = []
    # CPU time per frame (node process; this process around the bare step): far less
    # sensitive than wall time to other jobs on a shared machine.
    node_cpu: list[float] = []
    bare_cpu: list[float] = []
    bare_inference: list[float] = []
    lost = 0
    node_args = node_params(checkpoint, device, precision, size, memory, torch_compile)
    with node_process(node_args, domain_id, log_path) as proc:
        node_ps = psutil.Process(proc.pid)
        rclpy.init()
        client = NodeClient()
        try:
            t0 = time.perf_counter()
            if not client.spin_until(lambda: proc.poll() is not None or client.ready(),
                                     startup_timeout_s) or proc.poll() is not None:
                raise RuntimeError(f'the dmnet node did not come up within {startup_timeout_s} s '
                                   f'(exit code {proc.poll()}; log: {log_path})')
            startup_s = time.perf_counter() - t0
            for i, rgb in enumerate(frames):
                # Let the other process's OpenMP threads stop spin-waiting first: on a
                # 2-core machine they would otherwise steal the cores of the timed call.
                time.sleep(settle_s)
                c0 = sum(node_ps.cpu_times()[:2])
                ms = client.roundtrip(rgb, i, frame_timeout_s)
                c1 = sum(node_ps.cpu_times()[:2])
                time.sleep(settle_s)
                sync(device)
                p0, start = time.process_time(), time.perf_counter()
                bare.step(rgb)
                sync(device)
                bare_ms = (time.perf_counter() - start) * 1000.0
                bare_cpu_ms = (time.process_time() - p0) * 1000.0
                if i < warmup:
                    continue
                if ms is None:
                    lost += 1
                    continue
                e2e.append(ms)
                step.append(bare_ms)
                bare_inference.append(bare.last_inference_ms)
                node_cpu.append((c1 - c0) * 1000.0)
                bare_cpu.append(bare_cpu_ms)
            # A /diagnostics published after the last frame: the node's own model-call figures.
            seen = client.diagnostics_count
            client.spin_until(lambda: client.diagnostics_count > seen, 5.0)
            node_diag = dict(client.diagnostics)
        finally:
            client.close()
            rclpy.shutdown()
    if not e2e:
        raise RuntimeError(f'no masks came back from the node ({lost} frames lost)')
    e, s = stats_ms(e2e), stats_ms(step)
    paired = np.asarray(e2e) / np.asarray(step)
    node_inf = node_diag.get('inference_ms_p50')
    return {'node_e2e': e, 'bare_step': s, 'lost_frames': lost, 'startup_s': round(startup_s, 1),
            'ratio': round(e['median_ms'] / s['median_ms'], 3),
            # Frame i through the node and through the bare Segmenter run a few ms apart, so
            # their ratio cancels the slow drifts of a shared machine; the median of those.
            'paired_ratio_median': round(float(np.median(paired)), 3),
            'paired_ratio_p25_p75': [round(float(np.percentile(paired, q)), 3) for q in (25, 75)],
            # The model call alone (timed inside Segmenter.step, no pre/post-processing): in
            # the node (its /diagnostics p50, warm-up frames included) and here.
            'node_inference_ms_p50': float(node_inf) if node_inf else None,
            'bare_inference_ms_p50': round(float(np.median(bare_inference)), 3),
            # Means: psutil's CPU times tick at 10 ms, too coarse for a per-frame median.
            'node_cpu_ms_per_frame': round(float(np.mean(node_cpu)), 2),
            'bare_cpu_ms_per_frame': round(float(np.mean(bare_cpu)), 2),
            'cpu_ratio': round(float(np.mean(node_cpu)) / max(float(np.mean(bare_cpu)), 1e-9), 3),
            'overhead_ms': round(e['median_ms'] - s['median_ms'], 3),
            'transport': 'rclpy (Fast DDS), localhost, sensor_msgs/Image rgb8 in, mono8 out',
            'memory': memory, 'domain_id': domain_id}


def ros_latency(args: argparse.Namespace, frames: list[np.ndarray],
                out_dir: Path) -> dict[str, Any]:
    """Node end-to-end latency against the bare step, both compiled when `--compile` is on."""
    return measure_node_latency(frames, args.warmup, checkpoint=args.checkpoint,
                                device=args.device, precision=args.precision, size=args.size,
                                memory=dict(MEMORY_VARIANTS['dmnet']),
                                torch_compile=args.compile,
                                startup_timeout_s=600.0 if args.compile else 90.0,
                                log_path=out_dir / 'node_latency.log')


# ---------------------------------------------------------------------------- report

def plot(result: dict[str, Any], path: Path) -> None:
    """Two panels: ms vs global-memory frames, ms vs pixels (log-log) per variant."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    mem = result.get('memory_sweep') or []
    if mem:
        a.plot([r['frames'] for r in mem], [r['median_ms'] for r in mem], 'o-', label='dmnet')
        a.axhline(result['backbone_ms'], color='grey', ls='--', label='backbone')
        a.set_xscale('log', base=2)
    a.set_xlabel('global memory frames read (n_read = capacity)')
    a.set_ylabel('ms / frame (median)')
    a.set_title(f"cost vs memory size @ {result['size']}")
    a.legend()
    rows = [r for r in result.get('size_sweep') or [] if 'error' not in r]
    for name, _ in VARIANTS:
        pts = [(r['pixels'], r[f'{name}_ms']) for r in rows if f'{name}_ms' in r]
        if pts:
            b.plot(*zip(*pts), 'o-', label=name)
    b.set_xscale('log')
    b.set_yscale('log')
    b.set_xlabel('pixels (H x W)')
    b.set_ylabel('ms / frame (median)')
    b.set_title(f"cost vs image size ({result['machine']['cuda_device'] or 'CPU'})")
    b.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def print_table(result: dict[str, Any]) -> None:
    m = result['machine']
    print(f"\nDMNet latency @ {result['size']} on {m['cuda_device'] or m['cpu_model']} "
          f"({result['device']}, {result['precision']}, torch {m['torch']}, "
          f"{m['torch_threads']} threads), {result['frames']} frames after {result['warmup']}")
    print(f"{'variant':<12} {'median ms':>10} {'p95 ms':>8} {'FPS':>8} {'x backbone':>11}")
    for name, key in VARIANTS:
        if key not in result:
            continue
        print(f"{name:<12} {result[key]:>10.2f} {result[key.replace('_ms', '_p95_ms')]:>8.2f} "
              f"{result['fps'][name]:>8.1f} {result['ratio_to_backbone'][name]:>11.2f}")
    if result.get('memory_sweep'):
        print('global memory frames: ' + ', '.join(
            f"{r['frames']}: {r['median_ms']:.1f} ms" for r in result['memory_sweep']))
    for r in result.get('size_sweep') or []:
        vals = ', '.join(f'{k[:-3]} {v:.1f}' for k, v in r.items()
                         if k.endswith('_ms') and isinstance(v, float))
        print(f"size {r['size']}: {r.get('error') or vals} ms")
    ros = result.get('ros')
    if isinstance(ros, dict) and 'node_e2e' in ros:
        print(f"ROS 2 node end-to-end {ros['node_e2e']['median_ms']:.2f} ms vs bare step "
              f"{ros['bare_step']['median_ms']:.2f} ms: ratio {ros['ratio']:.3f} "
              f"(p95 {ros['node_e2e']['p95_ms']:.2f} ms, lost {ros['lost_frames']}); CPU time "
              f"per frame node {ros['node_cpu_ms_per_frame']:.1f} ms vs bare "
              f"{ros['bare_cpu_ms_per_frame']:.1f} ms: ratio {ros['cpu_ratio']:.3f}")
        if ros.get('paired_ratio_median') is not None:
            node_inf = ros.get('node_inference_ms_p50')
            node_inf = 'n/a' if node_inf is None else f'{node_inf:.2f}'
            q1, q3 = ros['paired_ratio_p25_p75']
            print(f"  per-frame paired ratio: median {ros['paired_ratio_median']:.3f} "
                  f"(IQR {q1:.3f}-{q3:.3f}); model call alone: node {node_inf} ms, "
                  f"bare {ros['bare_inference_ms_p50']:.2f} ms")
    elif ros:
        print(f'ROS 2: {ros}')
    print('targets: ' + ', '.join(f'{k} {v}' for k, v in result['targets'].items()))
    print(f"peak RSS {result['peak_memory']['rss_peak_mb']:.0f} MiB")


def targets(result: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, each True/False (None where not measured)."""
    r = result['ratio_to_backbone']
    ros = result.get('ros_overhead_ratio')
    out: dict[str, Any] = {
        'memories_le_1.25x_backbone': r['dmnet'] <= 1.25,
        'deep_flow_ge_2x_dmnet': result['flow_baseline_ms'] >= 2.0 * result['dmnet_ms'],
        'ros_overhead_lt_15pct': (ros < 1.15) if isinstance(ros, float) else None,
    }
    if result['device'].startswith('cuda'):
        out['fps_ge_60_at_1024x1280'] = (result['fps']['dmnet'] >= 60.0
                                         if result['size'] == '1024x1280' else None)
    return out


def default_size(checkpoint: str | None) -> tuple[int, int]:
    """The inference size stored in `checkpoint` (or the shipped default); with no model
    shipped, that of `ModelConfig()`, the random stand-in `load_segmenter` then builds."""
    from dmnet_core.checkpoint import load_checkpoint, shipped_checkpoint
    from dmnet_core.config import ModelConfig
    try:
        cfg, _, _ = load_checkpoint(checkpoint or shipped_checkpoint('binary'))
    except FileNotFoundError:
        if checkpoint:
            raise
        cfg = ModelConfig()
    return (int(cfg.input_size[0]), int(cfg.input_size[1]))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--size', type=parse_model_size, default=None,
                   help="HxW of the frames and the inference size (default: the checkpoint's "
                        'inference size, 256x384 for the shipped default)')
    p.add_argument('--json', type=Path, default=None, help='write the results here')
    p.add_argument('--plot', type=Path, default=None, help='write the sweep plot here (PNG)')
    p.add_argument('--device', default='cpu', help='cpu | cuda | cuda:N (default cpu)')
    p.add_argument('--precision', default='auto', choices=('auto', 'fp32', 'fp16', 'bf16'),
                   help="default 'auto', as the node: fp16 on CUDA, bf16 on a CPU with native bf16")
    p.add_argument('--frames', type=int, default=30, help='timed frames (default 30)')
    p.add_argument('--warmup', type=int, default=5, help='untimed warm-up frames (default 5)')
    p.add_argument('--checkpoint', default=None,
                   help='a .safetensors checkpoint (default: the shipped model)')
    p.add_argument('--skip-ros', action='store_true', help='no ROS 2 measurement (no rclpy)')
    p.add_argument('--compile', action='store_true', help='torch.compile encoder and decoder')
    p.add_argument('--quick', action='store_true',
                   help='a smoke run: few frames, small sweeps, no 1024x1280')
    p.add_argument('--no-sweeps', action='store_true', help='main table only')
    p.add_argument('--sizes', default=None,
                   help='comma-separated size sweep (default 128x160,256x320,512x640,1024x1280)')
    p.add_argument('--dis-preset', default='fast', choices=('ultrafast', 'fast', 'medium'))
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole benchmark; returns the result dict (also written with --json)."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith('cuda'):
        # Fixed input sizes: let cuDNN pick the fastest convolution algorithms once.
        torch.backends.cudnn.benchmark = True
    if args.frames < 1 or args.warmup < 0:
        raise ValueError(f'--frames must be >= 1 and --warmup >= 0, got {args.frames}, '
                         f'{args.warmup}')
    if args.quick:
        args.frames, args.warmup = min(args.frames, 8), min(args.warmup, 2)
    if args.checkpoint and not Path(args.checkpoint).is_file():
        raise FileNotFoundError(f'checkpoint not found: {args.checkpoint}')
    if args.size is None:
        args.size = default_size(args.checkpoint)
    sizes = SWEEP_SIZES if not args.quick else SWEEP_SIZES[:2]
    if args.sizes:
        sizes = tuple(parse_model_size(s.strip()) for s in args.sizes.split(',') if s.strip())
    banks = SWEEP_BANK if not args.quick else (1, 4, 16)
    out_dir = (args.json.parent if args.json else Path('out'))
    out_dir.mkdir(parents=True, exist_ok=True)

    t_start = time.perf_counter()
    rss0 = rss_mb()
    frames = make_frames(args.size, args.frames + args.warmup)
    steppers = build_variants(args, args.size)
    times = time_round_robin(steppers, frames, args.warmup, args.device)
    result: dict[str, Any] = {
        'size': size_str(args.size), 'inference_size': size_str(args.size),
        'device': args.device, 'precision': args.precision, 'frames': args.frames,
        'warmup': args.warmup, 'frames_source': f'dmnet_core.data.synth.generate_sequence('
                                                f'seed={SEQUENCE_SEED})',
        'checkpoint': args.checkpoint or 'shipped default (random stand-in if none is shipped)',
        'timing': 'wall clock of one step(rgb) per frame, variants round-robin on the same '
                  'frames; medians and p95 in ms',
        'memory_overrides': MEMORY_VARIANTS,
        'global_memory_note': "global variants use policy='recent' so the bank is populated "
                              'and each read uses n_read frames regardless of the weights',
        'flow_baselines': {'prior': 'p_t = 0.5 softmax(backbone(x_t)) + 0.5 warp(p_{t-1}, '
                                    'F_{t->t-1}) at the inference size',
                           'deep': 'torchvision raft_small, random weights, 12 updates',
                           'classical': f'OpenCV DIS preset {args.dis_preset}, grey frames'},
        'compile': bool(args.compile),
    }
    result['precision_used'] = steppers['dmnet'].precision   # fp16/bf16 fall back on a CPU
    n_read = steppers['dmnet'].config.global_memory.n_read
    result['global_memory'] = {'n_read': n_read,
                               'capacity': steppers['dmnet'].capacity,
                               'bank_size_end': {k: steppers[k].memory_size
                                                 for k in ('global_only', 'dmnet')}}
    result['fps'], result['ratio_to_backbone'], result['variants'] = {}, {}, {}
    base = float(np.median(times['backbone']))
    for name, key in VARIANTS:
        s = stats_ms(times[name])
        result[key] = s['median_ms']
        result[key.replace('_ms', '_p95_ms')] = s['p95_ms']
        result['fps'][name] = s['fps']
        result['ratio_to_backbone'][name] = round(s['median_ms'] / base, 3)
        result['variants'][name] = s
    peaks: dict[str, Any] = {'rss_start_mb': round(rss0, 1),
                             'rss_after_main_mb': round(rss_mb(), 1)}
    if args.device.startswith('cuda'):
        peaks['cuda_max_allocated_mb'] = cuda_peaks(steppers, frames[:4])
    del steppers
    result['peak_memory'] = peaks
    result['machine'] = machine_info(args.device)
    print_partial(result)

    if not args.no_sweeps:
        result['memory_sweep'] = memory_sweep(args, frames, banks)
        result['size_sweep'] = size_sweep(args, sizes)
    if args.skip_ros:
        result['ros_overhead_ratio'] = None
        result['ros'] = 'skipped (--skip-ros)'
    else:
        try:
            ros = ros_latency(args, frames, out_dir)
            result['ros'] = ros
            result['ros_overhead_ratio'] = ros['ratio']
        except (ImportError, RuntimeError, OSError) as exc:
            log.warning('ROS 2 measurement failed: %s', exc)
            result['ros'] = f'failed: {type(exc).__name__}: {exc}'
            result['ros_overhead_ratio'] = None
    result['peak_memory']['rss_peak_mb'] = round(peak_rss_mb(), 1)
    result['targets'] = targets(result)
    result['wall_s'] = round(time.perf_counter() - t_start, 1)
    return result


def print_partial(result: dict[str, Any]) -> None:
    """The main table as soon as it is known (sweeps and ROS take a while longer)."""
    line = ', '.join(f'{name} {result[key]:.1f}' for name, key in VARIANTS)
    print(f"[latency] {result['size']} medians (ms): {line}", flush=True)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    args = build_parser().parse_args(argv)
    try:
        result = run(args)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f'latency: error: {exc}', file=sys.stderr)
        return 2
    print_table(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f'wrote {args.json}')
    if args.plot:
        plot(result, args.plot)
        print(f'wrote {args.plot}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
