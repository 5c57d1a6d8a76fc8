"""Harsh development sequences: the scenes where online adaptation is tempted to do harm.

Rendered exactly by the procedural world's ray-caster (``synthetic.py``), each a short
sequence with exact ground truth, in the kinds that made self-supervised adaptation worse on
real rigs: a chessboard held at near range in separate poses (grey, 320 x 240, disparities
50-100 px), repetitive walls (tiles, brick, stripes, fences) at near range, cluttered near
scenes (disparities to 40 % of the width) in separate poses, textureless walls, exposure
jumps, scene cuts, and a sequence with swapped and identical views injected. Frames that are
not a valid stereo pair (the swapped and identical ones) carry no ground truth (all NaN):
they are fed to the adapter, never scored.

Textures come from the procedural patterns and scikit-image's photographs, never from the
Motorcycle pair (evaluation data) nor from any reserved source.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch

from ..data.sample import StereoBatch, StereoSample
from .synthetic import SynthConfig, TextureBank, _procedural, _rotation, _Scene, \
    make_scenes, render, to_samples

#: Every harsh sequence: name -> (what it is, HEIGHTxWIDTH, grey).
HARSH_SEQUENCES: dict[str, tuple[str, tuple[int, int], bool]] = {
    "board_poses": ("a chessboard held at 50-100 px disparity in separate poses, grey",
                    (240, 320), True),
    "repetitive_pan": ("a sideways pan along a near wall of tiles, brick, stripes or a fence, "
                       "with repetitive objects in front", (240, 320), False),
    "near_poses": ("cluttered scenes with disparities up to 40 % of the width, each frame "
                   "another scene", (240, 320), False),
    "textureless": ("a pan past nearly uniform walls and a few faint objects, grey",
                    (240, 320), True),
    "exposure": ("a continuous sequence whose exposure jumps by up to 3x between frames",
                 (256, 512), False),
    "cuts": ("a scene cut every 6 frames", (256, 512), False),
    "bad_frames": ("a continuous sequence with swapped (right, left) and identical (left, "
                   "left) pairs injected every 5th frame, which are not scored",
                   (256, 512), False),
}


def _periodic(kind: str, size: int, generator: torch.Generator) -> torch.Tensor:
    """A repetitive texture, 3 x size x size in [0, 1]: a chessboard with a white margin,
    brick, a fence (bars and gaps) or tiles."""
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32),
                            torch.arange(size, dtype=torch.float32), indexing="ij")
    if kind == "chessboard":
        cells = int(torch.randint(6, 11, (1,), generator=generator))
        margin = size // 12
        cell = (size - 2 * margin) / cells
        inner = (xs >= margin) & (xs < size - margin) & (ys >= margin) & (ys < size - margin)
        squares = (((xs - margin) / cell).floor() + ((ys - margin) / cell).floor()) % 2
        weight = torch.where(inner, squares, torch.ones_like(xs))
        colours = torch.tensor([[0.08] * 3, [0.92] * 3])
    elif kind == "brick":
        rows = int(torch.randint(8, 20, (1,), generator=generator))
        height = size / rows
        row = (ys / height).floor()
        shift = (row % 2) * height
        mortar = ((ys % height) < 0.12 * height) | (((xs + shift) % (2 * height))
                                                      < 0.12 * height)
        weight = mortar.float()
        colours = torch.rand(2, 3, generator=generator) * 0.4 + torch.tensor([[0.4, 0.2, 0.1],
                                                                             [0.5, 0.5, 0.5]])
    elif kind == "fence":
        period = float(8 + 24 * torch.rand(1, generator=generator))
        weight = ((xs % period) < 0.5 * period).float()
        colours = torch.rand(2, 3, generator=generator)
    else:
        period = float(6 + 26 * torch.rand(1, generator=generator))
        weight = (((xs % period) < 0.9 * period) & ((ys % period) < 0.9 * period)).float()
        colours = torch.rand(2, 3, generator=generator)
    texture = colours[0, :, None, None] * (1 - weight) + colours[1, :, None, None] * weight
    fine = 0.02 * torch.randn(3, size, size, generator=generator)
    return (texture + fine).clamp(0, 1)


def _planes(width: int, focal: float, textures: list[torch.Tensor],
            disparities: list[float], positions: list[tuple[float, float]],
            half_widths: list[tuple[float, float]], tilts: list[tuple[float, float, float]],
            texture_repeats: list[float]) -> _Scene:
    """A one-scene ``_Scene`` of explicit planes (plane 0: the background, covering
    everything); positions in pixels from the image centre, half widths as fractions of the
    image width, tilts (about x, about y, spin) in radians, texture_repeats: textures across
    a plane's width (the texture is mirrored between repeats)."""
    count = len(textures)
    depth = torch.tensor([focal / d for d in disparities])
    px = torch.tensor([p[0] for p in positions])
    py = torch.tensor([p[1] for p in positions])
    centre = torch.stack((px * depth / focal, py * depth / focal, depth), dim=-1)[None]
    tilt = torch.tensor(tilts)
    normal, axis_u, axis_v = _rotation(tilt[None, :, 0], tilt[None, :, 1], tilt[None, :, 2])
    half = torch.tensor(half_widths)[None] * width * depth[None, :, None] / focal
    kind = torch.full((1, count), 2)
    kind[0, 0] = 4
    scale = 2 * half[..., 0] / torch.tensor(texture_repeats)[None]
    return _Scene(centre=centre, normal=normal, axis_u=axis_u, axis_v=axis_v, kind=kind,
                  half_size=half, vertices=torch.zeros(1, count, 6), texture_scale=scale,
                  texture_offset=torch.full((1, count, 2), 0.5), textures=torch.stack(
                      textures)[None], focal=focal)


