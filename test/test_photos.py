"""The photo library on real images, without network or a fetched library: scikit-image's
photographs, and a fake package (a real zip of real photographs) extracted as fetch would."""

import hashlib
import io
import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image

from stereo_adapt_ros.cli.main import main
from stereo_adapt_ros.data.datasets import OakdPairs, open_dataset
from stereo_adapt_ros.data.photo_root import ENV_ROOT, default_root
from stereo_adapt_ros.training_data import photos
from stereo_adapt_ros.training_data.photos import (
    MANIFEST,
    PhotoLibrary,
    Source,
    dep5_licence,
    extract_members,
    fetch,
    parse_dep5,
    split_of,
)

FAKE = Source(
    "fake", "pypi", "fake==1.0", members=("fake/images/*",), strip="fake/images/",
    licence="CC0-1.0", description="test photographs", skip=("*_nm.*",),
    licences={"coffee.jpg": "CC0-1.0 (Rachel Michetti)"}, extras=("fake/LICENSE",))


def encode(image: np.ndarray, suffix: str) -> bytes:
    """RGB or grey uint8 image -> file bytes (OpenCV for .jpg / .png, PIL for others)."""
    if suffix in (".jpg", ".png"):
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
        ok, data = cv2.imencode(suffix, bgr)
        assert ok
        return data.tobytes()
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=suffix.lstrip(".").upper())
    return buffer.getvalue()


def rgba_half_transparent() -> bytes:
    image = np.dstack([skimage.data.coffee()[:80, :80], np.full((80, 80), 255, np.uint8)])
    image[:, :40, 3] = 0
    buffer = io.BytesIO()
    Image.fromarray(image, "RGBA").save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def members() -> dict[str, bytes]:
    """A package's files: three real photographs (JPEG, grey PNG in a subfolder, TGA), and
    members that must not become photographs."""
    return {
        "fake/images/coffee.jpg": encode(skimage.data.coffee()[:200, :300], ".jpg"),
        "fake/images/sub/brick.png": encode(skimage.data.brick()[:128, :160], ".png"),
        "fake/images/camera.tga": encode(skimage.data.camera()[:96, :120], ".tga"),
        "fake/images/wall_nm.png": encode(skimage.data.gravel()[:128, :128], ".png"),
        "fake/images/tiny.png": encode(skimage.data.chelsea()[:32, :48], ".png"),
        "fake/images/decal.png": rgba_half_transparent(),
        "fake/images/notes.jpg": b"not an image at all",
        "fake/LICENSE": b"CC0 1.0 Universal\n",
        "other/astronaut.png": encode(skimage.data.astronaut()[:100, :100], ".png"),
    }


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


@pytest.fixture
def package(tmp_path, members) -> Path:
    return write_zip(tmp_path / "fake-1.0-py3-none-any.whl", members)


@pytest.fixture
def fake_sources(monkeypatch, package):
    """SOURCES is the fake source only, and "downloading" it hands over the zip."""
    calls = []

    def download(source, directory):
        calls.append(source.name)
        return package, "fake==1.0"

    monkeypatch.setattr(photos, "SOURCES", (FAKE,))
    monkeypatch.setattr(photos, "_download", download)
    return calls


def test_split_rule():
    assert split_of("00000000" + "f" * 56) == "heldout"
    assert split_of("0000000a" + "0" * 56) == "heldout"  # 10 % 10 == 0
    assert split_of("00000001" + "0" * 56) == "train"
    assert split_of("ffffffff" + "0" * 56) == "train"  # 4294967295 % 10 == 5


def test_builtin_library_holds_photographs_split_by_pixel_hash():
    library = PhotoLibrary.builtin()
    entries = library.entries()
    assert len(library) == len(entries) >= 10
    assert library.entries("stereo") == []
    assert {e.split for e in entries} <= {"train", "heldout"}
    left, right, _ = skimage.data.stereo_motorcycle()
    motorcycle = {hashlib.sha256(np.ascontiguousarray(view).tobytes()).hexdigest()
                  for view in (left, right)}
    for entry in entries:
        assert "motorcycle" not in entry.path and "motorcycle" not in entry.member
        assert entry.sha256 not in motorcycle
        function = next(name for name, (file, _) in photos._SKIMAGE_PHOTOS.items()
                        if entry.path == f"skimage/{file}")
        pixels = np.ascontiguousarray(getattr(skimage.data, function)())
        assert entry.sha256 == hashlib.sha256(pixels.tobytes()).hexdigest()
        assert entry.split == ("heldout" if int(entry.sha256[:8], 16) % 10 == 0 else "train")
        assert (entry.height, entry.width) == pixels.shape[:2]
    assert sorted(library.entries("train") + library.entries("heldout"),
                  key=lambda e: e.path) == sorted(entries, key=lambda e: e.path)


