"""Conversion between the raw fields of a ROS ``sensor_msgs/Image`` and numpy arrays.

This module only handles the byte layout (``data``, ``height``, ``width``, ``encoding``,
``step``, ``is_bigendian``); it imports no ROS, so bag readers and the ROS node share it.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

import numpy as np


@dataclass(frozen=True)
class _PixelLayout:
    """How one pixel of an encoding is stored: element type and channels per pixel."""

    dtype: np.dtype
    channels: int

    @property
    def bytes_per_pixel(self) -> int:
        return self.dtype.itemsize * self.channels


_LAYOUTS = MappingProxyType(
    {
        "mono8": _PixelLayout(np.dtype(np.uint8), 1),
        "8UC1": _PixelLayout(np.dtype(np.uint8), 1),
        "mono16": _PixelLayout(np.dtype(np.uint16), 1),
        "16UC1": _PixelLayout(np.dtype(np.uint16), 1),
        "bgr8": _PixelLayout(np.dtype(np.uint8), 3),
        "rgb8": _PixelLayout(np.dtype(np.uint8), 3),
        "8UC3": _PixelLayout(np.dtype(np.uint8), 3),
        "bgra8": _PixelLayout(np.dtype(np.uint8), 4),
        "rgba8": _PixelLayout(np.dtype(np.uint8), 4),
        "32FC1": _PixelLayout(np.dtype(np.float32), 1),
    }
)

SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_LAYOUTS)


def _layout(encoding: str) -> _PixelLayout:
    """Look up ``encoding``, raising a ValueError that lists the supported ones."""
    try:
        return _LAYOUTS[encoding]
    except KeyError:
        supported = ", ".join(SUPPORTED_ENCODINGS)
        raise ValueError(
            f"unsupported image encoding {encoding!r}; supported: {supported}"
        ) from None


def _as_byte_array(data: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """View any contiguous buffer as a flat uint8 array without copying."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    return np.frombuffer(data, dtype=np.uint8)


def bytes_per_pixel(encoding: str) -> int:
    """Bytes of one pixel of ``encoding`` (ValueError for an unsupported one)."""
    return _layout(encoding).bytes_per_pixel


def check_image_layout(height: int, width: int, encoding: str, step: int, size: int) -> None:
    """Raise ValueError with the reason unless an image of these fields (``size``: bytes of
    data) can be decoded: a supported encoding, a non-zero size, a step of at least one row of
    pixels and at least ``height * step`` bytes."""
    layout = _layout(encoding)
    if height <= 0 or width <= 0:
        raise ValueError(f"image has zero size: {height} x {width} (height x width)")
    row_bytes = width * layout.bytes_per_pixel
    if step < row_bytes:
        raise ValueError(
            f"step {step} is smaller than one row of {width} {encoding} pixels ({row_bytes} bytes)"
        )
    expected = height * step
    if size < expected:
        raise ValueError(
            f"image data too short: expected {expected} bytes (height {height} x step {step}), "
            f"got {size}"
        )


def decode_image(
    data: bytes | bytearray | memoryview | np.ndarray,
    height: int,
    width: int,
    encoding: str,
    step: int,
    is_bigendian: bool | int,
) -> np.ndarray:
    """Decode the raw fields of a ``sensor_msgs/Image`` into an array.

    Args:
        data: the message's pixel buffer, at least ``height * step`` bytes.
        height, width: image size in pixels.
        encoding: one of ``SUPPORTED_ENCODINGS`` (mono8, mono16, bgr8, rgb8, bgra8, rgba8,
            32FC1, 16UC1, 8UC1, 8UC3).
        step: bytes per row including any padding; at least ``width * bytes_per_pixel``.
        is_bigendian: byte order of multi-byte elements (mono16, 16UC1, 32FC1).

    Returns:
        A new array (it does not alias ``data``) in native byte order and in the encoding's
        channel order: H x W for one-channel encodings (uint8, uint16 or float32),
        H x W x C uint8 otherwise.

    Raises:
        ValueError: for an unsupported encoding, a zero-size image, a step smaller than one
            row of pixels, or a buffer shorter than ``height * step``.
    """
    layout = _layout(encoding)
    buffer = _as_byte_array(data)
    check_image_layout(height, width, encoding, step, buffer.size)
    row_bytes = width * layout.bytes_per_pixel
    expected = height * step
    # Dropping the padding at the end of each row and copying gives a contiguous buffer that
    # can be reinterpreted as the element type.
    rows = np.ascontiguousarray(buffer[:expected].reshape(height, step)[:, :row_bytes])
    stored_dtype = layout.dtype.newbyteorder(">" if is_bigendian else "<")
    pixels = rows.view(stored_dtype).astype(layout.dtype.newbyteorder("="))
    if layout.channels == 1:
        return pixels.reshape(height, width)
    return pixels.reshape(height, width, layout.channels)


