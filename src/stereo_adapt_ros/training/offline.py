"""Offline adaptation of a recorded environment: several self-supervised epochs over a bag.

The online node adapts one step per frame, as the robot drives. When a recording of the place
exists (a rosbag2, or any dataset ``eval`` reads), the network can be fitted to it beforehand
with many more steps: ``adapt_offline`` runs the same ``OnlineAdapter`` step (one
implementation of the loss and the update, whatever the entry point) over the recording's
frames for several shuffled epochs, and the node then starts from the result
(``weights:=env.safetensors``) and keeps adapting online.

No label is used to train or to choose: the recording's last ``holdout`` share of frames (a
contiguous stretch, so that it is not the same views as the training frames) is held out, and
after every epoch its mean photometric loss, computed without adapting, decides which epoch's
weights are kept and when to stop (``patience`` epochs without improvement). Where the data
has ground truth, the held-out D1 and EPE are reported beside it, for the user, never for the
choice.

Writes the best epoch's weights (fp16, to ``weights_out``) and, in a run folder, the last
epoch's weights and optimiser state (checkpoint.safetensors, for ``resume``) and one line per
epoch (epochs.jsonl).
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..adaptation.adapter import AdapterConfig, OnlineAdapter
from ..data.sample import StereoSample
from ..evaluation.metrics import MetricAccumulator
from ..network.weights import WeightsInfo, save_weights
from ..options import option
from .run import TrainingRun

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class OfflineConfig:
    """epochs: passes over the training frames; holdout: share of the frames (the last ones)
    held out to choose the epoch; patience: stop after this many epochs without a lower
    held-out loss; seed: the shuffling's."""

    epochs: int = option(5, "Passes over the training frames.", low=1, high=100000)
    holdout: float = option(0.2, "Share of the frames (the last ones) held out to choose the "
                            "epoch.", low=0.0, high=1.0)
    patience: int = option(2, "Stop after this many epochs without a lower held-out loss.",
                           low=1, high=100000)
    seed: int = option(0, "Seed of the shuffling (and of MAD's block sampling).")

    def validate(self) -> None:
        if self.epochs < 1 or self.patience < 1:
            raise ValueError("epochs and patience must be >= 1")
        if not 0 < self.holdout < 1:
            raise ValueError(f"holdout must be in (0, 1), got {self.holdout}")


def split_frames(count: int, holdout: float) -> tuple[list[int], list[int]]:
    """(training, held-out) frame indices: the last ``holdout`` share, at least one frame, is
    held out; at least one frame is left to train on."""
    if count < 2:
        raise ValueError(f"offline adaptation needs at least 2 frames, got {count}")
    held = min(count - 1, max(1, round(count * holdout)))
    return list(range(count - held)), list(range(count - held, count))


def held_out_scores(adapter: OnlineAdapter, samples: Sequence[StereoSample],
                    indices: Sequence[int]) -> dict:
    """Mean photometric loss over ``indices`` without adapting (the adapter's pause), and
    D1 / EPE where the frames have ground truth (reported, never used to choose)."""
    paused, adapter.paused = adapter.paused, True
    losses, metrics = [], MetricAccumulator()
    try:
        for index in indices:
            sample = samples[index]
            step = adapter.step(sample.left, sample.right)
            losses.append(step.loss)
            if sample.disparity is not None:
                metrics.add(step.disparity, sample.disparity)
    finally:
        adapter.paused = paused
    scores = {"heldout_loss": float(np.mean(losses))}
    if metrics.counts.valid_pixels:
        summary = metrics.summary()
        scores.update(heldout_D1=summary["D1_all"], heldout_EPE=summary["EPE"])
    return scores


def adapt_offline(samples: Sequence[StereoSample], weights: str, adapter_config: AdapterConfig,
                  config: OfflineConfig, weights_out: Path, run_dir: Path,
                  device: str | torch.device = "cpu", resume: bool = False,
                  progress: bool = True) -> dict:
    """Fit ``weights`` to ``samples`` (see the module docstring); returns the summary:
    the epochs run, the best epoch, and its held-out scores next to the starting ones."""
    config.validate()
    if weights_out.suffix != ".safetensors":
        raise ValueError(f"the weights go to a .safetensors file, not {str(weights_out)!r}")
    train_indices, heldout_indices = split_frames(len(samples), config.holdout)
    weights_out.parent.mkdir(parents=True, exist_ok=True)
    adapter = OnlineAdapter.from_weights(weights, adapter_config, device)
    log_path = run_dir / "epochs.jsonl"
    records = [json.loads(line) for line in log_path.read_text().splitlines()] \
        if resume and log_path.exists() else []
    with TrainingRun(run_dir, "adapt", unit="frame", device_name=str(adapter.device),
                     records="epochs.jsonl", append=bool(records)) as run:
        start = run.resume({"": adapter.model}, adapter.optimizer) if resume else 0
        if not records:
            records.append({"epoch": 0, **held_out_scores(adapter, samples, heldout_indices)})
            run.log(records[-1])
            _save_best(adapter, weights_out, records[-1], weights)
        best = min(records, key=lambda r: r["heldout_loss"])
        order = random.Random(config.seed)
        for _ in range(start):
            order.shuffle(train_indices)  # the same order a run without a resume would draw
        for epoch in range(start + 1, config.epochs + 1):
            if epoch - best["epoch"] > config.patience:
                LOG.info("no lower held-out loss for %d epochs: stopping", config.patience)
                break
            order.shuffle(train_indices)
            losses = []
            frames = run.progress(0, len(train_indices), f"epoch {epoch}/{config.epochs}") \
                if progress else range(len(train_indices))
            for position in frames:
                sample = samples[train_indices[position]]
                losses.append(adapter.step(sample.left, sample.right).loss)
            record = {"epoch": epoch, "train_loss": float(np.mean(losses)),
                      **held_out_scores(adapter, samples, heldout_indices)}
            records.append(record)
            run.log(record)
            run.checkpoint({"": adapter.model}, adapter.optimizer, epoch, config,
                           WeightsInfo(trained_on="offline adaptation"))
            if record["heldout_loss"] < best["heldout_loss"]:
                best = record
                _save_best(adapter, weights_out, record, weights)
    return {"frames": len(samples), "train_frames": len(train_indices),
            "heldout_frames": len(heldout_indices), "epochs_run": records[-1]["epoch"],
            "best_epoch": best["epoch"], "start": records[0], "best": best,
            "weights": str(weights_out), "config": asdict(config)}


def _save_best(adapter: OnlineAdapter, path: Path, record: dict, weights: str) -> None:
    info = replace(adapter.info, description=(
        f"{adapter.info.description} | adapted offline from {weights}: epoch {record['epoch']},"
        f" held-out photometric loss {record['heldout_loss']:.4f}").strip(" |"))
    save_weights(path, {**adapter.extra_tensors, **adapter.model.state_dict()}, info,
                 dtype=torch.float16)

