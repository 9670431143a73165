r"""Launch the ssvif_ros fusion node (a managed node), configured and activated by default.

Examples::

    ros2 launch ssvif_ros fusion.launch.py
    ros2 launch ssvif_ros fusion.launch.py fusion_backend:=maxluma fusion_namespace:=front
    ros2 launch ssvif_ros fusion.launch.py fusion_model:=/models/ssvif.onnx \\
        fusion_rgb_topic:=/camera/color/image_raw fusion_thermal_topic:=/flir_boson/image_raw

Every argument starts with ``fusion_``, so that a parent launch file including this one keeps
its own ``model``, ``namespace``, ``params_file``, ... to itself: launch arguments share one
scope, and a generic name would be read by both files. Nothing is set in the launch's
environment: the Fast DDS profile and ``RMW_IMPLEMENTATION`` go to the node process only.

* ``fusion_model``, ``fusion_backend`` override the params file only when given.
* ``fusion_autostart`` (true): launch configures and then activates the node on every start
  of its process (lifecycle ChangeState events); false leaves it unconfigured for a lifecycle
  manager.
* ``fusion_respawn`` (true): launch restarts the process 2 s after it exits (it exits 1 when
  its inference worker died).
* ``fusion_on_exit_shutdown`` (true): the whole launch shuts down when the node cannot go on:
  when its configure transition fails, when its process ends before it was ever active
  (start-up failure, which a respawn would only repeat) or ends cleanly, and on any exit when
  ``fusion_respawn`` is false. A crash after the node had been active is left to the respawn.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import (DeclareLaunchArgument, EmitEvent, LogInfo, OpaqueFunction,
                            RegisterEventHandler, Shutdown)
from launch.event_handlers import OnProcessStart
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition

from ssvif_ros.node_params import backend_choices

PREFIX = 'fusion_'
# Names this file used before its arguments were prefixed: a value under one of them is not
# read here (it may well be a parent launch file's own argument); say so once.
UNPREFIXED = ('params_file', 'model', 'backend', 'namespace', 'respawn', 'rgb_topic',
              'thermal_topic', 'rgb_info_topic', 'dds_profile')
TRUE = ('true', '1', 'yes')


def _arg(context, name: str) -> str:
    return LaunchConfiguration(PREFIX + name).perform(context)


def node_environment(context) -> dict:
    """The environment added to the node process only (never to the launch or its siblings)."""
    profile = _arg(context, 'dds_profile')
    env = {'FASTDDS_DEFAULT_PROFILES_FILE': profile,
           'RMW_IMPLEMENTATION': os.environ.get('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')}
    if os.environ.get('ROS_DISTRO', '') in ('humble', 'iron'):
        # Fast DDS 2.x reads the older variable; newer releases warn that it is deprecated.
        env['FASTRTPS_DEFAULT_PROFILES_FILE'] = profile
    return env


def _fusion_node(context):
    overrides = {'autostart': False}  # launch (or a lifecycle manager) drives the transitions
    for name in ('model', 'backend'):
        value = _arg(context, name)
        if value:
            overrides[name] = value
    respawn = _arg(context, 'respawn').lower() in TRUE
    shutdown_on_exit = _arg(context, 'on_exit_shutdown').lower() in TRUE
    was_active = {'value': False}

    def on_exit(event, _context):
        if not shutdown_on_exit or (respawn and was_active['value'] and event.returncode != 0):
            return None  # respawn (if on) restarts it
        return [Shutdown(reason=f'fusion_node exited with code {event.returncode}')]

    node = LifecycleNode(
        package='ssvif_ros',
        executable='fusion_node',
        name='fusion_node',
        namespace=_arg(context, 'namespace'),
        output='screen',
        respawn=respawn,
        respawn_delay=2.0,
        on_exit=on_exit,
        additional_env=node_environment(context),
        parameters=[_arg(context, 'params_file'), overrides],  # later entries win
        remappings=[
            ('rgb/image_raw', _arg(context, 'rgb_topic')),
            ('thermal/image_raw', _arg(context, 'thermal_topic')),
            ('rgb/camera_info', _arg(context, 'rgb_info_topic')),
        ],
    )

    def change(transition_id):
        return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                           transition_id=transition_id))

    def mark_active(_context):
        was_active['value'] = True

    actions = [RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=node, goal_state='active',
        entities=[OpaqueFunction(function=mark_active)]))]
    if _arg(context, 'autostart').lower() in TRUE:
        actions += [
            # Every start of the process, a respawn too, is configured, then activated.
            RegisterEventHandler(OnProcessStart(
                target_action=node, on_start=[change(Transition.TRANSITION_CONFIGURE)])),
            RegisterEventHandler(OnStateTransition(
                target_lifecycle_node=node, start_state='configuring', goal_state='inactive',
                entities=[change(Transition.TRANSITION_ACTIVATE)])),
        ]
    if shutdown_on_exit:
        actions.append(RegisterEventHandler(OnStateTransition(
            target_lifecycle_node=node, start_state='configuring', goal_state='unconfigured',
            entities=[Shutdown(reason='fusion_node failed to configure (see its log)')])))
    ignored = [n for n in UNPREFIXED if n in context.launch_configurations]
    if ignored:
        actions.append(LogInfo(msg='fusion.launch.py reads only fusion_* arguments; not read: '
                               + ', '.join(ignored)))
    return actions + [node]


def generate_launch_description():
    """Launch description of the fusion node; see the module docstring for the arguments."""
    share = get_package_share_directory('ssvif_ros')
    args = [
        ('params_file', os.path.join(share, 'config', 'fusion.yaml'),
         'ROS parameters file of the node', None),
        ('model', '', "Model path; '' keeps the params file's value (embedded default)", None),
        ('backend', '', "Inference backend; '' keeps the params file's value",
         list(backend_choices())),
        ('namespace', '', 'Node namespace (inputs and outputs move with it)', None),
        ('autostart', 'true', 'Configure and activate the node; false: leave it unconfigured '
         'for a lifecycle manager', ['true', 'false']),
        ('respawn', 'true', 'Restart the node process when it exits', ['true', 'false']),
        ('on_exit_shutdown', 'true', 'Shut the launch down when the node cannot go on (see '
         'the launch file)', ['true', 'false']),
        ('rgb_topic', 'rgb/image_raw', 'RGB image topic (sensor_msgs/Image)', None),
        ('thermal_topic', 'thermal/image_raw', 'Thermal image topic (sensor_msgs/Image)', None),
        ('rgb_info_topic', 'rgb/camera_info', 'RGB camera_info topic (publish_camera_info)',
         None),
        ('dds_profile', os.path.join(share, 'config', 'fastdds_shm.xml'),
         'Fast DDS XML profile of the node process', None),
    ]
    actions = [DeclareLaunchArgument(PREFIX + name, default_value=default,
                                     description=text, **({'choices': choices} if choices else {}))
               for name, default, text, choices in args]
    actions.append(OpaqueFunction(function=_fusion_node))
    return LaunchDescription(actions)
