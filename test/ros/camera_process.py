"""A camera driver stand-in, run as its own process by the tests and bench/camera_rates.py.

Publishes `--count` frames of random content on `--topic` at `--rate` Hz with the QoS a driver
uses (`--reliability`; `--depth` 10 as rclcpp's default QoS), stamped with the ROS clock;
optionally the image_transport `<topic>/compressed` copy of each frame (same stamp) and
`camera_info` beside the topic. Waits
for a subscriber on each of its topics first, then prints one JSON line:
{"sent": N, "stamps": [[sec, nanosec], ...]}.

    python test/ros/camera_process.py --width 1280 --height 1024 --encoding rgb8 --count 10
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from dmnet_ros import image_codec


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--topic', default='/cam/image_raw')
    p.add_argument('--width', type=int, default=640)
    p.add_argument('--height', type=int, default=480)
    p.add_argument('--encoding', default='rgb8', choices=('rgb8', 'bgr8'))
    p.add_argument('--reliability', default='reliable', choices=('reliable', 'best_effort'))
    p.add_argument('--depth', type=int, default=10, help='publisher history depth (KEEP_LAST)')
    p.add_argument('--count', type=int, default=10)
    p.add_argument('--rate', type=float, default=5.0)
    p.add_argument('--compressed', action='store_true', help='also publish <topic>/compressed')
    p.add_argument('--camera-info', action='store_true', help='also publish camera_info')
    p.add_argument('--wait', type=float, default=30.0, help='seconds to wait for a subscriber')
    p.add_argument('--linger', type=float, default=2.0, help='seconds to stay after the last')
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rclpy.init()
    node = rclpy.create_node('camera')
    qos = QoSProfile(depth=args.depth, reliability=(ReliabilityPolicy.RELIABLE
                                           if args.reliability == 'reliable'
                                           else ReliabilityPolicy.BEST_EFFORT))
    pub = node.create_publisher(Image, args.topic, qos)
    cpub = node.create_publisher(CompressedImage, args.topic + '/compressed', qos) \
        if args.compressed else None
    info_topic = args.topic.rsplit('/', 1)[0] + '/camera_info'
    ipub = node.create_publisher(CameraInfo, info_topic, qos) if args.camera_info else None
    pubs = [p for p in (pub, cpub, ipub) if p is not None]
    deadline = time.monotonic() + args.wait
    while not all(p.get_subscription_count() for p in pubs) and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    time.sleep(1.0)                       # let the other matches of the subscriber complete
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)
    jpeg = image_codec.rgb_to_compressed(rgb, 'jpeg', None) if cpub is not None else None
    stamps = []
    period = 1.0 / args.rate
    next_t = time.monotonic()
    for _ in range(args.count):
        stamp = node.get_clock().now().to_msg()
        msg = image_codec.rgb_to_image(rgb, args.encoding, None)
        msg.header.stamp, msg.header.frame_id = stamp, 'camera'
        if ipub is not None:
            info = CameraInfo(width=args.width, height=args.height,
                              distortion_model='plumb_bob')
            info.k = [500.0, 0.0, args.width / 2, 0.0, 500.0, args.height / 2, 0.0, 0.0, 1.0]
            info.header = msg.header
            ipub.publish(info)
        pub.publish(msg)
        if cpub is not None:
            jpeg.header = msg.header
            cpub.publish(jpeg)
        stamps.append([stamp.sec, stamp.nanosec])
        next_t += period
        time.sleep(max(0.0, next_t - time.monotonic()))
    print(json.dumps({'sent': len(stamps), 'stamps': stamps}), flush=True)
    time.sleep(args.linger)
    node.destroy_node()
    rclpy.shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
