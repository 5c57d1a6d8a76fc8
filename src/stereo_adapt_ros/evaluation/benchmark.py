"""Per-frame cost of inference, a MAD step and a full step, measured side by side.

Every (variant, mode) adapter runs interleaved frame by frame on the same real image pair
(the Motorcycle pair resized to the requested size), so machine noise hits all of them alike;
medians and 90th percentiles are reported, with each step's ratio to inference of the same
variant. A variant is a fast-path setting (``AdapterConfig`` overrides), stepped with all
outputs or for the disparity alone (``OnlineAdapter.step(want_confidence=False,
want_loss=False)``). Each mode's time is also
split, from the step's own timings, into the network's forward pass, the confidence (the
photometric error map, with the loss on frames that do not adapt), the conversions (images to
tensors, outputs back to NumPy) and the adaptation (everything else: losses, proxy wait,
backward pass, optimiser step, guard).
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import numpy as np
import torch
from skimage import data as skdata

from ..adaptation.adapter import AdapterConfig, OnlineAdapter, StepResult
from ..matching.sgbm import SgbmConfig, sgbm_disparity
from ..network.madnet import MADNet
from ..network.weights import load_model

BENCH_MODES = ("none", "mad", "full")
#: The parts of a step's time, in the order printed.
SPLIT_PARTS = ("network", "confidence", "conversions", "adaptation")
DEFAULT_SIZES = ((320, 1216), (480, 640), (720, 1280))


def motorcycle_at(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The real Motorcycle pair resized to height x width (RGB uint8)."""
    left, right, _ = skdata.stereo_motorcycle()
    return tuple(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
                 for image in (left, right))


def fast_path_variants(device: torch.device, with_compile: bool = False
                       ) -> dict[str, dict[str, object]]:
    """The fast-path settings compared by ``stereo-adapt bench --compare``, cumulative. They
    time the network with the photometric loss; the proxy matcher's cost (part of the default
    ``both`` loss) is the ``--proxy-method`` row's."""
    amp = "auto" if device.type == "cuda" else "bf16"
    network = dict(adaptation_loss="photometric")
    variants: dict[str, dict[str, object]] = {
        "plain": dict(network, channels_last=False, amp="off", cudnn_benchmark=False),
        "channels_last": dict(network, channels_last=True, amp="off", cudnn_benchmark=True),
        f"channels_last+{amp}": dict(network, channels_last=True, amp=amp,
                                    cudnn_benchmark=True),
    }
    if with_compile:
        variants[f"channels_last+{amp}+compile"] = dict(network, channels_last=True, amp=amp,
                                                       cudnn_benchmark=True, compile=True)
    return variants


def step_split(timings: dict[str, float]) -> dict[str, float]:
    """A step's milliseconds by ``SPLIT_PARTS`` from ``StepResult.timings``; the adaptation is
    the rest of the total."""
    parts = {"network": timings.get("network", 0.0),
             "confidence": timings.get("confidence", 0.0),
             "conversions": timings.get("prepare", 0.0) + timings.get("output", 0.0)}
    parts["adaptation"] = max(0.0, timings["total"] - sum(parts.values()))
    return parts


def _summary(values: list[float]) -> dict[str, float]:
    median = statistics.median(values)
    return {"median_ms": round(median, 2), "mean_ms": round(statistics.fmean(values), 2),
            "p90_ms": round(float(np.percentile(np.asarray(values), 90)), 2),
            "fps": round(1e3 / median, 2)}


def _median_ms(values: list[float]) -> float:
    return round(statistics.median(values), 2)


@dataclass
class _StepTimes:
    """What the timed steps of one (variant, mode) adapter measured: milliseconds of each step,
    of its parts (``SPLIT_PARTS``), of the proxy's run and wait, of its MAD block's steps;
    peak_mb: CUDA's peak memory, warm-up included."""

    total: list[float] = field(default_factory=list)
    splits: dict[str, list[float]] = field(
        default_factory=lambda: {part: [] for part in SPLIT_PARTS})
    proxy: dict[str, list[float]] = field(default_factory=dict)
    blocks: dict[int, list[float]] = field(default_factory=dict)
    peak_mb: float = 0.0

    def add(self, step: StepResult, ms: float) -> None:
        self.total.append(ms)
        if step.block is not None:
            self.blocks.setdefault(step.block, []).append(ms)
        for part, part_ms in step_split(step.timings).items():
            self.splits[part].append(part_ms)
        for part in ("proxy", "proxy_wait"):
            if part in step.timings:
                self.proxy.setdefault(part, []).append(step.timings[part])

    def summary(self, cuda: bool) -> dict[str, Any]:
        """``_summary`` of the steps, with their split, the peak memory (CUDA) and the proxy's
        own time and how long the step waited for it (its latency)."""
        row: dict[str, Any] = _summary(self.total)
        row["split_median_ms"] = {part: _median_ms(values)
                                  for part, values in self.splits.items()}
        if cuda:
            row["peak_mb"] = round(self.peak_mb, 1)
        for part, values in self.proxy.items():
            row[f"{part}_median_ms"] = _median_ms(values)
        return row


