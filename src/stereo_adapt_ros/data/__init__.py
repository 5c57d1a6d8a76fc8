"""Stereo data: the sample type, file formats, ROS image layouts, rosbags and dataset readers."""

from .bag import RosbagStereo
from .datasets import (
    CsvPairs,
    KittiRawDrive,
    KittiStereo,
    MiddleburyScenes,
    motorcycle_pan,
    open_dataset,
)
from .image_encoding import SUPPORTED_ENCODINGS, decode_image, encode_image, to_rgb8
from .io import (
    colorize_disparity,
    read_disparity,
    read_image_rgb,
    read_kitti_disparity,
    read_pfm,
    write_color_disparity,
    write_kitti_disparity,
)
from .sample import StereoSample

__all__ = [
    "SUPPORTED_ENCODINGS",
    "CsvPairs",
    "KittiRawDrive",
    "KittiStereo",
    "MiddleburyScenes",
    "RosbagStereo",
    "StereoSample",
    "colorize_disparity",
    "decode_image",
    "encode_image",
    "motorcycle_pan",
    "open_dataset",
    "read_disparity",
    "read_image_rgb",
    "read_kitti_disparity",
    "read_pfm",
    "to_rgb8",
    "write_color_disparity",
    "write_kitti_disparity",
]
