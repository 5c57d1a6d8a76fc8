"""Message conversion and stereo geometry against hand-made messages and hand-computed values."""

import struct

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from stereo_adapt_ros.data.bag import decode_disparity_image
from stereo_adapt_ros.data.image_encoding import decode_image, encode_image
from stereo_adapt_ros.data.stereo_camera import StereoCamera
from stereo_adapt_ros.ros import conversion
from stereo_adapt_ros.ros.conversion import (camera_from_infos, camera_info_msgs, disparity_msg,
                                             image_from_msg, points_msg, valid_disparity,
                                             valid_window)


def test_bgr8_with_row_padding_becomes_rgb():
    data = bytes([1, 2, 3, 4, 5, 6, 0, 0]) * 2
    message = Image(height=2, width=2, encoding="bgr8", step=8, data=data)
    rgb = image_from_msg(message)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [3, 2, 1] and rgb[1, 1].tolist() == [6, 5, 4]


def test_big_endian_mono16_keeps_the_high_byte():
    data = struct.pack(">2H", 0x1234, 0xFF00)
    rgb = image_from_msg(Image(height=1, width=2, encoding="mono16", step=4, is_bigendian=1,
                               data=data))
    assert rgb[0, :, 0].tolist() == [0x12, 0xFF] and (rgb[..., 0] == rgb[..., 2]).all()


def test_32fc1_intensity_must_be_finite_and_in_range():
    good = np.array([[0.0, 0.5]], dtype="<f4")
    image = image_from_msg(Image(height=1, width=2, encoding="32FC1", step=8,
                                 data=good.tobytes()))
    assert image.dtype == np.float32 and image.tolist() == [[0.0, 0.5]]
    with pytest.raises(ValueError, match="NaN"):
        image_from_msg(Image(height=1, width=2, encoding="32FC1", step=8,
                             data=np.array([[np.nan, 0]], "<f4").tobytes()))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        image_from_msg(Image(height=1, width=2, encoding="32FC1", step=8,
                             data=np.array([[2, 0]], "<f4").tobytes()))


@pytest.mark.parametrize("encoding, step, size, reason", [
    ("yuv422", 4, 4, "unsupported encoding"),
    ("rgb8", 5, 12, "smaller than one row"),
    ("rgb8", 6, 11, "too short"),
])
def test_bad_messages_raise_with_the_reason(encoding, step, size, reason):
    with pytest.raises(ValueError, match=reason):
        image_from_msg(Image(height=2, width=2, encoding=encoding, step=step,
                             data=bytes(size)))


def test_camera_from_infos_reads_f_baseline_and_rejects_bad_calibration():
    camera = StereoCamera(fx=500.0, fy=510.0, cx=320.0, cy=240.0, baseline=0.2, doffs=3.0)
    left, right = camera_info_msgs(camera, 480, 640, Header())
    assert right.p[3] == pytest.approx(-100.0) and right.p[2] == pytest.approx(323.0)
    assert camera_from_infos(left, right, 480, 640) == camera
    with pytest.raises(ValueError, match="all zeros"):
        camera_from_infos(CameraInfo(), right, 480, 640)
    with pytest.raises(ValueError, match="baseline"):
        camera_from_infos(left, left, 480, 640)
    with pytest.raises(ValueError, match="640 x 480"):
        camera_from_infos(left, right, 240, 320)


def test_depth_and_points_by_hand():
    camera = StereoCamera(fx=100.0, fy=100.0, cx=1.0, cy=0.0, baseline=0.5, doffs=2.0)
    disparity = np.array([[8.0, -2.0, 23.0]], dtype=np.float32)
    depth = camera.depth(disparity)
    # Z = fx * B / (d + doffs): 50 / 10 = 5; d + doffs = 0 is invalid; 50 / 25 = 2.
    assert depth[0, 0] == pytest.approx(5.0) and np.isnan(depth[0, 1])
    assert depth[0, 2] == pytest.approx(2.0)
    points = camera.points(disparity, valid=np.array([[True, True, False]]))
    assert points[0, 0].tolist() == pytest.approx([-0.05, 0.0, 5.0])
    assert np.isnan(points[0, 2]).all()


