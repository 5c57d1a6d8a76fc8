import numpy as np
import pytest
import torch

from stereo_adapt_ros.adaptation.losses import photometric_error
from stereo_adapt_ros.training_data.synthetic import SynthConfig, TextureBank, render_batch, \
    render_sequence

SMALL = SynthConfig(height=96, width=256, min_disparity=2, max_disparity=48, shapes=(3, 6))


@pytest.fixture(scope="module")
def bank():
    return TextureBank()


def test_deterministic_from_the_seed(bank):
    a = render_batch(2, SMALL, seed=7, bank=bank)
    b = render_batch(2, SMALL, seed=7, bank=bank)
    c = render_batch(2, SMALL, seed=8, bank=bank)
    assert torch.equal(a.left, b.left) and torch.equal(a.disparity, b.disparity)
    assert not torch.equal(a.disparity, c.disparity)


def test_shapes_ranges_and_types(bank):
    batch = render_batch(3, SMALL, seed=1, bank=bank)
    assert batch.left.shape == batch.right.shape == (3, 3, 96, 256)
    assert batch.disparity.shape == batch.visible.shape == (3, 1, 96, 256)
    assert batch.visible.dtype == torch.bool
    assert 0 <= batch.left.min() and batch.left.max() <= 1
    assert torch.isfinite(batch.disparity).all()
    assert batch.disparity.min() > 0.5 * SMALL.min_disparity
    assert batch.disparity.max() < 1.5 * SMALL.max_disparity
    # Some occlusion and out-of-view region, mostly visible.
    assert 0.5 < batch.visible.float().mean() < 0.99


def test_ground_truth_is_exact(bank):
    """Without the photometric effects, the right image warped by the ground truth rebuilds
    the left image on visible pixels, and not on occluded ones."""
    exact = SynthConfig(**{**vars(SMALL), "photometric": False})
    batch = render_batch(2, exact, seed=3, bank=bank)
    error = photometric_error(batch.left, batch.right, batch.disparity)
    assert error[batch.visible].mean() < 0.02
    assert error[~batch.visible].mean() > 10 * error[batch.visible].mean()


def test_sequence_moves_the_camera_through_a_static_scene(bank):
    frames = render_sequence(4, SMALL, seed=2, bank=bank)
    assert len(frames) == 4
    changes = [float((a.disparity - b.disparity).abs().mean())
               for a, b in zip(frames, frames[1:])]
    assert all(0 < c < 0.2 * SMALL.max_disparity for c in changes)


def test_invalid_configuration():
    with pytest.raises(ValueError):
        SynthConfig(height=8).validate()
    with pytest.raises(ValueError):
        SynthConfig(min_disparity=50, max_disparity=10).validate()


def test_synth_command_writes_a_kitti_layout_and_a_bag(tmp_path):
    from stereo_adapt_ros.cli.main import main
    from stereo_adapt_ros.data import open_dataset

    out = tmp_path / "synth"
    assert main(["synth", str(out), "--count", "2", "--sequence", "3", "--size", "64x160",
                 "--max-disparity", "32", "--device", "cpu"]) == 0
    pairs = open_dataset(str(out))
    assert len(pairs) == 2 and pairs[0].left.shape == (64, 160, 3)
    assert np.isfinite(pairs[0].disparity).all()
    noc = open_dataset(str(out), gt="noc")
    assert np.isnan(noc[0].disparity).any()
    assert np.nanmax(np.abs(noc[0].disparity - pairs[0].disparity)) == 0
    assert len(open_dataset(str(out / "sequence"))) == 3
    bag = open_dataset(str(out / "sequence_bag"))
    assert len(bag) == 3 and bag[2].disparity is not None
    # KITTI PNGs store 1/256 px.
    assert np.abs(bag[2].disparity - open_dataset(str(out / "sequence"))[2].disparity).max() \
        <= 1 / 256


def test_synth_writes_photo_generated_pairs_and_a_sequence(tmp_path):
    from stereo_adapt_ros.cli.main import main
    from stereo_adapt_ros.data import open_dataset

    out = tmp_path / "photo"
    assert main(["synth", str(out), "--source", "photo", "--photos", "builtin", "--split",
                 "train", "--count", "2", "--sequence", "3", "--size", "64x160",
                 "--device", "cpu"]) == 0
    pairs = open_dataset(str(out))
    assert len(pairs) == 2 and pairs[0].left.shape == (64, 160, 3)
    assert np.nanmax(pairs[0].disparity) <= 0.2 * 160 + 1 / 256
    frames = open_dataset(str(out / "sequence"))
    assert len(frames) == 3 and not np.array_equal(frames[0].left, frames[1].left)
    assert len(open_dataset(str(out / "sequence_bag"))) == 3
    assert main(["synth", str(tmp_path / "bad"), "--source", "photo", "--photos", "builtin",
                 "--max-disparity-fraction", "1.5"]) == 2
