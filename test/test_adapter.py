from dataclasses import replace

import numpy as np
import pytest
import torch

from stereo_adapt_ros.adaptation import AdapterConfig, OnlineAdapter
from stereo_adapt_ros.network import BLOCKS, load_model


def _adapter(**config):
    """A random network; the photometric loss at Adam 1e-4 unless told otherwise (these tests
    check the step's mechanics, written for that configuration; the proxy has its tests)."""
    config = {"adaptation_loss": "photometric", "learning_rate": 1e-4,
              "mad_learning_rate": 1e-4, "photometric_automask": False, **config}
    return OnlineAdapter.from_weights("random", AdapterConfig(**config))


def _snapshot(adapter):
    return {n: p.detach().clone() for n, p in adapter.model.named_parameters()}


def _changed(adapter, before):
    return {n for n, p in adapter.model.named_parameters() if not torch.equal(p, before[n])}


def test_none_mode_never_changes_weights(motorcycle_crop):
    left, right, _ = motorcycle_crop
    adapter = _adapter(adaptation_mode="none")
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
    adapter = _adapter(adaptation_mode="mad", mad_sampling="uniform", seed=4)
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
    adapter = _adapter(adaptation_mode="mad", mad_sampling="fixed", mad_fixed_block=block)
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
            adaptation_mode="mad", mad_sampling="fixed", mad_fixed_block=4, mad_loss_scale=scale,
            optimizer="sgd", momentum=0.0, amp="off", adaptation_loss="photometric"))
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
    adapter = _adapter(adaptation_mode="full")
    before = _snapshot(adapter)
    result = adapter.step(left, right)
    assert result.adapted and result.block is None and "backward" in result.timings
    assert _changed(adapter, before) == set(before)


def test_adapt_every_n_and_pause(motorcycle_crop):
    left, right, _ = motorcycle_crop
    adapter = _adapter(adaptation_mode="mad", adapt_every_n=3)
    assert [adapter.step(left, right).adapted for _ in range(7)] == \
        [True, False, False, True, False, False, True]
    adapter.paused = True
    before = _snapshot(adapter)
    assert not adapter.step(left, right).adapted
    assert not _changed(adapter, before)


def test_reset_and_loss_threshold_restore_initial_weights(motorcycle_crop):
    left, right, _ = motorcycle_crop
    adapter = _adapter(adaptation_mode="full")
    initial = _snapshot(adapter)
    adapter.step(left, right)
    assert _changed(adapter, initial)
    adapter.reset()
    assert not _changed(adapter, initial)
    adapter.step(left, right)
    adapter.reconfigure(AdapterConfig(adaptation_mode="full", reset_loss_threshold=1e-3))
    result = adapter.step(left, right)
    assert result.reset and not result.adapted
    assert not _changed(adapter, initial)


def test_non_finite_loss_is_skipped_and_weights_kept(motorcycle_crop):
    left, right, _ = motorcycle_crop
    adapter = _adapter(adaptation_mode="full", collapse_guard=False)
    initial = _snapshot(adapter)
    with torch.no_grad():
        adapter.model.decoders["6"][0].weight.fill_(1e38)
    before = _snapshot(adapter)
    result = adapter.step(left, right)
    assert result.skipped == "non-finite loss" and not result.adapted
    assert not _changed(adapter, before)
    # With the collapse guard, weights that predict non-finite disparities are not kept:
    # the initial ones come back, and the frame is predicted by them.
    adapter.reconfigure(AdapterConfig(adaptation_mode="full", collapse_guard=True))
    result = adapter.step(left, right)
    assert result.collapse == "the prediction is not finite" and result.reset
    assert not _changed(adapter, initial) and np.isfinite(result.disparity).all()


def test_update_producing_non_finite_weights_is_rolled_back():
    adapter = _adapter(adaptation_mode="full", optimizer="sgd", momentum=0.0, learning_rate=1.0)
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
    adapter = _adapter(adaptation_mode="full")
    before = _snapshot(adapter)
    with pytest.raises(ValueError, match=message):
        adapter.step(left, right)
    assert not _changed(adapter, before)
    assert adapter.frames == 0


