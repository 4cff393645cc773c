"""Every parameter of the `dmnet` node, declared in one place with its descriptor and check.

Three kinds: read-only parameters (topics, QoS) are set at start-up (`--params-file
config/dmnet.yaml` or `-p name:=value`); model and memory parameters (`reconfigure`) can be set
at any time but take effect on the next lifecycle `configure` (the model is built there); the
others change at run time with `ros2 param set`. The node checks each new value with
`check_value` and rejects a bad one with the reason (ranges are also in the descriptors).

`debug.inject_fault_every` is a TEST HOOK: n > 0 makes every n-th model step raise
RuntimeError('CUDA error: injected') through `Segmenter.fault_hook`, to exercise the fault path
(log, reset the memory, keep going) on a CPU. `debug.step_delay_s` (TEST HOOK) makes each step
that much slower, through the same hook, for tests of a node busy in a slow step.
"""
from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field, replace
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node

from dmnet_ros.overlay import DEFAULT_PALETTE, palette_table

# Defaults mirror dmnet_core.config.GlobalMemoryConfig (kept literal so that declaring and
# checking parameters never imports torch; test_node_helpers checks they agree).
MEMORY_DEFAULTS = {
    'alpha': -0.3, 'beta': -0.5, 'n_read': 4, 'capacity': 16,
    'policy': 'active', 'eviction': 'redundant', 'read_sampling': 'spread',
}
DEVICE_RE = re.compile(r'^(auto|cpu|cuda|cuda:\d+)$')
MAX_INFERENCE_SIDE = 4096
# Explicit values of the label-propagation parameters, and the numbers that meant them before
# (accepted for one more release, with a deprecation warning).
CHECKPOINT, ALL_CELLS = 'checkpoint', 'all'
DEPRECATED_NUMBERS = {
    'memory.label_propagation': {-1: CHECKPOINT},
    'memory.local_vote_radius': {-2: CHECKPOINT, -1: ALL_CELLS},
}
OUTPUT_TOPICS = ('mask_topic', 'overlay_topic', 'labels_topic')


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: default, description, read-only flag, range and allowed strings."""

    name: str
    default: Any
    description: str
    read_only: bool = True
    int_range: tuple[int, int] | None = None
    float_range: tuple[float, float] | None = None
    choices: tuple[str, ...] = field(default_factory=tuple)
    reconfigure: bool = False
    # A word or a number (`memory.label_propagation`, `memory.local_vote_radius`): rclpy then
    # accepts either type, and `check_value` does the whole check.
    dynamic_typing: bool = False

    def descriptor(self) -> ParameterDescriptor:
        """The ParameterDescriptor rclpy enforces (type, read_only, scalar ranges)."""
        desc = self.description
        if self.choices:
            desc += ' One of: ' + ', '.join(repr(c) for c in self.choices) + '.'
        if self.reconfigure:
            desc += ' Takes effect on the next configure.'
        d = ParameterDescriptor(description=desc,
                                read_only=self.read_only and not self.reconfigure,
                                dynamic_typing=self.dynamic_typing)
        if self.int_range is not None:
            d.integer_range = [IntegerRange(from_value=self.int_range[0],
                                            to_value=self.int_range[1], step=1)]
        if self.float_range is not None:
            d.floating_point_range = [FloatingPointRange(from_value=self.float_range[0],
                                                         to_value=self.float_range[1], step=0.0)]
        return d


PARAMS: tuple[ParamSpec, ...] = (
    # Model (read-only: changing any of them needs a reload).
    ParamSpec('checkpoint', '', "Path to a .safetensors checkpoint; '' = the model shipped "
              'with the package.'),
    ParamSpec('device', 'auto', "'auto' (CUDA when available, else CPU with a warning), 'cpu', "
              "'cuda' or 'cuda:N'."),
    ParamSpec('precision', 'auto', "Inference precision; 'auto' = fp16 on CUDA, bf16 on a CPU "
              'with native bf16, else fp32; fp16 applies on CUDA only, bf16 on CUDA and on CPUs '
              'with native bf16 (else fp32).',
              choices=('auto', 'fp32', 'fp16', 'bf16')),
    ParamSpec('inference_size', [0, 0], '[H, W] the model runs at (frames are resized); '
              "[0, 0] = the checkpoint's own size."),
    ParamSpec('task', '', "With checkpoint '': the model shipped for this task ('' = the binary "
              "default); with a checkpoint: the task it must be trained for.",
              choices=('', 'binary', 'parts', 'type')),
    ParamSpec('torch_compile', False, 'torch.compile the encoder and decoder at start-up '
              '(faster steps, a slower start; falls back to eager with a warning if compiling '
              'fails, e.g. without a C++ compiler).'),
    ParamSpec('use_cv_bridge', True, 'Convert images with cv_bridge when it imports '
              '(the numpy path otherwise).'),
    # Video memory (read-only: they configure the Segmenter when it is built).
    ParamSpec('memory.alpha', MEMORY_DEFAULTS['alpha'], 'Active memory: representativeness '
              'threshold (negative mean pixel entropy, nats).', float_range=(-1.0e6, 0.0)),
    ParamSpec('memory.beta', MEMORY_DEFAULTS['beta'], 'Active memory: similarity threshold '
              '(negative mean L2 distance to the newest entry).', float_range=(-1.0e6, 0.0)),
    ParamSpec('memory.n_read', MEMORY_DEFAULTS['n_read'], 'Bank frames read per step.',
              int_range=(1, 64)),
    ParamSpec('memory.capacity', MEMORY_DEFAULTS['capacity'], 'Most frames the global bank '
              'holds.', int_range=(1, 4096)),
    ParamSpec('memory.policy', MEMORY_DEFAULTS['policy'], 'Which frames enter the bank.',
              choices=('active', 'recent', 'uniform')),
    ParamSpec('memory.eviction', MEMORY_DEFAULTS['eviction'], 'Which entry leaves a full bank.',
              choices=('redundant', 'oldest')),
    ParamSpec('memory.read_sampling', MEMORY_DEFAULTS['read_sampling'], 'Which bank entries '
              'a step reads.', choices=('spread', 'latest', 'random')),
    ParamSpec('memory.label_propagation', CHECKPOINT, "Label propagation's weight: the "
              'memory reads also carry what past frames were named. '
              f"'{CHECKPOINT}' = the checkpoint's own; a number in 0..16 (0 = off, the "
              "paper's).", dynamic_typing=True),
    ParamSpec('memory.local_vote_radius', CHECKPOINT, "Label propagation's local vote: "
              f"'{CHECKPOINT}' = the checkpoint's own; '{ALL_CELLS}' = from every cell the "
              'local read attends to; an integer r in 0..64 = only from cells within r 1/32 '
              'cells of each cell (0 = the same place).', dynamic_typing=True),
    ParamSpec('memory.local_enabled', True, 'Use the local (ConvLSTM) memory (false switches '
              'it off; true = as the checkpoint has it).'),
    ParamSpec('memory.global_enabled', True, 'Use the global memory bank (false switches it '
              'off; true = as the checkpoint has it).'),
    # Topics and QoS (read-only: fixed when the subscriptions/publishers are created).
    # Relative names resolve in the node's namespace: /dmnet/mask at the root, /left/dmnet/mask
    # under /left. The input is the relative topic 'image' (remap it).
    ParamSpec('image_transport', 'raw', "Input transport, one at a time as image_transport "
              "does: 'raw' subscribes sensor_msgs/Image on 'image', 'compressed' subscribes "
              'sensor_msgs/CompressedImage (jpeg/png) on compressed_topic.',
              choices=('raw', 'compressed')),
    ParamSpec('compressed_topic', '', "CompressedImage input when image_transport is "
              "'compressed'; '' = the resolved image topic + '/compressed'."),
    ParamSpec('camera_info_topic', '', "sensor_msgs/CameraInfo input republished beside the "
              "mask (<mask_topic's namespace>/camera_info) with each mask's header; '' = "
              "'camera_info' beside the resolved image topic (image_pipeline's convention)."),
    ParamSpec('mask_topic', 'dmnet/mask', 'Output mono8 class-id mask (relative: in the '
              "node's namespace)."),
    ParamSpec('overlay_topic', 'dmnet/overlay', 'Output rgb8 overlay (computed only while '
              'subscribed).'),
    ParamSpec('labels_topic', 'dmnet/labels', 'Class names as std_msgs/String JSON '
              '(transient local).'),
    ParamSpec('input.reliability', 'auto', "Input QoS reliability. 'auto': reliable while "
              'every publisher of the input offers reliable (lost fragments of large frames '
              'are repaired), best_effort as soon as a best-effort publisher appears (the only '
              'way to match it); re-checked every diagnostics period.',
              choices=('auto', 'best_effort', 'reliable')),
    ParamSpec('input.depth', 1, 'Input QoS history depth (1 never builds a stale queue).',
              int_range=(1, 100)),
    ParamSpec('output.reliability', 'reliable', 'Output QoS reliability; reliable reaches '
              'both reliable and best-effort subscribers.', choices=('best_effort', 'reliable')),
    ParamSpec('output.depth', 5, 'Output QoS history depth.', int_range=(1, 100)),
    ParamSpec('diagnostics.period_s', 1.0, 'Period of /diagnostics messages.',
              float_range=(0.05, 60.0)),
    ParamSpec('diagnostics.stale_s', 3.0, 'WARN when no frame arrived for this long while '
              'active (a silent camera, or none matched); the input rate reads 0 by then.',
              float_range=(0.1, 86400.0)),
    ParamSpec('diagnostics.min_rate_hz', 0.0, 'Frequency status: lowest acceptable input '
              'rate (0 = no lower bound).', float_range=(0.0, 10000.0)),
    ParamSpec('diagnostics.max_rate_hz', 0.0, 'Frequency status: highest acceptable input '
              'rate (0 = no upper bound).', float_range=(0.0, 10000.0)),
    ParamSpec('diagnostics.min_answered_ratio', 0.5, 'WARN when the answered rate falls '
              'below this fraction of the input rate (the model does not keep up).',
              float_range=(0.0, 1.0)),
    ParamSpec('diagnostics.max_stamp_delay_s', 10.0, 'Timestamp status: a frame stamped more '
              "than this before the node's clock (or over 1 s after it) is not in the node's "
              'clock (a bag played without --clock): latency is then not reported.',
              float_range=(0.0, 86400.0)),
    ParamSpec('autostart', True, 'Configure and activate at start-up (false: stay '
              'unconfigured for a lifecycle manager).'),
    # Run-time tunables.
    ParamSpec('mask_value_mode', 'class_ids', "Mask pixel values: class ids, or 0/255 "
              "('binary_255', binary task only).", read_only=False,
              choices=('class_ids', 'binary_255')),
    ParamSpec('overlay.alpha', 0.5, 'Weight of the class colour in the overlay.',
              read_only=False, float_range=(0.0, 1.0)),
    ParamSpec('overlay.palette', list(DEFAULT_PALETTE), 'Flat r,g,b list, one triplet per '
              'class id 1..N (cycled).', read_only=False),
    ParamSpec('camera_info.wait_s', 0.5, "A mask's CameraInfo (the one with the mask's stamp) "
              'that has not arrived when the mask is published is waited for this long; then '
              'dmnet/camera_info is not published for that frame and counted as '
              'camera_info_missing (0 = only infos already received).', read_only=False,
              float_range=(0.0, 10.0)),
    ParamSpec('reset.time_jump_s', 5.0, 'Reset the memory when stamps jump forward by more '
              'than this (a new case); 0 = never. Backward jumps always reset.',
              read_only=False, float_range=(0.0, 86400.0)),
    ParamSpec('debug.inject_fault_every', 0, 'TEST HOOK: make every n-th model step raise '
              "RuntimeError('CUDA error: injected'); 0 = off.", read_only=False,
              int_range=(0, 1000000)),
    ParamSpec('debug.step_delay_s', 0.0, 'TEST HOOK: each model step also sleeps this long '
              '(a slow step on any machine); 0 = off.', read_only=False,
              float_range=(0.0, 60.0)),
)
# Settable at any time, used when the lifecycle `configure` builds the model.
RECONFIGURE = ('checkpoint', 'device', 'precision', 'inference_size', 'task', 'torch_compile',
               'use_cv_bridge') + tuple(p.name for p in PARAMS if p.name.startswith('memory.'))
PARAMS = tuple(replace(p, reconfigure=True) if p.name in RECONFIGURE else p for p in PARAMS)
SPECS: dict[str, ParamSpec] = {p.name: p for p in PARAMS}


def check_value(name: str, value: Any) -> str | None:
    """Checks beyond the descriptor (choices, arrays, patterns): None if fine, else the reason."""
    spec = SPECS.get(name)
    if spec is None:
        return None
    if spec.choices and value not in spec.choices:
        return f'{name}={value!r} not one of {list(spec.choices)}'
    if name == 'device' and not DEVICE_RE.match(str(value)):
        return f"device={value!r} must be 'auto', 'cpu', 'cuda' or 'cuda:N'"
    if name == 'inference_size':
        v = [int(x) for x in value]
        if len(v) != 2:
            return f'inference_size={v} must be [H, W]'
        if v != [0, 0] and not all(32 <= x <= MAX_INFERENCE_SIDE and x % 32 == 0 for x in v):
            return (f'inference_size={v} must be [0, 0] or multiples of 32 '
                    f'in 32..{MAX_INFERENCE_SIDE}')
    if name == 'overlay.palette':
        try:
            palette_table([int(x) for x in value])
        except ValueError as exc:
            return f'overlay.palette: {exc}'
    if name in OUTPUT_TOPICS and not str(value).strip():
        return f'{name} must not be empty'
    if name == 'memory.label_propagation':
        value = explicit(name, value)
        if value != CHECKPOINT and (isinstance(value, (bool, str)) or not 0 <= value <= 16):
            return (f"memory.label_propagation={value!r} must be '{CHECKPOINT}' or a number in "
                    '0..16')
    if name == 'memory.local_vote_radius':
        value = explicit(name, value)
        if value not in (CHECKPOINT, ALL_CELLS) and (
                isinstance(value, (bool, str, float)) or not 0 <= value <= 64):
            return (f"memory.local_vote_radius={value!r} must be '{CHECKPOINT}', '{ALL_CELLS}' "
                    'or an integer in 0..64')
    return None


def explicit(name: str, value: Any) -> Any:
    """`value` with a deprecated number of `name` (`DEPRECATED_NUMBERS`) as its word."""
    numbers = DEPRECATED_NUMBERS.get(name, {})
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value in numbers:
        return numbers[value]
    return value


def deprecations(values: dict[str, Any]) -> list[str]:
    """A warning for each parameter set to a deprecated number instead of its word."""
    notes = []
    for name in DEPRECATED_NUMBERS:
        value = values.get(name)
        word = explicit(name, value)
        if word != value:
            notes.append(f'{name}={value!r} is deprecated (still accepted in this release): '
                         f'use {word!r}')
    return notes


def declare_all(node: Node) -> dict[str, Any]:
    """Declare every parameter on `node` and return {name: value} after overrides.

    Raises:
        rclpy.exceptions.InvalidParameterValueException (or a type error from rclpy): a
        start-up override fails its descriptor or `check_value`; the message has the reason.
    """
    node.declare_parameters('', [(p.name, p.default, p.descriptor()) for p in PARAMS])
    return {p.name: node.get_parameter(p.name).value for p in PARAMS}


def memory_overrides(values: dict[str, Any]) -> dict[str, Any]:
    """The `memory` argument of load_segmenter from the `memory.*` parameters.

    `local_enabled`/`global_enabled` are passed only when false: true means "use what the
    checkpoint has" (asking for a memory a checkpoint lacks is an error in load_segmenter);
    `label_propagation` and `local_vote_radius` only when not 'checkpoint' (the checkpoint's
    own), 'all' as the Segmenter's -1 (every cell). Deprecated numbers count as their words.
    """
    out = {k.split('.', 1)[1]: explicit(k, v) for k, v in values.items()
           if k.startswith('memory.')}
    for key in ('local_enabled', 'global_enabled'):
        if out.get(key, False):
            del out[key]
    for key in ('label_propagation', 'local_vote_radius'):
        if out.get(key, CHECKPOINT) == CHECKPOINT:
            out.pop(key, None)
    if 'label_propagation' in out:
        out['label_propagation'] = float(out['label_propagation'])
    if out.get('local_vote_radius') == ALL_CELLS:
        out['local_vote_radius'] = -1          # dmnet_core: every cell the read attends to
    return out


def inference_size(values: dict[str, Any]) -> tuple[int, int] | None:
    """`inference_size` as (H, W), or None for the checkpoint's own size."""
    h, w = (int(x) for x in values['inference_size'])
    return None if (h, w) == (0, 0) else (h, w)


