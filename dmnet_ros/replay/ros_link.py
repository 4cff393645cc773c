"""The harness's side of the ROS graph: image publisher, mask and labels subscriptions."""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import numpy as np

from dmnet_ros import bag_io
from dmnet_ros.replay.options import LABELS_TOPIC, MASK_TOPIC, ReplayError

log = logging.getLogger('replay')


class RosLink:
    """The harness's rclpy node in its own context: image publisher, mask and labels
    subscriptions, spun on a background thread."""

    def __init__(self, image_topic: str, lockstep: bool) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import (
            DurabilityPolicy,
            HistoryPolicy,
            QoSProfile,
            ReliabilityPolicy,
        )
        from sensor_msgs.msg import Image
        from std_msgs.msg import String

        self._rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(args=[], context=self.context)
        self.node = rclpy.create_node('dmnet_replay', context=self.context)
        # Reliable in both modes: a reliable writer reaches best-effort and reliable readers,
        # and a best-effort one loses large frames (Fast DDS drops whole 1 MB+ samples when a
        # fragment misses). Rate mode keeps only the newest frame, as a camera driver would.
        pub_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10 if lockstep else 1,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)
        self.pub = self.node.create_publisher(Image, image_topic, pub_qos)
        # Masks: reliable (the node's output QoS), deep enough for a burst of answers.
        mask_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                              reliability=ReliabilityPolicy.RELIABLE,
                              durability=DurabilityPolicy.VOLATILE)
        self.on_mask: Any = None
        self.mask_sub = self.node.create_subscription(Image, MASK_TOPIC, self._mask_cb,
                                                      mask_qos)
        labels_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                                reliability=ReliabilityPolicy.RELIABLE,
                                durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.labels: dict | None = None
        self._labels_event = threading.Event()
        self.node.create_subscription(String, LABELS_TOPIC, self._labels_cb, labels_qos)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, name='replay-spin', daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # shutdown races end the spin; nothing to report
            pass

    def _mask_cb(self, msg: Any) -> None:
        t = time.monotonic()
        if self.on_mask is not None:
            self.on_mask(msg, t)

    def _labels_cb(self, msg: Any) -> None:
        try:
            self.labels = json.loads(msg.data)
        except ValueError:
            log.warning('unparseable %s: %r', LABELS_TOPIC, msg.data[:200])
            return
        self._labels_event.set()

    def wait_labels(self, timeout: float) -> dict | None:
        """The node's `/dmnet/labels` JSON (transient local), or None after `timeout`."""
        self._labels_event.wait(timeout)
        return self.labels

    def wait_connected(self, timeout: float, image_topic: str) -> None:
        """Until the node subscribes to the images and publishes masks (DDS discovery)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pub.get_subscription_count() > 0 and self.mask_sub.get_publisher_count() > 0:
                return
            time.sleep(0.05)
        raise ReplayError(
            f'no node found: subscribers on {image_topic}: {self.pub.get_subscription_count()}, '
            f'publishers on {MASK_TOPIC}: {self.mask_sub.get_publisher_count()} after '
            f'{timeout:.0f} s (same ROS_DOMAIN_ID? is segment_node running?)')

    def publish(self, rgb: np.ndarray, stamp_ns: int, frame_id: str) -> float:
        """Publish one rgb8 frame; returns the monotonic publish time."""
        from dmnet_ros.image_codec import rgb_to_image

        msg = rgb_to_image(rgb, 'rgb8')
        sec, nsec = bag_io.ns_to_sec_nsec(stamp_ns)
        msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nsec
        msg.header.frame_id = frame_id
        t = time.monotonic()
        self.pub.publish(msg)
        return t

    def close(self) -> None:
        """Stop spinning and shut this context down (the node process is not touched)."""
        self.on_mask = None
        try:
            self.executor.shutdown(timeout_sec=2.0)
            self.node.destroy_node()
        finally:
            if self.context.ok():
                self._rclpy.shutdown(context=self.context)
            self._thread.join(timeout=5.0)

