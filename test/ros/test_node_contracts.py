"""The node's ROS contracts where a lab deploys it, with real processes over DDS.

1. a best-effort controller (`qos_profile_sensor_data`) gets 1920x1080 masks: the node gives
   its own process the shipped Fast DDS large-frame profile;
2. a camera process that is killed turns /diagnostics WARN (its publisher gone or not), the
   input rate reads 0; statuses in every lifecycle state; `hardware_id` names the instance;
3. deactivate during a (slowed) step: nothing leaves the node once deactivate returned;
4. dmnet/camera_info carries the CameraInfo of the mask's own stamp, late ones waited for,
   missing ones not replaced by another frame's and counted;
5. `segment_node --help`; dmnet_core's messages through the ROS logger.
No timing asserts: counts, stamps, levels and messages, with generous timeouts.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rostest_utils import (
    DiagnosticsWatch,
    NodeProcess,
    RosClient,
    executable,
    ros_env,
    set_parameters,
)
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from dmnet_ros import image_codec, node_params

CAMERA = Path(__file__).with_name('camera_process.py')
CAM_TOPIC = '/contract/cam/image_raw'
INFO_TOPIC = '/contract/cam/camera_info'
RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
STOP_S = 60.0          # SIGINT to exit: generous, the 2-core test machine may be starved
SHARED = {'device': 'cpu', 'inference_size': [64, 64], 'diagnostics.period_s': 0.5,
          'diagnostics.stale_s': 2.0, 'camera_info.wait_s': 1.0}


def _key(header: Header) -> tuple[int, int]:
    return header.stamp.sec, header.stamp.nanosec


@pytest.fixture(scope='module')
def env():
    return ros_env()


@pytest.fixture(scope='module')
def node(env):
    """One node with its own process's defaults for Fast DDS (nothing set by the test)."""
    assert 'FASTDDS_DEFAULT_PROFILES_FILE' not in env
    with NodeProcess(SHARED, remaps={'image': CAM_TOPIC}, env=env) as proc:
        proc.wait_ready(180)
        yield proc
        assert proc.alive(), f'node died:\n{proc.output()[-3000:]}'
        proc.stop_cleanly(STOP_S)


@pytest.fixture
def client(node, env):
    with RosClient(env) as c:
        yield c


def _camera(env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(CAMERA), '--topic', CAM_TOPIC, *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _report(client: RosClient, cam: subprocess.Popen) -> dict:
    client.wait_for(lambda: cam.poll() is not None, 180, 'the camera process to end')
    out = cam.stdout.read()
    assert cam.returncode == 0, out
    return json.loads(next(line for line in out.splitlines() if line.startswith('{')))


def _statuses(diag: DiagnosticsWatch, suffix: str, node: str = '/dmnet') -> list:
    return [s for m in diag.collector.messages for s in m.status if s.name == f'{node}: {suffix}']


def _last(diag: DiagnosticsWatch, suffix: str) -> str:
    """The newest message of one of /dmnet's statuses ('' before the first)."""
    found = _statuses(diag, suffix)
    return found[-1].message if found else ''


# -- 1. best-effort controllers ------------------------------------------------------------
def test_best_effort_controller_gets_1920x1080_masks(node, client, env):
    best_effort = client.subscribe(Image, '/dmnet/mask', qos_profile_sensor_data)
    reliable = client.subscribe(Image, '/dmnet/mask', RELIABLE)
    diag = DiagnosticsWatch(client, node='/dmnet')
    diag.wait(lambda s, v: True, 60, 'diagnostics')
    cam = _camera(env, '--width', '1920', '--height', '1080', '--encoding', 'bgr8',
                  '--reliability', 'reliable', '--count', '10', '--rate', '1')
    sent = {tuple(s) for s in _report(client, cam)['stamps']}
    diag.wait_settled(120)
    client.spin_for(2.0)
    got_reliable = {_key(m.header) for m in reliable.messages} & sent
    got_best_effort = {_key(m.header) for m in best_effort.messages} & sent
    # Newest wins: a starved machine may answer fewer than sent, never fewer than this.
    assert len(got_reliable) >= 5, (len(got_reliable), diag.latest())
    # Every mask the node sent reached the best-effort controller too (without the profile:
    # 2-3 of 10 at this size).
    assert got_best_effort == got_reliable, (len(got_best_effort), len(got_reliable))
    m = next(m for m in best_effort.messages if _key(m.header) in sent)
    assert (m.width, m.height, m.encoding) == (1920, 1080, 'mono8')
    assert 'large-frame profile applied to this process' in node.output()


# -- 2. a camera that dies -------------------------------------------------------------------
@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGKILL], ids=['sigint', 'sigkill'])
def test_killed_camera_turns_diagnostics_warn_and_the_rate_to_zero(node, client, env, sig):
    """SIGINT: the driver leaves the graph (no publisher matched); SIGKILL: its publisher stays
    matched until the DDS lease ends. Either way: WARN once no frame came for stale_s."""
    diag = DiagnosticsWatch(client, node='/dmnet')
    cam = _camera(env, '--width', '320', '--height', '256', '--count', '100000', '--rate', '5')
    try:                # frames flowing (other WARN causes, e.g. a loaded machine, may come)
        client.wait_for(lambda: _last(diag, 'input frequency') == 'Desired frequency met', 120,
                        'frames flowing')
    finally:
        cam.send_signal(sig)
        cam.wait(30)
    n = len(diag.collector.messages)
    status, values = diag.wait(lambda s, v: s.level == s.WARN and 'no frame' in s.message, 60,
                               'WARN after the camera died')
    assert float(values['input_rate_hz']) == 0.0
    freq = [s for m in diag.collector.messages[n:] for s in m.status
            if s.name == '/dmnet: input frequency']
    assert freq[-1].message != 'Desired frequency met' and freq[-1].level != freq[-1].OK
    if sig == signal.SIGINT:        # the driver left the graph: the node says so
        status, _ = diag.wait(lambda s, v: 'no publisher matched' in s.message, 60,
                              'no publisher matched')
        assert status.level == status.WARN and CAM_TOPIC in status.message
    assert status.hardware_id == '/dmnet@cpu'


