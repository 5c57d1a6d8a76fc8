"""Evaluation: KITTI-style disparity metrics and the SGBM baseline."""

from .metrics import (
    MetricAccumulator,
    MetricCounts,
    aggregate_metrics,
    disparity_counts,
    disparity_metrics,
)
from .sgbm import SgbmConfig, num_disparities_for, sgbm_disparity

__all__ = [
    "MetricAccumulator",
    "MetricCounts",
    "SgbmConfig",
    "aggregate_metrics",
    "disparity_counts",
    "disparity_metrics",
    "num_disparities_for",
    "sgbm_disparity",
]
