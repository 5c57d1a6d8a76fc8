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
#: Between scheduled checks, a check runs at once when the adapted prediction's score is worse
#: than at the last check by more than this: absolute for the proxy score (a share of the
#: proxy's confident pixels), relative for the photometric one.
TRIGGER = {"proxy": 0.02, "photometric": 0.1}


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
    """When to check (``due``, ``triggered``) and the adapted weights' losses against the
    frozen reference (``judge``).

    The schedule backs off while the adapted weights hold: a check every ``every`` adapted
    frames at first and after every check they lost (worse than the reference by more than
    the margin); after each check they did not lose, the interval doubles, up to
    ``backoff`` frames. Between scheduled checks, a frame whose
    adapted score is worse than at the last check by ``TRIGGER`` is checked at once (a new
    scene, a new pose: where adapted weights turn out worse than the initial ones).
    ``every`` 0: never."""

    def __init__(self, margin: float, patience: int, every: int = 1, backoff: int = 1):
        self.margin = margin
        self.patience = patience
        self.every = every
        self.backoff = backoff
        self.checks = 0
        self.losses = 0
        self.rollbacks = 0
        self.triggers = 0
        self._strikes = 0
        self._interval = every
        self._wait = 0
        self._last: tuple[str, float] | None = None

    def restart(self) -> None:
        self._strikes = 0
        self._interval = self.every
        self._wait = 0
        self._last = None

    def check_next(self) -> None:
        """Check the next adapted frame whatever the schedule (after steps nobody checked,
        e.g. idle-time steps); the back-off's interval is kept."""
        self._wait = 0

    @property
    def due_in(self) -> int:
        """Adapted frames before the next scheduled check (0: the next one is checked)."""
        return max(self._wait, 0)

    def due(self) -> bool:
        """Whether the schedule checks this adapted frame (call once per adapted frame)."""
        if self.every <= 0:
            return False
        if self._wait <= 0:
            return True
        self._wait -= 1
        return False

    def triggered(self, adapted: float, kind: str) -> bool:
        """Whether an unscheduled frame's ``adapted`` score (of ``kind``) is worse than at the
        last check by ``TRIGGER``: then it is checked too."""
        if self.every <= 0 or self._last is None or self._last[0] != kind:
            return False
        last = self._last[1]
        worse = adapted > (last + TRIGGER[kind] if kind == "proxy"
                           else last * (1 + TRIGGER[kind]))
        self.triggers += worse
        return worse

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
        self._interval = min(self._interval * 2, max(self.every, self.backoff)) if not lost \
            else self.every
        self._wait = self._interval - 1
        self._last = (kind, adapted)
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
