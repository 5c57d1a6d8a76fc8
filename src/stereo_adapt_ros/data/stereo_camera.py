"""Rectified stereo calibration, and depth and 3-D points from disparity.

The calibration comes from the two rectified projection matrices of a stereo camera (ROS
``CameraInfo.p``, row-major 3 x 4), with the ROS convention that the right camera's
``P[3] = -fx * baseline``; also read from Middlebury ``calib.txt`` files (and from a bag's
camera_info topics: ``bag.read_bag_calibration``). No ROS import: the node and the replay tool
share it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class StereoCamera:
    """A rectified stereo pair's intrinsics, for the left (reference) image.

    fx, fy: focal lengths in pixels; cx, cy: the left principal point in pixels.
    baseline: distance between the optical centres in metres (> 0 when the right camera is to
        the right of the left one).
    doffs: ``cx_right - cx_left`` in pixels (0 for most rectifications; Middlebury's doffs),
        so that depth is ``fx * baseline / (disparity + doffs)``.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    baseline: float
    doffs: float = 0.0

    @classmethod
    def from_projections(cls, p_left: Sequence[float], p_right: Sequence[float]) -> StereoCamera:
        """Build from the left and right rectified 3 x 4 projection matrices (12 values each).

        Raises ValueError saying what is wrong: all zeros (an uncalibrated camera), non-finite
        values, a non-positive focal length, or no baseline (right ``P[3]`` is 0).
        """
        left = np.asarray(p_left, dtype=np.float64).reshape(-1)
        right = np.asarray(p_right, dtype=np.float64).reshape(-1)
        for side, p in (("left", left), ("right", right)):
            if p.size != 12:
                raise ValueError(f"{side} projection matrix must have 12 values, got {p.size}")
            if not np.isfinite(p).all():
                raise ValueError(f"{side} projection matrix P has non-finite values")
            if not p.any():
                raise ValueError(f"{side} projection matrix P is all zeros (camera not calibrated)")
            if p[0] <= 0 or p[5] <= 0:
                raise ValueError(f"{side} projection matrix P has focal lengths fx={p[0]}, "
                                 f"fy={p[5]}; both must be > 0")
        if right[3] == 0:
            raise ValueError("right projection matrix P[3] is 0, so the baseline is unknown "
                             "(ROS convention: P[3] = -fx * baseline)")
        return cls(fx=float(right[0]), fy=float(right[5]), cx=float(left[2]), cy=float(left[6]),
                   baseline=float(-right[3] / right[0]), doffs=float(right[2] - left[2]))

    def projections(self) -> tuple[list[float], list[float]]:
        """The left and right 3 x 4 projection matrices, row-major (the inverse of
        ``from_projections``)."""
        left = [self.fx, 0.0, self.cx, 0.0, 0.0, self.fy, self.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
        right = list(left)
        right[2] = self.cx + self.doffs
        right[3] = -self.fx * self.baseline
        return left, right

    def scaled(self, factor: float) -> StereoCamera:
        """The calibration of the images resized by ``factor`` (baseline unchanged)."""
        return StereoCamera(self.fx * factor, self.fy * factor, self.cx * factor,
                            self.cy * factor, self.baseline, self.doffs * factor)

    def depth(self, disparity: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """Depth along the optical axis (REP-118), metres, float32 H x W, NaN where invalid.

        disparity: float H x W in pixels of the left image. valid: optional bool H x W mask;
            pixels with ``disparity + doffs <= 0`` are invalid as well.
        """
        shifted = np.asarray(disparity, dtype=np.float32) + np.float32(self.doffs)
        ok = np.isfinite(shifted) & (shifted > 0)
        if valid is not None:
            ok &= valid
        depth = np.full(shifted.shape, np.nan, dtype=np.float32)
        depth[ok] = np.float32(self.fx * abs(self.baseline)) / shifted[ok]
        return depth

    def points(self, disparity: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """3-D points in the left optical frame (x right, y down, z forward), metres,
        float32 H x W x 3, NaN where invalid (see ``depth``)."""
        z = self.depth(disparity, valid)
        rows, columns = np.indices(z.shape, dtype=np.float32)
        x = (columns - np.float32(self.cx)) * z / np.float32(self.fx)
        y = (rows - np.float32(self.cy)) * z / np.float32(self.fy)
        return np.stack((x, y, z), axis=-1)


#: The rotation of a camera already rectified (CameraInfo ``r``, row-major 3 x 3).
IDENTITY_ROTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class CameraCalibration:
    """One camera's calibration as a ``sensor_msgs/CameraInfo`` holds it (REP-104), apart from
    the header and the image size: what a replay publishes beside each view.

    distortion_model, d: the raw camera's lens distortion (``plumb_bob``: k1 k2 t1 t2 k3).
    k: the raw camera's intrinsics, row-major 3 x 3, pixels.
    r: the rectification rotation, row-major 3 x 3.
    p: the rectified projection, row-major 3 x 4 (right camera ``P[3] = -fx * baseline``).
    binning_x, binning_y: the camera's binning (0 or 1: none).
    roi: the region of interest: x_offset, y_offset, height, width, do_rectify (all 0 and
        False: the full image).
    """

    k: tuple[float, ...]
    p: tuple[float, ...]
    d: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)
    distortion_model: str = "plumb_bob"
    r: tuple[float, ...] = IDENTITY_ROTATION
    binning_x: int = 0
    binning_y: int = 0
    roi: tuple[int, int, int, int, bool] = (0, 0, 0, 0, False)


def rectified_calibrations(camera: StereoCamera) -> tuple[CameraCalibration, CameraCalibration]:
    """The left and right calibrations of a pair known only as rectified (``camera``): each K
    taken from its P, no distortion, no rotation."""
    calibrations = []
    for p in camera.projections():
        k = (p[0], 0.0, p[2], 0.0, p[5], p[6], 0.0, 0.0, 1.0)
        calibrations.append(CameraCalibration(k=k, p=tuple(p)))
    return calibrations[0], calibrations[1]


def motorcycle_camera(width: int, height: int, scale: float = 1.0) -> StereoCamera:
    """Calibration of the embedded Motorcycle pan frames (scikit-image's Middlebury 2014 pair,
    focal length 994.978 px, baseline 193.001 mm, doffs 31.086 px).

    The pan's window moves, so the principal point is put at the frame centre: depth is exact,
    x and y are shifted by at most half the travel.
    """
    if not (width > 0 and height > 0 and scale > 0 and math.isfinite(scale)):
        raise ValueError(f"bad frame size {width} x {height} or scale {scale}")
    return StereoCamera(fx=994.978 * scale, fy=994.978 * scale, cx=(width - 1) / 2,
                        cy=(height - 1) / 2, baseline=0.193001, doffs=31.086 * scale)


def read_middlebury_calibration(path: str | os.PathLike[str]) -> StereoCamera:
    """The calibration in a Middlebury 2014 ``calib.txt`` (``cam0=[f 0 cx; 0 f cy; 0 0 1]``,
    ``cam1=[...]``, ``doffs``, ``baseline`` in millimetres)."""
    path = Path(path)
    fields = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        fields[key.strip()] = value.strip()
    try:
        cam0 = [float(v) for v in fields["cam0"].strip("[]").replace(";", " ").split()]
        cam1 = [float(v) for v in fields["cam1"].strip("[]").replace(";", " ").split()]
        baseline_mm = float(fields["baseline"])
    except (KeyError, ValueError) as error:
        raise ValueError(f"{str(path)!r} is not a Middlebury calib.txt: {error}") from None
    if len(cam0) != 9 or len(cam1) != 9:
        raise ValueError(f"{str(path)!r}: cam0 and cam1 must be 3 x 3 matrices")
    return StereoCamera(fx=cam0[0], fy=cam0[4], cx=cam0[2], cy=cam0[5],
                        baseline=baseline_mm / 1000.0, doffs=cam1[2] - cam0[2])