# -- 4. camera_info by stamp -------------------------------------------------------------------
def test_camera_info_is_the_masks_own_late_or_not_at_all(node, client):
    """Even frames: their CameraInfo comes 0.3 s after the image; odd ones: never. An info
    with another stamp is always at hand, so re-stamping it would show."""
    masks = client.subscribe(Image, '/dmnet/mask', RELIABLE)
    infos = client.subscribe(CameraInfo, '/dmnet/camera_info', RELIABLE)
    diag = DiagnosticsWatch(client, node='/dmnet')
    pub = client.node.create_publisher(Image, CAM_TOPIC, RELIABLE)
    ipub = client.node.create_publisher(CameraInfo, INFO_TOPIC, RELIABLE)
    client.wait_for_subscriber(pub, 60)
    client.wait_for_subscriber(ipub, 60)
    client.spin_for(1.5)                 # the node sees the camera_info publisher
    before = diag.wait(lambda s, v: True, 30)[1]

    def info_for(header: Header, k: int) -> CameraInfo:
        info = CameraInfo(width=64, height=48, distortion_model='plumb_bob')
        info.k = [100.0 + k, 0.0, 32.0, 0.0, 100.0 + k, 24.0, 0.0, 0.0, 1.0]
        info.header = Header(stamp=header.stamp, frame_id='cam')
        return info

    ipub.publish(info_for(Header(stamp=client.node.get_clock().now().to_msg()), 99))
    sent: dict[tuple[int, int], int] = {}
    for k in range(8):
        header = Header(stamp=client.node.get_clock().now().to_msg(), frame_id='cam')
        rgb = np.full((48, 64, 3), 30 * k, np.uint8)
        pub.publish(image_codec.rgb_to_image(rgb, 'rgb8', header))
        sent[_key(header)] = k
        client.spin_for(0.3)
        if k % 2 == 0:
            ipub.publish(info_for(header, k))
        client.spin_for(0.5)
    diag.wait_settled(60)
    client.spin_for(2.5)                 # > camera_info.wait_s: the missing ones are counted
    answered = {_key(m.header) for m in masks.messages} & set(sent)
    assert len(answered) >= 4, answered
    by_stamp = {}
    for info in infos.messages:
        assert _key(info.header) in answered, 'a camera_info without a mask of its stamp'
        assert _key(info.header) not in by_stamp, 'two camera_info for one mask'
        by_stamp[_key(info.header)] = info
    for key in answered:
        k = sent[key]
        if k % 2 == 0:
            assert key in by_stamp, f'frame {k}: its late CameraInfo was not published'
            assert by_stamp[key].k[0] == 100.0 + k, f"frame {k}: another frame's CameraInfo"
        else:
            assert key not in by_stamp, f"frame {k}: published with another frame's CameraInfo"
    after = diag.wait(lambda s, v: True, 30)[1]
    odd = sum(1 for key in answered if sent[key] % 2)
    assert int(after['camera_info_missing']) - int(before['camera_info_missing']) == odd
    assert (int(after['camera_info_paired']) - int(before['camera_info_paired'])
            == len(answered) - odd)


# -- 3. deactivate during a step; 2. statuses in every state -------------------------------------
LC = '/lc46/dmnet'       # its own namespace: apart from the module's /dmnet


def _change(client: RosClient, transition: int) -> bool:
    req = ChangeState.Request(transition=Transition(id=transition))
    return client.call(ChangeState, f'{LC}/change_state', req, timeout=180).success


