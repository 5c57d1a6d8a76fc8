"""Traditional stereo matchers and their confidence measures: OpenCV SGBM, AD and census block
matching, left-right and peak-ratio confidence. numpy and OpenCV only: the baseline the
network is scored against and the source of proxy labels for adaptation both use them."""

from .block import BlockMatch, block_matching, census_transform, cost_volume, winner_takes_all
from .confidence import left_right_confidence, peak_ratio_confidence
from .images import to_gray_uint8
from .sgbm import (SGBM_MODES, SgbmConfig, num_disparities_for, right_view_sgbm_disparity,
                   sgbm_disparity, unfiltered_sgbm_disparity)

__all__ = ["BlockMatch", "block_matching", "census_transform", "cost_volume",
           "winner_takes_all", "left_right_confidence", "peak_ratio_confidence",
           "to_gray_uint8", "SGBM_MODES", "SgbmConfig", "num_disparities_for",
           "right_view_sgbm_disparity", "sgbm_disparity", "unfiltered_sgbm_disparity"]
