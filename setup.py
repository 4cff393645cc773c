"""ament_python setup for dmnet_ros (also pip-installable into a plain virtualenv)."""
from glob import glob

from setuptools import find_packages, setup

package_name = 'dmnet_ros'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(include=['dmnet_ros', 'dmnet_ros.*', 'dmnet_core', 'dmnet_core.*']),
    package_data={'dmnet_core': ['models/*.safetensors', 'models/*.yaml', 'models/README.md']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', glob('launch/*.launch.py')),
        ('share/' + package_name + '/config', glob('config/*.yaml') + glob('config/*.xml')),
    ],
    install_requires=['setuptools'],
    zip_safe=False,
    maintainer='dmnet maintainers',
    maintainer_email='dmnet@example.org',
    description='DMNet real-time surgical instrument segmentation for ROS 2',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'dmnet = dmnet_core.cli:main',
            'segment_node = dmnet_ros.segment_node:main',
            'replay = dmnet_ros.replay:main',
            'make_bag = dmnet_ros.make_bag:main',
        ],
    },
)
