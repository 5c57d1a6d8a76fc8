"""Argument types shared by the subcommands."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..options import Option

if TYPE_CHECKING:
    from ..training_data.synthetic import SynthConfig


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def image_size(text: str) -> tuple[int, int]:
    """``HEIGHTxWIDTH`` (e.g. 320x1216, KITTI's order) -> (height, width), at least 8 x 8."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"size must be HEIGHTxWIDTH, got {text!r}") from error
    if height < 8 or width < 8:
        raise argparse.ArgumentTypeError(f"size must be at least 8x8, got {text!r}")
    return height, width


def add_option(parser: argparse.ArgumentParser, declared: Option, *flags: str,
               **overrides: Any) -> None:
    """The flag of a declared option (``--name-with-dashes``) with its type, choices, default
    and description; ``--flag`` / ``--no-flag`` for a bool. ``flags``: the command's own names
    for it instead, where they predate the option (``--tau`` for ``proxy_tau``); the value is
    still read back under the option's name. ``overrides`` are argparse keywords for a command
    that uses the option differently (e.g. no default: leave it unset)."""
    keywords: dict[str, Any] = {"dest": declared.name, "default": declared.default,
                                "help": declared.description.replace("%", "%%")}
    if declared.type is bool:
        keywords["action"] = argparse.BooleanOptionalAction
    else:
        keywords["type"] = declared.type
        keywords["help"] += " (default: %(default)s)"
        if declared.choices:
            keywords["choices"] = declared.choices
        elif flags:
            keywords["metavar"] = flags[0].lstrip("-").replace("-", "_").upper()
    keywords.update(overrides)
    parser.add_argument(*(flags or (declared.flag,)), **keywords)


def option_values(args: argparse.Namespace, options: Iterable[Option]) -> dict[str, Any]:
    """The parsed values of the options' flags, by option name."""
    return {declared.name: getattr(args, declared.name) for declared in options}


def add_scene_flags(parser: argparse.ArgumentParser, defaults: SynthConfig) -> None:
    """``--size`` and ``--max-disparity``: the size and largest disparity of the procedural
    scenes a training command renders, by default ``defaults``'s; ``scene_config`` reads them
    back."""
    parser.add_argument("--size", type=image_size, default=(defaults.height, defaults.width),
                        help="HEIGHTxWIDTH of the rendered scenes")
    parser.add_argument("--max-disparity", type=float, default=defaults.max_disparity,
                        help="largest disparity of the procedural scenes")


def scene_config(args: argparse.Namespace, defaults: SynthConfig) -> SynthConfig:
    """``defaults`` with the size and largest disparity of ``add_scene_flags``' flags."""
    height, width = args.size
    return replace(defaults, height=height, width=width, max_disparity=args.max_disparity)
