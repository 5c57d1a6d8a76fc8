"""ROS image byte layouts decoded from and encoded to hand-made buffers."""

import struct

import cv2
import numpy as np
import pytest

from stereo_adapt_ros.data import SUPPORTED_ENCODINGS, decode_image, encode_image, to_rgb8
from stereo_adapt_ros.data.image_encoding import rgb8_from_pixels
from stereo_adapt_ros.data.io import read_image_rgb


def test_mono8_with_padded_step_drops_padding():
    data = bytes([1, 2, 3, 99, 99, 4, 5, 6, 99, 99])
    image = decode_image(data, height=2, width=3, encoding="mono8", step=5, is_bigendian=0)
    np.testing.assert_array_equal(image, [[1, 2, 3], [4, 5, 6]])
    assert image.dtype == np.uint8 and image.flags.c_contiguous


def test_mono16_big_and_little_endian():
    data = bytes([0x01, 0x02, 0x00, 0xFF])
    big = decode_image(data, 1, 2, "mono16", 4, is_bigendian=1)
    little = decode_image(data, 1, 2, "mono16", 4, is_bigendian=0)
    np.testing.assert_array_equal(big, [[0x0102, 0x00FF]])
    np.testing.assert_array_equal(little, [[0x0201, 0xFF00]])
    assert big.dtype == np.uint16 and big.dtype.isnative


def test_big_endian_16uc1_with_padding_from_memoryview():
    padding = b"\x00\x00"
    rows = struct.pack(">2H", 1000, 65535) + padding + struct.pack(">2H", 7, 8) + padding
    data = memoryview(rows)
    image = decode_image(data, 2, 2, "16UC1", 6, is_bigendian=True)
    np.testing.assert_array_equal(image, [[1000, 65535], [7, 8]])


def test_32fc1_both_byte_orders():
    values = (1.5, -2.25, float("nan"))
    big = decode_image(struct.pack(">3f", *values), 1, 3, "32FC1", 12, True)
    little = decode_image(struct.pack("<3f", *values), 1, 3, "32FC1", 12, False)
    for image in (big, little):
        assert image.dtype == np.float32 and image.shape == (1, 3)
        np.testing.assert_array_equal(image, [values])


def test_colour_encodings_with_padding_and_to_rgb8():
    # One row of two pixels, then two bytes of padding; channels in the encoding's order.
    row = bytes([10, 20, 30, 40, 50, 60, 0, 0])
    rgb = decode_image(row, 1, 2, "rgb8", 8, 0)
    np.testing.assert_array_equal(rgb, [[[10, 20, 30], [40, 50, 60]]])
    np.testing.assert_array_equal(to_rgb8(rgb, "rgb8"), rgb)
    bgr = decode_image(row, 1, 2, "bgr8", 8, 0)
    np.testing.assert_array_equal(to_rgb8(bgr, "bgr8"), [[[30, 20, 10], [60, 50, 40]]])
    eight_uc3 = decode_image(np.frombuffer(row, np.uint8), 1, 2, "8UC3", 8, 0)
    np.testing.assert_array_equal(to_rgb8(eight_uc3, "8UC3"), [[[30, 20, 10], [60, 50, 40]]])

    four = bytes([1, 2, 3, 255, 4, 5, 6, 128])
    bgra = decode_image(four, 1, 2, "bgra8", 8, 0)
    assert bgra.shape == (1, 2, 4)
    np.testing.assert_array_equal(to_rgb8(bgra, "bgra8"), [[[3, 2, 1], [6, 5, 4]]])
    rgba = decode_image(four, 1, 2, "rgba8", 8, 0)
    np.testing.assert_array_equal(to_rgb8(rgba, "rgba8"), [[[1, 2, 3], [4, 5, 6]]])


def test_grey_to_rgb8_replicates_and_16_bit_keeps_high_byte():
    mono8 = decode_image(bytes([0, 128, 255]), 1, 3, "8UC1", 3, 0)
    np.testing.assert_array_equal(to_rgb8(mono8, "8UC1"), [[[0] * 3, [128] * 3, [255] * 3]])
    mono16 = np.array([[0x0000, 0x80FF, 0xFFFF]], dtype=np.uint16)
    np.testing.assert_array_equal(to_rgb8(mono16, "mono16")[..., 0], [[0, 0x80, 0xFF]])
    assert to_rgb8(mono16, "mono16").dtype == np.uint8


