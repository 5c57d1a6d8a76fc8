"""A step's proxy labels: computed on the CPU in a worker thread while the network predicts
(OpenCV and numpy release the GIL), then brought to the network's input size as regression
targets."""

from __future__ import annotations

import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .proxy import ProxyConfig, ProxyLabels, compute_proxy


@dataclass(frozen=True)
class ProxyTargets:
    """The proxy labels as regression targets, 1 x 1 x h x w at the network's input size:
    ``disparity`` in its pixels (NaN: no label) and ``confidence`` in [0, 1]; ``density`` is the
    fraction of the pixels whose confidence is above ``proxy_tau``."""

    disparity: torch.Tensor
    confidence: torch.Tensor
    density: float


class ProxyWorker:
    """The one thread that computes proxy labels, started by the first request."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None

    def start(self, left: np.ndarray, right: np.ndarray, config: ProxyConfig, scale: float
              ) -> Future:
        """Compute the labels of the pair with ``config`` in the worker thread, on the images
        resized by ``scale`` (``proxy_scale``; the search range scaled with them). The future
        gives (the labels, the matcher's run time in milliseconds)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="proxy")
        if scale != 1:
            config = replace(config, max_disparity=max(1, math.ceil(config.max_disparity * scale)))

        def run() -> tuple[ProxyLabels, float]:
            start = time.perf_counter()
            views: list[np.ndarray] = [left, right]
            if scale != 1:
                size = (max(8, round(left.shape[1] * scale)), max(8, round(left.shape[0] * scale)))
                views = [cv2.resize(view, size, interpolation=cv2.INTER_AREA) for view in views]
            labels = compute_proxy(views[0], views[1], config)
            return labels, (time.perf_counter() - start) * 1e3
        return self._pool.submit(run)


def proxy_targets(future: Future, size: torch.Size, device: torch.device, tau: float,
                  timings: dict[str, float]) -> ProxyTargets:
    """Wait for the labels of ``ProxyWorker.start`` and bring them to ``size`` on ``device``
    (density above ``tau``); adds ``proxy_wait`` and ``proxy`` to ``timings``. Raises what the
    matcher raised (ValueError, cv2.error) when it failed."""
    start = time.perf_counter()
    labels, proxy_ms = future.result()
    timings["proxy_wait"] = (time.perf_counter() - start) * 1e3
    timings["proxy"] = proxy_ms
    disparity = torch.from_numpy(labels.disparity)[None, None].to(device)
    confidence = torch.from_numpy(labels.confidence)[None, None].to(device)
    if disparity.shape[-2:] != size:
        factor = size[1] / disparity.shape[-1]
        disparity = F.interpolate(disparity, size=size, mode="nearest") * factor
        confidence = F.interpolate(confidence, size=size, mode="nearest")
    return ProxyTargets(disparity, confidence, labels.density(tau))
