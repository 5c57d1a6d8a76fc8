"""Training and comparing the learned proxy confidence (``network.proxy_confidence``).

Examples come from stereo pairs with ground truth (rendered procedural and photo-generated
pairs): the proxy matchers run on each pair exactly as during adaptation (the same search range,
never taken from the truth), and each pixel with a known truth is labelled right (within
``CORRECT_PX``) or wrong. The network is trained on random windows of those maps with a
class-balanced binary cross-entropy. ``compare_measures`` scores every confidence measure on
held-out pairs: of the pixels a regression with threshold ``tau`` keeps, how many are right
(precision), and how many of the right pixels it keeps (recall).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..adaptation.adapter import AdapterConfig
from ..adaptation.proxy import (CONFIDENCE_MEASURES, ProxyConfig, compute_proxy, matcher_maps,
                                proxy_features)
from ..data.sample import StereoSample
from ..network.proxy_confidence import ProxyConfidenceNet, correct_labels
from ..options import check_options, declared_options, option
from .run import TrainingRun

LOG = logging.getLogger("stereo_adapt_ros.proxy_confidence")
#: The receptive field's margin: an unpadded forward shrinks each side by this.
MARGIN = 4


#: The adapter's declaration of the proxy's search range, whose default and range training takes.
_PROXY_RANGE = declared_options(AdapterConfig)["proxy_max_disparity"]


@dataclass(frozen=True)
class ProxyConfidenceTraining:
    """The training's settings; methods: the proxy matchers to learn from; window: the side of
    the training windows, pixels."""

    methods: tuple[str, ...] = ("sgbm", "ad")
    max_disparity: int = option(_PROXY_RANGE.default, "The matchers' search range (as "
                                "proxy_max_disparity).", low=_PROXY_RANGE.low,
                                high=_PROXY_RANGE.high)
    proxy_pad: bool = option(
        False, "Learn from SGBM proxies padded as adaptation runs them (proxy_pad). Off: the "
        "shipped network was learned unpadded, and one learned padded kept fewer right proxy "
        "pixels and adapted worse (docs/adaptation.md).")
    steps: int = option(3000, "Optimiser steps.")
    batch: int = option(32, "Windows per step.")
    window: int = 48
    lr: float = option(1e-3, "Adam's initial learning rate (halved at 60 % and 85 % of the "
                       "steps).")
    seed: int = option(0, "Seed of the windows drawn and of the initial weights.")

    def validate(self) -> None:
        if not self.methods or any(m not in ("sgbm", "ad", "census") for m in self.methods):
            raise ValueError(f"methods must be some of sgbm, ad, census, got {self.methods}")
        if self.steps < 1 or self.batch < 1 or self.window < 2 * MARGIN + 1 or self.lr <= 0:
            raise ValueError("need steps >= 1, batch >= 1, window >= 9 and lr > 0")
        check_options(self)


@dataclass
class Example:
    """One proxy map: features (5 x H x W), labels and where the truth is known (H x W)."""

    features: np.ndarray
    labels: np.ndarray
    known: np.ndarray


def make_examples(samples: Sequence[StereoSample], config: ProxyConfidenceTraining,
                  progress: Callable[[int], None] | None = None) -> list[Example]:
    """One example per sample and method (samples need ground truth)."""
    examples = []
    for index, sample in enumerate(samples):
        if sample.disparity is None:
            raise ValueError(f"sample {sample.name} has no ground truth to learn from")
        for method in config.methods:
            maps = matcher_maps(sample.left, sample.right, ProxyConfig(
                proxy_method=method, proxy_confidence="learned",
                max_disparity=config.max_disparity, proxy_sgbm_mode="sgbm",
                proxy_pad=config.proxy_pad))
            features = proxy_features(maps.left_gray, maps.disparity, maps.right_disparity,
                                      maps.unique, maps.max_disparity)
            labels, known = correct_labels(maps.disparity, sample.disparity)
            examples.append(Example(features, labels, known))
        if progress is not None:
            progress(index + 1)
    return examples


def _windows(examples: Sequence[Example], count: int, side: int, generator: np.random.Generator
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random side x side windows: features, and the labels / known masks of their centres
    (side - 2 * MARGIN square)."""
    features, labels, known = [], [], []
    inner = slice(MARGIN, side - MARGIN)
    for _ in range(count):
        example = examples[int(generator.integers(len(examples)))]
        height, width = example.labels.shape
        top = generator.integers(0, height - side + 1)
        left = generator.integers(0, width - side + 1)
        rows, cols = slice(top, top + side), slice(left, left + side)
        features.append(example.features[:, rows, cols])
        labels.append(example.labels[rows, cols][inner, inner])
        known.append(example.known[rows, cols][inner, inner])
    return (torch.from_numpy(np.stack(features)), torch.from_numpy(np.stack(labels))[:, None],
            torch.from_numpy(np.stack(known).astype(np.float32))[:, None])


