"""stereo-adapt plot: real PNG files from training scalars and eval JSON; clear errors."""

import json

import cv2
import pytest

from stereo_adapt_ros.cli.main import main


def _scalars(path, steps):
    path.write_text("".join(json.dumps({"step": s, "train_loss": 40 / s, "synthetic_EPE": 9 / s,
                                        "motorcycle_D1": 90 - s, "motorcycle_EPE": 20 / s})
                            + "\n" for s in steps))


@pytest.mark.slow
def test_training_curves_and_per_frame_metrics_are_written_as_png(tmp_path):
    _scalars(tmp_path / "scalars.jsonl", (1, 2, 3))
    out = tmp_path / "figures" / "curves.png"
    assert main(["plot", "training", str(tmp_path / "scalars.jsonl"), "--out", str(out)]) == 0
    image = cv2.imread(str(out))
    assert image is not None and image.shape[0] > 300 and image.shape[1] > 600

    runs = {"runs": [{"summary": {"mode": mode},
                      "frames": [{"index": i, "D1_all": 50 - i * k} for i in range(10)]}
                     for mode, k in (("full", 2), ("mad", 1))]}
    (tmp_path / "eval.json").write_text(json.dumps(runs))
    out = tmp_path / "frames.png"
    assert main(["plot", "frames", str(tmp_path / "eval.json"), "--out", str(out),
                 "--max-frames", "5"]) == 0
    assert cv2.imread(str(out)) is not None
    out = tmp_path / "labelled.png"
    assert main(["plot", "frames", str(tmp_path / "eval.json"), str(tmp_path / "eval.json"),
                 "--label", "SGD", "--label", "Adam", "--out", str(out)]) == 0
    assert cv2.imread(str(out)) is not None


def test_malformed_inputs_are_refused_with_the_reason(tmp_path, capsys):
    bad = tmp_path / "scalars.jsonl"
    bad.write_text('{"step": 1}\nnot json\n')
    assert main(["plot", "training", str(bad), "--out", str(tmp_path / "a.png")]) == 2
    assert "scalars.jsonl:2: not JSON" in capsys.readouterr().err
    (tmp_path / "eval.json").write_text(json.dumps({"summary": {}, "frames": [{"index": 0}]}))
    assert main(["plot", "frames", str(tmp_path / "eval.json"), "--out",
                 str(tmp_path / "b.png")]) == 2
    assert "no per-frame 'D1_all'" in capsys.readouterr().err
    (tmp_path / "other.json").write_text("[1, 2]")
    assert main(["plot", "frames", str(tmp_path / "other.json"), "--out",
                 str(tmp_path / "c.png")]) == 2
    assert "not a stereo-adapt eval --json file" in capsys.readouterr().err
    (tmp_path / "eval.json").write_text(json.dumps({"summary": {}, "frames": [
        {"index": 0, "D1_all": 3.0}]}))
    assert main(["plot", "frames", str(tmp_path / "eval.json"), "--label", "a", "--label", "b",
                 "--out", str(tmp_path / "d.png")]) == 2
    assert "--label given 2 times for 1 input files" in capsys.readouterr().err
    assert not any(tmp_path.glob("*.png"))
