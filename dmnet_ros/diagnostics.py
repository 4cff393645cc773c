"""What `/diagnostics` says about the node, built from plain values (no ROS graph needed).

One DiagnosticArray per period with three statuses, named as diagnostic_updater names them
('<fully qualified node name>: <task>'):
  segmentation      the summary: counters, latency, model; WARN/ERROR with every reason at once
  input frequency   diagnostic_updater's FrequencyStatus keys and messages, against
                    `diagnostics.min_rate_hz` / `max_rate_hz` (0 = no bound)
  input timestamps  diagnostic_updater's TimeStampStatus keys and messages: stamp delays in
                    the node's clock, acceptable from -1 s to `diagnostics.max_stamp_delay_s`
Statuses are published in every lifecycle state. Unconfigured and inactive say so at OK (a
node a lifecycle manager has not started yet is not faulty); unconfigured after a failed
configure is WARN with the reason. Once active, no frame for `diagnostics.stale_s` is WARN,
whether the camera is matched but silent or no publisher is matched at all (a dead driver);
the input rate reads 0 by then, so the frequency status cannot say "Desired frequency met"
about a camera that stopped.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR
RECENT_S = 5.0                  # a fault, rejected frame or transport loss this recent counts
MIN_FUTURE_DELAY_S = -1.0       # TimeStampStatus' default min_acceptable
NOT_IN_CLOCK = 'n/a: stamps not in the node clock'


@dataclass(frozen=True)
class DiagConfig:
    """The `diagnostics.*` parameters (see node_params)."""

    stale_s: float = 3.0
    min_rate_hz: float = 0.0
    max_rate_hz: float = 0.0
    min_answered_ratio: float = 0.5
    max_stamp_delay_s: float = 10.0

    @classmethod
    def from_params(cls, p: dict[str, Any]) -> DiagConfig:
        return cls(stale_s=float(p['diagnostics.stale_s']),
                   min_rate_hz=float(p['diagnostics.min_rate_hz']),
                   max_rate_hz=float(p['diagnostics.max_rate_hz']),
                   min_answered_ratio=float(p['diagnostics.min_answered_ratio']),
                   max_stamp_delay_s=float(p['diagnostics.max_stamp_delay_s']))


def stamp_in_clock(delay_s: float, cfg: DiagConfig) -> bool:
    """Is a frame stamped `delay_s` before the node's clock plausibly in that clock?"""
    return MIN_FUTURE_DELAY_S <= delay_s <= cfg.max_stamp_delay_s


def _fmt(v: Any) -> str:
    return f'{v:.3f}' if isinstance(v, float) else str(v)


def _status(name: str, hardware_id: str, level: int, message: str,
            values: dict[str, Any]) -> DiagnosticStatus:
    return DiagnosticStatus(name=name, hardware_id=hardware_id, level=level, message=message,
                            values=[KeyValue(key=k, value=_fmt(v)) for k, v in values.items()])


def quiet_s(v: dict[str, Any]) -> float:
    """Seconds without a frame since activation (0 while not active)."""
    if not v.get('active', True):
        return 0.0
    return min(v['seconds_since_frame'], v.get('seconds_active', 0.0))


def state_of(v: dict[str, Any]) -> str:
    """The lifecycle state the values were taken in: unconfigured, inactive or active."""
    return v.get('lifecycle_state') or ('active' if v.get('active', True) else 'inactive')


IDLE_MESSAGES = {'inactive': 'inactive: not taking frames',
                 'unconfigured': 'unconfigured: no model loaded, waiting for configure'}


def segmentation_problems(v: dict[str, Any], cfg: DiagConfig) -> list[tuple[int, str]]:
    """(level, reason) for everything wrong now; empty when all is well.

    Args:
        v: the node's values (FrameStats.snapshot plus publishers, seconds_active, active).
        cfg: thresholds.
    """
    out: list[tuple[int, str]] = []
    if v['seconds_since_fault'] < RECENT_S:
        out.append((ERROR, f'model fault: {v["last_error"]}'))
    if v['seconds_since_reject'] < RECENT_S:
        out.append((WARN, f'rejected frames: {v["last_error"]}'))
    if v['seconds_since_lost'] < RECENT_S:
        out.append((WARN, f'frames lost in transport: {v["frames_lost_in_transport"]} lost, '
                          f'{v.get("frames_skipped_in_transport", 0)} skipped (input '
                          f'{v.get("input_reliability", "?")})'))
    if v.get('configure_error'):
        out.append((WARN, f'unconfigured: configure failed: {v["configure_error"]}'))
    if not v.get('active', True):
        return out
    if quiet_s(v) > cfg.stale_s:
        since = ('since activation' if v['seconds_since_frame'] > v.get('seconds_active', 0.0)
                 else f'for {v["seconds_since_frame"]:.1f} s')
        if v.get('publishers', 0) > 0:
            out.append((WARN, f'no frame {since} from {v["publishers"]} matched publisher(s)'))
        else:
            out.append((WARN, f'no frame {since}: no publisher matched on '
                              f'{v.get("input_topic") or "the input"}'))
    rate_in, rate_out = v['input_rate_hz'], v['output_rate_hz']
    if rate_in > 0 and rate_out < cfg.min_answered_ratio * rate_in:
        out.append((WARN, f'answering {rate_out:.1f} Hz of {rate_in:.1f} Hz input (the model '
                          'does not keep up; frames are dropped, the newest wins)'))
    return out


