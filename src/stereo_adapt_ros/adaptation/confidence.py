"""Per-pixel confidence of a disparity map from its photometric consistency."""

from __future__ import annotations

import torch

from ..network.confidence_net import ConfidenceNetwork

#: Photometric error at which confidence falls to 1/e. The SSIM + L1 error of a correct
#: match on real images is typically 0.02-0.08; a wrong match on textured surfaces 0.2+.
CONFIDENCE_ERROR_SCALE = 0.1


def photometric_confidence(error: torch.Tensor, disparity: torch.Tensor,
                           error_scale: float = CONFIDENCE_ERROR_SCALE) -> torch.Tensor:
    """Confidence in [0, 1]: ``exp(-error / error_scale)``, and 0 where the disparity points
    outside the right image (``x - d < 0``: nothing was observed to support it).

    error: per-pixel photometric error, B x 1 x H x W in [0, 1] (``photometric_error``).
    disparity: B x 1 x H x W in pixels of the same resolution.
    Low error is necessary, not sufficient: a wrong disparity on a textureless surface also
    reconstructs well, so confidence there is optimistic.
    """
    return torch.exp(-error.float() / error_scale) * in_right_view(disparity)


def in_right_view(disparity: torch.Tensor) -> torch.Tensor:
    """Where the disparity points inside the right image (``x - d >= 0``), B x 1 x H x W bool.

    disparity: B x 1 x H x W in pixels of its own resolution.
    """
    width = disparity.shape[-1]
    xs = torch.arange(width, device=disparity.device, dtype=disparity.dtype).view(1, 1, 1, width)
    return (xs - disparity) >= 0


def published_confidence(error: torch.Tensor | None, disparity: torch.Tensor,
                         network: ConfidenceNetwork | None = None) -> torch.Tensor:
    """The confidence an adapter publishes for ``disparity`` (B x 1 x H x W, pixels) from its
    photometric ``error`` map: ``photometric_confidence``, or with L2A's confidence
    ``network`` its output where that is above 0; for ``error`` None (not wanted), the
    in-view mask only."""
    if error is None:
        return in_right_view(disparity).float()
    confidence = photometric_confidence(error, disparity)
    if network is None:
        return confidence
    with torch.no_grad():
        return network(error.float()) * (confidence > 0)
