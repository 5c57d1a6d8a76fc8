import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from stereo_adapt_ros.cli.main import main
from stereo_adapt_ros.data.io import write_kitti_disparity
from stereo_adapt_ros.network import MADNet, WeightsInfo, save_weights

FRAME_KEYS = {"index", "D1_all", "EPE", "loss", "block", "ms"}
SUMMARY_KEYS = {"mode", "frames", "D1_all", "EPE", "bad3", "density", "fps"}


@pytest.fixture(scope="module")
def csv_sequence(tmp_path_factory, motorcycle):
    """Three real crops on disk, listed in the original MADNet tool's CSV format."""
    left, right, disparity = motorcycle
    root = tmp_path_factory.mktemp("csvseq")
    lines = []
    for i, x in enumerate((100, 140, 180)):
        window = (slice(150, 278), slice(x, x + 192))
        cv2.imwrite(str(root / f"l{i}.png"), cv2.cvtColor(left[window], cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / f"r{i}.png"), cv2.cvtColor(right[window], cv2.COLOR_RGB2BGR))
        write_kitti_disparity(root / f"d{i}.png", disparity[window])
        lines.append(f"l{i}.png,r{i}.png,d{i}.png")
    (root / "seq.csv").write_text("\n".join(lines) + "\n")
    return root / "seq.csv"


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    return save_weights(tmp_path_factory.mktemp("w") / "w.safetensors", MADNet().state_dict(),
                        WeightsInfo(trained_on="test"))


def test_eval_writes_the_documented_json(tmp_path, csv_sequence, weights_file, capsys):
    out = tmp_path / "result.json"
    code = main(["eval", str(csv_sequence), "--adaptation-mode", "mad",
                 "--adaptation-loss", "photometric", "--weights",
                 str(weights_file), "--repeat", "2", "--json", str(out), "--save",
                 str(tmp_path / "png"), "--no-progress"])
    assert code == 0
    result = json.loads(out.read_text())
    assert SUMMARY_KEYS <= set(result["summary"])
    assert result["summary"]["mode"] == "mad" and result["summary"]["frames"] == 6
    assert 0 <= result["summary"]["D1_all"] <= 100
    assert "last_pass" in result["summary"]
    assert [f["index"] for f in result["frames"]] == list(range(6))
    assert all(FRAME_KEYS <= set(f) for f in result["frames"])
    assert all(f["block"] in (2, 3, 4, 5, 6) for f in result["frames"])
    assert len(list((tmp_path / "png" / "mad").glob("*_color.png"))) == 6
    table = capsys.readouterr().out
    assert "D1_all" in table and "mad" in table


def test_sgbm_and_madnet_side_by_side(tmp_path, csv_sequence, weights_file):
    out = tmp_path / "both.json"
    assert main(["eval", str(csv_sequence), "--method", "both", "--adaptation-mode", "none,full",
                 "--adaptation-loss", "photometric",
                 "--weights", str(weights_file), "--max-frames", "2", "--json", str(out),
                 "--no-progress"]) == 0
    runs = json.loads(out.read_text())["runs"]
    assert [r["summary"]["mode"] for r in runs] == ["none", "full", "sgbm"]
    sgbm = runs[2]["summary"]
    # SGBM leaves holes: counted as errors in D1_all, excluded from D1_valid.
    assert sgbm["density"] < 100 and sgbm["D1_valid"] <= sgbm["D1_all"]
    assert sgbm["D1_valid"] < 15


