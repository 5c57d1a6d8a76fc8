"""The fast path (channels_last, bf16 autocast, torch.compile) gives the plain path's results
within stated tolerances, for inference and for adaptation steps."""

import json
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from stereo_adapt_ros.adaptation import AdapterConfig, OnlineAdapter
from stereo_adapt_ros.adaptation.precision import (ENV_CACHE, autocast_dtype,
                                                    measure_cpu_autocast,
                                                    measure_float32_blocks, native_cpu_bf16)
from stereo_adapt_ros.network import BLOCKS, MADNet, WeightsInfo

PLAIN = dict(channels_last=False, amp="off", compile=False)


def _pair(config_a, config_b, seed=0):
    torch.manual_seed(seed)
    model = MADNet()
    state = model.state_dict()
    adapters = []
    for config in (config_a, config_b):
        copy = MADNet()
        copy.load_state_dict(state)
        adapters.append(OnlineAdapter(copy, WeightsInfo(), config))
    return adapters


@pytest.mark.parametrize("mode", ["none", "mad", "full"])
def test_channels_last_matches_plain_to_float32_rounding(motorcycle_crop, mode):
    left, right, _ = motorcycle_crop
    plain, fast = _pair(AdapterConfig(adaptation_mode=mode, mad_sampling="fixed", **PLAIN),
                        AdapterConfig(adaptation_mode=mode, mad_sampling="fixed",
                                      channels_last=True, amp="off"))
    a, b = plain.step(left, right), fast.step(left, right)
    assert np.abs(a.disparity - b.disparity).max() < 1e-2
    assert np.abs(a.confidence - b.confidence).max() < 1e-3
    assert a.loss == pytest.approx(b.loss, rel=1e-4)
    # Adam's first steps move each weight by about +-lr whatever the gradient's size, so a
    # rounding-level gradient difference near zero can flip a step: weights agree to 2 lr,
    # and the next prediction to well under a pixel.
    for (name, p), q in zip(plain.model.named_parameters(), fast.model.parameters()):
        assert torch.allclose(p, q, atol=2e-4), name
    a, b = plain.step(left, right), fast.step(left, right)
    difference = np.abs(a.disparity - b.disparity)
    assert difference.mean() < 0.02 and difference.max() < 1.0


def test_bf16_autocast_stays_close_to_float32(motorcycle_crop):
    """bf16 convolutions (the prediction layers stay float32): on the real pair the
    disparity moves by well under a pixel on average."""
    left, right, _ = motorcycle_crop
    plain, fast = _pair(AdapterConfig(adaptation_mode="full", **PLAIN),
                        AdapterConfig(adaptation_mode="full", channels_last=True, amp="bf16"))
    a, b = plain.step(left, right), fast.step(left, right)
    difference = np.abs(a.disparity - b.disparity)
    assert difference.mean() < 0.05 * max(1.0, np.abs(a.disparity).mean())
    assert np.mean(difference > 3) < 0.02
    assert a.loss == pytest.approx(b.loss, rel=0.02)
    assert b.adapted and b.disparity.dtype == np.float32


def test_auto_precision_on_cpu_is_bf16_exactly_where_it_is_native():
    """The CPU flags are read from /proc/cpuinfo independently of torch's own check."""
    flags = set()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    flags.update(line.split(":", 1)[1].split())
    except OSError:
        pytest.skip("no /proc/cpuinfo to check the CPU's flags against")
    native = bool(flags & {"avx512_bf16", "amx_bf16"})
    assert native_cpu_bf16() == native
    assert autocast_dtype("auto", torch.device("cpu")) == (torch.bfloat16 if native else None)
    off = OnlineAdapter(MADNet(), WeightsInfo(), AdapterConfig(adaptation_mode="none", amp="off"))
    assert off.amp_dtype is None


