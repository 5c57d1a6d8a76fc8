"""OpenCV semi-global block matching: the classical baseline the network is compared against,
and, without its filters, a source of proxy labels."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from types import MappingProxyType

import cv2
import numpy as np

#: OpenCV's SGBM variants by name.
SGBM_MODES = MappingProxyType(
    {
        "sgbm": cv2.STEREO_SGBM_MODE_SGBM,
        "hh": cv2.STEREO_SGBM_MODE_HH,
        "sgbm_3way": cv2.STEREO_SGBM_MODE_SGBM_3WAY,
        "hh4": cv2.STEREO_SGBM_MODE_HH4,
    }
)

# OpenCV returns disparity as fixed point with 4 fractional bits.
_FIXED_POINT_SCALE = 16.0


@dataclass(frozen=True)
class SgbmConfig:
    """Parameters of ``cv2.StereoSGBM``.

    Defaults follow ROS stereo_image_proc's disparity node (minimum disparity 0, 64
    disparities, uniqueness ratio 15, speckle size 100, speckle range 4, prefilter cap 31),
    except for the matching window and smoothness penalties: stereo_image_proc's 15 px window
    and fixed P1/P2 are tuned for block matching on grey images, whereas SGBM works best with a
    small window and penalties scaled with it, as OpenCV recommends (P1 = 8 cn bs^2,
    P2 = 32 cn bs^2 for cn channels and block size bs). The left-right check allows 1 px.

    Attributes:
        min_disparity: smallest disparity searched, pixels.
        num_disparities: number of disparities searched, a positive multiple of 16; the
            largest disparity found is ``min_disparity + num_disparities - 1``.
        block_size: odd matching window side, pixels.
        uniqueness_ratio: margin, in percent, by which the best cost must beat the second best.
        speckle_window_size: connected regions smaller than this many pixels are removed
            (0 disables).
        speckle_range: largest disparity variation, pixels, within one connected region.
        disp12_max_diff: largest left-right consistency difference, pixels (< 0 disables).
        pre_filter_cap: clipping of the prefiltered image derivatives.
        mode: "sgbm" (5 directions), "hh" (full 8 directions, more memory), "sgbm_3way"
            or "hh4".
        p1, p2: smoothness penalties; None derives them from the block size and channels.
    """

    min_disparity: int = 0
    num_disparities: int = 64
    block_size: int = 5
    uniqueness_ratio: int = 15
    speckle_window_size: int = 100
    speckle_range: int = 4
    disp12_max_diff: int = 1
    pre_filter_cap: int = 31
    mode: str = "sgbm"
    p1: int | None = None
    p2: int | None = None

    def __post_init__(self) -> None:
        if self.num_disparities <= 0 or self.num_disparities % 16:
            raise ValueError(
                f"num_disparities must be a positive multiple of 16, got {self.num_disparities}"
            )
        if self.block_size < 1 or self.block_size % 2 == 0:
            raise ValueError(f"block_size must be odd and positive, got {self.block_size}")
        if self.mode not in SGBM_MODES:
            raise ValueError(f"unknown SGBM mode {self.mode!r}; choose one of {list(SGBM_MODES)}")

    @classmethod
    def for_max_disparity(cls, max_disparity: float, **overrides: object) -> SgbmConfig:
        """A configuration whose search range covers ``[min_disparity, max_disparity]``.

        Args:
            max_disparity: largest disparity the rig is expected to see, pixels.
            overrides: any other field of ``SgbmConfig``.
        """
        config = cls(**overrides)  # type: ignore[arg-type]
        return replace(
            config, num_disparities=num_disparities_for(max_disparity, config.min_disparity)
        )


def num_disparities_for(max_disparity: float, min_disparity: int = 0) -> int:
    """The smallest multiple of 16 disparities that reaches ``max_disparity`` (pixels)."""
    needed = math.floor(max_disparity) - min_disparity + 1
    return max(16, 16 * math.ceil(needed / 16))


def sgbm_disparity(
    left_rgb: np.ndarray, right_rgb: np.ndarray, config: SgbmConfig | None = None
) -> np.ndarray:
    """Disparity of the left image by semi-global block matching.

    Args:
        left_rgb, right_rgb: rectified uint8 H x W x 3 RGB images (H x W grey also works).
        config: matcher parameters; None uses ``SgbmConfig()`` (64 disparities). Use
            ``SgbmConfig.for_max_disparity`` to size the search range from the rig (the
            largest disparity the camera and the nearest range expected give; never from
            ground truth).

    Returns:
        float32 H x W disparity in pixels of the input, NaN where the matcher found none
        (left border, occlusions, failed uniqueness or left-right checks, speckles).
    """
    config = config or SgbmConfig()
    if left_rgb.shape != right_rgb.shape:
        raise ValueError(f"left shape {left_rgb.shape} differs from right shape {right_rgb.shape}")
    if left_rgb.dtype != np.uint8 or left_rgb.ndim not in (2, 3):
        raise ValueError(
            f"expected uint8 H x W x 3 images, got {left_rgb.dtype} with shape {left_rgb.shape}"
        )
    if config.min_disparity + config.num_disparities >= left_rgb.shape[1]:
        raise ValueError(f"SGBM searches {config.num_disparities} disparities from "
                         f"{config.min_disparity}, which needs images wider than that; "
                         f"got width {left_rgb.shape[1]}")
    channels = 1 if left_rgb.ndim == 2 else left_rgb.shape[2]
    window_area = config.block_size**2
    matcher = cv2.StereoSGBM.create(
        minDisparity=config.min_disparity,
        numDisparities=config.num_disparities,
        blockSize=config.block_size,
        P1=config.p1 if config.p1 is not None else 8 * channels * window_area,
        P2=config.p2 if config.p2 is not None else 32 * channels * window_area,
        disp12MaxDiff=config.disp12_max_diff,
        preFilterCap=config.pre_filter_cap,
        uniquenessRatio=config.uniqueness_ratio,
        speckleWindowSize=config.speckle_window_size,
        speckleRange=config.speckle_range,
        mode=SGBM_MODES[config.mode],
    )
    fixed_point = matcher.compute(left_rgb, right_rgb)
    disparity = fixed_point.astype(np.float32) / np.float32(_FIXED_POINT_SCALE)
    # Invalid pixels come back as (min_disparity - 1) * 16.
    disparity[fixed_point < config.min_disparity * _FIXED_POINT_SCALE] = np.nan
    return disparity


def unfiltered_sgbm_disparity(left: np.ndarray, right: np.ndarray, max_disparity: int,
                              uniqueness_ratio: int = 0, mode: str = "sgbm") -> np.ndarray:
    """The baseline's SGBM (5 x 5 window, penalties from it) without its filters: no speckle
    removal and no left-right check, for a caller that measures confidence itself.

    Args:
        left, right: rectified uint8 H x W grey (or H x W x 3 RGB) images.
        max_disparity: largest disparity searched, pixels; the search covers the multiple of
            16 disparities above it, cut to fit the image width.
        uniqueness_ratio: SGBM's uniqueness margin, percent (0: no uniqueness test).
        mode: one of ``SGBM_MODES``.

    Returns:
        float32 H x W disparity in pixels, NaN where the matcher found none.
    """
    width = left.shape[1]
    num = 16 * math.ceil((max_disparity + 1) / 16)
    if num >= width:
        num = 16 * ((width - 1) // 16)
    if num < 16:
        raise ValueError(f"SGBM needs images wider than 16 pixels, got {width}")
    return sgbm_disparity(left, right, SgbmConfig(
        num_disparities=num, uniqueness_ratio=uniqueness_ratio, speckle_window_size=0,
        speckle_range=0, disp12_max_diff=-1, mode=mode))


def right_view_sgbm_disparity(left: np.ndarray, right: np.ndarray, max_disparity: int,
                              mode: str = "sgbm") -> np.ndarray:
    """The right image's disparity (right pixel x matches left pixel x + d), by matching the
    mirrored pair with ``unfiltered_sgbm_disparity``: mirrored, the right image is the
    reference. Arguments and result as there."""
    mirrored = unfiltered_sgbm_disparity(np.ascontiguousarray(right[:, ::-1]),
                                         np.ascontiguousarray(left[:, ::-1]), max_disparity,
                                         0, mode)
    return np.ascontiguousarray(mirrored[:, ::-1])