def test_no_method_sees_the_ground_truth(tmp_path, csv_sequence):
    """The same pairs with the ground truth halved: SGBM and the proxy must predict exactly
    the same disparities (their search range comes from --proxy-max-disparity, never from the
    ground truth), while the scores follow the ground truth."""
    halved = tmp_path / "halved"
    halved.mkdir()
    lines = []
    for line in csv_sequence.read_text().split():
        left, right, truth = line.split(",")
        for name in (left, right):
            (halved / name).write_bytes((csv_sequence.parent / name).read_bytes())
        disparity = cv2.imread(str(csv_sequence.parent / truth), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(halved / truth), (disparity // 2).astype(np.uint16))
        lines.append(line)
    (halved / "seq.csv").write_text("\n".join(lines) + "\n")
    saved, scores = {}, {}
    for name, data in (("original", csv_sequence), ("halved", halved / "seq.csv")):
        out = tmp_path / f"{name}.json"
        for method in ("sgbm", "proxy"):
            assert main(["eval", str(data), "--method", method, "--save",
                         str(tmp_path / name / method), "--json", str(out),
                         "--no-progress"]) == 0
            saved[name, method] = {p.relative_to(tmp_path / name / method): p.read_bytes()
                                   for p in sorted((tmp_path / name / method).rglob("*.png"))}
        scores[name] = json.loads(out.read_text())
    for method in ("sgbm", "proxy"):
        assert saved["original", method] and saved["original", method] == saved["halved", method]
    assert scores["original"] != scores["halved"]


def test_embedded_default_runs_with_scale(tmp_path):
    out = tmp_path / "default.json"
    assert main(["eval", "--adaptation-mode", "none", "--weights", "random", "--pan-frames", "2",
                 "--input-scale", "0.25", "--json", str(out), "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert result["summary"]["frames"] == 2 and result["frames"][0]["D1_all"] is not None


@pytest.mark.parametrize("argv, message", [
    (["eval", "--weights", "{corrupt}"], "not a readable safetensors"),
    (["eval", "--weights", "/no/such/file.safetensors"], "not found"),
    (["eval", "/no/such/dataset"], ""),
    (["eval", "--weights", "random", "--learning-rate", "-1"], "learning_rate"),
    (["eval", "--weights", "random", "--min-disparity", "-1"], "--min-disparity"),
    (["eval", "--weights", "random", "--max-disparity", "10", "--min-disparity", "20"],
     "--min-disparity"),
])
def test_bad_arguments_fail_with_a_clear_message(tmp_path, capsys, argv, message):
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not weights at all")
    argv = [a.replace("{corrupt}", str(corrupt)) for a in argv]
    assert main(argv + ["--pan-frames", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "stereo-adapt eval: error:" in err and message in err


def test_invalid_mode_is_rejected_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--adaptation-mode", "fast"])
    assert exit_info.value.code == 2
    assert "modes must be" in capsys.readouterr().err


@pytest.mark.slow
def test_python_dash_m_entry_point():
    result = subprocess.run([sys.executable, "-m", "stereo_adapt_ros", "eval", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--repeat" in result.stdout


@pytest.mark.slow
def test_bench_prints_side_by_side_ratios(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--size", "64x128", "--frames", "5", "--warmup", "1",
                 "--device", "cpu", "--compare", "--json", str(out)]) == 0
    result = json.loads(out.read_text())["results"][0]
    assert result["size"] == [64, 128]
    assert set(result["variants"]) == {"plain", "channels_last", "channels_last+bf16"}
    for row in result["variants"].values():
        for mode in ("none", "mad", "full"):
            assert row[mode]["median_ms"] > 0 and row[mode]["p90_ms"] >= row[mode]["median_ms"]
        assert row["ratio_mad"] > 0 and row["ratio_full"] > 0
        assert row["mean_ratio_mad"] == pytest.approx(
            row["mad"]["mean_ms"] / row["none"]["mean_ms"], rel=1e-2)
        # MAD steps cycle through the blocks: five frames time each block once.
        assert set(row["mad"]["block_median_ms"]) == {"2", "3", "4", "5", "6"}
    assert result["sgbm"]["median_ms"] > 0 and result["max_rss_mb"] > 0
    printed = capsys.readouterr().out
    assert "MAD/inf" in printed and "OpenCV SGBM" in printed and "by block" in printed


@pytest.mark.slow
def test_bench_splits_each_mode_and_times_the_disparity_alone(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--size", "64x128", "--frames", "2", "--warmup", "1", "--no-sgbm",
                 "--device", "cpu", "--disparity-only", "--json", str(out)]) == 0
    variants = json.loads(out.read_text())["results"][0]["variants"]
    assert set(variants) == {"default", "default, disparity only"}
    for row in variants.values():
        for mode in ("none", "mad", "full"):
            split = row[mode]["split_median_ms"]
            assert set(split) == {"network", "confidence", "conversions", "adaptation"}
            assert split["network"] > 0 and split["conversions"] > 0
            assert sum(split.values()) <= row[mode]["p90_ms"] * 1.01
        # Inference's rest is the few lines between the step's timers.
        assert row["none"]["split_median_ms"]["adaptation"] < 0.1 * row["none"]["median_ms"]
        assert row["full"]["split_median_ms"]["adaptation"] > 0
    assert "none split, median ms: network" in capsys.readouterr().out


def test_bench_rejects_a_bad_size(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--size", "320by1216"])
    assert "HEIGHTxWIDTH" in capsys.readouterr().err


def test_eval_refuses_a_bad_mad_loss_scale_with_the_reason(capsys):
    assert main(["eval", "--pan-frames", "2", "--mad-loss-scale", "2", "--no-progress"]) == 2
    assert "mad_loss_scale must be in [0.1, 1]" in capsys.readouterr().err
    assert main(["bench", "--size", "64x128", "--mad-loss-scale", "0.25", "--no-sgbm",
                 "--frames", "1", "--warmup", "0", "--device", "cpu"]) == 0
    assert "MAD loss x0.25" in capsys.readouterr().out


def test_bench_times_the_check_backing_off_and_refuses_a_bad_back_off(capsys):
    out = ["--frames", "2", "--warmup", "0", "--device", "cpu", "--no-sgbm", "--size", "64x128"]
    assert main(["bench", "--reference-check-backoff", "8", *out]) == 0
    printed = capsys.readouterr().out
    assert "default, check back-off 8" in printed and "ratios of the means" in printed
    assert main(["eval", "--pan-frames", "2", "--reference-check-backoff", "0",
                 "--no-progress"]) == 2
    assert "reference_check_backoff must be in [1, 1000]" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_times_a_half_resolution_proxy_and_refuses_a_bad_scale(capsys):
    out = ["--frames", "1", "--warmup", "0", "--device", "cpu", "--no-sgbm", "--size", "64x128"]
    assert main(["bench", "--proxy-scale", "0.5", *out]) == 0
    printed = capsys.readouterr().out
    assert "default, proxy x0.5" in printed and printed.count("MAD step by block") == 2
    assert main(["eval", "--pan-frames", "2", "--proxy-scale", "2", "--no-progress"]) == 2
    assert "proxy_scale must be in [0.25, 1]" in capsys.readouterr().err


@pytest.mark.slow
def test_steps_per_frame_and_the_oracle_row(tmp_path, csv_sequence):
    out = tmp_path / "oracle.json"
    assert main(["eval", str(csv_sequence), "--adaptation-mode", "none,full",
                 "--adaptation-loss", "photometric",
                 "--weights", "synthetic", "--steps-per-frame", "3", "--oracle",
                 "--learning-rate", "1e-5", "--json", str(out), "--no-progress"]) == 0
    runs = {r["summary"]["mode"]: r["summary"] for r in json.loads(out.read_text())["runs"]}
    assert set(runs) == {"none", "full x3", "full+oracle x3"}
    assert runs["full x3"]["steps_per_frame"] == 3 and runs["full+oracle x3"]["loss"] == "oracle"
    # Supervised on the frames' own ground truth, the oracle ends below no adaptation.
    assert runs["full+oracle x3"]["EPE"] < runs["none"]["EPE"]


def test_the_oracle_refuses_data_without_ground_truth(tmp_path, csv_sequence):
    unlabelled = tmp_path / "seq.csv"
    unlabelled.write_text("\n".join(",".join(line.split(",")[:2]) for line in
                                    csv_sequence.read_text().split()) + "\n")
    for line in csv_sequence.read_text().split():
        for name in line.split(",")[:2]:
            (tmp_path / name).write_bytes((csv_sequence.parent / name).read_bytes())
    assert main(["eval", str(unlabelled), "--adaptation-mode", "full", "--oracle",
                 "--weights", "random", "--no-progress"]) == 2


@pytest.mark.parametrize("after_s", [1.0, pytest.param(8.0, marks=pytest.mark.slow)])
def test_ctrl_c_ends_a_command_with_one_line_and_no_traceback(after_s):
    """Wherever SIGINT lands (importing torch, loading weights, evaluating), the command
    ends with one line and the shell's status for SIGINT, 130."""
    import signal
    import time

    process = subprocess.Popen([sys.executable, "-m", "stereo_adapt_ros", "eval",
                                "--adaptation-mode", "full", "--no-progress"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(after_s)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in err and err.strip().endswith("stereo-adapt: interrupted"), err


def test_bench_times_the_proxy_unpadded_beside_the_default(capsys):
    out = ["--frames", "1", "--warmup", "0", "--device", "cpu", "--no-sgbm", "--size", "64x160"]
    assert main(["bench", "--no-proxy-pad", *out]) == 0
    printed = capsys.readouterr().out
    assert "default, proxy unpadded" in printed and printed.count("MAD step by block") == 2