def benchmark_steps(height: int, width: int, device: torch.device, weights: str = "random",
                    frames: int = 10, warmup: int = 2,
                    variants: dict[str, dict[str, Any]] | None = None,
                    base: AdapterConfig = AdapterConfig(), sgbm: bool = True,
                    disparity_only: Sequence[str] = ()) -> dict:
    """Time ``frames`` steps of every mode of every variant after ``warmup`` untimed ones.
    With a proxy loss in a variant, its rows also hold the proxy's median run time and the
    median time the step waited for it (``proxy_median_ms``, ``proxy_wait_median_ms``).

    variants: name -> AdapterConfig overrides (default: the adapter's defaults only).
    disparity_only: the variants stepped with ``want_confidence=False, want_loss=False``.
    MAD steps cycle through the blocks (``round_robin``) unless a variant sets
    ``mad_sampling``.

    Returns {"size", "device", "frames", "variants": {name: {"none"|"mad"|"full":
    {"median_ms", "mean_ms", "p90_ms", "fps", "split_median_ms" ({part: median ms} of
    ``SPLIT_PARTS``), "peak_mb" (CUDA)}, "ratio_mad", "ratio_full" (of the medians),
    "mean_ratio_mad", "mean_ratio_full" (of the means)}},
    with "mad" also holding "block_median_ms" ({block: median ms}),
    "sgbm": {...} (CPU, OpenCV), "max_rss_mb"}.
    """
    variants = variants or {"default": {}}
    left, right = motorcycle_at(height, width)
    adapters = _adapters(weights, device, variants, base)
    measured = _time_steps(adapters, left, right, device, frames, warmup, disparity_only)
    result: dict = {"size": [height, width], "device": str(device), "frames": frames,
                    "variants": {}}
    for name in variants:
        result["variants"][name] = _variant_row(
            {mode: measured[(name, mode)] for mode in BENCH_MODES}, device.type == "cuda")
    if sgbm:
        result["sgbm"] = benchmark_sgbm(left, right, frames, warmup)
    # ru_maxrss is in KiB on Linux: the process's peak resident memory so far.
    result["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


def _adapters(weights: str, device: torch.device, variants: dict[str, dict[str, Any]],
              base: AdapterConfig) -> dict[tuple[str, str], OnlineAdapter]:
    """An adapter per (variant, mode), each on its own copy of the same weights."""
    model, info, extra = load_model(weights, device)
    adapters: dict[tuple[str, str], OnlineAdapter] = {}
    for name, overrides in variants.items():
        for mode in BENCH_MODES:
            copy = MADNet().to(device)
            copy.load_state_dict(model.state_dict())
            config = replace(base, adaptation_mode=mode, **overrides)
            if mode == "mad" and "mad_sampling" not in overrides:
                # MAD's cost depends on the block it trains (block 2 holds most of the
                # network); a fixed cycle through the blocks makes every variant time the same
                # blocks, equally often when ``frames`` is a multiple of their number.
                config = replace(config, mad_sampling="round_robin")
            adapters[(name, mode)] = OnlineAdapter(copy, info, config, device, extra)
    return adapters


def _time_steps(adapters: dict[tuple[str, str], OnlineAdapter], left: np.ndarray,
                right: np.ndarray, device: torch.device, frames: int, warmup: int,
                disparity_only: Sequence[str]) -> dict[tuple[str, str], _StepTimes]:
    """Step the adapters in turn, frame by frame, so that machine noise hits them alike; the
    first ``warmup`` rounds are not timed."""
    measured = {key: _StepTimes() for key in adapters}
    for index in range(warmup + frames):
        for key, adapter in adapters.items():
            everything = key[0] not in disparity_only
            step, ms, peak_mb = _timed_step(adapter, left, right, device, everything)
            measured[key].peak_mb = max(measured[key].peak_mb, peak_mb)
            if index >= warmup:
                measured[key].add(step, ms)
    return measured


def _timed_step(adapter: OnlineAdapter, left: np.ndarray, right: np.ndarray,
                device: torch.device, everything: bool) -> tuple[StepResult, float, float]:
    """One step with all outputs or (``everything`` false) the disparity alone: the result,
    its milliseconds and, on CUDA, its peak memory in MiB (0 elsewhere)."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    step = adapter.step(left, right, want_confidence=everything, want_loss=everything)
    peak_mb = 0.0
    if cuda:
        torch.cuda.synchronize(device)
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    return step, (time.perf_counter() - start) * 1e3, peak_mb


def _variant_row(measured: dict[str, _StepTimes], cuda: bool) -> dict[str, Any]:
    """A variant's result: each mode's summary, the MAD block times, and the ratios of the
    steps' medians and means to inference's."""
    row: dict[str, Any] = {mode: measured[mode].summary(cuda) for mode in BENCH_MODES}
    row["mad"]["block_median_ms"] = {
        str(block): _median_ms(values) for block, values in sorted(measured["mad"].blocks.items())}
    for mode in ("mad", "full"):
        row[f"ratio_{mode}"] = round(row[mode]["median_ms"] / row["none"]["median_ms"], 3)
    for mode in ("mad", "full"):
        row[f"mean_ratio_{mode}"] = round(row[mode]["mean_ms"] / row["none"]["mean_ms"], 3)
    return row


def benchmark_sgbm(left: np.ndarray, right: np.ndarray, frames: int, warmup: int
                   ) -> dict[str, float]:
    """OpenCV SGBM (stereo_image_proc's algorithm) on the same pair, on the CPU, searching
    128 disparities (KITTI-like; fewer on images too narrow for that)."""
    config = SgbmConfig.for_max_disparity(min(128, left.shape[1] // 2))
    values = []
    for index in range(warmup + frames):
        start = time.perf_counter()
        sgbm_disparity(left, right, config)
        if index >= warmup:
            values.append((time.perf_counter() - start) * 1e3)
    return _summary(values)
