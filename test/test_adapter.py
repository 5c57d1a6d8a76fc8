import numpy as np
import pytest
import torch

from stereo_adapt_ros.adaptation import AdapterConfig, OnlineAdapter
from stereo_adapt_ros.network import BLOCKS, load_model


def _adapter(**config):
    return OnlineAdapter.from_weights("random", AdapterConfig(**config))


def _snapshot(adapter):
    return {n: p.detach().clone() for n, p in adapter.model.named_parameters()}


def _changed(adapter, before):
    return {n for n, p in adapter.model.named_parameters() if not torch.equal(p, before[n])}


def test_none_mode_never_changes_weights(motorcycle_crop):
    left, right, _ = motorcycle_crop
    adapter = _adapter(mode="none")
    before = _snapshot(adapter)
    for _ in range(3):
        result = adapter.step(left, right)
        assert not result.adapted and result.block is None
    assert not _changed(adapter, before)
    assert result.disparity.shape == left.shape[:2] and result.disparity.dtype == np.float32
    assert result.confidence.shape == left.shape[:2]
    assert 0 <= result.confidence.min() and result.confidence.max() <= 1
    assert result.disparity.min() >= 0
    assert {"prepare", "forward", "total"} <= set(result.timings)


def test_mad_changes_only_the_sampled_block(motorcycle_crop):
    left, right, _ = motorcycle_crop
    adapter = _adapter(mode="mad", mad_sampling="uniform", seed=4)
    partition = adapter.model.block_parameter_names()
    seen = set()
    for _ in range(8):
        before = _snapshot(adapter)
        result = adapter.step(left, right)
        assert result.adapted and result.block in BLOCKS
        changed = _changed(adapter, before)
        assert changed == set(partition[result.block])
        seen.add(result.block)
    assert len(seen) >= 3


@pytest.mark.parametrize("block", [6, 2])
def test_fixed_block(motorcycle_crop, block):
    left, right, _ = motorcycle_crop
    adapter = _adapter(mode="mad", mad_sampling="fixed", mad_fixed_block=block)
    before = _snapshot(adapter)
    assert adapter.step(left, right).block == block
    assert _changed(adapter, before) == set(adapter.model.block_parameter_names()[block])


def test_mad_loss_scale_trains_the_block_in_the_full_resolution_direction(motorcycle_crop):
    """mad_loss_scale=0.25 computes a coarse block's loss at the network's output resolution:
    the step changes only that block, and its update points the way the full-resolution
    loss's does (plain SGD, so the update is the gradient)."""
    left, right, _ = motorcycle_crop
    updates = []
    for scale in (1.0, 0.25):
        adapter = OnlineAdapter.from_weights("synthetic", AdapterConfig(
            mode="mad", mad_sampling="fixed", mad_fixed_block=4, mad_loss_scale=scale,
            optimizer="sgd", momentum=0.0, amp="off"))
        before = _snapshot(adapter)
        result = adapter.step(left, right)
        assert result.adapted and result.block == 4
        assert _changed(adapter, before) == set(adapter.model.block_parameter_names()[4])
        updates.append(torch.cat([(p - before[n]).flatten()
                                  for n, p in adapter.model.named_parameters()]))
    full, quarter = updates
    assert not torch.equal(full, quarter)
    cosine = torch.dot(full, quarter) / (full.norm() * quarter.norm())
    assert cosine > 0.5, cosine


def test_full_updates_every_parameter(motorcycle_crop):
    left, right, _ = motorcycle_crop
    adapter = _adapter(mode="full")
    before = _snapshot(adapter)
    result = adapter.step(left, right)
    assert result.adapted and result.block is None and "backward" in result.timings
    assert _changed(adapter, before) == set(before)


def test_adapt_every_n_and_pause(motorcycle_crop):
    left, right, _ = motorcycle_crop
    adapter = _adapter(mode="mad", adapt_every_n=3)
    assert [adapter.step(left, right).adapted for _ in range(7)] == \
        [True, False, False, True, False, False, True]
    adapter.paused = True
    before = _snapshot(adapter)
    assert not adapter.step(left, right).adapted
    assert not _changed(adapter, before)


def test_reset_and_loss_threshold_restore_initial_weights(motorcycle_crop):
    left, right, _ = motorcycle_crop
    adapter = _adapter(mode="full")
    initial = _snapshot(adapter)
    adapter.step(left, right)
    assert _changed(adapter, initial)
    adapter.reset()
    assert not _changed(adapter, initial)
    adapter.step(left, right)
    adapter.reconfigure(AdapterConfig(mode="full", reset_loss_threshold=1e-3))
    result = adapter.step(left, right)
    assert result.reset and not result.adapted
    assert not _changed(adapter, initial)


