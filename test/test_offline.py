"""Offline adaptation of a recording (stereo-adapt adapt) on real pairs, no labels used."""

import json

import cv2
import pytest

from stereo_adapt_ros.cli.main import main
from stereo_adapt_ros.data.io import write_kitti_disparity
from stereo_adapt_ros.network import load_model, read_weights
from stereo_adapt_ros.training.offline import split_frames


@pytest.fixture(scope="module")
def recording(tmp_path_factory, motorcycle):
    """Six real 128 x 192 crops of the Motorcycle pair, as a CSV list with ground truth."""
    left, right, disparity = motorcycle
    root = tmp_path_factory.mktemp("rec")
    lines = []
    for i, x in enumerate(range(100, 400, 50)):
        window = (slice(180, 308), slice(x, x + 192))
        cv2.imwrite(str(root / f"l{i}.png"), cv2.cvtColor(left[window], cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / f"r{i}.png"), cv2.cvtColor(right[window], cv2.COLOR_RGB2BGR))
        write_kitti_disparity(root / f"d{i}.png", disparity[window])
        lines.append(f"l{i}.png,r{i}.png,d{i}.png")
    (root / "rec.csv").write_text("\n".join(lines) + "\n")
    return root / "rec.csv"


def test_split_keeps_the_last_frames_out():
    assert split_frames(10, 0.2) == (list(range(8)), [8, 9])
    assert split_frames(2, 0.9) == ([0], [1])
    with pytest.raises(ValueError):
        split_frames(1, 0.2)


@pytest.mark.slow
def test_adapt_writes_the_best_weights_and_resumes(tmp_path, recording):
    out = tmp_path / "env.safetensors"
    args = ["adapt", str(recording), "--out", str(out), "--learning-rate", "1e-5",
            "--amp", "off", "--no-progress", "--patience", "5"]
    assert main([*args, "--epochs", "2"]) == 0
    epochs = [json.loads(line) for line in
              (tmp_path / "env.safetensors.run" / "epochs.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [0, 1, 2]
    # Choice by the self-supervised held-out loss; the ground truth is only reported.
    assert all("heldout_loss" in e and "heldout_D1" in e for e in epochs)
    best = min(epochs, key=lambda e: e["heldout_loss"])
    model, info, _ = load_model(str(out), "cpu")
    assert f"epoch {best['epoch']}" in info.description
    assert epochs[-1]["train_loss"] > 0
    # Resuming to 3 epochs runs only the third.
    assert main([*args, "--epochs", "3", "--resume"]) == 0
    lines = (tmp_path / "env.safetensors.run" / "epochs.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1, 2, 3]
    assert read_weights(tmp_path / "env.safetensors.run" / "checkpoint.safetensors")[1] \
        .extra["step"] == "3"


def test_adapt_refuses_bad_requests(tmp_path, recording, capsys):
    assert main(["adapt", str(recording), "--out", str(tmp_path / "x.pt")]) == 2
    assert ".safetensors" in capsys.readouterr().err
    assert main(["adapt", str(recording), "--out", str(tmp_path / "y.safetensors"),
                 "--holdout", "1.5"]) == 2
    assert not (tmp_path / "y.safetensors").exists()
