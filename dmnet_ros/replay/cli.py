"""The `replay` command line (also `python -m dmnet_ros.replay`)."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from dmnet_core.cli import parse_model_size
from dmnet_ros import bag_io
from dmnet_ros.replay.options import EXIT_BAD_INPUT, EXIT_FAILED, ReplayError, ReplayOptions
from dmnet_ros.replay.results import summary_lines
from dmnet_ros.replay.run import run_replay


def build_parser() -> argparse.ArgumentParser:
    """The `replay` command line."""
    p = argparse.ArgumentParser(
        prog='replay', description='Replay a rosbag2 bag through the dmnet node and write a '
        'report folder (report.json, report.md, plots, overlay.mp4).')
    p.add_argument('--bag', required=True, type=Path, help='rosbag2 folder (or .db3/.mcap file)')
    p.add_argument('--out', required=True, type=Path, help='report folder (created)')
    mode = p.add_mutually_exclusive_group()
    mode.add_argument('--lockstep', action='store_true',
                      help='next frame only after the previous mask arrived (nothing dropped)')
    mode.add_argument('--rate', type=float, default=None,
                      help='publish at R x the recorded rate (default mode, R=1.0)')
    p.add_argument('--external', action='store_true',
                   help='use a running segment_node instead of starting one')
    p.add_argument('--checkpoint', default='', help="node checkpoint ('' = shipped model)")
    p.add_argument('--device', default='auto', help='node device: auto, cpu, cuda, cuda:N')
    p.add_argument('--image-topic', default=bag_io.IMAGE_TOPIC)
    p.add_argument('--gt-topic', default=bag_io.GT_TOPIC)
    p.add_argument('--inference-size', type=parse_model_size, default=None,
                   help="node inference size HxW (default: the checkpoint's)")
    p.add_argument('--timeout', type=float, default=60.0,
                   help='seconds to wait for a mask (lockstep: per frame) (default 60)')
    p.add_argument('--resend', type=float, default=5.0,
                   help='lockstep: re-send an unanswered frame after S seconds (default 5)')
    p.add_argument('--startup-timeout', type=float, default=180.0,
                   help='seconds for the node to start and be discovered (default 180)')
    p.add_argument('--record-bag', action='store_true',
                   help='also record frames, masks and ground truth into DIR/outputs_bag')
    p.add_argument('--no-video', action='store_true', help='skip overlay.mp4')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    p.add_argument('--node-param', action='append', default=[], metavar='NAME:=VALUE',
                   help='extra node parameter (repeatable)')
    return p


def options_from_args(args: argparse.Namespace) -> ReplayOptions:
    """Check the numbers and paths of the command line; build the options."""
    for name in ('timeout', 'resend', 'startup_timeout'):
        if getattr(args, name) <= 0:
            raise ValueError(f'--{name.replace("_", "-")} must be > 0, got {getattr(args, name)}')
    if args.checkpoint and not Path(args.checkpoint).is_file():
        raise FileNotFoundError(f'checkpoint not found: {args.checkpoint}')
    return ReplayOptions(
        bag=args.bag, out=args.out, mode='lockstep' if args.lockstep else 'rate',
        rate=1.0 if args.rate is None else args.rate, external=args.external,
        checkpoint=args.checkpoint, device=args.device, image_topic=args.image_topic,
        gt_topic=args.gt_topic, inference_size=args.inference_size, timeout=args.timeout,
        resend=args.resend, startup_timeout=args.startup_timeout, record_bag=args.record_bag,
        video=not args.no_video, progress=not args.no_progress, node_params=args.node_param)


def _raise_interrupt(signum: int, frame: Any) -> None:
    """SIGTERM handler: unwind like Ctrl-C."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Console script `replay`: 0 done, 2 bad input (one line), 1 the run failed."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(name)s: %(message)s')
    previous = None
    if threading.current_thread() is threading.main_thread():
        # SIGTERM unwinds like Ctrl-C, so the node child is always stopped.
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        opts = options_from_args(args)
        report = run_replay(opts)
    except (bag_io.BagError, FileNotFoundError, ValueError) as exc:
        print(f'replay: error: {exc}', file=sys.stderr)
        return EXIT_BAD_INPUT
    except ReplayError as exc:
        print(f'replay: failed: {exc}', file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print('replay: interrupted', file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    for line in summary_lines(report):
        print(line)
    print(f"report: {args.out / 'report.md'}"
          + (f"; overlay video: {report['files']['overlay_video']}"
             if 'overlay_video' in report['files'] else ''))
    return 0
