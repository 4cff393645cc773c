"""The node under stress: input fuzzing, model faults, parameter validation, start-up errors.

The fuzz run is bounded (FUZZ_COUNT messages, a fixed seed, bursts at 10x the normal rate) and
checks the accounting contract: the node stays alive, every valid frame is answered or counted
as dropped, every invalid one is counted as rejected, and the diagnostics say so.
"""
from __future__ import annotations

import time

import numpy as np
import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rostest_utils import (
    DiagnosticsWatch,
    NodeProcess,
    RosClient,
    apply_ros_env,
    ros_env,
    set_parameters,
)
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from dmnet_ros import image_codec

IMAGE_TOPIC = '/fuzz/image_raw'
FUZZ_COUNT = 240
NORMAL_PERIOD_S = 1 / 30
BURST_PERIOD_S = NORMAL_PERIOD_S / 10
NODE_PARAMS = {
    'device': 'cpu',
    'inference_size': [64, 64],
    'diagnostics.period_s': 0.2,
    # Reliable input with room for a burst, so that DDS itself loses nothing and the node's
    # counters can be compared exactly with what was sent.
    'input.reliability': 'reliable',
    'input.depth': 100,
}
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
VALID_ENCODINGS = ('rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8', '8UC1', '8UC3', '8UC4')
BAD_ENCODINGS = ('mono16', 'rgb16', '16UC1', '32FC1', '64FC3', 'bayer_rggb8', 'yuv422',
                 'RGB8', 'jpeg', '', 'rgb8 ', '\u00e9nc')


def _stamp(header: Header, i: int) -> Header:
    header.stamp.sec, header.stamp.nanosec = 1_700_000_000 + i // 100, (i % 100) * 10_000_000
    return header


