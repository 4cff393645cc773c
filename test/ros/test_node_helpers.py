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
    assert node_params.SPECS['input.reliability'].default == 'best_effort'
    assert node_params.SPECS['input.depth'].default == 1
    assert node_params.SPECS['output.reliability'].default == 'reliable'
    assert node_params.SPECS['mask_topic'].default == '/dmnet/mask'


def test_read_only_where_a_reload_is_needed():
    dynamic = {p.name for p in node_params.PARAMS if not p.read_only}
    assert dynamic == {'mask_value_mode', 'overlay.alpha', 'overlay.palette',
                       'reset.time_jump_s', 'debug.inject_fault_every'}
    d = node_params.SPECS['overlay.alpha'].descriptor()
    assert d.floating_point_range[0].to_value == 1.0 and not d.read_only
    d = node_params.SPECS['memory.capacity'].descriptor()
    assert d.integer_range[0].from_value == 1 and d.read_only


@pytest.mark.parametrize('name, value, ok', [
    ('device', 'cuda:1', True), ('device', 'gpu', False), ('device', 'cuda:', False),
    ('precision', 'bf16', True), ('precision', 'int8', False),
    ('inference_size', [0, 0], True), ('inference_size', [256, 320], True),
    ('inference_size', [250, 320], False), ('inference_size', [256], False),
    ('inference_size', [0, 320], False), ('inference_size', [8192, 320], False),
    ('overlay.palette', [1, 2, 3], True), ('overlay.palette', [], False),
    ('overlay.palette', [1, 2, 256], False), ('mask_value_mode', 'binary_255', True),
    ('mask_topic', '', False), ('compressed_topic', '', True), ('task', 'type', True),
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
