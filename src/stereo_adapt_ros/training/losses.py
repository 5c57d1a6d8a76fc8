"""The supervised loss of both trainings: multi-scale L1 to exact ground truth.

Every prediction (levels 6..3 and the refined level 2, which is the final output) is upsampled
to the input resolution, in input pixels, and compared with the exact ground truth: mean
absolute error over the pixels whose disparity is within ``max_disparity``. Weights 1, 1/2,
1/4, 1/8, 1/16 from the final output to level 6. (The paper's 0.005 ... 0.32 were for sums
over each level's own pixels, PWC-Net style; with means at one resolution, weights falling with
coarseness play the same role: the coarse levels guide, the fine ones decide.)
"""

from __future__ import annotations

import torch

from ..adaptation.losses import at_least_float32
from ..network.madnet import BLOCKS

LEVEL_WEIGHTS = {2: 1.0, 3: 0.5, 4: 0.25, 5: 0.125, 6: 0.0625}


def multiscale_l1(output, disparity: torch.Tensor, max_disparity: float
                  ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """The weighted multi-scale L1 (see the module docstring). disparity: B x 1 x H x W."""
    valid = torch.isfinite(disparity) & (disparity > 0) & (disparity <= max_disparity)
    count = valid.sum().clamp_min(1)
    target = torch.where(valid, disparity, torch.zeros_like(disparity))
    total = torch.zeros((), device=disparity.device)
    per_level = {}
    for level in BLOCKS:
        error = ((at_least_float32(output.upsampled(level)) - target).abs() * valid).sum() / count
        total = total + LEVEL_WEIGHTS[level] * error
        per_level[level] = error.detach()
    return total, per_level
