"""`make_bag`: write a rosbag2 bag of endoscope video (and ground truth) for replay and review.

Sources (exactly one):
    make_bag --out BAG ROOT/<seq>                 a sequence in the dmnet layout
    make_bag --out BAG --data ROOT --sequence S   the same, named
    make_bag --out BAG FRAMES_DIR [--pattern '*_endo.png'] [--masks DIR [--mask-values 6=1]]
    make_bag --out BAG VIDEO.mp4 [--fps F]
    make_bag --out BAG --synth [--seed 0 --frames 60 --size 256x320]

Images go on /endoscope/image_raw (sensor_msgs/Image rgb8, frame_id `endoscope`); masks of
`--task` (mono8 class ids), when the source has them, on /endoscope/ground_truth with the same
header stamps. Stamp of frame i = start + i / fps; the bag's log time equals the stamp. The bag
is rosbag2 version 8 (see `bag_io`), sqlite3 by default or mcap with `--storage mcap`.

Folder sources: without `--pattern` every image file is a frame except mask-like names (a
`mask`, `masks`, `gt`, `label` or `labels` word in the name: CholecSeg8k's `*_endo_mask.png`,
`*_endo_color_mask.png`, `*_endo_watershed_mask.png`). Masks (`--masks`) must hold binary
values (0/1 or 0/255, binary task) or the task's class ids; anything else (e.g. Endoscapes'
class ids 1-6 for a binary bag) is refused unless `--mask-values VALUE=CLASS` says what each
value means (every value not named becomes background).
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from dmnet_core.cli import parse_size
from dmnet_ros import bag_io

# A fixed default start (2023-11-14T22:13:20Z) makes bags of the same source byte-comparable.
DEFAULT_START_S = 1_700_000_000.0
IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')
# Words that mark a file as a mask, not a frame, when no --pattern is given.
MASK_WORDS = frozenset({'mask', 'masks', 'gt', 'label', 'labels'})
VIDEO_EXTS = ('.mp4', '.avi', '.mov', '.mkv', '.m4v', '.mpg', '.mpeg', '.webm')
Frames = Iterator[tuple[np.ndarray, np.ndarray | None]]   # (RGB H x W x 3, mask H x W or None)


@dataclass
class Source:
    """Frames to write and what is known about them."""

    kind: str                    # 'layout', 'folder', 'video', 'synth'
    name: str                    # sequence name, stored in the bag's custom_data
    fps: float
    count: int                   # number of frames (-1 when unknown, e.g. some videos)
    frames: Frames
    has_gt: bool
    class_names: list[str] | None = None
    left_out: int = 0            # mask-like files the default frame pattern left out



def _limit(frames: Frames, n: int | None) -> Frames:
    """The first `n` items (all when n is None)."""
    for i, item in enumerate(frames):
        if n is not None and i >= n:
            return
        yield item


def layout_source(root: Path, sequence: str | None, task: str) -> Source:
    """A sequence of the dmnet dataset layout (`ROOT/<seq>/images`, `masks/<task>`)."""
    from dmnet_core.data.layout import list_sequences, read_image, read_mask, read_meta

    meta = read_meta(root)
    seqs = list_sequences(root)
    if sequence is None:
        if len(seqs) != 1:
            raise ValueError(f'{root} holds {len(seqs)} sequences; choose one with --sequence '
                             f'({", ".join(s.name for s in seqs)})')
        seq = seqs[0]
    else:
        by_name = {s.name: s for s in seqs}
        if sequence not in by_name:
            raise ValueError(f'no sequence {sequence!r} in {root}; it has: {", ".join(by_name)}')
        seq = by_name[sequence]
    paths = seq.frames()
    if not paths:
        raise ValueError(f'no frames (*.png) in {seq.path / "images"}')
    has_gt = seq.has_masks(task)

    def frames() -> Frames:
        for p in paths:
            yield read_image(p), (read_mask(seq.mask_path(p, task)) if has_gt else None)

    return Source('layout', seq.name, float(meta.fps), len(paths), frames(), has_gt,
                  meta.classes.get(task))


def _sorted_files(folder: Path, pattern: str) -> list[Path]:
    """Image files of `folder` matching `pattern`, sorted by name."""
    return sorted(p for p in folder.glob(pattern)
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def is_mask_name(path: Path) -> bool:
    """A name with a mask word (`frame_1_endo_mask.png`, `x_gt.png`): not a frame."""
    words = re.split(r'[^a-z0-9]+', path.stem.lower())
    return any(w in MASK_WORDS for w in words)


def task_classes(task: str) -> list[str]:
    """Class names of a task (type: the longest dataset list, as the dataset is unknown)."""
    from dmnet_core.config import TYPE_CLASSES, default_class_names

    if task == 'type':
        return max(TYPE_CLASSES.values(), key=len)
    return default_class_names(task)


def parse_mask_values(items: list[str] | None, task: str) -> dict[int, int] | None:
    """`--mask-values 6=instrument` (several, or comma-separated) -> {6: 1}."""
    if not items:
        return None
    names = task_classes(task)
    out: dict[int, int] = {}
    for item in (x for arg in items for x in arg.split(',') if x.strip()):
        value, sep, cls = item.partition('=')
        try:
            v = int(value)
            c = int(cls) if cls.strip().isdigit() else names.index(cls.strip())
        except ValueError:
            raise ValueError(f'--mask-values {item!r}: want VALUE=CLASS, VALUE 0-255, CLASS an '
                             f'id or one of {names}') from None
        if not sep or not 0 <= v <= 255 or not 0 <= c < len(names):
            raise ValueError(f'--mask-values {item!r}: want VALUE=CLASS, VALUE 0-255, CLASS an '
                             f'id below {len(names)} or one of {names}')
        out[v] = c
    return out


def convert_mask(mask: np.ndarray, task: str, mapping: dict[int, int] | None,
                 path: Path) -> np.ndarray:
    """Mask values -> the task's class ids; refuses values that are neither.

    Raises:
        ValueError: values that are neither binary (binary task: 0/1 or 0/255) nor the
            task's class ids, without a `mapping` to say what they are.
    """
    if mapping:
        out = np.zeros_like(mask, dtype=np.uint8)
        for value, cls in mapping.items():
            out[mask == value] = cls
        return out
    values = set(np.unique(mask).tolist())
    n = len(task_classes(task))
    if task == 'binary':
        if values <= {0, 1} or values <= {0, 255}:
            return (mask > 0).astype(np.uint8)
    elif max(values) < n:
        return mask
    allowed = 'binary values (0/1 or 0/255)' if task == 'binary' else f'{task} class ids 0-{n - 1}'
    raise ValueError(f'{path.name}: mask values {sorted(values)} are not {allowed}; say what '
                     'they are with --mask-values VALUE=CLASS (e.g. --mask-values 6=instrument; '
                     f'classes {task_classes(task)})')


def folder_source(folder: Path, pattern: str | None, fps: float, masks: Path | None,
                  mask_pattern: str, task: str,
                  mask_values: dict[int, int] | None = None) -> Source:
    """A plain folder of frames sorted by name; masks (optional) paired by sorted order.

    Args:
        pattern: frame glob; None = every image file without a mask word in its name.
        mask_values: mask value -> class id; None = the values must be binary or class ids.
    """
    from dmnet_core.data.layout import read_image, read_mask

    paths = _sorted_files(folder, pattern or '*')
    left_out = 0
    if pattern is None:
        frames_only = [p for p in paths if not is_mask_name(p)]
        left_out, paths = len(paths) - len(frames_only), frames_only
    if not paths:
        extra = f' ({left_out} mask files left out)' if left_out else ''
        raise ValueError(f'no image files matching {pattern or "*"!r} in {folder}{extra}')
    mask_paths: list[Path] = []
    if masks is not None:
        if not masks.is_dir():
            raise FileNotFoundError(f'mask folder not found: {masks}')
        mask_paths = _sorted_files(masks, mask_pattern)
        if len(mask_paths) != len(paths):
            raise ValueError(f'{len(mask_paths)} masks matching {mask_pattern!r} in {masks} '
                             f'but {len(paths)} frames matching {pattern!r} in {folder}')

    def frames() -> Frames:
        for i, p in enumerate(paths):
            mask = None
            if mask_paths:
                mask = convert_mask(read_mask(mask_paths[i]), task, mask_values, mask_paths[i])
            yield read_image(p), mask

    return Source('folder', folder.name, fps, len(paths), frames(), bool(mask_paths),
                  left_out=left_out)


def video_source(path: Path, fps: float | None) -> Source:
    """A video file read with OpenCV; its own frame rate unless `fps` is given."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f'cannot open video: {path}')
    rate = fps or float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    if rate <= 0 or rate > 1000:
        rate = 25.0  # containers without a usable rate: the EndoVis rate
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or -1)

    def frames() -> Frames:
        try:
            while True:
                ok, bgr = cap.read()
                if not ok:
                    return
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), None
        finally:
            cap.release()

    return Source('video', path.stem, rate, count if count > 0 else -1, frames(), False)


