"""Scores for real pairs without ground truth (the OAK-D pairs of stereodemo, a robot's bag).

Two numbers that need no labels, reported beside each other because either alone can be
gamed:

- agreement with a traditional matcher where it is sure of itself: OpenCV SGBM's disparity on
  the pixels that pass its left-right consistency check (the matcher a roboticist would run,
  and where it is right about 95 % of the time on real scenes) is taken as the reference, and
  the prediction is scored against it with the KITTI metrics (``agree_D1``, ``agree_EPE``;
  ``agree_density``: the share of pixels the reference covers);
- the photometric error: the mean SSIM + L1 error between the left image and the right one
  warped by the prediction (``photo_error``, the adaptation loss without its weights).

Neither method sees anything but the images; the reference's search range is a setting, like
the node's ``proxy_max_disparity``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..adaptation.losses import photometric_error
from ..adaptation.proxy import ProxyConfig, compute_proxy
from .metrics import MetricCounts, disparity_counts

#: The reference keeps SGBM pixels whose left-right confidence exceeds this.
REFERENCE_CONFIDENCE = 0.5


@dataclass(frozen=True)
class Reference:
    """SGBM's left-right consistent disparity of one pair (H x W float32, NaN elsewhere)."""

    disparity: np.ndarray

    @classmethod
    def of(cls, left: np.ndarray, right: np.ndarray, max_disparity: int = 128) -> Reference:
        """left, right: H x W x 3 uint8 RGB; max_disparity: search range, pixels."""
        labels = compute_proxy(left, right, ProxyConfig(
            proxy_method="sgbm", proxy_confidence="lr", max_disparity=max_disparity,
            proxy_sgbm_mode="sgbm", proxy_pad=False))
        disparity = np.where(labels.confidence > REFERENCE_CONFIDENCE, labels.disparity, np.nan)
        return cls(disparity.astype(np.float32))

    @property
    def density(self) -> float:
        return float(np.isfinite(self.disparity).mean() * 100)


def agreement_counts(prediction: np.ndarray, reference: Reference) -> MetricCounts:
    """The prediction (H x W, pixels) scored against the reference's pixels."""
    return disparity_counts(prediction.astype(np.float32), reference.disparity)


def photometric_error_mean(left: np.ndarray, right: np.ndarray, prediction: np.ndarray
                           ) -> float:
    """Mean SSIM + L1 error of reconstructing ``left`` from ``right`` warped by
    ``prediction`` (H x W disparity in pixels; non-finite pixels count as 0 disparity)."""
    def tensor(image: np.ndarray) -> torch.Tensor:
        array = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
        # A copy: the caller's array may be read-only (torch warns on those).
        return torch.from_numpy(np.array(array[..., :3], dtype=np.float32)).permute(2, 0, 1)[None] \
            / 255

    disparity = torch.from_numpy(np.nan_to_num(prediction.astype(np.float32), nan=0.0,
                                               posinf=0.0, neginf=0.0))[None, None]
    with torch.no_grad():
        return float(photometric_error(tensor(left), tensor(right), disparity).mean())
