"""L2A meta-learning on a tiny configuration (64 x 128 synthetic sequences, float64): the
meta-gradient points where a finite difference says the post-adaptation loss falls, second and
first order agree in sign, the confidence network learns only from the outer loss, and the
adapter uses a meta-trained file's confidence network."""

import json

import numpy as np
import pytest
import torch

from stereo_adapt_ros.adaptation import AdapterConfig, OnlineAdapter
from stereo_adapt_ros.adaptation.losses import photometric_loss
from stereo_adapt_ros.cli.main import main
from stereo_adapt_ros.network import MADNet
from stereo_adapt_ros.network.confidence_net import PREFIX, ConfidenceNetwork
from stereo_adapt_ros.network.weights import InputNormalization, read_weights
from stereo_adapt_ros.training_data.synthetic import SynthConfig, TextureBank, render_sequence
from stereo_adapt_ros.training.meta import MetaConfig, meta_gradients, task_losses

SYNTH = SynthConfig(height=64, width=128, max_disparity=24)
NORMALIZATION = InputNormalization()
# A small inner rate keeps the post-adaptation loss smooth enough for finite differences: the
# network's warps and kinks make it rough at larger ones (from random weights the second-order
# term then dominates and finite differences change sign with the step). At this rate the
# second-order gradient still differs from the first-order one by about 25 % of its norm.
ALPHA = 1e-6


def _task(seed, dtype=torch.float64):
    frames = render_sequence(2, SYNTH, seed=seed, bank=TextureBank())
    for frame in frames:
        frame.left, frame.right = frame.left.to(dtype), frame.right.to(dtype)
        frame.disparity = frame.disparity.to(dtype)
    return frames


def _model(dtype=torch.float64):
    torch.manual_seed(0)
    return MADNet().to(dtype)


def _outer(model, frames, confidence=None):
    params = {n: p.detach().requires_grad_(True) for n, p in model.named_parameters()}
    outer, _ = task_losses(model, params, confidence, frames, NORMALIZATION, ALPHA, None,
                           SYNTH.max_disparity)
    return float(outer.detach())


def _meta_gradient(model, frames, order, confidence=None):
    model.zero_grad(set_to_none=True)
    config = MetaConfig(alpha=ALPHA, order=order, synth=SYNTH)
    meta_gradients(model, confidence, [frames], NORMALIZATION, config)
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def _shifted(model, direction, step):
    moved = _model()
    offset = 0
    with torch.no_grad():
        for param, original in zip(moved.parameters(), model.parameters()):
            count = param.numel()
            param.copy_(original + step * direction[offset:offset + count].view_as(param))
            offset += count
    return moved


@pytest.mark.slow
def test_meta_gradients_agree_with_finite_differences_and_lower_the_adapted_loss():
    model, frames = _model(), _task(11)
    second = _meta_gradient(model, frames, "second")
    first = _meta_gradient(model, frames, "first")
    assert second.norm() > 0 and first.norm() > 0
    assert not torch.allclose(first, second)  # the inner step is differentiated through
    base = _outer(model, frames)
    for gradient in (second, first):
        unit = gradient / gradient.norm()
        # The exact (second-order) directional derivative along this direction...
        predicted = float(second @ unit)
        for epsilon in (1e-3, 1e-4):
            finite = (_outer(_shifted(model, unit, epsilon), frames)
                      - _outer(_shifted(model, unit, -epsilon), frames)) / (2 * epsilon)
            # ...and a central difference agree in sign, and roughly in size.
            assert np.sign(finite) == np.sign(predicted) == 1, (finite, predicted)
            assert 0.5 < finite / predicted < 2, (finite, predicted)
        # A meta-step along -gradient lowers the loss after adaptation.
        assert _outer(_shifted(model, -unit, 1e-3), frames) < base
    # First order approximates the same direction.
    assert float(first @ second) > 0