def test_disparity_message_marks_invalid_pixels_and_bounds_the_valid_window():
    disparity = np.arange(12, dtype=np.float32).reshape(3, 4)
    valid = np.zeros((3, 4), dtype=bool)
    valid[1:3, 1:3] = True
    assert valid_window(valid) == (1, 1, 2, 2)
    camera = StereoCamera(fx=700.0, fy=700.0, cx=2.0, cy=1.5, baseline=0.54)
    message = disparity_msg(disparity, valid, camera, Header(frame_id="l"), 64.0)
    values = np.frombuffer(bytes(message.image.data), "<f4").reshape(3, 4)
    assert (values[~valid] < message.min_disparity).all()
    assert values[valid].tolist() == disparity[valid].tolist()
    assert (message.f, message.t, message.max_disparity) == (700.0, pytest.approx(0.54), 64.0)
    window = message.valid_window
    assert (window.x_offset, window.y_offset, window.width, window.height) == (1, 1, 2, 2)


def test_point_cloud_layout():
    points = np.array([[[1.0, 2.0, 3.0], [np.nan] * 3]], dtype=np.float32)
    rgb = np.array([[[255, 0, 1], [0, 0, 0]]], dtype=np.uint8)
    cloud = points_msg(points, rgb, Header())
    raw = np.frombuffer(bytes(cloud.data), "<f4").reshape(1, 2, 4)
    assert raw[0, 0, :3].tolist() == [1.0, 2.0, 3.0] and np.isnan(raw[0, 1, :3]).all()
    assert raw[0, 0, 3:].view("<u4")[0] == 0xFF0001
    assert (cloud.height, cloud.width, cloud.row_step, cloud.is_dense) == (1, 2, 32, False)


def test_published_disparity_follows_stereo_image_proc_and_gives_depth_as_f_t_over_d():
    """d = x_l - x_r - (cx_l - cx_r): with the right principal point 4 px right of the left one,
    a network disparity of 6 px is published as 10, and Z = f t / 10 is the node's depth."""
    camera = StereoCamera(fx=100.0, fy=100.0, cx=10.0, cy=1.0, baseline=0.5, doffs=4.0)
    disparity = np.array([[6.0, 50.0, 51.0], [-4.0, -5.0, np.nan]], dtype=np.float32)
    valid = np.ones(disparity.shape, dtype=bool)
    message = disparity_msg(disparity, valid, camera, Header(frame_id="l"), 50.0)
    assert (message.min_disparity, message.max_disparity) == (4.0, 54.0)
    values = np.frombuffer(bytes(message.image.data), "<f4").reshape(2, 3)
    # Above max_disparity (51 px), below the network's 0 (-4, -5 px) or NaN: invalid.
    assert values[0, :2].tolist() == [10.0, 54.0]
    assert values[0, 2] < message.min_disparity and (values[1] < message.min_disparity).all()
    depth = camera.depth(disparity[:, :2])
    assert depth[0].tolist() == pytest.approx((message.f * message.t / values[0, :2]).tolist())
    assert depth[0, 0] == pytest.approx(5.0)
    # The one DisparityImage decoder (replay's and the bag reader's) gives x_l - x_r back.
    decoded = decode_disparity_image(message, camera.doffs)
    assert decoded[0, :2].tolist() == [6.0, 50.0]
    assert np.isnan(decoded[0, 2]) and np.isnan(decoded[1]).all()
    # A negative offset (right principal point left of the left one): published values start
    # at 0 (the point at infinity); below it there is no depth and the pixel is invalid.
    left_of = StereoCamera(fx=100.0, fy=100.0, cx=10.0, cy=1.0, baseline=0.5, doffs=-3.0)
    assert valid_disparity(np.array([[2.0, 3.0, 64.0, 65.0]]), left_of, 64.0).tolist() == [
        [False, True, True, False]]
    message = disparity_msg(np.array([[2.0, 4.0]], np.float32), np.ones((1, 2), bool),
                            left_of, Header(), 64.0)
    assert (message.min_disparity, message.max_disparity) == (0.0, 61.0)
    assert np.frombuffer(bytes(message.image.data), "<f4").tolist() == [-1.0, 1.0]


