"""A node a robot system can supervise (lifecycle, responsive services, clean stops).

Each test runs real node processes on its own DDS domain. The slow steps come from the
`debug.step_delay_s` TEST HOOK (a step that sleeps, on any machine); no test asserts a duration:
"at once" means the answer came while the step was still running.
"""
from __future__ import annotations

import signal

import numpy as np
import pytest
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rostest_utils import DiagnosticsWatch, NodeProcess, RosClient, ros_env, set_parameters
from sensor_msgs.msg import Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from dmnet_ros import image_codec

IMAGE_TOPIC = '/lc/image_raw'
BASE = {'device': 'cpu', 'inference_size': [64, 64], 'diagnostics.period_s': 0.2}
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
ERROR_MARKS = ('[ERROR]', '[FATAL]', 'Traceback', 'Failed to publish', 'RCLError')


def _frame(k: int, node) -> Image:
    rgb = np.full((48, 64, 3), 40 + k, np.uint8)
    msg = image_codec.rgb_to_image(rgb, 'rgb8', None)
    msg.header.stamp = node.get_clock().now().to_msg()
    msg.header.frame_id = f'f{k}'
    return msg


def _state(client: RosClient) -> int:
    return client.call(GetState, '/dmnet/get_state', GetState.Request()).current_state.id


def _change(client: RosClient, transition: int) -> bool:
    req = ChangeState.Request(transition=Transition(id=transition))
    return client.call(ChangeState, '/dmnet/change_state', req, timeout=120).success


def _answered(client, pub, masks, n: int = 2, timeout: float = 60.0) -> None:
    """Send frames until `n` masks came back."""
    start = len(masks)
    k = 0

    def more() -> bool:
        nonlocal k
        pub.publish(_frame(k, client.node))
        k += 1
        client.spin_for(0.3)
        return len(masks) - start >= n
    client.wait_for(more, timeout, f'{n} masks')


def _tiny_checkpoint(path) -> str:
    """A small 'parts' model, so a reconfigured node is told apart by its task."""
    from dmnet_core import build_model
    from dmnet_core.checkpoint import save_checkpoint
    from dmnet_core.config import ModelConfig, default_class_names

    cfg = ModelConfig(input_size=[64, 64], task='parts',
                      class_names=default_class_names('parts'))
    cfg.decoder.channels = 32
    cfg.local_memory.hidden = 16
    cfg.global_memory.key_channels = 8
    cfg.global_memory.value_channels = 16
    return str(save_checkpoint(path / 'tiny_parts.safetensors', build_model(cfg), cfg))


def test_lifecycle_transitions_and_reconfigure(tmp_path):
    env = ros_env()
    ckpt = _tiny_checkpoint(tmp_path)
    with NodeProcess(dict(BASE, autostart=False), remaps={'image': IMAGE_TOPIC},
                     env=env) as proc, RosClient(env) as client:
        proc.wait_for_output('waiting for a lifecycle manager', 60)
        assert _state(client) == State.PRIMARY_STATE_UNCONFIGURED
        assert 'model loaded' not in proc.output()
        # Unconfigured: no model, so reset says so.
        resp = client.call(Trigger, '/dmnet/reset', Trigger.Request())
        assert not resp.success and 'not configured' in resp.message

        assert _change(client, Transition.TRANSITION_CONFIGURE)
        assert _state(client) == State.PRIMARY_STATE_INACTIVE
        assert 'model loaded: task=binary' in proc.output()
        labels = client.subscribe(String, '/dmnet/labels', LATCHED)
        client.wait_for(lambda: labels.messages, 20, 'labels after configure')
        # Inactive: the input is not subscribed, frames are not taken.
        assert client.node.count_subscribers(IMAGE_TOPIC) == 0

        masks = client.subscribe(Image, '/dmnet/mask', RELIABLE)
        pub = client.node.create_publisher(Image, IMAGE_TOPIC, RELIABLE)
        assert _change(client, Transition.TRANSITION_ACTIVATE)
        assert _state(client) == State.PRIMARY_STATE_ACTIVE
        client.wait_for_subscriber(pub)
        _answered(client, pub, masks)

        assert _change(client, Transition.TRANSITION_DEACTIVATE)
        assert _state(client) == State.PRIMARY_STATE_INACTIVE
        client.wait_for(lambda: pub.get_subscription_count() == 0, 20, 'unsubscribed')
        n = len(masks)
        for k in range(3):
            pub.publish(_frame(100 + k, client.node))
            client.spin_for(0.3)
        assert len(masks) == n                   # paused: nothing answered

        # Cleanup frees the model; a new checkpoint applies on the next configure.
        assert _change(client, Transition.TRANSITION_CLEANUP)
        assert _state(client) == State.PRIMARY_STATE_UNCONFIGURED
        assert 'model freed' in proc.output()
        results = set_parameters(client, 'dmnet', {'checkpoint': ckpt})
        assert results[0].successful, results[0].reason
        assert _change(client, Transition.TRANSITION_CONFIGURE)
        assert 'model loaded: task=parts' in proc.output()
        client.wait_for(lambda: '"parts"' in labels.messages[-1].data, 20, 'parts labels')
        assert _change(client, Transition.TRANSITION_ACTIVATE)
        client.wait_for_subscriber(pub)
        _answered(client, pub, masks)
        ids = np.frombuffer(bytes(masks.messages[-1].data), np.uint8)
        assert ids.max() < 4                     # parts: background + 3 classes

        # Shutdown ends the process cleanly.
        assert _change(client, Transition.TRANSITION_ACTIVE_SHUTDOWN)
        assert proc.wait_exit(30) == 0
        out = proc.output()
        assert not [m for m in ERROR_MARKS if m in out], out[-3000:]