def test_grayscale_uint16_and_input_scale(motorcycle_crop):
    left, right, _ = motorcycle_crop
    gray_l = (left.mean(axis=2) * 257).astype(np.uint16)
    gray_r = (right.mean(axis=2) * 257).astype(np.uint16)
    adapter = _adapter(adaptation_mode="none", input_scale=0.5)
    result = adapter.step(gray_l, gray_r)
    assert result.disparity.shape == left.shape[:2]


def test_invalid_configuration_is_rejected():
    for bad in (dict(adaptation_mode="fast"), dict(learning_rate=-1), dict(optimizer="rmsprop"),
                dict(adapt_every_n=0), dict(input_scale=0), dict(mad_sampling="greedy"),
                dict(reset_loss_threshold=-1), dict(learning_rate=float("nan")),
                dict(mad_loss_scale=0), dict(mad_loss_scale=2),
                dict(mad_loss_scale=0.25, adaptation_loss="proxy")):
        with pytest.raises(ValueError):
            AdapterConfig(**bad).validate()
    AdapterConfig(reset_loss_threshold=0.0).validate()  # 0: never reset, as the node's


def test_save_writes_weights_that_load_back(tmp_path, motorcycle_crop):
    left, right, _ = motorcycle_crop
    adapter = _adapter(adaptation_mode="mad")
    adapter.step(left, right)
    path = tmp_path / "adapted.safetensors"
    adapter.save(str(path))
    model, info, _ = load_model(str(path))
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, adapter.model.state_dict()[name])
    assert "adapted online for 1 frames" in info.description


@pytest.mark.parametrize("mode, ratio", [pytest.param("full", 0.95, marks=pytest.mark.slow),
                                         ("mad", 0.99)])
def test_adaptation_lowers_the_photometric_loss_on_real_data(motorcycle_crop, mode, ratio):
    """On the real Motorcycle pair, a few dozen online steps from the same starting weights
    lower the self-supervised loss of the prediction (MAD, training a fifth of the network per
    step, more slowly); without adaptation it stays where it started."""
    left, right, _ = motorcycle_crop
    adapter = _adapter(adaptation_mode=mode, mad_sampling="round_robin")
    losses = [adapter.step(left, right).loss for _ in range(40)]
    frozen = _adapter(adaptation_mode="none")
    # Same weights, same loss; MAD's first forward keeps a block in float32 under bf16 autocast
    # (CPUs with native bf16), hence the rounding-level tolerance.
    assert frozen.step(left, right).loss == pytest.approx(losses[0], rel=1e-4)
    assert np.mean(losses[-5:]) < ratio * losses[0]


@pytest.mark.parametrize("optimizer, rate", [("adam", 1e-2), ("adam", 0.1), ("sgd", 1.0)])
def test_a_destructive_learning_rate_is_caught_and_the_initial_weights_return(
        motorcycle_crop, optimizer, rate):
    """Rates that make the weights explode (finite, but the disparities leave the image) or
    turn the prediction non-finite: the guard resets within a few frames, the frame it
    resets on is predicted by the restored weights, and no broken weights stay. The guard
    alone: the frozen-reference check, which would roll such weights back first, and the
    rate's warm-up, which would soften the first steps, are off (test_safety.py)."""
    left, right, truth = motorcycle_crop
    adapter = OnlineAdapter.from_weights("synthetic", AdapterConfig(
        adaptation_mode="full", optimizer=optimizer, learning_rate=rate, amp="off",
        reference_check_every=0, warmup_steps=0))
    initial = _snapshot(adapter)
    first = adapter.step(left, right)
    results = [adapter.step(left, right) for _ in range(4)]
    collapsed = [r for r in results if r.collapse]
    assert collapsed, [(r.loss, r.skipped) for r in results]
    assert collapsed[0].reset and adapter.guard.resets >= 1
    assert np.array_equal(collapsed[0].disparity, first.disparity)
    assert np.isfinite(collapsed[0].disparity).all()
    # Right after a reset the weights are the initial ones again.
    adapter.reset()
    assert not _changed(adapter, initial)


