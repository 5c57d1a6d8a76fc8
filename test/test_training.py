import json
import os
import subprocess
import sys

import pytest
import torch

from stereo_adapt_ros.cli.main import main
from stereo_adapt_ros.network import MADNet, WeightsInfo, load_model, read_weights
from stereo_adapt_ros.training import multiscale_l1
from stereo_adapt_ros.training.supervised import GUARDED_KEYS, TrainConfig, _keep_if_best, \
    worsened
from stereo_adapt_ros.training_data.synthetic import SynthConfig, render_batch

TINY = ["--size", "64x128", "--max-disparity", "24", "--batch", "1", "--validation-pairs",
        "1", "--device", "cpu", "--photos", "builtin"]


def test_multiscale_l1_is_zero_for_the_truth_and_positive_otherwise():
    batch = render_batch(1, SynthConfig(height=64, width=128, max_disparity=24), seed=0)
    model = MADNet()
    output = model(batch.left, batch.right)
    loss, levels = multiscale_l1(output, batch.disparity, 24)
    assert loss > 0 and set(levels) == {2, 3, 4, 5, 6}
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    for level in levels:
        output.levels[level] = torch.nn.functional.interpolate(
            batch.disparity, scale_factor=0.5 ** level, mode="area") / 2 ** level
    assert multiscale_l1(output, batch.disparity, 24)[0] < 0.25 * loss.detach()


