import pytest
import torch

from stereo_adapt_ros.network import BLOCKS, MADNet
from stereo_adapt_ros.network.layers import correlation_1d, upsample_disparity, warp_right_to_left


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MADNet().eval()


def test_parameter_count_matches_the_paper(model):
    count = sum(p.numel() for p in model.parameters())
    assert 3.7e6 < count < 3.9e6


def test_blocks_partition_every_parameter_exactly_once(model):
    partition = model.block_parameter_names()
    assert set(partition) == set(BLOCKS)
    names = [n for block in partition.values() for n in block]
    assert len(names) == len(set(names))
    assert set(names) == {n for n, _ in model.named_parameters()}
    assert all(partition[b] for b in BLOCKS)
    assert all(n.startswith(("pyramid.0.", "pyramid.1.", "decoders.2.", "refinement."))
               for n in partition[2])
    assert all(n.startswith(("pyramid.5.", "decoders.6.")) for n in partition[6])


@pytest.mark.parametrize("size", [(64, 128), (77, 101), (20, 30), (130, 250)])
def test_any_input_size_gives_full_resolution_output(model, size):
    left, right = torch.rand(2, 1, 3, *size)
    with torch.no_grad():
        out = model(left, right)
    assert out.disparity.shape == (1, 1, *size)
    assert torch.isfinite(out.disparity).all()
    padded = [-(-s // 64) * 64 for s in size]
    for level in BLOCKS:
        assert out.levels[level].shape[-2:] == (padded[0] >> level, padded[1] >> level)
        assert out.upsampled(level).shape == (1, 1, *size)


def test_mismatched_inputs_are_rejected(model):
    with pytest.raises(ValueError, match="same shape"):
        model(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 80))
    with pytest.raises(ValueError, match="B x 3 x H x W"):
        model(torch.rand(1, 1, 64, 64), torch.rand(1, 1, 64, 64))


def test_detach_between_blocks_cuts_gradients_from_finer_to_coarser_decoders(model):
    left, right = torch.rand(2, 1, 3, 64, 128)
    out = model(left, right, detach_between_blocks=True)
    out.levels[4].sum().backward()
    grads = {n for n, p in model.named_parameters()
             if p.grad is not None and p.grad.abs().sum() > 0}
    model.zero_grad(set_to_none=True)
    assert any(n.startswith("decoders.4.") for n in grads)
    assert not any(n.startswith(("decoders.5.", "decoders.6.", "pyramid.4.", "pyramid.5."))
                   for n in grads)
    out = model(left, right)
    out.levels[4].sum().backward()
    grads = {n for n, p in model.named_parameters()
             if p.grad is not None and p.grad.abs().sum() > 0}
    model.zero_grad(set_to_none=True)
    assert any(n.startswith("decoders.6.") for n in grads)


def test_correlation_matches_hand_computation():
    left = torch.tensor([[[[1.0, 2.0, 3.0, 4.0]]], [[[0.5, 0.5, 0.5, 0.5]]]]).view(1, 2, 1, 4)
    right = torch.tensor([[[[2.0, 0.0, 1.0, 3.0]]], [[[1.0, 1.0, 1.0, 1.0]]]]).view(1, 2, 1, 4)
    corr = correlation_1d(left, right, radius=2)
    # shift i: mean over the two channels of L(x) * R(x + i), 0 outside
    r0, r1 = [2.0, 0.0, 1.0, 3.0], [1.0, 1.0, 1.0, 1.0]
    l0, l1 = [1.0, 2.0, 3.0, 4.0], [0.5] * 4
    for k, shift in enumerate(range(-2, 3)):
        for x in range(4):
            xs = x + shift
            expected = 0.0 if not 0 <= xs < 4 else (l0[x] * r0[xs] + l1[x] * r1[xs]) / 2
            assert corr[0, k, 0, x].item() == pytest.approx(expected)


def test_warp_with_integer_disparity_shifts_exactly():
    right = torch.arange(12.0).view(1, 1, 1, 12).repeat(1, 2, 3, 1)
    disparity = torch.full((1, 1, 3, 12), 3.0)
    warped = warp_right_to_left(right, disparity)
    assert torch.allclose(warped[..., 3:], right[..., :-3])
    assert torch.all(warped[..., :2] == 0)
    half = warp_right_to_left(right, torch.full((1, 1, 3, 12), 2.5))
    assert torch.allclose(half[..., 5:], right[..., 2:-3] + 0.5)


def test_upsampled_disparity_is_rescaled_to_new_pixels():
    disparity = torch.full((1, 1, 4, 8), 3.0)
    up = upsample_disparity(disparity, (16, 32))
    assert up.shape == (1, 1, 16, 32)
    assert torch.allclose(up, torch.full_like(up, 12.0))
