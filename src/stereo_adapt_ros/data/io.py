"""Reading and writing images and disparity maps in the formats stereo benchmarks use.

Conventions (shared by the whole library):
- images are uint8 H x W x 3 arrays in RGB order;
- disparity maps are float32 H x W arrays in pixels of the image, NaN where unknown.

Every write is atomic (``files.atomic_write_bytes``): a reader never sees a half-written file.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from ..files import atomic_write_bytes
from .image_encoding import rgb8_from_pixels

PathLike = str | os.PathLike[str]

# A PFM header is three whitespace-separated lines: "PF" (3 channels) or "Pf" (1 channel),
# "width height", and a scale whose sign gives the byte order. Exactly one whitespace byte
# separates the header from the raster.
_PFM_HEADER = re.compile(rb"(PF|Pf)\s+(\d+)\s+(\d+)\s+([-+]?[0-9.]+(?:[eE][-+]?\d+)?)\s")

#: The most pixels an encoded image may declare (8192 x 8192): its header, not its data, says
#: how much memory decoding takes, and a few bytes can claim 50000 x 50000 (7.5 GB).
MAX_IMAGE_PIXELS = 1 << 26
#: Pillow's modes decoded by Pillow (grey, colour, colour and alpha, 16-bit grey): the same
#: pixels as OpenCV's decoders give, checked by the tests; OpenCV decodes the rest.
_PILLOW_MODES = ("L", "RGB", "RGBA", "I;16")
_PNG_MAGIC, _JPEG_MAGIC = b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"

# KITTI stores disparity * 256 as uint16; 0 means "no ground truth".
_KITTI_SCALE = 256.0


def _read_file_bytes(path: Path, what: str) -> bytes:
    """Read a whole file, turning a missing or unreadable path into a ValueError naming it."""
    try:
        return path.read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read {what} {str(path)!r}: {error.strerror or error}") from error


def _encode_with_opencv(image: np.ndarray, suffix: str, path: PathLike) -> bytes:
    """Encode ``image`` (OpenCV channel order) in the format named by ``suffix`` (".png")."""
    try:
        ok, encoded = cv2.imencode(suffix, image)
    except cv2.error as error:
        raise ValueError(f"cannot encode an image as {suffix!r} for {str(path)!r}") from error
    if not ok:
        raise ValueError(f"cannot encode an image as {suffix!r} for {str(path)!r}")
    return encoded.tobytes()


def decode_encoded_image(data: bytes | np.ndarray, source: str = "<bytes>") -> np.ndarray:
    """Decode a compressed image (PNG, JPEG, ... file contents) to RGB.

    Args:
        data: the encoded file contents.
        source: where the bytes came from, used in error messages.

    Returns:
        uint8 H x W x 3 RGB image, by ``image_encoding.rgb8_from_pixels`` (grey replicated,
        alpha dropped, 16-bit reduced by ``>> 8``), as ROS images are.

    Raises:
        ValueError: when the bytes are not a decodable image.
    """
    buffer = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else data
    pixels = _decode_with_pillow(buffer, source)
    order = "rgb"
    if pixels is None:
        order = "bgr"
        try:
            pixels = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED) if buffer.size else None
        except cv2.error as error:  # e.g. a header over OpenCV's own size limit
            reason = str(error).strip().splitlines()[-1]
            raise ValueError(f"cannot decode image {source!r}: {reason}") from None
    if pixels is None:
        raise ValueError(f"cannot decode image {source!r}: not a readable image format")
    try:
        return rgb8_from_pixels(pixels, order)
    except ValueError as error:
        raise ValueError(f"{error} in image {source!r}") from None


def _decode_with_pillow(buffer: np.ndarray, source: str) -> np.ndarray | None:
    """PNG and JPEG pixels (RGB order) by Pillow, None for what OpenCV decodes instead.

    Pillow because libpng and libjpeg, under OpenCV, print a line to stderr for each corrupt
    image, outside any log and its throttling; Pillow raises instead. Either way the size the
    header declares is checked before anything is decoded (ValueError over MAX_IMAGE_PIXELS).
    """
    data = buffer.tobytes()
    if not data.startswith(_PNG_MAGIC) and not data.startswith(_JPEG_MAGIC):
        return None
    try:
        image = Image.open(io.BytesIO(data), formats=("PNG", "JPEG"))
    except Image.DecompressionBombError as error:
        raise ValueError(f"image {source!r} declares more pixels than the {MAX_IMAGE_PIXELS} "
                         f"decoded: {error}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"cannot decode image {source!r}: {error}") from None
    with image:
        width, height = image.size
        if width * height > MAX_IMAGE_PIXELS:
            raise ValueError(f"image {source!r} declares {width} x {height} pixels, more than "
                             f"the {MAX_IMAGE_PIXELS} decoded")
        if image.mode not in _PILLOW_MODES:
            return None
        try:
            image.load()
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise ValueError(f"cannot decode image {source!r}: {error}") from None
        return np.asarray(image)


def read_image_rgb(path: PathLike) -> np.ndarray:
    """Read an image file as uint8 H x W x 3 RGB.

    Grey files are replicated to three channels, alpha is dropped and 16-bit files are reduced
    to their high byte.

    Raises:
        ValueError: when the file is missing, unreadable or not an image.
    """
    path = Path(path)
    return decode_encoded_image(_read_file_bytes(path, "image"), str(path))


def read_pfm(path: PathLike) -> np.ndarray:
    """Read a PFM file.

    Handles both byte orders (negative scale: little endian, positive: big endian; the scale's
    magnitude is ignored), the bottom-to-top row order of the format, and 1 or 3 channels.

    Returns:
        float32 H x W ("Pf") or H x W x 3 ("PF"), first row at the top, values as stored
        (Middlebury marks unknown disparity with inf; ``read_disparity`` turns it into NaN).

    Raises:
        ValueError: for a missing file, a malformed header or a truncated raster.
    """
    path = Path(path)
    raw = _read_file_bytes(path, "PFM file")
    header = _PFM_HEADER.match(raw)
    if header is None:
        raise ValueError(f"{str(path)!r} is not a PFM file: malformed header")
    identifier, width, height, scale = header.groups()
    channels = 3 if identifier == b"PF" else 1
    width, height, scale = int(width), int(height), float(scale)
    if scale == 0.0:
        raise ValueError(f"{str(path)!r}: PFM scale must be non-zero (its sign is the byte order)")
    count = width * height * channels
    available = (len(raw) - header.end()) // 4
    if available < count:
        raise ValueError(
            f"{str(path)!r}: PFM raster truncated, expected {count} values, found {available}"
        )
    dtype = np.dtype("<f4" if scale < 0 else ">f4")
    raster = np.frombuffer(raw, dtype=dtype, count=count, offset=header.end())
    image = raster.reshape(height, width, channels)[::-1].astype(np.float32)
    return image[:, :, 0] if channels == 1 else image


def read_kitti_disparity(path: PathLike) -> np.ndarray:
    """Read a KITTI 16-bit disparity PNG.

    Returns:
        float32 H x W disparity in pixels (stored value / 256), NaN where the file has 0.

    Raises:
        ValueError: for a missing file or a PNG that is not single-channel 16-bit.
    """
    path = Path(path)
    encoded = np.frombuffer(_read_file_bytes(path, "KITTI disparity"), dtype=np.uint8)
    stored = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED) if encoded.size else None
    if stored is None:
        raise ValueError(f"cannot decode KITTI disparity {str(path)!r}: not a readable image")
    if stored.dtype != np.uint16 or stored.ndim != 2:
        raise ValueError(
            f"{str(path)!r} is not a KITTI disparity map: expected single-channel uint16, "
            f"got {stored.dtype} with shape {stored.shape}"
        )
    disparity = stored.astype(np.float32) / np.float32(_KITTI_SCALE)
    disparity[stored == 0] = np.nan
    return disparity


def write_kitti_disparity(path: PathLike, disparity: np.ndarray) -> None:
    """Write float H x W disparity (pixels) as a KITTI 16-bit PNG (atomically).

    Stored value: round(disparity * 256) clipped to [0, 65535]; NaN, inf and negative
    disparities become 0, which KITTI reads as "no value". The quantisation error is at most
    1/512 px for disparities below 256 px.
    """
    disparity = np.asarray(disparity, dtype=np.float64)
    if disparity.ndim != 2:
        raise ValueError(f"disparity must be H x W, got shape {disparity.shape}")
    valid = np.isfinite(disparity) & (disparity > 0)
    scaled = np.where(valid, np.round(disparity * _KITTI_SCALE), 0.0)
    stored = np.clip(scaled, 0, np.iinfo(np.uint16).max).astype(np.uint16)
    atomic_write_bytes(path, _encode_with_opencv(stored, ".png", path))


def colorize_disparity(disparity: np.ndarray, max_disparity: float | None = None) -> np.ndarray:
    """Render disparity with the perceptual Turbo colormap.

    Args:
        disparity: float H x W disparity in pixels; non-finite means "no value".
        max_disparity: disparity mapped to the top of the colormap; defaults to the 99th
            percentile of the finite values, so a few outliers do not wash out the image.

    Returns:
        uint8 H x W x 3 RGB; pixels without a finite disparity are black.
    """
    disparity = np.asarray(disparity, dtype=np.float32)
    if disparity.ndim != 2:
        raise ValueError(f"disparity must be H x W, got shape {disparity.shape}")
    finite = np.isfinite(disparity)
    if max_disparity is None:
        max_disparity = float(np.percentile(disparity[finite], 99)) if finite.any() else 1.0
    max_disparity = max(max_disparity, np.finfo(np.float32).eps)
    normalised = np.clip(np.where(finite, disparity, 0.0) / max_disparity, 0.0, 1.0)
    levels = np.round(normalised * 255.0).astype(np.uint8)
    colour = cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_TURBO), cv2.COLOR_BGR2RGB)
    colour[~finite] = 0
    return colour


def write_image_rgb(path: PathLike, image: np.ndarray) -> None:
    """Write an RGB uint8 H x W x 3 image (format from the suffix, e.g. .png), atomically."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected uint8 H x W x 3 RGB, got {image.dtype} {image.shape}")
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    atomic_write_bytes(path, _encode_with_opencv(bgr, Path(path).suffix.lower(), path))


