"""When the node gives its own process the Fast DDS large-frame profile.

The decision is a pure function of the environment, the RMW and the working directory; the
cross-process effect (a best-effort controller receiving 1920x1080 masks) is in
test_node_contracts.py.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from dmnet_ros import dds_profile

PROFILE = Path('/x/share/dmnet_ros/config/fastdds_large_frames.xml')


def _apply(env: dict, rmw: str = 'rmw_fastrtps_cpp', cwd: Path | None = None,
           profile: Path | None = PROFILE) -> tuple[bool, str]:
    return dds_profile.apply_large_frames(env, rmw=rmw, profile=profile, cwd=cwd)


def test_applied_by_default_with_fast_dds(tmp_path):
    env: dict = {}
    applied, line = _apply(env, cwd=tmp_path)
    assert applied and env == {'FASTDDS_DEFAULT_PROFILES_FILE': str(PROFILE)}
    assert 'applied' in line and 'DMNET_FASTDDS_LARGE_FRAMES=0' in line
    applied, _ = _apply(env := {}, rmw='rmw_fastrtps_dynamic_cpp', cwd=tmp_path)
    assert applied and env


@pytest.mark.parametrize('var', dds_profile.USER_SETTINGS)
def test_a_users_fast_dds_setting_wins(tmp_path, var):
    env = {var: '/home/lab/my_profile.xml'}
    applied, line = _apply(env, cwd=tmp_path)
    assert not applied and env == {var: '/home/lab/my_profile.xml'}
    assert 'not applied' in line and var in line


@pytest.mark.parametrize('name', dds_profile.CWD_PROFILES)
def test_a_default_profile_in_the_working_directory_wins(tmp_path, name):
    (tmp_path / name).write_text('<dds/>')
    env: dict = {}
    applied, line = _apply(env, cwd=tmp_path)
    assert not applied and not env and name in line


@pytest.mark.parametrize('value', ['0', 'false', 'OFF', 'no'])
def test_the_switch_turns_it_off(tmp_path, value):
    env = {dds_profile.SWITCH: value}
    applied, line = _apply(env, cwd=tmp_path)
    assert not applied and set(env) == {dds_profile.SWITCH}
    assert f'{dds_profile.SWITCH}={value}' in line
    applied, _ = _apply(env := {dds_profile.SWITCH: '1'}, cwd=tmp_path)
    assert applied


def test_another_rmw_gets_nothing_and_says_so(tmp_path):
    env: dict = {}
    applied, line = _apply(env, rmw='rmw_cyclonedds_cpp', cwd=tmp_path)
    assert not applied and not env
    assert 'rmw_cyclonedds_cpp' in line and 'not applied' in line


def test_missing_profile_file_is_reported(tmp_path):
    env: dict = {}
    applied, line = _apply(env, cwd=tmp_path, profile=None)
    assert not applied and not env and 'not found' in line


def test_the_shipped_profile_is_found_and_the_rmw_named():
    path = dds_profile.profile_path()
    assert path is not None and path.name == dds_profile.PROFILE_NAME and path.is_file()
    assert 'segment_size' in path.read_text()
    assert dds_profile.rmw_name().startswith('rmw_')
