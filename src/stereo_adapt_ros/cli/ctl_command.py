"""``stereo-adapt ctl``: control a running node (parameters, services, status) without the
``ros2`` CLI."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "ctl", help="control a running node: set/get parameters, reset, save, pause, status",
        description="Control a running stereo_adapt node through rclpy (what ros2 param set and "
                    "ros2 service call do on a full ROS install).")
    parser.add_argument("--node", default="/stereo_adapt", help="the node's full name")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    setter = actions.add_parser("set", help="set a parameter: set NAME VALUE")
    setter.add_argument("name")
    setter.add_argument("value")
    getter = actions.add_parser("get", help="print a parameter: get NAME")
    getter.add_argument("name")
    actions.add_parser("reset", help="call ~/reset_weights")
    actions.add_parser("save", help="call ~/save_weights (writes to the save_path parameter)")
    actions.add_parser("pause", help="pause adaptation (~/pause_adaptation true)")
    actions.add_parser("resume", help="resume adaptation (~/pause_adaptation false)")
    actions.add_parser("status", help="print the next ~/status message")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import rclpy

    from ..ros.ctl import Controller, value_of

    rclpy.init(args=["stereo-adapt-ctl"])
    node = rclpy.create_node("stereo_adapt_ctl")
    control = Controller(node, args.node, args.timeout)
    try:
        if args.action == "status":
            for key, value in control.status().items():
                print(f"{key}: {value}")
            return 0
        if args.action == "get":
            print(value_of(control.get(args.name)))
            return 0
        if args.action == "set":
            ok, message = control.set(args.name, args.value)
            message = message if not ok else f"set {args.name} to {args.value}"
        elif args.action in ("reset", "save"):
            ok, message = control.trigger(
                {"reset": "reset_weights", "save": "save_weights"}[args.action])
        else:
            ok, message = control.pause(args.action == "pause")
        print(message if ok else f"refused: {message}")
        return 0 if ok else 1
    except TimeoutError as error:
        print(f"stereo-adapt ctl: {error}")
        return 3
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
