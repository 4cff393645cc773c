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


# Keys of the system (non-ROS-package) dependencies, each checked to exist in ros/rosdistro's
# rosdep/base.yaml or rosdep/python.yaml; ROS packages (rclpy, ...) are keys of every distro.
# A dependency that is not a rosdep key makes `rosdep install` fail for the whole workspace.
ROSDEP_SYSTEM_KEYS = {
    'python3-setuptools', 'python3-numpy', 'python3-opencv', 'python3-yaml', 'python3-tqdm',
    'python3-matplotlib', 'python3-psutil', 'python3-torchvision-pip', 'python3-rosbags-pip',
    'python3-pytest', 'python3-pytest-timeout',
}
ROS_PACKAGES = {'rclpy', 'sensor_msgs', 'std_msgs', 'std_srvs', 'diagnostic_msgs',
                'lifecycle_msgs', 'cv_bridge', 'launch', 'launch_ros', 'ament_index_python'}


def test_package_xml_declares_runtime_dependencies():
    root = ET.parse(REPO / 'package.xml').getroot()
    assert root.get('format') == '3'
    assert root.findtext('name') == 'dmnet_ros'
    assert root.find('export/build_type').text == 'ament_python'
    deps = {e.text for e in root.findall('exec_depend')}
    for dep in ('rclpy', 'sensor_msgs', 'std_msgs', 'std_srvs', 'diagnostic_msgs', 'cv_bridge',
                'launch', 'launch_ros', 'python3-numpy', 'python3-opencv', 'python3-yaml'):
        assert dep in deps, dep


def test_package_xml_uses_only_existing_rosdep_keys():
    root = ET.parse(REPO / 'package.xml').getroot()
    tags = ('buildtool_depend', 'build_depend', 'exec_depend', 'depend', 'test_depend')
    keys = {e.text.strip() for tag in tags for e in root.findall(tag)}
    unknown = keys - ROSDEP_SYSTEM_KEYS - ROS_PACKAGES
    assert not unknown, f'not verified as rosdep keys: {sorted(unknown)}'
    # Keys that do not exist in rosdep (users hit them): never listed.
    assert not keys & {'ament_python', 'python3-safetensors', 'python3-torch-pip'}


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


def _names(path: Path) -> set[str]:
    """Distribution names of a requirements/constraints file (lowercase, '-' for '_')."""
    from packaging.requirements import Requirement

    names = set()
    for line in path.read_text().splitlines():
        line = line.split('#', 1)[0].strip()
        if line:
            names.add(Requirement(line).name.lower().replace('_', '-'))
    return names


def test_requirements_split_runtime_dev_ros():
    core, dev, ros = (_names(REPO / f'requirements-{k}.txt') for k in ('core', 'dev', 'ros'))
    # Runtime: no ROS (a distro or requirements-ros.txt brings it), no test or lint tools.
    assert not {n for n in core if n.startswith('ros-') or n == 'rclpy'}
    assert not core & {'pytest', 'pytest-timeout', 'ruff'}
    assert {'torch', 'torchvision', 'numpy', 'safetensors', 'rosbags'} <= core
    assert {'pytest', 'pytest-timeout', 'ruff'} <= dev
    assert {'ros-rclpy', 'ros-sensor-msgs', 'ros-lifecycle-msgs'} <= ros


def test_runtime_ranges_admit_ubuntu_2404_numpy():
    from packaging.requirements import Requirement

    reqs = {}
    for line in (REPO / 'requirements-core.txt').read_text().splitlines():
        line = line.split('#', 1)[0].strip()
        if line:
            req = Requirement(line)
            reqs[req.name] = req.specifier
    # Ubuntu 24.04 (Jazzy, Kilted) ships numpy 1.26.4; the tested torch must stay admitted.
    assert reqs['numpy'].contains('1.26.4') and reqs['numpy'].contains('2.4.6')
    assert reqs['torch'].contains('2.14.1') and reqs['torchvision'].contains('0.29.1')


@pytest.mark.parametrize('py', ['311', '312'])
def test_constraints_pin_every_requirement(py):
    pins = {}
    for line in (REPO / f'constraints-py{py}.txt').read_text().splitlines():
        line = line.split('#', 1)[0].strip()
        if line:
            name, _, version = line.partition('==')
            assert version, f'constraints-py{py}.txt: {line!r} is not an exact pin'
            pins[name.lower().replace('_', '-')] = version
    wanted = set().union(*(_names(REPO / f'requirements-{k}.txt')
                           for k in ('core', 'dev', 'ros')))
    assert wanted <= set(pins), sorted(wanted - set(pins))
    assert pins['torch'] == '2.14.1' and pins['torchvision'] == '0.29.1'
    if py == '312':
        assert pins['numpy'].startswith('1.26.')
