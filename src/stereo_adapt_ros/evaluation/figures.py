"""Figures of a scored run: a composite of one frame (left image | disparity | confidence |
error against ground truth) and the per-frame D1 / EPE of a run.

Needs matplotlib (``pip install '.[plot]'`` in the clone; the test extra has it too);
``have_matplotlib`` says whether it is there, so that a caller can fall back to plain PNGs.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Inches per figure at this resolution: a composite's panels keep about the frame's pixels.
DPI = 100


def have_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def write_frame_composite(path: Path, left: np.ndarray, disparity: np.ndarray,
                          confidence: np.ndarray | None, ground_truth: np.ndarray | None,
                          max_disparity: float, max_error: float, title: str) -> None:
    """Write a PNG of four panels in a row, each about the frame's size, with colour bars.

    left: uint8 H x W x 3 RGB.
    disparity: float H x W in pixels, NaN where invalid; shown from 0 to ``max_disparity``
        (one scale for every frame of a run, so that frames compare).
    confidence: float H x W in [0, 1], or None (panel left empty).
    ground_truth: float H x W in pixels, NaN where unknown, or None: the last panel is the
        absolute error ``|disparity - ground_truth|`` from 0 to ``max_error`` px where both
        exist.
    """
    plt = _pyplot()
    height, width = disparity.shape
    # Room for the colour bars and the titles around four frame-sized panels.
    figure, axes = plt.subplots(1, 4, figsize=(4.6 * width / DPI, 1.35 * height / DPI + 0.5),
                                dpi=DPI, constrained_layout=True)
    figure.suptitle(title)
    axes[0].imshow(left)
    axes[0].set_title("left")
    shown = np.ma.masked_invalid(disparity)
    image = axes[1].imshow(shown, cmap="turbo", vmin=0.0, vmax=max_disparity)
    axes[1].set_title("disparity (px)")
    figure.colorbar(image, ax=axes[1], fraction=0.046, pad=0.02)
    if confidence is not None:
        image = axes[2].imshow(confidence, cmap="viridis", vmin=0.0, vmax=1.0)
        figure.colorbar(image, ax=axes[2], fraction=0.046, pad=0.02)
    axes[2].set_title("confidence")
    if ground_truth is not None:
        with np.errstate(invalid="ignore"):
            error = np.abs(disparity - ground_truth)
        image = axes[3].imshow(np.ma.masked_invalid(error), cmap="magma", vmin=0.0,
                               vmax=max_error)
        figure.colorbar(image, ax=axes[3], fraction=0.046, pad=0.02)
        axes[3].set_title("abs. error vs truth (px)")
    else:
        axes[3].set_title("no ground truth")
    for axis in axes:
        axis.set_xticks([])
        axis.set_yticks([])
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)
    plt.close(figure)


def write_frame_metrics_plot(path: Path, frames: Sequence[Mapping[str, Any]],
                             title: str = "per frame") -> bool:
    """Write a PNG of D1_all (%) and EPE (px) against the frame index, from records with
    ``index``, ``D1_all`` and ``EPE`` (those without are skipped). Returns False, writing
    nothing, when no record has them."""
    scored = [frame for frame in frames if "D1_all" in frame and "EPE" in frame]
    if not scored:
        return False
    plt = _pyplot()
    index = [frame["index"] for frame in scored]
    figure, (d1, epe) = plt.subplots(2, 1, figsize=(8, 5), dpi=DPI, sharex=True,
                                     constrained_layout=True)
    figure.suptitle(title)
    d1.plot(index, [frame["D1_all"] for frame in scored], marker=".")
    d1.set_ylabel("D1_all (%)")
    epe.plot(index, [frame["EPE"] for frame in scored], marker=".", color="tab:orange")
    epe.set_ylabel("EPE (px)")
    epe.set_xlabel("frame")
    for axis in (d1, epe):
        axis.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return True
