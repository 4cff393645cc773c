"""Start the dmnet segmentation node: one instance per endoscope camera.

    ros2 launch dmnet_ros segment.launch.py
    ros2 launch dmnet_ros segment.launch.py image_topic:=/camera/left/image_raw device:=cuda
    ros2 launch dmnet_ros segment.launch.py start_right:=true      # stereo: a second instance

The first instance publishes /dmnet/mask, /dmnet/overlay and /dmnet/labels. The optional right
camera instance runs under the `right_namespace` namespace (its reset service is
/right/dmnet/reset) with its own video memory, reads `right_image_topic`, and publishes
/dmnet/<right_namespace>/{mask,overlay,labels} so the two streams never collide.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, GroupAction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node, PushRosNamespace
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

PACKAGE = 'dmnet_ros'
EXECUTABLE = 'segment_node'
NODE_NAME = 'dmnet'


def _model_params(image_topic: LaunchConfiguration) -> dict:
    """Overrides on top of the params file (strings typed explicitly: '' must stay a string)."""
    return {
        'checkpoint': ParameterValue(LaunchConfiguration('checkpoint'), value_type=str),
        'device': ParameterValue(LaunchConfiguration('device'), value_type=str),
        'compressed_topic': ParameterValue([image_topic, '/compressed'], value_type=str),
    }


def generate_launch_description() -> LaunchDescription:
    params_file = LaunchConfiguration('params_file')
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
                              description='Namespace (and output topic prefix) of the right '
                                          'instance'),
    ]

    left = Node(
        package=PACKAGE,
        executable=EXECUTABLE,
        name=NODE_NAME,
        namespace=LaunchConfiguration('namespace'),
        parameters=[params_file, _model_params(image_topic)],
        remappings=[('image', image_topic)],
        output='screen',
        emulate_tty=True,
    )

    right = GroupAction(
        condition=IfCondition(LaunchConfiguration('start_right')),
        actions=[
            PushRosNamespace(right_ns),
            Node(
                package=PACKAGE,
                executable=EXECUTABLE,
                name=NODE_NAME,
                parameters=[params_file, _model_params(right_image_topic), {
                    'mask_topic': ParameterValue(['/dmnet/', right_ns, '/mask'], value_type=str),
                    'overlay_topic': ParameterValue(['/dmnet/', right_ns, '/overlay'],
                                                    value_type=str),
                    'labels_topic': ParameterValue(['/dmnet/', right_ns, '/labels'],
                                                   value_type=str),
                }],
                remappings=[('image', right_image_topic)],
                output='screen',
                emulate_tty=True,
            ),
        ],
    )
    return LaunchDescription(arguments + [left, right])
