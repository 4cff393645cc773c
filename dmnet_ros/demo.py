"""`make demo` (`python -m dmnet_ros.demo`): the whole loop on generated data, no GPU needed.

1. generate a short synthetic surgical sequence (fixed seed) and write it to a rosbag2 bag,
2. start `segment_node` with the shipped checkpoint as a separate process,
3. replay the bag through it in lockstep (every frame answered),
4. print Dice / IoU / latency / frame counts and where the report and overlay video are.

Everything lands in `demo_out/` (bag, report folder, node log); a rerun replaces it.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from dmnet_ros import bag_io, make_bag, replay

DEMO_SEED = 2021          # the synthetic sequence shown (any seed works; fixed for repeatability)
DEMO_FRAMES = 80
DEMO_SIZE = (256, 320)


def build_parser() -> argparse.ArgumentParser:
    """The demo's few options (all have working defaults)."""
    p = argparse.ArgumentParser(
        prog='python -m dmnet_ros.demo',
        description='Generate a synthetic sequence, bag it, run the dmnet node on it and score.')
    p.add_argument('--out', type=Path, default=Path('demo_out'), help='output folder')
    p.add_argument('--frames', type=int, default=DEMO_FRAMES, help=f'default {DEMO_FRAMES}')
    p.add_argument('--seed', type=int, default=DEMO_SEED, help=f'default {DEMO_SEED}')
    p.add_argument('--size', type=make_bag.parse_size, default=DEMO_SIZE,
                   help='HxW (default 256x320)')
    p.add_argument('--checkpoint', default='', help="'' = the shipped model")
    p.add_argument('--device', default='auto', help='auto, cpu, cuda, cuda:N')
    p.add_argument('--storage', default='sqlite3', choices=sorted(bag_io.STORAGES))
    return p


def shipped_checkpoint() -> Path:
    """Where the shipped default model lives."""
    from dmnet_core.segmenter import DEFAULT_CHECKPOINT

    return Path(DEFAULT_CHECKPOINT)


def main(argv: list[str] | None = None) -> int:
    """Run the demo; 0 done, 2 bad input, 1 the node or replay failed."""
    args = build_parser().parse_args(argv)
    t0 = time.monotonic()
    # A fresh machine may have nothing set: keep the demo's DDS traffic on this host.
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    out: Path = args.out
    bag, report_dir = out / 'demo_bag', out / 'report'
    try:
        if args.frames < 2:
            raise ValueError(f'--frames must be >= 2, got {args.frames}')
        if args.checkpoint and not Path(args.checkpoint).is_file():
            raise FileNotFoundError(f'checkpoint not found: {args.checkpoint}')
        for old in (bag, report_dir):
            if old.exists():
                shutil.rmtree(old)
        out.mkdir(parents=True, exist_ok=True)
        ckpt = args.checkpoint or shipped_checkpoint()
        if not args.checkpoint and not Path(ckpt).is_file():
            print(f'note: no shipped checkpoint at {ckpt}; the node uses a random stand-in '
                  'and the scores will be near zero', file=sys.stderr)
        h, w = args.size
        print(f'[1/3] synthetic sequence (seed {args.seed}, {args.frames} frames {h}x{w}) '
              f'-> {bag}')
        source = make_bag.synth_source(args.seed, args.frames, args.size, 25.0, 'binary')
        make_bag.write_bag(bag, source, storage=args.storage)
        model = f'checkpoint {args.checkpoint}' if args.checkpoint else 'shipped model'
        print(f'[2/3] starting segment_node ({model}, device {args.device}) and replaying '
              'in lockstep')
        opts = replay.ReplayOptions(bag=bag, out=report_dir, mode='lockstep',
                                    checkpoint=args.checkpoint, device=args.device)
        report = replay.run_replay(opts)
    except (bag_io.BagError, FileNotFoundError, ValueError, OSError) as exc:
        print(f'demo: error: {exc}', file=sys.stderr)
        return 2
    except replay.ReplayError as exc:
        print(f'demo: failed: {exc}', file=sys.stderr)
        return 1
    print('[3/3] results')
    for line in replay.summary_lines(report):
        print('  ' + line)
    files = report['files']
    print(f"  report: {files['report_md']} (and report.json, plots)")
    if 'overlay_video' in files:
        print(f"  overlay video (prediction | ground truth): {files['overlay_video']}")
    print(f'  demo wall time: {time.monotonic() - t0:.1f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
