"""The node's pure helpers: parameter table and checks, overlay blending, frame statistics."""
import dataclasses

import numpy as np
import pytest

from dmnet_ros import node_params
from dmnet_ros.overlay import DEFAULT_PALETTE, blend_overlay, palette_table
from dmnet_ros.stats import FrameStats, RateMeter


def test_memory_defaults_follow_core_config():
    from dmnet_core.config import GlobalMemoryConfig

    core = dataclasses.asdict(GlobalMemoryConfig())
    for key, value in node_params.MEMORY_DEFAULTS.items():
        assert core[key] == value, key
        assert node_params.SPECS[f'memory.{key}'].default == value


def test_fixed_parameter_names_exist():
    # Names the replay harness relies on.
    for name in ('checkpoint', 'device', 'precision', 'inference_size'):
        assert name in node_params.SPECS
    assert node_params.SPECS['checkpoint'].default == ''
    assert node_params.SPECS['inference_size'].default == [0, 0]
    assert node_params.SPECS['input.reliability'].default == 'auto'
    assert node_params.SPECS['image_transport'].default == 'raw'
    assert node_params.SPECS['autostart'].default is True
    assert node_params.SPECS['input.depth'].default == 1
    assert node_params.SPECS['output.reliability'].default == 'reliable'
    # Relative: /dmnet/mask at the root namespace (the contract), /left/dmnet/mask under /left.
    assert node_params.SPECS['mask_topic'].default == 'dmnet/mask'


def test_read_only_where_a_reload_is_needed():
    dynamic = {p.name for p in node_params.PARAMS if not p.read_only}
    assert dynamic == {'mask_value_mode', 'overlay.alpha', 'overlay.palette',
                       'reset.time_jump_s', 'debug.inject_fault_every', 'debug.step_delay_s',
                       'camera_info.wait_s'}
    # Model and memory: settable at any time, used by the next lifecycle configure.
    on_configure = {p.name for p in node_params.PARAMS if p.reconfigure}
    assert {'checkpoint', 'device', 'precision', 'memory.capacity'} <= on_configure
    assert not node_params.SPECS['checkpoint'].descriptor().read_only
    assert node_params.SPECS['mask_topic'].descriptor().read_only
    d = node_params.SPECS['overlay.alpha'].descriptor()
    assert d.floating_point_range[0].to_value == 1.0 and not d.read_only
    d = node_params.SPECS['memory.capacity'].descriptor()
    assert d.integer_range[0].from_value == 1 and 'next configure' in d.description


@pytest.mark.parametrize('name, value, ok', [
    ('device', 'cuda:1', True), ('device', 'gpu', False), ('device', 'cuda:', False),
    ('precision', 'bf16', True), ('precision', 'int8', False),
    ('inference_size', [0, 0], True), ('inference_size', [256, 320], True),
    ('inference_size', [250, 320], False), ('inference_size', [256], False),
    ('inference_size', [0, 320], False), ('inference_size', [8192, 320], False),
    ('overlay.palette', [1, 2, 3], True), ('overlay.palette', [], False),
    ('overlay.palette', [1, 2, 256], False), ('mask_value_mode', 'binary_255', True),
    ('mask_topic', '', False), ('compressed_topic', '', True), ('task', 'type', True),
    ('camera_info_topic', '', True), ('image_transport', 'compressed', True),
    ('image_transport', 'theora', False), ('input.reliability', 'auto', True),
    ('task', 'instance', False), ('memory.policy', 'lru', False),
])
def test_check_value(name, value, ok):
    reason = node_params.check_value(name, value)
    assert (reason is None) == ok, reason
    if not ok:
        assert name.split('.')[0] in reason or name in reason


def test_memory_overrides_and_inference_size():
    values = {p.name: p.default for p in node_params.PARAMS}
    mem = node_params.memory_overrides(values)
    assert mem == node_params.MEMORY_DEFAULTS           # enabled=true: the checkpoint's own
    values['memory.global_enabled'] = False
    assert node_params.memory_overrides(values)['global_enabled'] is False
    assert 'label_propagation' not in mem               # 'checkpoint': the checkpoint's own
    values['memory.label_propagation'] = 0.0
    assert node_params.memory_overrides(values)['label_propagation'] == 0.0
    values['memory.label_propagation'] = 2                # an integer weight is a number too
    assert node_params.memory_overrides(values)['label_propagation'] == 2.0
    assert 'local_vote_radius' not in mem               # 'checkpoint': the checkpoint's own
    values['memory.local_vote_radius'] = 0
    assert node_params.memory_overrides(values)['local_vote_radius'] == 0
    values['memory.local_vote_radius'] = 'all'          # every cell: the Segmenter's -1
    assert node_params.memory_overrides(values)['local_vote_radius'] == -1
    assert node_params.inference_size(values) is None
    values['inference_size'] = [64, 96]
    assert node_params.inference_size(values) == (64, 96)


