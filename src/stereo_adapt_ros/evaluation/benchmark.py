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
from dataclasses import replace
from typing import Any

import cv2
import numpy as np
import torch
from skimage import data as skdata

from ..adaptation.adapter import AdapterConfig, OnlineAdapter
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
    {"median_ms", "p90_ms", "fps", "split_median_ms" ({part: median ms} of ``SPLIT_PARTS``),
    "peak_mb" (CUDA)}, "ratio_mad", "ratio_full"}},
    with "mad" also holding "block_median_ms" ({block: median ms}),
    "sgbm": {...} (CPU, OpenCV), "max_rss_mb"}.
    """
    variants = variants or {"default": {}}
    left, right = motorcycle_at(height, width)
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
    times: dict[tuple[str, str], list[float]] = {key: [] for key in adapters}
    peaks: dict[tuple[str, str], float] = {key: 0.0 for key in adapters}
    proxy: dict[tuple[str, str], dict[str, list[float]]] = {key: {} for key in adapters}
    blocks: dict[tuple[str, str], dict[int, list[float]]] = {key: {} for key in adapters}
    splits: dict[tuple[str, str], dict[str, list[float]]] = {
        key: {part: [] for part in SPLIT_PARTS} for key in adapters}
    for index in range(warmup + frames):
        for key, adapter in adapters.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            everything = key[0] not in disparity_only
            step = adapter.step(left, right, want_confidence=everything, want_loss=everything)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                peaks[key] = max(peaks[key], torch.cuda.max_memory_allocated(device) / 2**20)
            if index >= warmup:
                times[key].append((time.perf_counter() - start) * 1e3)
                if step.block is not None:
                    blocks[key].setdefault(step.block, []).append(times[key][-1])
                for part, ms in step_split(step.timings).items():
                    splits[key][part].append(ms)
                for part in ("proxy", "proxy_wait"):
                    if part in step.timings:
                        proxy[key].setdefault(part, []).append(step.timings[part])

    result: dict = {"size": [height, width], "device": str(device), "frames": frames,
                    "variants": {}}
    for name in variants:
        row: dict[str, Any] = {mode: _summary(times[(name, mode)]) for mode in BENCH_MODES}
        for mode in BENCH_MODES:
            row[mode]["split_median_ms"] = {
                part: round(statistics.median(values), 2)
                for part, values in splits[(name, mode)].items()}
        if device.type == "cuda":
            for mode in BENCH_MODES:
                row[mode]["peak_mb"] = round(peaks[(name, mode)], 1)
        for mode in BENCH_MODES:
            # The proxy matcher's own time, and how long the step waited for it (its latency).
            for part, values in proxy[(name, mode)].items():
                row[mode][f"{part}_median_ms"] = round(statistics.median(values), 2)
        row["mad"]["block_median_ms"] = {
            str(block): round(statistics.median(values), 2)
            for block, values in sorted(blocks[(name, "mad")].items())}
        row["ratio_mad"] = round(row["mad"]["median_ms"] / row["none"]["median_ms"], 3)
        row["ratio_full"] = round(row["full"]["median_ms"] / row["none"]["median_ms"], 3)
        row["mean_ratio_mad"] = round(row["mad"]["mean_ms"] / row["none"]["mean_ms"], 3)
        row["mean_ratio_full"] = round(row["full"]["mean_ms"] / row["none"]["mean_ms"], 3)
        result["variants"][name] = row
    if sgbm:
        result["sgbm"] = benchmark_sgbm(left, right, frames, warmup)
    # ru_maxrss is in KiB on Linux: the process's peak resident memory so far.
    result["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


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
