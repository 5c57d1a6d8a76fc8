"""Validation and conversion of a rectified stereo pair into network tensors."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

MIN_SIZE = 8


def _as_rgb_float(image: np.ndarray, side: str) -> np.ndarray:
    """One view -> float32 H x W x 3 in [0, 1], or a ValueError that says what is wrong."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{side} image must be a numpy array, got {type(image).__name__}")
    if image.size == 0:
        raise ValueError(f"{side} image is empty (shape {image.shape})")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"{side} image must be H x W, H x W x 1, x 3 or x 4, got {image.shape}")
    image = image[..., :3]
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if image.dtype == np.uint16:
        return image.astype(np.float32) / 65535.0
    if image.dtype in (np.float32, np.float64):
        if not np.isfinite(image).all():
            raise ValueError(f"{side} image contains NaN or infinite values")
        if image.min() < 0 or image.max() > 1:
            raise ValueError(f"{side} float image must be in [0, 1], got range "
                             f"[{image.min():.3g}, {image.max():.3g}]")
        return image.astype(np.float32)
    raise ValueError(f"{side} image has unsupported dtype {image.dtype} "
                     "(use uint8, uint16, or float in [0, 1])")


def pair_to_tensors(left: np.ndarray, right: np.ndarray, device: torch.device
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Check a rectified pair and convert it to two 1 x 3 x H x W float32 tensors in [0, 1].

    left, right: RGB (or grayscale) images of the same size; uint8, uint16 or float in [0, 1].
    Raises ValueError naming the problem: empty, wrong dtype or channels, NaN, size mismatch,
    smaller than 8 x 8.
    """
    left_f = _as_rgb_float(left, "left")
    right_f = _as_rgb_float(right, "right")
    if left_f.shape != right_f.shape:
        raise ValueError(f"left and right sizes differ: {left.shape} vs {right.shape}")
    if min(left_f.shape[:2]) < MIN_SIZE:
        raise ValueError(f"images of {left_f.shape[:2]} are smaller than {MIN_SIZE} x {MIN_SIZE}")
    pair = np.stack((left_f, right_f)).transpose(0, 3, 1, 2)
    tensor = torch.from_numpy(np.ascontiguousarray(pair))
    if device.type == "cuda":
        tensor = tensor.pin_memory().to(device, non_blocking=True)
    else:
        tensor = tensor.to(device)
    return tensor[:1], tensor[1:]


def step_tensors(left: np.ndarray, right: np.ndarray, ground_truth: np.ndarray | None,
                 device: torch.device, input_scale: float
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Size]:
    """A step's inputs: the pair as 1 x 3 x h x w tensors on ``device`` resized by
    ``input_scale``, the oracle's ``ground_truth`` (H x W, pixels, NaN unknown) as
    1 x 1 x h x w in pixels of the resized images (0: unknown), and the pair's own size H x W.
    Raises ValueError for a malformed pair or ground truth of another size."""
    left_t, right_t = pair_to_tensors(left, right, device)
    size = left_t.shape[-2:]
    target = None
    if ground_truth is not None:
        if ground_truth.shape != tuple(size):
            raise ValueError(f"ground truth {ground_truth.shape} does not match the "
                             f"images {tuple(size)}")
        target = torch.from_numpy(np.nan_to_num(ground_truth.astype(np.float32),
                                                nan=0.0))[None, None].to(device)
    if input_scale != 1.0:
        scaled = [max(8, round(s * input_scale)) for s in size]
        left_t = F.interpolate(left_t, size=scaled, mode="area" if
                               input_scale < 1 else "bilinear")
        right_t = F.interpolate(right_t, size=scaled, mode="area" if
                                input_scale < 1 else "bilinear")
        if target is not None:
            target = F.interpolate(target, size=scaled, mode="nearest") * (
                scaled[1] / size[1])
    return left_t, right_t, target, size
