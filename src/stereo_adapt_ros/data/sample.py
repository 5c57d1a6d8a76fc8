"""The units the data code passes around: one rectified stereo pair (numpy, what dataset readers
yield) and a batch of rendered pairs with exact ground truth (torch, what training consumes)."""

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