def synth_source(seed: int, frames: int, size: tuple[int, int], fps: float,
                 task: str) -> Source:
    """One synthetic sequence, the same one `dmnet synth --seed S` writes as `seq_000`."""
    from dmnet_core.config import default_class_names
    from dmnet_core.data.synth import generate_sequence

    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))

    def gen() -> Frames:
        for rgb, masks in generate_sequence(rng, frames, size):
            yield rgb, masks[task]

    return Source('synth', f'synth_seed{seed}', fps, frames, gen(), True,
                  default_class_names(task, 'synth'))


def write_bag(out: str | Path, source: Source, storage: str = 'sqlite3',
              start_s: float = DEFAULT_START_S, image_topic: str = bag_io.IMAGE_TOPIC,
              gt_topic: str = bag_io.GT_TOPIC, task: str = 'binary',
              max_frames: int | None = None, progress: bool = True) -> dict:
    """Write `source` into a new bag at `out`; returns a summary (counts, size, topics)."""
    if source.fps <= 0:
        raise ValueError(f'fps must be > 0, got {source.fps}')
    start_ns = int(round(start_s * 1e9))
    custom = {'dmnet.source': source.kind, 'dmnet.sequence': source.name,
              'dmnet.fps': f'{source.fps:g}', 'dmnet.task': task}
    if source.has_gt and source.class_names:
        custom['dmnet.class_names'] = json.dumps(source.class_names)
    total = source.count if source.count > 0 else None
    if max_frames is not None and total is not None:
        total = min(total, max_frames)
    n = n_gt = 0
    shape: tuple[int, ...] = ()
    out = Path(out)
    bag = bag_io.BagWriter(out, storage, custom)     # refuses an existing path
    try:
        with bag:
            bar = tqdm(_limit(source.frames, max_frames), total=total, unit='frame',
                       desc=f'make_bag {out.name}', disable=not progress or None)
            for i, (rgb, mask) in enumerate(bar):
                # Frame i at start + i / fps, computed from i (no accumulated rounding).
                stamp = start_ns + int(round(i * 1e9 / source.fps))
                bag.write(image_topic, bag_io.rgb_to_msg(rgb, stamp), stamp)
                if mask is not None:
                    if mask.shape != rgb.shape[:2]:
                        raise ValueError(f'frame {i}: mask {mask.shape} and image '
                                         f'{rgb.shape[:2]} differ in size')
                    bag.write(gt_topic, bag_io.mask_to_msg(mask, stamp), stamp)
                    n_gt += 1
                n += 1
                shape = rgb.shape
    except BaseException:
        # Leave no half-written bag behind: a rerun would refuse the existing folder.
        shutil.rmtree(out, ignore_errors=True)
        raise
    if n == 0:
        raise ValueError(f'source {source.name!r} yielded no frames')
    return {'bag': str(out), 'storage': storage, 'frames': n, 'masks': n_gt,
            'size': list(shape[:2]), 'fps': source.fps, 'image_topic': image_topic,
            'gt_topic': gt_topic if n_gt else None, 'sequence': source.name}


