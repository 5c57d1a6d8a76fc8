"""Building blocks of MADNet: convolutions, horizontal warping, the right view's visibility
and 1-D correlation.

Disparity convention used throughout the package: positive disparity d in pixels of the
tensor it belongs to, such that the left pixel (x, y) matches the right pixel (x - d, y).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LEAKY_SLOPE = 0.2
#: Left pixels within this many pixels of disparity of the nearest one landing on a right pixel
#: belong to the same surface (a forward warp blends them); farther ones are hidden behind it.
Z_TOLERANCE = 1.0


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    """A 3x3 convolution whose padding keeps the size (divided by the stride)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride,
                     padding=dilation, dilation=dilation)


def conv_stack(channels: list[int], dilations: list[int] | None = None) -> nn.Sequential:
    """3x3 convolutions ``channels[0] -> channels[1] -> ...`` with leaky ReLU after every one
    but the last, which is linear (it predicts a disparity)."""
    dilations = dilations or [1] * (len(channels) - 1)
    layers: list[nn.Module] = []
    for i, (cin, cout) in enumerate(zip(channels[:-1], channels[1:])):
        layers.append(conv3x3(cin, cout, dilation=dilations[i]))
        if i < len(channels) - 2:
            layers.append(nn.LeakyReLU(LEAKY_SLOPE))
    return nn.Sequential(*layers)


def warp_right_to_left(right: torch.Tensor, disparity: torch.Tensor) -> torch.Tensor:
    """Sample ``right`` at ``x - disparity`` for every left pixel (bilinear along x).

    right: B x C x H x W; disparity: B x 1 x H x W, in pixels of this resolution.
    Samples that fall outside the image are 0 (spec: they carry no evidence).
    Returns B x C x H x W, the right view seen from the left camera.
    """
    b, _, h, w = right.shape
    xs = torch.arange(w, device=right.device, dtype=disparity.dtype).view(1, 1, 1, w)
    x_src = xs - disparity
    # grid_sample wants x and y normalised to [-1, 1] with align_corners=True: pixel 0 -> -1.
    x_norm = 2.0 * x_src / max(w - 1, 1) - 1.0
    ys = torch.linspace(-1.0, 1.0, h, device=right.device, dtype=disparity.dtype) if h > 1 \
        else torch.zeros(1, device=right.device, dtype=disparity.dtype)
    y_norm = ys.view(1, 1, h, 1).expand(b, 1, h, w)
    grid = torch.stack((x_norm.squeeze(1), y_norm.squeeze(1)), dim=-1)
    return F.grid_sample(right, grid.to(right.dtype), mode="bilinear", padding_mode="zeros",
                         align_corners=True)


def visible_in_right(disparity: torch.Tensor) -> torch.Tensor:
    """Which left pixels the right camera sees: in its view (x - d >= 0) and not hidden by a
    nearer surface landing on the same right pixel. disparity: B x 1 x H x W (0: unknown,
    never visible). Returns B x 1 x H x W bool."""
    b, _, h, w = disparity.shape
    device = disparity.device
    xs = torch.arange(w, device=device, dtype=torch.float32).view(1, 1, 1, w)
    target = (xs - disparity).round()
    known = disparity > 0
    in_view = (target >= 0) & known
    rows = (torch.arange(b * h, device=device) * w).view(b, 1, h, 1)
    index = (rows + target.clamp(0, w - 1).long()).flatten()
    nearest = torch.full((b * h * w,), -math.inf, device=device)
    nearest.scatter_reduce_(0, index[in_view.flatten()], disparity.flatten()[in_view.flatten()],
                            reduce="amax")
    front = disparity.flatten() >= nearest[index] - Z_TOLERANCE
    return in_view & front.view(b, 1, h, w)


def correlation_1d(left: torch.Tensor, right: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """Horizontal correlation: ``out[i](x) = mean_c left(x) * right(x + i)`` for
    ``i in [-radius, radius]``, zero where ``x + i`` falls outside the image.

    left, right: B x C x H x W features (right usually already warped to the left view).
    Returns B x (2*radius+1) x H x W, channel k holding shift ``i = k - radius``.
    """
    w = right.shape[-1]
    padded = F.pad(right, (radius, radius))
    slices = [(left * padded[..., k:k + w]).mean(dim=1, keepdim=True)
              for k in range(2 * radius + 1)]
    return torch.cat(slices, dim=1)


def upsample_disparity(disparity: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize a disparity map to ``size`` (H, W) and rescale its values to the
    new resolution's pixels (the x factor is new_width / old_width)."""
    factor = size[1] / disparity.shape[-1]
    return F.interpolate(disparity, size=size, mode="bilinear", align_corners=False) * factor
