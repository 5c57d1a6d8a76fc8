"""Choice of the MAD block to train on each frame."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SAMPLING_STRATEGIES = ("probabilistic", "uniform", "round_robin", "fixed", "argmax")


@dataclass(frozen=True)
class SamplerConfig:
    """strategy: ``probabilistic`` (MAD's reward rule), ``uniform``, ``round_robin``,
    ``fixed`` (always ``fixed_block``) or ``argmax`` (the highest-scored block).
    decay, rate: the reward rule's ``H <- decay * H; H[b] += rate * gain`` (0.99, 0.01)."""

    strategy: str = "probabilistic"
    fixed_block: int = 2
    decay: float = 0.99
    rate: float = 0.01

    def validate(self, blocks: tuple[int, ...]) -> None:
        if self.strategy not in SAMPLING_STRATEGIES:
            raise ValueError(f"mad_sampling must be one of {SAMPLING_STRATEGIES}, "
                             f"got {self.strategy!r}")
        if self.fixed_block not in blocks:
            raise ValueError(f"fixed block must be one of {blocks}, got {self.fixed_block}")
        if not (0 < self.decay <= 1) or not (self.rate >= 0):
            raise ValueError("decay must be in (0, 1] and rate >= 0")


class BlockSampler:
    """MAD's block sampler.

    Per frame: ``choose()`` picks the block to train (from softmax(H) for ``probabilistic``),
    then, once that frame's loss L(t) is known, ``update(L(t), block)`` credits the block
    trained on the *previous* frame with the gain ``(2 L(t-1) - L(t-2)) - L(t)``: the drop of
    the loss below its linear extrapolation. The first two frames only fill the history.
    """

    def __init__(self, blocks: tuple[int, ...], config: SamplerConfig = SamplerConfig(),
                 seed: int = 0):
        config.validate(blocks)
        self.blocks = tuple(blocks)
        self.config = config
        self.scores = np.zeros(len(self.blocks))
        self._rng = np.random.default_rng(seed)
        self._losses: list[float] = []
        self._previous_block: int | None = None
        self._next_round_robin = 0

    def probabilities(self) -> np.ndarray:
        """softmax(H), in the order of ``blocks``."""
        exp = np.exp(self.scores - self.scores.max())
        return exp / exp.sum()

    def choose(self) -> int:
        strategy = self.config.strategy
        if strategy == "fixed":
            return self.config.fixed_block
        if strategy == "uniform":
            return self.blocks[int(self._rng.integers(len(self.blocks)))]
        if strategy == "round_robin":
            block = self.blocks[self._next_round_robin % len(self.blocks)]
            self._next_round_robin += 1
            return block
        if strategy == "argmax":
            return self.blocks[int(np.argmax(self.scores))]
        return self.blocks[int(self._rng.choice(len(self.blocks), p=self.probabilities()))]

    def update(self, loss: float, trained_block: int) -> float | None:
        """Record frame t's loss and the block trained at t; returns the gain credited to the
        block trained at t-1 (None while the history is too short or the loss not finite)."""
        gain = None
        if not math.isfinite(loss):
            return None
        if len(self._losses) == 2 and self._previous_block is not None:
            expected = 2 * self._losses[-1] - self._losses[-2]
            gain = expected - loss
            self.scores *= self.config.decay
            self.scores[self.blocks.index(self._previous_block)] += self.config.rate * gain
        self._losses = (self._losses + [loss])[-2:]
        self._previous_block = trained_block
        return gain

    def reset(self) -> None:
        self.scores[:] = 0
        self._losses = []
        self._previous_block = None
        self._next_round_robin = 0
