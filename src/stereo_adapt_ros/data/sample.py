"""The units the data code passes around: one rectified stereo pair (numpy, what dataset readers
yield, each through ``checked_sample``) and a batch of rendered pairs with exact ground truth
(torch, what training consumes)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class StereoSample:
    """One rectified stereo pair with optional ground truth.

    Attributes:
        left: left image, uint8 H x W x 3, RGB.
        right: right image, uint8 H x W x 3, RGB, same shape as ``left``.
        disparity: ground-truth disparity of the left image, float32 H x W, in pixels
            of the image; NaN where unknown. None when the source has no ground truth.
        name: identifier of the pair within its dataset (e.g. a file stem).
        stamp: acquisition time in seconds (bags and sequences); None when unknown.
    """

    left: np.ndarray
    right: np.ndarray
    disparity: np.ndarray | None
    name: str
    stamp: float | None = None


@dataclass
class StereoBatch:
    """left, right: B x 3 x H x W in [0, 1]; disparity: B x 1 x H x W, left view, pixels;
    visible: B x 1 x H x W bool, the left pixel is seen by the right camera too (not occluded,
    not out of view). Every pixel has an exact disparity."""

    left: torch.Tensor
    right: torch.Tensor
    disparity: torch.Tensor
    visible: torch.Tensor


def checked_sample(
    left: np.ndarray,
    right: np.ndarray,
    disparity: np.ndarray | None,
    name: str,
    stamp: float | None,
    source: str,
) -> StereoSample:
    """Build a sample after checking that images and ground truth agree in size.

    Args:
        source: where the data came from (files, bag and stamp), used in error messages.
    """
    if left.shape != right.shape:
        raise ValueError(
            f"{source}: left image shape {left.shape} differs from right image shape "
            f"{right.shape}"
        )
    if disparity is not None and disparity.shape != left.shape[:2]:
        raise ValueError(
            f"{source}: disparity shape {disparity.shape} differs from image size "
            f"{left.shape[:2]}"
        )
    return StereoSample(left=left, right=right, disparity=disparity, name=name, stamp=stamp)


def checked_index(index: int, length: int) -> int:
    """Turn a possibly negative index into 0..length-1, raising IndexError when out of range."""
    if not -length <= index < length:
        raise IndexError(f"sample index {index} out of range for {length} samples")
    return index % length
