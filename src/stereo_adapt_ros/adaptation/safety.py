"""Adaptation that does no harm: the frozen reference check, and two anchors to the initial
weights measured beside it (docs/adaptation.md, "Do no harm").

Self-supervised adaptation follows a wrong minimum of its loss as eagerly as a right one:
on a chessboard in separate poses, a repetitive wall or a scene cut, the weights adapted to
the last frames can be far worse on the next one than the weights they started from, while
their own loss says nothing. The continual test-time adaptation literature keeps the source
weights near (L2-SP, EATA's Fisher penalty, CoTTA's stochastic restore); none guarantees "never
worse than the frozen network". The check here does, up to its score's reliability: the
initial weights predict the frame as well, both predictions are scored without labels on the
frame neither has trained on, the better one is published, and weights that keep losing are
rolled back.

The score is the share of the proxy's confident pixels a prediction misses by more than 3 px
(the proxy labels exist anyway with the default loss); without proxy labels (the photometric
loss, or a frame where the proxy found no confident pixel), the mean photometric error over
the pixels the prediction keeps in the right view.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from ..network.madnet import MADNet
from .confidence import in_right_view
from .guard import proxy_disagreement

#: Fewest confident proxy pixels (share of the image) for the proxy score.
MIN_PROXY_DENSITY = 0.005


def frozen_copy(model: MADNet) -> MADNet:
    """A copy of ``model`` that never trains: eval mode, no gradients."""
    reference = copy.deepcopy(model)
    reference.eval().requires_grad_(False)
    return reference


def proxy_score(disparity: torch.Tensor, proxy_disparity: torch.Tensor,
                confident: torch.Tensor, density: float) -> float | None:
    """The proxy score of ``disparity`` (share of the ``confident`` proxy pixels it misses by
    more than 3 px; lower is better), None when the proxy's ``density`` (share of confident
    pixels, ``ProxyTargets.density``) is too low to judge by."""
    if density < MIN_PROXY_DENSITY:
        return None
    return proxy_disagreement(disparity, proxy_disparity, confident)


def photometric_score(error: torch.Tensor, disparity: torch.Tensor) -> float:
    """Mean of a photometric ``error`` map (1 x 1 x H x W) over the pixels ``disparity`` keeps
    in the right view (lower is better)."""
    inside = in_right_view(disparity)
    return float(error[inside].mean()) if bool(inside.any()) else float(error.mean())


@dataclass
class Verdict:
    """One check's outcome: the two scores (lower is better), which kind of score, whether
    the reference's prediction is the one to publish (it scored better), whether the adapted
    weights lost (their score above the reference's by more than the margin), and whether
    they lost often enough in a row to be rolled back."""

    adapted: float
    reference: float
    kind: str
    publish_reference: bool
    lost: bool
    rollback: bool

    def reason(self) -> str:
        what = "proxy pixels missed" if self.kind == "proxy" else "photometric error"
        return (f"frozen-reference check: the initial weights did better on this frame "
                f"({what} {self.reference:.3f} against the adapted {self.adapted:.3f})")


class ReferenceCheck:
    """Counts the adapted weights' losses against the frozen reference (``judge``)."""

    def __init__(self, margin: float, patience: int):
        self.margin = margin
        self.patience = patience
        self.checks = 0
        self.losses = 0
        self.rollbacks = 0
        self._strikes = 0

    def restart(self) -> None:
        self._strikes = 0

    def judge(self, adapted: float, reference: float, kind: str) -> Verdict:
        """The verdict on one frame's two scores. The margin is absolute for the proxy score
        (a share of pixels) and relative for the photometric one."""
        self.checks += 1
        allowed = reference + self.margin if kind == "proxy" else reference * (1 + self.margin)
        lost = adapted > allowed
        self._strikes = self._strikes + 1 if lost else 0
        rollback = self._strikes >= self.patience
        self.losses += lost
        if rollback:
            self.rollbacks += 1
            self._strikes = 0
        return Verdict(adapted, reference, kind, adapted > reference, lost, rollback)


def anchor_penalty(params: dict[str, torch.Tensor], source: dict[str, torch.Tensor]
                   ) -> torch.Tensor:
    """L2-SP (Li et al., ICML 2018): the squared distance of ``params`` to their ``source``
    values, summed over every element."""
    return torch.stack([((p.float() - source[name].float()) ** 2).sum()
                        for name, p in params.items()]).sum()


@torch.no_grad()
def restore_fraction(params: dict[str, torch.Tensor], source: dict[str, torch.Tensor],
                     fraction: float) -> None:
    """CoTTA's stochastic restore (Wang et al., CVPR 2022): each element of ``params`` goes
    back to its ``source`` value with probability ``fraction``."""
    for name, param in params.items():
        keep = torch.rand_like(param, dtype=torch.float32) >= fraction
        param.copy_(torch.where(keep, param, source[name]))