def test_auto_precision_on_cpu_is_measured_once_per_size_and_cached(tmp_path, monkeypatch,
                                                                    motorcycle_crop):
    """Where bf16 is native, the first frame times both precisions on the real network and
    keeps the faster; the answer is cached, so the next adapter does not time again."""
    monkeypatch.setenv(ENV_CACHE, str(tmp_path))
    left, right, _ = motorcycle_crop
    adapter = OnlineAdapter(MADNet(), WeightsInfo(), AdapterConfig(adaptation_mode="none"))
    adapter.step(left, right)
    cached = tmp_path / "precision.json"
    if not native_cpu_bf16():
        assert adapter.amp_dtype is None and not cached.exists()
        return
    choice = json.loads(cached.read_text())
    (key, value), = choice.items()
    assert key.endswith(f"{left.shape[0]}x{left.shape[1]}") and value in ("bf16", "float32")
    assert adapter.amp_dtype == (torch.bfloat16 if value == "bf16" else None)
    # A cached answer is used as it is: flip it and a new adapter follows the file.
    cached.write_text(json.dumps({key: "float32" if value == "bf16" else "bf16"}))
    again = OnlineAdapter(MADNet(), WeightsInfo(), AdapterConfig(adaptation_mode="none"))
    again.step(left, right)
    assert again.amp_dtype == (None if value == "bf16" else torch.bfloat16)


def test_the_precision_trial_keeps_the_faster_one(tmp_path):
    def forward(slow):
        def run(dtype):
            time.sleep(0.02 if (dtype is not None) == slow else 0.0)
        return run
    assert measure_cpu_autocast(forward(slow=True), (8, 8), tmp_path) is None
    assert measure_cpu_autocast(forward(slow=False), (8, 16), tmp_path) == torch.bfloat16
    # Cached per size: the same size answers without timing (a forward that fails if called).
    assert measure_cpu_autocast(lambda dtype: 1 / 0, (8, 8), tmp_path) is None


def test_the_training_precision_trial_keeps_float32_for_the_blocks_it_speeds_up(tmp_path):
    def train_step(slow_in_bf16):
        def run(block, float32):
            time.sleep(0.02 if (block in slow_in_bf16) != float32 else 0.0)
        return run
    assert measure_float32_blocks(train_step({6, 3}), (6, 5, 4, 3, 2), (8, 8), tmp_path) == (6, 3)
    assert measure_float32_blocks(train_step(set()), (6, 5, 4, 3, 2), (8, 16), tmp_path) == ()
    # Cached per size, beside the inference trial's answers.
    assert measure_cpu_autocast(lambda dtype: None, (8, 8), tmp_path) in (None, torch.bfloat16)
    assert len(json.loads((tmp_path / "precision.json").read_text())) == 3
    assert measure_float32_blocks(lambda block, float32: 1 / 0, (6, 5, 4, 3, 2), (8, 8),
                                  tmp_path) == (6, 3)


@pytest.mark.slow
def test_a_bf16_full_step_trains_the_measured_blocks_in_float32(tmp_path, monkeypatch,
                                                               motorcycle_crop):
    """Under bf16 on a CPU the first adaptation step settles which blocks train in float32 at
    its size; every parameter still changes, and stays float32."""
    monkeypatch.setenv(ENV_CACHE, str(tmp_path))
    left, right, _ = motorcycle_crop
    adapter = OnlineAdapter.from_weights("synthetic", AdapterConfig(
        adaptation_mode="full", adaptation_loss="photometric", amp="bf16"))
    before = {n: p.detach().clone() for n, p in adapter.model.named_parameters()}
    result = adapter.step(left, right)
    assert result.adapted
    (key, blocks), = json.loads((tmp_path / "precision.json").read_text()).items()
    assert key.startswith("float32 training blocks") and set(blocks) <= set(BLOCKS)
    assert all(not torch.equal(p, before[n]) for n, p in adapter.model.named_parameters())
    assert all(p.dtype == torch.float32 and p.requires_grad for p in adapter.model.parameters())
    # Another size trains every block in bf16 without a second trial.
    assert adapter.step(left[:64, :128], right[:64, :128]).adapted
    assert len(json.loads((tmp_path / "precision.json").read_text())) == 1


def test_fp16_on_cpu_is_rejected():
    with pytest.raises(ValueError, match="fp16 needs a CUDA"):
        OnlineAdapter(MADNet(), WeightsInfo(), AdapterConfig(amp="fp16"))