def build_parser() -> argparse.ArgumentParser:
    """The `make_bag` command line."""
    p = argparse.ArgumentParser(
        prog='make_bag', description='Write a rosbag2 bag (images on /endoscope/image_raw, '
        'ground-truth masks on /endoscope/ground_truth) from a dmnet-layout sequence, a folder '
        'of frames, a video file or a generated synthetic sequence.')
    p.add_argument('source', nargs='?', type=Path,
                   help='ROOT/<seq> of the dmnet layout, a folder of frames, or a video file')
    p.add_argument('--out', required=True, type=Path, help='bag folder to create (must not exist)')
    p.add_argument('--data', type=Path, help='dataset root in the dmnet layout (with --sequence)')
    p.add_argument('--sequence', help='sequence name under --data')
    p.add_argument('--synth', action='store_true', help='generate one synthetic sequence')
    p.add_argument('--seed', type=int, default=0, help='--synth seed (default 0)')
    p.add_argument('--frames', type=int, default=60, help='--synth frame count (default 60)')
    p.add_argument('--size', type=parse_size, default=(256, 320),
                   help='--synth HxW (default 256x320)')
    p.add_argument('--fps', type=float, default=None,
                   help='frame rate (folder default 25; video: its own; layout: dataset.yaml)')
    p.add_argument('--task', default='binary', choices=('binary', 'parts', 'type'),
                   help='which masks go on the ground-truth topic (default binary)')
    p.add_argument('--pattern', default=None,
                   help="folder source: frame glob (e.g. '*_endo.png'); default every image "
                        "file except mask-like names (with a word mask, gt or label)")
    p.add_argument('--masks', type=Path, help='folder source: ground-truth masks, paired by '
                   "sorted name: binary (0/1, 0/255) or the task's class ids, else refused "
                   'without --mask-values')
    p.add_argument('--mask-values', action='append', metavar='VALUE=CLASS',
                   help="what mask values mean, e.g. '6=instrument' (Endoscapes' tool class); "
                        'repeatable or comma-separated; values not named become background')
    p.add_argument('--mask-pattern', default='*', help='glob for --masks (default all images)')
    p.add_argument('--max-frames', type=int, default=None, help='write at most N frames')
    p.add_argument('--storage', default='sqlite3', choices=sorted(bag_io.STORAGES),
                   help='rosbag2 storage (default sqlite3)')
    p.add_argument('--start', default=str(DEFAULT_START_S),
                   help="first stamp in epoch seconds, or 'now' (default a fixed epoch, "
                        f'{DEFAULT_START_S:.0f})')
    p.add_argument('--image-topic', default=bag_io.IMAGE_TOPIC)
    p.add_argument('--gt-topic', default=bag_io.GT_TOPIC)
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    return p


