"""``stereo-adapt``: one command, one subcommand per job."""

from __future__ import annotations

import argparse
import logging
import sys

from .dependencies import missing_module_line


def build_parser() -> argparse.ArgumentParser:
    from . import (adapt_command, bench_command, ctl_command, eval_command, meta_train_command,
                   node_command, photos_command, plot_command, proxy_confidence_command,
                   replay_command, synth_command, train_command)

    parser = argparse.ArgumentParser(
        prog="stereo-adapt",
        description="Dense stereo with MADNet, adapted online without labels.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    eval_command.register(commands)
    bench_command.register(commands)
    node_command.register(commands)
    replay_command.register(commands)
    ctl_command.register(commands)
    synth_command.register(commands)
    photos_command.register(commands)
    train_command.register(commands)
    adapt_command.register(commands)
    meta_train_command.register(commands)
    proxy_confidence_command.register(commands)
    plot_command.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:
        # Ctrl-C anywhere (importing torch, opening a large bag, rendering, evaluating): one
        # line, no traceback, and the shell's exit status for SIGINT. Commands with something
        # to report (replay's summary) catch it themselves first.
        print("stereo-adapt: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except ModuleNotFoundError as error:
        line = missing_module_line(error, "stereo-adapt")
        if line is None:
            raise
        print(line, file=sys.stderr)
        return 1
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return args.run(args)
    except ModuleNotFoundError as error:
        line = missing_module_line(error, f"stereo-adapt {args.command}")
        if line is None:
            raise
        print(line, file=sys.stderr)
        return 1
    except (ValueError, OSError) as error:
        print(f"stereo-adapt {args.command}: error: {error}", file=sys.stderr)
        return 2