def _grey(batch: StereoBatch, generator: torch.Generator) -> StereoBatch:
    """Grey views with a gain of their own each (a mono rig's two sensors)."""
    def one(image: torch.Tensor) -> torch.Tensor:
        gain = 0.85 + 0.3 * float(torch.rand(1, generator=generator))
        luma = (image * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, True)
        return (luma * gain).clamp(0, 1).expand(-1, 3, -1, -1)
    return replace(batch, left=one(batch.left), right=one(batch.right))


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(1, generator=generator))


def _background(bank: TextureBank, generator: torch.Generator, flat: bool = False
                ) -> torch.Tensor:
    if flat:
        return _procedural("flat", bank.size, generator)
    return bank.photos[int(torch.randint(len(bank.photos), (1,), generator=generator))]


def _board_poses(frames: int, config: SynthConfig, bank: TextureBank,
                 generator: torch.Generator) -> list[StereoBatch]:
    out = []
    for _ in range(frames):
        board = _periodic("chessboard", bank.size, generator)
        disparity = _uniform(generator, 55, 95)
        scene = _planes(
            config.width, config.focal, [_background(bank, generator), board],
            [_uniform(generator, 4, 12), disparity],
            [(0.0, 0.0), (_uniform(generator, -0.2, 0.2) * config.width,
                          _uniform(generator, -0.15, 0.15) * config.height)],
            [(1.0, 1.0), (_uniform(generator, 0.22, 0.32), _uniform(generator, 0.18, 0.26))],
            [(0.0, 0.0, 0.0), (_uniform(generator, -0.5, 0.5), _uniform(generator, -0.5, 0.5),
                               _uniform(generator, -0.3, 0.3))],
            [3.0, 1.0])
        out.append(_grey(render(scene, torch.zeros(1, 3), config, generator), generator))
    return out


