"""The dmnet node in its own process, driven over real DDS by a test node.

One node process serves the whole module (start-up costs a torch import); every test gets a
fresh rclpy Context. Frames are 64 x 80, the model runs at 64 x 64 on the CPU.
"""
import json
import time

import numpy as np
import pytest
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rostest_utils import (
    PARAMS_FILE,
    DiagnosticsWatch,
    NodeProcess,
    RosClient,
    list_parameters,
    ros_env,
    set_parameters,
)
from sensor_msgs.msg import Image
from std_msgs.msg import Header, String
from std_srvs.srv import Trigger

from dmnet_ros import image_codec

H, W = 64, 80
IMAGE_TOPIC = '/endoscope/image_raw'
NODE_PARAMS = {
    'device': 'cpu',
    'inference_size': [64, 64],
    'memory.policy': 'recent',           # every frame enters the bank: observable state
    'memory.capacity': 4,
    'diagnostics.period_s': 0.2,
}
BEST_EFFORT = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)

# Stamps of the frames the tests send: strictly increasing, at least 10 ms apart, nanosecond
# integers, never behind the wall clock (in the node's clock, so that latency is reported).
_clock_ns = [time.time_ns()]


def _header(at_ns: int | None = None, frame_id: str = 'endoscope') -> Header:
    """The next stamp, or `at_ns` (which the following stamps then continue from)."""
    _clock_ns[0] = max(_clock_ns[0] + 10_000_000, time.time_ns()) if at_ns is None else at_ns
    h = Header(frame_id=frame_id)
    h.stamp.sec, h.stamp.nanosec = divmod(_clock_ns[0], 10**9)
    return h


def _frame(header: Header, h: int = H, w: int = W, encoding: str = 'bgr8') -> Image:
    rng = np.random.default_rng(header.stamp.nanosec + header.stamp.sec)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return image_codec.rgb_to_image(rgb, encoding, header)


def _key(header: Header) -> tuple[int, int, str]:
    return header.stamp.sec, header.stamp.nanosec, header.frame_id


def _has_mask(masks, hdr: Header):
    """A predicate: has a mask with exactly this header arrived?"""
    key = _key(hdr)
    return lambda: any(_key(m.header) == key for m in masks.messages)


@pytest.fixture(scope='module')
def node_proc():
    env = ros_env()
    with NodeProcess(NODE_PARAMS, remaps={'image': IMAGE_TOPIC}, env=env) as proc:
        proc.wait_ready()
        yield proc
        assert proc.alive(), f'node died:\n{proc.output()[-3000:]}'
        proc.stop_cleanly()


@pytest.fixture
def client(node_proc):
    with RosClient(node_proc.env) as c:
        yield c


def _send_until_answered(client, pub, masks, n=3, timeout=20.0, **frame_kw):
    """Publish frames one by one until `n` of them got a mask back; returns their headers."""
    answered = []
    for _ in range(int(timeout / 0.1)):
        hdr = _header()
        pub.publish(_frame(hdr, **frame_kw))
        try:
            client.wait_for(_has_mask(masks, hdr), timeout=0.5)
            answered.append(hdr)
        except AssertionError:
            pass
        if len(answered) >= n:
            return answered
    raise AssertionError(f'only {len(answered)} of {n} frames answered in {timeout} s')


def test_ready_line_and_topics(node_proc, client):
    out = node_proc.output()
    assert 'dmnet ready' in out and 'device=cpu' in out
    assert IMAGE_TOPIC in out       # the remapped input is what it listens on
    client.wait_for_publisher('/dmnet/mask')
    client.wait_for_publisher('/dmnet/labels')


