"""Training augmentation that teaches robustness to real cameras.

Real rigs differ between their two views (exposure, gain, white balance, noise, focus), are
never perfectly rectified, and see things only one camera sees. The recipes that generalise
best from synthetic data (RAFT-Stereo, CREStereo, CFNet; ../docs/training.md) therefore change
each view on its own; the original MADNet only jittered both views alike. Here:

- colour, per view with probability ``asymmetric`` (otherwise both views alike): gamma,
  contrast about the image's mean grey, brightness, saturation, per-channel gain;
- sensor noise (Gaussian, per view), blur (Gaussian, per view);
- one or two boxes of the right image's mean colour (occlusions the left view does not see);
- a sub-pixel vertical shift of the right view (imperfect rectification);
- a random scale and horizontal stretch of the pair, with the disparity scaled by the
  horizontal factor (the ground truth stays exact).

Each transform is a pure function of its parameters (tested against hand-computed values);
``augment`` draws the parameters from a seeded generator. Images are B x 3 x H x W in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data.sample import StereoBatch

#: Rec. 601 luma weights, for the grey level of contrast and saturation.
LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class AugmentConfig:
    """Each switch off with 0 (or False). asymmetric: probability that the right view draws
    its own colour parameters. brightness, contrast, gamma, saturation: largest relative
    change (factor drawn in [1 - x, 1 + x]); colour: largest per-channel gain change.
    noise: largest noise sigma. blur: probability of a blur per view (sigma 0.2-1.5 px).
    occlusion: probability of right-view boxes. vertical: largest vertical shift of the right
    view, pixels. scale: log2 range of the zoom; stretch: largest log2 of the extra
    horizontal stretch. grey: probability that a pair becomes grey (both views; each keeps
    its own gain from the colour parameters), as a mono rig sees it."""

    asymmetric: float = 0.5
    brightness: float = 0.4
    contrast: float = 0.3
    gamma: float = 0.2
    saturation: float = 0.4
    colour: float = 0.1
    noise: float = 0.02
    blur: float = 0.3
    occlusion: float = 0.5
    vertical: float = 1.0
    scale: tuple[float, float] = (-0.2, 0.4)
    stretch: float = 0.2
    grey: float = 0.2

    def validate(self) -> None:
        for name in ("asymmetric", "blur", "occlusion", "grey"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} is a probability, got {getattr(self, name)}")
        for name in ("brightness", "contrast", "gamma", "saturation", "colour"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.noise < 0 or self.vertical < 0 or self.stretch < 0:
            raise ValueError("noise, vertical and stretch must be >= 0")
        if self.scale[0] > self.scale[1]:
            raise ValueError(f"invalid scale range {self.scale}")


#: Every transform off: the pair passes through (only cropped or resized to the asked size).
NO_AUGMENTATION = AugmentConfig(asymmetric=0, brightness=0, contrast=0, gamma=0, saturation=0,
                                colour=0, noise=0, blur=0, occlusion=0, vertical=0,
                                scale=(0, 0), stretch=0, grey=0)


def grey(image: torch.Tensor) -> torch.Tensor:
    """Luma of B x 3 x H x W images, B x 1 x H x W."""
    weights = torch.tensor(LUMA, device=image.device, dtype=image.dtype).view(1, 3, 1, 1)
    return (image * weights).sum(dim=1, keepdim=True)


def adjust_colour(image: torch.Tensor, gamma: torch.Tensor, contrast: torch.Tensor,
                  brightness: torch.Tensor, saturation: torch.Tensor, gain: torch.Tensor
                  ) -> torch.Tensor:
    """image ** gamma, then contrast about the mean grey, times brightness, saturation
    (blend with the grey image: 0 grey, 1 unchanged), times a per-channel gain; clipped to
    [0, 1]. gamma, contrast, brightness, saturation: B; gain: B x 3."""
    view = (-1, 1, 1, 1)
    image = image.clamp(0, 1) ** gamma.view(view)
    mean = grey(image).mean(dim=(2, 3), keepdim=True)
    image = (image - mean) * contrast.view(view) + mean
    image = image * brightness.view(view)
    luma = grey(image)
    image = luma + (image - luma) * saturation.view(view)
    return (image * gain.view(-1, 3, 1, 1)).clamp(0, 1)


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with replicated borders, radius ceil(2 sigma)."""
    if sigma <= 0:
        return image
    radius = max(1, math.ceil(2 * sigma))
    taps = torch.arange(-radius, radius + 1, device=image.device, dtype=image.dtype)
    kernel = torch.exp(-taps ** 2 / (2 * sigma ** 2))
    channels = image.shape[1]
    kernel = (kernel / kernel.sum()).repeat(channels, 1)
    image = F.conv2d(F.pad(image, (radius, radius, 0, 0), mode="replicate"),
                     kernel.view(channels, 1, 1, -1), groups=channels)
    return F.conv2d(F.pad(image, (0, 0, radius, radius), mode="replicate"),
                    kernel.view(channels, 1, -1, 1), groups=channels)


def fill_boxes(image: torch.Tensor, boxes: list[list[tuple[int, int, int, int]]]
               ) -> torch.Tensor:
    """Paint boxes (top, left, height, width) of each image with that image's mean colour
    (taken before painting). boxes: one list per batch element."""
    mean = image.mean(dim=(2, 3), keepdim=True)
    out = image.clone()
    for i, image_boxes in enumerate(boxes):
        for top, left, height, width in image_boxes:
            out[i, :, top:top + height, left:left + width] = mean[i]
    return out


