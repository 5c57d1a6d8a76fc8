"""Saving and loading MADNet weights as safetensors (no pickle), with metadata.

A weights file holds the network's tensors (their names as in ``MADNet.state_dict()``),
optionally extra tensors under other prefixes (e.g. ``confidence.`` for L2A's confidence
network), and string metadata: architecture version, input normalisation, provenance.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from ..files import atomic_write_bytes, remove_stale_temporaries
from .madnet import MADNet

ARCHITECTURE = "madnet-v1"
SHIPPED_NAMES = ("synthetic", "l2a")
MODELS_ENV = "STEREO_ADAPT_MODELS"


class WeightsError(ValueError):
    """A weights file is missing, unreadable, corrupt or does not fit the network."""


@dataclass(frozen=True)
class InputNormalization:
    """Maps RGB images in [0, 1] to the network's input: ``(x - mean) / std`` per channel."""

    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """images: B x 3 x H x W in [0, 1] -> normalised network input, same shape."""
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        return (images - mean) / std


@dataclass(frozen=True)
class WeightsInfo:
    """Metadata stored beside the tensors."""

    architecture: str = ARCHITECTURE
    normalization: InputNormalization = field(default_factory=InputNormalization)
    trained_on: str = "untrained"
    description: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def to_metadata(self) -> dict[str, str]:
        return {
            "architecture": self.architecture,
            "normalization": json.dumps(asdict(self.normalization)),
            "trained_on": self.trained_on,
            "description": self.description,
            "extra": json.dumps(self.extra),
        }

    @classmethod
    def from_metadata(cls, metadata: dict[str, str] | None, source: str) -> WeightsInfo:
        """Parse and check the metadata of a file; a missing field takes its default.

        Raises WeightsError with the reason when a field is not valid JSON or does not have the
        schema ``to_metadata`` writes (``normalization`` an object with three-number ``mean``
        and positive ``std`` lists, ``extra`` an object of scalar values).
        """
        metadata = metadata or {}
        normalization = InputNormalization()
        if "normalization" in metadata:
            norm = _metadata_json(metadata, "normalization", source)
            if not isinstance(norm, dict):
                raise WeightsError(f"{source}: metadata normalization must be a JSON object "
                                   f"with mean and std, got {type(norm).__name__}")
            normalization = InputNormalization(
                mean=_three_numbers(norm.get("mean", InputNormalization.mean), "mean", source),
                std=_three_numbers(norm.get("std", InputNormalization.std), "std", source))
            if any(s <= 0 for s in normalization.std):
                raise WeightsError(f"{source}: invalid input normalisation {normalization}: "
                                   "std must be > 0")
        extra = _metadata_json(metadata, "extra", source) if "extra" in metadata else {}
        if not isinstance(extra, dict):
            raise WeightsError(f"{source}: metadata extra must be a JSON object, got "
                               f"{type(extra).__name__}")
        for key, value in extra.items():
            if not isinstance(value, (str, int, float, bool)):
                raise WeightsError(f"{source}: metadata extra[{key!r}] must be a string or a "
                                   f"number, got {type(value).__name__}")
        return cls(architecture=metadata.get("architecture", "unknown"),
                   normalization=normalization,
                   trained_on=metadata.get("trained_on", "unknown"),
                   description=metadata.get("description", ""),
                   extra={str(k): str(v) for k, v in extra.items()})


def _metadata_json(metadata: dict[str, str], key: str, source: str) -> Any:
    try:
        return json.loads(metadata[key])
    except ValueError as error:
        raise WeightsError(f"{source}: unreadable metadata {key} ({error})") from error


def _three_numbers(value: Any, name: str, source: str) -> tuple[float, float, float]:
    """``value`` as three finite floats (one per RGB channel), or WeightsError."""
    if (not isinstance(value, (list, tuple)) or len(value) != 3
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                       and math.isfinite(v) for v in value)):
        raise WeightsError(f"{source}: invalid input normalisation: {name} must be three "
                           f"finite numbers (one per RGB channel), got {value!r}")
    return (float(value[0]), float(value[1]), float(value[2]))