def test_mask_overlay_labels(client):
    masks = client.subscribe(Image, '/dmnet/mask', RELIABLE)
    overlays = client.subscribe(Image, '/dmnet/overlay', RELIABLE)
    labels = client.subscribe(String, '/dmnet/labels', LATCHED)
    pub = client.node.create_publisher(Image, IMAGE_TOPIC, BEST_EFFORT)
    client.wait_for_subscriber(pub)
    # The overlay is computed only for subscribers: wait until the node sees ours.
    client.wait_for(lambda: client.node.count_subscribers('/dmnet/overlay') > 0, 10)
    sent = _send_until_answered(client, pub, masks, n=3)
    client.wait_for(lambda: len(overlays) >= 2, 10, 'overlays')

    by_key = {_key(m.header): m for m in masks.messages}
    classes = json.loads(client.wait_for(lambda: labels.messages, 10, 'labels')[-1].data)
    assert classes['class_names'][0] == 'background'
    assert classes['task'] in ('binary', 'parts', 'type')
    assert classes['mask_value_mode'] == 'class_ids'
    for hdr in sent:
        m = by_key[_key(hdr)]           # header unchanged: stamp and frame_id
        assert m.encoding == 'mono8'
        assert (m.height, m.width, m.step) == (H, W, W)
        ids = np.frombuffer(bytes(m.data), np.uint8)
        assert ids.size == H * W and ids.max() < len(classes['class_names'])
    sent_keys = {_key(h) for h in sent}
    for ov in overlays.messages:
        assert ov.encoding == 'rgb8' and (ov.height, ov.width, ov.step) == (H, W, 3 * W)
        assert len(ov.data) == H * W * 3
        assert _key(ov.header)[2] == 'endoscope'
    assert sent_keys & {_key(o.header) for o in overlays.messages}


def test_diagnostics_content(client):
    diag = DiagnosticsWatch(client, node='/dmnet')
    masks = client.subscribe(Image, '/dmnet/mask', RELIABLE)
    pub = client.node.create_publisher(Image, IMAGE_TOPIC, BEST_EFFORT)
    client.wait_for_subscriber(pub)
    _send_until_answered(client, pub, masks, n=3)
    values = diag.wait_settled()
    status, values = diag.latest()
    for key in ('frames_received', 'frames_answered', 'frames_dropped', 'frames_rejected',
                'memory_bank_size', 'frames_since_reset', 'resets', 'last_error',
                'latency_ms_p50', 'latency_ms_p95', 'inference_ms', 'device', 'input_rate_hz',
                'output_rate_hz', 'faults'):
        assert key in values, key
    assert status.hardware_id == '/dmnet@cpu' and values['device'] == 'cpu'
    assert int(values['frames_answered']) >= 3
    assert 0 < float(values['inference_ms']) < 5000
    assert float(values['latency_ms_p95']) >= float(values['latency_ms_p50']) > 0
    assert int(values['memory_bank_size']) >= 1     # policy 'recent' admits every frame
    assert values['inference_size'] == '64x64'


def test_qos_best_effort_and_reliable_publishers_and_subscribers(client):
    got_reliable = client.subscribe(Image, '/dmnet/mask', RELIABLE)
    got_best_effort = client.subscribe(Image, '/dmnet/mask', BEST_EFFORT)
    for qos in (BEST_EFFORT, RELIABLE):
        pub = client.node.create_publisher(Image, IMAGE_TOPIC, qos)
        client.wait_for_subscriber(pub)
        sent = _send_until_answered(client, pub, got_reliable, n=2)
        keys = {_key(h) for h in sent}
        client.wait_for(lambda k=keys: k <= {_key(m.header) for m in got_best_effort.messages},
                        10, f'best-effort subscriber to see masks ({qos.reliability.name} input)')
        client.node.destroy_publisher(pub)


