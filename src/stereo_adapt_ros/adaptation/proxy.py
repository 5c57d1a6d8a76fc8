"""Proxy labels: a traditional stereo matcher's disparity and a confidence in it, for
confidence-guided regression (proxy-label adaptation, and MAD++ with the proxy as block loss).

Matchers (all on CPU, OpenCV and numpy, which release the GIL: the adapter runs them in a
thread while the network predicts):

- ``sgbm``: OpenCV semi-global block matching (stereo_image_proc's algorithm), 5 x 5 window,
  no speckle filter and no built-in left-right check (the confidence below does that job);
  ``sgbm_mode`` picks OpenCV's variant: ``sgbm`` (5 directions), ``hh`` (8 directions, full
  DP), ``sgbm_3way`` (faster) or ``hh4``.
- ``ad``: local block matching, absolute differences of grey levels averaged over a square window,
  winner-takes-all with a parabola fit for sub-pixel disparity.
- ``census``: the same with the Hamming distance of 5 x 5 census transforms (robust to the
  gain and bias differences between two cameras).

Confidence measures, each in [0, 1]:

- ``lr`` (left-right consistency): the right view's disparity is computed too (from the same
  cost volume for ``ad``/``census``, by matching the mirrored pair for ``sgbm``); a left pixel
  x with disparity d should land on a right pixel x - d whose own disparity is d again.
  Confidence ``max(0, 1 - |d_left(x) - d_right(x - d)| / lr_tolerance)``: 1 when they agree,
  0 from ``lr_tolerance`` pixels of disagreement on.
- ``peak`` (uniqueness): for ``ad``/``census`` the peak-ratio margin of the matching cost,
  ``min(1, (c2 - c1) / (peak_margin * c2))`` with c1 the best cost and c2 the best cost outside
  the best disparity's +-1 neighbourhood, so 1 when the runner-up costs at least
  ``1 / (1 - peak_margin)`` times the winner; for ``sgbm`` (whose costs OpenCV does not expose)
  1 where SGBM's own uniqueness test (ratio ``sgbm_uniqueness`` percent) passes, else 0.
- ``combined``: the product of the two (a pixel must be both consistent and unambiguous).

Pixels without a match (the left border, where fewer disparities fit) have NaN disparity and
zero confidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from ..evaluation.sgbm import SGBM_MODES, SgbmConfig, sgbm_disparity

PROXY_METHODS = ("sgbm", "ad", "census")
CONFIDENCE_MEASURES = ("lr", "peak", "combined")
_CENSUS_RADIUS = 2  # 5 x 5 window: 24 bits


@dataclass(frozen=True)
class ProxyConfig:
    """method: ``sgbm``, ``ad`` or ``census``. confidence: ``lr``, ``peak`` or ``combined``.
    max_disparity: search range in pixels of the images the proxy runs on. block_size: window
    side of ``ad``/``census`` aggregation (odd). lr_tolerance, peak_margin, sgbm_uniqueness:
    see the module docstring."""

    method: str = "sgbm"
    confidence: str = "combined"
    max_disparity: int = 128
    block_size: int = 9
    lr_tolerance: float = 2.0
    peak_margin: float = 0.3
    sgbm_uniqueness: int = 10
    sgbm_mode: str = "sgbm"

    def validate(self) -> None:
        if self.method not in PROXY_METHODS:
            raise ValueError(f"proxy method must be one of {PROXY_METHODS}, got {self.method!r}")
        if self.confidence not in CONFIDENCE_MEASURES:
            raise ValueError(f"proxy confidence must be one of {CONFIDENCE_MEASURES}, "
                             f"got {self.confidence!r}")
        if not 1 <= self.max_disparity <= 1024:
            raise ValueError(f"proxy max_disparity must be in [1, 1024], got {self.max_disparity}")
        if self.block_size < 1 or self.block_size % 2 == 0:
            raise ValueError(f"proxy block_size must be odd and positive, got {self.block_size}")
        if not self.lr_tolerance > 0 or not 0 < self.peak_margin <= 1:
            raise ValueError("need lr_tolerance > 0 and 0 < peak_margin <= 1")
        if self.sgbm_mode not in SGBM_MODES:
            raise ValueError(f"sgbm_mode must be one of {tuple(SGBM_MODES)}, "
                             f"got {self.sgbm_mode!r}")
        if not 0 <= self.sgbm_uniqueness <= 100:
            raise ValueError(f"sgbm_uniqueness must be in [0, 100], got {self.sgbm_uniqueness}")


@dataclass
class ProxyLabels:
    """disparity: H x W float32, left view, pixels, NaN where there is no match.
    confidence: H x W float32 in [0, 1], 0 where disparity is NaN."""

    disparity: np.ndarray
    confidence: np.ndarray

    def density(self, tau: float) -> float:
        """Fraction of pixels a regression with threshold ``tau`` would use."""
        return float(np.mean(self.confidence > tau))


def to_gray_uint8(image: np.ndarray) -> np.ndarray:
    """H x W (x 3) uint8, uint16 or float in [0, 1] image as H x W uint8 grey."""
    if image.dtype == np.uint16:
        image = (image / 257.0 + 0.5).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = (np.clip(np.nan_to_num(image, nan=0.0), 0, 1) * 255 + 0.5).astype(np.uint8)
    if image.ndim == 3:
        image = cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2GRAY) \
            if image.shape[2] >= 3 else image[..., 0]
    return np.ascontiguousarray(image)


def compute_proxy(left: np.ndarray, right: np.ndarray, config: ProxyConfig = ProxyConfig()
                  ) -> ProxyLabels:
    """Proxy disparity and confidence of a rectified pair (images as for ``to_gray_uint8``)."""
    config.validate()
    if left.shape != right.shape:
        raise ValueError(f"left {left.shape} and right {right.shape} differ in shape")
    left_gray, right_gray = to_gray_uint8(left), to_gray_uint8(right)
    max_disparity = min(config.max_disparity, left_gray.shape[1] - 2)
    if max_disparity < 1:
        raise ValueError(f"images {left_gray.shape[1]} pixels wide are too narrow to match")
    if config.method == "sgbm":
        disparity, right_disparity, unique = _sgbm(left_gray, right_gray, max_disparity, config)
    else:
        disparity, right_disparity, unique = _block_matching(left_gray, right_gray,
                                                             max_disparity, config)
    confidence = np.ones_like(disparity)
    if config.confidence in ("lr", "combined"):
        confidence *= _left_right_confidence(disparity, right_disparity, config.lr_tolerance)
    if config.confidence in ("peak", "combined"):
        confidence *= unique
    confidence[~np.isfinite(disparity)] = 0.0
    return ProxyLabels(disparity.astype(np.float32), confidence.astype(np.float32))


def _left_right_confidence(left: np.ndarray, right: np.ndarray, tolerance: float) -> np.ndarray:
    height, width = left.shape
    columns = np.arange(width)[None, :] - np.nan_to_num(left, nan=0.0)
    target = np.clip(np.round(columns).astype(np.int64), 0, width - 1)
    back = np.take_along_axis(right, target, axis=1)
    difference = np.abs(left - back)
    confidence = np.clip(1.0 - difference / tolerance, 0.0, 1.0)
    inside = (columns >= 0) & np.isfinite(difference)
    return np.where(inside, confidence, 0.0).astype(np.float32)


def _sgbm_disparity(left: np.ndarray, right: np.ndarray, num_disparities: int,
                    uniqueness: int, mode: str) -> np.ndarray:
    """The baseline's SGBM (5 x 5 window, penalties from it) without its filters: no speckle
    removal and no left-right check, which the confidence measures replace."""
    return sgbm_disparity(left, right, SgbmConfig(
        num_disparities=num_disparities, uniqueness_ratio=uniqueness, speckle_window_size=0,
        speckle_range=0, disp12_max_diff=-1, mode=mode))


def _sgbm(left: np.ndarray, right: np.ndarray, max_disparity: int, config: ProxyConfig):
    width = left.shape[1]
    num = 16 * math.ceil((max_disparity + 1) / 16)
    if num >= width:
        num = 16 * ((width - 1) // 16)
    if num < 16:
        raise ValueError(f"SGBM needs images wider than 16 pixels, got {width}")
    uses_peak = config.confidence in ("peak", "combined")
    uniqueness = config.sgbm_uniqueness if uses_peak else 0
    disparity = _sgbm_disparity(left, right, num, uniqueness, config.sgbm_mode)
    unique = np.isfinite(disparity).astype(np.float32)
    if uses_peak and config.confidence == "peak":
        return disparity, disparity, unique
    # The right view's disparity: match the mirrored pair (right becomes the reference).
    right_disparity = _sgbm_disparity(np.ascontiguousarray(right[:, ::-1]),
                                      np.ascontiguousarray(left[:, ::-1]), num, 0,
                                      config.sgbm_mode)[:, ::-1]
    return disparity, np.ascontiguousarray(right_disparity), unique


def census_transform(image: np.ndarray, radius: int = _CENSUS_RADIUS) -> np.ndarray:
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


def _block_matching(left: np.ndarray, right: np.ndarray, max_disparity: int,
                    config: ProxyConfig):
    """Winner-takes-all over a box-filtered AD or census cost volume (D x H x W)."""
    height, width = left.shape
    count = max_disparity + 1
    if config.method == "census":
        left_f, right_f = census_transform(left), census_transform(right)
    else:
        left_f, right_f = left.astype(np.float32), right.astype(np.float32)
    window = (config.block_size, config.block_size)
    worst = np.float32(1e6)
    volume = np.full((count, height, width), worst, dtype=np.float32)
    for d in range(count):
        if config.method == "census":
            cost = np.bitwise_count(left_f[:, d:] ^ right_f[:, :width - d]).astype(np.float32)
        else:
            cost = np.abs(left_f[:, d:] - right_f[:, :width - d])
        volume[d, :, d:] = cv2.boxFilter(cost, -1, window, borderType=cv2.BORDER_REPLICATE)
    # Right view: pixel xr at disparity d matches left pixel xr + d.
    right_volume = np.full_like(volume, worst)
    for d in range(count):
        right_volume[d, :, :width - d] = volume[d, :, d:]
    right_disparity = _winner(right_volume)
    del right_volume
    disparity = _winner(volume)
    best = np.argmin(volume, axis=0)
    c1 = np.take_along_axis(volume, best[None], axis=0)[0]
    rows, cols = np.indices(best.shape)
    for offset in (-1, 0, 1):  # exclude the winner's neighbourhood: the runner-up is elsewhere
        volume[np.clip(best + offset, 0, count - 1), rows, cols] = np.inf
    c2 = volume.min(axis=0)
    margin = (c2 - c1) / np.maximum(config.peak_margin * c2, 1e-6)
    unique = np.where(np.isfinite(c2), np.clip(margin, 0.0, 1.0), 0.0).astype(np.float32)
    valid = c1 < worst
    disparity[~valid] = np.nan
    unique[~valid] = 0.0
    return disparity, right_disparity, unique


def _winner(volume: np.ndarray) -> np.ndarray:
    """Winner-takes-all disparity with a parabola fit through the best cost and its neighbours."""
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
