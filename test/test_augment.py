"""Training augmentation: every transform against hand-computed values, and the driver."""

from dataclasses import replace

import pytest
import torch
from skimage import data as skdata

from stereo_adapt_ros.data.sample import StereoBatch
from stereo_adapt_ros.training_data.augment import (LUMA, NO_AUGMENTATION, AugmentConfig,
                                                    adjust_colour, augment, fill_boxes,
                                                    gaussian_blur, grey, rescale_window,
                                                    shift_vertical)


def _photo(h=48, w=64):
    image = torch.from_numpy(skdata.astronaut()[100:100 + h, 150:150 + w].copy())
    return image.permute(2, 0, 1).float()[None] / 255


def _batch(h=48, w=64):
    left = _photo(h, w)
    disparity = torch.linspace(2, 10, w).view(1, 1, 1, w).expand(1, 1, h, w).clone()
    return StereoBatch(left, left.roll(-3, dims=-1), disparity, disparity > 4)


def _ones(value, count=1):
    return torch.full((count,), float(value))


def test_colour_identity_and_hand_computed_values():
    image = torch.tensor([0.2, 0.4, 0.8]).view(1, 3, 1, 1).expand(1, 3, 2, 2).clone()
    same = adjust_colour(image, _ones(1), _ones(1), _ones(1), _ones(1), torch.ones(1, 3))
    assert torch.allclose(same, image)
    # Brightness 1.5 alone multiplies every channel.
    bright = adjust_colour(image, _ones(1), _ones(1), _ones(1.5), _ones(1), torch.ones(1, 3))
    assert torch.allclose(bright[0, :, 0, 0], torch.tensor([0.3, 0.6, 1.0]))  # 1.2 clipped
    # Gamma 2 squares.
    gamma = adjust_colour(image, _ones(2), _ones(1), _ones(1), _ones(1), torch.ones(1, 3))
    assert torch.allclose(gamma[0, :, 0, 0], torch.tensor([0.04, 0.16, 0.64]))
    # Saturation 0: every channel becomes the luma.
    luma = sum(w * v for w, v in zip(LUMA, (0.2, 0.4, 0.8)))
    flat = adjust_colour(image, _ones(1), _ones(1), _ones(1), _ones(0), torch.ones(1, 3))
    assert torch.allclose(flat, torch.full_like(flat, luma), atol=1e-6)
    # Channel gains.
    gains = adjust_colour(image, _ones(1), _ones(1), _ones(1), _ones(1),
                          torch.tensor([[0.5, 1.0, 1.25]]))
    assert torch.allclose(gains[0, :, 0, 0], torch.tensor([0.1, 0.4, 1.0]))


def test_contrast_scales_about_the_mean_grey():
    image = torch.tensor([0.2, 0.6]).view(1, 1, 1, 2).expand(1, 3, 1, 2).clone()
    out = adjust_colour(image, _ones(1), _ones(0.5), _ones(1), _ones(1), torch.ones(1, 3))
    # Mean grey 0.4: 0.2 -> 0.3, 0.6 -> 0.5.
    assert torch.allclose(out[0, 0, 0], torch.tensor([0.3, 0.5]))
    assert torch.allclose(grey(image)[0, 0], image[0, 0])


def test_blur_keeps_flat_images_and_spreads_a_dot():
    flat = torch.full((1, 3, 9, 9), 0.3)
    assert torch.allclose(gaussian_blur(flat, 1.0), flat)
    dot = torch.zeros(1, 1, 9, 9)
    dot[0, 0, 4, 4] = 1
    blurred = gaussian_blur(dot, 1.0)
    assert blurred.sum().item() == pytest.approx(1.0, abs=1e-5)
    kernel = torch.exp(-torch.arange(-2, 3).float() ** 2 / 2)
    kernel /= kernel.sum()
    assert torch.allclose(blurred[0, 0, 2:7, 2:7], kernel[:, None] * kernel[None, :], atol=1e-6)
    assert torch.equal(gaussian_blur(dot, 0), dot)


