"""A procedural stereo world, ray-cast exactly into a rectified stereo rig (torch, CPU or GPU).

A scene is a slanted background plane and textured planar shapes (ellipses, rectangles,
convex polygons; fronto-parallel or slanted) at random depths. Both cameras look down +Z with
focal ``f`` pixels; the right camera sits ``baseline`` to the right of the left one, so the
left pixel x sees a point of depth Z that the right camera sees at x - f * baseline / Z. Every
pixel's ray is intersected with every plane and the nearest hit inside its shape wins: the
left disparity, the occlusions and the out-of-view regions are exact, not estimated.

Textures are mapped in each plane's own coordinates (true perspective texturing), from real
photographs that ship with scikit-image (never the Motorcycle pair, which is evaluation data)
and from procedural patterns (multi-scale noise, stripes, checkers, gradients, low-texture,
repetitive tiles). Each view then gets its own gain, gamma, colour shift, noise, blur and a
view-dependent highlight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from skimage import data as skdata

from ..data.sample import StereoBatch, StereoSample
from .augment import gaussian_blur

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "camera",
          "brick", "grass", "gravel", "text", "moon", "hubble_deep_field", "retina", "cell",
          "coins", "page")
PROCEDURAL = ("noise", "stripes", "checkers", "gradient", "flat", "tiles")
TEXTURE_SIZE = 256


@dataclass(frozen=True)
class SynthConfig:
    """height, width: image size. min_disparity, max_disparity: range of the scene's
    disparities in pixels (up to 192 at 320 x 960). shapes: foreground planes per scene
    (inclusive range). slant: largest tilt of a plane, degrees. photometric: apply per-view
    photometric differences."""

    height: int = 320
    width: int = 960
    min_disparity: float = 2.0
    max_disparity: float = 160.0
    shapes: tuple[int, int] = (6, 14)
    slant: float = 50.0
    photometric: bool = True

    @property
    def focal(self) -> float:
        """The rig's focal length in pixels (a 64 degree horizontal field of view)."""
        return 0.8 * self.width

    def validate(self) -> None:
        if self.height < 16 or self.width < 16:
            raise ValueError(f"images must be at least 16 x 16, got {self.height} x {self.width}")
        if not 0 < self.min_disparity < self.max_disparity < self.width:
            raise ValueError("need 0 < min_disparity < max_disparity < width")
        if not 0 <= self.shapes[0] <= self.shapes[1]:
            raise ValueError(f"invalid shapes range {self.shapes}")


class TextureBank:
    """Square RGB textures in [0, 1] (N x 3 x S x S): photographs and procedural patterns."""

    def __init__(self, device: torch.device | str = "cpu", size: int = TEXTURE_SIZE):
        self.size = size
        self.photos = torch.stack([_square(getattr(skdata, name)(), size) for name in PHOTOS]
                                  ).to(device)

    def draw(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """``count`` textures, half photographs and half procedural (count x 3 x S x S)."""
        device = self.photos.device
        kinds = torch.randint(0, 2, (count,), generator=generator).tolist()
        textures = []
        for kind in kinds:
            if kind == 0:
                index = int(torch.randint(len(PHOTOS), (1,), generator=generator))
                texture = self.photos[index]
            else:
                name = PROCEDURAL[int(torch.randint(len(PROCEDURAL), (1,), generator=generator))]
                texture = _procedural(name, self.size, generator).to(device)
            textures.append(texture)
        return torch.stack(textures)


def _square(image: np.ndarray, size: int) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(image)).float()
    if tensor.dim() == 2:
        tensor = tensor[..., None].expand(-1, -1, 3)
    tensor = tensor[..., :3].permute(2, 0, 1)
    tensor = tensor / (255.0 if image.dtype == np.uint8 else max(float(tensor.max()), 1e-6))
    side = min(tensor.shape[-2:])
    tensor = tensor[:, :side, :side]
    return F.interpolate(tensor[None], size=(size, size), mode="area")[0].clamp(0, 1)


def _uniform(generator: torch.Generator, low: float, high: float, *shape: int) -> torch.Tensor:
    return low + (high - low) * torch.rand(*shape, generator=generator)