def test_without_the_guard_the_same_rate_leaves_the_weights_broken(motorcycle_crop):
    left, right, _ = motorcycle_crop
    adapter = OnlineAdapter.from_weights("synthetic", AdapterConfig(
        adaptation_mode="full", learning_rate=1e-2, amp="off", collapse_guard=False,
        reference_check_every=0, warmup_steps=0, adaptation_loss="photometric"))
    results = [adapter.step(left, right) for _ in range(5)]
    assert not any(r.collapse or r.reset for r in results)
    assert np.median(results[-1].disparity) > left.shape[1]


@pytest.mark.slow
@pytest.mark.parametrize("mask", ["photometric_automask", "photometric_occlusion_mask"])
def test_masked_photometric_losses_adapt_and_lower_their_loss(motorcycle_crop, mask):
    left, right, _ = motorcycle_crop
    unmasked = dict(amp="off", adaptation_loss="photometric", photometric_automask=False,
                    photometric_occlusion_mask=False)
    adapter = OnlineAdapter.from_weights("synthetic", AdapterConfig(
        adaptation_mode="full", learning_rate=1e-5, **{**unmasked, mask: True}))
    plain = OnlineAdapter.from_weights("synthetic", AdapterConfig(adaptation_mode="none",
                                                                  **unmasked))
    losses = [adapter.step(left, right).loss for _ in range(6)]
    assert losses[-1] < losses[0]
    # The masked loss leaves pixels out: it differs from the plain photometric loss.
    assert losses[0] != pytest.approx(plain.step(left, right).loss, rel=1e-4)


def test_replay_steps_adapt_on_recent_pairs_only_when_adapting(motorcycle_crop):
    left, right, _ = motorcycle_crop
    adapter = _adapter(adaptation_mode="full", replay_buffer=2)
    assert adapter.replay_step() is None  # nothing seen yet
    adapter.step(left, right)
    before = _snapshot(adapter)
    result = adapter.replay_step()
    assert result.adapted and _changed(adapter, before)
    assert result.disparity.shape == left.shape[:2]
    adapter.paused = True
    assert adapter.replay_step() is None
    adapter.paused = False
    adapter.reconfigure(AdapterConfig(adaptation_mode="none"))
    assert adapter.replay_step() is None


def test_replay_steps_reuse_the_proxy_labels_of_their_pair(motorcycle_crop):
    left, right, _ = motorcycle_crop
    adapter = _adapter(adaptation_mode="mad", adaptation_loss="both", replay_buffer=1)
    first = adapter.step(left, right)
    assert first.adapted and first.timings["proxy"] > 0
    labels = adapter._recent[0].proxy
    replayed = adapter.replay_step()
    assert replayed.adapted and replayed.timings["proxy"] == 0.0
    assert adapter._recent[0].proxy is labels
    # Labels from another matcher setting are not reused.
    adapter.reconfigure(replace(adapter.config, proxy_max_disparity=64))
    assert adapter._recent[0].proxy is None
    assert adapter.replay_step().timings["proxy"] > 0


def test_the_oracle_regresses_the_ground_truth(motorcycle_crop):
    left, right, truth = motorcycle_crop
    adapter = OnlineAdapter.from_weights("synthetic", AdapterConfig(
        adaptation_mode="full", amp="off", learning_rate=1e-4))
    valid = np.isfinite(truth)
    errors = []
    for _ in range(6):
        result = adapter.step(left, right, ground_truth=truth)
        errors.append(np.abs(result.disparity - truth)[valid].mean())
        assert result.loss == pytest.approx(errors[-1], rel=0.05)
    assert errors[-1] < errors[0] - 0.5  # pixels of EPE, in six steps
    with pytest.raises(ValueError, match="does not match"):
        adapter.step(left, right, ground_truth=truth[:10])


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["none", "mad", "full"])
def test_a_step_without_confidence_or_loss_predicts_and_adapts_the_same(motorcycle_crop, mode):
    """``want_confidence=False`` and ``want_loss=False`` leave out only what they name: the
    same disparity, block, loss (NaN on inference frames without it) and weights; without
    the confidence, the in-view mask, which is where the full confidence is above 0. Shipped
    weights, default loss (proxy included), float32 so that the adapters run the same kernels.
    """
    left, right, _ = motorcycle_crop
    config = AdapterConfig(adaptation_mode=mode, mad_sampling="round_robin", amp="off")
    full, no_confidence, no_loss, bare = (OnlineAdapter.from_weights("synthetic", config)
                                          for _ in range(4))
    for _ in range(3):
        a = full.step(left, right)
        b = no_confidence.step(left, right, want_confidence=False)
        c = no_loss.step(left, right, want_loss=False)
        d = bare.step(left, right, want_confidence=False, want_loss=False)
        for other in (b, c, d):
            np.testing.assert_array_equal(a.disparity, other.disparity)
            assert (a.block, a.adapted) == (other.block, other.adapted)
        np.testing.assert_array_equal(c.confidence, a.confidence)
        for lean in (b, d):
            np.testing.assert_array_equal(lean.confidence, (a.confidence > 0).astype(np.float32))
        assert 0 < b.confidence.mean() < 1
        assert b.loss == a.loss
        if mode == "none":
            assert np.isfinite(a.loss) and np.isnan(c.loss) and np.isnan(d.loss)
        else:
            assert a.loss == c.loss == d.loss
    for other in (no_confidence, no_loss, bare):
        weights = _snapshot(other)
        assert all(torch.equal(p, weights[n]) for n, p in full.model.named_parameters())
    assert {"network", "confidence", "output"} <= set(a.timings) & set(d.timings)