def test_nothing_leaves_after_deactivate_and_every_state_reports(env, tmp_path):
    params = dict(SHARED, device='auto', autostart=False, **{'debug.step_delay_s': 3.0,
                                                              'diagnostics.period_s': 0.3})
    topic = '/lc46/image_raw'
    with NodeProcess(params, remaps={'image': topic, '__ns': '/lc46'}, env=env) as proc, \
            RosClient(env) as client:
        proc.wait_for_output('waiting for a lifecycle manager', 120)
        diag = DiagnosticsWatch(client, node=LC)
        status, _ = diag.wait(lambda s, v: True, 60, 'diagnostics while unconfigured')
        assert status.level == status.OK and status.message.startswith('unconfigured')
        assert status.hardware_id == f'{LC}@auto'
        assert _statuses(diag, 'input frequency', LC)[-1].message == 'unconfigured'
        # A failed configure: still unconfigured, WARN with the reason.
        missing = str(tmp_path / 'missing.safetensors')
        assert set_parameters(client, LC, {'checkpoint': missing})[0].successful
        assert not _change(client, Transition.TRANSITION_CONFIGURE)
        status, _ = diag.wait(lambda s, v: s.level == s.WARN, 60, 'WARN after a failed configure')
        assert 'configure failed' in status.message and 'missing.safetensors' in status.message
        assert set_parameters(client, LC, {'checkpoint': ''})[0].successful
        assert _change(client, Transition.TRANSITION_CONFIGURE)
        status, values = diag.wait(lambda s, v: s.message.startswith('inactive'), 60, 'inactive')
        assert status.level == status.OK
        assert status.hardware_id == f'{LC}@{values["device"]}'

        masks = client.subscribe(Image, f'{LC}/mask', RELIABLE)
        overlays = client.subscribe(Image, f'{LC}/overlay', RELIABLE)
        infos = client.subscribe(CameraInfo, f'{LC}/camera_info', RELIABLE)
        pub = client.node.create_publisher(Image, topic, RELIABLE)
        ipub = client.node.create_publisher(CameraInfo, '/lc46/camera_info', RELIABLE)
        assert _change(client, Transition.TRANSITION_ACTIVATE)
        client.wait_for_subscriber(pub, 60)
        header = Header(stamp=client.node.get_clock().now().to_msg(), frame_id='cam')
        ipub.publish(CameraInfo(header=header, width=64, height=48))
        pub.publish(image_codec.rgb_to_image(np.zeros((48, 64, 3), np.uint8), 'rgb8', header))
        diag.wait(lambda s, v: v['frames_pending'] == '1' and v['frames_received'] == '1', 60,
                  'the slow step running')
        assert _change(client, Transition.TRANSITION_DEACTIVATE)
        # The step (3 s) ends while inactive: its mask, overlay and camera_info are discarded.
        values = diag.wait(lambda s, v: v['frames_pending'] == '0', 60, 'the step over')[1]
        client.spin_for(1.5)
        assert not masks.messages and not overlays.messages and not infos.messages
        assert values['frames_answered'] == '0' and int(values['frames_dropped']) >= 1
        assert diag.latest()[0].message.startswith('inactive')

        # Activated again, it answers (no slow step now).
        assert set_parameters(client, LC, {'debug.step_delay_s': 0.0})[0].successful
        assert _change(client, Transition.TRANSITION_ACTIVATE)
        client.wait_for_subscriber(pub, 60)

        def answered() -> bool:
            h = Header(stamp=client.node.get_clock().now().to_msg(), frame_id='cam')
            pub.publish(image_codec.rgb_to_image(np.zeros((48, 64, 3), np.uint8), 'rgb8', h))
            client.spin_for(0.5)
            return bool(masks.messages)
        client.wait_for(answered, 60, 'a mask after activating again')
        proc.stop_cleanly(STOP_S)
        out = proc.output()
    # 5. dmnet_core's messages go through the ROS logger (never a raw stderr line).
    core = [line for line in out.splitlines() if 'CUDA not available' in line]
    assert all('[lc46.dmnet]' in line and '[WARN]' in line for line in core), core
    import torch
    if not torch.cuda.is_available():
        assert core, out[-3000:]


# -- 5. --help ------------------------------------------------------------------------------------
@pytest.mark.parametrize('flag', ['--help', '-h'])
def test_help_prints_usage_and_every_parameter(flag):
    cmd = executable('segment_node', 'dmnet_ros.segment_node') + [flag]
    done = subprocess.run(cmd, env=ros_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith('usage: segment_node')
    for spec in node_params.PARAMS:
        assert f'  {spec.name} = ' in done.stdout, spec.name
    assert 'DMNET_FASTDDS_LARGE_FRAMES' in done.stdout
    assert 'dmnet ready' not in done.stdout + done.stderr
