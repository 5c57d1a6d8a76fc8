"""Argument types shared by the subcommands."""

from __future__ import annotations

import argparse


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
