"""Stereo from single photographs: the z-buffered forward warp by hand, and generated pairs
that the ground truth warps back onto the left view."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data as skdata

from stereo_adapt_ros.network.layers import visible_in_right
from stereo_adapt_ros.training_data.photo_stereo import (PhotoStereoConfig, fill_holes,
                                                         forward_warp, render_photo_batch,
                                                         render_photo_sequence)
from array_photos import ArrayPhotos

PHOTOS = ArrayPhotos([skdata.astronaut(), skdata.coffee(), skdata.chelsea(), skdata.rocket(),
                      np.stack([skdata.camera()] * 3, axis=-1)])
CONFIG = PhotoStereoConfig(height=96, width=160)


def _row(values):
    return torch.tensor(values, dtype=torch.float32).view(1, 1, 1, -1)


def test_constant_disparity_shifts_the_row():
    image = _row([1, 2, 3, 4, 5, 6])
    warped, depth, coverage = forward_warp(image, torch.full_like(image, 2.0), 1.0)
    assert torch.equal(warped.flatten(), torch.tensor([3.0, 4, 5, 6, 0, 0]))
    assert torch.equal(depth.flatten(), torch.tensor([2.0, 2, 2, 2, 0, 0]))
    assert torch.equal(coverage.flatten(), torch.tensor([1.0, 1, 1, 1, 0, 0]))


def test_sub_pixel_splat_shares_a_pixel_between_two_targets():
    image = _row([0, 0, 8, 0, 0])
    disparity = _row([0, 0, 0.25, 0, 0])  # the 8 lands at 1.75: 0.25 to 1, 0.75 to 2
    warped, _, coverage = forward_warp(image, disparity, 1.0)
    # Column 1 keeps its own 0 (weight 1, same surface within the tolerance) and gets 0.25
    # of the 8; column 2 gets only 0.75 of the 8.
    assert coverage.flatten()[1:3].tolist() == pytest.approx([1.25, 0.75])
    assert warped.flatten()[1:3].tolist() == pytest.approx([8 * 0.25 / 1.25, 8.0])


def test_z_buffer_keeps_the_nearer_surface():
    # Pixel 3 (disparity 3, near) and pixel 0 (disparity 0, far) both land on column 0.
    image = _row([10, 20, 30, 40, 50, 60])
    disparity = _row([0, 0, 0, 3, 3, 3])
    far = _row([0.5, 0.5, 0.5, 3, 3, 3])  # known everywhere, for the visibility
    warped, depth, _ = forward_warp(image, disparity, 1.0)
    assert warped.flatten()[0].item() == 40  # the near one wins
    assert depth.flatten()[0].item() == 3
    # Background pixels 1 and 2 are hidden too; columns 3-5 are disoccluded holes.
    assert torch.equal(warped.flatten()[:3], torch.tensor([40.0, 50, 60]))
    assert torch.equal(depth.flatten()[3:], torch.zeros(3))
    # Pixel 0 lands on column -0.5 (out of view), 1 and 2 behind the near surface.
    visible = visible_in_right(far).flatten()
    assert visible.tolist() == [False, False, False, True, True, True]


def test_visible_needs_the_pixel_in_view_and_known():
    disparity = _row([1, 0, 5, 1])
    assert visible_in_right(disparity).flatten().tolist() == [False, False, False, True]


def test_holes_are_filled_with_matched_statistics():
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.2 + 0.4
    holes = torch.zeros(1, 1, 16, 16, dtype=torch.bool)
    holes[..., 4:12, 4:12] = True
    filler = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    out = fill_holes(image, holes, filler)
    assert torch.equal(out[~holes.expand_as(out)], image[~holes.expand_as(image)])
    filled = out[..., 4:12, 4:12]
    known = image[..., :4, :]
    assert filled.mean().item() == pytest.approx(known.mean().item(), abs=0.05)


def _warp_back(right, disparity):
    b, _, h, w = right.shape
    xs = torch.arange(w).view(1, 1, 1, w).float() - disparity
    ys = torch.arange(h).view(1, 1, h, 1).float().expand_as(xs)
    grid = torch.stack((xs / (w - 1) * 2 - 1, ys / (h - 1) * 2 - 1), dim=-1)[:, 0]
    return F.grid_sample(right, grid, align_corners=True)


def test_generated_pairs_warp_back_onto_the_left_view():
    batch = render_photo_batch(3, PHOTOS, CONFIG, seed=5)
    assert batch.left.shape == (3, 3, 96, 160) and batch.disparity.shape == (3, 1, 96, 160)
    largest = batch.disparity.amax(dim=(1, 2, 3))
    assert (largest <= 0.3 * 160 + 1e-3).all() and (batch.disparity > 0).all()
    error = (_warp_back(batch.right, batch.disparity) - batch.left).abs().mean(dim=1,
                                                                                keepdim=True)
    visible = batch.visible
    assert 0.5 < visible.float().mean() < 1
    assert error[visible].mean() < 0.02
    assert (error[visible] > 0.1).float().mean() < 0.03
    # Occluded pixels see other surfaces (or the fill): far worse, or the test proves nothing.
    assert error[~visible].mean() > 5 * error[visible].mean()


def test_pairs_are_deterministic_from_the_seed():
    a = render_photo_batch(1, PHOTOS, CONFIG, seed=9)
    b = render_photo_batch(1, PHOTOS, CONFIG, seed=9)
    c = render_photo_batch(1, PHOTOS, CONFIG, seed=10)
    assert torch.equal(a.right, b.right) and torch.equal(a.disparity, b.disparity)
    assert not torch.equal(a.disparity, c.disparity)


def test_sequence_frames_are_consistent_views_of_one_scene():
    frames = render_photo_sequence(4, PHOTOS, CONFIG, seed=3, travel=2.0)
    assert len(frames) == 4
    for frame in frames:
        error = (_warp_back(frame.right, frame.disparity) - frame.left).abs().mean(dim=1,
                                                                                    keepdim=True)
        assert error[frame.visible].mean() < 0.03
        assert not frame.visible[frame.disparity == 0].any()
    # The camera moves: frames differ, and the first frame has no uncovered pixels.
    assert not torch.equal(frames[0].left, frames[1].left)
    assert (frames[0].disparity > 0).all()


def test_invalid_configurations_are_refused():
    for bad in (PhotoStereoConfig(height=8), PhotoStereoConfig(max_disparity_fraction=(0.3, 0.1)),
                PhotoStereoConfig(shapes=(3, 1))):
        with pytest.raises(ValueError):
            bad.validate()
    with pytest.raises(ValueError):
        render_photo_sequence(0, PHOTOS, CONFIG)