def test_boxes_take_the_mean_colour_before_painting():
    image = _photo()
    mean = image.mean(dim=(2, 3))
    out = fill_boxes(image, [[(5, 10, 4, 6)]])
    assert torch.allclose(out[0, :, 5:9, 10:16], mean[0].view(3, 1, 1).expand(3, 4, 6))
    outside = torch.ones(48, 64, dtype=torch.bool)
    outside[5:9, 10:16] = False
    assert torch.equal(out[0][:, outside], image[0][:, outside])


def test_vertical_shift_moves_rows():
    image = torch.arange(6, dtype=torch.float32).view(1, 1, 6, 1).expand(1, 1, 6, 3).clone()
    down = shift_vertical(image, torch.tensor([1.0]))
    assert torch.allclose(down[0, 0, :, 1], torch.tensor([0.0, 0, 1, 2, 3, 4]))
    half = shift_vertical(image, torch.tensor([-0.5]))
    assert torch.allclose(half[0, 0, :, 0], torch.tensor([0.5, 1.5, 2.5, 3.5, 4.5, 5.0]))


def test_rescale_window_scales_the_disparity_by_the_horizontal_factor():
    batch = _batch()
    out = rescale_window(batch, 8, 16, 24, 32, (48, 64))
    assert out.left.shape == (1, 3, 48, 64)
    # Nearest-neighbour: every output disparity is twice a source value of the window.
    sources = batch.disparity[0, 0, 8:32, 16:48].unique()
    assert torch.isin(out.disparity / 2, sources).all()
    assert out.disparity.max() == pytest.approx(2 * float(sources.max()))
    assert out.visible.dtype == torch.bool
    same = rescale_window(batch, 0, 0, 48, 64, (48, 64))
    assert torch.equal(same.disparity, batch.disparity)


def test_no_augmentation_passes_the_pair_through():
    batch = _batch()
    out = augment(batch, NO_AUGMENTATION, torch.Generator().manual_seed(0))
    for a, b in zip((out.left, out.right, out.disparity, out.visible),
                    (batch.left, batch.right, batch.disparity, batch.visible)):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)


def test_augment_is_seeded_asymmetric_and_keeps_the_ground_truth_consistent():
    batch = _batch()
    config = AugmentConfig(asymmetric=1.0)
    a = augment(batch, config, torch.Generator().manual_seed(3), (32, 48))
    b = augment(batch, config, torch.Generator().manual_seed(3), (32, 48))
    assert torch.equal(a.left, b.left) and torch.equal(a.right, b.right)
    assert a.left.shape == (1, 3, 32, 48) and a.disparity.shape == (1, 1, 32, 48)
    assert a.left.min() >= 0 and a.left.max() <= 1
    # Only the scale changes disparities: without zoom and stretch they are source values.
    fixed = augment(batch, replace(config, scale=(0, 0), stretch=0),
                    torch.Generator().manual_seed(4), (32, 48))
    assert torch.isin(fixed.disparity, batch.disparity).all()


def test_invalid_configurations_are_refused():
    for bad in (AugmentConfig(blur=1.5), AugmentConfig(brightness=1.0),
                AugmentConfig(noise=-1), AugmentConfig(scale=(0.4, -0.2))):
        with pytest.raises(ValueError):
            bad.validate()
    with pytest.raises(ValueError, match="cannot cut"):
        augment(_batch(), AugmentConfig(), torch.Generator(), (96, 64))


def test_grey_pairs_are_luma_in_every_channel():
    batch = _batch()
    grey = augment(batch, replace(NO_AUGMENTATION, grey=1.0), torch.Generator().manual_seed(0))
    luma = (batch.left * torch.tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)
    assert torch.allclose(grey.left, luma.expand(-1, 3, -1, -1), atol=1e-6)
    assert torch.equal(grey.right[:, 0], grey.right[:, 2])
    colour = augment(batch, replace(NO_AUGMENTATION, grey=0.0), torch.Generator().manual_seed(0))
    assert not torch.equal(colour.left[:, 0], colour.left[:, 2])
    with pytest.raises(ValueError, match="grey is a probability"):
        AugmentConfig(grey=1.5).validate()