@pytest.mark.slow
def test_training_lowers_the_loss_checkpoints_and_resumes(tmp_path):
    out = tmp_path / "run"
    # The procedural world alone, unaugmented and without warm-up: 30 steps must show it.
    assert main(["train", str(out), "--steps", "30", "--validate-every", "15",
                 "--checkpoint-every", "15", "--lr", "3e-4", "--warmup", "0",
                 "--photo-ratio", "0", "--no-augment", *TINY]) == 0
    records = [json.loads(line) for line in (out / "scalars.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [15, 30]
    # Mean training loss of steps 16-30 below that of steps 1-15 (fresh data every step).
    assert records[1]["train_loss"] < records[0]["train_loss"]
    assert {"synthetic_EPE", "motorcycle_D1", "pairs_per_s", "L1_level2", "near_D1",
            "grey_board_D1", "repetitive_D1", "low_texture_D1"} <= set(records[0])
    # The starting weights' validation, what no kept best may worsen by more than 5 %.
    baseline = json.loads((out / "baseline.json").read_text())
    assert set(GUARDED_KEYS) - {"photo_EPE"} <= set(baseline)
    tensors, info = read_weights(out / "checkpoint.safetensors")
    assert info.extra["step"] == "30" and any(k.startswith("optimizer.exp_avg.") for k in tensors)
    model, shipped, _ = load_model(str(out / "madnet_synthetic.safetensors"))
    assert "30 steps" in shipped.trained_on
    # The best validation is kept apart (here the procedural world's: no photo pairs).
    best = read_weights(out / "best.safetensors")[1]
    assert best.extra["selection"] == "synthetic_EPE"
    assert float(best.extra["selection_score"]) == min(r["synthetic_EPE"] for r in records)
    # Resuming continues from step 30 with the saved moments, up to 32.
    assert main(["train", str(out), "--steps", "32", "--resume", "--validate-every", "100",
                 *TINY]) == 0
    assert read_weights(out / "checkpoint.safetensors")[1].extra["step"] == "32"


@pytest.mark.slow
def test_data_parallel_training_with_two_cpu_processes(tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(29500 + os.getpid() % 1000),
         "-m", "stereo_adapt_ros", "train", str(out), "--steps", "3", "--validate-every", "3",
         *TINY], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    digests = [float((out / f"rank{r}.digest").read_text()) for r in (0, 1)]
    assert digests[0] == digests[1]
    assert (out / "madnet_synthetic.safetensors").exists()


def test_scene_pool_crops_the_same_window_from_both_views_and_the_truth():
    from stereo_adapt_ros.training.supervised import ScenePool

    config = SynthConfig(height=64, width=128, max_disparity=24)
    batch = render_batch(2, config, seed=5)
    pool = ScenePool(capacity=3, crop=(32, 48), seed=0)
    pool.add(batch)
    pool.add(render_batch(2, config, seed=6))
    assert len(pool.scenes) == 3  # the oldest scene left
    drawn = pool.draw(5)
    assert drawn.left.shape == (5, 3, 32, 48) and drawn.disparity.shape == (5, 1, 32, 48)
    # Every crop is one window of one pool scene, the same in all four tensors.
    for i in range(5):
        found = False
        for scene in pool.scenes:
            for top in range(64 - 32 + 1):
                for left in range(128 - 48 + 1):
                    window = (..., slice(top, top + 32), slice(left, left + 48))
                    if torch.equal(scene.left[window][0], drawn.left[i]):
                        found = all(torch.equal(getattr(scene, name)[window][0],
                                                getattr(drawn, name)[i])
                                    for name in ("right", "disparity", "visible"))
                        break
                if found:
                    break
            if found:
                break
        assert found, i


@pytest.mark.slow
def test_training_from_a_pool_of_crops_in_bf16(tmp_path, capsys):
    code = main(["train", str(tmp_path), "--steps", "3", "--batch", "2", "--size", "64x128",
                 "--crop", "32x64", "--reuse", "4", "--pool", "4", "--amp", "bf16",
                 "--channels-last", "--validate-every", "3", "--validation-pairs", "1",
                 "--max-disparity", "24", "--photos", "builtin"])
    assert code == 0
    record = json.loads((tmp_path / "scalars.jsonl").read_text().splitlines()[-1])
    assert record["step"] == 3 and record["train_loss"] > 0
    model, _, _ = load_model(str(tmp_path / "madnet_synthetic.safetensors"), "cpu")
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert main(["train", str(tmp_path / "x"), "--size", "64x128", "--crop", "96x64"]) == 2
    assert "crop (96, 64) must fit" in capsys.readouterr().err
    assert not (tmp_path / "x" / "checkpoint.safetensors").exists()


def test_batches_mix_the_two_sources_in_the_ratio_and_reach_the_crop_size():
    from stereo_adapt_ros.training_data.synthetic import TextureBank
    from stereo_adapt_ros.training.supervised import TrainConfig, TrainingData, open_photos

    config = TrainConfig(batch=1, photo_ratio=0.3, synth=SynthConfig(height=64, width=128,
                                                                      max_disparity=24),
                         crop=(32, 64), reuse=2, pool=4)
    data = TrainingData(config, TextureBank(), open_photos("builtin", "train"), 0, 1, "cpu")
    photo = sum(data.counts(step)["photo"] for step in range(10))
    assert photo == 3 and all(sum(data.counts(s).values()) == 1 for s in range(10))
    assert config.window_size == (42, 84)
    for step in range(3):
        batch = data.batch(step)
        assert batch.disparity.max() <= config.loss_max_disparity
        assert batch.left.shape == (1, 3, 32, 64) and batch.disparity.shape == (1, 1, 32, 64)
        assert torch.isfinite(batch.disparity).all() and batch.left.max() <= 1


def test_the_harsh_source_is_mixed_in_its_share_and_has_exact_truth():
    from stereo_adapt_ros.training_data.harsh import render_harsh, render_harsh_batch
    from stereo_adapt_ros.training_data.synthetic import TextureBank
    from stereo_adapt_ros.training.supervised import TrainConfig, TrainingData

    with pytest.raises(ValueError, match="harsh_ratio"):
        TrainConfig(photo_ratio=0.9, harsh_ratio=0.2).validate()
    config = TrainConfig(batch=4, photo_ratio=0.0, harsh_ratio=0.25,
                         synth=SynthConfig(height=64, width=128, max_disparity=24),
                         crop=(48, 96), reuse=2, pool=8, loss_max_disparity=60)
    data = TrainingData(config, TextureBank(), None, 0, 1, "cpu")
    assert [data.counts(step)["harsh"] for step in range(4)] == [1, 1, 1, 1]
    batch = data.batch(0)
    assert batch.left.shape == (4, 3, 48, 96) and torch.isfinite(batch.disparity).all()
    pairs = render_harsh_batch(6, 60, 120, seed=3)
    assert pairs.left.shape == (6, 3, 60, 120) and pairs.disparity.shape == (6, 1, 60, 120)
    assert torch.equal(pairs.left, render_harsh_batch(6, 60, 120, seed=3).left)
    assert (pairs.disparity > 0).all() and pairs.visible.any()
    # Never the stream of a development or validation sequence with the same small seed.
    first = render_harsh_batch(1, 240, 320, seed=3).disparity[0, 0]
    for kind in ("board_poses", "repetitive_pan", "near_poses", "textureless"):
        sample, _ = render_harsh(kind, 1, seed=3)[0]
        assert not torch.allclose(first, torch.from_numpy(sample.disparity), equal_nan=True)


@pytest.mark.slow
def test_augmentation_options_are_parsed_and_bad_ones_refused(tmp_path, capsys):
    assert main(["train", str(tmp_path / "a"), "--steps", "1", "--validate-every", "1",
                 "--no-augment", "--photo-ratio", "0", *TINY]) == 0
    assert main(["train", str(tmp_path / "b"), "--steps", "1", "--validate-every", "1",
                 "--augment", "occlusion=0,scale=0:0.2", *TINY]) == 0
    record = json.loads((tmp_path / "b" / "scalars.jsonl").read_text())
    assert record["photo_EPE"] > 0 and record["photo_D1"] >= 0
    config = json.loads(read_weights(tmp_path / "b" / "madnet_synthetic.safetensors")[1]
                        .extra["config"])
    assert config["augment"]["occlusion"] == 0 and config["augment"]["scale"] == [0, 0.2]
    for bad in ("colour", "sharpness=1", "scale=1", "blur=x"):
        with pytest.raises(SystemExit) as exit_info:
            main(["train", str(tmp_path / "c"), "--augment", bad, *TINY])
        assert exit_info.value.code == 2
        assert "--augment" in capsys.readouterr().err
    capsys.readouterr()
    assert main(["train", str(tmp_path / "c"), "--augment", "blur=2", *TINY]) == 2
    assert "blur is a probability" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "d"), "--photo-ratio", "1.5", *TINY]) != 0
    assert not (tmp_path / "d" / "checkpoint.safetensors").exists()


