"""Confidence of a traditional matcher's disparity, each in [0, 1] per pixel.

- Left-right consistency: a left pixel x with disparity d should land on a right pixel x - d
  whose own disparity is d again.
- Peak ratio (uniqueness): the best matching cost should clearly beat the best cost elsewhere.
"""

from __future__ import annotations

import numpy as np


def left_right_difference(disparity: np.ndarray, right_disparity: np.ndarray) -> np.ndarray:
    """``|d_left(x) - d_right(x - d_left(x))|``: H x W float32 pixels, NaN where x - d falls
    outside the image or either disparity is NaN (arguments as ``left_right_confidence``)."""
    width = disparity.shape[1]
    columns = np.arange(width)[None, :] - np.nan_to_num(disparity, nan=0.0)
    target = np.clip(np.round(columns).astype(np.int64), 0, width - 1)
    back = np.take_along_axis(right_disparity, target, axis=1)
    return np.where(columns >= 0, np.abs(disparity - back), np.nan).astype(np.float32)


def left_right_confidence(disparity: np.ndarray, right_disparity: np.ndarray,
                          tolerance: float) -> np.ndarray:
    """``max(0, 1 - |d_left(x) - d_right(x - d_left(x))| / tolerance)``, 0 where x - d falls
    outside the image or either disparity is NaN.

    Args:
        disparity: H x W float32 disparity of the left view, pixels (NaN: none).
        right_disparity: H x W float32 disparity of the right view (right pixel x matches
            left pixel x + d), pixels (NaN: none).
        tolerance: disagreement, pixels, from which the confidence is 0.

    Returns:
        H x W float32 confidence of the left view's disparity.
    """
    difference = left_right_difference(disparity, right_disparity)
    confidence = np.clip(1.0 - difference / tolerance, 0.0, 1.0)
    return np.where(np.isfinite(difference), confidence, 0.0).astype(np.float32)


def peak_ratio_confidence(volume: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """``min(1, (c2 - c1) / (margin * c2))`` with c1 the best cost and c2 the best cost outside
    the best disparity's +-1 neighbourhood: 1 when the runner-up costs at least
    ``1 / (1 - margin)`` times the winner, 0 where there is no runner-up.

    Args:
        volume: D x H x W float32 matching costs (lower is better). Overwritten: the search for
            the runner-up masks the winner's neighbourhood in place, as the volume is large
            and its caller is done with it.
        margin: in (0, 1].

    Returns:
        (H x W float32 confidence, H x W best cost c1).
    """
    count = volume.shape[0]
    best = np.argmin(volume, axis=0)
    best_cost = np.take_along_axis(volume, best[None], axis=0)[0]
    rows, cols = np.indices(best.shape)
    for offset in (-1, 0, 1):
        volume[np.clip(best + offset, 0, count - 1), rows, cols] = np.inf
    runner_up = volume.min(axis=0)
    ratio = (runner_up - best_cost) / np.maximum(margin * runner_up, 1e-6)
    confidence = np.where(np.isfinite(runner_up), np.clip(ratio, 0.0, 1.0), 0.0)
    return confidence.astype(np.float32), best_cost
