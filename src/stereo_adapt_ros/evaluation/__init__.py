"""Evaluation: KITTI-style disparity metrics, the sequence runner that scores a method (MADNet
adapting online, the SGBM baseline of ``matching``, proxy labels) and the step benchmark."""

from .metrics import (
    MetricAccumulator,
    MetricCounts,
    disparity_counts,
)

__all__ = [
    "MetricAccumulator",
    "MetricCounts",
    "disparity_counts",
]
