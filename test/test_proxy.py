"""Proxy labels (traditional matchers + confidence), the confidence-guided regression loss,
and proxy / MAD++ adaptation steps. Real data: the Middlebury Motorcycle pair."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from stereo_adapt_ros.adaptation import (AdapterConfig, OnlineAdapter, ProxyConfig,
                                         compute_proxy, proxy_loss)
from stereo_adapt_ros.matching import census_transform
from stereo_adapt_ros.options import declared_options


def test_proxy_loss_uses_only_pixels_above_tau_weighted_by_confidence():
    disparity = torch.tensor([[[[10.0, 10.0, 10.0, 10.0]]]], requires_grad=True)
    proxy = torch.tensor([[[[12.0, 7.0, 100.0, float("nan")]]]])
    confidence = torch.tensor([[[[0.9, 0.5, 0.81, 1.0]]]])
    loss = proxy_loss(disparity, proxy, confidence, tau=0.8)
    # Pixel 1 is below tau, pixel 3 has no proxy: P = {0, 2}.
    assert loss.item() == pytest.approx((0.9 * 2 + 0.81 * 90) / 2)
    loss.backward()
    assert disparity.grad[0, 0, 0, 1] == 0 and disparity.grad[0, 0, 0, 3] == 0
    assert torch.isfinite(disparity.grad).all()
    # Changing a pixel at or below tau changes nothing.
    moved = proxy.clone()
    moved[..., 1] = -50
    assert proxy_loss(disparity, moved, confidence, 0.8).item() == pytest.approx(loss.item())
    assert proxy_loss(disparity, proxy, torch.zeros_like(confidence), 0.8).item() == 0


def test_census_transform_by_hand():
    image = np.array([[5, 1, 9], [2, 4, 6], [7, 3, 8]], dtype=np.uint8)
    code = census_transform(image, radius=1)[1, 1]
    # Neighbours in raster order, bit set where darker than the centre (4).
    expected = int("".join("1" if v < 4 else "0" for v in (5, 1, 9, 2, 6, 7, 3, 8)), 2)
    assert code == expected


@pytest.mark.parametrize("method, sgbm_mode", [("ad", "sgbm"), ("census", "sgbm"),
                                               ("sgbm", "sgbm"), ("sgbm", "hh"),
                                               ("sgbm", "sgbm_3way")])
def test_matchers_recover_a_known_shift(method, sgbm_mode):
    rng = np.random.default_rng(3)
    texture = (rng.random((64, 160)) * 255).astype(np.uint8)
    texture = np.repeat(np.repeat(texture, 2, axis=0), 2, axis=1)  # 128 x 320, 2 px blobs
    shift = 11
    left, right = texture[:, :256], texture[:, shift:shift + 256]  # right(x - 11) = left(x)
    labels = compute_proxy(left, right, ProxyConfig(proxy_method=method,
                                                    proxy_confidence="combined",
                                                    max_disparity=32, proxy_sgbm_mode=sgbm_mode,
                                                    proxy_pad=False))
    trusted = labels.confidence > 0.8
    assert trusted[:, 64:].mean() > 0.75
    assert np.median(np.abs(labels.disparity[trusted] - shift)) < 0.25
    assert np.all(labels.confidence[~np.isfinite(labels.disparity)] == 0)
    assert 0 <= labels.confidence.min() and labels.confidence.max() <= 1


def _bad3(disparity, truth, mask):
    """(share of the used pixels off by > 3 px, NaN when none is used; share used)."""
    use = mask & np.isfinite(truth) & np.isfinite(disparity)
    if not use.any():
        return math.nan, 0.0
    return float(np.mean(np.abs(disparity[use] - truth[use]) > 3)), float(use.mean())


@pytest.mark.parametrize("method", ["sgbm", "census"])
def test_left_right_filtering_makes_proxies_more_accurate_on_the_real_pair(motorcycle, method):
    left, right, truth = motorcycle
    labels = compute_proxy(left, right, ProxyConfig(proxy_method=method, proxy_confidence="lr",
                                                    max_disparity=80, proxy_sgbm_mode="sgbm",
                                                    proxy_pad=False))
    everything = np.isfinite(labels.disparity)
    unfiltered, _ = _bad3(labels.disparity, truth, everything)
    filtered, density = _bad3(labels.disparity, truth, labels.confidence > 0.8)
    assert filtered < 0.8 * unfiltered, (filtered, unfiltered)
    assert density > 0.4


@pytest.mark.parametrize("measure", ["learned", "lr"])
def test_padded_borders_label_the_left_band_as_accurately_as_the_rest(motorcycle, measure):
    """SGBM labels nothing in its search range's width at the left border (144 columns for a
    128 px range, a fifth of the real pair); padded, the pixels there get labels, and the
    confident ones are as right as elsewhere (the ground truth only scores them)."""
    left, right, truth = motorcycle
    band = np.zeros(truth.shape, bool)
    band[:, :144] = True
    scored = {}
    for pad in (False, True):
        labels = compute_proxy(left, right, ProxyConfig(
            proxy_method="sgbm", proxy_confidence=measure, max_disparity=128,
            proxy_sgbm_mode="sgbm", proxy_pad=pad))
        assert labels.disparity.shape == truth.shape
        confident = labels.confidence > 0.8
        scored[pad] = {name: _bad3(labels.disparity, truth, confident & region)
                       for name, region in (("band", band), ("rest", ~band))}
    assert scored[False]["band"][1] == 0
    bad_band, density_band = scored[True]["band"]
    assert density_band > 0.5 * band.mean(), scored
    assert bad_band < max(1.5 * scored[True]["rest"][0], 0.05), scored
    # Away from the band the labels are as right, and as many or more (the right view's own
    # band, at its right border, now has labels for the left-right check).
    assert scored[True]["rest"][0] < scored[False]["rest"][0] + 0.01, scored
    assert scored[True]["rest"][1] >= scored[False]["rest"][1] - 0.005, scored
    assert AdapterConfig().proxy_config().proxy_pad


def test_the_adapter_declares_the_proxy_options_and_the_proxy_restates_no_default():
    """One name and one default: AdapterConfig's options; ProxyConfig has them under the same
    names (its max_disparity is the range in the proxy's own pixels) and no default of its own,
    so that a second one cannot drift (it said combined where the adapter says learned)."""
    declared = declared_options(AdapterConfig)
    config = AdapterConfig().proxy_config()
    for name in ("proxy_method", "proxy_confidence", "proxy_sgbm_mode", "proxy_pad"):
        assert getattr(config, name) == declared[name].default, name
    assert config.max_disparity == declared["proxy_max_disparity"].default
    assert config.proxy_confidence == "learned"
    with pytest.raises(TypeError):
        ProxyConfig()


def test_invalid_proxy_configuration_and_input_are_rejected():
    valid = AdapterConfig().proxy_config()
    for bad in (dict(proxy_method="bm"), dict(proxy_confidence="magic"), dict(max_disparity=0),
                dict(block_size=4), dict(lr_tolerance=0), dict(proxy_sgbm_mode="bm")):
        with pytest.raises(ValueError):
            replace(valid, **bad).validate()
    image = np.zeros((32, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="differ in shape"):
        compute_proxy(image, image[:, :32], valid)
    for bad in (dict(adaptation_loss="l2"), dict(proxy_tau=1.0), dict(proxy_weight=0),
                dict(proxy_method="x")):
        with pytest.raises(ValueError):
            AdapterConfig(**bad).validate()


def _snapshot(adapter):
    return {n: p.detach().clone() for n, p in adapter.model.named_parameters()}


def _changed(adapter, before):
    return {n for n, p in adapter.model.named_parameters() if not torch.equal(p, before[n])}


@pytest.mark.parametrize("loss", ["proxy", "both"])
def test_mad_plus_plus_step_changes_only_the_sampled_block(motorcycle_crop, loss):
    left, right, _ = motorcycle_crop
    adapter = OnlineAdapter.from_weights("random", AdapterConfig(
        adaptation_mode="mad", adaptation_loss=loss, mad_sampling="uniform",
        proxy_method="census", proxy_max_disparity=48, seed=2))
    partition = adapter.model.block_parameter_names()
    for _ in range(3):
        before = _snapshot(adapter)
        result = adapter.step(left, right)
        assert result.adapted and result.skipped is None
        assert _changed(adapter, before) == set(partition[result.block])
        assert 0 < result.proxy_density <= 1
        assert {"proxy", "proxy_wait"} <= set(result.timings)


@pytest.mark.slow
def test_full_proxy_adaptation_moves_towards_the_proxy(motorcycle_crop):
    left, right, _ = motorcycle_crop
    adapter = OnlineAdapter.from_weights("random", AdapterConfig(
        adaptation_mode="full", adaptation_loss="proxy", learning_rate=1e-3,
        proxy_max_disparity=48))
    losses = [adapter.step(left, right).loss for _ in range(12)]
    assert losses[-1] < 0.7 * losses[0], losses


def test_a_frame_without_proxy_labels_is_not_adapted_and_keeps_the_weights():
    # 16 pixels is too narrow for SGBM without padding: the proxy fails, the frame is
    # predicted, not adapted.
    rng = np.random.default_rng(0)
    left = (rng.random((64, 16, 3)) * 255).astype(np.uint8)
    adapter = OnlineAdapter.from_weights("random", AdapterConfig(
        adaptation_mode="full", adaptation_loss="proxy", proxy_pad=False))
    before = _snapshot(adapter)
    result = adapter.step(left, left)
    assert not result.adapted and result.skipped.startswith("proxy failed")
    assert result.disparity.shape == (64, 16)
    assert not _changed(adapter, before)
    assert all(p.requires_grad for p in adapter.model.parameters())


def test_bench_reports_the_proxy_time_and_the_wait_for_it():
    from stereo_adapt_ros.evaluation.benchmark import benchmark_steps

    result = benchmark_steps(64, 128, torch.device("cpu"), frames=2, warmup=1, sgbm=False,
                             variants={"both": dict(adaptation_loss="both", proxy_method="census",
                                                    proxy_max_disparity=32)})
    row = result["variants"]["both"]
    for mode in ("mad", "full"):
        assert row[mode]["proxy_median_ms"] > 0
        assert 0 <= row[mode]["proxy_wait_median_ms"] <= row[mode]["median_ms"]
    assert "proxy_median_ms" not in row["none"]  # inference never runs the matcher