def _kind(spec: ParamSpec) -> str:
    if spec.reconfigure:
        return 'next configure'
    return 'read-only' if spec.read_only else 'run time'


def help_text(prog: str = 'segment_node') -> str:
    """`segment_node --help`: usage, the environment switch and every parameter."""
    lines = [
        f'usage: {prog} [-h] [--ros-args --params-file FILE -p NAME:=VALUE -r image:=TOPIC ...]',
        '',
        'The dmnet segmentation node (a lifecycle node): endoscope images in, instrument masks,',
        'overlay, labels, camera_info and /diagnostics out.',
        '',
        f'  {prog} --ros-args --params-file config/dmnet.yaml -r image:=/endoscope/image_raw',
        '',
        'Environment: DMNET_FASTDDS_LARGE_FRAMES=0 keeps the shipped Fast DDS large-frame',
        "profile off the node's process (see docs/node_qos_and_diagnostics.md).",
        '',
        'Parameters (when a change takes effect: read-only = at start-up only; next configure =',
        'on the next lifecycle configure; run time = at once with `ros2 param set`):',
    ]
    for spec in PARAMS:
        desc = spec.description
        if spec.choices:
            desc += ' One of: ' + ', '.join(repr(c) for c in spec.choices) + '.'
        lines.append(f'  {spec.name} = {spec.default!r}  [{_kind(spec)}]')
        lines += textwrap.wrap(desc, 96, initial_indent=' ' * 6, subsequent_indent=' ' * 6)
    return '\n'.join(lines) + '\n'