def test_palette_table_cycles_and_skips_background():
    table = palette_table([1, 2, 3, 4, 5, 6], num_classes=5)
    assert table.shape == (5, 3)
    np.testing.assert_array_equal(table[0], [0, 0, 0])
    np.testing.assert_array_equal(table[1], [1, 2, 3])
    np.testing.assert_array_equal(table[2], [4, 5, 6])
    np.testing.assert_array_equal(table[3], [1, 2, 3])
    with pytest.raises(ValueError, match='triplets'):
        palette_table([1, 2])


def test_blend_overlay():
    rgb = np.full((2, 3, 3), 100, np.uint8)
    mask = np.array([[0, 1, 2], [0, 0, 1]], np.uint8)
    table = palette_table(DEFAULT_PALETTE)
    out = blend_overlay(rgb, mask, table, 0.5)
    np.testing.assert_array_equal(out[0, 0], [100, 100, 100])          # background untouched
    np.testing.assert_array_equal(out[0, 1], [50, 178, 50])            # half green (rounded)
    np.testing.assert_array_equal(out[0, 2], [178, 50, 178])           # half magenta
    np.testing.assert_array_equal(blend_overlay(rgb, mask, table, 1.0)[1, 2], [0, 255, 0])
    np.testing.assert_array_equal(blend_overlay(rgb, mask, table, 0.0), rgb)
    assert rgb[0, 1, 0] == 100                                          # input not modified
    with pytest.raises(ValueError, match='differ in size'):
        blend_overlay(rgb, mask[:1], table, 0.5)


def test_rate_meter():
    meter = RateMeter(window_s=10.0)
    for i in range(11):
        meter.tick(100.0 + i * 0.1)
    assert meter.rate(101.0) == pytest.approx(10.0)
    assert meter.rate(200.0) == 0.0                     # all outside the window


def test_frame_stats_accounting():
    s = FrameStats()
    for _ in range(5):
        s.on_received()
    s.on_rejected('bad encoding')
    s.on_dropped()
    s.on_fault('RuntimeError: CUDA error')
    s.on_answered(12.0, 3.0)
    s.on_answered(None, 4.0)
    s.on_reset('fault')
    snap = s.snapshot()
    assert snap['frames_received'] == 5
    assert snap['frames_answered'] + snap['frames_dropped'] + snap['frames_rejected'] == 5
    assert snap['faults'] == 1 and snap['resets'] == 1
    assert snap['last_error'] == 'RuntimeError: CUDA error'
    assert snap['latency_ms_p50'] == 12.0 and snap['inference_ms'] == 4.0
    assert snap['seconds_since_fault'] < 5.0


def test_derived_topic_names():
    from dmnet_ros import transport

    assert transport.compressed_topic_for('/cam/image_raw') == '/cam/image_raw/compressed'
    assert transport.camera_info_topic_for('/cam/image_raw') == '/cam/camera_info'
    assert transport.camera_info_topic_for('/image') == '/camera_info'
    assert transport.camera_info_topic_for('/left/cam/image_rect') == '/left/cam/camera_info'
    assert transport.sibling_topic('dmnet/mask', 'camera_info') == 'dmnet/camera_info'
    assert transport.sibling_topic('/x/dmnet/mask', 'camera_info') == '/x/dmnet/camera_info'
    assert transport.sibling_topic('mask', 'camera_info') == 'camera_info'


def test_auto_reliability_follows_the_publishers():
    from rclpy.qos import ReliabilityPolicy as R

    from dmnet_ros.transport import resolve_reliability

    assert resolve_reliability('auto', []) == 'reliable'
    assert resolve_reliability('auto', [R.RELIABLE, R.RELIABLE]) == 'reliable'
    assert resolve_reliability('auto', [R.RELIABLE, R.BEST_EFFORT]) == 'best_effort'
    assert resolve_reliability('reliable', [R.BEST_EFFORT]) == 'reliable'
    assert resolve_reliability('best_effort', [R.RELIABLE]) == 'best_effort'


def _diag_values(**over):
    stats = FrameStats()
    v = stats.snapshot()
    v.update({'frames_pending': 0, 'publishers': 1, 'active': True, 'seconds_active': 100.0,
              'input_reliability': 'reliable'})
    v.update(over)
    return v


