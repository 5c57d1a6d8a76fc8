"""Conversion between ROS messages and the arrays the library works with.

Images go through cv_bridge where a ROS install provides it (every ROS 2 install does), as
message_filters is used for sync, and through the library's own byte layouts
(``data.image_encoding``, which the bag readers share) where only the PyPI wheels exist: PyPI's
cv-bridge is a stale ROS 1 package (broken with numpy 2, 16UC1 always wrong) that is never
depended on. A cv_bridge is used only if it converts a set of probe images exactly as the
built-in conversion does, and, for reading, only for messages it reads right: cv_bridge
locates rows at multiples of the pixel size and byte-swaps data of the other byte order with an
API that numpy 2 removed, so rows padded by a partial pixel and images of the other byte order
use the built-in conversion. Both give identical arrays (the tests check it where both exist).
"""

from __future__ import annotations

import functools
import sys
from typing import Any

import numpy as np
from sensor_msgs.msg import (CameraInfo, CompressedImage, Image, PointCloud2, PointField,
                             RegionOfInterest)
from std_msgs.msg import Header
from stereo_msgs.msg import DisparityImage

from ..data.image_encoding import (bytes_per_pixel, check_image_layout, decode_image,
                                   encode_image, to_rgb8)
from ..data.io import decode_encoded_image
from ..data.stereo_camera import CameraCalibration, StereoCamera, rectified_calibrations

#: Encodings the node accepts as stereo input. 32FC1 is a grey intensity in [0, 1].
INPUT_ENCODINGS = ("mono8", "mono16", "bgr8", "rgb8", "bgra8", "rgba8", "8UC1", "8UC3",
                   "16UC1", "32FC1")

#: The disparity step reported in DisparityImage.delta_d. MADNet regresses a continuous
#: disparity; 1/16 px is the resolution stereo_image_proc reports, which consumers expect.
DELTA_D = 1.0 / 16.0


#: Encodings and values that a cv_bridge must convert exactly as the built-in conversion does
#: to be used (covering the 16UC1 and numpy 2 failures of PyPI's cv-bridge).
_PROBES = {"rgb8": (2, 3, 3), "bgr8": (2, 3, 3), "bgra8": (2, 3, 4), "mono8": (2, 3),
           "mono16": (2, 3), "16UC1": (2, 3), "32FC1": (2, 3), "8UC3": (2, 3, 3)}


def _probe(encoding: str, shape: tuple[int, ...]) -> np.ndarray:
    values = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape)
    if encoding == "32FC1":
        return (values / 7.0 - 0.25).astype(np.float32)
    if encoding in ("mono16", "16UC1"):
        return (values * 4099 + 258).astype(np.uint16)  # both bytes differ
    return (values * 37 % 256).astype(np.uint8)


def _agrees_with_builtin(bridge: Any) -> bool:
    for encoding, shape in _PROBES.items():
        image = _probe(encoding, shape)
        data, step = encode_image(image, encoding)
        built = Image(height=shape[0], width=shape[1], encoding=encoding, is_bigendian=0,
                      step=step, data=data)
        read = np.asarray(bridge.imgmsg_to_cv2(built, "passthrough"))
        written = bridge.cv2_to_imgmsg(image, encoding)
        if (read.shape != image.shape or read.dtype != image.dtype
                or not np.array_equal(read, image) or bytes(written.data) != data
                or written.step != step or bool(written.is_bigendian)):
            return False
    return True


@functools.cache
def cv_bridge() -> Any | None:
    """A ``cv_bridge.CvBridge`` where one is installed and converts like the built-in
    conversion, else None (checked once)."""
    try:
        from cv_bridge import CvBridge
        bridge = CvBridge()
        # Any failure, from the import on, means a cv_bridge that does not work here (e.g.
        # PyPI's ROS 1 package): the built-in conversion is used instead.
        return bridge if _agrees_with_builtin(bridge) else None
    except Exception:
        return None


def image_conversion() -> str:
    """Which conversion images go through: "cv_bridge" or "built-in"."""
    return "cv_bridge" if cv_bridge() is not None else "built-in"


def _bridge_reads(message: Image) -> bool:
    """Whether cv_bridge reads ``message`` right (see the module docstring): rows at whole
    pixels, and the machine's byte order (cv_bridge byte-swaps any other, even 8-bit data)."""
    return (message.step % bytes_per_pixel(message.encoding) == 0
            and bool(message.is_bigendian) == (sys.byteorder == "big"))


