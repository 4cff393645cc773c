"""Pure conversion between ROS image messages and numpy arrays (no ROS graph needed).

`cv_bridge` is used when it imports; otherwise a numpy path covers the 8-bit encodings a
camera driver or bag publishes: rgb8, bgr8, rgba8, bgra8, mono8 (8UC3 = bgr8, 8UC1 = mono8,
8UC4 = bgra8, OpenCV's conventions). Every row may carry `step` padding, which is honoured.

Shapes: an RGB image is `H x W x 3` uint8, a mask `H x W` uint8 (one class id per pixel).
Anything else (other encodings, data shorter or longer than `height * step`, zero size, a step
smaller than a row) raises `ImageDecodeError`, a ValueError naming the bad field.
"""
from __future__ import annotations

import array as pyarray

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

try:  # cv_bridge is part of a full ROS install, not of the PyPI wheels.
    from cv_bridge import CvBridge
    _BRIDGE: CvBridge | None = CvBridge()
except ImportError:  # pragma: no cover - depends on the install
    CvBridge = None
    _BRIDGE = None

HAVE_CV_BRIDGE = _BRIDGE is not None

# encoding -> (channels, conversion from that channel order to RGB or None for identity).
_ENCODINGS: dict[str, tuple[int, int | None]] = {
    'rgb8': (3, None),
    'bgr8': (3, cv2.COLOR_BGR2RGB),
    'rgba8': (4, cv2.COLOR_RGBA2RGB),
    'bgra8': (4, cv2.COLOR_BGRA2RGB),
    'mono8': (1, cv2.COLOR_GRAY2RGB),
    '8UC1': (1, cv2.COLOR_GRAY2RGB),
    '8UC3': (3, cv2.COLOR_BGR2RGB),
    '8UC4': (4, cv2.COLOR_BGRA2RGB),
}
SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_ENCODINGS)
COMPRESSED_FORMATS: tuple[str, ...] = ('jpeg', 'jpg', 'png')
# Largest side accepted: beyond 8K a frame is surely garbage and would only waste memory.
MAX_SIDE = 8192


class ImageDecodeError(ValueError):
    """A message that cannot be turned into an RGB frame; the text names the bad field."""


def channels_of(encoding: str) -> int:
    """Channels per pixel of a supported encoding."""
    if encoding not in _ENCODINGS:
        raise ImageDecodeError(f'unsupported encoding {encoding!r}; '
                               f'supported: {", ".join(SUPPORTED_ENCODINGS)}')
    return _ENCODINGS[encoding][0]


def validate_image(msg: Image) -> None:
    """Check an Image's encoding and geometry without copying its data.

    Cheap enough for a subscription callback: only sizes are compared.

    Raises:
        ImageDecodeError: naming the encoding, size, step or data length that is wrong.
    """
    ch = channels_of(msg.encoding)
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise ImageDecodeError(f'zero-size image {h}x{w}')
    if h > MAX_SIDE or w > MAX_SIDE:
        raise ImageDecodeError(f'image {h}x{w} larger than {MAX_SIDE} on a side')
    if step < w * ch:
        raise ImageDecodeError(f'step {step} smaller than width*channels = {w}*{ch} '
                               f'for {msg.encoding}')
    n = len(msg.data)
    if n != h * step:
        raise ImageDecodeError(f'data length {n} != height*step = {h}*{step} = {h * step}')


def image_to_rgb(msg: Image) -> np.ndarray:
    """Convert a sensor_msgs/Image to a contiguous `H x W x 3` uint8 RGB array.

    `is_bigendian` has no meaning for 8-bit channels and is ignored.

    Raises:
        ImageDecodeError: see `validate_image`.
    """
    validate_image(msg)
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    ch, code = _ENCODINGS[msg.encoding]
    # H x step bytes, then drop the row padding: H x W x C (a view, no copy yet).
    buf = np.frombuffer(msg.data, dtype=np.uint8).reshape(h, step)
    img = buf[:, :w * ch].reshape(h, w, ch)
    if code is None:
        return np.ascontiguousarray(img)
    if ch == 1:
        img = img[:, :, 0]
    return cv2.cvtColor(np.ascontiguousarray(img), code)


def image_view(msg: Image) -> tuple[np.ndarray, bool] | None:
    """A 3-channel 8-bit Image as an `H x W x 3` view of `msg.data` (no copy), or None.

    Rows keep their `step` padding as strides (cv2 and `Segmenter.step` take such views).

    Returns:
        (view, is_bgr) for rgb8, bgr8 and 8UC3; None for every other encoding (convert those
        with `decode_image`).

    Raises:
        ImageDecodeError: see `validate_image`.
    """
    validate_image(msg)
    if msg.encoding not in ('rgb8', 'bgr8', '8UC3'):
        return None
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    buf = np.frombuffer(msg.data, dtype=np.uint8).reshape(h, step)
    return buf[:, :w * 3].reshape(h, w, 3), msg.encoding != 'rgb8'


def image_to_rgb_bridge(msg: Image) -> np.ndarray:
    """Convert through cv_bridge (when installed), validating first so errors match the numpy path.

    Raises:
        ImageDecodeError: see `validate_image`; also when cv_bridge itself refuses the message.
        RuntimeError: when cv_bridge is not installed.
    """
    if _BRIDGE is None:
        raise RuntimeError('cv_bridge is not installed')
    validate_image(msg)
    try:
        out = _BRIDGE.imgmsg_to_cv2(msg, desired_encoding='rgb8')
    except Exception as exc:  # cv_bridge raises its own CvBridgeError
        raise ImageDecodeError(f'cv_bridge: {exc}') from exc
    return np.ascontiguousarray(out)