def _content(rng: np.random.Generator, h: int, w: int, ch: int) -> np.ndarray:
    """Odd but legal 8-bit content: constant 0 or 255, stripes, noise or a checkerboard."""
    kind = rng.integers(0, 5)
    if kind == 0:
        return np.zeros((h, w, ch), np.uint8)
    if kind == 1:
        return np.full((h, w, ch), 255, np.uint8)
    if kind == 2:
        return np.broadcast_to((np.arange(w) % 2 * 255).astype(np.uint8)[None, :, None],
                               (h, w, ch)).copy()
    if kind == 3 and h * w <= 1 << 20:
        return rng.integers(0, 256, (h, w, ch), dtype=np.uint8)
    yy, xx = np.indices((h, w))
    return np.repeat((((yy // 8 + xx // 8) % 2) * 200).astype(np.uint8)[..., None], ch, 2)


def _size(rng: np.random.Generator) -> tuple[int, int]:
    r = rng.random()
    if r < 0.02:
        return 2160, 3840            # 4K
    if r < 0.06:
        return 1080, 1920
    if r < 0.2:
        return int(rng.integers(1, 4)), int(rng.integers(1, 4))   # 1x1 .. 3x3
    return int(rng.integers(4, 200)), int(rng.integers(4, 260))


def make_fuzz_message(rng: np.random.Generator, i: int) -> tuple[Image, bool, str]:
    """One random message, whether it is valid, and what was done to it."""
    h, w = _size(rng)
    enc = VALID_ENCODINGS[rng.integers(len(VALID_ENCODINGS))]
    ch = image_codec.channels_of(enc)
    pad = int(rng.choice([0, 0, 1, 3, 64]))
    msg = image_codec.array_to_image(_content(rng, h, w, ch), enc, step=w * ch + pad)
    msg.is_bigendian = int(rng.integers(0, 2))   # meaningless for 8-bit data: still valid
    _stamp(msg.header, i)
    msg.header.frame_id = f'fuzz{i}'
    if rng.random() < 0.5:
        return msg, True, f'valid {enc} {h}x{w} pad {pad}'
    fault = int(rng.integers(0, 6))
    data = bytes(msg.data)
    if fault == 0:
        msg.encoding = BAD_ENCODINGS[rng.integers(len(BAD_ENCODINGS))]
    elif fault == 1:
        msg.data = data[:int(rng.integers(0, len(data)))]             # truncated
    elif fault == 2:
        msg.data = data + bytes(int(rng.integers(1, 9)))                 # trailing bytes
    elif fault == 3:
        msg.step = max(0, w * ch - int(rng.integers(1, w * ch + 1)))     # step < a row
    elif fault == 4:
        if rng.random() < 0.5:
            msg.height, msg.data = 0, b''
        else:
            msg.width = 0
    else:
        msg.height = int(rng.integers(9000, 100000))                    # data says otherwise
    return msg, False, f'invalid #{fault} {msg.encoding!r} {msg.height}x{msg.width}'


@pytest.fixture(scope='module')
def node_proc():
    with NodeProcess(NODE_PARAMS, remaps={'image': IMAGE_TOPIC}, env=ros_env()) as proc:
        proc.wait_ready()
        yield proc


@pytest.fixture
def client(node_proc):
    with RosClient(node_proc.env, name='dmnet_fuzzer') as c:
        yield c


def test_fuzzed_input(node_proc, client):
    diag = DiagnosticsWatch(client, node='/dmnet')
    masks = client.subscribe(Image, '/dmnet/mask', RELIABLE)
    pub = client.node.create_publisher(Image, IMAGE_TOPIC, RELIABLE)
    client.wait_for_subscriber(pub)
    base = diag.wait_settled()
    rng = np.random.default_rng(8)
    valid_keys: dict[str, tuple[int, int]] = {}
    n_valid = n_invalid = 0
    started = time.monotonic()
    i = 0
    while i < FUZZ_COUNT:
        # Every ~40 messages a burst of 20 at ten times the normal rate.
        burst = 20 if i % 40 == 0 else 1
        for _ in range(min(burst, FUZZ_COUNT - i)):
            msg, valid, _what = make_fuzz_message(rng, i)
            if valid:
                n_valid += 1
                valid_keys[msg.header.frame_id] = (msg.height, msg.width)
            else:
                n_invalid += 1
            pub.publish(msg)
            i += 1
            client.spin_for(BURST_PERIOD_S if burst > 1 else NORMAL_PERIOD_S)
        assert time.monotonic() - started < 120, 'fuzz run too slow'
    assert node_proc.alive(), node_proc.output()[-3000:]

    def delta(v: dict[str, str], key: str) -> int:
        return int(v[key]) - int(base[key])

    values = diag.wait(lambda s, v: delta(v, 'frames_received') == n_valid + n_invalid
                       and int(v['frames_pending']) == 0, 60, 'all fuzz messages counted')[1]
    values = diag.wait_settled()
    assert delta(values, 'frames_rejected') == n_invalid
    assert delta(values, 'frames_answered') + delta(values, 'frames_dropped') == n_valid
    assert delta(values, 'frames_answered') >= 1
    assert int(values['faults']) == int(base['faults'])     # odd input never hit the model
    assert values['last_error']
    # Masks that came back belong to valid frames and have their size.
    for m in masks.messages:
        if m.header.frame_id.startswith('fuzz'):
            assert m.header.frame_id in valid_keys, m.header.frame_id
            assert (m.height, m.width) == valid_keys[m.header.frame_id]
    assert 'rejected frame' in node_proc.output()
    assert node_proc.alive()


def test_model_fault_resets_and_continues(node_proc, client):
    diag = DiagnosticsWatch(client, node='/dmnet')
    masks = client.subscribe(Image, '/dmnet/mask', RELIABLE)
    pub = client.node.create_publisher(Image, IMAGE_TOPIC, RELIABLE)
    client.wait_for_subscriber(pub)
    base = diag.wait_settled()
    assert set_parameters(client, 'dmnet', {'debug.inject_fault_every': 3})[0].successful
    try:
        rgb = np.full((40, 50, 3), 120, np.uint8)
        for k in range(9):  # one at a time, each settled: 3 faults expected exactly
            msg = image_codec.rgb_to_image(rgb, 'rgb8')
            _stamp(msg.header, 100000 + k)
            msg.header.frame_id = f'fault{k}'
            pub.publish(msg)
            diag.wait(lambda s, v, n=k + 1: int(v['frames_received']) - int(
                base['frames_received']) >= n and int(v['frames_pending']) == 0, 20, 'frame')
        status, values = diag.wait(lambda s, v: int(v['faults']) - int(base['faults']) == 3
                                   and int(v['frames_answered'])
                                   - int(base['frames_answered']) == 6, 20, 'faults counted')
        assert status.level == status.ERROR
        assert 'CUDA error: injected' in values['last_error']
        assert values['last_reset_reason'] == 'fault'
        assert int(values['resets']) - int(base['resets']) >= 3
        assert int(values['frames_dropped']) - int(base['frames_dropped']) == 3
        client.wait_for(lambda: sum(m.header.frame_id.startswith('fault')
                                    for m in masks.messages) == 6, 10, 'six masks')
        assert 'model fault, resetting the memory' in node_proc.output()
    finally:
        assert set_parameters(client, 'dmnet', {'debug.inject_fault_every': 0})[0].successful
    assert node_proc.alive()


INVALID_PARAMETERS = [
    ('overlay.alpha', 2.0, 'out of range'),
    ('overlay.alpha', 'opaque', 'type'),
    ('reset.time_jump_s', -1.0, 'out of range'),
    ('debug.inject_fault_every', -1, 'out of range'),
    ('overlay.palette', [1, 2], 'triplets'),
    ('overlay.palette', [0, 0, 300], '0..255'),
    ('mask_value_mode', 'rainbow', 'not one of'),
    # Topics and QoS are read-only; model parameters are settable (the next lifecycle configure
    # uses them, see test_lifecycle) but still checked.
    ('mask_topic', '/elsewhere/mask', 'read-only'),
    ('input.depth', 5, 'read-only'),
    ('device', 'tpu', 'device='),
    ('inference_size', [100, 128], 'multiples of 32'),
]


def test_invalid_parameters_are_rejected_with_reason(client):
    # One client for all cases: each set is its own service call, checked on its own.
    for name, value, reason in INVALID_PARAMETERS:
        (result,) = set_parameters(client, 'dmnet', {name: value})
        assert not result.successful, (name, value)
        assert reason in result.reason.lower(), (name, value, result.reason)


def test_valid_runtime_parameter_is_accepted(client):
    (result,) = set_parameters(client, 'dmnet', {'overlay.alpha': 0.25})
    assert result.successful, result.reason
    (result,) = set_parameters(client, 'dmnet', {'overlay.palette': [10, 20, 30]})
    assert result.successful, result.reason


def _start_failure(params: dict) -> tuple[int, str]:
    with NodeProcess(params, env=ros_env()) as proc:
        rc = proc.wait_exit(60)
        return rc, proc.output()


def test_missing_checkpoint_is_a_clear_startup_error(tmp_path):
    path = tmp_path / 'nowhere' / 'model.safetensors'
    rc, out = _start_failure({'checkpoint': str(path), 'device': 'cpu'})
    assert rc != 0
    assert 'checkpoint not found' in out and str(path) in out
    assert 'Traceback' not in out


def test_corrupt_checkpoint_is_a_clear_startup_error(tmp_path):
    path = tmp_path / 'corrupt.safetensors'
    path.write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{not json at all' + bytes(64))
    rc, out = _start_failure({'checkpoint': str(path), 'device': 'cpu'})
    assert rc != 0
    assert 'cannot load model' in out and 'corrupt.safetensors' in out
    assert 'Traceback' not in out


def test_checkpoint_of_another_task_is_a_clear_startup_error(tmp_path):
    from dmnet_core import build_model
    from dmnet_core.checkpoint import save_checkpoint
    from dmnet_core.config import ModelConfig, default_class_names

    cfg = ModelConfig(input_size=[64, 64], task='parts', class_names=default_class_names('parts'))
    path = save_checkpoint(tmp_path / 'parts.safetensors', build_model(cfg), cfg)
    rc, out = _start_failure({'checkpoint': str(path), 'task': 'binary', 'device': 'cpu'})
    assert rc == 2
    assert "task 'binary' asked for" in out and "is for 'parts'" in out
    assert 'Traceback' not in out


@pytest.mark.parametrize('params, text', [
    ({'device': 'tpu'}, "device='tpu'"),
    ({'inference_size': [50, 64]}, 'multiples of 32'),
    ({'memory.capacity': 0}, 'memory.capacity'),
    ({'overlay.alpha': 1}, 'DOUBLE'),          # an integer where a double is declared
])
def test_invalid_startup_parameter_exits_non_zero(params, text):
    rc, out = _start_failure(params)
    assert rc != 0
    assert 'invalid parameter' in out and text in out
    assert 'Traceback' not in out


def test_oom_in_process_fault_path():
    """A real torch.OutOfMemoryError raised inside step: logged, state reset, frame dropped."""
    import rclpy
    import torch
    from rclpy.context import Context
    from rclpy.parameter import Parameter

    from dmnet_ros.segment_node import SegmentNode

    env = ros_env()
    apply_ros_env(env)
    ctx = Context()
    rclpy.init(context=ctx, domain_id=int(env['ROS_DOMAIN_ID']))
    try:
        node = SegmentNode(context=ctx, parameter_overrides=[
            Parameter('device', value='cpu'), Parameter('inference_size', value=[64, 64]),
            Parameter('memory.policy', value='recent')])
        node.load_model()
        node.start()
        try:
            rgb = np.full((32, 32, 3), 50, np.uint8)
            # The subscription callback is called directly: no DDS needed for this path.
            for k in range(3):
                node._on_image(_msg(rgb, k))
                _wait(lambda n=k + 1: node.stats.answered >= n)
            assert node.segmenter.frames_seen == 3 and node.segmenter.memory_size >= 1

            def oom(_i: int) -> None:
                raise torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 2 GiB')

            node.segmenter.fault_hook = oom
            node._on_image(_msg(rgb, 3))
            _wait(lambda: node.stats.faults == 1)
            assert node.segmenter.frames_seen == 0 and node.segmenter.memory_size == 0
            assert node.stats.dropped == 1 and node.stats.answered == 3
            assert 'OutOfMemoryError' in node.stats.last_error
            node.segmenter.fault_hook = None
            node._on_image(_msg(rgb, 4))
            _wait(lambda: node.stats.answered == 4)
            values = node.diagnostics_values()
            assert values['frames_received'] == 5 and values['resets'] == 1
        finally:
            node.stop()
            node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)


def _msg(rgb: np.ndarray, k: int) -> Image:
    return image_codec.rgb_to_image(rgb, 'rgb8', _stamp(Header(frame_id='oom'), 200000 + k))


def _wait(pred, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError('timed out')