def array_from_msg(message: Image) -> np.ndarray:
    """The pixels of a sensor_msgs/Image in its encoding's layout and native byte order:
    H x W for one channel (uint8, uint16 or float32), H x W x C uint8 otherwise.

    Raises ValueError with the reason for an unsupported encoding, a zero size, a step
    smaller than a row or a buffer shorter than ``height * step``.
    """
    check_image_layout(message.height, message.width, message.encoding, message.step,
                       len(message.data))
    bridge = cv_bridge()
    if bridge is not None and _bridge_reads(message):
        return np.ascontiguousarray(bridge.imgmsg_to_cv2(message, "passthrough"))
    return decode_image(message.data, message.height, message.width, message.encoding,
                        message.step, message.is_bigendian)


def image_from_msg(message: Image) -> np.ndarray:
    """A stereo input image: uint8 H x W x 3 RGB, or float32 H x W for 32FC1.

    Raises ValueError with the reason for an unsupported encoding, a wrong step or a truncated
    buffer (and, for 32FC1, non-finite values or values outside [0, 1]).
    """
    if message.encoding not in INPUT_ENCODINGS:
        raise ValueError(f"unsupported encoding {message.encoding!r}; supported: "
                         f"{', '.join(INPUT_ENCODINGS)}")
    image = array_from_msg(message)
    if message.encoding != "32FC1":
        return to_rgb8(image, message.encoding)
    if not np.isfinite(image).all():
        raise ValueError(f"32FC1 image has {int((~np.isfinite(image)).sum())} NaN or infinite "
                         "pixels")
    if image.min() < 0 or image.max() > 1:
        raise ValueError(f"32FC1 intensity must be in [0, 1], got [{image.min():.3g}, "
                         f"{image.max():.3g}]")
    return image


def camera_from_infos(left: CameraInfo, right: CameraInfo, height: int, width: int
                      ) -> StereoCamera:
    """The rectified calibration from the two camera_info messages, checked against the image
    size. Raises ValueError with the reason (all zeros, no baseline, size mismatch)."""
    for side, info in (("left", left), ("right", right)):
        if (info.width, info.height) != (0, 0) and (info.width, info.height) != (width, height):
            raise ValueError(f"{side} camera_info is for {info.width} x {info.height} images but "
                             f"the images are {width} x {height} (width x height)")
    try:
        return StereoCamera.from_projections(left.p, right.p)
    except ValueError as error:
        raise ValueError(f"camera_info: {error}") from None


def image_msg(image: np.ndarray, encoding: str, header: Header) -> Image:
    """A sensor_msgs/Image of ``image`` (already in ``encoding``'s layout) with ``header``:
    little endian, rows without padding."""
    bridge = cv_bridge()
    if bridge is not None:
        return bridge.cv2_to_imgmsg(np.ascontiguousarray(image), encoding, header=header)
    data, step = encode_image(image, encoding)
    return Image(header=header, height=image.shape[0], width=image.shape[1], encoding=encoding,
                 is_bigendian=0, step=step, data=data)


def valid_window(valid: np.ndarray) -> tuple[int, int, int, int]:
    """(x_offset, y_offset, width, height) of the smallest rectangle holding every valid pixel;
    all zeros when none is valid."""
    rows = np.flatnonzero(valid.any(axis=1))
    columns = np.flatnonzero(valid.any(axis=0))
    if rows.size == 0:
        return 0, 0, 0, 0
    return (int(columns[0]), int(rows[0]), int(columns[-1] - columns[0] + 1),
            int(rows[-1] - rows[0] + 1))


def disparity_bounds(camera: StereoCamera, max_disparity: float) -> tuple[float, float]:
    """(min_disparity, max_disparity) of the published values (see ``disparity_msg``)."""
    return max(float(camera.doffs), 0.0), float(max_disparity) + float(camera.doffs)


def valid_disparity(disparity: np.ndarray, camera: StereoCamera, max_disparity: float
                    ) -> np.ndarray:
    """Where a disparity ``x_l - x_r`` (H x W, pixels) is published as valid: finite and,
    offset by ``camera.doffs``, within ``disparity_bounds``."""
    lowest, highest = disparity_bounds(camera, max_disparity)
    published = np.asarray(disparity, dtype=np.float32) + np.float32(camera.doffs)
    with np.errstate(invalid="ignore"):
        return np.isfinite(published) & (published >= lowest) & (published <= highest)