def _repetitive_pan(frames: int, config: SynthConfig, bank: TextureBank,
                    generator: torch.Generator, start: float = 0.0) -> list[StereoBatch]:
    kinds = ("brick", "tiles", "fence", "chessboard")
    wall = _periodic(kinds[int(torch.randint(4, (1,), generator=generator))], bank.size,
                     generator)
    textures = [wall] + [_periodic(kinds[int(torch.randint(4, (1,), generator=generator))],
                                   bank.size, generator) for _ in range(3)]
    scene = _planes(
        config.width, config.focal, textures, [30.0, 70.0, 90.0, 110.0],
        [(0.0, 0.0), (-0.3 * config.width, 0.1 * config.height),
         (0.5 * config.width, -0.1 * config.height), (1.3 * config.width, 0.0)],
        [(1.0, 1.0), (0.12, 0.3), (0.15, 0.2), (0.2, 0.35)],
        [(0.0, 0.6, 0.0), (0.0, 0.3, 0.0), (0.2, -0.3, 0.0), (0.0, 0.0, 0.1)],
        [3.0, 2.0, 3.0, 3.0])
    out = []
    for i in range(frames):
        # The rig slides right by 0.15 baselines a frame (16 px at the nearest object).
        camera = torch.tensor([[start + 0.15 * i, 0.0, 0.0]])
        out.append(render(scene, camera, config, generator))
    return out


def _near_poses(frames: int, config: SynthConfig, bank: TextureBank,
                generator: torch.Generator) -> list[StereoBatch]:
    near = replace(config, min_disparity=6.0, max_disparity=0.4 * config.width)
    out = []
    for _ in range(frames):
        scene = make_scenes(1, near, bank, generator)
        out.append(render(scene, torch.zeros(1, 3), near, generator))
    return out


def _textureless(frames: int, config: SynthConfig, bank: TextureBank,
                 generator: torch.Generator, start: float = 0.0) -> list[StereoBatch]:
    textures = [_procedural("flat", bank.size, generator) for _ in range(4)]
    textures[2] = _procedural("gradient", bank.size, generator)
    scene = _planes(
        config.width, config.focal, textures, [12.0, 30.0, 45.0, 60.0],
        [(0.0, 0.0), (-0.2 * config.width, 0.0), (0.3 * config.width, 0.15 * config.height),
         (0.9 * config.width, -0.1 * config.height)],
        [(1.0, 1.0), (0.2, 0.4), (0.15, 0.15), (0.2, 0.3)],
        [(0.0, 0.3, 0.0), (0.0, 0.2, 0.0), (0.3, 0.0, 0.2), (0.0, -0.3, 0.0)],
        [1.0, 1.0, 1.0, 1.0])
    out = []
    for i in range(frames):
        camera = torch.tensor([[start + 0.08 * i, 0.0, 0.0]])
        out.append(_grey(render(scene, camera, config, generator), generator))
    return out


def _moving(frames: int, config: SynthConfig, bank: TextureBank, generator: torch.Generator
            ) -> tuple[_Scene, Callable[[int], torch.Tensor]]:
    scene = make_scenes(1, config, bank, generator)
    near = scene.focal / config.max_disparity

    def camera(i: int) -> torch.Tensor:
        phase = 2 * math.pi * i / max(frames, 1)
        return torch.tensor([[0.5 * math.sin(phase), 0.1 * math.sin(2 * phase),
                              0.01 * near * i]])
    return scene, camera


def _exposure(frames: int, config: SynthConfig, bank: TextureBank,
              generator: torch.Generator) -> list[StereoBatch]:
    scene, camera = _moving(frames, config, bank, generator)
    out = []
    for i in range(frames):
        batch = render(scene, camera(i), config, generator)
        gain = (0.35, 1.0, 2.5, 0.6, 1.6)[int(torch.randint(5, (1,), generator=generator))]
        out.append(replace(batch, left=(batch.left * gain).clamp(0, 1),
                           right=(batch.right * gain * _uniform(generator, 0.9, 1.1)
                                  ).clamp(0, 1)))
    return out


def _cuts(frames: int, config: SynthConfig, bank: TextureBank, generator: torch.Generator
          ) -> list[StereoBatch]:
    out: list[StereoBatch] = []
    while len(out) < frames:
        scene, camera = _moving(frames, config, bank, generator)
        out.extend(render(scene, camera(i), config, generator) for i in range(6))
    return out[:frames]


