"""What an adapter step returns: ``StepResult``, and the ``Outcome`` it is made from."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class StepResult:
    """The outcome of one ``OnlineAdapter.step``.

    disparity: H x W float32, >= 0, in pixels of the input image.
    confidence: H x W float32 in [0, 1]: ``photometric_confidence``, or with L2A weights the
        learned confidence network's output (0 where the disparity points out of view). When
        the step was called with ``want_confidence=False``, only the in-view mask (1 where
        x - d >= 0, else 0: where the full confidence is above 0), without the photometric
        error map behind the confidence.
    loss: the adaptation loss (``AdapterConfig.adaptation_loss``) of the prediction returned,
        before this step's update; the photometric loss on frames that do not adapt (NaN on
        those when the step was called with ``want_loss=False``).
    block: the MAD block trained (None unless a MAD step ran).
    adapted: whether the weights were updated.
    reset: whether the loss threshold or the collapse guard sent the weights back to the
        initial ones; collapse: the guard's reason when it did.
    skipped: why an adaptation step was skipped (non-finite loss, gradient or weights), or None.
    reference_won: on a frame the frozen-reference check judged (``reference_check_every``),
        whether the initial weights' prediction was published instead of the adapted one;
        None on other frames.
    proxy_density: fraction of the pixels the proxy regression used (None without proxy).
    timings: milliseconds of ``prepare`` (the images to tensors), ``forward`` (up to the
        backward pass), ``backward`` (with the optimiser step), ``output`` (back to input
        resolution and NumPy) and ``total``; within ``forward``, ``network`` (MADNet's forward
        pass) and ``confidence`` (the photometric error map and, on frames that do not adapt,
        the loss, which the published confidence needs); with a proxy also ``proxy`` (its own
        run time, in parallel with the network) and ``proxy_wait`` (how long the step waited
        for it: its cost in latency). On CUDA the parts are not synchronised, only ``total``.
    """

    disparity: np.ndarray
    confidence: np.ndarray
    loss: float
    block: int | None
    adapted: bool
    reset: bool = False
    collapse: str | None = None
    skipped: str | None = None
    reference_won: bool | None = None
    proxy_density: float | None = None
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class Outcome:
    """A step's outcome before its conversion to ``StepResult``: disparity and confidence are
    still 1 x 1 x h x w tensors at the network's input size (disparity in its pixels)."""

    disparity: torch.Tensor
    confidence: torch.Tensor
    loss: float
    block: int | None = None
    adapted: bool = False
    reset: bool = False
    collapse: str | None = None
    skipped: str | None = None
    reference_won: bool | None = None
    proxy_density: float | None = None


def to_step_result(outcome: Outcome, size: torch.Size, timings: dict[str, float],
                   start: float) -> StepResult:
    """The outputs at input resolution, on the host, as the one ``StepResult``."""
    output_start = time.perf_counter()
    disparity, confidence = outcome.disparity, outcome.confidence
    if disparity.shape[-2:] != size:
        factor = size[1] / disparity.shape[-1]
        disparity = F.interpolate(disparity, size=size, mode="bilinear",
                                  align_corners=False) * factor
        confidence = F.interpolate(confidence, size=size, mode="bilinear",
                                   align_corners=False)
    disparity_map = disparity[0, 0].clamp_min(0).float().cpu().numpy()
    confidence_map = confidence[0, 0].clamp(0, 1).float().cpu().numpy()
    now = time.perf_counter()
    timings["output"] = (now - output_start) * 1e3
    timings["total"] = (now - start) * 1e3
    return StepResult(disparity=disparity_map, confidence=confidence_map,
                      loss=outcome.loss, block=outcome.block, adapted=outcome.adapted,
                      reset=outcome.reset, collapse=outcome.collapse,
                      skipped=outcome.skipped, reference_won=outcome.reference_won,
                      proxy_density=outcome.proxy_density,
                      timings=timings)