def disparity_msg(disparity: np.ndarray, valid: np.ndarray, camera: StereoCamera,
                  header: Header, max_disparity: float) -> DisparityImage:
    """stereo_msgs/DisparityImage (32FC1, pixels of the published image) of a disparity
    ``x_l - x_r`` (what the network predicts), H x W, with the ``valid`` mask.

    As stereo_image_proc publishes it, the principal point offset is taken out: the values are
    ``x_l - x_r - (cx_l - cx_r) = disparity + camera.doffs``, so that ``Z = f * t / d`` holds
    for every published value ``d`` (the depth and points2 the node publishes agree). Valid
    values lie in [min_disparity, max_disparity] (``disparity_bounds``): ``max(doffs, 0)``, the
    network's smallest disparity (0) or the point at infinity, to ``max_disparity + doffs``.
    Invalid pixels (not ``valid`` or outside the bounds) are set to ``min_disparity - 1``, below
    it, as stereo_image_proc marks them; ``valid_window`` bounds the valid pixels; f and t come
    from ``camera``.
    """
    lowest, highest = disparity_bounds(camera, max_disparity)
    valid = valid & valid_disparity(disparity, camera, max_disparity)
    published = np.asarray(disparity, dtype=np.float32) + np.float32(camera.doffs)
    values = np.where(valid, published, np.float32(lowest - 1.0)).astype(np.float32)
    message = DisparityImage(header=header, image=image_msg(values, "32FC1", header),
                             f=float(camera.fx), t=float(camera.baseline),
                             min_disparity=lowest, max_disparity=highest, delta_d=DELTA_D)
    x, y, w, h = valid_window(valid)
    message.valid_window.x_offset, message.valid_window.y_offset = x, y
    message.valid_window.width, message.valid_window.height = w, h
    return message


_POINT_FIELDS = [PointField(name=name, offset=4 * i, datatype=PointField.FLOAT32, count=1)
                 for i, name in enumerate(("x", "y", "z", "rgb"))]


def points_msg(points: np.ndarray, rgb: np.ndarray, header: Header) -> PointCloud2:
    """An organised sensor_msgs/PointCloud2 (x, y, z, rgb as rviz reads it) from H x W x 3
    points in metres (NaN invalid) and their uint8 H x W x 3 RGB colours."""
    height, width = points.shape[:2]
    packed = ((rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8)
              | rgb[..., 2].astype(np.uint32))
    cloud = np.empty((height, width, 4), dtype="<f4")
    cloud[..., :3] = points
    cloud[..., 3] = packed.view(np.float32)
    return PointCloud2(header=header, height=height, width=width, fields=_POINT_FIELDS,
                       is_bigendian=False, point_step=16, row_step=16 * width,
                       data=cloud.tobytes(), is_dense=False)


def camera_info_msgs(camera: StereoCamera, height: int, width: int, header: Header
                     ) -> tuple[CameraInfo, CameraInfo]:
    """Left and right camera_info of a pair known only as rectified (for replaying datasets):
    ``rectified_calibrations``."""
    left, right = rectified_calibrations(camera)
    return (camera_info_msg(left, height, width, header),
            camera_info_msg(right, height, width, header))


def camera_info_msg(calibration: CameraCalibration, height: int, width: int, header: Header
                    ) -> CameraInfo:
    """The camera_info of an image of ``height`` x ``width`` with ``header``: every other
    field from ``calibration``."""
    x_offset, y_offset, roi_height, roi_width, do_rectify = calibration.roi
    return CameraInfo(header=header, height=height, width=width,
                      distortion_model=calibration.distortion_model, d=list(calibration.d),
                      k=list(calibration.k), r=list(calibration.r), p=list(calibration.p),
                      binning_x=calibration.binning_x, binning_y=calibration.binning_y,
                      roi=RegionOfInterest(x_offset=x_offset, y_offset=y_offset,
                                           height=roi_height, width=roi_width,
                                           do_rectify=do_rectify))


def camera_info_beside(left: CameraInfo, header: Header, height: int, width: int
                       ) -> CameraInfo:
    """The camera_info published beside an output image of ``height`` x ``width`` with
    ``header`` (depth_image_proc, rtabmap and nvblox look for ``<image>/camera_info``): the
    left camera's calibration as it is, since the outputs are in pixels of the left input
    image (the network's ``input_scale`` is undone before they are published), with the
    image's header and size (a left camera_info of size 0 x 0, unspecified, takes it)."""
    return CameraInfo(header=header, height=height, width=width,
                      distortion_model=left.distortion_model, d=list(left.d), k=left.k,
                      r=left.r, p=left.p, binning_x=left.binning_x,
                      binning_y=left.binning_y, roi=left.roi)


def image_from_compressed_msg(message: CompressedImage) -> np.ndarray:
    """A stereo input image from a sensor_msgs/CompressedImage (compressed_image_transport's
    PNG or JPEG, whatever its ``format`` says the original encoding was): uint8 H x W x 3 RGB.

    Raises ValueError with the reason when the data is not a decodable image.
    """
    data = np.frombuffer(bytes(message.data), dtype=np.uint8)
    return decode_encoded_image(data, f"CompressedImage ({message.format or 'no format'})")