def _bad_frames(frames: int, config: SynthConfig, bank: TextureBank,
                generator: torch.Generator) -> list[StereoBatch]:
    scene, camera = _moving(frames, config, bank, generator)
    out = []
    for i in range(frames):
        batch = render(scene, camera(i), config, generator)
        if i % 5 == 4:
            left, right = (batch.left, batch.left) if i % 10 == 4 else \
                (batch.right, batch.left)
            batch = StereoBatch(left=left, right=right,
                                disparity=torch.full_like(batch.disparity, math.nan),
                                visible=torch.zeros_like(batch.visible))
        out.append(batch)
    return out


_RENDERERS: dict[str, Callable[[int, SynthConfig, TextureBank, torch.Generator],
                               list[StereoBatch]]] = {
    "board_poses": _board_poses, "repetitive_pan": _repetitive_pan, "near_poses": _near_poses,
    "textureless": _textureless, "exposure": _exposure, "cuts": _cuts,
    "bad_frames": _bad_frames}


def render_harsh(name: str, frames: int, seed: int = 0,
                 bank: TextureBank | None = None) -> list[tuple[StereoSample, np.ndarray]]:
    """The harsh sequence ``name`` (one of ``HARSH_SEQUENCES``), ``frames`` frames rendered
    on the CPU, deterministic from ``seed``: (sample with uint8 RGB views, exact disparity,
    NaN where the frame is not scored; visibility mask) pairs, stamped 0.1 s apart."""
    if name not in HARSH_SEQUENCES:
        raise ValueError(f"unknown harsh sequence {name!r}; choose from "
                         f"{', '.join(HARSH_SEQUENCES)}")
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    _, (height, width), _ = HARSH_SEQUENCES[name]
    config = SynthConfig(height=height, width=width, min_disparity=2.0,
                         max_disparity=0.3 * width, shapes=(4, 10))
    generator = torch.Generator().manual_seed(seed)
    batches = _RENDERERS[name](frames, config, bank or TextureBank(), generator)
    samples = []
    for i, batch in enumerate(batches):
        samples.extend(to_samples(batch, [f"{name}_{i:06d}"], [i / 10]))
    return samples


#: The harsh kinds that training may mix in (``render_harsh_batch``): the scene kinds, not
#: the faults of a rig (exposure jumps, cuts and bad frames are no single-pair lesson).
TRAINING_KINDS = ("board_poses", "repetitive_pan", "near_poses", "textureless")
#: Added to every training seed, so that no training pair is rendered from the stream of a
#: development sequence or of the validation (both use small seeds).
TRAINING_SEED_OFFSET = 2 ** 48


def render_harsh_batch(count: int, height: int, width: int, seed: int,
                       bank: TextureBank | None = None, device: torch.device | str = "cpu"
                       ) -> StereoBatch:
    """``count`` training pairs of HEIGHT x WIDTH, each of a kind drawn from
    ``TRAINING_KINDS`` and rendered as the first frame of that kind's sequence (the pans from
    a random point along them), deterministic from ``seed``, float views in [0, 1] on
    ``device`` with exact disparity and visibility."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    config = SynthConfig(height=height, width=width, min_disparity=2.0,
                         max_disparity=0.3 * width, shapes=(4, 10))
    generator = torch.Generator().manual_seed(seed + TRAINING_SEED_OFFSET)
    bank = bank or TextureBank()
    parts = []
    for _ in range(count):
        kind = TRAINING_KINDS[int(torch.randint(len(TRAINING_KINDS), (1,),
                                                generator=generator))]
        if kind == "repetitive_pan":
            pair = _repetitive_pan(1, config, bank, generator, _uniform(generator, 0.0, 3.0))
        elif kind == "textureless":
            pair = _textureless(1, config, bank, generator, _uniform(generator, 0.0, 2.0))
        else:
            pair = _RENDERERS[kind](1, config, bank, generator)
        parts.append(pair[0])
    return StereoBatch(*(torch.cat(t).to(device) for t in zip(*(
        (p.left, p.right, p.disparity, p.visible) for p in parts))))
