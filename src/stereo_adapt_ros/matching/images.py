"""The grey images the traditional matchers compare."""

from __future__ import annotations

import cv2
import numpy as np


def to_gray_uint8(image: np.ndarray) -> np.ndarray:
    """H x W (x 3) uint8, uint16 or float in [0, 1] image as H x W uint8 grey."""
    if image.dtype == np.uint16:
        image = (image / 257.0 + 0.5).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = (np.clip(np.nan_to_num(image, nan=0.0), 0, 1) * 255 + 0.5).astype(np.uint8)
    if image.ndim == 3:
        image = cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2GRAY) \
            if image.shape[2] >= 3 else image[..., 0]
    return np.ascontiguousarray(image)