@pytest.mark.slow
def test_validation_scores_the_unlabelled_oakd_pairs(tmp_path, motorcycle):
    """Real pairs without ground truth (here two crops of the real Motorcycle pair in
    stereodemo's layout) are scored by agreement with SGBM and the photometric error."""
    import cv2

    from stereo_adapt_ros.data.datasets import OakdPairs
    from stereo_adapt_ros.training_data.synthetic import TextureBank
    from stereo_adapt_ros.training.supervised import TrainConfig, validate

    left, right, _ = motorcycle
    for i, x in enumerate((100, 300)):
        for name, image in (("left", left), ("right", right)):
            cv2.imwrite(str(tmp_path / f"scene{i}_{name}.png"),
                        cv2.cvtColor(image[200:328, x:x + 256], cv2.COLOR_RGB2BGR))
    (tmp_path / "stereodemo_calibration.json").write_text(json.dumps(
        {"width": 256, "height": 128, "fx": 500.0, "fy": 500.0, "cx0": 128.0, "cx1": 128.0,
         "cy": 64.0, "baseline_meters": 0.1}))
    model, info, _ = load_model("synthetic", "cpu")
    config = TrainConfig(synth=SynthConfig(height=64, width=128, max_disparity=24),
                         validation_pairs=1)
    record = validate(model, info.normalization, config, TextureBank(), torch.device("cpu"),
                      oakd=OakdPairs(tmp_path))
    assert 0 <= record["oakd_agree_D1"] < 50  # the shipped weights mostly agree with SGBM
    assert 0 < record["oakd_photo_error"] < 0.3
    assert "photo_EPE" not in record


def test_a_missing_photo_library_is_a_clear_error(tmp_path, capsys):
    code = main(["train", str(tmp_path / "run"), "--photos", str(tmp_path / "nowhere"),
                 "--steps", "1", *TINY[:-2]])
    assert code != 0
    assert "photos fetch" in capsys.readouterr().err


