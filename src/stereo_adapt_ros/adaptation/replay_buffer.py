"""The recent pairs an adapter keeps for extra adaptation steps in idle time
(``OnlineAdapter.replay_step``), with their proxy labels once computed."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class RecentPair:
    """A pair kept for replay steps, with its proxy labels once computed (a replay step
    reuses them instead of running the matcher again on the same pair)."""

    left: np.ndarray
    right: np.ndarray
    left_t: torch.Tensor
    right_t: torch.Tensor
    proxy: Future | None = None

    def proxy_labels(self, start: Callable[[], Future]) -> tuple[Future, bool]:
        """The pair's proxy labels: an earlier step's unless they failed, else the ones
        ``start()`` computes, kept for the next step; with whether they were reused."""
        cached = self.proxy
        if cached is not None and not (cached.done() and cached.exception() is not None):
            return cached, True
        self.proxy = start()
        return self.proxy, False


class ReplayBuffer:
    """The ``size`` most recent pairs; replay steps draw one at random (seeded)."""

    def __init__(self, size: int, seed: int) -> None:
        self._pairs: deque[RecentPair] = deque(maxlen=size)
        self._random = random.Random(seed)

    def __len__(self) -> int:
        return len(self._pairs)

    def __getitem__(self, index: int) -> RecentPair:
        return self._pairs[index]

    def add(self, left: np.ndarray, right: np.ndarray, left_t: torch.Tensor,
            right_t: torch.Tensor) -> RecentPair:
        """Keep the pair (as given and as tensors), dropping the oldest when full."""
        pair = RecentPair(left, right, left_t, right_t)
        self._pairs.append(pair)
        return pair

    def draw(self) -> RecentPair:
        """One of the pairs at random; the buffer must not be empty."""
        return self._pairs[self._random.randrange(len(self._pairs))]

    def resize(self, size: int) -> None:
        """Keep the ``size`` most recent pairs from now on."""
        self._pairs = deque(self._pairs, maxlen=size)

    def forget_proxy_labels(self) -> None:
        """Drop the kept labels (computed with a matcher setting that changed)."""
        for pair in self._pairs:
            pair.proxy = None
