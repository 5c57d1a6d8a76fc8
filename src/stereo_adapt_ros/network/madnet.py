"""MADNet (Tonioni et al., CVPR 2019) with its five MAD blocks as a first-class concept.

Architecture (arXiv:1810.05424): a shared 6-level feature pyramid, 1-D correlation
(radius 2) at levels 6..2 on right features warped by the upsampled coarser disparity, one
disparity decoder per level, and a dilated refinement network on level 2.

Conventions:
- Input: normalised images B x 3 x H x W (see ``InputNormalization``), any H and W; they are
  padded on the bottom and right to a multiple of 64 and every output is cropped back.
- Disparity: positive, in pixels of the tensor it belongs to (left x matches right x - d).
- Each decoder's last convolution predicts disparity in full-resolution pixels divided by
  ``DISPARITY_SCALE`` (20, inherited from FlowNet via the original code). This keeps every
  level's raw output O(1) whatever its resolution; it is converted to level pixels at once,
  and the upsampled disparity fed to the next decoder is converted back the same way.
"""

from __future__ import annotations

from collections.abc import Collection
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .layers import LEAKY_SLOPE, conv3x3, conv_stack, correlation_1d, upsample_disparity, \
    warp_right_to_left

PYRAMID_CHANNELS = (16, 32, 64, 96, 128, 192)
DECODER_CHANNELS = (128, 128, 96, 64, 32, 1)
REFINEMENT_CHANNELS = (128, 128, 128, 96, 64, 32, 1)
REFINEMENT_DILATIONS = (1, 2, 4, 8, 16, 1, 1)
CORRELATION_RADIUS = 2
#: The correlation enters the decoders multiplied by this gain. The original feeds raw [0, 255]
#: pixels, so its correlations (products of features) outweigh the features they are
#: concatenated with by orders of magnitude and the decoders start out reading the matching
#: costs. With normalised input both are of unit scale and the 5 correlation channels drown
#: among 192 feature channels: from scratch the network then learned to predict each image's
#: mean disparity and nothing else for thousands of steps (measured: no gain over a constant
#: on held-out pairs after 750 steps), while with the gain it starts matching within ~150 steps.
CORRELATION_GAIN = 30.0
#: Each prediction layer starts at this fraction of its He initialisation, so a fresh network
#: predicts near-zero disparity and its first warps are near identity rather than random.
PREDICTION_INIT_GAIN = 0.01
DISPARITY_SCALE = 20.0
PAD_MULTIPLE = 64

#: MAD blocks, coarsest first. Block k owns the level-k decoder and pyramid level k;
#: block 2 also owns pyramid level 1 and the refinement network.
BLOCKS = (6, 5, 4, 3, 2)
PREDICTION_LEVELS = BLOCKS


def _level_scale(level: int) -> float:
    """Factor from a decoder's raw output to disparity in level-``level`` pixels."""
    return DISPARITY_SCALE / 2 ** level


@dataclass
class MADNetOutput:
    """What a forward pass returns.

    disparity: B x 1 x H x W, final (refined) disparity in pixels of the input image.
    levels: level k -> B x 1 x Hp/2^k x Wp/2^k, disparity in pixels of level k, over the
        padded input (Hp, Wp: H, W rounded up to a multiple of 64). ``levels[2]`` is refined.
    size: (H, W) of the input.
    """

    disparity: torch.Tensor
    levels: dict[int, torch.Tensor]
    size: tuple[int, int]

    def upsampled(self, level: int) -> torch.Tensor:
        """Level ``level``'s prediction at input resolution, in input pixels (B x 1 x H x W)."""
        return _to_input_resolution(self.levels[level], level, self.size)


def _to_input_resolution(disparity: torch.Tensor, level: int, size: tuple[int, int]
                         ) -> torch.Tensor:
    padded = (disparity.shape[-2] * 2 ** level, disparity.shape[-1] * 2 ** level)
    return upsample_disparity(disparity, padded)[..., :size[0], :size[1]]


def _pad_to_multiple(images: torch.Tensor, multiple: int) -> torch.Tensor:
    h, w = images.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h == 0 and pad_w == 0:
        return images
    # Reflection (as the original) needs the pad to be smaller than the image; tiny inputs
    # fall back to replicating the border.
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return F.pad(images, (0, pad_w, 0, pad_h), mode=mode)