def test_bad_messages_are_rejected_and_reported(node_proc, client):
    diag = DiagnosticsWatch(client, node='/dmnet')
    pub = client.node.create_publisher(Image, IMAGE_TOPIC, RELIABLE)
    client.wait_for_subscriber(pub)
    base = diag.wait(lambda s, v: True, what='first diagnostics')[1]
    rejected = int(base['frames_rejected'])
    good = _frame(_header())
    bad = {
        'wrong encoding': Image(height=4, width=4, encoding='32FC1', step=16, data=bytes(64)),
        'short data': Image(height=4, width=4, encoding='rgb8', step=12, data=bytes(40)),
        'zero size': Image(height=0, width=0, encoding='rgb8', step=0, data=b''),
        'wrong step': Image(height=4, width=4, encoding='rgb8', step=10, data=bytes(40)),
    }
    for what, msg in bad.items():
        msg.header = _header()
        for _ in range(20):  # best-effort input: resend until the node has counted it
            pub.publish(msg)
            try:
                diag.wait(lambda s, v, r=rejected: int(v['frames_rejected']) > r, 1.0, what)
                break
            except AssertionError:
                continue
        status, values = diag.latest()
        assert int(values['frames_rejected']) > rejected, what
        rejected = int(values['frames_rejected'])
        assert status.level == status.WARN
        assert values['last_error'], what
    assert 'unsupported encoding' in node_proc.output()
    # Still alive and answering.
    masks = client.subscribe(Image, '/dmnet/mask', RELIABLE)
    pub.publish(good)
    _send_until_answered(client, pub, masks, n=1)
    assert node_proc.alive()


def test_reset_service_clears_memory(client):
    diag = DiagnosticsWatch(client, node='/dmnet')
    masks = client.subscribe(Image, '/dmnet/mask', RELIABLE)
    pub = client.node.create_publisher(Image, IMAGE_TOPIC, RELIABLE)
    client.wait_for_subscriber(pub)
    _send_until_answered(client, pub, masks, n=3)
    before = diag.wait(lambda s, v: int(v['frames_since_reset']) >= 2
                       and int(v['memory_bank_size']) >= 1, what='memory filled')[1]
    resp = client.call(Trigger, '/dmnet/reset', Trigger.Request())
    assert resp.success and 'cleared' in resp.message
    after = diag.wait(lambda s, v: int(v['resets']) > int(before['resets']),
                      what='reset counted')[1]
    assert after['memory_bank_size'] == '0' and after['frames_since_reset'] == '0'
    assert after['last_reset_reason'] == 'service call'


@pytest.mark.parametrize('case', ['backwards', 'forward', 'size'])
def test_automatic_resets(client, case):
    diag = DiagnosticsWatch(client, node='/dmnet')
    masks = client.subscribe(Image, '/dmnet/mask', RELIABLE)
    pub = client.node.create_publisher(Image, IMAGE_TOPIC, RELIABLE)
    client.wait_for_subscriber(pub)
    _send_until_answered(client, pub, masks, n=2)
    before = diag.wait(lambda s, v: int(v['frames_since_reset']) >= 1, what='frames seen')[1]
    if case == 'backwards':     # a looped bag: stamps restart 100 s earlier
        hdr, kw, reason = _header(_clock_ns[0] - 100 * 10**9), {}, 'backwards'
    elif case == 'forward':     # a new case: 1000 s later (> reset.time_jump_s = 5)
        hdr, kw, reason = _header(_clock_ns[0] + 1000 * 10**9), {}, 'forward'
    else:
        hdr, kw, reason = _header(), {'h': 32, 'w': 48}, 'size changed'
    pub.publish(_frame(hdr, **kw))
    after = diag.wait(lambda s, v: int(v['resets']) > int(before['resets']), 10,
                      f'{case} reset')[1]
    assert reason in after['last_reset_reason']


def test_mask_value_mode_binary_255(client):
    labels = client.subscribe(String, '/dmnet/labels', LATCHED)
    client.wait_for(lambda: labels.messages, 10, 'labels')
    task = json.loads(labels.messages[-1].data)['task']
    results = set_parameters(client, 'dmnet', {'mask_value_mode': 'binary_255'})
    if task != 'binary':
        assert not results[0].successful and 'binary' in results[0].reason
        return
    assert results[0].successful, results[0].reason
    try:
        client.wait_for(lambda: json.loads(labels.messages[-1].data)['mask_value_mode']
                        == 'binary_255', 10, 'labels republished')
        assert json.loads(labels.messages[-1].data)['values']['instrument'] == 255
        masks = client.subscribe(Image, '/dmnet/mask', RELIABLE)
        pub = client.node.create_publisher(Image, IMAGE_TOPIC, RELIABLE)
        client.wait_for_subscriber(pub)
        _send_until_answered(client, pub, masks, n=2)
        for m in masks.messages:
            assert set(np.unique(np.frombuffer(bytes(m.data), np.uint8))) <= {0, 255}
    finally:
        assert set_parameters(client, 'dmnet', {'mask_value_mode': 'class_ids'})[0].successful