def _procedural(name: str, size: int, generator: torch.Generator) -> torch.Tensor:
    """One procedural texture, 3 x size x size in [0, 1]."""
    ys, xs = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    colours = torch.rand(2, 3, 1, 1, generator=generator)
    if name == "noise":
        # Multi-scale value noise: octaves of upsampled random grids.
        field = torch.zeros(1, 1, size, size)
        for octave in range(1, 7):
            grid = torch.rand(1, 1, 2 ** octave + 1, 2 ** octave + 1, generator=generator)
            field += F.interpolate(grid, size=(size, size), mode="bicubic",
                                   align_corners=True) / octave
        field = (field - field.min()) / (field.max() - field.min() + 1e-6)
        weight = field[0]
    elif name == "stripes":
        angle = float(_uniform(generator, 0, math.pi, 1))
        period = float(_uniform(generator, 0.02, 0.2, 1))
        phase = xs * math.cos(angle) + ys * math.sin(angle)
        weight = (0.5 + 0.5 * torch.sin(2 * math.pi * phase / period))[None]
    elif name == "checkers":
        cells = int(torch.randint(4, 32, (1,), generator=generator))
        weight = (((xs * cells).floor() + (ys * cells).floor()) % 2)[None]
    elif name == "gradient":
        angle = float(_uniform(generator, 0, 2 * math.pi, 1))
        weight = (xs * math.cos(angle) + ys * math.sin(angle))[None]
        weight = (weight - weight.min()) / (weight.max() - weight.min() + 1e-6)
    elif name == "flat":
        # Low texture: stereo's hard case, almost uniform with faint noise.
        weight = 0.5 + 0.03 * torch.randn(1, size, size, generator=generator)
    else:
        # Repetitive: a small random tile repeated, another hard case (ambiguous matches).
        tile = torch.rand(1, 1, 8, 8, generator=generator)
        repeats = int(torch.randint(6, 24, (1,), generator=generator))
        weight = F.interpolate(tile.repeat(1, 1, repeats, repeats), size=(size, size),
                               mode="nearest")[0]
    texture = colours[0] * (1 - weight) + colours[1] * weight
    return texture.clamp(0, 1)


@dataclass
class _Scene:
    """Planes of B scenes, P planes each (plane 0 is the background). Tensors of shape B x P
    (x 3): a point C on the plane, its unit normal, in-plane axes e1, e2, the shape (kind:
    0 none, 1 ellipse, 2 rectangle, 3 polygon; half sizes; polygon vertex angles), and the
    texture (index into ``textures``, scale in world units per texture, offset)."""

    centre: torch.Tensor
    normal: torch.Tensor
    axis_u: torch.Tensor
    axis_v: torch.Tensor
    kind: torch.Tensor
    half_size: torch.Tensor
    vertices: torch.Tensor
    texture_scale: torch.Tensor
    texture_offset: torch.Tensor
    textures: torch.Tensor
    focal: float


