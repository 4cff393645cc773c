"""The node's own Fast DDS large-frame setting (applied before rclpy.init).

The node publishes frames as large as its input (a 1920x1080 mask is 2 MB, its overlay 6 MB).
With Fast DDS's defaults a sample over the 512 KB shared-memory segment of the *sending*
process is fragmented and the fragments that do not fit are lost on the first sending; a
reliable reader asks for them again, a best-effort one (`qos_profile_sensor_data`, what most
controllers use) loses the whole frame: 2 of 10 masks at 1920x1080 reached one. The shipped
profile `config/fastdds_large_frames.xml` gives the process a 32 MB segment (and 4 MB socket
buffers), so the node applies it to its own process when:

- the RMW is Fast DDS (`rmw_fastrtps_cpp` / `rmw_fastrtps_dynamic_cpp`, the default RMW);
- the user configured Fast DDS nothing of their own: none of USER_SETTINGS is set and no
  DEFAULT_FASTDDS_PROFILES.xml / DEFAULT_FASTRTPS_PROFILES.xml sits in the working directory
  (Fast DDS would load it): the user's profile always wins;
- `DMNET_FASTDDS_LARGE_FRAMES` is not 0/false/off (the switch; the launch file's
  `fastdds_large_frames:=false` sets it).

Applying means setting FASTDDS_DEFAULT_PROFILES_FILE in the node's own environment, which only
the node's process reads. With another RMW nothing is applied (that RMW has its own settings
for large samples, e.g. Cyclone DDS's SocketReceiveBufferSize) and the node says so in one log
line, as it does for every other outcome.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, MutableMapping
from pathlib import Path

SWITCH = 'DMNET_FASTDDS_LARGE_FRAMES'
PROFILE_NAME = 'fastdds_large_frames.xml'
PROFILE_VAR = 'FASTDDS_DEFAULT_PROFILES_FILE'
# A user's own Fast DDS configuration: any of these set means "leave Fast DDS alone".
USER_SETTINGS = ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE',
                 'RMW_FASTRTPS_USE_QOS_FROM_XML', 'FASTDDS_BUILTIN_TRANSPORTS',
                 'FASTDDS_ENVIRONMENT_FILE')
CWD_PROFILES = ('DEFAULT_FASTDDS_PROFILES.xml', 'DEFAULT_FASTRTPS_PROFILES.xml')
FAST_DDS_RMWS = ('rmw_fastrtps_cpp', 'rmw_fastrtps_dynamic_cpp')
OFF_VALUES = ('0', 'false', 'off', 'no')


def profile_path() -> Path | None:
    """The shipped profile: the ament share folder, the install prefix, or the source tree."""
    candidates = []
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory('dmnet_ros')) / 'config')
    except Exception:  # no ament index (a plain venv): the other places
        pass
    candidates += [Path(sys.prefix) / 'share' / 'dmnet_ros' / 'config',
                   Path(__file__).resolve().parents[1] / 'config']
    return next((d / PROFILE_NAME for d in candidates if (d / PROFILE_NAME).is_file()), None)


def rmw_name() -> str:
    """The RMW rclpy will use (rmw_get_implementation_identifier; it creates no participant)."""
    try:
        from rclpy.utilities import get_rmw_implementation_identifier

        return str(get_rmw_implementation_identifier())
    except Exception:  # fall back on the variable rmw_implementation reads
        return os.environ.get('RMW_IMPLEMENTATION', '') or FAST_DDS_RMWS[0]


def apply_large_frames(env: MutableMapping[str, str] | None = None,
                       rmw: str | Callable[[], str] = rmw_name,
                       profile: Path | None | Callable[[], Path | None] = profile_path,
                       cwd: Path | None = None) -> tuple[bool, str]:
    """Point Fast DDS at the shipped profile when nothing else says otherwise.

    Call before rclpy.init (Fast DDS reads the profile when the participant is created).

    Args:
        env: the environment to read and change (default os.environ).
        rmw: the RMW's name, or a function returning it (only called when needed).
        profile: the profile file, or a function finding it.
        cwd: where Fast DDS looks for DEFAULT_FASTDDS_PROFILES.xml (default the current one).

    Returns:
        (applied, one line for the log saying what was done and why).
    """
    env = os.environ if env is None else env
    if env.get(SWITCH, '').strip().lower() in OFF_VALUES:
        return False, f'Fast DDS large-frame profile not applied: {SWITCH}={env[SWITCH]}'
    name = rmw() if callable(rmw) else rmw
    if name not in FAST_DDS_RMWS:
        return False, (f'Fast DDS large-frame profile not applied: the RMW is {name} '
                       '(large outputs to best-effort subscribers depend on its own settings)')
    user = [k for k in USER_SETTINGS if env.get(k)]
    folder = Path.cwd() if cwd is None else cwd
    user += [f'./{f}' for f in CWD_PROFILES if (folder / f).is_file()]
    if user:
        return False, (f'Fast DDS large-frame profile not applied: the user configures Fast DDS '
                       f'({", ".join(user)})')
    path = profile() if callable(profile) else profile
    if path is None:
        return False, f'Fast DDS large-frame profile not applied: {PROFILE_NAME} not found'
    env[PROFILE_VAR] = str(path)
    return True, (f'Fast DDS large-frame profile applied to this process: {PROFILE_VAR}={path} '
                  f'(best-effort subscribers get large masks; {SWITCH}=0 turns it off)')
