"""Stereo pairs from single real photographs (after Watson et al., "Learning Stereo from Single
Images", ECCV 2020), with procedural depth instead of a depth network.

A photograph becomes the left view. Its disparity is a procedural layout aligned with the
photo: a base (a ground plane under a far background, one slanted plane, or a smooth field),
image segments (Felzenszwalb) raised as slanted planes in front of it, so that depth edges fall
on image edges, and a few occluding shapes cut from other photographs (dead leaves). Every
piece is planar in disparity, which is exactly what a 3-D plane looks like to a rectified rig,
and the map is built per pixel from hard labels, so it has no flying pixels to sharpen away.

The right view is the left one forward-warped by the disparity, x_r = x - d, with a z-buffer
(where several sources land on one target pixel the nearest surface wins, within
``Z_TOLERANCE``) and two-tap splatting. The photo is rendered wider than the output by the
largest disparity, so the right view has no empty border; holes left by disocclusion are
filled from another photograph whose per-channel mean and spread are matched to the view. The
ground truth is exact: the left disparity of every pixel, and ``visible`` marks the pixels the
right view sees (in view and not occluded).

A moving-camera variant translates the rig sideways along a smooth path: a camera ``s``
baselines to the right sees the same layered scene warped by ``s * d`` (disparity does not
change under a sideways translation), so every frame's views and ground truth come from the
same warp.

Everything but the segmentation (scikit-image, on the CPU) is vectorised torch and runs where
the tensors are; all random draws come from one CPU generator seeded by the caller, so a seed
gives the same pairs on any device (up to the float rounding of CUDA's atomic additions).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from skimage.segmentation import felzenszwalb

from ..data.sample import StereoBatch
from ..network.layers import Z_TOLERANCE, visible_in_right

LAYOUTS = ("ground", "plane", "smooth")


@dataclass(frozen=True)
class PhotoStereoConfig:
    """height, width: output size. max_disparity_fraction: the largest disparity of a pair is
    drawn in this range, times ``width`` (the spec's 0.02-0.3). segment_fraction: share of the
    image segments raised in front of the base (drawn per pair in this range). shapes:
    occluding shapes from other photographs (inclusive range)."""

    height: int = 256
    width: int = 512
    max_disparity_fraction: tuple[float, float] = (0.02, 0.3)
    segment_fraction: tuple[float, float] = (0.1, 0.5)
    shapes: tuple[int, int] = (0, 4)

    def validate(self) -> None:
        if self.height < 16 or self.width < 16:
            raise ValueError(f"images must be at least 16 x 16, got {self.height} x {self.width}")
        low, high = self.max_disparity_fraction
        if not 0 < low <= high < 1:
            raise ValueError(f"need 0 < max_disparity_fraction low <= high < 1, got {low, high}")
        if not 0 <= self.segment_fraction[0] <= self.segment_fraction[1] <= 1:
            raise ValueError(f"invalid segment_fraction {self.segment_fraction}")
        if not 0 <= self.shapes[0] <= self.shapes[1]:
            raise ValueError(f"invalid shapes range {self.shapes}")

    @property
    def largest_disparity(self) -> float:
        return self.max_disparity_fraction[1] * self.width


class PhotoSource(Protocol):
    """Anything that draws a photograph (H x W x 3 uint8 RGB) from a seeded generator."""

    def pick(self, generator: torch.Generator) -> np.ndarray: ...


class PhotoBank:
    """Photographs of one split of a photo library, decoded on demand (at most ``max_side``
    pixels on the longer side) and kept in a small least-recently-used cache.

    ``pick`` draws a source with probability proportional to the square root of its number of
    files, then a file of it uniformly: one large source (the ~1400 game textures of ufoai)
    then has about half the draws instead of nineteen in twenty, and the few large natural
    photographs are seen often without being all there is."""

    def __init__(self, library, split: str | None = "train", max_side: int = 1024,
                 cache: int = 256):
        self.library = library
        self.entries = library.entries(split)
        if not self.entries:
            raise ValueError(f"the photo library has no {split!r} photographs")
        by_source: dict[str, list[int]] = {}
        for index, entry in enumerate(self.entries):
            by_source.setdefault(entry.source, []).append(index)
        self.sources = [by_source[name] for name in sorted(by_source)]
        self.source_weights = torch.tensor([math.sqrt(len(s)) for s in self.sources])
        self.max_side = max_side
        self.cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self.capacity = cache

    def __len__(self) -> int:
        return len(self.entries)

    def pick(self, generator: torch.Generator) -> np.ndarray:
        files = self.sources[int(torch.multinomial(self.source_weights, 1,
                                                   generator=generator))]
        return self.image(files[_randint(generator, 0, len(files) - 1)])

    def image(self, index: int) -> np.ndarray:
        if index in self.cache:
            self.cache.move_to_end(index)
            return self.cache[index]
        image = self.library.load(self.entries[index], max_side=self.max_side)
        self.cache[index] = image
        if len(self.cache) > self.capacity:
            self.cache.popitem(last=False)
        return image


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _randint(generator: torch.Generator, low: int, high: int) -> int:
    """An integer in [low, high] (inclusive)."""
    return int(torch.randint(low, high + 1, (), generator=generator))


def photo_window(photo: np.ndarray, height: int, width: int, generator: torch.Generator
                 ) -> torch.Tensor:
    """A random window of ``photo`` resized to 3 x height x width in [0, 1] (CPU): zoomed by
    0.5-2x, flipped left-right half of the time; photos smaller than the window are mirrored
    into a larger tiling first (textures are made to tile)."""
    zoom = 2 ** _uniform(generator, -1.0, 1.0)
    need_h, need_w = max(2, round(height * zoom)), max(2, round(width * zoom))
    image = photo
    while image.shape[0] < need_h or image.shape[1] < need_w:
        image = np.pad(image, ((0, image.shape[0] if image.shape[0] < need_h else 0),
                               (0, image.shape[1] if image.shape[1] < need_w else 0), (0, 0)),
                       mode="symmetric")
    top = _randint(generator, 0, image.shape[0] - need_h)
    left = _randint(generator, 0, image.shape[1] - need_w)
    window = torch.from_numpy(np.ascontiguousarray(
        image[top:top + need_h, left:left + need_w])).permute(2, 0, 1).float()[None] / 255
    mode = "area" if need_h >= height else "bilinear"
    window = F.interpolate(window, size=(height, width), mode=mode)[0].clamp(0, 1)
    return window.flip(-1) if float(torch.rand((), generator=generator)) < 0.5 else window


def _base_layout(height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """Nearness in [0, 1] (H x W, CPU) of the scene behind the segments."""
    ys = torch.linspace(0, 1, height).view(-1, 1).expand(height, width)
    xs = torch.linspace(0, 1, width).view(1, -1).expand(height, width)
    kind = LAYOUTS[_randint(generator, 0, len(LAYOUTS) - 1)]
    if kind == "ground":
        # A ground plane rising towards the camera below the horizon, a far background above.
        horizon = _uniform(generator, 0.15, 0.6)
        far = _uniform(generator, 0.0, 0.25)
        near = _uniform(generator, 0.5, 1.0)
        roll = _uniform(generator, -0.15, 0.15)
        ground = far + (near - far) * (ys - horizon - roll * (xs - 0.5)) / (1 - horizon)
        background = far + _uniform(generator, -0.05, 0.05) * (xs - 0.5)
        return torch.maximum(ground, background).clamp(0, 1)
    if kind == "plane":
        a, b, c = (_uniform(generator, 0.0, 0.6), _uniform(generator, -0.5, 0.5),
                   _uniform(generator, -0.5, 0.5))
        return (a + b * (xs - 0.5) + c * (ys - 0.5)).clamp(0, 1)
    grid = torch.rand(1, 1, 3, 5, generator=generator)
    smooth = F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=True)[0, 0]
    return ((smooth - smooth.min()) / (smooth.max() - smooth.min() + 1e-6)) * 0.7


def _segments(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Felzenszwalb segments of a 3 x H x W image (computed at half resolution for speed),
    H x W int64 labels."""
    small = F.interpolate(image[None], scale_factor=0.5, mode="area")[0]
    array = (small.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    area = array.shape[0] * array.shape[1]
    labels = felzenszwalb(array, scale=_uniform(generator, 100, 500), sigma=0.8,
                          min_size=max(8, area // 300))
    labels = torch.from_numpy(labels.astype(np.int64))[None, None].float()
    return F.interpolate(labels, size=image.shape[-2:], mode="nearest")[0, 0].long()


def _raise_segments(nearness: torch.Tensor, labels: torch.Tensor, fraction: float,
                    generator: torch.Generator) -> torch.Tensor:
    """Lift ``fraction`` of the segments in front of the base: each becomes a slanted plane
    through a point nearer than the base under its centroid."""
    height, width = nearness.shape
    count = int(labels.max()) + 1
    ys = torch.arange(height, dtype=torch.float32).view(-1, 1).expand(height, width)
    xs = torch.arange(width, dtype=torch.float32).view(1, -1).expand(height, width)
    flat = labels.flatten()
    sizes = torch.bincount(flat, minlength=count).clamp_min(1).float()
    cy = torch.bincount(flat, ys.flatten(), minlength=count) / sizes
    cx = torch.bincount(flat, xs.flatten(), minlength=count) / sizes
    base = torch.bincount(flat, nearness.flatten(), minlength=count) / sizes
    chosen = torch.rand(count, generator=generator) < fraction
    lift = 0.05 + 0.45 * torch.rand(count, generator=generator)
    # Slopes in nearness per pixel, at most about 0.3 across the image.
    slope_x = (torch.rand(count, generator=generator) - 0.5) * 0.6 / width
    slope_y = (torch.rand(count, generator=generator) - 0.5) * 0.6 / height
    plane = ((base + lift)[labels] + slope_x[labels] * (xs - cx[labels])
             + slope_y[labels] * (ys - cy[labels]))
    return torch.where(chosen[labels], torch.maximum(plane, nearness), nearness).clamp(0, 1)


def _shape_mask(height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """An ellipse or a convex polygon somewhere in the image (H x W bool)."""
    ys = torch.arange(height, dtype=torch.float32).view(-1, 1)
    xs = torch.arange(width, dtype=torch.float32).view(1, -1)
    cy, cx = _uniform(generator, 0, height), _uniform(generator, 0, width)
    ry, rx = (_uniform(generator, 0.08, 0.35) * height, _uniform(generator, 0.05, 0.3) * width)
    u, v = (xs - cx) / rx, (ys - cy) / ry
    if float(torch.rand((), generator=generator)) < 0.5:
        return u ** 2 + v ** 2 <= 1
    angles = torch.sort(torch.rand(_randint(generator, 3, 7), generator=generator)
                        * 2 * math.pi).values.tolist()
    corners = [(math.cos(a), math.sin(a)) for a in angles]
    inside = torch.ones(height, width, dtype=torch.bool)
    for (ax, ay), (bx, by) in zip(corners, corners[1:] + corners[:1]):
        inside &= (bx - ax) * (v - ay) - (by - ay) * (u - ax) >= 0
    return inside


def _layered_scene(photos: PhotoSource, height: int, width: int, config: PhotoStereoConfig,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The left image (3 x H x W) and its nearness in [0, 1] (H x W), on the CPU."""
    image = photo_window(photos.pick(generator), height, width,
                         generator)
    nearness = _base_layout(height, width, generator)
    fraction = _uniform(generator, *config.segment_fraction)
    nearness = _raise_segments(nearness, _segments(image, generator), fraction, generator)
    for _ in range(_randint(generator, *config.shapes)):
        mask = _shape_mask(height, width, generator)
        if not mask.any():
            continue
        texture = photo_window(photos.pick(generator), height,
                               width, generator)
        level = float(nearness[mask].max()) + _uniform(generator, 0.05, 0.3)
        tilt_x, tilt_y = _uniform(generator, -0.2, 0.2), _uniform(generator, -0.2, 0.2)
        plane = (level + tilt_x * torch.linspace(-0.5, 0.5, width).view(1, -1)
                 + tilt_y * torch.linspace(-0.5, 0.5, height).view(-1, 1))
        image = torch.where(mask, texture, image)
        nearness = torch.where(mask, plane, nearness)
    # Shapes may stack above 1: rescale rather than clip, so stacked layers stay apart.
    return image, nearness / nearness.max().clamp_min(1.0)


def forward_warp(image: torch.Tensor, disparity: torch.Tensor, shift: float
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Move every pixel of ``image`` to x - shift * disparity, nearest surface first.

    image: B x C x H x W; disparity: B x 1 x H x W, pixels, larger is nearer; shift: in
    baselines (1: the view of a camera one baseline to the right). Returns the warped image
    (B x C x H x W, zero in holes), the warped disparity (B x 1 x H x W, the winning surface's,
    zero in holes) and the coverage (B x 1 x H x W, the splat weight that landed; 0 in holes).
    Two-tap splatting: a source at x' = 4.3 gives 0.7 of itself to 4 and 0.3 to 5. A z-buffer
    drops contributions more than ``Z_TOLERANCE`` behind the nearest one at their target.
    """
    b, c, h, w = image.shape
    device = image.device
    xs = torch.arange(w, device=device, dtype=torch.float32).view(1, 1, 1, w)
    target = xs - shift * disparity.float()
    left_tap = target.floor()
    right_weight = target - left_tap
    rows = (torch.arange(b * h, device=device) * w).view(b, 1, h, 1)
    totals = b * h * w
    taps = []
    for offset, weight in ((0, 1 - right_weight), (1, right_weight)):
        column = left_tap + offset
        ok = (column >= 0) & (column < w) & (weight > 1e-4)
        index = (rows + column.clamp(0, w - 1).long()).flatten()
        taps.append((index, (weight * ok).flatten(), ok.flatten()))
    depth = disparity.float().flatten()
    nearest = torch.full((totals,), -math.inf, device=device)
    for index, _, ok in taps:
        nearest.scatter_reduce_(0, index[ok], depth[ok], reduce="amax")
    colours = image.float().permute(1, 0, 2, 3).reshape(c, -1)
    warped = torch.zeros(c + 2, totals, device=device)
    for index, weight, ok in taps:
        keep = ok & (depth >= nearest[index] - Z_TOLERANCE)
        weight = weight * keep
        warped.index_add_(1, index, torch.cat((colours * weight, (depth * weight)[None],
                                               weight[None])))
    coverage = warped[-1]
    filled = coverage > 1e-3
    norm = torch.where(filled, coverage, torch.ones_like(coverage))
    out = torch.where(filled, warped[:-1] / norm, torch.zeros_like(warped[:-1]))
    out = out.view(c + 1, b, h, w).permute(1, 0, 2, 3)
    return out[:, :c], out[:, c:], coverage.view(b, 1, h, w)


def fill_holes(image: torch.Tensor, holes: torch.Tensor, filler: torch.Tensor) -> torch.Tensor:
    """Fill ``holes`` (B x 1 x H x W bool) of ``image`` (B x 3 x H x W) with ``filler`` after
    matching its per-channel mean and standard deviation to the image's other pixels."""
    known = (~holes).float()
    count = known.sum(dim=(2, 3), keepdim=True).clamp_min(1)
    mean = (image * known).sum(dim=(2, 3), keepdim=True) / count
    std = (((image - mean) ** 2 * known).sum(dim=(2, 3), keepdim=True) / count).sqrt()
    fill_mean = filler.mean(dim=(2, 3), keepdim=True)
    fill_std = filler.std(dim=(2, 3), keepdim=True).clamp_min(1e-3)
    matched = ((filler - fill_mean) / fill_std * std + mean).clamp(0, 1)
    return torch.where(holes, matched, image)


def _draw_scene(photos: PhotoSource, config: PhotoStereoConfig, margin_baselines: float,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One layered scene wide enough for views up to ``margin_baselines`` to the right:
    (image 3 x H x W', disparity 1 x H x W', filler photo 3 x H x W), on the CPU."""
    largest = _uniform(generator, *config.max_disparity_fraction) * config.width
    smallest = largest * _uniform(generator, 0.0, 0.2)
    # The same width for every pair of a batch: enough for the largest possible disparity.
    extra = math.ceil(margin_baselines * config.largest_disparity) + 2
    image, nearness = _layered_scene(photos, config.height, config.width + extra, config,
                                     generator)
    disparity = smallest + (largest - smallest) * nearness
    filler = photo_window(photos.pick(generator), config.height,
                          config.width, generator)
    return image, disparity[None], filler


def _view(image: torch.Tensor, disparity: torch.Tensor, shift: float, width: int
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    warped, depth, coverage = forward_warp(image, disparity, shift)
    return warped[..., :width], depth[..., :width], coverage[..., :width] <= 1e-3


def render_photo_batch(batch: int, photos: PhotoSource,
                       config: PhotoStereoConfig = PhotoStereoConfig(), seed: int = 0,
                       device: torch.device | str = "cpu") -> StereoBatch:
    """``batch`` stereo pairs from single photographs, deterministic from ``seed``.
    Disparity B x 1 x H x W in pixels, known everywhere; ``visible`` as in the module
    docstring."""
    config.validate()
    device = torch.device(device)
    generator = torch.Generator().manual_seed(seed)
    scenes = [_draw_scene(photos, config, 1.0, generator) for _ in range(batch)]
    image = torch.stack([s[0] for s in scenes]).to(device)
    disparity = torch.stack([s[1] for s in scenes]).to(device)
    filler = torch.stack([s[2] for s in scenes]).to(device)
    right, _, holes = _view(image, disparity, 1.0, config.width)
    left_disparity = disparity[..., :config.width]
    return StereoBatch(left=image[..., :config.width], right=fill_holes(right, holes, filler),
                       disparity=left_disparity, visible=visible_in_right(left_disparity))


def render_photo_sequence(frames: int, photos: PhotoSource,
                          config: PhotoStereoConfig = PhotoStereoConfig(), seed: int = 0,
                          device: torch.device | str = "cpu", travel: float = 3.0
                          ) -> list[StereoBatch]:
    """A rig translating sideways over one layered photo scene: ``frames`` frames of batch
    size 1, the left camera moving from 0 to ``travel`` baselines and back. Pixels the moving
    left camera uncovers are filled from another photo and have no ground truth (disparity 0,
    not visible)."""
    config.validate()
    if frames < 1 or travel < 0:
        raise ValueError("need frames >= 1 and travel >= 0")
    device = torch.device(device)
    generator = torch.Generator().manual_seed(seed)
    image, disparity, filler = (t[None].to(device) for t in
                                _draw_scene(photos, config, travel + 1.0, generator))
    sequence = []
    for i in range(frames):
        position = travel * 0.5 * (1 - math.cos(2 * math.pi * i / max(frames, 1)))
        left, left_disparity, left_holes = _view(image, disparity, position, config.width)
        right, _, right_holes = _view(image, disparity, position + 1.0, config.width)
        left_disparity = torch.where(left_holes, torch.zeros_like(left_disparity),
                                     left_disparity)
        sequence.append(StereoBatch(left=fill_holes(left, left_holes, filler),
                                    right=fill_holes(right, right_holes, filler),
                                    disparity=left_disparity,
                                    visible=visible_in_right(left_disparity)))
    return sequence
