import json
import os
import subprocess
import sys

import torch

from stereo_adapt_ros.cli.main import main
from stereo_adapt_ros.data.synthetic import SynthConfig, render_batch
from stereo_adapt_ros.network import MADNet, load_model, read_weights
from stereo_adapt_ros.training import multiscale_l1

TINY = ["--size", "64x128", "--max-disparity", "24", "--batch", "1", "--validation-pairs",
        "1", "--device", "cpu"]


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


def test_training_lowers_the_loss_checkpoints_and_resumes(tmp_path):
    out = tmp_path / "run"
    assert main(["train", str(out), "--steps", "30", "--validate-every", "15",
                 "--checkpoint-every", "15", "--lr", "3e-4", *TINY]) == 0
    records = [json.loads(line) for line in (out / "scalars.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [15, 30]
    # Mean training loss of steps 16-30 below that of steps 1-15 (fresh data every step).
    assert records[1]["train_loss"] < records[0]["train_loss"]
    assert {"synthetic_EPE", "motorcycle_D1", "pairs_per_s", "L1_level2"} <= set(records[0])
    tensors, info = read_weights(out / "checkpoint.safetensors")
    assert info.extra["step"] == "30" and any(k.startswith("optimizer.exp_avg.") for k in tensors)
    model, shipped, _ = load_model(str(out / "madnet_synthetic.safetensors"))
    assert "30 steps" in shipped.trained_on
    # Resuming continues from step 30 with the saved moments, up to 32.
    assert main(["train", str(out), "--steps", "32", "--resume", "--validate-every", "100",
                 *TINY]) == 0
    assert read_weights(out / "checkpoint.safetensors")[1].extra["step"] == "32"


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


def test_training_from_a_pool_of_crops_in_bf16(tmp_path, capsys):
    code = main(["train", str(tmp_path), "--steps", "3", "--batch", "2", "--size", "64x128",
                 "--crop", "32x64", "--reuse", "4", "--pool", "4", "--amp", "bf16",
                 "--channels-last", "--validate-every", "3", "--validation-pairs", "1",
                 "--max-disparity", "24"])
    assert code == 0
    record = json.loads((tmp_path / "scalars.jsonl").read_text().splitlines()[-1])
    assert record["step"] == 3 and record["train_loss"] > 0
    model, _, _ = load_model(str(tmp_path / "madnet_synthetic.safetensors"), "cpu")
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert main(["train", str(tmp_path / "x"), "--size", "64x128", "--crop", "96x64"]) == 2
    assert "crop (96, 64) must fit" in capsys.readouterr().err
    assert not (tmp_path / "x" / "checkpoint.safetensors").exists()