def _messages_both_conversions_read():
    """Real Motorcycle pixels in every input encoding, with and without row padding."""
    from skimage import data as skdata

    rgb = np.ascontiguousarray(skdata.stereo_motorcycle()[0][200:212, 300:317])
    grey = rgb.mean(axis=2)
    arrays = {"rgb8": rgb, "bgr8": rgb[..., ::-1], "8UC3": rgb[..., ::-1],
              "bgra8": np.dstack([rgb[..., ::-1], np.full(rgb.shape[:2], 255, np.uint8)]),
              "rgba8": np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)]),
              "mono8": grey.astype(np.uint8), "8UC1": grey.astype(np.uint8),
              "mono16": (grey * 257).astype(np.uint16), "16UC1": (grey * 251).astype(np.uint16),
              "32FC1": (grey / 255).astype(np.float32)}
    for encoding, array in arrays.items():
        array = np.ascontiguousarray(array)
        data, step = encode_image(array, encoding)
        yield encoding, array, Image(height=array.shape[0], width=array.shape[1],
                                     encoding=encoding, step=step, data=data)
        pixel = step // array.shape[1]
        rows = np.frombuffer(data, np.uint8).reshape(array.shape[0], step)
        padded = np.hstack([rows, np.full((array.shape[0], 2 * pixel), 9, np.uint8)])
        yield encoding, array, Image(height=array.shape[0], width=array.shape[1],
                                     encoding=encoding, step=step + 2 * pixel,
                                     data=padded.tobytes())


def test_cv_bridge_and_the_built_in_conversion_give_identical_arrays():
    """Where cv_bridge is installed (a ROS install), the node uses it; it must read and write
    exactly what the built-in conversion does (skipped where there is no cv_bridge)."""
    pytest.importorskip("cv_bridge", reason="no cv_bridge here (it comes with a ROS install)")
    bridge = conversion.cv_bridge()
    assert bridge is not None, "cv_bridge is installed but does not convert like the built-in"
    assert conversion.image_conversion() == "cv_bridge"
    for encoding, array, message in _messages_both_conversions_read():
        built_in = decode_image(message.data, message.height, message.width, encoding,
                                message.step, message.is_bigendian)
        bridged = np.asarray(bridge.imgmsg_to_cv2(message, "passthrough"))
        assert bridged.dtype == built_in.dtype and np.array_equal(bridged, built_in), encoding
        assert np.array_equal(conversion.array_from_msg(message), array), encoding
        written = conversion.image_msg(array, encoding, Header(frame_id="f"))
        data, step = encode_image(array, encoding)
        assert (bytes(written.data), written.step, written.is_bigendian) == (data, step, False)
        assert written.header.frame_id == "f" and written.encoding == encoding


def test_every_encoding_reads_back_whichever_conversion_is_used():
    """The same arrays through ``array_from_msg`` (cv_bridge or the built-in conversion), also
    big endian and with rows padded by part of a pixel (which cv_bridge cannot read)."""
    for encoding, array, message in _messages_both_conversions_read():
        assert np.array_equal(conversion.array_from_msg(message), array), encoding
    odd = Image(height=2, width=2, encoding="rgb8", step=7,
                data=bytes([1, 2, 3, 4, 5, 6, 0, 7, 8, 9, 10, 11, 12, 0]))
    assert conversion.array_from_msg(odd).tolist() == [[[1, 2, 3], [4, 5, 6]],
                                                       [[7, 8, 9], [10, 11, 12]]]
    big = Image(height=1, width=2, encoding="16UC1", step=4, is_bigendian=1,
                data=struct.pack(">2H", 0x1234, 0xABCD))
    assert conversion.array_from_msg(big).tolist() == [[0x1234, 0xABCD]]


def test_compressed_images_decode_as_compressed_image_transport_writes_them():
    from skimage import data

    from ros_harness import compressed_image_msg

    from stereo_adapt_ros.ros.conversion import image_from_compressed_msg

    rgb = data.astronaut()[:96, :160]
    png = compressed_image_msg(rgb, Header(frame_id="cam"), ".png")
    assert png.format == "rgb8; png compressed bgr8"
    np.testing.assert_array_equal(conversion.image_from_compressed_msg(png), rgb)
    jpeg = compressed_image_msg(rgb, Header(frame_id="cam"), ".jpg")
    assert jpeg.format == "rgb8; jpeg compressed bgr8" and len(jpeg.data) < len(png.data)
    decoded = image_from_compressed_msg(jpeg).astype(float)
    assert np.abs(decoded - rgb).mean() < 4  # lossy, but the same picture in the same order
    grey = compressed_image_msg(rgb[..., 1].copy(), Header(), ".png")
    assert grey.format == "mono8; png compressed mono8"
    np.testing.assert_array_equal(image_from_compressed_msg(grey), np.repeat(rgb[..., 1:2], 3, 2))
    broken = compressed_image_msg(rgb, Header(), ".png")
    broken.data = bytes(broken.data[:40])
    with pytest.raises(ValueError, match="cannot decode image"):
        image_from_compressed_msg(broken)
