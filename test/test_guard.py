"""The collapse guard's rules, frame by frame."""

import pytest
import torch

from stereo_adapt_ros.adaptation import AdapterConfig, OnlineAdapter
from stereo_adapt_ros.adaptation.guard import (PATIENCE, REFERENCE_FRAMES, CollapseGuard,
                                               prediction_statistics, proxy_disagreement)


def test_statistics_and_disagreement_by_hand():
    ramp = torch.linspace(0, 100, 101).expand(3, 101)
    finite, spread, out_of_image = prediction_statistics(ramp)
    assert finite and spread == pytest.approx(80.0) and out_of_image == 0.0
    exploded = torch.full((4, 8), -1e9)
    assert prediction_statistics(exploded)[2] == 1.0  # |d| beyond the 8-pixel width
    assert prediction_statistics(torch.full((4, 4), float("nan")))[0] is False
    prediction = torch.tensor([[1.0, 2.0, 10.0, float("nan")]])
    proxy = torch.tensor([[1.5, 9.0, 10.0, 4.0]])
    confident = torch.ones(1, 4, dtype=torch.bool)
    assert proxy_disagreement(prediction, proxy, confident) == pytest.approx(1 / 3)
    assert proxy_disagreement(prediction, proxy, ~confident) is None


def test_a_flat_map_resets_after_patience_frames_and_not_before():
    guard = CollapseGuard()
    for _ in range(REFERENCE_FRAMES):
        assert guard.update(spread=40.0, loss=0.1) is None
    for _ in range(PATIENCE - 1):
        assert guard.update(spread=2.0, loss=0.1) is None
    assert guard.update(spread=40.0, loss=0.1) is None  # one good frame clears the strikes
    for _ in range(PATIENCE - 1):
        assert guard.update(spread=2.0, loss=0.1) is None
    reason = guard.update(spread=2.0, loss=0.1)
    assert reason and "spread fell to 2.00 px from 40.00 px" in reason
    assert guard.resets == 1
    # After the reset the reference is taken again from the next frames.
    for _ in range(REFERENCE_FRAMES + PATIENCE):
        assert guard.update(spread=2.0, loss=0.1) is None


def test_a_loss_spike_and_proxy_disagreement_reset():
    guard = CollapseGuard()
    for _ in range(REFERENCE_FRAMES):
        guard.update(spread=30.0, loss=0.1)
    reasons = [guard.update(spread=30.0, loss=0.5) for _ in range(PATIENCE)]
    assert reasons[:-1] == [None] * (PATIENCE - 1) and "loss" in reasons[-1]
    guard = CollapseGuard()
    for _ in range(REFERENCE_FRAMES):
        guard.update(spread=30.0, loss=0.1, disagreement=0.1)
    reasons = [guard.update(spread=30.0, loss=0.1, disagreement=0.7) for _ in range(PATIENCE)]
    assert "proxy" in reasons[-1] and "70%" in reasons[-1]
    assert guard.resets == 1


def test_exploded_weights_never_reach_the_output(motorcycle_crop):
    """Weights that predict most of the map beyond the image (finite) are reset on the first
    such frame, and that frame is predicted again by the restored initial weights."""
    left, right, _ = motorcycle_crop
    config = dict(adaptation_loss="photometric", amp="off", reference_check_every=0)
    reference = OnlineAdapter.from_weights("synthetic", AdapterConfig(
        adaptation_mode="none", **config)).step(left, right).disparity
    adapter = OnlineAdapter.from_weights("synthetic", AdapterConfig(adaptation_mode="mad",
                                                                    **config))
    assert adapter.step(left, right).reset is False
    with torch.no_grad():  # what a destructive step does: disparities of thousands of pixels
        adapter.model.refinement[12].bias += 1e4
    result = adapter.step(left, right)
    assert result.reset and "outside the image" in result.collapse
    assert adapter.guard.resets == 1
    assert float(result.disparity.max()) < left.shape[1]
    assert abs(result.disparity - reference).max() < 1e-3
