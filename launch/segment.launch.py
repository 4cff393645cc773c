"""Start the dmnet segmentation node: one instance per endoscope camera.

    ros2 launch dmnet_ros segment.launch.py
    ros2 launch dmnet_ros segment.launch.py image_topic:=/camera/left/image_raw device:=cuda
    ros2 launch dmnet_ros segment.launch.py start_right:=true      # stereo: a second instance
    ros2 launch dmnet_ros segment.launch.py managed:=true          # for a lifecycle manager
    ros2 launch dmnet_ros segment.launch.py use_sim_time:=true     # with `ros2 bag play --clock`
    ros2 launch dmnet_ros segment.launch.py fastdds_large_frames:=0  # no large-frame profile

The node's output topics are relative, so they resolve in its namespace: the first instance
publishes /dmnet/{mask,overlay,labels,camera_info} (or /<namespace>/dmnet/... with the
`namespace` argument). The optional right camera instance runs under `right_namespace` with its
own video memory, reads `right_image_topic` and publishes /right/dmnet/{mask,...}; its reset
service is /right/dmnet/reset. `managed:=true` starts the nodes unconfigured (autostart false):
a lifecycle manager then configures and activates them.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, GroupAction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, NotSubstitution, PathJoinSubstitution
from launch_ros.actions import Node, PushRosNamespace
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

PACKAGE = 'dmnet_ros'
EXECUTABLE = 'segment_node'
NODE_NAME = 'dmnet'


def _node_params() -> dict:
    """Overrides on top of the params file (strings typed explicitly: '' must stay a string)."""
    return {
        'checkpoint': ParameterValue(LaunchConfiguration('checkpoint'), value_type=str),
        'device': ParameterValue(LaunchConfiguration('device'), value_type=str),
        'image_transport': ParameterValue(LaunchConfiguration('image_transport'),
                                          value_type=str),
        'input.reliability': ParameterValue(LaunchConfiguration('input_reliability'),
                                            value_type=str),
        'use_sim_time': ParameterValue(LaunchConfiguration('use_sim_time'), value_type=bool),
        'autostart': ParameterValue(NotSubstitution(LaunchConfiguration('managed')),
                                    value_type=bool),
    }


def _node(image_topic: LaunchConfiguration, **kwargs: object) -> Node:
    return Node(
        package=PACKAGE,
        executable=EXECUTABLE,
        name=NODE_NAME,
        parameters=[LaunchConfiguration('params_file'), _node_params()],
        remappings=[('image', image_topic)],
        ros_arguments=['--log-level', LaunchConfiguration('log_level')],
        # The node gives its own process the shipped Fast DDS large-frame profile unless this
        # is 0 (or the user set a Fast DDS profile of their own): dmnet_ros/dds_profile.py.
        additional_env={'DMNET_FASTDDS_LARGE_FRAMES': LaunchConfiguration('fastdds_large_frames')},
        output='screen',
        emulate_tty=True,
        **kwargs,
    )


def generate_launch_description() -> LaunchDescription:
    image_topic = LaunchConfiguration('image_topic')
    right_image_topic = LaunchConfiguration('right_image_topic')
    right_ns = LaunchConfiguration('right_namespace')

    arguments = [
        DeclareLaunchArgument('image_topic', default_value='/endoscope/image_raw',
                              description='sensor_msgs/Image input of the (left) camera'),
        DeclareLaunchArgument('namespace', default_value='',
                              description='Namespace of the (left) node'),
        DeclareLaunchArgument(
            'params_file',
            default_value=PathJoinSubstitution([FindPackageShare(PACKAGE), 'config',
                                                'dmnet.yaml']),
            description='Node parameters (YAML, /** form)'),
        DeclareLaunchArgument('checkpoint', default_value='',
                              description="Model checkpoint; '' = the model shipped with "
                                          'the package'),
        DeclareLaunchArgument('device', default_value='auto',
                              description='auto | cpu | cuda | cuda:N'),
        DeclareLaunchArgument('start_right', default_value='false',
                              description='Also start an instance for the right camera'),
        DeclareLaunchArgument('right_image_topic', default_value='/endoscope/right/image_raw',
                              description='sensor_msgs/Image input of the right camera'),
        DeclareLaunchArgument('right_namespace', default_value='right',
                              description='Namespace of the right instance (its topics are '
                                          '/<right_namespace>/dmnet/...)'),
        DeclareLaunchArgument('image_transport', default_value='raw',
                              description="Input transport: 'raw' (the image topic) or "
                                          "'compressed' (<image topic>/compressed)"),
        DeclareLaunchArgument('input_reliability', default_value='auto',
                              description="Input QoS reliability: 'auto' (reliable unless a "
                                          "publisher is best-effort), 'reliable', 'best_effort'"),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description="Use /clock (a bag played with --clock): latency "
                                          "and stamps then share the bag's clock"),
        DeclareLaunchArgument('log_level', default_value='info',
                              description='ROS log level of the nodes: debug, info, warn, '
                                          'error, fatal'),
        DeclareLaunchArgument('fastdds_large_frames', default_value='1',
                              description="1: the nodes' own processes use the shipped Fast DDS "
                                          'large-frame profile (best-effort subscribers get '
                                          'large masks) unless the user set a profile; 0: off'),
        DeclareLaunchArgument('managed', default_value='false',
                              description='true: start unconfigured for a lifecycle manager '
                                          '(autostart false)'),
    ]

    left = _node(image_topic, namespace=LaunchConfiguration('namespace'))
    right = GroupAction(
        condition=IfCondition(LaunchConfiguration('start_right')),
        actions=[PushRosNamespace(right_ns), _node(right_image_topic)],
    )
    return LaunchDescription(arguments + [left, right])