def _busy_node(env, delay: float):
    return NodeProcess(dict(BASE, **{'debug.step_delay_s': delay}),
                       remaps={'image': IMAGE_TOPIC}, env=env)


def _start_a_step(client, diag) -> Image:
    """Send one frame and wait until the node is inside its (slow) step."""
    pub = client.node.create_publisher(Image, IMAGE_TOPIC, RELIABLE)
    client.wait_for_subscriber(pub)
    msg = _frame(1, client.node)
    pub.publish(msg)
    diag.wait(lambda s, v: v['frames_pending'] == '1' and v['frames_received'] == '1', 30,
              'a step running')
    return msg


def test_reset_answers_during_a_slow_step_and_diagnostics_keep_their_period():
    env = ros_env()
    with _busy_node(env, 8.0) as proc, RosClient(env) as client:
        proc.wait_ready(120)
        diag = DiagnosticsWatch(client, node='/dmnet')
        masks = client.subscribe(Image, '/dmnet/mask', RELIABLE)
        _start_a_step(client, diag)
        n_diag = len(diag.collector)
        resp = client.call(Trigger, '/dmnet/reset', Trigger.Request(), timeout=30)
        assert resp.success and 'cleared' in resp.message
        # The answer came while the step still ran: no mask yet, the frame still pending.
        assert not masks.messages
        assert diag.latest()[1]['frames_pending'] == '1'
        client.spin_for(1.5)
        assert len(diag.collector) - n_diag >= 3          # period 0.2 s: not stalled
        # The model loop honours the request once the step is over.
        values = diag.wait(lambda s, v: int(v['resets']) >= 1, 60, 'reset applied')[1]
        assert values['last_reset_reason'] == 'service call'
        client.wait_for(lambda: masks.messages, 30, 'the slow frame answered')
        proc.stop_cleanly()


def test_sigterm_mid_step_exits_0_without_error_lines():
    env = ros_env()
    with _busy_node(env, 60.0) as proc, RosClient(env) as client:
        proc.wait_ready(120)
        diag = DiagnosticsWatch(client, node='/dmnet')
        _start_a_step(client, diag)
        proc.proc.send_signal(signal.SIGTERM)
        # The step would take 60 s: an exit within 15 s means it was abandoned.
        assert proc.wait_exit(15) == 0
        out = proc.output()
        assert not [m for m in ERROR_MARKS if m in out], out[-3000:]


def test_sigint_while_the_model_loads_exits_0_without_error_lines():
    env = ros_env()
    with NodeProcess(dict(BASE), remaps={'image': IMAGE_TOPIC}, env=env) as proc:
        proc.wait_for_output('loading model', 60)
        proc.proc.send_signal(signal.SIGINT)
        assert proc.wait_exit(15) == 0
        out = proc.output()
        # Loading the model takes seconds (torch import and weights): it was abandoned, the
        # node never became active.
        assert 'dmnet ready' not in out, out[-3000:]
        assert not [m for m in ERROR_MARKS if m in out], out[-3000:]


def test_sigint_when_idle_exits_0():
    env = ros_env()
    with NodeProcess(dict(BASE), remaps={'image': IMAGE_TOPIC}, env=env) as proc:
        proc.wait_ready(120)
        proc.stop_cleanly()
        out = proc.output()
        assert not [m for m in ERROR_MARKS if m in out], out[-3000:]


@pytest.mark.parametrize('arg', ['mask_topic:=', "mask_topic:=''"])
def test_bad_parameter_at_startup_is_one_logger_line_and_exit_2(arg):
    from rostest_utils import executable

    cmd = executable('segment_node', 'dmnet_ros.segment_node') + [
        '--ros-args', '-p', 'device:=cpu', '-p', arg]
    with NodeProcess(cmd=cmd, env=ros_env()) as proc:
        assert proc.wait_exit(60) == 2
        lines = [x for x in proc.output().splitlines() if x.strip()]
        # Ours is one FATAL line; rcl itself logs one line first when it cannot parse the
        # command line (`mask_topic:=` has no value), before any Python code can run.
        ours = [x for x in lines if '[dmnet]' in x]
        assert len(ours) == 1 and ours[0].startswith('[FATAL]'), lines
        assert 'invalid parameter' in ours[0] and 'mask_topic' in ours[0]
        assert len(lines) <= 2 and not [m for m in ('Traceback', 'RCLError') if m in
                                        proc.output()], lines