def _predict(stack: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Run a decoder (or the refinement network) whose last layer predicts disparity.

    Under mixed precision the body runs in half precision but the 1-channel prediction layer
    runs in float32: bf16 keeps 8 bits of mantissa, which would quantise a 100 px disparity to
    steps of about 0.5 px.
    """
    features = stack[:-1](x)
    with torch.autocast(device_type=x.device.type, enabled=False):
        return stack[-1](features if features.dtype == torch.float64 else features.float())


class PyramidLevel(nn.Sequential):
    """Two 3x3 convolutions (stride 2, then 1), each followed by leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(conv3x3(in_channels, out_channels, stride=2), nn.LeakyReLU(LEAKY_SLOPE),
                         conv3x3(out_channels, out_channels), nn.LeakyReLU(LEAKY_SLOPE))


class MADNet(nn.Module):
    """The MADNet stereo network (about 3.8 M parameters)."""

    def __init__(self) -> None:
        super().__init__()
        in_channels = (3,) + PYRAMID_CHANNELS[:-1]
        # pyramid[k - 1] produces level k (1/2^k of the input).
        self.pyramid = nn.ModuleList(PyramidLevel(cin, cout)
                                     for cin, cout in zip(in_channels, PYRAMID_CHANNELS))
        corr = 2 * CORRELATION_RADIUS + 1
        self.decoders = nn.ModuleDict()
        for level in PREDICTION_LEVELS:
            features = PYRAMID_CHANNELS[level - 1]
            upsampled = 0 if level == 6 else 1
            self.decoders[str(level)] = conv_stack([features + corr + upsampled,
                                                    *DECODER_CHANNELS])
        self.refinement = conv_stack([PYRAMID_CHANNELS[1] + 1, *REFINEMENT_CHANNELS],
                                     list(REFINEMENT_DILATIONS))
        self._initialise()

    def _initialise(self) -> None:
        # He initialisation for leaky ReLU keeps activations (and gradients) at scale through
        # the 6-conv decoders; torch's default shrinks them so much that a fresh network's
        # coarse blocks receive gradients around 1e-9 and cannot be trained or adapted.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, a=LEAKY_SLOPE, nonlinearity="leaky_relu")
                nn.init.zeros_(module.bias)  # type: ignore[arg-type]  # never None here
        with torch.no_grad():
            for stack in (*self.decoders.values(), self.refinement):
                stack[-1].weight.mul_(PREDICTION_INIT_GAIN)  # type: ignore[index]

    # --- MAD blocks -------------------------------------------------------------------
    @staticmethod
    def block_of(parameter_name: str) -> int:
        """The MAD block that owns a parameter, from its name in ``named_parameters()``."""
        parts = parameter_name.split(".")
        if parts[0] == "pyramid":
            level = int(parts[1]) + 1
            return max(level, 2)
        if parts[0] == "decoders":
            return int(parts[1])
        if parts[0] == "refinement":
            return 2
        raise KeyError(f"parameter {parameter_name!r} belongs to no MAD block")

    def block_parameter_names(self) -> dict[int, list[str]]:
        """Block -> names of the parameters it owns; every parameter is in exactly one."""
        partition: dict[int, list[str]] = {block: [] for block in BLOCKS}
        for name, _ in self.named_parameters():
            partition[self.block_of(name)].append(name)
        return partition

    # --- forward ----------------------------------------------------------------------
    def forward(self, left: torch.Tensor, right: torch.Tensor,
                detach_between_blocks: bool = False,
                float32_blocks: Collection[int] = ()) -> MADNetOutput:
        """Predict the left view's disparity.

        left, right: normalised images, B x 3 x H x W, same shape.
        detach_between_blocks: MAD mode. The upsampled coarser disparity entering each level
            is detached, so a loss on block k's prediction back-propagates through block k only.
        float32_blocks: under autocast, run these MAD blocks' layers in float32 (the rest keeps
            the autocast dtype). On CPU, oneDNN's bf16 backward is several times slower than
            float32 on some layers' shapes, so adaptation steps train the blocks a timed trial
            found faster that way in float32 (``adaptation/precision.py``).
        """
        if left.shape != right.shape:
            raise ValueError(f"left and right must have the same shape, got "
                             f"{tuple(left.shape)} and {tuple(right.shape)}")
        if left.dim() != 4 or left.shape[1] != 3:
            raise ValueError(f"expected B x 3 x H x W images, got {tuple(left.shape)}")
        size = (left.shape[-2], left.shape[-1])
        batch = left.shape[0]
        # Left and right share the pyramid: one pass over both halves of a double batch.
        x = _pad_to_multiple(torch.cat((left, right), dim=0), PAD_MULTIPLE)
        def precision(block: int):
            """float32 for ``float32_blocks`` (their input cast up), the autocast state
            otherwise."""
            if block not in float32_blocks:
                return nullcontext()
            return torch.autocast(device_type=x.device.type, enabled=False)

        def up_cast(tensor: torch.Tensor, block: int) -> torch.Tensor:
            return tensor.float() if block in float32_blocks and tensor.dtype in (
                torch.float16, torch.bfloat16) else tensor

        features = []
        for index, stage in enumerate(self.pyramid):
            block = max(index + 1, 2)
            with precision(block):
                x = stage(up_cast(x, block))
            features.append(x)

        levels: dict[int, torch.Tensor] = {}
        coarser: torch.Tensor | None = None
        for level in PREDICTION_LEVELS:
            feats = features[level - 1]
            left_f, right_f = feats[:batch], feats[batch:]
            scale = _level_scale(level)
            if coarser is None:
                corr = correlation_1d(left_f, right_f, CORRELATION_RADIUS) * CORRELATION_GAIN
                decoder_in = torch.cat((left_f, corr), dim=1)
            else:
                up = upsample_disparity(coarser, left_f.shape[-2:])
                if detach_between_blocks:
                    up = up.detach()
                corr = correlation_1d(left_f, warp_right_to_left(right_f, up),
                                      CORRELATION_RADIUS) * CORRELATION_GAIN
                decoder_in = torch.cat((left_f, corr, up / scale), dim=1)
            with precision(level):
                # ModuleDict's values are typed Module; these are conv_stack's Sequentials.
                disparity = _predict(self.decoders[str(level)],  # type: ignore[arg-type]
                                     up_cast(decoder_in, level)) * scale
                if level == 2:
                    residual = _predict(self.refinement, torch.cat(
                        (up_cast(left_f, level), disparity / scale), dim=1))
                    disparity = disparity + residual * scale
            levels[level] = disparity
            coarser = disparity

        final = _to_input_resolution(levels[2], 2, size)
        return MADNetOutput(disparity=final, levels=levels, size=size)