def train_network(examples: Sequence[Example], config: ProxyConfidenceTraining,
                  run: TrainingRun | None = None) -> ProxyConfidenceNet:
    """Fit a ``ProxyConfidenceNet`` (class-balanced BCE on the known pixels, Adam, the rate
    halved at 60 % and 85 % of the steps); with ``run``, its progress bar shows the steps."""
    config.validate()
    if not examples:
        raise ValueError("no examples to learn from")
    torch.manual_seed(config.seed)
    generator = np.random.default_rng(config.seed)
    right = sum(float((e.labels * e.known).sum()) for e in examples)
    total = sum(float(e.known.sum()) for e in examples)
    if not 0 < right < total:
        raise ValueError("the examples need both right and wrong proxy pixels")
    # Weights so that right and wrong pixels count alike whatever their share.
    weight_right, weight_wrong = total / (2 * right), total / (2 * (total - right))
    network = ProxyConfidenceNet()
    optimizer = torch.optim.Adam(network.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, [int(0.6 * config.steps), int(0.85 * config.steps)], gamma=0.5)
    network.train()
    bar = run.progress(0, config.steps) if run is not None else None
    for step in bar if bar is not None else range(config.steps):
        features, labels, known = _windows(examples, config.batch, config.window, generator)
        logits = network.logits(features, padded=False)
        weights = known * torch.where(labels > 0.5, weight_right, weight_wrong)
        loss = (F.binary_cross_entropy_with_logits(logits, labels, weight=weights,
                                                   reduction="sum")
                / known.sum().clamp(min=1.0))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if bar is not None and (step + 1) % 100 == 0:
            bar.set_postfix(loss=f"{float(loss):.4f}")
    return network.eval()


def compare_measures(samples: Sequence[StereoSample], method: str, max_disparity: int,
                     tau: float, proxy_pad: bool, learned_weights: str = "",
                     measures: Sequence[str] = CONFIDENCE_MEASURES) -> dict[str, dict]:
    """Per measure: precision, recall and density of the pixels with confidence > ``tau``
    over ``samples`` (pooled), and the share of right proxy pixels overall; the proxy padded
    or not as ``proxy_pad`` (the adapter's option)."""
    counts = {m: {"kept": 0, "kept_right": 0} for m in measures}
    right_total = known_total = 0
    for sample in samples:
        if sample.disparity is None:
            raise ValueError(f"sample {sample.name} has no ground truth to score against")
        labels: np.ndarray | None = None
        known = np.zeros(sample.disparity.shape, dtype=bool)
        for measure in measures:
            config = ProxyConfig(proxy_method=method, proxy_confidence=measure,
                                 max_disparity=max_disparity, proxy_sgbm_mode="sgbm",
                                 proxy_pad=proxy_pad, learned_weights=learned_weights)
            proxy = compute_proxy(sample.left, sample.right, config)
            if labels is None:
                labels, known = correct_labels(proxy.disparity, sample.disparity)
                right_total += int((labels * known).sum())
                known_total += int(known.sum())
            kept = (proxy.confidence > tau) & known
            counts[measure]["kept"] += int(kept.sum())
            counts[measure]["kept_right"] += int((kept & (labels > 0.5)).sum())
    table = {}
    for measure, count in counts.items():
        table[measure] = {
            "precision": count["kept_right"] / count["kept"] if count["kept"] else math.nan,
            "recall": count["kept_right"] / right_total if right_total else math.nan,
            "density": count["kept"] / known_total if known_total else math.nan}
    table["all"] = {"precision": right_total / known_total if known_total else math.nan,
                    "recall": 1.0, "density": 1.0}
    return table