def test_non_finite_loss_is_skipped_and_weights_kept(motorcycle_crop):
    left, right, _ = motorcycle_crop
    adapter = _adapter(mode="full")
    with torch.no_grad():
        adapter.model.decoders["6"][0].weight.fill_(1e38)
    before = _snapshot(adapter)
    result = adapter.step(left, right)
    assert result.skipped == "non-finite loss" and not result.adapted
    assert not _changed(adapter, before)


def test_update_producing_non_finite_weights_is_rolled_back():
    adapter = _adapter(mode="full", optimizer="sgd", momentum=0.0, learning_rate=1.0)
    param = adapter.model.decoders["6"][0].bias
    with torch.no_grad():
        param.fill_(-3e38)
    before = param.detach().clone()
    # loss is 0 and d(loss)/d(param) = 3e38 finite, but param - 1.0 * 3e38 overflows to -inf.
    loss = 3e38 * (param - param.detach()).sum()
    assert adapter._guarded_update(loss, loss, [param])[1] == "non-finite weights after the update"
    assert torch.equal(param, before)
    grad_overflow = 3e38 * (param - param.detach()).sum() * 2
    assert adapter._guarded_update(grad_overflow, grad_overflow, [param])[1] == \
        "non-finite gradient"
    assert torch.equal(param, before)


@pytest.mark.parametrize("left, right, message", [
    (np.zeros((64, 64, 3), np.uint8), np.zeros((64, 80, 3), np.uint8), "sizes differ"),
    (np.zeros((64, 64, 3), np.int32), np.zeros((64, 64, 3), np.int32), "dtype"),
    (np.zeros((64, 64, 2), np.uint8), np.zeros((64, 64, 2), np.uint8), "H x W"),
    (np.full((64, 64, 3), np.nan, np.float32), np.zeros((64, 64, 3), np.float32), "NaN"),
    (np.zeros((0, 64, 3), np.uint8), np.zeros((0, 64, 3), np.uint8), "empty"),
    (np.full((64, 64), 2.0, np.float32), np.zeros((64, 64), np.float32), r"\[0, 1\]"),
    ([[0]], [[0]], "numpy array"),
])
def test_bad_input_raises_and_changes_nothing(left, right, message):
    adapter = _adapter(mode="full")
    before = _snapshot(adapter)
    with pytest.raises(ValueError, match=message):
        adapter.step(left, right)
    assert not _changed(adapter, before)
    assert adapter.frames == 0


def test_grayscale_uint16_and_input_scale(motorcycle_crop):
    left, right, _ = motorcycle_crop
    gray_l = (left.mean(axis=2) * 257).astype(np.uint16)
    gray_r = (right.mean(axis=2) * 257).astype(np.uint16)
    adapter = _adapter(mode="none", input_scale=0.5)
    result = adapter.step(gray_l, gray_r)
    assert result.disparity.shape == left.shape[:2]


def test_invalid_configuration_is_rejected():
    for bad in (dict(mode="fast"), dict(learning_rate=-1), dict(optimizer="rmsprop"),
                dict(adapt_every_n=0), dict(input_scale=0), dict(mad_sampling="greedy"),
                dict(reset_loss_threshold=0), dict(learning_rate=float("nan")),
                dict(mad_loss_scale=0), dict(mad_loss_scale=2),
                dict(mad_loss_scale=0.25, loss="proxy")):
        with pytest.raises(ValueError):
            AdapterConfig(**bad).validate()


def test_save_writes_weights_that_load_back(tmp_path, motorcycle_crop):
    left, right, _ = motorcycle_crop
    adapter = _adapter(mode="mad")
    adapter.step(left, right)
    path = tmp_path / "adapted.safetensors"
    adapter.save(str(path))
    model, info, _ = load_model(str(path))
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, adapter.model.state_dict()[name])
    assert "adapted online for 1 frames" in info.description


@pytest.mark.parametrize("mode, ratio", [("full", 0.95), ("mad", 0.99)])
def test_adaptation_lowers_the_photometric_loss_on_real_data(motorcycle_crop, mode, ratio):
    """On the real Motorcycle pair, a few dozen online steps from the same starting weights
    lower the self-supervised loss of the prediction (MAD, training a fifth of the network per
    step, more slowly); without adaptation it stays where it started."""
    left, right, _ = motorcycle_crop
    adapter = _adapter(mode=mode, mad_sampling="round_robin")
    losses = [adapter.step(left, right).loss for _ in range(40)]
    frozen = _adapter(mode="none")
    assert frozen.step(left, right).loss == pytest.approx(losses[0], rel=1e-5)
    assert np.mean(losses[-5:]) < ratio * losses[0]
