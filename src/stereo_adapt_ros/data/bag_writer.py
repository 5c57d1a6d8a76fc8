"""Write a stereo sequence as a rosbag2 (.mcap or sqlite3), with the pure-Python ``rosbags``.

Topics, under ``namespace``: ``left/image_rect`` and ``right/image_rect`` (rgb8),
``left/camera_info`` and ``right/camera_info`` (rectified, ROS convention right
``P[3] = -fx * baseline``), and, where the samples have it, ``ground_truth/disparity``
(stereo_msgs/DisparityImage, invalid pixels -1). These are the topics the node subscribes to,
so the bag replays straight into it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from .image_encoding import encode_image
from .sample import StereoSample
from .stereo_camera import StereoCamera

STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}


def write_stereo_bag(path: str | Path, samples: Iterable[StereoSample], camera: StereoCamera,
                     storage: str = "mcap", namespace: str = "/stereo",
                     frame_id: str = "stereo_left_optical", rate_hz: float = 10.0) -> Path:
    """Write ``samples`` (RGB uint8 pairs) as a bag folder at ``path`` (must not exist).

    Stamps are the samples' ``stamp`` (seconds) where set, else frame index / ``rate_hz``.
    Returns the bag folder.
    """
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {sorted(STORAGES)}, got {storage!r}")
    path = Path(path)
    if path.exists():
        raise ValueError(f"{path} exists already; rosbag2 writes a new folder")
    typestore = get_typestore(Stores.ROS2_KILTED)
    types = typestore.types
    Header, Time = types["std_msgs/msg/Header"], types["builtin_interfaces/msg/Time"]
    Image, CameraInfo = types["sensor_msgs/msg/Image"], types["sensor_msgs/msg/CameraInfo"]
    Roi = types["sensor_msgs/msg/RegionOfInterest"]
    Disparity = types["stereo_msgs/msg/DisparityImage"]
    prefix = namespace.rstrip("/") + "/"
    p_left, p_right = camera.projections()

    def header(ns: int) -> Any:
        return Header(stamp=Time(sec=ns // 10**9, nanosec=ns % 10**9), frame_id=frame_id)

    def image(ns: int, array: np.ndarray, encoding: str) -> Any:
        data, step = encode_image(array, encoding)
        return Image(header=header(ns), height=array.shape[0], width=array.shape[1],
                     encoding=encoding, is_bigendian=0, step=step,
                     data=np.frombuffer(data, np.uint8))

    def info(ns: int, p: list[float], height: int, width: int) -> Any:
        k = np.array([p[0], 0, p[2], 0, p[5], p[6], 0, 0, 1], dtype=np.float64)
        return CameraInfo(header=header(ns), height=height, width=width,
                          distortion_model="plumb_bob", d=np.zeros(5), k=k,
                          r=np.eye(3).reshape(-1), p=np.asarray(p, dtype=np.float64),
                          binning_x=0, binning_y=0, roi=Roi(0, 0, 0, 0, False))

    with Writer(path, version=9, storage_plugin=STORAGES[storage]) as writer:
        def connect(topic: str, msgtype: str):
            return writer.add_connection(prefix + topic, msgtype, typestore=typestore)

        topics = {"left": connect("left/image_rect", "sensor_msgs/msg/Image"),
                  "right": connect("right/image_rect", "sensor_msgs/msg/Image"),
                  "left_info": connect("left/camera_info", "sensor_msgs/msg/CameraInfo"),
                  "right_info": connect("right/camera_info", "sensor_msgs/msg/CameraInfo")}
        truth = None
        for index, sample in enumerate(samples):
            seconds = sample.stamp if sample.stamp is not None else index / rate_hz
            ns = int(round(seconds * 1e9))
            height, width = sample.left.shape[:2]
            messages = [(topics["left"], image(ns, sample.left, "rgb8")),
                        (topics["right"], image(ns, sample.right, "rgb8")),
                        (topics["left_info"], info(ns, p_left, height, width)),
                        (topics["right_info"], info(ns, p_right, height, width))]
            if sample.disparity is not None:
                if truth is None:
                    truth = connect("ground_truth/disparity", "stereo_msgs/msg/DisparityImage")
                stored = np.where(np.isfinite(sample.disparity), sample.disparity, -1.0)
                messages.append((truth, Disparity(
                    header=header(ns), image=image(ns, stored.astype(np.float32), "32FC1"),
                    f=camera.fx, t=camera.baseline,
                    valid_window=Roi(0, 0, height, width, False), min_disparity=0.0,
                    max_disparity=float(np.nanmax(sample.disparity)), delta_d=1 / 256)))
            for connection, message in messages:
                writer.write(connection, ns, typestore.serialize_cdr(message,
                                                                     connection.msgtype))
    return path
