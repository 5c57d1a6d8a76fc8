"""Traditional stereo matchers and their confidence measures: OpenCV SGBM, AD and census block
matching, left-right and peak-ratio confidence. numpy and OpenCV only: the baseline the
network is scored against and the source of proxy labels for adaptation both use them."""

from .block import BlockMatch, block_matching, census_transform
from .confidence import left_right_confidence, peak_ratio_confidence
from .sgbm import SgbmConfig, num_disparities_for, sgbm_disparity

__all__ = ["BlockMatch", "block_matching", "census_transform", "left_right_confidence",
           "peak_ratio_confidence", "SgbmConfig", "num_disparities_for", "sgbm_disparity"]
