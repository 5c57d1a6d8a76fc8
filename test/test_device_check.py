"""The prepared GPU check, rehearsed on the CPU at tiny sizes so that it cannot rot."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stereo_adapt_ros.network import load_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_device_check_dry_run_writes_its_files(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="2")
    result = subprocess.run(["bash", str(ROOT / "scripts" / "device_check.sh"), "--dry-run",
                             str(tmp_path)], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["bench.json", "burst.safetensors", "burst_scalars.jsonl", "check.log",
                     "summary.json", "tests.log"]
    assert len(files) <= 8 and all(p.stat().st_size < 16 * 2 ** 20 for p in tmp_path.iterdir())
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["dry_run"] and summary["exit"] == {"tests": summary["exit"]["tests"],
                                                      "bench": 0, "burst": 0}
    assert summary["env"]["torch"]
    assert {row["size"] for row in summary["bench"]} == {"64x128"}
    assert all(row["mad_ms"] > 0 and row["full_ms"] > 0 for row in summary["bench"])
    assert summary["burst_last"]["step"] >= 1 and "synthetic_EPE" in summary["burst_last"]
    model, info, _ = load_model(str(tmp_path / "burst.safetensors"), "cpu")
    assert "steps" in info.trained_on
    # The CUDA tests were collected (there is no GPU to run them on here).
    assert "test_cuda.py" in (tmp_path / "tests.log").read_text()
