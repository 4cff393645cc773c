"""The node fed by a camera in another process, as a ROS 2 user runs it.

Two node processes serve the module: `/dmnet` with default parameters (only `device:=cpu` and
the remap, as README says to start it) and `/left/dmnet` in the `/left` namespace with
`image_transport:=compressed`. The camera is `camera_process.py` in a process of its own: real
DDS between processes, large frames fragmented as a driver's are. No timing asserts: counts,
topics, headers and levels only.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rostest_utils import DiagnosticsWatch, NodeProcess, RosClient, ros_env
from sensor_msgs.msg import CameraInfo, Image

CAMERA = Path(__file__).with_name('camera_process.py')
CAM_TOPIC = '/cam/image_raw'
RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)


@pytest.fixture(scope='module')
def env():
    return ros_env()


@pytest.fixture(scope='module')
def root_node(env):
    with NodeProcess({'device': 'cpu'}, remaps={'image': CAM_TOPIC}, env=env) as proc:
        yield proc
        assert proc.alive(), f'node died:\n{proc.output()[-3000:]}'
        proc.stop_cleanly()


@pytest.fixture(scope='module')
def left_node(env):
    with NodeProcess({'device': 'cpu', 'image_transport': 'compressed'},
                     remaps={'image': CAM_TOPIC, '__ns': '/left'}, env=env) as proc:
        yield proc
        assert proc.alive(), f'node died:\n{proc.output()[-3000:]}'
        proc.stop_cleanly()


@pytest.fixture
def client(root_node, left_node, env):
    root_node.wait_ready(120)
    left_node.wait_ready(120)
    with RosClient(env) as c:
        yield c


def _camera(env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(CAMERA), '--topic', CAM_TOPIC, *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(client: RosClient, cam: subprocess.Popen, timeout: float = 120.0) -> dict:
    """Spin until the camera process ends; returns its JSON report."""
    client.wait_for(lambda: cam.poll() is not None, timeout, 'the camera process to end')
    out = cam.stdout.read()
    assert cam.returncode == 0, out
    return json.loads(next(line for line in out.splitlines() if line.startswith('{')))


def _key(header) -> tuple[int, int]:
    return header.stamp.sec, header.stamp.nanosec


def _counts(diag: DiagnosticsWatch) -> dict[str, int]:
    v = diag.latest()[1]
    return {k: int(v[k]) for k in ('frames_received', 'frames_answered', 'frames_dropped',
                                   'frames_rejected', 'frames_lost_in_transport',
                                   'frames_skipped_in_transport')}


@pytest.mark.parametrize('width, height, encoding', [(1280, 1024, 'rgb8'), (1920, 1080, 'bgr8')])
def test_large_frames_from_a_reliable_camera_all_arrive(client, env, width, height, encoding):
    diag = DiagnosticsWatch(client, node='/dmnet')
    masks = client.subscribe(Image, '/dmnet/mask', RELIABLE)
    diag.wait(lambda s, v: True, what='diagnostics')
    before = _counts(diag)
    cam = _camera(env, '--width', str(width), '--height', str(height), '--encoding', encoding,
                  '--reliability', 'reliable', '--count', '8', '--rate', '2')
    report = _finish(client, cam)
    after = diag.wait_settled(60)
    received = int(after['frames_received']) - before['frames_received']
    assert received == report['sent'] == 8, (before, after)
    assert int(after['frames_lost_in_transport']) == before['frames_lost_in_transport']
    assert after['input_reliability'] == 'reliable'
    sent = {tuple(s) for s in report['stamps']}
    client.wait_for(lambda: {_key(m.header) for m in masks.messages} & sent, 30, 'a mask')
    for m in masks.messages:
        if _key(m.header) in sent:      # mono8 at the input's size, header kept
            assert (m.encoding, m.width, m.height, m.step) == ('mono8', width, height, width)
            assert m.header.frame_id == 'camera'


def test_best_effort_camera_is_matched_and_its_losses_counted(client, env, root_node):
    """A best-effort camera: 'auto' switches the input to best-effort (a reliable reader would
    not match it at all); fragments lost at the sender are counted and turn diagnostics WARN."""
    diag = DiagnosticsWatch(client, node='/dmnet')
    diag.wait(lambda s, v: True, what='diagnostics')
    before = _counts(diag)
    levels: list[tuple[int, str]] = []
    diag.collector.messages.clear()
    cam = _camera(env, '--width', '1920', '--height', '1080', '--encoding', 'bgr8',
                  '--reliability', 'best_effort', '--count', '12', '--rate', '4')
    report = _finish(client, cam)
    after = diag.wait_settled(60)
    reliability = set()       # what the node said while the camera ran (it reverts after)
    for msg in diag.collector.messages:
        levels += [(s.level, s.message) for s in msg.status if s.name == '/dmnet: segmentation']
        reliability |= {kv.value for s in msg.status if s.name == '/dmnet: segmentation'
                        for kv in s.values if kv.key == 'input_reliability'}
    received = int(after['frames_received']) - before['frames_received']
    lost = int(after['frames_lost_in_transport']) - before['frames_lost_in_transport']
    assert received + lost > 0, after
    # Every frame arrived or was counted lost (a loss is known only once a later frame
    # arrives, and frames sent before the switch to best-effort are not seen at all).
    assert received + lost >= report['sent'] - 4, (received, lost, report['sent'])
    if lost:
        assert any(lvl == b'\x01' and 'lost in transport' in text for lvl, text in levels), \
            levels
    # 'auto' goes back to reliable once the camera has gone, so look at the whole run.
    assert 'best_effort' in reliability, reliability
    assert 'subscription reliable -> best_effort' in root_node.output()


def test_raw_and_compressed_of_the_same_stamps_are_answered_once(client, env):
    """image_transport publishes both: each node takes one transport, each stamp one answer."""
    diag = DiagnosticsWatch(client, node='/dmnet')
    left_diag = DiagnosticsWatch(client, node='/left/dmnet')
    root_masks = client.subscribe(Image, '/dmnet/mask', RELIABLE)
    left_masks = client.subscribe(Image, '/left/dmnet/mask', RELIABLE)
    diag.wait(lambda s, v: True, what='diagnostics')
    before = _counts(diag)
    left_diag.wait(lambda s, v: True, what='left diagnostics')
    left_before = _counts(left_diag)
    cam = _camera(env, '--width', '320', '--height', '256', '--count', '6', '--rate', '2',
                  '--compressed')
    report = _finish(client, cam)
    sent = {tuple(s) for s in report['stamps']}
    after = diag.wait_settled(60)
    left_after = left_diag.wait_settled(60)
    assert int(after['frames_received']) - before['frames_received'] == len(sent)
    assert int(left_after['frames_received']) - left_before['frames_received'] == len(sent)
    assert left_after['input_topic'] == CAM_TOPIC + '/compressed'
    assert after['input_topic'] == CAM_TOPIC
    client.spin_for(1.0)
    for masks in (root_masks, left_masks):
        keys = [_key(m.header) for m in masks.messages if _key(m.header) in sent]
        assert keys and len(keys) == len(set(keys)), keys      # answered at most once


def test_namespaced_node_publishes_inside_its_namespace(client):
    client.wait_for_publisher('/left/dmnet/mask')
    client.wait_for_publisher('/left/dmnet/labels')
    client.wait_for_publisher('/dmnet/mask')
    # Only the root node publishes /dmnet/mask: the two instances do not collide.
    assert client.node.count_publishers('/dmnet/mask') == 1
    assert client.node.count_publishers('/left/dmnet/mask') == 1
    from std_srvs.srv import Trigger
    assert client.call(Trigger, '/left/dmnet/reset', Trigger.Request()).success


def test_camera_info_is_republished_with_each_mask_header(client, env):
    masks = client.subscribe(Image, '/dmnet/mask', RELIABLE)
    infos = client.subscribe(CameraInfo, '/dmnet/camera_info', RELIABLE)
    cam = _camera(env, '--width', '320', '--height', '256', '--count', '5', '--rate', '2',
                  '--camera-info')
    report = _finish(client, cam)
    sent = {tuple(s) for s in report['stamps']}
    client.wait_for(lambda: {_key(m.header) for m in masks.messages} & sent, 30, 'masks')
    client.spin_for(1.0)
    by_stamp = {_key(i.header): i for i in infos.messages}
    answered = [m for m in masks.messages if _key(m.header) in sent]
    assert answered
    for m in answered:
        info = by_stamp[_key(m.header)]          # one camera_info per mask, same header
        assert info.header.frame_id == m.header.frame_id
        assert (info.width, info.height) == (m.width, m.height) == (320, 256)
        assert info.k[0] == 500.0 and info.k[2] == 160.0


def test_a_stale_camera_turns_diagnostics_warn(client):
    """A publisher is matched but sends nothing: WARN after diagnostics.stale_s (3 s)."""
    diag = DiagnosticsWatch(client, node='/dmnet')
    pub = client.node.create_publisher(Image, CAM_TOPIC, RELIABLE)
    client.wait_for_subscriber(pub, 30)
    status, _ = diag.wait(lambda s, v: s.level == s.WARN and 'no frame' in s.message, 30,
                          'a stale WARN')
    assert 'matched publisher' in status.message
    client.node.destroy_publisher(pub)
    # With no publisher left it stays WARN and says so (a dead driver is not idle).
    diag.wait(lambda s, v: s.level == s.WARN and 'no publisher matched' in s.message, 30,
              'WARN naming the missing publisher')
