"""Where the network runs and in which precision: the device, and what ``amp="auto"`` means.

On CUDA, ``auto`` is bf16 where the GPU has it, else fp16 (with loss scaling). On a CPU the
answer depends on the chip and on the image size, and was measured both ways on this project's
machines: bf16 autocast made inference 1.7x faster on an AMD EPYC with AVX512-BF16, and 1.55x
slower on an Intel Xeon that reports the same flag. So for the adapter, ``auto`` on a CPU with
native bf16 is decided by a short timed trial of both precisions on the real network at the real
input size (``measure_cpu_autocast``), logged and cached per CPU model, torch version and size;
a CPU without native bf16 stays in float32 (emulated bf16 is always slower). Under bf16, which
MAD blocks adaptation steps train in float32 is measured the same way
(``measure_float32_blocks``).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
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
    known = _load(cache)
    if known.get(key) in ("bf16", "float32"):
        return torch.bfloat16 if known[key] == "bf16" else None
    medians = {name: _median_time(forward, dtype)
               for name, dtype in (("float32", None), ("bf16", torch.bfloat16))}
    choice = min(medians, key=medians.__getitem__)
    LOG.info("amp auto (%s): float32 %.0f ms, bf16 %.0f ms per forward: %s", key,
             medians["float32"] * 1e3, medians["bf16"] * 1e3, choice)
    _store(cache, key, choice)
    return torch.bfloat16 if choice == "bf16" else None


def measure_float32_blocks(train_step: Callable[[int, bool], None], blocks: Sequence[int],
                           size: tuple[int, int], cache: Path | None = None
                           ) -> tuple[int, ...]:
    """The blocks that train faster in float32 than in bf16 under bf16 autocast on this CPU.

    oneDNN's bf16 convolution backward is fast on some layer shapes and several times slower
    than float32 on others (on one Intel Xeon with AMX, a 128 -> 128 convolution's backward
    took 195 ms in bf16 and 21 ms in float32 on a 40 x 152 map, but 23 against 85 ms on
    80 x 304), so which blocks to train in float32 is measured, per block:
    ``train_step(block, float32)`` runs the network forward and the backward pass of that
    block alone, in float32 or not (median of ``TRIAL_RUNS`` after a warm-up each). Cached in
    ``cache/precision.json`` like ``measure_cpu_autocast``.
    """
    key = f"float32 training blocks | {cpu_model()} | torch {torch.__version__} | " \
        f"{size[0]}x{size[1]}"
    known = _load(cache)
    if isinstance(known.get(key), list):
        return tuple(block for block in blocks if block in known[key])
    chosen = []
    report = []
    for block in blocks:
        bf16 = _median_time(train_step, block, False)
        float32 = _median_time(train_step, block, True)
        if float32 < bf16:
            chosen.append(block)
        report.append(f"{block}: bf16 {bf16 * 1e3:.0f} / float32 {float32 * 1e3:.0f}")
    LOG.info("training precision (%s), ms per forward and block backward, %s: float32 for "
             "blocks %s", key, ", ".join(report), chosen)
    _store(cache, key, chosen)
    return tuple(chosen)


def _median_time(run: Callable[..., None], *args: object) -> float:
    """Seconds of ``run(*args)``, median of ``TRIAL_RUNS`` after one warm-up."""
    run(*args)
    times = []
    for _ in range(TRIAL_RUNS):
        start = time.perf_counter()
        run(*args)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _cache_file(cache: Path | None) -> Path:
    return (cache or cache_path()) / "precision.json"


def _load(cache: Path | None) -> dict:
    try:
        known = json.loads(_cache_file(cache).read_text())
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def _store(cache: Path | None, key: str, value: object) -> None:
    """Add ``key: value`` to the cache file, replaced atomically."""
    file = _cache_file(cache)
    known = _load(cache)
    known[key] = value
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(file, json.dumps(known, indent=1).encode())
    except OSError as error:  # a read-only home still gets the measured choice
        LOG.warning("cannot cache the precision trial in %s: %s", file, error)
