"""Run a stereo method over a sequence in order and score it against ground truth.

For MADNet the adapter carries its weights from frame to frame (online adaptation), exactly as
on a robot; ``repeat`` runs the sequence several times to watch adaptation converge.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..adaptation.adapter import OnlineAdapter
from ..adaptation.proxy import ProxyConfig, compute_proxy
from ..data.io import write_color_disparity, write_kitti_disparity
from ..data.sample import StereoSample
from ..matching.sgbm import SgbmConfig, sgbm_disparity
from .metrics import MetricAccumulator, disparity_counts
from .reference import Reference, agreement_counts, photometric_error_mean

#: Summary keys, in the order the table prints them.
SUMMARY_METRICS = ("D1_all", "EPE", "bad1", "bad2", "bad3", "density", "D1_valid", "bad3_valid")


@dataclass(frozen=True)
class RunOptions:
    """max_frames: stop after this many frames in total (None: all); repeat: passes over the
    sequence; max_disparity / min_disparity: ground truth above / below it is ignored (None:
    all);
    save_dir: where disparity PNGs go (None: nowhere); progress: show a progress bar.
    reference_range: on frames without ground truth, score against SGBM's left-right
    consistent pixels with this search range, and the photometric error (``reference.py``;
    None: only frames with ground truth are scored)."""

    max_frames: int | None = None
    repeat: int = 1
    max_disparity: float | None = None
    min_disparity: float | None = None
    save_dir: Path | None = None
    progress: bool = True
    reference_range: int | None = None


@dataclass
class FramePrediction:
    disparity: np.ndarray
    loss: float | None = None
    block: int | None = None
    collapse: str | None = None
    reference_won: bool | None = None


def madnet_predictor(adapter: OnlineAdapter, steps_per_frame: int = 1, oracle: bool = False
                     ) -> Callable[[StereoSample], FramePrediction]:
    """One online step of ``adapter`` per frame, then ``steps_per_frame - 1`` replay steps on
    recent pairs (what the node's idle adaptation does when the camera is slower than the
    network). ``oracle``: adapt by regressing the frame's ground truth instead (the ceiling
    row of an evaluation; needs ground truth on every frame)."""
    def predict(sample: StereoSample) -> FramePrediction:
        if oracle and sample.disparity is None:
            raise ValueError(f"the oracle needs ground truth, and frame {sample.name!r} has none")
        step = adapter.step(sample.left, sample.right,
                            ground_truth=sample.disparity if oracle else None)
        for _ in range(steps_per_frame - 1):
            adapter.replay_step()
        return FramePrediction(step.disparity, step.loss, step.block, step.collapse,
                               step.reference_won)
    return predict


def sgbm_predictor(config: SgbmConfig) -> Callable[[StereoSample], FramePrediction]:
    """OpenCV SGBM per frame (NaN where it gives no disparity)."""
    def predict(sample: StereoSample) -> FramePrediction:
        return FramePrediction(sgbm_disparity(sample.left, sample.right, config))
    return predict


def proxy_predictor(config: ProxyConfig, tau: float | None
                    ) -> Callable[[StereoSample], FramePrediction]:
    """A proxy-label generator per frame: its disparity, NaN where there is none and, with
    ``tau``, where its confidence is not above ``tau`` (what the regression would use)."""
    def predict(sample: StereoSample) -> FramePrediction:
        labels = compute_proxy(sample.left, sample.right, config)
        disparity = labels.disparity.copy()
        if tau is not None:
            disparity[labels.confidence <= tau] = np.nan
        return FramePrediction(disparity)
    return predict


def _rounded(value: float | None, digits: int = 4) -> float | None:
    if value is None or not np.isfinite(value):
        return None
    return round(float(value), digits)


def run_sequence(samples: Sequence[StereoSample],
                 predict: Callable[[StereoSample], FramePrediction], label: str,
                 options: RunOptions = RunOptions()) -> dict:
    """Predict every frame in order and score it.

    Returns ``{"summary": {...}, "frames": [...]}``: the summary pools metrics pixel-weighted
    over every frame with ground truth (percentages 0-100; ``last_pass`` holds the same for the
    final pass when ``repeat`` > 1); each frame record holds index, pass, name, its metrics
    (where ground truth exists; else, with ``reference_range``, agreement with SGBM and the
    photometric error), loss, block and milliseconds.
    """
    total = _frame_count(samples, options)
    if options.save_dir is not None:
        options.save_dir.mkdir(parents=True, exist_ok=True)
    score = _SequenceScore(options)
    frames = []
    bar = tqdm(total=total, desc=label, unit="frame", disable=not options.progress,
               file=sys.stderr, dynamic_ncols=True)
    for index in range(total):
        pass_index, position = divmod(index, len(samples))
        if position == 0:
            score.start_pass()
        sample = samples[position]
        start = time.perf_counter()
        prediction = predict(sample)
        elapsed = (time.perf_counter() - start) * 1e3
        record, postfix = score.add(index, pass_index, position, sample, prediction, elapsed)
        if postfix:
            bar.set_postfix(postfix)
        if options.save_dir is not None:
            _save_disparity(options.save_dir / f"{index:06d}_{sample.name}",
                            prediction.disparity, options.max_disparity)
        frames.append(record)
        bar.update(1)
    bar.close()
    return {"summary": score.summary(label, total), "frames": frames}


def _frame_count(samples: Sequence[StereoSample], options: RunOptions) -> int:
    """How many frames a run predicts: ``repeat`` passes, at most ``max_frames``."""
    if options.repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {options.repeat}")
    if len(samples) == 0:
        raise ValueError("the sequence has no frames")
    total = len(samples) * options.repeat
    if options.max_frames is not None:
        total = min(total, options.max_frames)
    return total


def _save_disparity(stem: Path, disparity: np.ndarray, max_disparity: float | None) -> None:
    """``STEM.png`` (KITTI 16-bit) and ``STEM_color.png``."""
    write_kitti_disparity(f"{stem}.png", disparity)
    write_color_disparity(f"{stem}_color.png", disparity, max_disparity)


class _SequenceScore:
    """The scores of one run, frame by frame: metrics pooled over the frames with ground truth
    (the whole run and the pass under way), agreement with SGBM's reference and the photometric
    error on those without (with ``reference_range``), the adapter's events and the times."""

    def __init__(self, options: RunOptions) -> None:
        self.options = options
        # The ground truth scored: (max_disparity, min_disparity).
        self.scored = (options.max_disparity, options.min_disparity)
        self.overall = MetricAccumulator(*self.scored)
        self.last_pass = MetricAccumulator(*self.scored)
        self.agreement = MetricAccumulator()
        self.photo_errors: list[float] = []
        self.references: dict[int, Reference] = {}
        self.collapses = self.checks = self.initial_published = 0
        self.durations: list[float] = []

    def start_pass(self) -> None:
        self.last_pass = MetricAccumulator(*self.scored)

    def add(self, index: int, pass_index: int, position: int, sample: StereoSample,
            prediction: FramePrediction, elapsed_ms: float) -> tuple[dict, dict[str, str]]:
        """Score one frame (``position`` in the sequence); returns its record and what the
        progress bar shows of it."""
        self.durations.append(elapsed_ms)
        record = {"index": index, "pass": pass_index, "name": sample.name,
                  "loss": _rounded(prediction.loss, 5), "block": prediction.block,
                  "ms": round(elapsed_ms, 2)}
        if prediction.collapse:
            record["collapse"] = prediction.collapse
            self.collapses += 1
        if prediction.reference_won is not None:
            record["reference_won"] = prediction.reference_won
            self.checks += 1
            self.initial_published += prediction.reference_won
        if sample.disparity is not None:
            return record, self._score_truth(record, prediction.disparity, sample.disparity)
        if self.options.reference_range is not None:
            return record, self._score_reference(record, position, sample, prediction.disparity,
                                                 self.options.reference_range)
        return record, {}

    def _score_truth(self, record: dict, disparity: np.ndarray, truth: np.ndarray
                     ) -> dict[str, str]:
        # Count the pixels once; the frame, the whole run and the last pass share them.
        counts = disparity_counts(disparity, truth, *self.scored)
        self.overall.add_counts(counts)
        self.last_pass.add_counts(counts)
        metrics = counts.to_metrics()
        record.update({key: _rounded(metrics[key]) for key in ("D1_all", "EPE", "bad3")})
        return {"D1": f"{metrics['D1_all']:.1f}", "EPE": f"{metrics['EPE']:.2f}"}

    def _score_reference(self, record: dict, position: int, sample: StereoSample,
                         disparity: np.ndarray, search_range: int) -> dict[str, str]:
        if position not in self.references:
            self.references[position] = Reference.of(sample.left, sample.right, search_range)
        counts = agreement_counts(disparity, self.references[position])
        self.agreement.add_counts(counts)
        metrics = counts.to_metrics()
        self.photo_errors.append(photometric_error_mean(sample.left, sample.right, disparity))
        record.update(agree_D1=_rounded(metrics["D1_all"]), agree_EPE=_rounded(metrics["EPE"]),
                      photo_error=_rounded(self.photo_errors[-1], 5))
        return {"agree_D1": f"{metrics['D1_all']:.1f}"}

    def summary(self, label: str, total: int) -> dict:
        """The run's summary (see ``run_sequence``)."""
        median = statistics.median(self.durations)
        summary = {"mode": label, "frames": total, "collapse_resets": self.collapses,
                   "reference_checks": self.checks, "initial_published": self.initial_published,
                   "fps": round(1e3 / median, 3), "median_ms": round(median, 2)}
        pooled = self.overall.summary()
        summary.update({key: _rounded(pooled.get(key)) for key in SUMMARY_METRICS})
        if self.photo_errors:
            pooled = self.agreement.summary()
            density = float(np.mean([r.density for r in self.references.values()]))
            summary.update(agree_D1=_rounded(pooled["D1_all"]), agree_EPE=_rounded(pooled["EPE"]),
                           agree_density=_rounded(density),
                           photo_error=_rounded(float(np.mean(self.photo_errors)), 5))
        if self.options.repeat > 1:
            tail = self.last_pass.summary()
            summary["last_pass"] = {key: _rounded(tail.get(key)) for key in SUMMARY_METRICS}
        return summary


def format_table(results: Sequence[dict]) -> str:
    """A plain-text table of summaries, one row per run."""
    columns: tuple[str, ...] = ("mode", "frames", "D1_all", "EPE", "bad3", "density", "D1_valid",
                                "fps")
    if any("agree_D1" in result["summary"] for result in results):
        columns += ("agree_D1", "agree_EPE", "photo_error")
    rows = [[_cell(result["summary"].get(c)) for c in columns] for result in results]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)
