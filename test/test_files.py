"""The one atomic file writer: every save's temporary, mode and clean-up."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from stereo_adapt_ros.data.io import write_kitti_disparity
from stereo_adapt_ros.files import atomic_write_bytes, remove_stale_temporaries
from stereo_adapt_ros.network import WeightsInfo, save_weights


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_files_get_the_umask_mode_and_replace_the_old_one(tmp_path, umask_022):
    target = tmp_path / "a.bin"
    assert atomic_write_bytes(target, b"first") == target
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    write_kitti_disparity(tmp_path / "d.png", np.zeros((2, 3), np.float32))
    save_weights(tmp_path / "w.safetensors", {"x": torch.zeros(2)}, WeightsInfo())
    # 0666 less the umask, as open() creates files; not mkstemp's 0600.
    for name in ("a.bin", "d.png", "w.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "d.png", "w.safetensors"]
    os.umask(0o077)
    atomic_write_bytes(target, b"private")
    assert target.stat().st_mode & 0o777 == 0o600


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "a.bin"
    atomic_write_bytes(target, b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_stale_temporaries_are_those_of_processes_that_are_gone(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    target = tmp_path / "a.bin"
    dead = tmp_path / f".a.bin.tmp-{child.pid}-0123abcd"
    running = tmp_path / f".a.bin.tmp-{os.getpid()}-0123abcd"
    other = tmp_path / f".b.bin.tmp-{child.pid}-0123abcd"
    for path in (dead, running, other):
        path.write_bytes(b"partial")
    assert remove_stale_temporaries(target) == [dead]
    assert running.exists() and other.exists() and not dead.exists()
    assert remove_stale_temporaries(tmp_path / "missing" / "a.bin") == []