def shift_vertical(image: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Move each image down by ``shift`` (B, pixels, sub-pixel: linear interpolation between
    rows; borders replicated). out(y) = image(y - shift)."""
    b, _, h, w = image.shape
    rows = torch.arange(h, device=image.device, dtype=image.dtype).view(1, h, 1)
    source = (rows - shift.view(-1, 1, 1)).clamp(0, h - 1).expand(b, h, w)
    cols = torch.arange(w, device=image.device, dtype=image.dtype).view(1, 1, w).expand(b, h, w)
    grid = torch.stack((cols / max(w - 1, 1) * 2 - 1, source / max(h - 1, 1) * 2 - 1), dim=-1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border",
                         align_corners=True)


def rescale_window(batch: StereoBatch, top: int, left: int, height: int, width: int,
                   size: tuple[int, int]) -> StereoBatch:
    """Cut the window (top, left, height, width) out of every view and the ground truth and
    resize it to ``size``: images bilinearly (area when shrinking), the disparity and the
    visibility by nearest neighbour (no invented depths between surfaces), the disparity
    times the horizontal factor size[1] / width."""
    window = (..., slice(top, top + height), slice(left, left + width))
    if (height, width) == tuple(size):
        return StereoBatch(*(t[window] for t in (batch.left, batch.right, batch.disparity,
                                                 batch.visible)))
    mode = "area" if height >= size[0] and width >= size[1] else "bilinear"

    def image(view: torch.Tensor) -> torch.Tensor:
        return F.interpolate(view[window], size=size, mode=mode).clamp(0, 1)

    disparity = F.interpolate(batch.disparity[window], size=size, mode="nearest")
    visible = F.interpolate(batch.visible[window].float(), size=size, mode="nearest") > 0.5
    return StereoBatch(image(batch.left), image(batch.right), disparity * (size[1] / width),
                       visible)


def _uniform(generator: torch.Generator, low: float, high: float, *shape: int) -> torch.Tensor:
    return low + (high - low) * torch.rand(*shape, generator=generator)


def _colour_parameters(config: AugmentConfig, count: int, generator: torch.Generator
                       ) -> tuple[torch.Tensor, ...]:
    def factor(spread: float, *shape: int) -> torch.Tensor:
        return _uniform(generator, 1 - spread, 1 + spread, count, *shape)

    return (factor(config.gamma), factor(config.contrast), factor(config.brightness),
            factor(config.saturation), factor(config.colour, 3))


def augment(batch: StereoBatch, config: AugmentConfig, generator: torch.Generator,
            size: tuple[int, int] | None = None) -> StereoBatch:
    """Augmented copy of ``batch`` at ``size`` (default: the batch's own size), parameters
    drawn from ``generator`` (CPU). The zoom is limited so that the window it needs fits in
    the batch; with zoom 1 a random ``size`` window is cut."""
    config.validate()
    b, _, h, w = batch.left.shape
    size = size or (h, w)
    if size[0] > h or size[1] > w:
        raise ValueError(f"cannot cut {size[0]} x {size[1]} out of {h} x {w}")
    device = batch.left.device
    zoom = 2 ** float(_uniform(generator, *config.scale, 1))
    stretch = 2 ** float(_uniform(generator, -config.stretch, config.stretch, 1))
    zoom_y = max(zoom, size[0] / h)
    zoom_x = max(zoom * stretch, size[1] / w)
    height, width = min(h, round(size[0] / zoom_y)), min(w, round(size[1] / zoom_x))
    top = int(torch.randint(h - height + 1, (1,), generator=generator))
    left_column = int(torch.randint(w - width + 1, (1,), generator=generator))
    batch = rescale_window(batch, top, left_column, height, width, size)

    views = []
    joint = _colour_parameters(config, b, generator)
    for view in (batch.left, batch.right):
        own = _colour_parameters(config, b, generator)
        apart = (torch.rand(b, generator=generator) < config.asymmetric).view(-1, 1)
        parameters = [torch.where(apart.view(-1, *([1] * (j.dim() - 1))), o, j).to(device)
                      for j, o in zip(joint, own)]
        view = adjust_colour(view, *parameters)
        if float(torch.rand((), generator=generator)) < config.blur:
            view = gaussian_blur(view, float(_uniform(generator, 0.2, 1.5, 1)))
        sigma = _uniform(generator, 0, config.noise, b, 1, 1, 1).to(device)
        noise = torch.randn(view.shape, generator=generator).to(device)
        views.append((view + sigma * noise).clamp(0, 1))
    left, right = views

    if config.occlusion > 0:
        boxes = []
        for _ in range(b):
            image_boxes = []
            if float(torch.rand((), generator=generator)) < config.occlusion:
                for _ in range(int(torch.randint(1, 3, (1,), generator=generator))):
                    bh = int(size[0] * float(_uniform(generator, 0.1, 0.3, 1)))
                    bw = int(size[1] * float(_uniform(generator, 0.05, 0.2, 1)))
                    image_boxes.append((int(torch.randint(size[0] - bh + 1, (1,),
                                                          generator=generator)),
                                        int(torch.randint(size[1] - bw + 1, (1,),
                                                          generator=generator)), bh, bw))
            boxes.append(image_boxes)
        right = fill_boxes(right, boxes)
    if config.vertical > 0:
        right = shift_vertical(right, _uniform(generator, -config.vertical, config.vertical,
                                               b).to(device))
    if config.grey > 0:
        mono = (torch.rand(b, generator=generator) < config.grey).view(-1, 1, 1, 1).to(device)
        left = torch.where(mono, grey(left).expand_as(left), left)
        right = torch.where(mono, grey(right).expand_as(right), right)
    return StereoBatch(left, right, batch.disparity, batch.visible)
