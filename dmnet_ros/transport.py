"""The node's input side: one image transport, its QoS, camera_info and transport losses.

Why `input.reliability: auto` (measured with Fast DDS 3.2, Kilted wheels, two processes on one
host, see docs/node.md): a frame larger than about 512 KB (640x480 rgb8 and up) is split
into fragments, and the fragments that do not fit the sender's shared-memory segment (512 KB
by default, a setting of the camera's process) are lost on the first sending. A best-effort
reader never gets a fragment again, so it loses the whole frame: 0-3 of 10 frames of 640x480,
1280x1024 and 1920x1080 arrived. A reliable reader asks for the missing fragments (a reliable
writer resends them) and got 10 of 10. A reliable reader cannot match a best-effort writer,
though, so 'auto' subscribes reliably while every publisher offers reliable and best-effort as
soon as one does not, re-checked every diagnostics period and on an incompatible-QoS event.
Depth stays 1 either way (KEEP_LAST: a reliable reader never blocks the writer), so the newest
frame wins and nothing queues.

Frames that never reach the node are counted two ways: `message_lost` events (what the DDS
reader itself reports lost) and gaps in the publisher's sequence numbers (rclpy's MessageInfo):
a gap also covers a frame that arrived but was overwritten in the depth-1 reader queue before
the executor took it. Gaps are counted while exactly one publisher sends (sequence numbers are
per publisher), from the first frame the node receives on.

Names: the raw input is the relative topic `image`; the compressed one is `<image>/compressed`
and camera_info is `camera_info` beside the image topic (`/cam/image_raw` ->
`/cam/camera_info`), both derived from the resolved (remapped) image topic as image_transport
and image_pipeline do.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rclpy.callback_groups import CallbackGroup
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

RELIABILITY = {'reliable': ReliabilityPolicy.RELIABLE,
               'best_effort': ReliabilityPolicy.BEST_EFFORT}


def qos(reliability: str, depth: int, latched: bool = False) -> QoSProfile:
    """KEEP_LAST QoS with a named reliability ('reliable' / 'best_effort')."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=RELIABILITY[reliability],
        durability=(DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE),
    )


def compressed_topic_for(image_topic: str) -> str:
    """image_transport's name for the compressed stream of `image_topic`."""
    return image_topic.rstrip('/') + '/compressed'


def camera_info_topic_for(image_topic: str) -> str:
    """image_pipeline's convention: `/a/image_raw` -> `/a/camera_info` (beside the image)."""
    parent = image_topic.rstrip('/').rsplit('/', 1)[0]
    return parent + '/camera_info'


def sibling_topic(topic: str, name: str) -> str:
    """`name` in the namespace of `topic` (`dmnet/mask` -> `dmnet/camera_info`)."""
    head, sep, _ = topic.rstrip('/').rpartition('/')
    return head + sep + name


def resolve_reliability(setting: str, publisher_reliabilities: list[Any]) -> str:
    """The reliability to subscribe with, given the setting and the publishers now matched.

    Args:
        setting: 'auto', 'reliable' or 'best_effort' (the `input.reliability` parameter).
        publisher_reliabilities: ReliabilityPolicy of each publisher of the topic.

    Returns:
        'reliable' or 'best_effort'; 'auto' gives best_effort as soon as one publisher is
        best-effort (a reliable reader could not match it), reliable otherwise.
    """
    if setting != 'auto':
        return setting
    if any(r == ReliabilityPolicy.BEST_EFFORT for r in publisher_reliabilities):
        return 'best_effort'
    return 'reliable'