def write_color_disparity(
    path: PathLike, disparity: np.ndarray, max_disparity: float | None = None
) -> None:
    """Write ``colorize_disparity(disparity, max_disparity)`` as an image file (atomically).

    The format follows the suffix of ``path`` (e.g. .png, .jpg).
    """
    colour = colorize_disparity(disparity, max_disparity)
    bgr = cv2.cvtColor(colour, cv2.COLOR_RGB2BGR)
    encoded = _encode_with_opencv(bgr, Path(path).suffix.lower(), path)
    atomic_write_bytes(path, encoded)


def _as_disparity(values: np.ndarray, path: Path) -> np.ndarray:
    """Check that ``values`` is H x W and convert it to float32 with NaN for non-finite."""
    if values.ndim != 2:
        raise ValueError(f"{str(path)!r}: disparity must be H x W, got shape {values.shape}")
    disparity = values.astype(np.float32)
    disparity[~np.isfinite(disparity)] = np.nan
    return disparity


def read_disparity(path: PathLike) -> np.ndarray:
    """Read a ground-truth disparity map, choosing the format by file extension.

    Supported: ``.pfm`` (Middlebury, inf becomes NaN), ``.png`` (KITTI 16-bit, 0 becomes
    NaN) and ``.npy`` (a saved float array, non-finite becomes NaN).

    Returns:
        float32 H x W disparity in pixels, NaN where unknown.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".pfm":
        return _as_disparity(read_pfm(path), path)
    if suffix == ".png":
        return read_kitti_disparity(path)
    if suffix == ".npy":
        try:
            values = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise ValueError(f"cannot read disparity {str(path)!r}: {error}") from error
        return _as_disparity(values, path)
    raise ValueError(
        f"unsupported disparity file {str(path)!r}: expected .pfm, .png (KITTI 16-bit) or .npy"
    )
