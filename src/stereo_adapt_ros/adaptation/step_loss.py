"""The loss of an adaptation step (``AdapterConfig.adaptation_loss``): its photometric part,
computed while the proxy labels are still on their way, then the loss back-propagated (the
MAD block's own prediction's) and the loss reported (the final prediction's)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..network.confidence_net import ConfidenceNetwork
from ..network.madnet import MADNetOutput
from .config import AdapterConfig
from .losses import edge_aware_smoothness, photometric_loss, proxy_loss, unwarped_error
from .proxy_worker import ProxyTargets


@dataclass(frozen=True)
class LossTerms:
    """What a step computes of its losses before the proxy labels arrive: the MAD block's
    prediction (the final one in full steps and on block 2) with the images its loss compares
    (``mad_loss_scale``) and the photometric part of its loss, which is back-propagated; the
    final prediction with its photometric part and error map, which are reported. Photometric
    parts and the error map are None for losses without them (proxy, the oracle)."""

    block_left: torch.Tensor
    block_disparity: torch.Tensor
    block_photometric: torch.Tensor | None
    left: torch.Tensor
    disparity: torch.Tensor
    photometric: torch.Tensor | None
    error: torch.Tensor | None


@dataclass(frozen=True)
class StepLoss:
    """The losses of ``config`` with the adapter's photometric error (compiled when
    ``compile`` is on) and L2A's confidence network, if the weights carry one, which weights
    the photometric loss. Images are 1 x 3 x h x w in [0, 1], disparities 1 x 1 x h x w in
    pixels of those images; ``target`` is the oracle's ground truth (``step``'s
    ``ground_truth``), None otherwise."""

    config: AdapterConfig
    error_fn: Callable[..., torch.Tensor]
    confidence_net: ConfidenceNetwork | None

    def photometric_loss(self, left: torch.Tensor, right: torch.Tensor,
                         disparity: torch.Tensor, smoothness: float = 0.0,
                         identity_error: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """``photometric_loss`` weighted by the learned confidence (L2A weights), with the
        adapter's photometric error and masking."""
        return photometric_loss(left, right, disparity, smoothness, self.confidence_net,
                                error_fn=self.error_fn,
                                automask=self.config.photometric_automask,
                                occlusion=self.config.photometric_occlusion_mask,
                                identity_error=identity_error)

    def photometric_part(self, left: torch.Tensor, right: torch.Tensor,
                         disparity: torch.Tensor, target: torch.Tensor | None,
                         identity_error: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(the photometric part of ``AdapterConfig.adaptation_loss`` for ``disparity``, with
        the smoothness term, and its error map), both None for a loss without one (proxy, or
        the oracle's ``target``). It does not need the proxy labels, so a step computes it
        while the proxy thread still runs.
        identity_error: auto-masking's unwarped error of these images, if already computed."""
        if target is not None or self.config.adaptation_loss == "proxy":
            return None, None
        return self.photometric_loss(left, right, disparity, self.config.smoothness_weight,
                                     identity_error)

    def adaptation_loss(self, photometric: torch.Tensor | None, left: torch.Tensor,
                        disparity: torch.Tensor, proxy: ProxyTargets | None,
                        target: torch.Tensor | None = None) -> torch.Tensor:
        """The loss of ``AdapterConfig.adaptation_loss`` for ``disparity`` from its
        ``photometric`` part (``photometric_part``) and the proxy labels; with ``target``
        (the oracle) the L1 to it over its known pixels."""
        if target is not None:
            if target.shape[-2:] != disparity.shape[-2:]:
                factor = disparity.shape[-1] / target.shape[-1]
                target = F.interpolate(target, size=disparity.shape[-2:], mode="nearest") \
                    * factor
            known = target > 0
            return ((disparity.float() - target).abs() * known).sum() / known.sum().clamp_min(1)
        kind, smoothness = self.config.adaptation_loss, self.config.smoothness_weight
        if kind == "photometric":
            assert photometric is not None
            return photometric
        assert proxy is not None, f"the {kind} loss needs the proxy labels"
        regression = proxy_loss(disparity, proxy.disparity, proxy.confidence,
                                self.config.proxy_tau)
        if kind == "proxy":
            if smoothness > 0:
                regression = regression + smoothness * edge_aware_smoothness(disparity.float(),
                                                                             left.float())
            return regression
        assert photometric is not None
        return photometric + self.config.proxy_weight * regression

    def photometric_terms(self, output: MADNetOutput, block: int | None, left: torch.Tensor,
                          right: torch.Tensor, target: torch.Tensor | None) -> LossTerms:
        """The parts of a step's two losses that do not need the proxy labels (see
        ``LossTerms``). A MAD step on a block other than 2 back-propagates the loss of that
        block's own prediction (MAD's block loss)."""
        disparity = output.disparity.float()
        if block is None or block == 2:
            photometric, error = self.photometric_part(left, right, disparity, target)
            return LossTerms(left, disparity, photometric, left, disparity, photometric, error)
        # Both losses auto-mask against the same unwarped error when the block's loss is at
        # full resolution: computed once.
        identity = unwarped_error(left, right, disparity, self.error_fn) if \
            self.config.photometric_automask and self.config.mad_loss_scale == 1 and \
            self.config.adaptation_loss != "proxy" and target is None else None
        block_left, block_right, block_disparity = block_loss_inputs(
            output, block, left, right, self.config.mad_loss_scale)
        block_photometric, _ = self.photometric_part(block_left, block_right, block_disparity,
                                                     target, identity)
        with torch.no_grad():
            photometric, error = self.photometric_part(left, right, disparity.detach(),
                                                       target, identity)
        return LossTerms(block_left, block_disparity, block_photometric, left,
                         disparity.detach(), photometric, error)

    def step_losses(self, terms: LossTerms, proxy: ProxyTargets | None,
                    target: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(the loss to back-propagate, the loss of the final prediction to report) from
        ``terms`` and the proxy labels."""
        block_loss = self.adaptation_loss(terms.block_photometric, terms.block_left,
                                          terms.block_disparity, proxy, target)
        if terms.block_disparity is terms.disparity:
            return block_loss, block_loss
        with torch.no_grad():
            loss = self.adaptation_loss(terms.photometric, terms.left, terms.disparity, proxy,
                                        target)
        return block_loss, loss


def block_loss_inputs(output: MADNetOutput, block: int, left: torch.Tensor,
                      right: torch.Tensor, scale: float
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(left, right, ``block``'s disparity) at ``scale`` (``mad_loss_scale``) of the input
    resolution, the disparity in pixels of the resized images."""
    disparity = output.upsampled(block).float()
    if scale == 1:
        return left, right, disparity
    height, width = left.shape[-2:]
    size = (max(8, round(height * scale)), max(8, round(width * scale)))
    left, right = (F.interpolate(image, size=size, mode="area") for image in (left, right))
    disparity = F.interpolate(disparity, size=size, mode="area") * (size[1] / width)
    return left, right, disparity