def test_reconfigure_switches_the_fast_path_between_frames(motorcycle_crop):
    left, right, _ = motorcycle_crop
    adapter = OnlineAdapter(MADNet(), WeightsInfo(), AdapterConfig(adaptation_mode="none", **PLAIN))
    before = adapter.step(left, right).disparity
    adapter.reconfigure(AdapterConfig(adaptation_mode="none", channels_last=True, amp="off"))
    assert adapter.model.pyramid[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    assert np.abs(adapter.step(left, right).disparity - before).max() < 1e-2
    with pytest.raises(ValueError, match="fp16"):
        adapter.reconfigure(AdapterConfig(adaptation_mode="none", amp="fp16"))
    assert adapter.config.amp == "off"  # the refused configuration left the last one


@pytest.mark.slow
def test_compiled_inference_matches_eager(motorcycle_crop):
    left, right, _ = motorcycle_crop
    left, right = left[:64, :128], right[:64, :128]
    eager, compiled = _pair(AdapterConfig(adaptation_mode="none", channels_last=True, amp="off"),
                            AdapterConfig(adaptation_mode="none", channels_last=True, amp="off",
                                          compile=True))
    a, b = eager.step(left, right), compiled.step(left, right)
    assert np.abs(a.disparity - b.disparity).max() < 1e-2


@pytest.mark.slow
def test_compiled_mad_step_matches_eager(motorcycle_crop):
    """compile=True also compiles the photometric error of every step: a MAD step trains the
    same block to the same weights (Adam: within its step size) and returns the same loss."""
    left, right, _ = motorcycle_crop
    left, right = left[:64, :128], right[:64, :128]
    config = AdapterConfig(adaptation_mode="mad", mad_sampling="fixed", mad_fixed_block=5,
                           channels_last=True, amp="off")
    eager, compiled = _pair(config, replace(config, compile=True))
    a, b = eager.step(left, right), compiled.step(left, right)
    assert a.adapted and b.adapted and a.block == b.block == 5
    assert abs(a.loss - b.loss) < 1e-4 * abs(a.loss)
    assert np.abs(a.confidence - b.confidence).max() < 1e-3
    for p, q in zip(eager.model.parameters(), compiled.model.parameters()):
        assert (p - q).abs().max() <= 1.01 * config.learning_rate


@pytest.mark.parametrize("block", [2, 5])
def test_a_float32_block_under_bf16_autocast_is_float32_and_trains_alone(motorcycle_crop,
                                                                        block):
    """float32_blocks runs a MAD block in float32 inside bf16 autocast: its predictions stay
    close to all-float32 ones, only its parameters get gradients, and they are float32."""
    left, right, _ = motorcycle_crop
    torch.manual_seed(0)
    model = MADNet()

    def to_tensor(image):
        return torch.from_numpy(image[:64, :128].astype(np.float32) / 255).permute(2, 0, 1)[None]

    inputs = (to_tensor(left), to_tensor(right))
    with torch.no_grad():
        reference = model(*inputs).levels[block]
    for param in model.parameters():
        param.requires_grad_(False)
    names = set(model.block_parameter_names()[block])
    trained = [p for name, p in model.named_parameters() if name in names]
    for param in trained:
        param.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model(*inputs, detach_between_blocks=True, float32_blocks=(block,))
        plain = model(*inputs, detach_between_blocks=True)
    error_mixed = (mixed.levels[block] - reference).abs().mean()
    error_plain = (plain.levels[block] - reference).abs().mean()
    # Its own layers in float32: closer to float32 than all-bf16 (for block 5 everything
    # feeding it but its own pyramid level is still bf16).
    assert error_mixed < error_plain
    mixed.levels[block].float().mean().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in trained)
    others = [p for p in model.parameters() if all(p is not q for q in trained)]
    assert all(p.grad is None for p in others)


def test_bf16_mad_step_on_a_coarse_block_changes_only_that_block(motorcycle_crop):
    left, right, _ = motorcycle_crop
    adapter, = _pair(AdapterConfig(adaptation_mode="mad", mad_sampling="fixed", mad_fixed_block=5,
                                   amp="bf16"), AdapterConfig())[:1]
    before = {n: p.detach().clone() for n, p in adapter.model.named_parameters()}
    result = adapter.step(left, right)
    assert result.adapted and result.block == 5
    changed = {MADNet.block_of(n) for n, p in adapter.model.named_parameters()
               if not torch.equal(p, before[n])}
    assert changed == {5}
    assert all(p.dtype == torch.float32 for p in adapter.model.parameters())
