"""L2A's confidence network for weighted adaptation (WAd).

It reads the per-pixel photometric error map of a prediction (gradient stopped) and returns a
weight in [0, 1] per pixel: the adaptation loss becomes the weighted mean error, so pixels whose
error says nothing about the disparity (occlusions, specular highlights, the image border) can be
masked out. It is trained only by L2A's outer (supervised) objective; online it is frozen.
Stored in weights files under the prefix ``confidence.``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import LEAKY_SLOPE, conv3x3

PREFIX = "confidence."
#: The last layer's initial bias: sigmoid(2) = 0.88 everywhere, so a fresh network weights every
#: pixel almost alike (plain adaptation) and meta-training departs from there.
INITIAL_BIAS = 2.0


class ConfidenceNetwork(nn.Module):
    """error (B x 1 x H x W) -> 1/4 resolution -> conv 32 -> conv 64 -> conv 1 -> sigmoid ->
    bilinear upsampling back to H x W. About 19 k parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(conv3x3(1, 32), nn.LeakyReLU(LEAKY_SLOPE),
                                    conv3x3(32, 64), nn.LeakyReLU(LEAKY_SLOPE), conv3x3(64, 1))
        for module in self.layers:
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, a=LEAKY_SLOPE, nonlinearity="leaky_relu")
                nn.init.zeros_(module.bias)  # type: ignore[arg-type]  # never None here
        with torch.no_grad():
            self.layers[-1].weight.mul_(0.1)  # type: ignore[operator]
            self.layers[-1].bias.fill_(INITIAL_BIAS)  # type: ignore[operator]

    def forward(self, error: torch.Tensor) -> torch.Tensor:
        """error: photometric error B x 1 x H x W in [0, 1]. Returns weights, same shape."""
        size = error.shape[-2:]
        small = F.avg_pool2d(error.float(), 4, ceil_mode=True)
        weights = torch.sigmoid(self.layers(small))
        return F.interpolate(weights, size=size, mode="bilinear", align_corners=False)

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> ConfidenceNetwork | None:
        """The network stored in a weights file's extra tensors, or None if it has none.
        Raises ValueError if the tensors are there but do not fit."""
        state = {k[len(PREFIX):]: v for k, v in tensors.items() if k.startswith(PREFIX)}
        if not state:
            return None
        network = cls()
        expected = network.state_dict()
        if set(state) != set(expected):
            raise ValueError(f"confidence network tensors do not match: missing "
                             f"{sorted(set(expected) - set(state))}, unexpected "
                             f"{sorted(set(state) - set(expected))}")
        for name, tensor in state.items():
            if tensor.shape != expected[name].shape:
                raise ValueError(f"confidence tensor {name}: shape {tuple(tensor.shape)}, "
                                 f"expected {tuple(expected[name].shape)}")
        network.load_state_dict({k: v.float() for k, v in state.items()})
        return network
