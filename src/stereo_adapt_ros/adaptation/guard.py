"""A guard against adaptation collapse.

Full photometric adaptation has been seen to flatten a good network's output after a few
hundred frames (a public report on the original MADNet): the loss can still fall while the
disparity map degenerates towards a constant, where the photometric error of textureless
regions is small. A step that is non-finite itself is rolled back by the adapter; this guard
watches the weights that survive, per adaptation step:

- a prediction that is not finite: the weights are broken (the inputs were checked), at once;
- most of the map pointing outside the image (|disparity| above the image width: a step too
  large made the weights explode while staying finite), at once (``EXPLODED_PATIENCE``): no
  scene has most of its pixels matched beyond the image, and with a patience of 2 each such
  collapse published one frame with disparities of thousands of pixels (MAD with a factor
  of 256 on block 6's rate on the real pan: six frames of EPE 1 000-40 000 px);

- the spread of the prediction (its 10-90 % inter-percentile range) against the spread the
  initial weights produced on the first frames after a (re)start: below ``SPREAD_FLOOR`` of
  it for ``PATIENCE`` frames in a row means the map has gone flat;
- the loss against its running median: above ``LOSS_SPIKE`` times it for ``PATIENCE`` frames
  in a row means the weights were knocked off;
- where proxy labels exist, the share of the proxy's confident pixels the prediction misses
  by more than 3 px: above ``DISAGREEMENT`` for ``PATIENCE`` frames, when the initial weights
  agreed far better.

When one fires, the adapter returns to its initial weights (``reset``), logs the reason and
counts it. ``PATIENCE`` consecutive frames keep one odd frame (a cut, a lens flare) from
resetting a good adaptation.
"""

from __future__ import annotations

import statistics
from collections import deque

import numpy as np
import torch

SPREAD_FLOOR = 0.2
LOSS_SPIKE = 3.0
DISAGREEMENT = 0.5
PATIENCE = 5
EXPLODED_PATIENCE = 1
#: Share of the pixels whose disparity exceeds the image width that means "exploded".
OUT_OF_IMAGE = 0.5
#: Frames after a (re)start that set the reference spread and proxy disagreement.
REFERENCE_FRAMES = 3
LOSS_WINDOW = 30


def prediction_statistics(disparity: torch.Tensor) -> tuple[bool, float, float]:
    """(finite, spread, out_of_image) of a prediction (H x W, pixels, on any device), read
    back in one synchronisation: whether every value is finite, the 10-90 % inter-percentile
    range (pixels; of a subsample for large maps), and the share of pixels whose absolute
    disparity exceeds the image width."""
    values = disparity.detach().float().flatten()
    finite = torch.isfinite(values).all()
    sample = torch.nan_to_num(values[::max(1, values.numel() // 65536)])
    low, high = torch.quantile(sample, torch.tensor([0.1, 0.9], device=sample.device))
    out = (values.abs() > disparity.shape[-1]).float().mean()
    finite_value, spread, out_of_image = torch.stack([finite.float(), high - low, out]).tolist()
    return bool(finite_value), (spread if finite_value else 0.0), \
        (out_of_image if finite_value else 0.0)


def proxy_disagreement(disparity: torch.Tensor, proxy: torch.Tensor, confident: torch.Tensor
                       ) -> float | None:
    """Share of the proxy's ``confident`` pixels (bool) where the prediction is more than 3 px
    off (None without any confident pixel). All the same shape, pixels of the same image."""
    used = confident & torch.isfinite(proxy) & torch.isfinite(disparity)
    if not bool(used.any()):
        return None
    return float(((disparity - proxy).abs() > 3)[used].float().mean())


class CollapseGuard:
    """Per adapted frame, ``update`` returns the reason to reset, or None."""

    def __init__(self) -> None:
        self.resets = 0
        self.last_reason: str | None = None
        self.restart()

    def restart(self) -> None:
        """Forget the history (after any return to the initial weights)."""
        self._spreads: list[float] = []
        self._disagreements: list[float] = []
        self._losses: deque[float] = deque(maxlen=LOSS_WINDOW)
        self._strikes = {"exploded": 0, "spread": 0, "loss": 0, "proxy": 0}

    def update(self, spread: float, loss: float | None, disagreement: float | None = None,
               out_of_image: float = 0.0, finite: bool = True) -> str | None:
        """spread, out_of_image, finite: ``prediction_statistics`` of the prediction; loss: the
        step's; disagreement: ``proxy_disagreement`` (None without proxy)."""
        if not finite:
            return self._fire("the prediction is not finite")
        reasons = {"exploded": (out_of_image > OUT_OF_IMAGE,
                                f"{out_of_image:.0%} of the disparities point outside the image")}
        if len(self._spreads) < REFERENCE_FRAMES:
            self._spreads.append(spread)
            if disagreement is not None:
                self._disagreements.append(disagreement)
        else:
            reference = statistics.median(self._spreads)
            reasons["spread"] = (reference > 0 and spread < SPREAD_FLOOR * reference,
                                 f"the disparity spread fell to {spread:.2f} px from "
                                 f"{reference:.2f} px")
            if disagreement is not None and self._disagreements:
                start = statistics.median(self._disagreements)
                reasons["proxy"] = (disagreement > max(DISAGREEMENT, 2 * start),
                                    f"{disagreement:.0%} of the proxy's confident pixels are "
                                    f"off by more than 3 px (at the start {start:.0%})")
        if loss is not None and np.isfinite(loss):
            spike = False
            if len(self._losses) >= REFERENCE_FRAMES and not reasons["exploded"][0]:
                median = statistics.median(self._losses)
                spike = median > 0 and loss > LOSS_SPIKE * median
                reasons["loss"] = (spike, f"the loss {loss:.4f} is over {LOSS_SPIKE:g} x its "
                                          f"running median {median:.4f}")
            if not spike:  # spikes stay out of the median they are measured against
                self._losses.append(loss)
        for name, (fired, why) in reasons.items():
            self._strikes[name] = self._strikes[name] + 1 if fired else 0
            patience = EXPLODED_PATIENCE if name == "exploded" else PATIENCE
            if self._strikes[name] >= patience:
                return self._fire(f"{why} for {patience} frames")
        return None

    def _fire(self, reason: str) -> str:
        self.resets += 1
        self.last_reason = reason
        self.restart()
        return reason
