"""Where the network runs and in which precision: the device, and what ``amp="auto"`` means.

On CUDA, ``auto`` is bf16 where the GPU has it, else fp16 (with loss scaling). On a CPU the
answer depends on the chip and on the image size, and was measured both ways on this project's
machines: bf16 autocast made inference 1.7x faster on an AMD EPYC with AVX512-BF16, and 1.55x
slower on an Intel Xeon that reports the same flag. So for the adapter, ``auto`` on a CPU with
native bf16 is decided by a short timed trial of both precisions on the real network at the real
input size (``measure_cpu_autocast``), logged and cached per CPU model, torch version and size;
a CPU without native bf16 stays in float32 (emulated bf16 is always slower).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..files import atomic_write_bytes

LOG = logging.getLogger(__name__)
#: Timed forwards per precision in the trial (after one warm-up each).
TRIAL_RUNS = 3
ENV_CACHE = "STEREO_ADAPT_CACHE"


def select_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA if available, else CPU; otherwise a torch device string, checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device


def native_cpu_bf16() -> bool:
    """The CPU computes in bf16 natively (AVX512-BF16 or AMX); without it oneDNN emulates bf16
    and is slower than float32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of an ``amp`` setting on ``device`` (None: float32) by rule: on a CPU,
    ``auto`` is bf16 where it is native. The adapter refines CPU ``auto`` by measurement
    (``measure_cpu_autocast``); training uses the rule."""
    if device.type != "cuda":
        if amp == "fp16":
            raise ValueError("amp fp16 needs a CUDA device (use bf16 on CPU)")
        if amp == "auto":
            return torch.bfloat16 if native_cpu_bf16() else None
        return torch.bfloat16 if amp == "bf16" else None
    if amp == "off":
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cache_path() -> Path:
    root = os.environ.get(ENV_CACHE)
    return Path(root) if root else Path.home() / ".cache" / "stereo_adapt_ros"


def measure_cpu_autocast(forward: Callable[[torch.dtype | None], None], size: tuple[int, int],
                         cache: Path | None = None) -> torch.dtype | None:
    """bf16 or float32 (None), whichever runs ``forward`` faster (median of ``TRIAL_RUNS``
    after a warm-up each). ``forward(dtype)`` runs the network once under that autocast.
    The answer is cached in ``cache/precision.json`` by CPU model, torch version and ``size``
    (H, W), so the trial runs once per machine and size."""
    key = f"{cpu_model()} | torch {torch.__version__} | {size[0]}x{size[1]}"
    file = (cache or cache_path()) / "precision.json"
    try:
        known = json.loads(file.read_text())
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and known.get(key) in ("bf16", "float32"):
        return torch.bfloat16 if known[key] == "bf16" else None
    medians = {}
    for name, dtype in (("float32", None), ("bf16", torch.bfloat16)):
        forward(dtype)
        times = []
        for _ in range(TRIAL_RUNS):
            start = time.perf_counter()
            forward(dtype)
            times.append(time.perf_counter() - start)
        medians[name] = statistics.median(times)
    choice = min(medians, key=medians.__getitem__)
    LOG.info("amp auto (%s): float32 %.0f ms, bf16 %.0f ms per forward: %s", key,
             medians["float32"] * 1e3, medians["bf16"] * 1e3, choice)
    known = known if isinstance(known, dict) else {}
    known[key] = choice
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(file, json.dumps(known, indent=1).encode())
    except OSError as error:  # a read-only home still gets the measured choice
        LOG.warning("cannot cache the precision trial in %s: %s", file, error)
    return torch.bfloat16 if choice == "bf16" else None
