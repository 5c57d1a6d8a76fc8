"""File formats: PFM, KITTI disparity PNG, images and colourised disparity."""

import struct

import cv2
import numpy as np
import pytest
from pfm_files import write_pfm

from stereo_adapt_ros.data import (
    colorize_disparity,
    read_disparity,
    read_image_rgb,
    read_kitti_disparity,
    read_pfm,
    write_color_disparity,
    write_kitti_disparity,
)


def test_pfm_round_trip_one_and_three_channels(tmp_path):
    rng = np.random.default_rng(1)
    grey = rng.uniform(-5, 100, (4, 7)).astype(np.float32)
    grey[0, 0], grey[3, 6] = np.inf, np.nan
    colour = rng.uniform(0, 1, (3, 5, 3)).astype(np.float32)
    write_pfm(tmp_path / "grey.pfm", grey)
    write_pfm(tmp_path / "colour.pfm", colour)
    np.testing.assert_array_equal(read_pfm(tmp_path / "grey.pfm"), grey)
    np.testing.assert_array_equal(read_pfm(tmp_path / "colour.pfm"), colour)
    assert read_pfm(tmp_path / "grey.pfm").dtype == np.float32


def test_reads_hand_written_big_endian_pfm_bottom_row_first(tmp_path):
    # Positive scale means big endian; the raster starts with the bottom row.
    header = b"Pf\n3 2\n1.0\n"
    raster = struct.pack(">6f", 4.0, 5.0, 6.0, 1.0, 2.0, float("inf"))
    (tmp_path / "big.pfm").write_bytes(header + raster)
    expected = np.array([[1.0, 2.0, np.inf], [4.0, 5.0, 6.0]], dtype=np.float32)
    np.testing.assert_array_equal(read_pfm(tmp_path / "big.pfm"), expected)
    # The disparity reader turns Middlebury's inf into NaN.
    disparity = read_disparity(tmp_path / "big.pfm")
    assert np.isnan(disparity[0, 2]) and disparity[1, 0] == 4.0


def test_reads_hand_written_little_endian_colour_pfm(tmp_path):
    header = b"PF\n1 2\n-0.5\n"
    raster = struct.pack("<6f", 7.0, 8.0, 9.0, 1.0, 2.0, 3.0)
    (tmp_path / "little.pfm").write_bytes(header + raster)
    expected = np.array([[[1.0, 2.0, 3.0]], [[7.0, 8.0, 9.0]]], dtype=np.float32)
    np.testing.assert_array_equal(read_pfm(tmp_path / "little.pfm"), expected)


def test_truncated_and_malformed_pfm_raise(tmp_path):
    (tmp_path / "short.pfm").write_bytes(b"Pf\n3 2\n-1.0\n" + struct.pack("<5f", *range(5)))
    with pytest.raises(ValueError, match="expected 6 values, found 5"):
        read_pfm(tmp_path / "short.pfm")
    (tmp_path / "bad.pfm").write_bytes(b"P6\n3 2\n255\n")
    with pytest.raises(ValueError, match="malformed header"):
        read_pfm(tmp_path / "bad.pfm")


def test_kitti_png_round_trip_within_quantisation(tmp_path):
    rng = np.random.default_rng(2)
    disparity = rng.uniform(0.1, 250.0, (6, 9)).astype(np.float32)
    disparity[0, :3] = [np.nan, -4.0, 300.0]
    path = tmp_path / "disp.png"
    write_kitti_disparity(path, disparity)

    stored = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert stored.dtype == np.uint16
    assert stored[0, 0] == 0 and stored[0, 1] == 0 and stored[0, 2] == 65535

    restored = read_kitti_disparity(path)
    assert restored.dtype == np.float32 and restored.shape == disparity.shape
    assert np.isnan(restored[0, :2]).all()
    assert restored[0, 2] == pytest.approx(65535 / 256)
    error = np.abs(restored.ravel()[3:] - disparity.ravel()[3:])
    assert error.max() <= 1 / 512 + 1e-4
    np.testing.assert_array_equal(read_disparity(path), restored)


def test_npy_disparity_non_finite_becomes_nan(tmp_path):
    np.save(tmp_path / "disp.npy", np.array([[1.0, np.inf], [2.0, 3.0]]))
    disparity = read_disparity(tmp_path / "disp.npy")
    assert disparity.dtype == np.float32 and np.isnan(disparity[0, 1])


def test_colorize_shape_dtype_and_nan_is_black():
    disparity = np.linspace(0, 60, 40, dtype=np.float32).reshape(5, 8)
    disparity[2, 3] = np.nan
    colour = colorize_disparity(disparity)
    assert colour.shape == (5, 8, 3) and colour.dtype == np.uint8
    assert (colour[2, 3] == 0).all()
    finite = np.isfinite(disparity)
    assert (colour[finite].sum(axis=1) > 0).all()
    # Values beyond the maximum saturate to the colour of the maximum.
    capped = colorize_disparity(disparity, max_disparity=30.0)
    np.testing.assert_array_equal(capped[4, 7], capped[4, 6])


def test_colorize_all_nan_is_black():
    colour = colorize_disparity(np.full((2, 3), np.nan, dtype=np.float32))
    assert (colour == 0).all()


