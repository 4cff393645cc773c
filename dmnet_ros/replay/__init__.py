"""`replay`: play a rosbag2 bag through the dmnet node and score what comes back.

    replay --bag BAG --out DIR [--lockstep | --rate R] [--external] [--checkpoint PATH]
           [--device D] [--inference-size HxW] [--timeout S] [--record-bag]

The harness reads the bag with `rosbags` (sqlite3 or mcap), publishes its image topic through
rclpy with the bag's header stamps, collects `/dmnet/mask`, matches masks to frames by header
stamp and writes the report folder (see `dmnet_ros.report`). By default it starts the node
itself (`segment_node` as a child process, log in DIR/node.log); `--external` uses a running one.

Modes:
    rate R     frames leave at R x the recorded rate (default 1.0). The node keeps only the
               newest frame, so a slow node drops frames: what a live camera would see.
    lockstep   frame i+1 leaves only after the mask of frame i arrived (or --timeout passed;
               the frame is re-sent every --resend s meanwhile): the accuracy mode, nothing
               dropped.

Latency = the harness's wall clock at mask receipt minus at frame publish (bag stamps are in
the past). Counting: every frame sent ends up answered (a mask with its stamp arrived) or
dropped; masks with a stamp that matches no frame sent are counted as unmatched.

Modules: `options` (ReplayOptions, constants), `child_node` (the node as a child process),
`ros_link` (the harness's rclpy node), `collect` (matching, scoring, --record-bag), `run` (one
replay), `results` (the report dict, summary lines), `cli` (the command line).
"""
from dmnet_ros.replay.child_node import NodeProcess
from dmnet_ros.replay.cli import build_parser, main, options_from_args
from dmnet_ros.replay.collect import Collector, OutputRecorder
from dmnet_ros.replay.options import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    LABELS_TOPIC,
    MASK_TOPIC,
    MAX_LOCKSTEP_MISSES,
    READY_LINE,
    ReplayError,
    ReplayOptions,
)
from dmnet_ros.replay.results import build_report, summary_lines
from dmnet_ros.replay.ros_link import RosLink
from dmnet_ros.replay.run import run_replay

__all__ = [
    'EXIT_BAD_INPUT', 'EXIT_FAILED', 'LABELS_TOPIC', 'MASK_TOPIC', 'MAX_LOCKSTEP_MISSES',
    'READY_LINE', 'Collector', 'NodeProcess', 'OutputRecorder', 'ReplayError', 'ReplayOptions',
    'RosLink', 'build_parser', 'build_report', 'main', 'options_from_args', 'run_replay',
    'summary_lines',
]