def decode_image(msg: Image, use_cv_bridge: bool = True) -> np.ndarray:
    """Image -> `H x W x 3` RGB, with cv_bridge when available and wanted, else numpy."""
    if use_cv_bridge and _BRIDGE is not None:
        return image_to_rgb_bridge(msg)
    return image_to_rgb(msg)


def validate_compressed(msg: CompressedImage) -> None:
    """Cheap checks on a CompressedImage: a known format and some data.

    `format` is free text in ROS ("jpeg", "png", "rgb8; jpeg compressed bgr8"), so a
    known codec name anywhere in it is accepted.
    """
    fmt = msg.format.lower()
    if not any(f in fmt for f in COMPRESSED_FORMATS):
        raise ImageDecodeError(f'unsupported compressed format {msg.format!r}; '
                               f'expected one of {COMPRESSED_FORMATS}')
    if len(msg.data) == 0:
        raise ImageDecodeError('compressed image with no data')


def compressed_to_rgb(msg: CompressedImage) -> np.ndarray:
    """Decode a jpeg/png CompressedImage to `H x W x 3` uint8 RGB.

    Raises:
        ImageDecodeError: unknown format, empty or undecodable data.
    """
    validate_compressed(msg)
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise ImageDecodeError(f'could not decode {len(msg.data)} bytes as {msg.format!r}')
    if img.shape[0] > MAX_SIDE or img.shape[1] > MAX_SIDE:
        raise ImageDecodeError(f'image {img.shape[0]}x{img.shape[1]} larger than {MAX_SIDE}')
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def array_to_image(array: np.ndarray, encoding: str, header: Header | None = None,
                   step: int | None = None) -> Image:
    """Build a sensor_msgs/Image from an array already in `encoding`'s channel order.

    Args:
        array: `H x W` (mono) or `H x W x C` uint8, channels in the order `encoding` names.
        encoding: one of SUPPORTED_ENCODINGS.
        header: copied into the message (stamp and frame_id unchanged); empty if None.
        step: bytes per row; larger than `W * C` pads each row with zeros (tests use it).
    """
    ch = channels_of(encoding)
    arr = np.asarray(array)
    if arr.dtype != np.uint8:
        raise ValueError(f'array dtype {arr.dtype} is not uint8')
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] != ch:
        raise ValueError(f'array shape {array.shape} does not fit {encoding} ({ch} channels)')
    h, w = arr.shape[:2]
    row = w * ch
    step = row if step is None else int(step)
    if step < row:
        raise ValueError(f'step {step} smaller than a row ({row} bytes)')
    if step != row:
        padded = np.zeros((h, step), dtype=np.uint8)
        padded[:, :row] = arr.reshape(h, row)
        arr = padded
    # One copy into the array.array the message keeps (bytes would be copied twice).
    data = pyarray.array('B')
    data.frombytes(memoryview(np.ascontiguousarray(arr)).cast('B'))
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width, msg.step = h, w, step
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.data = data
    return msg


def rgb_to_image(rgb: np.ndarray, encoding: str = 'rgb8', header: Header | None = None,
                 step: int | None = None) -> Image:
    """Build an Image in any supported encoding from an `H x W x 3` RGB array."""
    ch, _ = _ENCODINGS.get(encoding, (0, None))
    if encoding in ('rgb8',):
        arr = rgb
    elif encoding in ('bgr8', '8UC3'):
        arr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    elif encoding == 'rgba8':
        arr = cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA)
    elif encoding in ('bgra8', '8UC4'):
        arr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA)
    elif encoding in ('mono8', '8UC1'):
        arr = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    else:
        channels_of(encoding)  # raises the unsupported-encoding error
        raise AssertionError(ch)
    return array_to_image(arr, encoding, header, step)


def mask_to_image(mask: np.ndarray, header: Header) -> Image:
    """An `H x W` uint8 class-id mask as a mono8 Image with the input's header unchanged."""
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise ValueError(f'mask must be H x W uint8, got {mask.shape} {mask.dtype}')
    return array_to_image(mask, 'mono8', header)


def image_to_array(msg: Image) -> np.ndarray:
    """The raw pixels of a validated Image in its own channel order: `H x W` or `H x W x C`."""
    validate_image(msg)
    ch = channels_of(msg.encoding)
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    buf = np.frombuffer(msg.data, dtype=np.uint8).reshape(h, step)[:, :w * ch]
    return buf.reshape(h, w) if ch == 1 else buf.reshape(h, w, ch)


def rgb_to_compressed(rgb: np.ndarray, fmt: str = 'jpeg',
                      header: Header | None = None, quality: int = 90) -> CompressedImage:
    """Encode an `H x W x 3` RGB array as a jpeg or png CompressedImage."""
    ext = {'jpeg': '.jpg', 'jpg': '.jpg', 'png': '.png'}.get(fmt)
    if ext is None:
        raise ValueError(f'unsupported compressed format {fmt!r}; expected jpeg or png')
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext == '.jpg' else []
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError(f'could not encode a {rgb.shape} image as {fmt}')
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = fmt
    msg.data = buf.tobytes()
    return msg
