"""Rosbag2 reading and writing with `rosbags` (no rosbag2_py, no ROS graph), and Image <-> numpy.

Writer: rosbag2 metadata **version 8** with the **ROS 2 Humble typestore**. Version 8 keeps
`offered_qos_profiles` as a YAML string and integer enums, which both Humble's and Jazzy's
`ros2 bag play` parse (version 9 writes them as a YAML list with string enums, which Humble
rejects with "bad conversion"). `sensor_msgs/msg/Image` is identical in Humble, Jazzy and Kilted.

Reader: any rosbag2 bag (folder with metadata.yaml, or a bare .db3/.mcap file; sqlite3 or mcap,
any version rosbags reads) and ROS 1 .bag files, through `rosbags.highlevel.AnyReader`.

Shapes: an RGB frame is `H x W x 3` uint8, a mask `H x W` uint8 class ids. Times are integer
nanoseconds since the epoch (`stamp_ns`).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

IMAGE_TOPIC = '/endoscope/image_raw'
GT_TOPIC = '/endoscope/ground_truth'
FRAME_ID = 'endoscope'
BAG_VERSION = 8
TYPESTORE = get_typestore(Stores.ROS2_HUMBLE)
IMAGE_TYPE = 'sensor_msgs/msg/Image'
COMPRESSED_TYPE = 'sensor_msgs/msg/CompressedImage'
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_TYPE)
STORAGES = {'sqlite3': StoragePlugin.SQLITE3, 'mcap': StoragePlugin.MCAP}

# encoding -> (channels, cv2 conversion to RGB or None for identity); 8-bit encodings only.
_TO_RGB: dict[str, tuple[int, int | None]] = {
    'rgb8': (3, None), 'bgr8': (3, cv2.COLOR_BGR2RGB), '8UC3': (3, cv2.COLOR_BGR2RGB),
    'rgba8': (4, cv2.COLOR_RGBA2RGB), 'bgra8': (4, cv2.COLOR_BGRA2RGB),
    '8UC4': (4, cv2.COLOR_BGRA2RGB), 'mono8': (1, cv2.COLOR_GRAY2RGB),
    '8UC1': (1, cv2.COLOR_GRAY2RGB),
}


class BagError(ValueError):
    """A bag that is missing, unreadable or lacks what is asked for; the text names it."""


def stamp_to_ns(stamp: Any) -> int:
    """builtin_interfaces/Time (rosbags or rclpy) -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_sec_nsec(ns: int) -> tuple[int, int]:
    """Integer nanoseconds -> (sec, nanosec) of a builtin_interfaces/Time."""
    return int(ns // 1_000_000_000), int(ns % 1_000_000_000)


def _header(stamp_ns: int, frame_id: str) -> Any:
    """A rosbags std_msgs/Header."""
    types = TYPESTORE.types
    sec, nsec = ns_to_sec_nsec(stamp_ns)
    return types['std_msgs/msg/Header'](
        stamp=types['builtin_interfaces/msg/Time'](sec=sec, nanosec=nsec), frame_id=frame_id)


def array_to_msg(array: np.ndarray, encoding: str, stamp_ns: int,
                 frame_id: str = FRAME_ID) -> Any:
    """An `H x W` or `H x W x C` uint8 array already in `encoding` order -> rosbags Image."""
    arr = np.ascontiguousarray(array, dtype=np.uint8)
    h, w = arr.shape[:2]
    ch = 1 if arr.ndim == 2 else arr.shape[2]
    return TYPESTORE.types[IMAGE_TYPE](
        header=_header(stamp_ns, frame_id), height=h, width=w, encoding=encoding,
        is_bigendian=0, step=w * ch, data=arr.reshape(-1))


def rgb_to_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str = FRAME_ID) -> Any:
    """`H x W x 3` uint8 RGB -> rosbags sensor_msgs/Image (rgb8)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f'expected an H x W x 3 uint8 RGB frame, got {rgb.shape} {rgb.dtype}')
    return array_to_msg(rgb, 'rgb8', stamp_ns, frame_id)


def mask_to_msg(mask: np.ndarray, stamp_ns: int, frame_id: str = FRAME_ID) -> Any:
    """`H x W` uint8 class ids -> rosbags sensor_msgs/Image (mono8)."""
    if mask.ndim != 2:
        raise ValueError(f'expected an H x W class-id mask, got shape {mask.shape}')
    return array_to_msg(mask.astype(np.uint8), 'mono8', stamp_ns, frame_id)


def _pixels(msg: Any, topic: str) -> tuple[np.ndarray, int]:
    """Rows of a raw Image without step padding: (`H x W x C` array, C)."""
    enc = str(msg.encoding)
    if enc not in _TO_RGB:
        raise BagError(f'{topic}: unsupported image encoding {enc!r}; '
                       f'supported: {", ".join(_TO_RGB)}')
    ch = _TO_RGB[enc][0]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.asarray(msg.data, dtype=np.uint8).reshape(-1)
    if h <= 0 or w <= 0 or step < w * ch or data.size != h * step:
        raise BagError(f'{topic}: malformed image {h}x{w} {enc}, step {step}, '
                       f'{data.size} bytes of data')
    return data.reshape(h, step)[:, :w * ch].reshape(h, w, ch), ch


def msg_to_rgb(msg: Any, topic: str = 'image') -> np.ndarray:
    """A rosbags Image or CompressedImage -> `H x W x 3` uint8 RGB (a new array)."""
    if hasattr(msg, 'format'):
        img = cv2.imdecode(np.asarray(msg.data, dtype=np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise BagError(f'{topic}: cannot decode compressed image ({msg.format!r})')
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    img, ch = _pixels(msg, topic)
    code = _TO_RGB[str(msg.encoding)][1]
    if code is None:
        return img.copy()
    return cv2.cvtColor(np.ascontiguousarray(img[:, :, 0] if ch == 1 else img), code)


def msg_to_mask(msg: Any, topic: str = 'mask') -> np.ndarray:
    """A mono8 / 8UC1 rosbags Image -> `H x W` uint8 class ids (a new array)."""
    if hasattr(msg, 'format') or str(msg.encoding) not in ('mono8', '8UC1'):
        raise BagError(f'{topic}: ground-truth masks must be mono8 class ids, '
                       f'got {getattr(msg, "encoding", getattr(msg, "format", "?"))!r}')
    img, _ = _pixels(msg, topic)
    return img[:, :, 0].copy()


class BagWriter:
    """Write a rosbag2 bag (version 8, sqlite3 or mcap) of Image topics; a context manager.

    Args:
        path: the bag folder to create (must not exist).
        storage: 'sqlite3' (default, what `ros2 bag record` writes on Humble) or 'mcap'.
        custom_data: string pairs stored in metadata.yaml (`custom_data`).
    """

    def __init__(self, path: str | Path, storage: str = 'sqlite3',
                 custom_data: dict[str, str] | None = None) -> None:
        if storage not in STORAGES:
            raise ValueError(f'unknown storage {storage!r}; expected one of {sorted(STORAGES)}')
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f'bag output already exists (not overwriting): {self.path}')
        self._writer = Writer(self.path, version=BAG_VERSION, storage_plugin=STORAGES[storage])
        for key, value in (custom_data or {}).items():
            self._writer.set_custom_data(key, str(value))
        self._conns: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def __enter__(self) -> BagWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer.open()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._writer.__exit__(exc_type, exc, tb)

    def write(self, topic: str, msg: Any, stamp_ns: int, msgtype: str = IMAGE_TYPE) -> None:
        """Serialize `msg` (a rosbags message) onto `topic` with log time `stamp_ns`."""
        if topic not in self._conns:
            self._conns[topic] = self._writer.add_connection(topic, msgtype, typestore=TYPESTORE)
            self.counts[topic] = 0
        self._writer.write(self._conns[topic], int(stamp_ns),
                           TYPESTORE.serialize_cdr(msg, msgtype))
        self.counts[topic] += 1


@dataclasses.dataclass
class BagFrame:
    """One image of a bag: its index, stamps and RGB pixels (`H x W x 3`)."""

    index: int
    stamp_ns: int          # header stamp of the image message
    log_ns: int            # time the bag recorded it
    rgb: np.ndarray


@dataclasses.dataclass
class BagInfo:
    """What replay needs to know about a bag before sending anything."""

    path: Path
    topics: dict[str, tuple[str, int]]     # topic -> (msgtype, message count)
    image_topic: str
    image_count: int
    gt_topic: str | None                   # None when the bag has no ground truth
    custom: dict[str, str]
    duration_s: float


def _open(path: Path) -> AnyReader:
    """An opened AnyReader; every failure becomes a BagError naming the path."""
    if not path.exists():
        raise BagError(f'bag not found: {path}')
    if path.is_dir() and not (path / 'metadata.yaml').is_file():
        raise BagError(f'cannot read bag {path}: no metadata.yaml (not a rosbag2 folder)')
    if path.is_file() and path.suffix not in ('.db3', '.mcap', '.bag'):
        raise BagError(f'cannot read bag {path}: expected a rosbag2 folder or a .db3, .mcap or '
                       '.bag file')
    try:
        reader = AnyReader([path], default_typestore=TYPESTORE)
        reader.open()
    except BagError:
        raise
    except Exception as exc:  # rosbags raises several types (ReaderError, sqlite, mcap, yaml)
        detail = str(exc).strip() or type(exc).__name__
        raise BagError(f'cannot read bag {path}: {detail}') from exc
    return reader


def inspect_bag(path: str | Path, image_topic: str = IMAGE_TOPIC,
                gt_topic: str | None = GT_TOPIC) -> BagInfo:
    """Open a bag and check it has `image_topic` (an Image or CompressedImage topic).

    Raises:
        BagError: the bag is missing or unreadable, or lacks the image topic (the message
            lists the topics it has).
    """
    path = Path(path)
    reader = _open(path)
    try:
        topics = {t: (info.msgtype or '?', int(info.msgcount))
                  for t, info in reader.topics.items()}
        if image_topic not in topics:
            have = ', '.join(f'{t} [{m}]' for t, (m, _) in sorted(topics.items())) or 'none'
            raise BagError(f'bag {path} has no topic {image_topic}; its topics: {have}')
        if topics[image_topic][0] not in IMAGE_TYPES:
            raise BagError(f'bag {path}: topic {image_topic} is {topics[image_topic][0]}, '
                           f'not one of {IMAGE_TYPES}')
        if topics[image_topic][1] == 0:
            raise BagError(f'bag {path}: topic {image_topic} has no messages')
        has_gt = gt_topic is not None and topics.get(gt_topic, ('', 0))[1] > 0
        custom = {}
        for r in reader.readers:
            meta = getattr(r, 'metadata', None) or getattr(getattr(r, 'storage', None),
                                                          'metadata', None)
            custom.update(getattr(meta, 'custom', None) or {})
        return BagInfo(path=path, topics=topics, image_topic=image_topic,
                       image_count=topics[image_topic][1], gt_topic=gt_topic if has_gt else None,
                       custom={str(k): str(v) for k, v in custom.items()},
                       duration_s=reader.duration / 1e9)
    finally:
        reader.close()


def _read_topic(path: Path, topic: str) -> Iterator[tuple[int, Any]]:
    """(log time ns, deserialized message) for every message of `topic`, in log-time order."""
    reader = _open(path)
    try:
        conns = [c for c in reader.connections if c.topic == topic]
        try:
            for conn, log_ns, raw in reader.messages(connections=conns):
                yield log_ns, reader.deserialize(raw, conn.msgtype)
        except BagError:
            raise
        except Exception as exc:
            raise BagError(f'cannot read {topic} from bag {path}: {exc}') from exc
    finally:
        reader.close()


def iter_frames(path: str | Path, image_topic: str = IMAGE_TOPIC) -> Iterator[BagFrame]:
    """Stream the images of `image_topic` in recorded order, decoded to RGB."""
    for i, (log_ns, msg) in enumerate(_read_topic(Path(path), image_topic)):
        yield BagFrame(index=i, stamp_ns=stamp_to_ns(msg.header.stamp), log_ns=log_ns,
                       rgb=msg_to_rgb(msg, image_topic))


def read_masks(path: str | Path, gt_topic: str = GT_TOPIC) -> list[tuple[int, int, np.ndarray]]:
    """Ground-truth masks of `gt_topic` as (header stamp ns, log time ns, `H x W` mask)."""
    return [(stamp_to_ns(msg.header.stamp), log_ns, msg_to_mask(msg, gt_topic))
            for log_ns, msg in _read_topic(Path(path), gt_topic)]
