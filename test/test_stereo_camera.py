"""Stereo calibration read from Middlebury calib.txt files and from a bag's camera_info."""

import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from stereo_adapt_ros.data.bag import read_bag_calibration
from stereo_adapt_ros.data.stereo_camera import (StereoCamera, motorcycle_camera,
                                                 read_middlebury_calibration)

# Middlebury 2014 Motorcycle's calib.txt, as published.
CALIB = """cam0=[3979.911 0 1244.772; 0 3979.911 1019.507; 0 0 1]
cam1=[3979.911 0 1369.115; 0 3979.911 1019.507; 0 0 1]
doffs=124.343
baseline=193.001
width=2964
height=1988
ndisp=270
"""


def test_middlebury_calib_txt(tmp_path):
    (tmp_path / "calib.txt").write_text(CALIB)
    camera = read_middlebury_calibration(tmp_path / "calib.txt")
    assert camera.fx == camera.fy == 3979.911 and camera.baseline == pytest.approx(0.193001)
    assert (camera.cx, camera.cy) == (1244.772, 1019.507)
    assert camera.doffs == pytest.approx(124.343)
    # Middlebury's depth formula: Z = baseline * f / (d + doffs).
    assert camera.depth(np.array([[100.0]]))[0, 0] == pytest.approx(
        0.193001 * 3979.911 / 224.343, rel=1e-6)
    # scikit-image's quarter-size copy of the same pair.
    quarter = motorcycle_camera(741, 500)
    assert quarter.fx == pytest.approx(camera.fx / 4, rel=1e-6)
    assert quarter.doffs == pytest.approx(camera.doffs / 4, rel=1e-3)
    (tmp_path / "bad.txt").write_text("cam0=[1 2]\n")
    with pytest.raises(ValueError, match="Middlebury"):
        read_middlebury_calibration(tmp_path / "bad.txt")


def write_info_bag(path, with_right=True):
    typestore = get_typestore(Stores.ROS2_KILTED)
    CameraInfo = typestore.types["sensor_msgs/msg/CameraInfo"]
    Header, Time = typestore.types["std_msgs/msg/Header"], typestore.types[
        "builtin_interfaces/msg/Time"]
    Roi = typestore.types["sensor_msgs/msg/RegionOfInterest"]
    camera = StereoCamera(fx=721.5, fy=721.5, cx=609.6, cy=172.9, baseline=0.54)
    sides = dict(zip(("left", "right"), camera.projections()))
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        for side, p in sides.items():
            if side == "right" and not with_right:
                continue
            connection = writer.add_connection(f"/kitti/{side}/camera_info",
                                               "sensor_msgs/msg/CameraInfo",
                                               typestore=typestore)
            message = CameraInfo(
                header=Header(stamp=Time(sec=1, nanosec=0), frame_id="cam"), height=375,
                width=1242, distortion_model="plumb_bob", d=np.zeros(5), k=np.zeros(9),
                r=np.eye(3).ravel(), p=np.array(p, dtype=np.float64), binning_x=0,
                binning_y=0, roi=Roi(0, 0, 0, 0, False))
            writer.write(connection, 10**9,
                         typestore.serialize_cdr(message, "sensor_msgs/msg/CameraInfo"))
    return camera


def test_bag_camera_info_gives_the_calibration(tmp_path):
    camera = write_info_bag(tmp_path / "both")
    assert read_bag_calibration(tmp_path / "both") == pytest.approx(camera)
    write_info_bag(tmp_path / "left_only", with_right=False)
    assert read_bag_calibration(tmp_path / "left_only") is None
