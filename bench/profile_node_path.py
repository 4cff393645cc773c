"""Where the node's time per frame goes, stage by stage, at camera sizes.

Runs the node's per-frame path in one process with timed spans, no DDS peer (publishers
exist, nobody subscribes, so `publish` is the message build and rclpy's conversion): convert
the message, the Segmenter's prepare / model / post, publish the mask, camera_info, overlay.
Two paths side by side on the same frames and model:
  before  main at 774ceec: full-size RGB copy (bgr8 swapped at full size), logits upsampled
          in torch and argmax at full size, binary_255 by np.where
  now     a view of msg.data, BGR swapped after the resize, labels by cv2 resize of the one
          foreground-minus-background logit, 0/1 -> 0/255 in one multiply
Prints a Markdown table (mean ms per stage) and writes JSON with --json. The taking of messages
off DDS and /diagnostics run on the executor thread: see bench/camera_rates.py (stage `take`).

    .venv/bin/python -m bench.profile_node_path --sizes 1280x1024,1920x1080 --frames 30
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]

from dmnet_core import load_segmenter  # noqa: E402

STAGES = ('convert', 'prepare', 'model', 'post', 'mask_values', 'publish_mask', 'camera_info',
          'overlay')


def old_labels(logits: torch.Tensor, height: int, width: int) -> np.ndarray:
    """main's post-processing: every logit upsampled in torch, argmax at the full size."""
    up = F.interpolate(logits.float(), size=(height, width), mode='bilinear',
                       align_corners=False)
    return up.argmax(dim=1)[0].to(torch.uint8).cpu().numpy()


def run(path: str, seg, node, pubs, msgs, info, overlay: bool) -> dict[str, list[float]]:
    from dmnet_ros import image_codec
    from dmnet_ros.overlay import blend_overlay, palette_table
    table = palette_table([0, 255, 0])
    spans: dict[str, list[float]] = {s: [] for s in STAGES}
    seg.reset()
    for msg in msgs:
        t0 = time.perf_counter()
        if path == 'before':
            image, bgr = image_codec.decode_image(msg, use_cv_bridge=False), False
        else:
            image, bgr = image_codec.image_view(msg)
        t1 = time.perf_counter()
        mask = seg.step(image, bgr=bgr)
        t2 = time.perf_counter()
        out = (np.where(mask > 0, 255, 0).astype(np.uint8) if path == 'before'
               else np.multiply(mask, np.uint8(255)))
        t3 = time.perf_counter()
        pubs['mask'].publish(image_codec.mask_to_image(out, msg.header))
        t4 = time.perf_counter()
        info.header = msg.header
        pubs['info'].publish(info)
        t5 = time.perf_counter()
        if overlay:
            rgb = image[:, :, ::-1] if bgr else image
            rgb = np.ascontiguousarray(rgb)
            over = blend_overlay(rgb, mask, table, 0.5)
            pubs['overlay'].publish(image_codec.array_to_image(over, 'rgb8', msg.header))
        t6 = time.perf_counter()
        tm = seg.last_timings
        for name, ms in (('convert', (t1 - t0) * 1e3), ('prepare', tm['prepare_ms']),
                         ('model', tm['model_ms']), ('post', tm['post_ms']),
                         ('mask_values', (t3 - t2) * 1e3), ('publish_mask', (t4 - t3) * 1e3),
                         ('camera_info', (t5 - t4) * 1e3), ('overlay', (t6 - t5) * 1e3)):
            spans[name].append(ms)
    return spans


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--sizes', default='1280x1024,1920x1080', help='frames WxH, comma-separated')
    p.add_argument('--frames', type=int, default=30, help='timed frames per size and path')
    p.add_argument('--rounds', type=int, default=2, help='before/now alternations per size')
    p.add_argument('--overlay', action='store_true', help='also build and publish the overlay')
    p.add_argument('--device', default='cpu')
    p.add_argument('--json', type=Path)
    args = p.parse_args(argv)
    import rclpy
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import CameraInfo, Image

    from dmnet_ros import image_codec

    # A private, localhost-only domain: nobody else's graph, nobody subscribes.
    os.environ['ROS_DOMAIN_ID'] = str(100 + os.getpid() % 100)
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node('dmnet_profile')
    pubs = {'mask': node.create_publisher(Image, 'profile/mask', 5),
            'overlay': node.create_publisher(Image, 'profile/overlay', 5),
            'info': node.create_publisher(CameraInfo, 'profile/camera_info', 5)}
    seg = load_segmenter(None, args.device)
    seg.warm_up()
    now_labels = seg._labels_on_host
    rows = []
    rng = np.random.default_rng(0)
    for size in args.sizes.split(','):
        w, h = (int(v) for v in size.split('x'))
        msgs = []
        for i in range(args.frames):
            m = image_codec.rgb_to_image(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), 'bgr8')
            m.header.stamp.sec, m.header.frame_id = i + 1, 'camera'
            msgs.append(m)
        info = CameraInfo(width=w, height=h)
        spans = {'before': {s: [] for s in STAGES}, 'now': {s: [] for s in STAGES}}
        for _ in range(args.rounds):
            for path in ('before', 'now'):
                seg._labels_on_host = old_labels if path == 'before' else now_labels
                got = run(path, seg, node, pubs, msgs, info, args.overlay)
                for s in STAGES:
                    spans[path][s] += got[s][2:]          # the first two of a run: cache warm-up
        for path in ('before', 'now'):
            mean = {s: float(np.mean(v)) for s, v in spans[path].items()}
            rows.append({'size': size, 'path': path, 'stage_ms': mean,
                         'total_ms': sum(mean.values())})
    seg._labels_on_host = now_labels
    node.destroy_node()
    rclpy.shutdown()
    print(f'\nNode path per frame, mean ms ({args.device}, {torch.get_num_threads()} torch '
          f'threads, inference {seg.inference_size[0]}x{seg.inference_size[1]}, bgr8 input'
          f'{", overlay on" if args.overlay else ", overlay off"})\n')
    print('| frame | path | ' + ' | '.join(STAGES) + ' | total |')
    print('|---|---|' + '---|' * (len(STAGES) + 1))
    for r in rows:
        print(f"| {r['size']} | {r['path']} | "
              + ' | '.join(f"{r['stage_ms'][s]:.1f}" for s in STAGES)
              + f" | {r['total_ms']:.1f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({'device': args.device, 'overlay': args.overlay,
                                         'threads': torch.get_num_threads(),
                                         'inference_size': list(seg.inference_size),
                                         'rows': rows}, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
