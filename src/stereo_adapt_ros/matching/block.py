"""Local block matching: absolute differences (AD) of grey levels, or Hamming distances of
census transforms (robust to gain and bias differences between two cameras), averaged over a
square window; winner-takes-all with a parabola fit for sub-pixel disparity. All numpy and
OpenCV on the CPU (they release the GIL, so the matcher can run in a thread)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .confidence import peak_ratio_confidence

#: 5 x 5 window: 24 bits.
CENSUS_RADIUS = 2
#: The cost of disparities whose match falls outside the other image.
NO_MATCH_COST = np.float32(1e6)


@dataclass
class BlockMatch:
    """disparity: H x W float32, left view, pixels, NaN where there is no match.
    right_disparity: H x W float32, right view (right pixel x matches left pixel x + d).
    peak_confidence: H x W float32 in [0, 1] (``peak_ratio_confidence``), 0 where disparity
    is NaN."""

    disparity: np.ndarray
    right_disparity: np.ndarray
    peak_confidence: np.ndarray


def census_transform(image: np.ndarray, radius: int = CENSUS_RADIUS) -> np.ndarray:
    """H x W uint32 census codes: one bit per neighbour in a (2r+1)^2 window (centre excluded),
    set where the neighbour is darker than the centre. Borders are replicated."""
    padded = np.pad(image, radius, mode="edge")
    height, width = image.shape
    codes = np.zeros((height, width), dtype=np.uint32)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy == 0 and dx == 0:
                continue
            neighbour = padded[radius + dy:radius + dy + height, radius + dx:radius + dx + width]
            codes = (codes << np.uint32(1)) | (neighbour < image).astype(np.uint32)
    return codes


def cost_volume(left: np.ndarray, right: np.ndarray, max_disparity: int, cost: str,
                block_size: int) -> np.ndarray:
    """(max_disparity + 1) x H x W float32 costs of matching left pixel x to right pixel x - d,
    box-filtered over ``block_size`` x ``block_size`` (odd); ``NO_MATCH_COST`` where x - d < 0.

    Args:
        left, right: rectified H x W uint8 grey images.
        cost: ``ad`` or ``census``.
    """
    height, width = left.shape
    count = max_disparity + 1
    if cost == "census":
        left_f, right_f = census_transform(left), census_transform(right)
    else:
        left_f, right_f = left.astype(np.float32), right.astype(np.float32)
    window = (block_size, block_size)
    volume = np.full((count, height, width), NO_MATCH_COST, dtype=np.float32)
    for d in range(count):
        if cost == "census":
            costs = np.bitwise_count(left_f[:, d:] ^ right_f[:, :width - d]).astype(np.float32)
        else:
            costs = np.abs(left_f[:, d:] - right_f[:, :width - d])
        volume[d, :, d:] = cv2.boxFilter(costs, -1, window, borderType=cv2.BORDER_REPLICATE)
    return volume


def right_view_volume(volume: np.ndarray) -> np.ndarray:
    """The same costs indexed by the right pixel: right pixel x at disparity d matches left
    pixel x + d (``NO_MATCH_COST`` where that is outside the image)."""
    width = volume.shape[2]
    right = np.full_like(volume, NO_MATCH_COST)
    for d in range(volume.shape[0]):
        right[d, :, :width - d] = volume[d, :, d:]
    return right


def winner_takes_all(volume: np.ndarray) -> np.ndarray:
    """H x W float32 disparity of the lowest cost, refined by a parabola through it and its
    neighbours (by at most half a pixel; none at the ends of the range)."""
    count = volume.shape[0]
    best = np.argmin(volume, axis=0)
    inner = np.clip(best, 1, count - 2)
    before = np.take_along_axis(volume, (inner - 1)[None], axis=0)[0]
    centre = np.take_along_axis(volume, inner[None], axis=0)[0]
    after = np.take_along_axis(volume, (inner + 1)[None], axis=0)[0]
    curvature = before - 2 * centre + after
    offset = np.where(curvature > 0, (before - after) / (2 * np.maximum(curvature, 1e-6)), 0.0)
    at_end = (best == 0) | (best == count - 1)
    return np.where(at_end, best, best + np.clip(offset, -0.5, 0.5)).astype(np.float32)


def block_matching(left: np.ndarray, right: np.ndarray, max_disparity: int, cost: str = "ad",
                   block_size: int = 9, peak_margin: float = 0.3) -> BlockMatch:
    """Both views' winner-takes-all disparities from one cost volume, and the left view's
    peak-ratio confidence (``peak_margin`` as ``peak_ratio_confidence``'s margin).

    Args:
        left, right: rectified H x W uint8 grey images.
        max_disparity: largest disparity searched, pixels (less than the width).
        cost, block_size: as ``cost_volume``.
    """
    volume = cost_volume(left, right, max_disparity, cost, block_size)
    right_disparity = winner_takes_all(right_view_volume(volume))
    disparity = winner_takes_all(volume)
    peak, best_cost = peak_ratio_confidence(volume, peak_margin)
    valid = best_cost < NO_MATCH_COST
    disparity[~valid] = np.nan
    peak[~valid] = 0.0
    return BlockMatch(disparity, right_disparity, peak)