def test_diagnostics_levels_and_reasons():
    from dmnet_ros import diagnostics as d

    cfg = d.DiagConfig(stale_s=3.0, min_answered_ratio=0.5)
    # A publisher is matched but no frame ever arrived: stale.
    s = d.segmentation_status(_diag_values(), cfg, '/dmnet', 'dmnet/cpu')
    assert s.level == d.WARN and 'no frame since activation' in s.message
    # No publisher for longer than stale_s after activation (a dead camera driver): WARN.
    s = d.segmentation_status(_diag_values(publishers=0, input_topic='/cam/image_raw'), cfg,
                              '/dmnet', '/dmnet@cpu')
    assert s.level == d.WARN and s.name == '/dmnet: segmentation'
    assert 'no publisher matched on /cam/image_raw' in s.message
    # ... but not within stale_s of activation, nor of the last frame.
    for quiet in ({'seconds_active': 2.0}, {'seconds_since_frame': 2.0}):
        s = d.segmentation_status(_diag_values(publishers=0, **quiet), cfg, '/dmnet', 'h')
        assert s.level == d.OK and s.message == 'ok'
    # Frames flow at the input rate: OK; at a fifth of it: WARN; transport losses: WARN.
    flowing = dict(seconds_since_frame=0.1, input_rate_hz=30.0, output_rate_hz=29.0)
    assert d.segmentation_status(_diag_values(**flowing), cfg, 'n', 'h').level == d.OK
    slow = dict(flowing, output_rate_hz=6.0)
    s = d.segmentation_status(_diag_values(**slow), cfg, 'n', 'h')
    assert s.level == d.WARN and 'does not keep up' in s.message
    lost = dict(flowing, seconds_since_lost=1.0, frames_lost_in_transport=7)
    s = d.segmentation_status(_diag_values(**lost), cfg, 'n', 'h')
    assert s.level == d.WARN and 'lost in transport: 7 lost' in s.message
    values = {kv.key: kv.value for kv in s.values}
    assert values['frames_lost_in_transport'] == '7'
    # A model fault outranks everything.
    fault = dict(lost, seconds_since_fault=0.5, last_error='CUDA error')
    assert d.segmentation_status(_diag_values(**fault), cfg, 'n', 'h').level == d.ERROR


def test_latency_is_not_reported_for_stamps_outside_the_node_clock():
    from dmnet_ros import diagnostics as d

    cfg = d.DiagConfig(max_stamp_delay_s=10.0)
    assert d.stamp_in_clock(0.05, cfg) and d.stamp_in_clock(-0.5, cfg)
    assert not d.stamp_in_clock(1.8e9, cfg) and not d.stamp_in_clock(-5.0, cfg)
    v = _diag_values(stamp_offset_s=1.8e9, stamps_off_clock=3, seconds_since_frame=0.1)
    values = {kv.key: kv.value for kv in d.segmentation_status(v, cfg, 'n', 'h').values}
    assert values['latency_ms_p50'].startswith(d.NOT_IN_CLOCK)
    ts = d.timestamp_status(v, (1.8e9, 1.8e9), cfg, 'n', 'h')
    assert ts.level == d.ERROR and ts.message == 'Timestamps too far in past seen.'
    ts = d.timestamp_status(v, (0.01, 0.05), cfg, 'n', 'h')
    assert ts.level == d.OK and ts.message == 'Timestamps are reasonable.'


def test_frequency_status_follows_diagnostic_updater():
    from dmnet_ros import diagnostics as d

    cfg = d.DiagConfig(min_rate_hz=25.0, max_rate_hz=35.0)
    f = d.frequency_status(_diag_values(input_rate_hz=10.0), cfg, 'n', 'h', 5.0)
    assert f.level == d.WARN and f.message == 'Frequency too low.'
    f = d.frequency_status(_diag_values(input_rate_hz=30.0), cfg, 'n', 'h', 5.0)
    assert f.level == d.OK and f.name == 'n: input frequency'
    assert {kv.key: kv.value for kv in f.values}['Actual frequency (Hz)'] == '30.000'
    f = d.frequency_status(_diag_values(input_rate_hz=0.0), cfg, 'n', 'h', 5.0)
    assert f.level == d.ERROR and f.message == 'No events recorded.'
    f = d.frequency_status(_diag_values(input_rate_hz=0.0, publishers=0), cfg, 'n', 'h', 5.0)
    assert f.level == d.WARN and f.message == 'No events recorded: no publisher matched'
    f = d.frequency_status(_diag_values(input_rate_hz=0.0, publishers=0, seconds_active=1.0),
                           cfg, 'n', 'h', 5.0)
    assert f.level == d.OK and f.message == 'no publisher matched'