@pytest.mark.slow
def test_the_moving_average_by_hand_and_what_a_run_exports_with_it(tmp_path):
    from stereo_adapt_ros.network import read_weights
    from stereo_adapt_ros.training.supervised import _update_average

    average, current = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    with torch.no_grad():
        average.weight.copy_(torch.tensor([[1.0, 2.0]]))
        current.weight.copy_(torch.tensor([[3.0, 0.0]]))
    _update_average(average, current, decay=0.75)
    torch.testing.assert_close(average.weight, torch.tensor([[1.5, 1.5]]))

    assert main(["train", str(tmp_path), "--steps", "4", "--batch", "1", "--size", "64x128",
                 "--lr", "1e-3", "--warmup", "0", "--validate-every", "2",
                 "--validation-pairs", "1", "--max-disparity", "24", "--photo-ratio", "0",
                 "--ema", "0.9", "--keep-validated"]) == 0
    initial, _, _ = load_model("random", "cpu", seed=0)
    exported, _ = read_weights(tmp_path / "madnet_synthetic.safetensors")
    trained, _ = read_weights(tmp_path / "checkpoint.safetensors")
    start = initial.state_dict()
    # Four steps at decay 0.9 keep 0.9^4 = 66 % of the start in the average: it lies much
    # nearer the start than the trained weights do.
    moved = sum(float((trained[k].float() - start[k]).abs().sum()) for k in start)
    averaged = sum(float((exported[k].float() - start[k]).abs().sum()) for k in start)
    assert 0 < averaged < 0.6 * moved
    # --keep-validated: every validated average, the last one the same as the export.
    kept = sorted(p.name for p in (tmp_path / "validated").iterdir())
    assert kept == ["step_000002.safetensors", "step_000004.safetensors"]
    last, info = read_weights(tmp_path / "validated" / "step_000004.safetensors")
    assert info.extra["step"] == "4" and float(info.extra["synthetic_EPE"]) > 0
    for key in start:
        torch.testing.assert_close(last[key].float(), exported[key].float().half().float())
    assert main(["train", str(tmp_path / "bad"), "--ema", "1.0"]) == 2


def test_learning_rate_milestones_from_the_command_line(capsys):
    from stereo_adapt_ros.cli.train_command import milestone_list
    from stereo_adapt_ros.training.supervised import TrainConfig, _learning_rate

    assert milestone_list("0.5,0.75") == (0.5, 0.75)
    assert milestone_list("none") == ()
    config = TrainConfig(steps=100, lr=1e-3, warmup=0, milestones=(0.5, 0.75))
    assert [_learning_rate(config, step, 0) for step in (0, 49, 50, 74, 75, 99)] == [
        1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4]
    assert _learning_rate(TrainConfig(steps=100, lr=1e-3, warmup=0, milestones=()), 99, 0) \
        == 1e-3
    for bad in ("0.8,0.5", "1.5", "half"):
        with pytest.raises(SystemExit) as exit_:
            main(["train", "unused", "--milestones", bad])
        assert exit_.value.code == 2
        assert "--milestones" in capsys.readouterr().err
    with pytest.raises(ValueError, match="milestones"):
        TrainConfig(milestones=(0.9, 0.1)).validate()


def test_a_best_that_worsens_any_kind_of_scene_is_refused(tmp_path):
    baseline = {"photo_EPE": 3.0, "near_D1": 20.0, "grey_board_D1": 4.0}
    better = {"step": 10, "photo_EPE": 2.5, "near_D1": 20.9, "grey_board_D1": 4.1}
    assert worsened(better, baseline) is None  # within 5 %
    worse = dict(better, grey_board_D1=4.3)
    assert "grey_board_D1 4.300" in worsened(worse, baseline)
    model = MADNet()
    normalization = WeightsInfo().normalization
    config = TrainConfig()
    assert _keep_if_best(tmp_path, model, normalization, config, worse, 3.0, baseline) == 3.0
    assert not (tmp_path / "best.safetensors").exists()
    assert _keep_if_best(tmp_path, model, normalization, config, better, 3.0, baseline) == 2.5
    assert (tmp_path / "best.safetensors").exists()