class ImageInput:
    """The image subscription (raw or compressed, never both) and camera_info.

    Args:
        node: the node that owns the subscriptions.
        params: the node's parameter values (image_transport, compressed_topic,
            camera_info_topic, input.reliability, input.depth).
        on_image: called with each sensor_msgs/Image (raw transport).
        on_compressed: called with each sensor_msgs/CompressedImage (compressed transport).
        on_camera_info: called with each sensor_msgs/CameraInfo.
        on_lost: called with the number of frames the transport reports lost.
        on_skipped: called with the number of frames missing between two received ones
            (publisher sequence numbers).
        group: callback group of every subscription.
    """

    def __init__(self, node: Node, params: dict[str, Any], on_image: Callable[[Image], None],
                 on_compressed: Callable[[CompressedImage], None],
                 on_camera_info: Callable[[CameraInfo], None], on_lost: Callable[[int], None],
                 on_skipped: Callable[[int], None] | None = None,
                 group: CallbackGroup | None = None) -> None:
        self._node = node
        self._group = group
        self._on_image = on_image
        self._on_compressed = on_compressed
        self._on_camera_info = on_camera_info
        self._on_lost = on_lost
        self._on_skipped = on_skipped or (lambda _n: None)
        self._last_seq: int | None = None
        self.image_topic = node.resolve_topic_name('image')
        self.compressed = params['image_transport'] == 'compressed'
        self.topic = (node.resolve_topic_name(params['compressed_topic'])
                      if self.compressed and params['compressed_topic']
                      else compressed_topic_for(self.image_topic) if self.compressed
                      else self.image_topic)
        self.camera_info_topic = (node.resolve_topic_name(params['camera_info_topic'])
                                  if params['camera_info_topic']
                                  else camera_info_topic_for(self.image_topic))
        self.setting = params['input.reliability']
        self.depth = int(params['input.depth'])
        self.reliability = ''
        self._sub = None
        self._info_sub = None
        self.incompatible_seen = 0

    # -- life ------------------------------------------------------------------------------
    def start(self) -> None:
        """Subscribe the image (with the reliability resolved now) and camera_info."""
        self._subscribe(resolve_reliability(self.setting, self._publisher_reliabilities()))
        # camera_info is small (never fragmented): best-effort matches every publisher.
        self._info_sub = self._node.create_subscription(
            CameraInfo, self.camera_info_topic, self._on_camera_info, qos('best_effort', 5),
            callback_group=self._group)

    def stop(self) -> None:
        """Destroy the subscriptions (no more frames are taken)."""
        for sub in (self._sub, self._info_sub):
            if sub is not None:
                self._node.destroy_subscription(sub)
        self._sub = self._info_sub = None
        self.reliability = ''

    @property
    def active(self) -> bool:
        return self._sub is not None

    def publisher_count(self) -> int:
        """Publishers of the input topic now in the graph."""
        return self._node.count_publishers(self.topic)

    def camera_info_publisher_count(self) -> int:
        """Publishers of the camera_info topic now in the graph."""
        return self._node.count_publishers(self.camera_info_topic)

    def refresh(self) -> str | None:
        """Re-resolve 'auto' reliability against the publishers now present.

        Returns:
            A log line when the subscription was re-created with another reliability.
        """
        if self._sub is None or self.setting != 'auto':
            return None
        wanted = resolve_reliability(self.setting, self._publisher_reliabilities())
        if wanted == self.reliability:
            return None
        before = self.reliability
        self._node.destroy_subscription(self._sub)
        self._subscribe(wanted)
        return (f'input {self.topic}: subscription {before} -> {wanted} '
                f'(publishers: {self._describe_publishers()})')

    # -- internals ------------------------------------------------------------------------
    def _subscribe(self, reliability: str) -> None:
        events = SubscriptionEventCallbacks(
            message_lost=lambda info: self._on_lost(int(info.total_count_change)),
            incompatible_qos=self._on_incompatible)
        msg_type = CompressedImage if self.compressed else Image
        self._last_seq = None
        self._sub = self._node.create_subscription(
            msg_type, self.topic, self._on_message, qos(reliability, self.depth),
            callback_group=self._group, event_callbacks=events)
        self.reliability = reliability

    def _on_message(self, msg: Image | CompressedImage, info: dict[str, Any]) -> None:
        seq = info.get('publication_sequence_number')
        if seq is not None and self._node.count_publishers(self.topic) == 1:
            if self._last_seq is not None and seq > self._last_seq + 1:
                self._on_skipped(int(seq - self._last_seq - 1))
            self._last_seq = int(seq)
        else:
            self._last_seq = None      # several publishers: their numbers interleave
        if self.compressed:
            self._on_compressed(msg)
        else:
            self._on_image(msg)

    def _on_incompatible(self, _info: Any) -> None:
        # A best-effort publisher met our reliable reader: the next refresh switches (this
        # callback also replaces rclpy's default warning, the switch is logged instead).
        self.incompatible_seen += 1

    def _publisher_reliabilities(self) -> list[Any]:
        return [i.qos_profile.reliability
                for i in self._node.get_publishers_info_by_topic(self.topic)]

    def _describe_publishers(self) -> str:
        names = [f'{i.node_namespace.rstrip("/")}/{i.node_name} '
                 f'{i.qos_profile.reliability.name.lower()}'
                 for i in self._node.get_publishers_info_by_topic(self.topic)]
        return ', '.join(names) or 'none'
