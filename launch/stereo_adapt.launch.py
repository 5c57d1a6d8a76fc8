"""Launch the stereo_adapt node (and optionally rviz) on a rectified stereo camera.

    ros2 launch stereo_adapt_ros stereo_adapt.launch.py namespace:=stereo \
        left_namespace:=left right_namespace:=right weights:=my.safetensors \
        adaptation_mode:=mad rviz:=true

Every node parameter is also a launch argument of the same name (empty, the default: the
params file's value). The node subscribes to <left_namespace>/image_rect,
<left_namespace>/camera_info and the same under <right_namespace>, all inside <namespace>, and
publishes disparity, confidence, disparity/color, points2, depth and ~/status there.
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
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
    return [Node(
        package='stereo_adapt_ros',
        executable='stereo_adapt_node',
        name='stereo_adapt',
        namespace=argument('namespace'),
        output='screen',
        emulate_tty=True,
        parameters=[argument('params_file'), overrides],
        remappings=[(f'{side}/{topic}', f'{target}/{topic}')
                    for side, target in (('left', left), ('right', right))
                    for topic in ('image_rect', 'camera_info')],
    )]


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
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='follow /clock (e.g. stereo-adapt replay --clock)'),
        DeclareLaunchArgument('rviz', default_value='false',
                              description='start rviz2 with config/stereo_adapt.rviz'),
        OpaqueFunction(function=_stereo_adapt_node),
        # In the node's namespace: the rviz config's topics are relative (disparity/color,
        # confidence, points2), so that they resolve to the node's outputs there.
        Node(package='rviz2', executable='rviz2', name='rviz2', output='screen',
             namespace=LaunchConfiguration('namespace'),
             arguments=['-d', str(SHARE / 'config' / 'stereo_adapt.rviz')],
             condition=IfCondition(LaunchConfiguration('rviz'))),
    ])