def test_per_block_mad_rates(motorcycle_crop):
    """mad_block_rate_factor f: block b steps at mad_learning_rate x f ** (b - 2). With plain
    gradient descent from the same weights on the same pair, block 4's first step at f = 2 is
    4 x its step at f = 1, and block 2's is the same."""
    left, right, _ = motorcycle_crop

    def first_step(block, factor):
        adapter = _adapter(adaptation_mode="mad", mad_sampling="fixed", mad_fixed_block=block,
                           optimizer="sgd", momentum=0.0, mad_learning_rate=1e-3,
                           mad_block_rate_factor=factor, amp="off")
        before = _snapshot(adapter)
        adapter.step(left, right)
        return torch.cat([(p.detach() - before[n]).flatten()
                          for n, p in adapter.model.named_parameters()])

    for block, ratio in ((4, 4.0), (2, 1.0)):
        base, scaled = first_step(block, 1.0), first_step(block, 2.0)
        assert base.abs().max() > 0
        torch.testing.assert_close(scaled, ratio * base, rtol=1e-3, atol=1e-7)
    with pytest.raises(ValueError, match="mad_block_rate_factor"):
        AdapterConfig(mad_block_rate_factor=0.0).validate()


def test_a_proxy_at_half_resolution_gives_labels_at_the_network_size(motorcycle):
    """proxy_scale 0.5: the matcher reads the pair at half size with half the range, and its
    labels come back at the network's size in its pixels (x 2), agreeing with the
    full-resolution proxy where both are confident."""
    left, right, truth = motorcycle
    left, right, truth = left[100:356, 100:612], right[100:356, 100:612], truth[100:356, 100:612]
    size = torch.Size(left.shape[:2])
    targets = {}
    for scale in (1.0, 0.5):
        adapter = _adapter(adaptation_mode="mad", adaptation_loss="both",
                           proxy_confidence="learned", proxy_max_disparity=96,
                           proxy_scale=scale)
        labels, _ = adapter._start_proxy(left, right).result()
        assert labels.disparity.shape == (round(256 * scale), round(512 * scale))
        assert np.nanmax(labels.disparity) < 128 * scale  # SGBM rounds 96 up to 112
        targets[scale] = adapter._proxy_targets(adapter._start_proxy(left, right), size, {})
        result = adapter.step(left, right)
        assert result.adapted and result.proxy_density > 0.3
    full, half = targets[1.0], targets[0.5]
    assert half.disparity.shape == full.disparity.shape == (1, 1, 256, 512)
    both = ((full.confidence > 0.8) & (half.confidence > 0.8))[0, 0].numpy()
    assert both.mean() > 0.3
    difference = (half.disparity - full.disparity)[0, 0].numpy()[both]
    assert np.median(np.abs(difference)) < 1.0
    known = both & (truth > 0)
    assert np.mean(np.abs(half.disparity[0, 0].numpy()[known] - truth[known]) > 3) < 0.15
    with pytest.raises(ValueError, match="proxy_scale"):
        AdapterConfig(proxy_scale=0.1).validate()