def test_the_confidence_network_learns_only_from_the_outer_loss():
    model, frames = _model(torch.float32), _task(12, torch.float32)
    torch.manual_seed(1)
    confidence = ConfidenceNetwork()
    params = dict(model.named_parameters())
    phi = list(confidence.parameters())
    # The inner (self-supervised) loss does depend on the confidence network...
    output = model(NORMALIZATION.apply(frames[0].left), NORMALIZATION.apply(frames[0].right))
    inner, _ = photometric_loss(frames[0].left, frames[0].right, output.disparity,
                                weights=confidence)
    inner_grad = torch.autograd.grad(inner, phi)
    assert sum(float(g.abs().sum()) for g in inner_grad) > 0
    for order in ("second", "first"):
        # ...but what a meta-step accumulates in it is exactly the outer loss's gradient.
        outer, _ = task_losses(model, params, confidence, frames, NORMALIZATION, ALPHA, order,
                               SYNTH.max_disparity)
        expected = torch.autograd.grad(outer, phi)
        confidence.zero_grad(set_to_none=True)
        model.zero_grad(set_to_none=True)
        meta_gradients(model, confidence, [frames], NORMALIZATION,
                       MetaConfig(alpha=ALPHA, order=order, synth=SYNTH))
        for param, want, inner_g in zip(phi, expected, inner_grad):
            assert torch.allclose(param.grad, want, rtol=1e-4, atol=1e-9), order
            assert float(want.abs().sum()) > 0
            assert not torch.allclose(param.grad, inner_g)


def test_meta_train_writes_weights_the_adapter_uses_with_its_confidence(tmp_path, motorcycle_crop):
    assert main(["meta-train", str(tmp_path), "--weights", "random", "--steps", "2", "--tasks",
                 "1", "--size", "64x128", "--max-disparity", "24", "--validate-every", "2",
                 "--validation-tasks", "1", "--order", "first"]) == 0
    record = json.loads((tmp_path / "scalars.jsonl").read_text().splitlines()[-1])
    assert record["step"] == 2 and np.isfinite(record["validation_adapted_L1"])
    weights = tmp_path / "madnet_l2a.safetensors"
    tensors, _ = read_weights(weights)
    assert any(k.startswith("confidence.") for k in tensors)

    left, right, _ = motorcycle_crop
    adapter = OnlineAdapter.from_weights(str(weights), AdapterConfig(
        adaptation_mode="mad", mad_sampling="fixed", mad_fixed_block=3))
    assert adapter._confidence_net is not None
    frozen = {k: v.clone() for k, v in adapter._confidence_net.state_dict().items()}
    before = {n: p.detach().clone() for n, p in adapter.model.named_parameters()}
    result = adapter.step(left, right)
    changed = {n for n, p in adapter.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == set(adapter.model.block_parameter_names()[3])
    assert all(torch.equal(v, frozen[k]) for k, v in adapter._confidence_net.state_dict().items())
    # The published confidence is the learned one, not the photometric exp(-e/0.1).
    plain = OnlineAdapter.from_weights(str(weights), AdapterConfig(adaptation_mode="none"))
    plain._confidence_net = None
    assert not np.allclose(plain.step(left, right).confidence, result.confidence, atol=1e-3)
    assert 0 <= result.confidence.min() and result.confidence.max() <= 1

    # Resume continues from the checkpoint; a corrupt one is refused with the reason.
    assert main(["meta-train", str(tmp_path), "--weights", "random", "--steps", "3", "--tasks",
                 "1", "--size", "64x128", "--max-disparity", "24", "--validate-every", "3",
                 "--validation-tasks", "1", "--resume"]) == 0
    assert json.loads((tmp_path / "scalars.jsonl").read_text().splitlines()[-1])["step"] == 3
    (tmp_path / "checkpoint.safetensors").write_bytes(b"\x00" * 64)
    assert main(["meta-train", str(tmp_path), "--weights", "random", "--steps", "4",
                 "--size", "64x128", "--resume"]) == 2


def test_invalid_meta_configuration_and_confidence_tensors_are_rejected():
    for bad in (dict(order="third"), dict(alpha=0), dict(inner_steps=0)):
        with pytest.raises(ValueError):
            MetaConfig(**bad).validate()
    tensors = {PREFIX + k: v for k, v in ConfidenceNetwork().state_dict().items()}
    tensors["confidence.layers.0.weight"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="shape"):
        ConfidenceNetwork.from_tensors(tensors)
