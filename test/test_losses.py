import numpy as np
import pytest
import torch

import torch.nn.functional as F

from stereo_adapt_ros.adaptation import photometric_error, photometric_loss, ssim_dissimilarity
from stereo_adapt_ros.adaptation.losses import box_mean3, occlusion_mask, unwarped_error
from stereo_adapt_ros.adaptation.confidence import photometric_confidence


def _tensor(image):
    return torch.from_numpy(image.astype(np.float32) / 255).permute(2, 0, 1)[None]


def test_ssim_of_an_image_with_itself_is_zero(motorcycle_crop):
    left = _tensor(motorcycle_crop[0])
    assert ssim_dissimilarity(left, left).abs().max() < 1e-4
    assert ssim_dissimilarity(left, 1 - left).mean() > 0.3


def test_box_mean_equals_average_pooling_with_its_gradient(motorcycle_crop):
    x = _tensor(motorcycle_crop[0])[..., :61, :83].double().requires_grad_(True)
    ours, reference = box_mean3(x), F.avg_pool2d(x, 3, 1)
    assert ours.shape == reference.shape == (1, 3, 59, 81)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-12)
    weights = torch.rand_like(reference)
    grad_ours, = torch.autograd.grad((ours * weights).sum(), x)
    grad_reference, = torch.autograd.grad((reference * weights).sum(), x)
    torch.testing.assert_close(grad_ours, grad_reference, rtol=0, atol=1e-12)


def test_true_disparity_reconstructs_better_than_wrong_ones(motorcycle):
    left, right, gt = motorcycle
    left_t, right_t = _tensor(left), _tensor(right)
    filled = torch.from_numpy(np.nan_to_num(gt, nan=float(np.nanmedian(gt))))[None, None]
    true_loss, error = photometric_loss(left_t, right_t, filled)
    zero_loss, _ = photometric_loss(left_t, right_t, torch.zeros_like(filled))
    shifted_loss, _ = photometric_loss(left_t, right_t, filled + 4)
    assert error.shape == (1, 1, *gt.shape)
    assert true_loss < 0.6 * zero_loss
    assert true_loss < 0.8 * shifted_loss
    assert 0 <= float(error.min()) and float(error.max()) <= 1


def test_constant_shift_gives_zero_error_inside_the_view():
    torch.manual_seed(0)
    right = torch.rand(1, 3, 16, 40)
    left = torch.zeros_like(right)
    left[..., 5:] = right[..., :-5]
    error = photometric_error(left, right, torch.full((1, 1, 16, 40), 5.0))
    # SSIM pools 3x3, so keep one pixel away from the out-of-view band and the border.
    assert error[..., 1:-1, 7:-1].max() < 1e-4


def test_weighted_loss_and_smoothness():
    torch.manual_seed(0)
    left, right = torch.rand(2, 1, 3, 16, 32)
    disparity = torch.rand(1, 1, 16, 32) * 3
    plain, error = photometric_loss(left, right, disparity)
    weights = torch.zeros_like(error)
    weights[..., :8, :] = 1
    weighted, _ = photometric_loss(left, right, disparity, weights=weights)
    assert torch.isclose(weighted, error[..., :8, :].mean())
    smooth, _ = photometric_loss(left, right, disparity, smoothness_weight=0.1)
    assert smooth > plain


def test_confidence_is_low_for_errors_and_zero_out_of_view():
    error = torch.tensor([[[[0.0, 0.0, 0.5, 0.05]]]])
    disparity = torch.tensor([[[[2.0, 0.0, 0.0, 1.0]]]])
    confidence = photometric_confidence(error, disparity)
    assert confidence[0, 0, 0, 0] == 0  # x - d = -2: outside the right image
    assert confidence[0, 0, 0, 1] == 1
    assert confidence[0, 0, 0, 2] < 0.01
    assert 0.5 < confidence[0, 0, 0, 3] < 0.7


def test_automask_gives_no_gradient_where_the_unwarped_view_already_matches(motorcycle_crop):
    left, _, _ = motorcycle_crop
    image = torch.from_numpy(left).permute(2, 0, 1)[None].float() / 255
    disparity = torch.full((1, 1, *image.shape[-2:]), 3.0, requires_grad=True)
    # A static pair (both views the same image): the unwarped error is 0 everywhere.
    loss, error = photometric_loss(image, image, disparity, automask=True)
    assert loss.item() < 1e-5 and error.mean() > 0.01
    loss.backward()
    assert disparity.grad.abs().max() == 0
    plain, _ = photometric_loss(image, image, disparity.detach(), automask=False)
    assert plain.item() == pytest.approx(error.mean().item())


def test_automask_with_the_unwarped_error_given_is_the_same_loss(motorcycle_crop):
    """A MAD step computes the unwarped error once for its two losses: same loss, same
    gradient as computing it inside each."""
    left, right, _ = motorcycle_crop
    left_t, right_t = (torch.from_numpy(i).permute(2, 0, 1)[None].float() / 255
                       for i in (left, right))
    disparity = torch.full((1, 1, *left_t.shape[-2:]), 20.0, requires_grad=True)
    inside, _ = photometric_loss(left_t, right_t, disparity, automask=True)
    (inside_grad,) = torch.autograd.grad(inside, disparity)
    given, _ = photometric_loss(left_t, right_t, disparity, automask=True,
                                identity_error=unwarped_error(left_t, right_t, disparity))
    (given_grad,) = torch.autograd.grad(given, disparity)
    assert torch.equal(inside, given) and torch.equal(inside_grad, given_grad)


def test_occlusion_mask_leaves_out_hidden_and_out_of_view_pixels():
    # One row: a near surface (disparity 3) right of a far one (0.5): far pixels 1 and 2
    # land where the near pixels 4 and 5 land; pixel 0 falls out of view.
    disparity = torch.tensor([0.5, 0.5, 0.5, 3, 3, 3]).view(1, 1, 1, 6)
    assert occlusion_mask(disparity).flatten().tolist() == [False, False, False, True, True,
                                                            True]
    left = torch.rand(1, 3, 4, 6, generator=torch.Generator().manual_seed(0))
    right = torch.rand(1, 3, 4, 6, generator=torch.Generator().manual_seed(1))
    loss, error = photometric_loss(left, right, disparity.expand(1, 1, 4, 6), occlusion=True)
    assert loss.item() == pytest.approx(error[..., 3:].mean().item(), rel=1e-5)
