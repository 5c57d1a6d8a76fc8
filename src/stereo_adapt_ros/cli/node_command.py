"""``stereo-adapt node`` and the ``stereo_adapt_node`` and ``stereo_adapt_lifecycle_node``
executables (``ros2 run``): start the node, or its lifecycle (managed) variant."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .arguments import add_option
from .dependencies import missing_module_line


def register(commands: argparse._SubParsersAction) -> None:
    from ..ros.parameters import PARAMETERS

    parser = commands.add_parser(
        "node", help="start the ROS 2 node (the same as ros2 run stereo_adapt_ros "
                     "stereo_adapt_node)",
        description="Start the stereo_adapt node. Every parameter has a flag of the same name "
                    "(--adaptation-mode mad is -p adaptation_mode:=mad); unset ones keep the "
                    "node's default or the params file's value. Anything after --ros-args is "
                    "passed to ROS (remappings, -p name:=value, --params-file, "
                    "-r __ns:=/robot).")
    for declared in PARAMETERS.values():
        add_option(parser, declared, default=None,
                   help=declared.description.replace("%", "%%")
                   + f" Parameter {declared.name} (default: {_ros_text(declared.default)}).")
    parser.add_argument("--lifecycle", action="store_true",
                        help="start the lifecycle (managed) node instead, as "
                             "stereo_adapt_lifecycle_node does: unconfigured until its "
                             "~/change_state service (ros2 lifecycle, launch, nav2's lifecycle "
                             "manager) configures (loads the weights) and activates it")
    parser.add_argument("--params-file", help="a ROS parameters YAML file "
                                              "(e.g. config/stereo_adapt.yaml)")
    parser.add_argument("--ros-args", dest="ros_args", nargs=argparse.REMAINDER, default=None,
                        help="ROS arguments, as ros2 run takes them (must come last)")
    parser.set_defaults(run=run)


def _ros_text(value: Any) -> str:
    """A parameter value as ``-p name:=value`` takes it (a float keeps its point, so that ROS
    reads it as a double)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def ros_arguments(args: argparse.Namespace) -> list[str]:
    """The ROS command line for the options given."""
    from ..ros.parameters import PARAMETERS

    extra = ["--ros-args", *args.ros_args] if args.ros_args is not None else []
    shortcuts = []
    if args.params_file:
        shortcuts += ["--params-file", args.params_file]
    for name in PARAMETERS:
        value = getattr(args, name)
        if value is not None:
            shortcuts += ["-p", f"{name}:={_ros_text(value)}"]
    if shortcuts:
        extra += ["--ros-args", *shortcuts]
    return ["stereo-adapt-node", *extra]


def run(args: argparse.Namespace) -> int:
    from ..ros.node import run as run_node
    return run_node(ros_arguments(args), lifecycle=args.lifecycle)


def main(lifecycle: bool = False) -> int:
    """Entry point of the ``stereo_adapt_node`` executable (with ``lifecycle``, of
    ``stereo_adapt_lifecycle_node``): ROS arguments as ros2 run gives them."""
    executable = "stereo_adapt_lifecycle_node" if lifecycle else "stereo_adapt_node"
    try:
        from ..ros.node import run as run_node
    except ModuleNotFoundError as error:
        line = missing_module_line(error, executable)
        if line is None:
            raise
        print(line, file=sys.stderr)
        return 1
    return run_node(sys.argv, lifecycle=lifecycle)


def lifecycle_main() -> int:
    """Entry point of the ``stereo_adapt_lifecycle_node`` executable."""
    return main(lifecycle=True)


if __name__ == "__main__":
    sys.exit(main())
