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
* ``fusion_autostart`` (true): the node's ``autostart`` parameter: the node configures and
  activates itself on every start of its process, a respawn too; false leaves it unconfigured
  for a lifecycle manager. (Launch does not drive the transitions: a ChangeState request sent
  to a respawned node while the dead one's service is still known is lost, and it would wait
  unconfigured forever.)
* ``fusion_respawn`` (true): launch restarts the process 2 s after it crashes (exit 1: its
  inference worker died; or a signal).
* ``fusion_on_exit_shutdown`` (true): the whole launch shuts down, and ``ros2 launch`` exits 0
  with the reason in its log, when the node cannot go on: its start failed (exit 2, which a
  respawn would only repeat), a lifecycle manager's configure failed, it ended cleanly (exit
  0), or it ended in any way with ``fusion_respawn`` false. A Shutdown is only asked for while
  launch is not shutting down already (Ctrl-C).
* ``fusion_use_sim_time`` (false): the node's ``use_sim_time``; ``fusion_log_level`` (info):
  ``--ros-args --log-level`` of the node.

Boolean arguments take true/false in any case (also 1/0, yes/no, on/off); another value ends
the launch with one error naming the argument.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import (DeclareLaunchArgument, LogInfo, OpaqueFunction,
                            RegisterEventHandler, Shutdown)
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode
from launch_ros.event_handlers import OnStateTransition

from ssvif_ros.node_params import backend_choices, EXIT_START_FAILED

PREFIX = 'fusion_'
# Names this file used before its arguments were prefixed: a value under one of them is not
# read here (it may well be a parent launch file's own argument); say so once.
UNPREFIXED = ('params_file', 'model', 'backend', 'namespace', 'respawn', 'rgb_topic',
              'thermal_topic', 'rgb_info_topic', 'dds_profile')
TRUE = ('true', '1', 'yes', 'on')
FALSE = ('false', '0', 'no', 'off')
BOOL = ' (true/false, any case)'
LOG_LEVELS = ('debug', 'info', 'warn', 'error', 'fatal')


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


def parse_bool(name: str, text: str) -> bool:
    """A boolean launch argument: true/false, yes/no, on/off or 1/0 in any case."""
    value = text.strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise ValueError(f"launch argument {PREFIX + name}: '{text}' is not a boolean "
                     '(true or false, any case; also 1/0, yes/no, on/off)')


def _shutdown(reason: str) -> OpaqueFunction:
    """Shut the launch down with ``reason``, unless it is shutting down already.

    A second Shutdown event while launch shuts down makes launch_ros stop its ROS adapter twice
    (``Cannot shutdown a ROS adapter that is not running``) and ``ros2 launch`` exit 1.
    """
    def once(context):
        return None if context.is_shutdown else [LogInfo(msg=reason), Shutdown(reason=reason)]
    return OpaqueFunction(function=once)


def _fusion_node(context):
    autostart = parse_bool('autostart', _arg(context, 'autostart'))
    respawn = parse_bool('respawn', _arg(context, 'respawn'))
    shutdown_on_exit = parse_bool('on_exit_shutdown', _arg(context, 'on_exit_shutdown'))
    log_level = _arg(context, 'log_level').strip().lower()
    if log_level not in LOG_LEVELS:
        raise ValueError(f"launch argument {PREFIX}log_level: '{log_level}' is not one of "
                         + ', '.join(LOG_LEVELS))
    # The node configures and activates itself in its own process, so every start, a respawn
    # too, ends active: nothing depends on launch reaching a freshly started node's services.
    overrides = {'autostart': autostart,
                 'use_sim_time': parse_bool('use_sim_time', _arg(context, 'use_sim_time'))}
    for name in ('model', 'backend'):
        value = _arg(context, name)
        if value:
            overrides[name] = value

    def on_exit(event, exit_context):
        if exit_context.is_shutdown or not shutdown_on_exit:
            return None  # launch is ending already, or the user keeps it up without the node
        code = event.returncode
        if code == EXIT_START_FAILED:
            return [_shutdown('fusion_node could not start (exit code 2, its log says why: '
                              '"cannot start: ..."): shutting down')]
        if code == 0 or not respawn:
            return [_shutdown(f'fusion_node exited with code {code}: shutting down')]
        return None  # a crash (worker died, signal): respawn restarts it

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
        ros_arguments=['--log-level', log_level],
        remappings=[
            ('rgb/image_raw', _arg(context, 'rgb_topic')),
            ('thermal/image_raw', _arg(context, 'thermal_topic')),
            ('rgb/camera_info', _arg(context, 'rgb_info_topic')),
        ],
    )
    actions = []
    if shutdown_on_exit:
        # A lifecycle manager's configure that fails (fusion_autostart:=false); the node's own
        # failed start at autostart ends its process (on_exit above).
        actions.append(RegisterEventHandler(OnStateTransition(
            target_lifecycle_node=node, start_state='configuring', goal_state='unconfigured',
            entities=[_shutdown('fusion_node failed to configure (its log says why): shutting '
                                'down')])))
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
        ('autostart', 'true', 'Configure and activate the node on every start of its process; '
         'false: leave it unconfigured for a lifecycle manager' + BOOL, None),
        ('respawn', 'true', 'Restart the node process when it crashes' + BOOL, None),
        ('on_exit_shutdown', 'true', 'Shut the launch down when the node cannot go on (see '
         'the launch file)' + BOOL, None),
        ('use_sim_time', 'false', 'Node clock from /clock (bag replay: ros2 bag play --clock)'
         + BOOL, None),
        ('log_level', 'info', 'Log level of the node: ' + ', '.join(LOG_LEVELS), None),
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
