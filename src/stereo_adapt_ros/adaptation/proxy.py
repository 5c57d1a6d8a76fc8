"""Proxy labels: a traditional stereo matcher's disparity and a confidence in it, for
confidence-guided regression (proxy-label adaptation, and MAD++ with the proxy as block loss).

The matchers and the confidence measures live in ``matching``; this module picks and combines
them. All run on the CPU, in numpy and OpenCV, which release the GIL: the adapter runs them in
a thread while the network predicts.

Matchers:

- ``sgbm``: OpenCV semi-global block matching (stereo_image_proc's algorithm), 5 x 5 window,
  no speckle filter and no built-in left-right check (the confidence below does that job);
  ``proxy_sgbm_mode`` picks OpenCV's variant: ``sgbm`` (5 directions), ``hh`` (8 directions, full
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
- ``learned``: a small CCNN-style network (``network.proxy_confidence``) that reads a 9 x 9
  neighbourhood of the disparity, the left-right disagreement, the uniqueness and the image,
  trained on rendered pairs where the proxy's correctness is known: the probability that the
  proxy is within 2 px of the truth.

Pixels without a match (the left border, where fewer disparities fit) have NaN disparity and
zero confidence.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..matching.block import block_matching
from ..matching.confidence import left_right_confidence, left_right_difference
from ..matching.images import to_gray_uint8
from ..matching.sgbm import SGBM_MODES, num_disparities_for, right_view_sgbm_disparity, \
    unfiltered_sgbm_disparity
from ..network.proxy_confidence import LR_CLIP, learned_confidence, learned_network

PROXY_METHODS = ("sgbm", "ad", "census")
CONFIDENCE_MEASURES = ("lr", "peak", "combined", "learned")


@dataclass(frozen=True, kw_only=True)
class ProxyConfig:
    """Which proxy runs and how. ``proxy_method``, ``proxy_confidence`` and ``proxy_sgbm_mode``
    are the adapter's options of the same names (``AdapterConfig``, which declares their one
    default, and ``AdapterConfig.proxy_config()`` gives them; a caller without an adapter says
    which it wants): the matcher (``sgbm``, ``ad`` or ``census``), the confidence measure
    (``lr``, ``peak``, ``combined`` or ``learned``) and OpenCV's SGBM variant.
    max_disparity: the search range in pixels of the images the proxy runs on (the adapter's
    ``proxy_max_disparity`` is in pixels of the input image; with ``proxy_scale`` below 1 the
    two differ). block_size: window side of ``ad``/``census`` aggregation (odd).
    lr_tolerance, peak_margin, sgbm_uniqueness: see the module docstring. learned_weights: the
    ``learned`` network's file (empty: the shipped one). proxy_pad: SGBM matches each view
    with its search range's width of replicated columns added where its matches run out of the
    other image (``_sgbm``)."""

    proxy_method: str
    proxy_confidence: str
    max_disparity: int
    proxy_sgbm_mode: str
    proxy_pad: bool
    block_size: int = 9
    lr_tolerance: float = 2.0
    peak_margin: float = 0.3
    sgbm_uniqueness: int = 10
    learned_weights: str = ""

    def validate(self) -> None:
        if self.proxy_method not in PROXY_METHODS:
            raise ValueError(f"proxy_method must be one of {PROXY_METHODS}, "
                             f"got {self.proxy_method!r}")
        if self.proxy_confidence not in CONFIDENCE_MEASURES:
            raise ValueError(f"proxy_confidence must be one of {CONFIDENCE_MEASURES}, "
                             f"got {self.proxy_confidence!r}")
        if not 1 <= self.max_disparity <= 1024:
            raise ValueError(f"proxy max_disparity must be in [1, 1024], got {self.max_disparity}")
        if self.block_size < 1 or self.block_size % 2 == 0:
            raise ValueError(f"proxy block_size must be odd and positive, got {self.block_size}")
        if not self.lr_tolerance > 0 or not 0 < self.peak_margin <= 1:
            raise ValueError("need lr_tolerance > 0 and 0 < peak_margin <= 1")
        if self.proxy_sgbm_mode not in SGBM_MODES:
            raise ValueError(f"proxy_sgbm_mode must be one of {tuple(SGBM_MODES)}, "
                             f"got {self.proxy_sgbm_mode!r}")
        if not 0 <= self.sgbm_uniqueness <= 100:
            raise ValueError(f"sgbm_uniqueness must be in [0, 100], got {self.sgbm_uniqueness}")


def check_confidence_available(config: ProxyConfig) -> None:
    """Raise ValueError with the reason when ``config``'s confidence cannot be computed: the
    ``learned`` network's file missing or unusable. Otherwise every proxy would fail, frame
    after frame, and leave every frame unadapted; checked once, before the first step."""
    if config.proxy_confidence == "learned":
        try:
            learned_network(config.learned_weights or None)
        except ValueError as error:
            raise ValueError(f"proxy_confidence learned cannot run: {error} (the lr, peak and "
                             "combined measures need no file)") from error


@dataclass
class ProxyLabels:
    """disparity: H x W float32, left view, pixels, NaN where there is no match.
    confidence: H x W float32 in [0, 1], 0 where disparity is NaN."""

    disparity: np.ndarray
    confidence: np.ndarray

    def density(self, tau: float) -> float:
        """Fraction of pixels a regression with threshold ``tau`` would use."""
        return float(np.mean(self.confidence > tau))


@dataclass
class MatcherMaps:
    """What a proxy matcher gives, before any confidence: the grey left image it read (uint8),
    the left and right views' disparities (float32, NaN where none), its uniqueness in [0, 1]
    and the search range it used (pixels)."""

    left_gray: np.ndarray
    disparity: np.ndarray
    right_disparity: np.ndarray
    unique: np.ndarray
    max_disparity: int


def matcher_maps(left: np.ndarray, right: np.ndarray, config: ProxyConfig) -> MatcherMaps:
    """Run ``config``'s matcher on a rectified pair (images as for ``to_gray_uint8``),
    computing the right view's disparity and the uniqueness only where its
    ``proxy_confidence`` needs them (the right view is the left disparity again otherwise)."""
    config.validate()
    if left.shape != right.shape:
        raise ValueError(f"left {left.shape} and right {right.shape} differ in shape")
    left_gray, right_gray = to_gray_uint8(left), to_gray_uint8(right)
    max_disparity = min(config.max_disparity, left_gray.shape[1] - 2)
    if max_disparity < 1:
        raise ValueError(f"images {left_gray.shape[1]} pixels wide are too narrow to match")
    if config.proxy_method == "sgbm":
        disparity, right_disparity, unique = _sgbm(left_gray, right_gray, max_disparity, config)
    else:
        match = block_matching(left_gray, right_gray, max_disparity, config.proxy_method,
                               config.block_size, config.peak_margin)
        disparity, right_disparity, unique = (match.disparity, match.right_disparity,
                                              match.peak_confidence)
    return MatcherMaps(left_gray, disparity, right_disparity, unique, max_disparity)


def proxy_features(left_gray: np.ndarray, disparity: np.ndarray, right_disparity: np.ndarray,
                   unique: np.ndarray, max_disparity: float) -> np.ndarray:
    """The learned confidence's input for one proxy map: 5 x H x W float32 (the disparity
    over the search range, whether there is one, the left-right disagreement clipped at
    ``LR_CLIP`` px over ``LR_CLIP`` (1 where it cannot be computed), the uniqueness, the grey
    level in [-0.5, 0.5]; ``network.proxy_confidence``).

    Args:
        left_gray: H x W uint8 grey left image (what the matcher read).
        disparity: H x W float32 left disparity, NaN where there is none.
        right_disparity: H x W float32 right-view disparity (NaN where none).
        unique: H x W float32 uniqueness in [0, 1].
        max_disparity: the matcher's search range, pixels.
    """
    finite = np.isfinite(disparity)
    difference = left_right_difference(disparity, right_disparity)
    lr = np.where(np.isfinite(difference), np.minimum(difference, LR_CLIP) / LR_CLIP, 1.0)
    return np.stack([np.where(finite, disparity, 0.0) / max_disparity,
                     finite.astype(np.float32), lr, np.nan_to_num(unique, nan=0.0),
                     left_gray / 255.0 - 0.5]).astype(np.float32)


def compute_proxy(left: np.ndarray, right: np.ndarray, config: ProxyConfig) -> ProxyLabels:
    """Proxy disparity and confidence of a rectified pair (images as for ``to_gray_uint8``)."""
    maps = matcher_maps(left, right, config)
    disparity = maps.disparity
    if config.proxy_confidence == "learned":
        features = proxy_features(maps.left_gray, disparity, maps.right_disparity, maps.unique,
                                  maps.max_disparity)
        confidence = learned_confidence(features, config.learned_weights or None)
    else:
        confidence = np.ones_like(disparity)
        if config.proxy_confidence in ("lr", "combined"):
            confidence *= left_right_confidence(disparity, maps.right_disparity,
                                                config.lr_tolerance)
        if config.proxy_confidence in ("peak", "combined"):
            confidence *= maps.unique
    confidence[~np.isfinite(disparity)] = 0.0
    return ProxyLabels(disparity.astype(np.float32), confidence.astype(np.float32))


def _sgbm(left: np.ndarray, right: np.ndarray, max_disparity: int, config: ProxyConfig):
    """(left disparity, right disparity, uniqueness 0 | 1): SGBM's uniqueness test runs only
    for a peak confidence, and the right view's disparity only for a left-right one.

    OpenCV's SGBM labels no pixel in its search range's width at the border where the view's
    matches run out of the other image (the left border of the left view): at 320 px with the
    default 128 px range, 40 % of the image. With ``config.proxy_pad`` each view is matched
    with that many replicated columns added there, so that a pixel whose match lies inside the
    other image gets a label; pixels whose match lies outside it match the replicated columns,
    which the confidence measures are left to reject."""
    uses_peak = config.proxy_confidence in ("peak", "combined", "learned")
    uniqueness = config.sgbm_uniqueness if uses_peak else 0
    width = left.shape[1]
    pad = num_disparities_for(max_disparity) if config.proxy_pad else 0

    def padded(image: np.ndarray, before: int, after: int) -> np.ndarray:
        if not pad:
            return image
        return cv2.copyMakeBorder(image, 0, 0, before, after, cv2.BORDER_REPLICATE)
    disparity = unfiltered_sgbm_disparity(padded(left, pad, 0), padded(right, pad, 0),
                                          max_disparity, uniqueness,
                                          config.proxy_sgbm_mode)[:, pad:]
    unique = np.isfinite(disparity).astype(np.float32)
    if config.proxy_confidence == "peak":
        return disparity, disparity, unique
    return disparity, right_view_sgbm_disparity(padded(left, 0, pad), padded(right, 0, pad),
                                                max_disparity,
                                                config.proxy_sgbm_mode)[:, :width], unique
