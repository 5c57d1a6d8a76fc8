"""Disparity metrics against hand-computed values."""

import math

import numpy as np
import pytest

from stereo_adapt_ros.evaluation import MetricAccumulator, disparity_counts

NAN = np.nan


def disparity_metrics(prediction, ground_truth, max_disparity=None, min_disparity=None):
    """One frame's metrics, as the runner and the training's validation compute them."""
    return disparity_counts(prediction, ground_truth, max_disparity, min_disparity).to_metrics()


# Ground truth: two unknown pixels (NaN and 0) and six valid ones, one of them at 100 px where
# the 5 % rule of D1 matters. Prediction: one valid pixel has no prediction (NaN).
GROUND_TRUTH = np.array([[1.0, 10.0, 100.0, NAN], [50.0, 2.0, 0.0, 5.0]], dtype=np.float32)
PREDICTION = np.array([[3.5, 14.0, 104.0, 3.0], [53.5, NAN, 7.0, 6.5]], dtype=np.float32)
# Errors on valid predicted pixels: 2.5, 4, 4, 3.5, 1.5.
# D1 outliers: 10 -> 14 (4 > 3 and 4 > 0.5) and 50 -> 53.5 (3.5 > 3 and 3.5 > 2.5);
# 100 -> 104 is not one (4 <= 5). Pixels with e > 1: all 5; e > 2: 4; e > 3: 3.
EXPECTED = {
    "EPE": 15.5 / 5,
    "D1_all": 100 * 3 / 6,
    "bad1": 100 * 6 / 6,
    "bad2": 100 * 5 / 6,
    "bad3": 100 * 4 / 6,
    "density": 100 * 5 / 6,
    "D1_valid": 100 * 2 / 5,
    "bad1_valid": 100 * 5 / 5,
    "bad2_valid": 100 * 4 / 5,
    "bad3_valid": 100 * 3 / 5,
    "valid_pixels": 6.0,
}


def test_every_key_matches_hand_computed_values():
    metrics = disparity_metrics(PREDICTION, GROUND_TRUTH)
    assert set(metrics) == set(EXPECTED)
    for key, value in EXPECTED.items():
        assert metrics[key] == pytest.approx(value), key


def test_max_disparity_excludes_large_ground_truth():
    metrics = disparity_metrics(PREDICTION, GROUND_TRUTH, max_disparity=60.0)
    # The 100 px pixel is gone: errors 2.5, 4, 3.5, 1.5 and one missing prediction.
    assert metrics["valid_pixels"] == 5.0
    assert metrics["EPE"] == pytest.approx(11.5 / 4)
    assert metrics["D1_all"] == pytest.approx(100 * 3 / 5)
    assert metrics["D1_valid"] == pytest.approx(100 * 2 / 4)


def test_min_disparity_scores_the_near_pixels_alone():
    metrics = disparity_metrics(PREDICTION, GROUND_TRUTH, min_disparity=10.0)
    # Left: 10 -> 14, 100 -> 104, 50 -> 53.5 (errors 4, 4, 3.5; D1 outliers 10 and 50).
    assert metrics["valid_pixels"] == 3.0
    assert metrics["EPE"] == pytest.approx(11.5 / 3)
    assert metrics["D1_all"] == pytest.approx(100 * 2 / 3)
    both = disparity_metrics(PREDICTION, GROUND_TRUTH, max_disparity=60.0, min_disparity=10.0)
    assert both["valid_pixels"] == 2.0 and both["D1_all"] == pytest.approx(100.0)
    accumulator = MetricAccumulator(min_disparity=10.0)
    accumulator.add(PREDICTION, GROUND_TRUTH)
    assert accumulator.summary()["D1_all"] == pytest.approx(100 * 2 / 3)


def test_d1_uses_five_percent_rule_at_large_disparity():
    ground_truth = np.array([[200.0, 200.0]], dtype=np.float32)
    prediction = np.array([[209.0, 211.0]], dtype=np.float32)  # limits: max(3, 10) px
    metrics = disparity_metrics(prediction, ground_truth)
    assert metrics["D1_all"] == pytest.approx(50.0)
    assert metrics["bad3"] == pytest.approx(100.0)


def test_nan_ground_truth_is_ignored_and_nan_prediction_counts_as_error():
    ground_truth = np.array([[NAN, 5.0, np.inf]], dtype=np.float32)
    prediction = np.array([[100.0, NAN, 1.0]], dtype=np.float32)
    metrics = disparity_metrics(prediction, ground_truth)
    assert metrics["valid_pixels"] == 1.0
    assert metrics["D1_all"] == 100.0 and metrics["bad1"] == 100.0
    assert metrics["density"] == 0.0
    assert math.isnan(metrics["EPE"]) and math.isnan(metrics["D1_valid"])


def test_empty_ground_truth_gives_nan_rates_without_raising():
    ground_truth = np.full((3, 4), NAN, dtype=np.float32)
    metrics = disparity_metrics(np.ones((3, 4), dtype=np.float32), ground_truth)
    assert metrics["valid_pixels"] == 0.0
    assert all(math.isnan(value) for key, value in metrics.items() if key != "valid_pixels")


def _random_frame(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, ...]:
    ground_truth = rng.uniform(0.5, 80.0, shape).astype(np.float32)
    ground_truth[rng.random(shape) < 0.2] = NAN
    prediction = (ground_truth + rng.normal(0.0, 4.0, shape)).astype(np.float32)
    prediction[rng.random(shape) < 0.15] = NAN
    return prediction, ground_truth


def test_aggregation_equals_metrics_over_concatenated_pixels():
    rng = np.random.default_rng(0)
    frames = [_random_frame(rng, shape) for shape in ((7, 9), (20, 3), (5, 31))]
    frames.append((np.ones((2, 2), np.float32), np.full((2, 2), NAN, np.float32)))
    pooled_prediction = np.concatenate([p.ravel() for p, _ in frames])[np.newaxis]
    pooled_truth = np.concatenate([g.ravel() for _, g in frames])[np.newaxis]
    expected = disparity_metrics(pooled_prediction, pooled_truth)

    accumulator = MetricAccumulator()
    for prediction, ground_truth in frames:
        accumulator.add(prediction, ground_truth)
    for key, value in expected.items():
        assert accumulator.summary()[key] == pytest.approx(value, rel=1e-9), key
    assert accumulator.frames == 4


def test_aggregation_of_nothing_is_empty():
    metrics = MetricAccumulator().summary()
    assert metrics["valid_pixels"] == 0.0 and math.isnan(metrics["D1_all"])


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        disparity_metrics(np.zeros((2, 3), np.float32), np.zeros((3, 2), np.float32))


def test_rejects_non_2d_and_integer_maps():
    with pytest.raises(ValueError, match="H x W"):
        disparity_metrics(np.zeros((2, 3, 1), np.float32), np.zeros((2, 3, 1), np.float32))
    with pytest.raises(ValueError, match="floating-point"):
        disparity_metrics(np.zeros((2, 3), np.int32), np.zeros((2, 3), np.float32))
