"""Disparity error metrics with the KITTI definitions, per frame and pooled over frames.

A ground-truth pixel is valid when it is finite and positive (and at most ``max_disparity``
when one is given). With e = |prediction - ground truth| in pixels:

- ``EPE``: mean e over valid pixels that have a finite prediction;
- ``D1_all``: % of valid pixels with e > 3 px and e > 5 % of the ground truth;
- ``bad1``, ``bad2``, ``bad3``: % of valid pixels with e > 1, 2, 3 px;
- ``density``: % of valid pixels that have a finite prediction;
- ``D1_valid``, ``bad1_valid``, ``bad2_valid``, ``bad3_valid``: the same rates over valid
  pixels that have a finite prediction;
- ``valid_pixels``: the number of valid ground-truth pixels.

In ``D1_all`` and ``badN`` a valid pixel without a finite prediction counts as an error, so
a sparse method cannot look good by abstaining. Rates are percentages in 0-100; they are NaN
when their denominator is zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BAD_THRESHOLDS: tuple[int, ...] = (1, 2, 3)
D1_ABSOLUTE_PX = 3.0
D1_RELATIVE = 0.05


@dataclass(frozen=True)
class MetricCounts:
    """Pixel counts from which every metric follows; adding counts pools frames exactly.

    Attributes:
        valid_pixels: valid ground-truth pixels.
        predicted_pixels: valid pixels with a finite prediction.
        error_sum: sum of e over the predicted pixels, in pixels.
        d1_outliers: predicted pixels that are D1 outliers.
        bad_outliers: predicted pixels with e above each of ``BAD_THRESHOLDS``.
    """

    valid_pixels: int = 0
    predicted_pixels: int = 0
    error_sum: float = 0.0
    d1_outliers: int = 0
    bad_outliers: tuple[int, ...] = (0,) * len(BAD_THRESHOLDS)

    def __add__(self, other: MetricCounts) -> MetricCounts:
        return MetricCounts(
            valid_pixels=self.valid_pixels + other.valid_pixels,
            predicted_pixels=self.predicted_pixels + other.predicted_pixels,
            error_sum=self.error_sum + other.error_sum,
            d1_outliers=self.d1_outliers + other.d1_outliers,
            bad_outliers=tuple(a + b for a, b in zip(self.bad_outliers, other.bad_outliers)),
        )

    def to_metrics(self) -> dict[str, float]:
        """The metrics described in the module docstring (of one frame:
        ``disparity_counts(...).to_metrics()``); every rate is NaN and ``valid_pixels`` 0 when
        no ground-truth pixel is valid."""
        unpredicted = self.valid_pixels - self.predicted_pixels
        metrics = {
            "EPE": _ratio(self.error_sum, self.predicted_pixels, 1.0),
            "D1_all": _ratio(self.d1_outliers + unpredicted, self.valid_pixels),
        }
        for threshold, outliers in zip(BAD_THRESHOLDS, self.bad_outliers):
            metrics[f"bad{threshold}"] = _ratio(outliers + unpredicted, self.valid_pixels)
        metrics["density"] = _ratio(self.predicted_pixels, self.valid_pixels)
        metrics["D1_valid"] = _ratio(self.d1_outliers, self.predicted_pixels)
        for threshold, outliers in zip(BAD_THRESHOLDS, self.bad_outliers):
            metrics[f"bad{threshold}_valid"] = _ratio(outliers, self.predicted_pixels)
        metrics["valid_pixels"] = float(self.valid_pixels)
        return metrics


def _ratio(numerator: float, denominator: int, scale: float = 100.0) -> float:
    """``scale * numerator / denominator``, or NaN when there is nothing to divide by."""
    return scale * numerator / denominator if denominator else float("nan")


def _check_disparity_pair(prediction: np.ndarray, ground_truth: np.ndarray) -> None:
    """Raise a ValueError unless both arrays are floating-point, 2-D and of the same shape."""
    if prediction.shape != ground_truth.shape:
        raise ValueError(
            f"prediction shape {prediction.shape} differs from ground truth shape "
            f"{ground_truth.shape}"
        )
    if prediction.ndim != 2:
        raise ValueError(f"disparity maps must be H x W, got shape {prediction.shape}")
    for name, array in (("prediction", prediction), ("ground truth", ground_truth)):
        if not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"{name} must be a floating-point array, got {array.dtype}")


def disparity_counts(
    prediction: np.ndarray, ground_truth: np.ndarray, max_disparity: float | None = None,
    min_disparity: float | None = None,
) -> MetricCounts:
    """Count the pixels behind the metrics of one frame.

    Args:
        prediction: float H x W predicted disparity in pixels; non-finite means no prediction.
        ground_truth: float H x W ground-truth disparity in pixels; non-finite or <= 0 means
            unknown.
        max_disparity: when given, ground truth above it is ignored.
        min_disparity: when given, ground truth below it is ignored (scores the near objects
            alone, e.g. a chessboard held in front of a far background).

    Raises:
        ValueError: when the shapes differ, the maps are not 2-D, or not floating-point.
    """
    prediction = np.asarray(prediction)
    ground_truth = np.asarray(ground_truth)
    _check_disparity_pair(prediction, ground_truth)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(ground_truth) & (ground_truth > 0)
        if max_disparity is not None:
            valid &= ground_truth <= max_disparity
        if min_disparity is not None:
            valid &= ground_truth >= min_disparity
    predicted = valid & np.isfinite(prediction)
    truth = ground_truth[predicted].astype(np.float64)
    error = np.abs(prediction[predicted].astype(np.float64) - truth)
    d1 = (error > D1_ABSOLUTE_PX) & (error > D1_RELATIVE * truth)
    return MetricCounts(
        valid_pixels=int(valid.sum()),
        predicted_pixels=int(predicted.sum()),
        error_sum=float(error.sum()),
        d1_outliers=int(d1.sum()),
        bad_outliers=tuple(int((error > threshold).sum()) for threshold in BAD_THRESHOLDS),
    )


class MetricAccumulator:
    """Accumulates exact pixel counts over frames; ``summary()`` gives the pooled metrics.

    Args:
        max_disparity: ground truth above it, in pixels, is ignored in every frame.
        min_disparity: ground truth below it, in pixels, is ignored in every frame.
    """

    def __init__(self, max_disparity: float | None = None,
                 min_disparity: float | None = None) -> None:
        self.max_disparity, self.min_disparity = max_disparity, min_disparity
        self.counts = MetricCounts()
        self.frames = 0

    def add(self, prediction: np.ndarray, ground_truth: np.ndarray) -> dict[str, float]:
        """Add one frame (float H x W maps in pixels); returns that frame's metrics."""
        counts = disparity_counts(prediction, ground_truth, self.max_disparity,
                                  self.min_disparity)
        self.add_counts(counts)
        return counts.to_metrics()

    def add_counts(self, counts: MetricCounts) -> None:
        """Add one frame's counts (from ``disparity_counts`` with the same range)."""
        self.counts = self.counts + counts
        self.frames += 1

    def summary(self) -> dict[str, float]:
        """Metrics over all pixels of all frames added so far."""
        return self.counts.to_metrics()