def test_writes_are_atomic_and_leave_no_temporary_files(tmp_path):
    disparity = np.full((4, 5), 12.5, dtype=np.float32)
    write_kitti_disparity(tmp_path / "b.png", disparity)
    write_color_disparity(tmp_path / "c.png", disparity)
    write_kitti_disparity(tmp_path / "b.png", disparity + 1)  # overwrite in place
    with pytest.raises(ValueError, match="cannot encode"):
        write_color_disparity(tmp_path / "d.unknown", disparity)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["b.png", "c.png"]
    assert read_kitti_disparity(tmp_path / "b.png")[0, 0] == 13.5
    assert read_image_rgb(tmp_path / "c.png").shape == (4, 5, 3)


def test_read_image_converts_to_rgb(tmp_path):
    bgr = np.zeros((2, 3, 3), dtype=np.uint8)
    bgr[..., 0] = 200  # blue in OpenCV order
    cv2.imwrite(str(tmp_path / "blue.png"), bgr)
    rgb = read_image_rgb(tmp_path / "blue.png")
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 3, 3)
    assert (rgb[..., 2] == 200).all() and (rgb[..., :2] == 0).all()

    bgra = np.dstack([bgr, np.full((2, 3), 17, np.uint8)])
    cv2.imwrite(str(tmp_path / "alpha.png"), bgra)
    np.testing.assert_array_equal(read_image_rgb(tmp_path / "alpha.png"), rgb)


def test_read_image_replicates_grey_and_scales_16_bit(tmp_path):
    grey = np.array([[0, 100, 255]], dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    rgb = read_image_rgb(tmp_path / "grey.png")
    assert rgb.shape == (1, 3, 3)
    np.testing.assert_array_equal(rgb[..., 1], grey)

    deep = np.array([[0, 256 * 100 + 255, 65535]], dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    np.testing.assert_array_equal(read_image_rgb(tmp_path / "deep.png")[..., 0], grey)


def test_missing_or_corrupt_files_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="cannot read image .*missing.png"):
        read_image_rgb(tmp_path / "missing.png")
    (tmp_path / "junk.png").write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match="not a readable image"):
        read_image_rgb(tmp_path / "junk.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ValueError, match="not a readable image"):
        read_image_rgb(tmp_path / "empty.png")
    with pytest.raises(ValueError, match="cannot read PFM"):
        read_pfm(tmp_path / "missing.pfm")
    cv2.imwrite(str(tmp_path / "eight_bit.png"), np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="uint16"):
        read_kitti_disparity(tmp_path / "eight_bit.png")
    with pytest.raises(ValueError, match="unsupported disparity file"):
        read_disparity(tmp_path / "disp.tiff")


def _png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height 8-bit RGB, with a few bytes of data."""
    import zlib

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))


def test_an_image_whose_header_claims_a_huge_size_is_refused_with_the_reason():
    """50000 x 50000 would take 7.5 GB to decode (OpenCV raises cv2.error, not ValueError)."""
    from stereo_adapt_ros.data.io import decode_encoded_image
    with pytest.raises(ValueError, match="huge.png. declares more pixels than"):
        decode_encoded_image(_png_declaring(50000, 50000), "huge.png")


def test_decoding_is_the_same_as_opencv_for_every_mode_and_corrupt_images_print_nothing(
        capfd):
    """PNG and JPEG are decoded by Pillow, other formats and modes by OpenCV: the pixels are
    OpenCV's in every case; a corrupt PNG or JPEG is a ValueError and nothing more (libpng and
    libjpeg under OpenCV print a line per image to stderr, outside any log)."""
    import io

    from PIL import Image

    from stereo_adapt_ros.data.image_encoding import rgb8_from_pixels
    from stereo_adapt_ros.data.io import decode_encoded_image
    rgb = np.random.default_rng(3).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    rgb[:12] //= 7  # some smooth-ish content for JPEG
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    encoded = {f"{name}{ext}": cv2.imencode(ext, pixels)[1].tobytes()
               for ext in (".png", ".jpg") for name, pixels in (("colour", bgr),
                                                                 ("grey", bgr[..., 0]))}
    encoded["bgra.png"] = cv2.imencode(".png", np.dstack([bgr, rgb[..., :1]]))[1].tobytes()
    encoded["grey16.png"] = cv2.imencode(".png", rgb[..., 0].astype(np.uint16) * 257)[1].tobytes()
    encoded["colour16.png"] = cv2.imencode(".png", bgr.astype(np.uint16) * 251)[1].tobytes()
    for ext in (".bmp", ".tiff"):
        encoded[f"colour{ext}"] = cv2.imencode(ext, bgr)[1].tobytes()
    for mode in ("P", "LA", "1"):
        buffer = io.BytesIO()
        Image.fromarray(rgb).convert(mode).save(buffer, "PNG")
        encoded[f"{mode}.png"] = buffer.getvalue()
    for name, data in encoded.items():
        opencv = rgb8_from_pixels(cv2.imdecode(np.frombuffer(data, np.uint8),
                                               cv2.IMREAD_UNCHANGED), "bgr")
        np.testing.assert_array_equal(decode_encoded_image(data, name), opencv, err_msg=name)
    capfd.readouterr()
    rng = np.random.default_rng(0)
    for name in ("colour.png", "colour.jpg"):
        data = encoded[name]
        corrupt = data[:60] + rng.bytes(120) + data[180:]
        with pytest.raises(ValueError, match=f"cannot decode image '{name}'"):
            decode_encoded_image(corrupt, name)
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == "", captured