def test_declared_parameters_match_yaml(client):
    import yaml

    names = set(list_parameters(client, 'dmnet'))
    names -= {'use_sim_time', 'start_type_description_service'}   # declared by rclpy itself
    in_yaml = set(yaml.safe_load(PARAMS_FILE.read_text())['/**']['ros__parameters'])
    assert names == in_yaml, (names - in_yaml, in_yaml - names)


def test_second_stream_in_a_namespace_keeps_its_own_memory(node_proc, client):
    """Stereo: a 'right' instance as the launch file starts it (its own namespace, default
    topic parameters): its outputs are /right/dmnet/*, its memory and reset are its own."""
    right_params = dict(NODE_PARAMS)
    remaps = {'image': '/endoscope/right/image_raw', '__ns': '/right'}
    left = DiagnosticsWatch(client, node='/dmnet')
    right = DiagnosticsWatch(client, node='/right/dmnet')
    left_masks = client.subscribe(Image, '/dmnet/mask', RELIABLE)
    with NodeProcess(right_params, remaps=remaps, env=node_proc.env) as proc:
        proc.wait_ready()
        right_masks = client.subscribe(Image, '/right/dmnet/mask', RELIABLE)
        pub = client.node.create_publisher(Image, '/endoscope/right/image_raw', RELIABLE)
        client.wait_for_subscriber(pub)
        sent = _send_until_answered(client, pub, right_masks, n=2)
        left_before = left.wait(lambda s, v: True, what='left diagnostics')[1]
        values = right.wait(lambda s, v: int(v['frames_since_reset']) >= 2, what='right memory')[1]
        assert int(values['frames_answered']) >= 2
        # The right reset service is namespaced and touches only the right memory.
        assert client.call(Trigger, '/right/dmnet/reset', Trigger.Request()).success
        right.wait(lambda s, v: v['frames_since_reset'] == '0', what='right reset')
        left_after = left.wait(lambda s, v: True, what='left diagnostics')[1]
        assert left_after['resets'] == left_before['resets']
        assert left_after['frames_since_reset'] == left_before['frames_since_reset']
        keys = {_key(h) for h in sent}
        assert not keys & {_key(m.header) for m in left_masks.messages}
        proc.stop_cleanly()


def test_frames_accounted_for(node_proc, client):
    """Every frame received was answered, dropped or rejected (checked after all tests above)."""
    diag = DiagnosticsWatch(client, node='/dmnet')
    values = diag.wait_settled()
    assert int(values['frames_received']) > 0
    assert node_proc.alive()


def test_torch_compile_parameter(node_proc, client):
    """torch_compile:=true compiles at start-up (before 'ready') and then answers frames."""
    params = dict(NODE_PARAMS, torch_compile=True)
    remaps = {'image': '/endoscope/compiled/image_raw', '__ns': '/compiled'}
    with NodeProcess(params, remaps=remaps, env=node_proc.env) as proc:
        proc.wait_ready(timeout=600.0)
        assert 'compiled=True' in proc.output(), proc.output()[-3000:]
        masks = client.subscribe(Image, '/compiled/dmnet/mask', RELIABLE)
        pub = client.node.create_publisher(Image, '/endoscope/compiled/image_raw', RELIABLE)
        client.wait_for_subscriber(pub)
        _send_until_answered(client, pub, masks, n=2)
        proc.stop_cleanly()