def _rotation(tilt_x: torch.Tensor, tilt_y: torch.Tensor, spin: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normal and in-plane axes of a plane facing the camera, tilted about x and y."""
    cx, sx = torch.cos(tilt_x), torch.sin(tilt_x)
    cy, sy = torch.cos(tilt_y), torch.sin(tilt_y)
    normal = torch.stack((sy * cx, -sx, -cy * cx), dim=-1)
    u0 = torch.stack((cy, torch.zeros_like(cy), sy), dim=-1)
    v0 = torch.cross(normal, u0, dim=-1)
    v0 = v0 / v0.norm(dim=-1, keepdim=True)
    cs, ss = torch.cos(spin)[..., None], torch.sin(spin)[..., None]
    return normal, cs * u0 + ss * v0, -ss * u0 + cs * v0


def make_scenes(batch: int, config: SynthConfig, bank: TextureBank, generator: torch.Generator
                ) -> _Scene:
    """Draw ``batch`` random scenes (parameters on the CPU generator, for determinism)."""
    config.validate()
    planes = 1 + config.shapes[1]
    focal = config.focal
    # baseline 1: depth Z has disparity focal / Z.
    near, far = focal / config.max_disparity, focal / config.min_disparity
    # Centres stay a little inside the range: slanted planes reach nearer at their edges.
    inv = _uniform(generator, 1 / far, 0.85 / near, batch, planes)
    inv[:, 0] = _uniform(generator, 1 / far, 2.5 / far, batch)  # background: far away
    depth = 1 / inv
    # Foreground centres anywhere in the view (plus a margin so shapes enter from the sides).
    px = _uniform(generator, -0.2, 1.2, batch, planes) * config.width - config.width / 2
    py = _uniform(generator, -0.2, 1.2, batch, planes) * config.height - config.height / 2
    centre = torch.stack((px * depth / focal, py * depth / focal, depth), dim=-1)
    slant = math.radians(config.slant)
    tilt_x = _uniform(generator, -slant, slant, batch, planes)
    tilt_y = _uniform(generator, -slant, slant, batch, planes)
    # The background tilts less, so that every ray still meets it well within the range.
    tilt_x[:, 0] *= 0.5
    tilt_y[:, 0] *= 0.5
    fronto = torch.rand(batch, planes, generator=generator) < 0.3
    tilt_x[fronto], tilt_y[fronto] = 0.0, 0.0
    normal, axis_u, axis_v = _rotation(tilt_x, tilt_y,
                                       _uniform(generator, 0, 2 * math.pi, batch, planes))
    # Shapes cover 5-40 % of the image width at their depth.
    half = (_uniform(generator, 0.05, 0.4, batch, planes, 2) * config.width * depth[..., None]
            / focal)
    kind = torch.randint(1, 4, (batch, planes), generator=generator)
    count = torch.randint(config.shapes[0], config.shapes[1] + 1, (batch,), generator=generator)
    kind[torch.arange(planes)[None, :] > count[:, None]] = 0
    kind[:, 0] = 4  # the background covers everything
    vertices = torch.sort(_uniform(generator, 0, 2 * math.pi, batch, planes, 6), dim=-1).values
    scale = _uniform(generator, 0.3, 3.0, batch, planes) * half.mean(dim=-1)
    return _Scene(centre=centre, normal=normal, axis_u=axis_u, axis_v=axis_v, kind=kind,
                  half_size=half, vertices=vertices, texture_scale=scale,
                  texture_offset=torch.rand(batch, planes, 2, generator=generator),
                  textures=bank.draw(batch * planes, generator).view(batch, planes, 3,
                                                                      bank.size, bank.size),
                  focal=focal)


def _inside(kind: torch.Tensor, u: torch.Tensor, v: torch.Tensor, half: torch.Tensor,
            vertices: torch.Tensor) -> torch.Tensor:
    """Whether plane coordinates (u, v) fall inside each plane's shape. u, v: B x P x H x W."""
    hu, hv = half[..., 0, None, None], half[..., 1, None, None]
    k = kind[..., None, None]
    inside = (k == 4) | ((k == 1) & ((u / hu) ** 2 + (v / hv) ** 2 <= 1))
    inside |= (k == 2) & (u.abs() <= hu) & (v.abs() <= hv)
    # Convex polygon: vertices on the ellipse at increasing angles (counter-clockwise), so
    # the inside lies left of every edge.
    polygon = k == 3
    corners = [(torch.cos(vertices[..., i])[..., None, None] * hu,
                torch.sin(vertices[..., i])[..., None, None] * hv)
               for i in range(vertices.shape[-1])]
    for (ax, ay), (bx, by) in zip(corners, corners[1:] + corners[:1]):
        polygon = polygon & ((bx - ax) * (v - ay) - (by - ay) * (u - ax) >= 0)
    return inside | polygon


def _mirror(coordinate: torch.Tensor) -> torch.Tensor:
    """Mirrored repeat into [0, 1], so tiled textures have no seams."""
    return 1 - (coordinate % 2 - 1).abs()


def _render_view(scene: _Scene, origin: torch.Tensor, config: SynthConfig
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ray-cast one camera at ``origin`` (B x 3). Returns the image (B x 3 x H x W, before
    photometric effects), the depth Z (B x H x W) and the index of the visible plane."""
    device = origin.device
    h, w = config.height, config.width
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                            torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
    rays = torch.stack(((xs - (w - 1) / 2) / scene.focal, (ys - (h - 1) / 2) / scene.focal,
                        torch.ones_like(xs)), dim=-1)  # H x W x 3, z = 1: ray length = depth
    along_n = torch.einsum("bpc,hwc->bphw", scene.normal, rays)
    offset = scene.centre - origin[:, None, :]
    depth = (scene.normal * offset).sum(-1)[..., None, None] / along_n
    start_u = (-offset * scene.axis_u).sum(-1)[..., None, None]
    start_v = (-offset * scene.axis_v).sum(-1)[..., None, None]
    u = start_u + depth * torch.einsum("bpc,hwc->bphw", scene.axis_u, rays)
    v = start_v + depth * torch.einsum("bpc,hwc->bphw", scene.axis_v, rays)
    hit = (depth > 1e-4) & torch.isfinite(depth) & _inside(scene.kind, u, v, scene.half_size,
                                                             scene.vertices)
    depth = torch.where(hit, depth, torch.full_like(depth, math.inf))
    nearest, index = depth.min(dim=1)

    image = torch.zeros(origin.shape[0], 3, h, w, device=device)
    for plane in range(scene.kind.shape[1]):
        mask = index == plane
        if not mask.any():
            continue
        scale = scene.texture_scale[:, plane, None, None]
        tu = _mirror(u[:, plane] / scale + scene.texture_offset[:, plane, 0, None, None])
        tv = _mirror(v[:, plane] / scale + scene.texture_offset[:, plane, 1, None, None])
        grid = torch.stack((tu, tv), dim=-1) * 2 - 1
        sample = F.grid_sample(scene.textures[:, plane], grid, mode="bilinear",
                               padding_mode="border", align_corners=True)
        image = torch.where(mask[:, None], sample, image)
    return image, nearest, index


def _photometric(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per-view camera differences: gain, gamma, colour shift, noise, blur, a highlight."""
    b, _, h, w = image.shape
    device = image.device

    def draw(low, high, *shape):
        return _uniform(generator, low, high, b, *shape).to(device)

    image = image.clamp(0, 1) ** draw(0.8, 1.25, 1, 1, 1)
    image = image * draw(0.8, 1.2, 1, 1, 1) + draw(-0.04, 0.04, 3, 1, 1)
    sigma = float(_uniform(generator, 0.0, 1.0, 1))
    if sigma > 0.2:
        image = gaussian_blur(image, sigma)
    # A specular-like highlight seen by this view only.
    ys = torch.arange(h, device=device, dtype=torch.float32).view(1, 1, h, 1)
    xs = torch.arange(w, device=device, dtype=torch.float32).view(1, 1, 1, w)
    cy, cx = draw(0, h, 1, 1, 1), draw(0, w, 1, 1, 1)
    spread = draw(0.03, 0.12, 1, 1, 1) * w
    strength = draw(0, 0.35, 1, 1, 1) * (torch.rand(b, 1, 1, 1, generator=generator) < 0.3
                                         ).to(device)
    image = image + strength * torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * spread ** 2))
    noise = torch.randn(b, 3, h, w, generator=generator).to(device)
    return (image + draw(0, 0.02, 1, 1, 1) * noise).clamp(0, 1)


