"""Per-frame cost of inference, a MAD step and a full step, measured side by side.

The three adapters run interleaved frame by frame on the same real image pair (the
Motorcycle pair resized to the requested size), so machine noise hits all of them alike;
medians and 90th percentiles are reported, with each step's ratio to inference.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace

import cv2
import numpy as np
import torch
from skimage import data as skdata

from ..adaptation.adapter import AdapterConfig, OnlineAdapter
from ..network.madnet import MADNet
from ..network.weights import load_model

BENCH_MODES = ("none", "mad", "full")


def motorcycle_at(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The real Motorcycle pair resized to height x width (RGB uint8)."""
    left, right, _ = skdata.stereo_motorcycle()
    return tuple(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
                 for image in (left, right))


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def benchmark_steps(height: int, width: int, device: torch.device, weights: str = "random",
                    frames: int = 10, warmup: int = 2,
                    config: AdapterConfig = AdapterConfig()) -> dict:
    """Time ``frames`` steps of each mode after ``warmup`` untimed ones.

    Returns {"size": [h, w], "device": str, "<mode>": {"median_ms", "p90_ms", "fps"},
    "ratio_mad": median MAD / median inference, "ratio_full": likewise}.
    """
    left, right = motorcycle_at(height, width)
    model, info, extra = load_model(weights, device)
    adapters = {}
    for mode in BENCH_MODES:
        copy = MADNet().to(device)
        copy.load_state_dict(model.state_dict())
        adapters[mode] = OnlineAdapter(copy, info, replace(config, mode=mode), device, extra)
    times: dict[str, list[float]] = {mode: [] for mode in BENCH_MODES}
    for index in range(warmup + frames):
        for mode, adapter in adapters.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            adapter.step(left, right)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if index >= warmup:
                times[mode].append((time.perf_counter() - start) * 1e3)
    result: dict = {"size": [height, width], "device": str(device), "frames": frames}
    for mode, values in times.items():
        median = statistics.median(values)
        result[mode] = {"median_ms": round(median, 2), "p90_ms": round(_percentile(values, 90), 2),
                        "fps": round(1e3 / median, 2)}
    result["ratio_mad"] = round(result["mad"]["median_ms"] / result["none"]["median_ms"], 3)
    result["ratio_full"] = round(result["full"]["median_ms"] / result["none"]["median_ms"], 3)
    return result
