"""A learned confidence for a traditional matcher's disparity (``proxy_confidence=learned``).

CCNN-style (Poggi and Mattoccia, "Learning from scratch a confidence measure", BMVC 2016): a
small fully convolutional network reads a 9 x 9 neighbourhood of per-pixel features of the
proxy and gives the probability that the proxy's disparity at the centre is right (within
``CORRECT_PX`` of the truth). Where CCNN reads the disparity map alone, this one also reads
what the hand-made measures look at, so that it learns how to weigh them (the features are
made by ``adaptation.proxy.proxy_features``):

0. the disparity, divided by the search range (0 where there is none);
1. whether there is a disparity;
2. the left-right disagreement ``|d_left(x) - d_right(x - d_left(x))|``, clipped to
   ``LR_CLIP`` pixels and divided by it (1 where it cannot be computed);
3. the matcher's uniqueness (SGBM's test, 0 or 1; the peak ratio of ``ad`` / ``census``);
4. the grey level of the left image, in [-0.5, 0.5].

Four 3 x 3 convolutions without padding at training time (a 9 x 9 receptive field, as CCNN)
and with replicate padding at inference, then two 1 x 1 layers and a sigmoid. The weights are
a safetensors file (no pickle) with its metadata; ``models/proxy_confidence.safetensors`` is
the shipped one (``stereo-adapt proxy-confidence train``, docs/adaptation.md).
"""

from __future__ import annotations

import functools
import json
import os
import threading
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load, save
from torch import nn

from ..files import atomic_write_bytes

#: A proxy pixel is right when it is within this many pixels of the ground truth.
CORRECT_PX = 2.0
#: Left-right disagreements are clipped at this many pixels.
LR_CLIP = 8.0
FEATURES = 5
KIND = "stereo_adapt_ros.proxy_confidence"
VERSION = 1
#: The shipped network's file name, looked up where the MADNet weights are.
SHIPPED = "proxy_confidence.safetensors"


class ProxyConfidenceNet(nn.Module):
    """Features (N x 5 x H x W, ``adaptation.proxy.proxy_features``) -> probability that the
    proxy is right (N x 1 x H x W with ``padded``; N x 1 x (H - 8) x (W - 8) without, for
    training)."""

    def __init__(self, channels: int = 16, hidden: int = 32) -> None:
        super().__init__()
        self.channels, self.hidden = channels, hidden
        convolutions = []
        width = FEATURES
        for _ in range(4):
            convolutions.append(nn.Conv2d(width, channels, 3))
            width = channels
        self.convolutions = nn.ModuleList(convolutions)
        self.hidden_layer = nn.Conv2d(channels, hidden, 1)
        self.output = nn.Conv2d(hidden, 1, 1)

    def logits(self, features: torch.Tensor, padded: bool = True) -> torch.Tensor:
        x = features
        for convolution in self.convolutions:
            if padded:
                x = F.pad(x, (1, 1, 1, 1), mode="replicate")
            x = F.relu(convolution(x))
        return self.output(F.relu(self.hidden_layer(x)))

    def forward(self, features: torch.Tensor, padded: bool = True) -> torch.Tensor:
        return torch.sigmoid(self.logits(features, padded))


def correct_labels(disparity: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(1 where the proxy is within CORRECT_PX of the truth else 0, where the truth is known)."""
    known = np.isfinite(truth) & (truth > 0)
    right = np.isfinite(disparity) & (np.abs(np.nan_to_num(disparity) - truth) <= CORRECT_PX)
    return (right & known).astype(np.float32), known


def save_proxy_confidence(path: str | os.PathLike, network: ProxyConfidenceNet,
                          trained_on: str) -> Path:
    """Write the network and its metadata atomically; returns the path."""
    metadata = {"kind": KIND, "version": str(VERSION), "trained_on": trained_on,
                "architecture": json.dumps({"channels": network.channels,
                                            "hidden": network.hidden}),
                "correct_px": str(CORRECT_PX)}
    tensors = {name: tensor.detach().cpu().contiguous()
               for name, tensor in network.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, save(tensors, metadata=metadata))
    return path


def read_proxy_confidence(path: str | os.PathLike) -> ProxyConfidenceNet:
    """Load a network written by ``save_proxy_confidence`` (CPU, eval mode).

    Raises ValueError with the reason for a missing, corrupt or foreign file.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read proxy confidence weights {str(path)!r}: "
                         f"{error.strerror or error}") from error
    try:
        tensors = load(data)
        metadata = _metadata(data)  # load() returns the tensors only
    except Exception as error:
        raise ValueError(f"{str(path)!r} is not a safetensors file: {error}") from error
    for name, tensor in tensors.items():
        # A NaN or an infinity would turn every confidence into NaN: every proxy pixel
        # dropped, no frame adapted, and nothing to say why.
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{str(path)!r}: tensor {name!r} holds NaN or infinite values")
    if metadata.get("kind") != KIND:
        raise ValueError(f"{str(path)!r} holds no proxy confidence network (kind "
                         f"{metadata.get('kind')!r})")
    try:
        shape = json.loads(metadata.get("architecture", "{}"))
        network = ProxyConfidenceNet(int(shape["channels"]), int(shape["hidden"]))
        network.load_state_dict(tensors)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"{str(path)!r}: the proxy confidence network does not load: "
                         f"{error}") from error
    return network.eval()


def _metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of safetensors bytes (the header is JSON after an 8-byte length)."""
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + length])
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict):
        raise ValueError("metadata is not a mapping")
    return {str(k): str(v) for k, v in metadata.items()}


@functools.lru_cache(maxsize=1)
def shipped_path() -> Path:
    """The shipped network, beside the shipped MADNet weights."""
    from .weights import models_dirs
    for folder in models_dirs():
        if (folder / SHIPPED).is_file():
            return folder / SHIPPED
    raise ValueError(f"the shipped {SHIPPED} is not installed (looked in "
                     f"{', '.join(str(d) for d in models_dirs())})")


_LOCK = threading.Lock()


@functools.lru_cache(maxsize=4)
def _cached(path: str) -> ProxyConfidenceNet:
    return read_proxy_confidence(path)


def learned_network(path: str | os.PathLike | None = None) -> ProxyConfidenceNet:
    """The network in ``path`` (default: the shipped one), loaded once per path; ValueError
    with the reason when the file is missing or unusable."""
    return _cached(str(path) if path is not None else str(shipped_path()))


def learned_confidence(features: np.ndarray, path: str | os.PathLike | None = None
                       ) -> np.ndarray:
    """H x W float32 probability that the proxy is right, from ``proxy_features``' output,
    by the network in ``path`` (default: the shipped one), loaded once per path."""
    network = learned_network(path)
    with _LOCK, torch.inference_mode():
        # One forward at a time: the proxy runs in a thread beside the main network. NHWC is
        # faster for oneDNN's convolutions (172 -> 142 ms at 320 x 1216 on a 2-core Xeon),
        # with the same float32 arithmetic.
        inputs = torch.from_numpy(features)[None].contiguous(memory_format=torch.channels_last)
        output = network(inputs)
    return output[0, 0].numpy().astype(np.float32)
