"""The package as ROS 2 sees it: colcon install space, package.xml, and a ROS-free core."""
import os
import pkgutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def test_colcon_build_installs_ament_python_package(tmp_path):
    colcon = VENV_BIN / 'colcon'
    if not colcon.exists():
        pytest.skip(f'colcon not installed next to {sys.executable}')
    ws = tmp_path / 'ws'
    (ws / 'src').mkdir(parents=True)
    # Build from a symlink in a fresh workspace so nothing lands in the checkout's build/install.
    (ws / 'src' / 'dmnet_ros').symlink_to(REPO)
    env = dict(os.environ, PATH=f'{VENV_BIN}:{os.environ["PATH"]}')
    proc = subprocess.run(
        [str(colcon), 'build', '--base-paths', 'src', '--event-handlers', 'console_direct-'],
        cwd=ws, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    prefix = ws / 'install' / 'dmnet_ros'
    share = prefix / 'share' / 'dmnet_ros'
    assert (share / 'package.xml').is_file()
    assert (share / 'launch' / 'segment.launch.py').is_file()
    assert (share / 'config' / 'dmnet.yaml').is_file()
    index = prefix / 'share' / 'ament_index' / 'resource_index' / 'packages'
    assert (index / 'dmnet_ros').is_file()
    for exe in ('segment_node', 'replay', 'make_bag', 'dmnet'):
        path = prefix / 'lib' / 'dmnet_ros' / exe
        assert path.is_file() and os.access(path, os.X_OK), exe
    site = next((prefix / 'lib').glob('python3*/site-packages'))
    assert (site / 'dmnet_core' / '__init__.py').is_file()
    assert (site / 'dmnet_ros' / '__init__.py').is_file()


def test_package_xml_declares_runtime_dependencies():
    root = ET.parse(REPO / 'package.xml').getroot()
    assert root.get('format') == '3'
    assert root.findtext('name') == 'dmnet_ros'
    assert root.find('export/build_type').text == 'ament_python'
    deps = {e.text for e in root.findall('exec_depend')}
    for dep in ('rclpy', 'sensor_msgs', 'std_msgs', 'std_srvs', 'diagnostic_msgs', 'cv_bridge',
                'launch', 'launch_ros', 'python3-numpy', 'python3-opencv', 'python3-yaml'):
        assert dep in deps, dep


def test_importing_core_pulls_in_no_ros_module():
    # A fresh interpreter: importing every dmnet_core module must not import rclpy or any
    # ROS message package (the core is used by training and evaluation on machines without ROS).
    import dmnet_core
    modules = [m.name for m in pkgutil.walk_packages(dmnet_core.__path__, 'dmnet_core.')]
    code = (
        'import importlib, sys\n'
        f'mods = {modules!r}\n'
        'for m in ["dmnet_core"] + mods:\n'
        '    importlib.import_module(m)\n'
        'bad = sorted(m for m in sys.modules if m.split(".")[0] in '
        '{"rclpy", "sensor_msgs", "std_msgs", "std_srvs", "diagnostic_msgs", "rosidl_parser",'
        ' "cv_bridge", "launch", "launch_ros"})\n'
        'assert not bad, bad\n'
        'print(len(mods))\n')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.strip()) >= 10   # the walk really found the core's modules


def test_requirements_split_keeps_rclpy_out_of_core():
    core = (REPO / 'requirements-core.txt').read_text()
    ros = (REPO / 'requirements-ros.txt').read_text()
    assert 'rclpy' not in core and 'ros-' not in core
    assert 'ros-rclpy' in ros
    assert 'torch==2.14.1' in core and 'torchvision==0.29.1' in core