def test_16_bit_files_and_ros_images_follow_one_rule(tmp_path):
    """A 16-bit grey or colour PNG reads as the same RGB as the ROS image of its pixels."""
    grey = np.array([[0x0000, 0x80FF, 0xFFFF], [0x0100, 0x7F00, 0x1234]], dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "grey16.png"), grey)
    np.testing.assert_array_equal(read_image_rgb(tmp_path / "grey16.png"),
                                  to_rgb8(grey, "16UC1"))
    np.testing.assert_array_equal(read_image_rgb(tmp_path / "grey16.png")[..., 1],
                                  [[0, 0x80, 0xFF], [1, 0x7F, 0x12]])
    bgr = np.stack([grey, grey // 2, grey // 3], axis=2)
    cv2.imwrite(str(tmp_path / "bgr16.png"), bgr)
    np.testing.assert_array_equal(read_image_rgb(tmp_path / "bgr16.png"),
                                  rgb8_from_pixels(bgr, "bgr"))
    np.testing.assert_array_equal(read_image_rgb(tmp_path / "bgr16.png")[..., 0], grey // 3 >> 8)
    with pytest.raises(ValueError, match="unsupported pixel type float32"):
        rgb8_from_pixels(np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="unsupported channel count 2"):
        rgb8_from_pixels(np.zeros((2, 2, 2), np.uint8))


def test_to_rgb8_rejects_float_and_wrong_shapes():
    with pytest.raises(ValueError, match="depth or disparity"):
        to_rgb8(np.zeros((2, 2), np.float32), "32FC1")
    with pytest.raises(ValueError, match="bgr8 expects"):
        to_rgb8(np.zeros((2, 2), np.uint8), "bgr8")


def test_decode_errors_are_clear():
    with pytest.raises(ValueError, match="unsupported image encoding 'yuv422'"):
        decode_image(b"\x00" * 8, 1, 4, "yuv422", 8, 0)
    with pytest.raises(ValueError, match="step 5 is smaller than one row"):
        decode_image(b"\x00" * 12, 2, 2, "rgb8", 5, 0)
    with pytest.raises(ValueError, match="expected 12 bytes .* got 11"):
        decode_image(b"\x00" * 11, 2, 2, "rgb8", 6, 0)
    with pytest.raises(ValueError, match="zero size"):
        decode_image(b"", 0, 4, "mono8", 4, 0)


@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
def test_encode_then_decode_round_trips(encoding):
    rng = np.random.default_rng(3)
    probe = decode_image(bytes(64), 2, 2, encoding, 32, 0)
    if probe.dtype == np.float32:
        image = rng.normal(size=(3, 5)).astype(np.float32)
    else:
        shape = (3, 5) + probe.shape[2:]
        image = rng.integers(0, np.iinfo(probe.dtype).max, shape, endpoint=True).astype(probe.dtype)
    data, step = encode_image(image, encoding)
    assert step * 3 == len(data)
    np.testing.assert_array_equal(decode_image(data, 3, 5, encoding, step, 0), image)


def test_encode_hand_checked_bytes():
    data, step = encode_image(np.array([[0x0102, 0xA0B0]], dtype=np.uint16), "mono16")
    assert (data, step) == (bytes([0x02, 0x01, 0xB0, 0xA0]), 4)
    data, step = encode_image(np.array([[[1, 2, 3, 4]]], dtype=np.uint8), "rgba8")
    assert (data, step) == (bytes([1, 2, 3, 4]), 4)
    data, step = encode_image(np.array([[1.0]], dtype=np.float32), "32FC1")
    assert (data, step) == (struct.pack("<f", 1.0), 4)


def test_encode_rejects_mismatched_array():
    with pytest.raises(ValueError, match="mono16 expects"):
        encode_image(np.zeros((2, 2), np.uint8), "mono16")
    with pytest.raises(ValueError, match="unsupported image encoding"):
        encode_image(np.zeros((2, 2), np.uint8), "jpeg")