def source_from_args(args: argparse.Namespace) -> Source:
    """Pick the one source the arguments name; errors name the bad path or flag."""
    chosen = [n for n, on in (('SOURCE', args.source is not None), ('--data', args.data),
                              ('--synth', args.synth)) if on]
    if len(chosen) != 1:
        raise ValueError('give exactly one source: a path, --data ROOT --sequence NAME, or '
                         f'--synth (got {", ".join(chosen) or "none"})')
    if args.fps is not None and args.fps <= 0:
        raise ValueError(f'--fps must be > 0, got {args.fps}')
    if args.synth:
        if args.frames < 1:
            raise ValueError(f'--frames must be >= 1, got {args.frames}')
        return synth_source(args.seed, args.frames, args.size, args.fps or 25.0, args.task)
    if args.data is not None:
        if not args.data.is_dir():
            raise FileNotFoundError(f'dataset folder not found: {args.data}')
        return layout_source(args.data, args.sequence, args.task)
    src: Path = args.source
    if not src.exists():
        raise FileNotFoundError(f'source not found: {src}')
    if src.is_file():
        if src.suffix.lower() not in VIDEO_EXTS:
            raise ValueError(f'not a video file ({", ".join(VIDEO_EXTS)}): {src}')
        return video_source(src, args.fps)
    if (src / 'images').is_dir() and (src.parent / 'dataset.yaml').is_file():
        return layout_source(src.parent, src.name, args.task)
    if (src / 'dataset.yaml').is_file():
        return layout_source(src, args.sequence, args.task)
    mapping = parse_mask_values(args.mask_values, args.task)
    if mapping and args.masks is None:
        raise ValueError('--mask-values needs --masks')
    return folder_source(src, args.pattern, args.fps or 25.0, args.masks, args.mask_pattern,
                         args.task, mapping)


def parse_start(text: str) -> float:
    """`--start`: epoch seconds, or 'now'."""
    if text == 'now':
        return time.time()
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--start must be epoch seconds or 'now', got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    """Console script `make_bag`; exit code 2 with one line on bad input."""
    args = build_parser().parse_args(argv)
    try:
        source = source_from_args(args)
        info = write_bag(args.out, source, args.storage, parse_start(args.start),
                         args.image_topic, args.gt_topic, args.task, args.max_frames,
                         progress=not args.no_progress)
    except (FileNotFoundError, FileExistsError, ValueError, KeyError, OSError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f'make_bag: error: {msg}', file=sys.stderr)
        return 2
    h, w = info['size']
    gt = f", {info['masks']} masks on {info['gt_topic']}" if info['masks'] else ', no ground truth'
    print(f"wrote {info['bag']} ({info['storage']}): {info['frames']} frames {h}x{w} rgb8 at "
          f"{info['fps']:g} fps on {info['image_topic']}{gt}")
    if source.left_out:
        print(f'left out {source.left_out} mask-like files (names with a word mask, gt or '
              'label); --pattern chooses the frames explicitly')
    return 0


if __name__ == '__main__':
    sys.exit(main())
