"""Launch the stereo_adapt node (and optionally rviz) on a rectified stereo camera.

    ros2 launch stereo_adapt_ros stereo_adapt.launch.py namespace:=stereo \
        left_namespace:=left right_namespace:=right weights:=my.safetensors \
        adaptation_mode:=mad rviz:=true fixed_frame:=camera_link

Every node parameter is also a launch argument of the same name (empty, the default: the
params file's value). The node subscribes to <left_namespace>/image_rect,
<left_namespace>/camera_info and the same under <right_namespace>, all inside <namespace>, and
publishes disparity, confidence, disparity/color, points2, depth and ~/status there.

When the node exits with an error (it refuses to start with one FATAL line: weights that do
not load, a bad parameter), the launch ends, rviz with it. rviz is optional: with rviz:=true
and no rviz2 installed, the node runs alone and the launch says so.

lifecycle:=true starts the lifecycle (managed) node, stereo_adapt_lifecycle_node, instead: it
waits unconfigured for nav2's lifecycle manager (or ros2 lifecycle set) to configure it (load
the weights) and activate it (subscribe); autostart:=true has this launch do both. A configure
that fails (weights that do not load, a bad parameter) leaves it unconfigured with one ERROR
line that says why.
"""

import re
import tempfile
from pathlib import Path

from ament_index_python.packages import (PackageNotFoundError, get_package_prefix,
                                         get_package_share_directory)
from launch import LaunchDescription
from launch.actions import (DeclareLaunchArgument, EmitEvent, LogInfo, OpaqueFunction,
                            RegisterEventHandler, Shutdown)
from launch.event_handlers import OnProcessExit
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition
from stereo_adapt_ros.options import option_value
from stereo_adapt_ros.ros.parameters import PARAMETERS

SHARE = Path(get_package_share_directory('stereo_adapt_ros'))


def _stereo_adapt_node(context):
    def argument(name):
        return LaunchConfiguration(name).perform(context)

    overrides = {'use_sim_time': argument('use_sim_time').lower() == 'true'}
    # Empty parameter arguments leave the params file's values in place.
    overrides.update({name: option_value(declared, argument(name))
                      for name, declared in PARAMETERS.items() if argument(name)})
    left, right = argument('left_namespace'), argument('right_namespace')
    lifecycle = argument('lifecycle').lower() == 'true'
    node = (LifecycleNode if lifecycle else Node)(
        package='stereo_adapt_ros',
        executable='stereo_adapt_lifecycle_node' if lifecycle else 'stereo_adapt_node',
        name='stereo_adapt',
        namespace=argument('namespace'),
        output='screen',
        emulate_tty=True,
        parameters=[argument('params_file'), overrides],
        remappings=[(f'{side}/{topic}', f'{target}/{topic}')
                    for side, target in (('left', left), ('right', right))
                    for topic in ('image_rect', 'camera_info')],
    )
    actions = [node, RegisterEventHandler(OnProcessExit(target_action=node,
                                                        on_exit=_end_launch_on_failure))]
    if lifecycle and argument('autostart').lower() == 'true':
        actions += _autostart(node)
    return actions


def _autostart(node):
    """Configure the lifecycle node at once, and activate it once it is configured
    (inactive); a configure that fails leaves it unconfigured, and its log says why."""
    def change_state(transition):
        return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                           transition_id=transition))
    return [RegisterEventHandler(OnStateTransition(
                target_lifecycle_node=node, start_state='configuring', goal_state='inactive',
                entities=[change_state(Transition.TRANSITION_ACTIVATE)])),
            change_state(Transition.TRANSITION_CONFIGURE)]


def _end_launch_on_failure(event, context):
    """The node's non-zero exit ends the launch (rviz and all) instead of leaving it running
    without its node; the node's FATAL line says why."""
    if event.returncode == 0:
        return None
    reason = f'stereo_adapt_node exited with status {event.returncode}'
    return [LogInfo(msg=f'{reason} (see its FATAL line above): ending the launch'),
            Shutdown(reason=reason)]


def rviz_config(text, fixed_frame):
    """The rviz config ``text`` with its global Fixed Frame set to ``fixed_frame``."""
    return re.sub(r'^(\s*Fixed Frame:).*$', lambda m: f'{m.group(1)} {fixed_frame}', text,
                  count=1, flags=re.MULTILINE)


def _rviz(context):
    """rviz2 with config/stereo_adapt.rviz and the fixed_frame argument, when rviz is true and
    rviz2 is installed; otherwise a log line, and the node runs alone."""
    if LaunchConfiguration('rviz').perform(context).lower() != 'true':
        return []
    try:
        get_package_prefix('rviz2')
    except PackageNotFoundError:
        return [LogInfo(msg='rviz:=true but rviz2 is not installed (apt install '
                            'ros-$ROS_DISTRO-rviz2); running the node without it')]
    text = rviz_config((SHARE / 'config' / 'stereo_adapt.rviz').read_text(),
                       LaunchConfiguration('fixed_frame').perform(context))
    # A copy of its own per launch: the installed config stays as shipped.
    with tempfile.NamedTemporaryFile('w', prefix='stereo_adapt_', suffix='.rviz',
                                     delete=False) as config:
        config.write(text)
    # In the node's namespace: the rviz config's topics are relative (disparity/color,
    # confidence, points2), so that they resolve to the node's outputs there.
    return [Node(package='rviz2', executable='rviz2', name='rviz2', output='screen',
                 namespace=LaunchConfiguration('namespace').perform(context),
                 arguments=['-d', config.name])]


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument('namespace', default_value='',
                              description='namespace of the node and its topics'),
        DeclareLaunchArgument('left_namespace', default_value='left',
                              description='where the left image_rect and camera_info are'),
        DeclareLaunchArgument('right_namespace', default_value='right',
                              description='where the right image_rect and camera_info are'),
        DeclareLaunchArgument('params_file',
                              default_value=str(SHARE / 'config' / 'stereo_adapt.yaml'),
                              description='parameters YAML file'),
        *(DeclareLaunchArgument(name, default_value='',
                                description=f'{declared.description} (empty: the params '
                                            'file\'s value)')
          for name, declared in PARAMETERS.items()),
        DeclareLaunchArgument('lifecycle', default_value='false',
                              description='start the lifecycle (managed) node, '
                                          'stereo_adapt_lifecycle_node, for a lifecycle manager'),
        DeclareLaunchArgument('autostart', default_value='false',
                              description='with lifecycle:=true, configure and activate the '
                                          'node from this launch (false: leave it to a '
                                          'lifecycle manager)'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='follow /clock (e.g. stereo-adapt replay --clock)'),
        DeclareLaunchArgument('rviz', default_value='false',
                              description='start rviz2 with config/stereo_adapt.rviz (if '
                                          'rviz2 is installed)'),
        DeclareLaunchArgument('fixed_frame', default_value='stereo_left_optical_frame',
                              description="rviz's Fixed Frame: the camera's frame_id, or a "
                                          'frame TF connects it to'),
        OpaqueFunction(function=_stereo_adapt_node),
        OpaqueFunction(function=_rviz),
    ])
