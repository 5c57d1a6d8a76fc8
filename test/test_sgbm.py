"""SGBM baseline on the real Middlebury Motorcycle pair."""

import cv2
import numpy as np
import pytest
import skimage.data

from stereo_adapt_ros.evaluation import disparity_counts
from stereo_adapt_ros.matching import SgbmConfig, num_disparities_for, sgbm_disparity


@pytest.fixture(scope="module")
def half_resolution_pair():
    left, right, disparity = skimage.data.stereo_motorcycle()
    size = (left.shape[1] // 2, left.shape[0] // 2)
    ground_truth = cv2.resize(
        np.where(np.isfinite(disparity), disparity, np.nan).astype(np.float32),
        size,
        interpolation=cv2.INTER_NEAREST,
    ) * np.float32(size[0] / left.shape[1])
    return (
        cv2.resize(left, size, interpolation=cv2.INTER_AREA),
        cv2.resize(right, size, interpolation=cv2.INTER_AREA),
        ground_truth,
    )


def test_sgbm_is_accurate_on_motorcycle_at_half_resolution(half_resolution_pair):
    left, right, ground_truth = half_resolution_pair
    config = SgbmConfig.for_max_disparity(float(np.nanmax(ground_truth)))
    assert config.num_disparities == 32
    prediction = sgbm_disparity(left, right, config)
    metrics = disparity_counts(prediction, ground_truth).to_metrics()
    # Measured with OpenCV 5.0: D1_valid 5.9 %, density 88 %, D1_all 17 %, EPE 0.81 px.
    assert metrics["D1_valid"] < 10.0
    assert metrics["density"] > 75.0
    assert metrics["D1_all"] < 25.0
    assert metrics["EPE"] < 1.5


def test_sgbm_marks_invalid_pixels_nan_and_stays_in_range(half_resolution_pair):
    left, right, _ = half_resolution_pair
    config = SgbmConfig(num_disparities=48)
    prediction = sgbm_disparity(left, right, config)
    assert prediction.dtype == np.float32 and prediction.shape == left.shape[:2]
    # No match is possible where the search range would leave the right image.
    assert np.isnan(prediction[:, :16]).all()
    finite = prediction[np.isfinite(prediction)]
    assert finite.min() >= 0.0 and finite.max() <= 47.0
    # Sub-pixel output: the fixed-point fraction survives the conversion.
    assert np.any(finite != np.round(finite))


def test_num_disparities_rounds_up_to_multiples_of_16():
    assert num_disparities_for(59.9) == 64
    assert num_disparities_for(63.0) == 64
    assert num_disparities_for(64.0) == 80
    assert num_disparities_for(3.0) == 16
    assert num_disparities_for(40.0, min_disparity=10) == 32
    assert SgbmConfig.for_max_disparity(100, mode="hh").num_disparities == 112


def test_config_rejects_invalid_values():
    with pytest.raises(ValueError, match="multiple of 16"):
        SgbmConfig(num_disparities=60)
    with pytest.raises(ValueError, match="odd"):
        SgbmConfig(block_size=4)
    with pytest.raises(ValueError, match="unknown SGBM mode"):
        SgbmConfig(mode="fast")


def test_sgbm_rejects_mismatched_images():
    with pytest.raises(ValueError, match="differs"):
        sgbm_disparity(np.zeros((8, 32, 3), np.uint8), np.zeros((8, 48, 3), np.uint8))


def test_search_range_wider_than_the_image_is_a_clear_error():
    image = np.zeros((32, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="wider"):
        sgbm_disparity(image, image, SgbmConfig(num_disparities=64))