def save_weights(path: str | os.PathLike, tensors: dict[str, torch.Tensor], info: WeightsInfo,
                 dtype: torch.dtype | None = None) -> Path:
    """Write ``tensors`` and ``info`` atomically (``files.atomic_write_bytes``), first removing
    the temporaries that saves killed midway left beside ``path`` (``remove_stale_temporaries``).
    dtype: storage type for floating-point tensors (e.g. torch.float16 to halve the file);
    None keeps each tensor's own. Returns the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    stored = {}
    for name, tensor in tensors.items():
        tensor = tensor.detach().to("cpu")
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        stored[name] = tensor.contiguous()
    # Serialised here and written into our own temporary: safetensors' save_file writes
    # through a temporary of its own (".tmpXXXXXX"), which a kill would leave unrecognised.
    atomic_write_bytes(path, save(stored, metadata=info.to_metadata()))
    return path


def read_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], WeightsInfo]:
    """Read every tensor (as float32 where floating) and the metadata of a weights file."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata()
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise WeightsError(f"{path}: not a readable safetensors file ({error})") from error
    info = WeightsInfo.from_metadata(metadata, str(path))
    if info.architecture != ARCHITECTURE:
        raise WeightsError(f"{path}: architecture {info.architecture!r}, expected {ARCHITECTURE!r}")
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise WeightsError(f"{path}: tensor {name!r} holds NaN or infinite values")
    return tensors, info


def network_state(tensors: dict[str, torch.Tensor], model: MADNet, source: str
                  ) -> dict[str, torch.Tensor]:
    """The subset of ``tensors`` that is MADNet's state, checked name by name and shape by shape."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise WeightsError(f"{source}: missing {len(missing)} network tensors, e.g. {missing[:3]}")
    for name, ref in expected.items():
        if tuple(tensors[name].shape) != tuple(ref.shape):
            raise WeightsError(f"{source}: tensor {name!r} has shape {tuple(tensors[name].shape)}, "
                               f"expected {tuple(ref.shape)}")
    return {name: tensors[name] for name in expected}


def models_dirs() -> list[Path]:
    """Where shipped weights are looked for, in order: $STEREO_ADAPT_MODELS, the installed
    share folder (colcon or pip data_files), and the source tree's models/."""
    dirs = []
    if os.environ.get(MODELS_ENV):
        dirs.append(Path(os.environ[MODELS_ENV]))
    here = Path(__file__).resolve()
    for prefix in here.parents:
        candidate = prefix / "share" / "stereo_adapt_ros" / "models"
        if candidate.is_dir():
            dirs.append(candidate)
            break
    dirs.append(here.parents[3] / "models")
    return dirs


def resolve_weights(spec: str) -> Path:
    """A shipped weights name (``synthetic``, ``l2a``) or a file path -> an existing file."""
    if spec in SHIPPED_NAMES:
        for folder in models_dirs():
            candidate = folder / f"madnet_{spec}.safetensors"
            if candidate.is_file():
                return candidate
        raise WeightsError(f"shipped weights {spec!r} not found in "
                           f"{', '.join(str(d) for d in models_dirs())}")
    path = Path(spec).expanduser()
    if not path.is_file():
        raise WeightsError(f"weights file not found: {spec} (or use one of {SHIPPED_NAMES})")
    return path


def load_model(spec: str, device: torch.device | str = "cpu", seed: int = 0
               ) -> tuple[MADNet, WeightsInfo, dict[str, torch.Tensor]]:
    """Build MADNet with weights from ``spec``.

    spec: a shipped name, a .safetensors path, or ``random`` (a seeded fresh initialisation,
        for tests and for training from scratch).
    Returns the model on ``device``, its metadata, and any extra tensors of the file that are
    not part of the network (e.g. L2A's confidence network), keyed as stored.
    """
    if spec == "random":
        torch.manual_seed(seed)
        model = MADNet()
        return model.to(device), WeightsInfo(trained_on=f"random-init(seed={seed})"), {}
    path = resolve_weights(spec)
    tensors, info = read_weights(path)
    model = MADNet()
    state = network_state(tensors, model, str(path))
    model.load_state_dict(state)
    extra = {k: v for k, v in tensors.items() if k not in state}
    return model.to(device), info, extra
