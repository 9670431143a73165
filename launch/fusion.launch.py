r"""Launch the ssvif_ros fusion node.

Examples::

    ros2 launch ssvif_ros fusion.launch.py
    ros2 launch ssvif_ros fusion.launch.py backend:=maxluma namespace:=front
    ros2 launch ssvif_ros fusion.launch.py model:=/models/ssvif.onnx \\
        rgb_topic:=/camera/color/image_raw thermal_topic:=/flir_boson/image_raw \\
        rgb_info_topic:=/camera/color/camera_info

``model`` and ``backend`` override the params file only when given. Topic arguments remap the
node's inputs (``rgb/image_raw``, ``thermal/image_raw``, ``rgb/camera_info``); outputs are
``fused/image``, ``fused/segmentation``, ``fused/segmentation_color``, ``fused/camera_info``
under ``namespace``. With ``respawn`` (default true) launch restarts the node 2 s after it
exits, which it does with status 1 when its inference worker died. The node process gets the
packaged Fast DDS shared-memory profile (``dds_profile``); camera drivers publishing large
images need it too (see doc/node.md).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import EnvironmentVariable, LaunchConfiguration
from launch_ros.actions import Node

BACKENDS = ['', 'identity', 'maxluma', 'torch', 'onnxruntime', 'tensorrt']


def _fusion_node(context):
    parameters = [LaunchConfiguration('params_file')]
    overrides = {}
    for name in ('model', 'backend'):
        value = LaunchConfiguration(name).perform(context)
        if value:
            overrides[name] = value
    if overrides:
        parameters.append(overrides)  # later entries win over the params file
    respawn = LaunchConfiguration('respawn').perform(context).lower() in ('true', '1', 'yes')
    return [Node(
        package='ssvif_ros',
        executable='fusion_node',
        name='fusion_node',
        namespace=LaunchConfiguration('namespace'),
        output='screen',
        respawn=respawn,
        respawn_delay=2.0,
        parameters=parameters,
        remappings=[
            ('rgb/image_raw', LaunchConfiguration('rgb_topic')),
            ('thermal/image_raw', LaunchConfiguration('thermal_topic')),
            ('rgb/camera_info', LaunchConfiguration('rgb_info_topic')),
        ],
    )]


def generate_launch_description():
    """Launch description of the fusion node; see the module docstring for the arguments."""
    share = get_package_share_directory('ssvif_ros')
    profile = LaunchConfiguration('dds_profile')
    actions = [
        DeclareLaunchArgument(
            'params_file', default_value=os.path.join(share, 'config', 'fusion.yaml'),
            description='ROS parameters file of the node'),
        DeclareLaunchArgument(
            'model', default_value='',
            description="Model path; '' keeps the params file's value (embedded default)"),
        DeclareLaunchArgument(
            'backend', default_value='', choices=BACKENDS,
            description="Inference backend; '' keeps the params file's value"),
        DeclareLaunchArgument('namespace', default_value='', description='Node namespace'),
        DeclareLaunchArgument('respawn', default_value='true', choices=['true', 'false'],
                              description='Restart the node when it exits (e.g. worker died)'),
        DeclareLaunchArgument('rgb_topic', default_value='rgb/image_raw',
                              description='RGB image topic (sensor_msgs/Image)'),
        DeclareLaunchArgument('thermal_topic', default_value='thermal/image_raw',
                              description='Thermal image topic (sensor_msgs/Image)'),
        DeclareLaunchArgument('rgb_info_topic', default_value='rgb/camera_info',
                              description='RGB camera_info topic (publish_camera_info)'),
        DeclareLaunchArgument(
            'dds_profile', default_value=os.path.join(share, 'config', 'fastdds_shm.xml'),
            description='Fast DDS XML profile of the node process'),
        SetEnvironmentVariable('FASTDDS_DEFAULT_PROFILES_FILE', profile),
        SetEnvironmentVariable(
            'RMW_IMPLEMENTATION',
            EnvironmentVariable('RMW_IMPLEMENTATION', default_value='rmw_fastrtps_cpp')),
    ]
    if os.environ.get('ROS_DISTRO', '') in ('humble', 'iron'):
        # Fast DDS 2.x reads the older variable; newer releases warn that it is deprecated.
        actions.append(SetEnvironmentVariable('FASTRTPS_DEFAULT_PROFILES_FILE', profile))
    actions.append(OpaqueFunction(function=_fusion_node))
    return LaunchDescription(actions)