def test_builtin_load_is_rgb_and_honours_max_side():
    library = PhotoLibrary.builtin()
    grey = next(e for e in library.entries() if e.path == "skimage/camera.png")
    image = library.load(grey)
    assert image.dtype == np.uint8 and image.shape == (512, 512, 3)
    np.testing.assert_array_equal(image[:, :, 0], skimage.data.camera())
    np.testing.assert_array_equal(image[:, :, 0], image[:, :, 2])
    coffee = next(e for e in library.entries() if e.path == "skimage/coffee.png")
    small = library.load(coffee, max_side=150)
    assert small.shape == (100, 150, 3) and small.dtype == np.uint8
    assert library.load(coffee, max_side=1000).shape == (400, 600, 3)
    with pytest.raises(ValueError, match="max_side"):
        library.load(coffee, max_side=0)


def test_extract_members_stores_photographs_and_skips_the_rest(tmp_path, package, members):
    root = tmp_path / "library"
    extraction = extract_members(package, FAKE, root, "fake==1.0")
    by_path = {entry.path: entry for entry in extraction.entries}
    assert sorted(by_path) == ["fake/camera.png", "fake/coffee.jpg", "fake/sub/brick.png"]
    assert sorted(extraction.skipped) == [
        ("fake/images/decal.png", "transparent"),
        ("fake/images/notes.jpg", "not a readable image"),
        ("fake/images/tiny.png", f"smaller than {photos.MIN_SIDE} px"),
    ]
    assert not (root / "fake/wall_nm.png").exists() and not (root / "fake/tiny.png").exists()
    assert extraction.extras == ("fake/LICENSE",)
    assert (root / "fake/LICENSE").read_bytes() == members["fake/LICENSE"]
    # JPEG and PNG are kept byte for byte; the TGA becomes a PNG with the same pixels.
    assert (root / "fake/coffee.jpg").read_bytes() == members["fake/images/coffee.jpg"]
    converted = cv2.imread(str(root / "fake/camera.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(converted[:, :, 0], skimage.data.camera()[:96, :120])
    for path, entry in by_path.items():
        data = (root / path).read_bytes()
        assert entry.size == len(data)
        assert entry.sha256 == hashlib.sha256(data).hexdigest()
        assert entry.split == split_of(entry.sha256)
        assert entry.source == "fake" and entry.package == "fake==1.0"
        assert entry.member == "fake/images/" + path.removeprefix("fake/").replace(
            "camera.png", "camera.tga")
    assert (by_path["fake/coffee.jpg"].width, by_path["fake/coffee.jpg"].height) == (300, 200)
    assert by_path["fake/coffee.jpg"].licence == "CC0-1.0 (Rachel Michetti)"
    assert by_path["fake/sub/brick.png"].licence == "CC0-1.0"


def test_extract_members_refuses_a_package_without_matching_members(tmp_path, members):
    package = write_zip(tmp_path / "other.zip", {"other/astronaut.png":
                                                 members["other/astronaut.png"]})
    with pytest.raises(ValueError, match="no member of fake==1.0 matches"):
        extract_members(package, FAKE, tmp_path / "library", "fake==1.0")


def test_largest_per_folder_keeps_one_size_of_each_wallpaper(tmp_path):
    photo = skimage.data.coffee()
    package = write_zip(tmp_path / "walls.zip", {
        "walls/Lake/images/300x200.jpg": encode(photo[:200, :300], ".jpg"),
        "walls/Lake/images/600x400.jpg": encode(photo, ".jpg"),
        "walls/Hill/images/150x100.jpg": encode(photo[:100, :150], ".jpg"),
    })
    source = Source("walls", "debian", "walls", members=("walls/*/images/*",), strip="walls/",
                    licence="GPL-2+", description="test", largest_per_folder=True)
    extraction = extract_members(package, source, tmp_path / "library", "walls==1")
    assert sorted(e.path for e in extraction.entries) == ["walls/Hill/images/150x100.jpg",
                                                         "walls/Lake/images/600x400.jpg"]
    assert extraction.skipped == (("walls/Lake/images/300x200.jpg",
                                   "a larger size in the same folder"),)


def test_dep5_licence_is_the_last_matching_paragraph():
    paragraphs = parse_dep5(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
        "Files: *\nCopyright: 2020, Someone\nLicense: GPL-2+\n\n"
        "Files:\n base/textures/a/wall.png\n base/textures/b/*.jpg\n"
        "Copyright: 2021, Someone Else\nLicense: CC-BY-3.0\n Attribution text.\n\n"
        "License: GPL-2+\n This package is free software.\n")
    assert paragraphs == [(("*",), "GPL-2+"),
                          (("base/textures/a/wall.png", "base/textures/b/*.jpg"), "CC-BY-3.0")]
    assert dep5_licence(paragraphs, "base/textures/a/wall.png") == "CC-BY-3.0"
    assert dep5_licence(paragraphs, "base/textures/b/deep/rock.jpg") == "CC-BY-3.0"
    assert dep5_licence(paragraphs, "base/textures/a/floor.png") == "GPL-2+"
    assert dep5_licence(paragraphs[1:], "elsewhere.png") is None


def test_fetch_writes_the_manifest_and_a_second_run_is_cheap(tmp_path, fake_sources):
    root = tmp_path / "library"
    manifest = fetch(root, progress=False)
    assert fake_sources == ["fake"] and not manifest.failed
    document = json.loads((root / MANIFEST).read_text())
    assert [record["path"] for record in document["files"]] == [
        "fake/camera.png", "fake/coffee.jpg", "fake/sub/brick.png"]
    assert set(document["files"][0]) == {"path", "source", "package", "member", "licence",
                                         "size", "sha256", "width", "height", "split"}
    assert document["sources"]["fake"]["skipped"] == {
        "not a readable image": 1, "smaller than 64 px": 1, "transparent": 1}
    before = (root / MANIFEST).read_bytes()
    assert fetch(root, progress=False).entries == manifest.entries
    assert fake_sources == ["fake"], "an up-to-date source is not downloaded again"
    assert (root / MANIFEST).read_bytes() == before
    (root / "fake/coffee.jpg").unlink()
    fetch(root, ["fake"], progress=False)
    assert fake_sources == ["fake", "fake"] and (root / "fake/coffee.jpg").is_file()
    assert (root / MANIFEST).read_bytes() == before


def test_fetch_reports_a_failing_source_and_fetches_the_others(tmp_path, monkeypatch, package):
    broken = Source("broken", "debian", "no-such-package", members=("x/*",), strip="x/",
                    licence="GPL-2+", description="test")

    def download(source, directory):
        if source.name == "broken":
            raise OSError("apt-get download no-such-package failed: unable to locate")
        return package, "fake==1.0"

    monkeypatch.setattr(photos, "SOURCES", (broken, FAKE))
    monkeypatch.setattr(photos, "_download", download)
    manifest = fetch(tmp_path, progress=False)
    assert manifest.failed == {"broken": "apt-get download no-such-package failed: unable to "
                                         "locate"}
    assert {entry.source for entry in PhotoLibrary.open(tmp_path).entries()} == {"fake"}
    with pytest.raises(ValueError, match="unknown photo source 'nonexistent'; known: broken"):
        fetch(tmp_path, ["nonexistent"], progress=False)


def test_library_on_disk_loads_and_names_a_corrupt_file(tmp_path, fake_sources):
    fetch(tmp_path, progress=False)
    library = PhotoLibrary.open(tmp_path)
    assert len(library) == 3
    coffee = next(e for e in library.entries() if e.path == "fake/coffee.jpg")
    image = library.load(coffee)
    assert image.shape == (200, 300, 3) and image.dtype == np.uint8
    assert library.load(coffee, max_side=60).shape == (40, 60, 3)
    brick = next(e for e in library.entries() if e.path == "fake/sub/brick.png")
    assert library.load(brick).shape == (128, 160, 3)
    (tmp_path / "fake/coffee.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(ValueError, match="coffee.jpg"):
        library.load(coffee)
    (tmp_path / "fake/sub/brick.png").unlink()
    with pytest.raises(ValueError, match="brick.png"):
        library.load(brick)


def test_missing_library_says_how_to_fetch_it(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="stereo-adapt photos fetch"):
        PhotoLibrary.open(tmp_path / "nothing")
    monkeypatch.setenv(ENV_ROOT, str(tmp_path / "elsewhere"))
    assert default_root() == tmp_path / "elsewhere"
    with pytest.raises(FileNotFoundError, match="elsewhere"):
        PhotoLibrary.open()
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(ValueError, match="not a photo library manifest"):
        PhotoLibrary.open(tmp_path)


def test_stereo_images_are_never_handed_out_as_photographs(tmp_path, monkeypatch, package):
    pairs = Source("pairs", "pypi", "pairs==1", members=("fake/images/*.jpg",),
                   strip="fake/images/", licence="CC-BY-4.0", description="test",
                   split="stereo")
    monkeypatch.setattr(photos, "SOURCES", (FAKE, pairs))
    monkeypatch.setattr(photos, "_download", lambda source, directory: (package, "x==1"))
    fetch(tmp_path, progress=False)
    library = PhotoLibrary.open(tmp_path)
    assert [e.path for e in library.entries("stereo")] == ["pairs/coffee.jpg"]
    assert "stereo" not in {e.split for e in library.entries()}
    assert len(library) == 3
    rows = {row.source: row for row in library.summary()}
    assert rows["pairs"].counts == {"train": 0, "heldout": 0, "stereo": 1}
    assert sum(rows["fake"].counts.values()) == 3
    (stereo,) = library.summary("stereo")
    assert stereo.source == "pairs" and stereo.size == library.entries("stereo")[0].size


def write_oakd(folder: Path, motorcycle, scenes=("desk", "corridor")) -> Path:
    """stereodemo's layout with real images: crops of the Motorcycle pair, grey like the
    OAK-D's, and a calibration in its format."""
    left, right, _ = motorcycle
    folder.mkdir(parents=True)
    for index, scene in enumerate(scenes):
        window = (slice(100, 160), slice(100 + 40 * index, 180 + 40 * index))
        for side, view in (("left", left), ("right", right)):
            grey = cv2.cvtColor(view[window], cv2.COLOR_RGB2GRAY)
            assert cv2.imwrite(str(folder / f"{scene}_{side}.png"), grey)
    (folder / "stereodemo_calibration.json").write_text(json.dumps({
        "width": 80, "height": 60, "baseline_meters": 0.075, "fx": 451.03, "fy": 451.03,
        "cx0": 39.5, "cx1": 40.0, "cy": 29.5, "depth_range": [1.0, 5.0],
        "left_image_rect_normalized": [0, 0.0417, 0.9547, 1]}))
    return folder


def test_oakd_pairs_read_images_and_calibration(tmp_path, motorcycle):
    folder = write_oakd(tmp_path / "oak-d", motorcycle)
    pairs = open_dataset(folder)
    assert isinstance(pairs, OakdPairs) and len(pairs) == 2
    assert [sample.name for sample in pairs] == ["corridor", "desk"]
    sample = pairs[1]
    assert sample.left.shape == sample.right.shape == (60, 80, 3)
    assert sample.left.dtype == np.uint8 and sample.disparity is None
    expected = cv2.cvtColor(motorcycle[0][100:160, 100:180], cv2.COLOR_RGB2GRAY)
    np.testing.assert_array_equal(sample.left[:, :, 1], expected)
    camera = pairs.calibration
    assert (camera.fx, camera.fy, camera.cx, camera.cy) == (451.03, 451.03, 39.5, 29.5)
    assert camera.baseline == 0.075 and camera.doffs == 0.5
    (folder / "desk_right.png").unlink()
    with pytest.raises(ValueError, match="desk_right.png"):
        OakdPairs(folder)


def test_oakd_spec_opens_the_pairs_of_the_photo_library(tmp_path, monkeypatch, motorcycle):
    monkeypatch.setenv(ENV_ROOT, str(tmp_path))
    with pytest.raises(ValueError, match="photos fetch --source stereodemo"):
        open_dataset("oakd")
    write_oakd(tmp_path / "stereodemo" / "oak-d", motorcycle, scenes=("stairs",))
    pairs = open_dataset("oakd")
    assert isinstance(pairs, OakdPairs) and [s.name for s in pairs] == ["stairs"]


def test_cli_lists_the_library_and_refuses_an_unknown_source(tmp_path, fake_sources, capsys):
    assert main(["photos", "fetch", "--root", str(tmp_path)]) == 0
    assert main(["photos", "list", "--root", str(tmp_path)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:5] == ["source", "package", "train", "heldout", "stereo"]
    fake_row = next(line for line in table if line.startswith("fake "))
    assert fake_row.split()[1] == "fake==1.0"
    assert sum(int(count) for count in fake_row.split()[2:5]) == 3
    assert main(["photos", "list", "--root", str(tmp_path), "--files"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sorted(line.split()[4] for line in lines) == [
        "fake/camera.png", "fake/coffee.jpg", "fake/sub/brick.png"]
    assert main(["photos", "fetch", "--root", str(tmp_path), "--source", "nonexistent"]) == 2
    error = capsys.readouterr().err
    assert "unknown photo source 'nonexistent'" in error and "known: fake" in error
    assert main(["photos", "list", "--root", str(tmp_path / "none")]) == 2
    assert "stereo-adapt photos fetch" in capsys.readouterr().err


def test_cli_licences_lists_every_source(capsys):
    assert main(["photos", "licences"]) == 0
    table = capsys.readouterr().out
    for source in photos.SOURCES:
        assert f"| {source.name} |" in table