@pytest.mark.parametrize('state', ['unconfigured', 'inactive'])
def test_every_lifecycle_state_has_statuses_that_say_so(state):
    from dmnet_ros import diagnostics as d

    cfg = d.DiagConfig(stale_s=3.0)
    v = _diag_values(active=False, lifecycle_state=state, publishers=0)
    s = d.segmentation_status(v, cfg, '/dmnet', '/dmnet@auto')
    assert s.level == d.OK and s.message.startswith(state)
    f = d.frequency_status(v, cfg, '/dmnet', 'h', 5.0)
    t = d.timestamp_status(v, (None, None), cfg, '/dmnet', 'h')
    assert (f.level, f.message) == (t.level, t.message) == (d.OK, state)
    if state == 'unconfigured':   # a failed configure: WARN with the reason
        v['configure_error'] = 'checkpoint not found: /nope.safetensors'
        s = d.segmentation_status(v, cfg, '/dmnet', '/dmnet@auto')
        assert s.level == d.WARN and 'configure failed: checkpoint not found' in s.message


def test_input_rate_reads_zero_once_frames_stop_for_stale_s():
    from dmnet_ros.stats import RateMeter

    m = RateMeter(window_s=5.0)
    for t in (0.0, 0.5, 1.0, 1.5, 2.0):
        m.tick(t)
    assert m.rate(2.1, idle_s=3.0) == pytest.approx(2.0)
    assert m.rate(4.9, idle_s=3.0) == pytest.approx(2.0)    # within stale_s: the last rate
    assert m.rate(5.1, idle_s=3.0) == 0.0                   # past it: 0, not "met"
    assert m.rate(5.1) == pytest.approx(2.0)                # (the old reading: still 2 Hz)


@pytest.mark.parametrize('name,old,word', [('memory.label_propagation', -1.0, 'checkpoint'),
                                           ('memory.label_propagation', -1, 'checkpoint'),
                                           ('memory.local_vote_radius', -2, 'checkpoint'),
                                           ('memory.local_vote_radius', -1, 'all')])
def test_deprecated_sentinel_numbers_still_work_and_warn(name, old, word):
    """The numbers that meant 'the checkpoint's own' or 'every cell' before they had words."""
    values = {p.name: p.default for p in node_params.PARAMS}
    new = dict(values, **{name: word})
    assert node_params.check_value(name, old) is None
    assert node_params.memory_overrides(dict(values, **{name: old})) == \
        node_params.memory_overrides(new)
    notes = node_params.deprecations(dict(values, **{name: old}))
    assert len(notes) == 1 and name in notes[0] and repr(word) in notes[0]
    assert node_params.deprecations(new) == []


@pytest.mark.parametrize('name,value,ok', [
    ('memory.label_propagation', 'checkpoint', True), ('memory.label_propagation', 2.0, True),
    ('memory.label_propagation', 0, True), ('memory.label_propagation', 'all', False),
    ('memory.label_propagation', 17.0, False), ('memory.label_propagation', -0.5, False),
    ('memory.label_propagation', True, False),
    ('memory.local_vote_radius', 'checkpoint', True), ('memory.local_vote_radius', 'all', True),
    ('memory.local_vote_radius', 3, True), ('memory.local_vote_radius', 65, False),
    ('memory.local_vote_radius', -3, False), ('memory.local_vote_radius', 1.5, False),
    ('memory.local_vote_radius', 'near', False),
])
def test_label_propagation_parameters_take_words_or_numbers(name, value, ok):
    reason = node_params.check_value(name, value)
    assert (reason is None) == ok, reason
    if not ok:
        assert name in reason
    assert node_params.SPECS[name].descriptor().dynamic_typing


def test_frame_stats_stage_times_and_warm_up_apart():
    """Stage means over the window and totals since start; the warm-up is no frame."""
    s = FrameStats()
    s.on_warmup(1234.5, 3)
    s.on_stages(convert=1.0, model=40.0)
    s.on_stages(convert=3.0, model=20.0)
    s.on_stages(diagnostics=0.5)
    snap = s.snapshot()
    assert snap['warmup_ms'] == 1234.5 and snap['warmup_steps'] == 3
    assert snap['frames_received'] == 0 == snap['frames_answered']
    assert snap['stage_ms.convert'] == 2.0 and snap['stage_ms.model'] == 30.0
    assert snap['stage_total_ms.model'] == 60.0 and snap['stage_ms.diagnostics'] == 0.5
    assert 'stage_ms.overlay' not in snap          # not seen: not reported
    with pytest.raises(KeyError):
        s.on_stages(decode=1.0)                    # only the named stages