def render(scene: _Scene, camera: torch.Tensor, config: SynthConfig,
           generator: torch.Generator) -> StereoBatch:
    """Render the scenes from left cameras at ``camera`` (B x 3, world units; the right camera
    is one baseline to the right)."""
    device = scene.centre.device
    baseline = torch.tensor([1.0, 0.0, 0.0], device=device)
    left, depth_l, index_l = _render_view(scene, camera, config)
    right, _, index_r = _render_view(scene, camera + baseline, config)
    disparity = scene.focal / depth_l
    # Visible in the right view: the matching right pixel is in the image and shows the
    # same plane (a plane cannot occlude itself).
    xs = torch.arange(config.width, device=device, dtype=torch.float32).view(1, 1, -1)
    target = (xs - disparity).round()
    in_view = target >= 0
    gathered = index_r.gather(2, target.clamp(0, config.width - 1).long())
    visible = in_view & (gathered == index_l)
    if config.photometric:
        left, right = _photometric(left, generator), _photometric(right, generator)
    return StereoBatch(left=left, right=right, disparity=disparity[:, None],
                       visible=visible[:, None])


def _to(scene: _Scene, device: torch.device) -> _Scene:
    fields: dict[str, Any] = {k: v.to(device) if isinstance(v, torch.Tensor) else v
                              for k, v in vars(scene).items()}
    return _Scene(**fields)


def render_batch(batch: int, config: SynthConfig = SynthConfig(), seed: int = 0,
                 bank: TextureBank | None = None, device: torch.device | str = "cpu"
                 ) -> StereoBatch:
    """``batch`` independent random scenes, deterministic from ``seed`` on any device."""
    device = torch.device(device)
    bank = bank or TextureBank(device)
    generator = torch.Generator().manual_seed(seed)
    scene = _to(make_scenes(batch, config, bank, generator), device)
    return render(scene, torch.zeros(batch, 3, device=device), config, generator)


def render_sequence(frames: int, config: SynthConfig = SynthConfig(), seed: int = 0,
                    bank: TextureBank | None = None, device: torch.device | str = "cpu"
                    ) -> list[StereoBatch]:
    """A camera moving smoothly (forward, with a gentle sideways sway) through one static
    scene: ``frames`` consecutive stereo frames of batch size 1."""
    device = torch.device(device)
    bank = bank or TextureBank(device)
    generator = torch.Generator().manual_seed(seed)
    scene = _to(make_scenes(1, config, bank, generator), device)
    near = scene.focal / config.max_disparity
    sequence = []
    for i in range(frames):
        phase = 2 * math.pi * i / max(frames, 1)
        camera = torch.tensor([[0.5 * math.sin(phase), 0.1 * math.sin(2 * phase),
                                0.01 * near * i]], device=device)
        sequence.append(render(scene, camera, config, generator))
    return sequence


def to_samples(batch: StereoBatch, names: list[str], stamps: list[float] | None = None
               ) -> list[tuple[StereoSample, np.ndarray]]:
    """Rendered scenes as (StereoSample with uint8 RGB images and the exact disparity,
    visibility mask H x W bool) pairs, one per batch element."""
    samples = []
    for i, name in enumerate(names):
        images = [(view[i].permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)
                  for view in (batch.left, batch.right)]
        sample = StereoSample(left=images[0], right=images[1],
                              disparity=batch.disparity[i, 0].cpu().numpy().astype(np.float32),
                              name=name, stamp=None if stamps is None else stamps[i])
        samples.append((sample, batch.visible[i, 0].cpu().numpy()))
    return samples
