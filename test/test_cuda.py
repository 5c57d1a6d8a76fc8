"""CUDA checks, run by the prepared device check (make device-check) on a lent GPU.

Skipped (and reported as skipped) where there is no CUDA device, as on CI."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from skimage import data as skdata

from stereo_adapt_ros.adaptation.adapter import AdapterConfig, OnlineAdapter
from stereo_adapt_ros.training_data.photo_stereo import PhotoStereoConfig, render_photo_batch
from array_photos import ArrayPhotos

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


def _pair(motorcycle):
    left, right, _ = motorcycle
    return left[100:420, 50:690], right[100:420, 50:690]


def test_cuda_step_matches_the_cpu_in_float32(motorcycle):
    left, right = _pair(motorcycle)
    config = AdapterConfig(adaptation_mode="full", amp="off", compile=False)
    steps = {}
    for device in ("cpu", "cuda"):
        adapter = OnlineAdapter.from_weights("synthetic", config, device)
        steps[device] = [adapter.step(left, right) for _ in range(2)]
    for cpu, gpu in zip(steps["cpu"], steps["cuda"]):
        assert abs(cpu.loss - gpu.loss) < 1e-3 * max(1.0, abs(cpu.loss))
        assert np.median(np.abs(cpu.disparity - gpu.disparity)) < 0.05


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
@pytest.mark.parametrize("mode", ["mad", "full"])
def test_mixed_precision_adaptation_is_finite_and_lowers_the_loss(motorcycle, amp, mode):
    left, right = _pair(motorcycle)
    adapter = OnlineAdapter.from_weights("synthetic", AdapterConfig(
        adaptation_mode=mode, amp=amp, mad_sampling="fixed", mad_fixed_block=2), "cuda")
    losses = [adapter.step(left, right).loss for _ in range(8)]
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    assert all(torch.isfinite(p).all() for p in adapter.model.parameters())


def test_compiled_inference_matches_eager(motorcycle):
    left, right = _pair(motorcycle)
    config = AdapterConfig(adaptation_mode="none", amp="off")
    eager = OnlineAdapter.from_weights("synthetic", config, "cuda").step(left, right)
    compiled = OnlineAdapter.from_weights("synthetic", replace(config, compile=True),
                                          "cuda").step(left, right)
    assert np.median(np.abs(eager.disparity - compiled.disparity)) < 0.05


def test_photo_stereo_renders_the_same_pairs_on_cuda():
    photos = ArrayPhotos([skdata.astronaut(), skdata.coffee(), skdata.chelsea()])
    config = PhotoStereoConfig(height=96, width=160)
    cpu = render_photo_batch(2, photos, config, seed=4)
    gpu = render_photo_batch(2, photos, config, seed=4, device="cuda")
    assert torch.equal(cpu.disparity, gpu.disparity.cpu())
    # Splatting adds with atomics on CUDA: the same up to float rounding.
    assert (cpu.right - gpu.right.cpu()).abs().max() < 1e-4
