import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from stereo_adapt_ros.network import (InputNormalization, MADNet, WeightsError, WeightsInfo,
                                      load_model, read_weights, save_weights)
from weights_header import with_metadata


@pytest.fixture(scope="module")
def state():
    torch.manual_seed(1)
    return MADNet().state_dict()


def test_round_trip_keeps_tensors_and_metadata(tmp_path, state):
    info = WeightsInfo(normalization=InputNormalization((0.4, 0.5, 0.6), (0.2, 0.3, 0.4)),
                       trained_on="unit-test", description="round trip", extra={"steps": "3"})
    path = save_weights(tmp_path / "w.safetensors", state, info)
    model, loaded_info, extra = load_model(str(path))
    assert loaded_info == info
    assert extra == {}
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[name])
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]


def test_fp16_storage_and_extra_tensors(tmp_path, state):
    extra = {"confidence.conv.weight": torch.ones(2, 3)}
    path = save_weights(tmp_path / "half.safetensors", {**state, **extra}, WeightsInfo(),
                        dtype=torch.float16)
    tensors, _ = read_weights(path)
    assert all(t.dtype == torch.float32 for t in tensors.values())
    model, _, loaded_extra = load_model(str(path))
    assert torch.equal(loaded_extra["confidence.conv.weight"], extra["confidence.conv.weight"])
    name = "decoders.2.0.weight"
    assert torch.allclose(model.state_dict()[name], state[name], atol=1e-3)


def test_overwrite_is_atomic_and_leaves_no_temporary(tmp_path, state):
    path = tmp_path / "w.safetensors"
    save_weights(path, state, WeightsInfo(trained_on="first"))
    save_weights(path, state, WeightsInfo(trained_on="second"))
    assert read_weights(path)[1].trained_on == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]


def test_corrupt_and_foreign_files_raise_clear_errors(tmp_path, state):
    good = save_weights(tmp_path / "good.safetensors", state, WeightsInfo())
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:5000])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    pickled = tmp_path / "pickled.pt"
    torch.save(state, pickled)
    for path in (truncated, garbage, pickled):
        with pytest.raises(WeightsError, match="not a readable safetensors"):
            load_model(str(path))
    with pytest.raises(WeightsError, match="not found"):
        load_model(str(tmp_path / "missing.safetensors"))


def test_wrong_architecture_missing_tensors_and_nan_are_rejected(tmp_path, state):
    other = save_weights(tmp_path / "other.safetensors", state,
                         WeightsInfo(architecture="raft-stereo"))
    with pytest.raises(WeightsError, match="architecture"):
        load_model(str(other))
    partial = dict(state)
    partial.pop("refinement.0.weight")
    with pytest.raises(WeightsError, match="missing 1 network tensors"):
        load_model(str(save_weights(tmp_path / "partial.safetensors", partial, WeightsInfo())))
    reshaped = dict(state, **{"decoders.6.0.bias": torch.zeros(3)})
    with pytest.raises(WeightsError, match="shape"):
        load_model(str(save_weights(tmp_path / "shape.safetensors", reshaped, WeightsInfo())))
    poisoned = dict(state, **{"decoders.6.0.bias": torch.full((128,), float("nan"))})
    with pytest.raises(WeightsError, match="NaN"):
        load_model(str(save_weights(tmp_path / "nan.safetensors", poisoned, WeightsInfo())))


def test_bad_metadata_is_rejected(tmp_path, state):
    path = with_metadata(save_weights(tmp_path / "meta.safetensors", {"x": torch.zeros(1)},
                                      WeightsInfo()),
                         normalization='{"mean": [0.5], "std": [0.2]}')
    with pytest.raises(WeightsError, match="normalisation"):
        read_weights(path)


def test_unknown_shipped_name_and_random(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_model("no-such-weights")
    model, info, _ = load_model("random", seed=5)
    assert "random" in info.trained_on
    assert isinstance(model, MADNet)


@pytest.mark.parametrize("fields, reason", [
    ({"normalization": "[0.5, 0.5, 0.5]"}, "normalization must be a JSON object.*list"),
    ({"normalization": "7"}, "normalization must be a JSON object.*int"),
    ({"normalization": '"mean"'}, "normalization must be a JSON object.*str"),
    ({"normalization": '{"mean": "0.5", "std": [1, 1, 1]}'}, "mean must be three"),
    ({"normalization": '{"mean": [0.5, 0.5, 0.5], "std": {"r": 1}}'}, "std must be three"),
    ({"normalization": '{"mean": [true, 0.5, 0.5]}'}, "mean must be three"),
    ({"normalization": '{"std": [0.2, 0.0, 0.2]}'}, "std must be > 0"),
    ({"normalization": "{not json"}, "unreadable metadata normalization"),
    ({"extra": '["steps", 3]'}, "extra must be a JSON object.*list"),
    ({"extra": "3"}, "extra must be a JSON object.*int"),
    ({"extra": '{"nested": {"a": 1}}'}, r"extra\['nested'\] must be a string or a number"),
])
def test_metadata_of_the_wrong_json_type_is_refused_with_the_reason(tmp_path, fields, reason):
    path = save_weights(tmp_path / "meta.safetensors", {"x": torch.zeros(1)}, WeightsInfo())
    with_metadata(path, **fields)
    with pytest.raises(WeightsError, match=reason):
        read_weights(path)


def test_metadata_scalars_in_extra_are_read_as_text(tmp_path):
    path = save_weights(tmp_path / "meta.safetensors", {"x": torch.zeros(1)}, WeightsInfo())
    with_metadata(path, extra='{"steps": 3, "ok": true, "rate": 0.5}')
    assert read_weights(path)[1].extra == {"steps": "3", "ok": "True", "rate": "0.5"}


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


SAVE_FOREVER = """
import sys, torch
from stereo_adapt_ros.network import WeightsInfo, save_weights
tensors = {"x": torch.rand(16_000_000)}
while True:
    save_weights(sys.argv[1], tensors, WeightsInfo())
"""


def test_a_save_killed_midway_leaves_a_named_temporary_that_the_next_save_removes(tmp_path,
                                                                                    state):
    target = tmp_path / "w.safetensors"
    save_weights(target, state, WeightsInfo(trained_on="before"))
    # The kill can land just after a save renamed its temporary: try again (a fresh writer)
    # until one dies mid-save.
    for _ in range(20):
        writer = subprocess.Popen([sys.executable, "-c", SAVE_FOREVER, str(target)])
        pattern = f".w.safetensors.tmp-{writer.pid}-*"
        try:
            deadline = time.monotonic() + 120
            while not list(tmp_path.glob(pattern)) and time.monotonic() < deadline:
                time.sleep(0.001)
            writer.send_signal(signal.SIGKILL)
        finally:
            writer.kill()
            writer.wait()
        if list(tmp_path.glob(pattern)):
            break
    orphans = list(tmp_path.glob(pattern))
    assert orphans, "no writer was killed inside a save in 20 tries"
    # A running process's temporary (this one's) is not touched; a dead one's is.
    running = tmp_path / f".w.safetensors.tmp-{os.getpid()}-inprogress"
    running.write_bytes(b"partial")
    dead = tmp_path / f".w.safetensors.tmp-{_dead_pid()}-gone"
    dead.write_bytes(b"partial")
    other = tmp_path / ".other.safetensors.tmp-1-x"
    other.write_bytes(b"not ours")

    save_weights(target, state, WeightsInfo(trained_on="after"))
    assert read_weights(target)[1].trained_on == "after"
    assert not list(tmp_path.glob(pattern)) and not dead.exists()
    assert running.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [running.name, other.name, "w.safetensors"])
