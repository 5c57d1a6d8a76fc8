"""The frozen-reference check (``safety.py``) as the adapter runs it: when the frozen initial
weights are kept and how they predict, the schedule's largest interval, and the scores a
check compares."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..network.madnet import MADNet
from ..network.weights import InputNormalization
from .config import AdapterConfig
from .proxy_worker import ProxyTargets
from .runtime import ModelRuntime
from .safety import MIN_PROXY_DENSITY, ReferenceCheck, Verdict, frozen_copy, photometric_score, \
    proxy_score


def check_backoff(config: AdapterConfig) -> int:
    """The reference check's largest interval: ``reference_check_backoff`` for MAD, whose
    step changes one block; 1 for full steps, which change every prediction at once (on the
    harsh development sequences, full adaptation checked with a back-off to 8 frames reached
    1.05 x no adaptation, checked on every frame 1.02 x; MAD 1.01 x either way)."""
    return config.reference_check_backoff if config.adaptation_mode == "mad" else 1


def needs_reference(config: AdapterConfig) -> bool:
    """Whether the frozen initial weights are needed: by the reference check or an anchor."""
    return bool(config.reference_check_every or config.anchor_weight or
                config.restore_fraction)


class FrozenReference:
    """The initial weights, frozen: their prediction for the reference check, their
    parameters (``parameters``, by name) for the anchors (``anchor_weight``,
    ``restore_fraction``)."""

    def __init__(self, model: MADNet, initial_state: dict[str, torch.Tensor]) -> None:
        self.model = frozen_copy(model)
        self.model.load_state_dict(initial_state)
        self.parameters: dict[str, torch.Tensor] = dict(self.model.named_parameters())

    def predict(self, runtime: ModelRuntime, left: torch.Tensor, right: torch.Tensor,
                normalization: InputNormalization) -> torch.Tensor:
        """The disparity of the pair (1 x 1 x h x w), run as ``runtime`` runs the adapted
        weights."""
        with torch.no_grad(), runtime.autocast():
            return self.model(*runtime.network_input(left, right, normalization)
                              ).disparity.float()


def adapted_score(disparity: torch.Tensor, error: torch.Tensor | None,
                  proxy: ProxyTargets | None, disagreement: float | None
                  ) -> tuple[float, str] | None:
    """The adapted prediction's score as a check would judge it (its proxy score
    ``disagreement``, else its photometric one from its ``error`` map), without the
    reference; None when neither is at hand."""
    if proxy is not None and disagreement is not None and proxy.density >= MIN_PROXY_DENSITY:
        return disagreement, "proxy"
    if error is not None:
        with torch.no_grad():
            return photometric_score(error, disparity), "photometric"
    return None


def judge(check: ReferenceCheck, left: torch.Tensor, right: torch.Tensor,
          disparity: torch.Tensor, reference: torch.Tensor, error: torch.Tensor | None,
          proxy: ProxyTargets | None, disagreement: float | None, tau: float,
          error_fn: Callable[..., torch.Tensor]) -> Verdict:
    """Score the adapted and the reference prediction of the pair and let ``check`` judge
    them: on the proxy's pixels confident above ``tau`` when there are enough of them, else
    photometrically (``error_fn``). ``error``: the adapted prediction's error map and
    ``disagreement``: its proxy score, when already computed."""
    with torch.no_grad():
        if proxy is not None and disagreement is not None:
            initial = proxy_score(reference, proxy.disparity, proxy.confidence > tau,
                                  proxy.density)
            if initial is not None:
                return check.judge(disagreement, initial, "proxy")
        if error is None:
            error = error_fn(left, right, disparity)
        return check.judge(photometric_score(error, disparity),
                           photometric_score(error_fn(left, right, reference), reference),
                           "photometric")