def _check_shape(image: np.ndarray, encoding: str, layout: _PixelLayout) -> None:
    """Raise a ValueError unless ``image`` has the dtype and channel count of ``encoding``."""
    expected_ndim = 2 if layout.channels == 1 else 3
    if (
        image.ndim != expected_ndim
        or (layout.channels > 1 and image.shape[2] != layout.channels)
        or image.dtype != layout.dtype
    ):
        channels = "H x W" if layout.channels == 1 else f"H x W x {layout.channels}"
        raise ValueError(
            f"{encoding} expects a {channels} {layout.dtype} array, "
            f"got shape {image.shape} and dtype {image.dtype}"
        )


def rgb8_from_pixels(image: np.ndarray, order: str = "rgb") -> np.ndarray:
    """uint8 H x W x 3 RGB from decoded pixels: the one grey / colour / 16-bit rule, for ROS
    images (``to_rgb8``) and image files (``io.read_image_rgb``) alike.

    Grey is replicated to three channels and alpha is dropped. 16-bit pixels keep their high
    byte (``>> 8``) rather than being stretched by their maximum, so that brightness does not
    jump from frame to frame, which would break photometric losses between consecutive frames.

    Args:
        image: uint8 or uint16; H x W or H x W x 1 grey, or H x W x 3 or H x W x 4 colour.
        order: the colour channels' order, "rgb" or "bgr" (OpenCV's).

    Raises:
        ValueError: for another element type or channel count.
    """
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ValueError(f"unsupported pixel type {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return np.repeat(image[:, :, np.newaxis], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"unsupported channel count {image.shape[2] if image.ndim == 3 else 0}")
    if order == "rgb":
        return np.ascontiguousarray(image[:, :, :3])
    return np.ascontiguousarray(image[:, :, 2::-1])


def to_rgb8(image: np.ndarray, encoding: str) -> np.ndarray:
    """Convert a decoded image to uint8 H x W x 3 RGB (``rgb8_from_pixels``).

    bgr/bgra are reordered; 8UC3 is taken to be BGR, OpenCV's order.

    Args:
        image: the output of ``decode_image`` for ``encoding``.
        encoding: the image's encoding; 32FC1 is rejected as it holds depth or disparity.

    Returns:
        uint8 H x W x 3 RGB array.
    """
    layout = _layout(encoding)
    if layout.dtype == np.float32:
        raise ValueError(f"{encoding} holds depth or disparity, not an image to show as RGB")
    _check_shape(image, encoding, layout)
    return rgb8_from_pixels(image, "rgb" if encoding.startswith("rgb") else "bgr")


def encode_image(image: np.ndarray, encoding: str) -> tuple[bytes, int]:
    """Encode an array into ``sensor_msgs/Image`` data, little endian and without row padding.

    Args:
        image: array already in the encoding's channel order and element type (the inverse of
            ``decode_image``): H x W for one-channel encodings, H x W x C otherwise. To publish
            an RGB image use ``"rgb8"``.
        encoding: one of ``SUPPORTED_ENCODINGS``.

    Returns:
        ``(data, step)``: the pixel buffer and the row length in bytes; set ``is_bigendian``
        to 0 in the message.
    """
    layout = _layout(encoding)
    _check_shape(image, encoding, layout)
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image has zero size: shape {image.shape}")
    data = np.ascontiguousarray(image, dtype=layout.dtype.newbyteorder("<")).tobytes()
    return data, image.shape[1] * layout.bytes_per_pixel
