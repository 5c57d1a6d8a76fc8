"""The unit every dataset reader yields: one rectified stereo pair."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
