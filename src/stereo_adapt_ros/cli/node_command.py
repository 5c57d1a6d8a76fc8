"""``stereo-adapt node`` and the ``stereo_adapt_node`` executable (``ros2 run``): start the node."""

from __future__ import annotations

import argparse
import sys


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "node", help="start the ROS 2 node (the same as ros2 run stereo_adapt_ros "
                     "stereo_adapt_node)",
        description="Start the stereo_adapt node. Options are shortcuts for parameters; "
                    "anything after --ros-args is passed to ROS (remappings, -p name:=value, "
                    "--params-file, -r __ns:=/robot).")
    parser.add_argument("--weights", help="weights parameter: a shipped name (synthetic, "
                                          "the default, or l2a), a .safetensors file, or random")
    parser.add_argument("--mode", help="adaptation_mode parameter: none, full or mad")
    parser.add_argument("--params-file", help="a ROS parameters YAML file "
                                              "(e.g. config/stereo_adapt.yaml)")
    parser.add_argument("--ros-args", dest="ros_args", nargs=argparse.REMAINDER, default=None,
                        help="ROS arguments, as ros2 run takes them (must come last)")
    parser.set_defaults(run=run)


def ros_arguments(args: argparse.Namespace) -> list[str]:
    """The ROS command line for the options given."""
    extra = ["--ros-args", *args.ros_args] if args.ros_args is not None else []
    shortcuts = []
    if args.params_file:
        shortcuts += ["--params-file", args.params_file]
    if args.weights:
        shortcuts += ["-p", f"weights:={args.weights}"]
    if args.mode:
        shortcuts += ["-p", f"adaptation_mode:={args.mode}"]
    if shortcuts:
        extra += ["--ros-args", *shortcuts]
    return ["stereo-adapt-node", *extra]


def run(args: argparse.Namespace) -> int:
    from ..ros.node import run as run_node
    return run_node(ros_arguments(args))


def main() -> int:
    """Entry point of the ``stereo_adapt_node`` executable: ROS arguments as ros2 run gives them."""
    from ..ros.node import run as run_node
    return run_node(sys.argv)


if __name__ == "__main__":
    sys.exit(main())
