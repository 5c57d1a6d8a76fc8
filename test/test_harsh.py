"""The harsh development sequences (training_data/harsh.py) and the synth command that writes
them."""

import numpy as np
import pytest

from stereo_adapt_ros.cli.main import main
from stereo_adapt_ros.data.datasets import open_dataset
from stereo_adapt_ros.training_data.harsh import HARSH_SEQUENCES, render_harsh


@pytest.mark.parametrize("name", list(HARSH_SEQUENCES))
def test_every_sequence_renders_as_declared(name):
    _, (height, width), grey = HARSH_SEQUENCES[name]
    frames = render_harsh(name, 5, seed=3)
    assert len(frames) == 5
    for index, (sample, visible) in enumerate(frames):
        assert sample.left.shape == sample.right.shape == (height, width, 3)
        if grey:
            assert (sample.left[..., 0] == sample.left[..., 2]).all()
        if name == "bad_frames" and index == 4:
            # An identical pair injected: fed to the adapter, never scored.
            assert np.isnan(sample.disparity).all() and not visible.any()
            assert (sample.left == sample.right).all()
            continue
        assert np.isfinite(sample.disparity).all() and (sample.disparity > 0).all()
        assert visible.mean() > 0.3


@pytest.mark.slow
def test_a_seed_renders_the_same_frames_again():
    for name in ("board_poses", "cuts"):
        first, again = (render_harsh(name, 3, seed=5)[2][0] for _ in range(2))
        assert (first.left == again.left).all() and (first.right == again.right).all()


def test_near_range_sequences_reach_their_disparities():
    board = np.stack([s.disparity for s, _ in render_harsh("board_poses", 4, seed=1)])
    assert 45 < np.percentile(board, 99) < 110
    near = np.stack([s.disparity for s, _ in render_harsh("near_poses", 4, seed=1)])
    assert near.max() <= 0.4 * 320 + 1 and near.max() > 0.25 * 320


def test_unknown_names_and_counts_are_refused():
    with pytest.raises(ValueError, match="unknown harsh sequence"):
        render_harsh("chess", 3)
    with pytest.raises(ValueError, match="frames must be"):
        render_harsh("cuts", 0)


def test_synth_writes_harsh_sequences_eval_can_read(tmp_path):
    assert main(["synth", str(tmp_path), "--harsh", "board_poses", "--harsh", "bad_frames",
                 "--sequence", "5"]) == 0
    board = open_dataset(tmp_path / "board_poses")
    assert len(board) == 5 and board[0].left.shape == (240, 320, 3)
    bad = open_dataset(tmp_path / "bad_frames")
    assert np.isnan(bad[4].disparity).all() and np.isfinite(bad[3].disparity).any()