def segmentation_status(v: dict[str, Any], cfg: DiagConfig, node_name: str,
                        hardware_id: str) -> DiagnosticStatus:
    """The summary status: every counter and figure, worst level, every reason."""
    problems = segmentation_problems(v, cfg)
    level = max((lvl for lvl, _ in problems), default=OK)
    if problems:
        message = '; '.join(text for _, text in problems)
    else:
        message = IDLE_MESSAGES.get(state_of(v), 'ok')
    shown = {k: x for k, x in v.items()
             if not k.startswith(('seconds_since', '_')) and k not in ('active', 'configure_error')}
    if not stamp_in_clock(v['stamp_offset_s'], cfg) and v['stamps_off_clock'] > 0:
        text = f'{NOT_IN_CLOCK} (offset {v["stamp_offset_s"]:.3g} s; a bag played ' \
               'without --clock, or use_sim_time?)'
        shown['latency_ms_p50'] = shown['latency_ms_p95'] = text
    return _status(f'{node_name}: segmentation', hardware_id, level, message, shown)


def frequency_status(v: dict[str, Any], cfg: DiagConfig, node_name: str, hardware_id: str,
                     window_s: float) -> DiagnosticStatus:
    """diagnostic_updater FrequencyStatus for the input."""
    freq = float(v['input_rate_hz'])
    lo, hi = cfg.min_rate_hz, cfg.max_rate_hz
    if state_of(v) != 'active':
        level, message = OK, state_of(v)
    elif v.get('publishers', 0) == 0:
        level, message = ((WARN, 'No events recorded: no publisher matched')
                          if quiet_s(v) > cfg.stale_s else (OK, 'no publisher matched'))
    elif freq == 0.0:
        level, message = ERROR, 'No events recorded.'
    elif lo > 0 and freq < lo:
        level, message = WARN, 'Frequency too low.'
    elif hi > 0 and freq > hi:
        level, message = WARN, 'Frequency too high.'
    else:
        level, message = OK, 'Desired frequency met'
    values = {
        'Events in window': int(round(freq * window_s)),
        'Events since startup': v['frames_received'],
        'Duration of window (s)': window_s,
        'Actual frequency (Hz)': freq,
        'Minimum acceptable frequency (Hz)': lo,
        'Maximum acceptable frequency (Hz)': hi if hi > 0 else 'inf',
    }
    if lo > 0 and hi > 0 and lo == hi:
        values['Target frequency (Hz)'] = lo
    return _status(f'{node_name}: input frequency', hardware_id, level, message, values)


def timestamp_status(v: dict[str, Any], window: tuple[float | None, float | None],
                     cfg: DiagConfig, node_name: str, hardware_id: str) -> DiagnosticStatus:
    """diagnostic_updater TimeStampStatus for the input (delays in seconds).

    Args:
        window: (earliest, latest) delay of the frames answered since the last update.
    """
    early, late = window
    if early is None or late is None:
        active = state_of(v) == 'active'
        stale = v.get('publishers', 0) > 0 or quiet_s(v) > cfg.stale_s
        level = WARN if active and stale else OK
        message = ('No data since last update.' if level == WARN
                   else 'no publisher matched' if active else state_of(v))
        early = late = 0.0
    elif late > cfg.max_stamp_delay_s:
        level, message = ERROR, 'Timestamps too far in past seen.'
    elif early < MIN_FUTURE_DELAY_S:
        level, message = ERROR, 'Timestamps too far in future seen.'
    else:
        level, message = OK, 'Timestamps are reasonable.'
    return _status(f'{node_name}: input timestamps', hardware_id, level, message, {
        'Earliest timestamp delay:': early,
        'Latest timestamp delay:': late,
        'Earliest acceptable timestamp delay:': MIN_FUTURE_DELAY_S,
        'Latest acceptable timestamp delay:': cfg.max_stamp_delay_s,
        'Stamps not in the node clock': v['stamps_off_clock'],
    })
