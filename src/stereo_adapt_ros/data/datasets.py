"""Readers that turn stereo datasets on disk, rosbags and the embedded sequence into samples.

Every reader is a ``Sequence[StereoSample]``: ``len()``, indexing and iteration, reading files
only when a sample is accessed. Every sample is checked: left and right images have the same
shape and ground truth, when present, has the image's height and width.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import skimage.data

from .bag import RosbagStereo
from .io import read_disparity, read_image_rgb
from .photo_root import OAKD_FOLDER
from .photo_root import default_root as default_photo_root
from .sample import StereoSample, checked_index, checked_sample
from .stereo_camera import StereoCamera

PathLike = str | os.PathLike[str]

_RECOGNISED_LAYOUTS = (
    "None or 'motorcycle' (embedded Middlebury Motorcycle pan)",
    "a .csv file of 'left,right[,disparity]' lines",
    "a rosbag2: a .mcap or .db3 file, or a directory with metadata.yaml",
    "KITTI 2015 (image_2/, image_3/) or KITTI 2012 (colored_0/, colored_1/)",
    "a KITTI raw drive (image_02/data/, image_03/data/)",
    "a Middlebury scene (im0.png, im1.png) or a folder of such scenes",
    "'oakd' (stereodemo's OAK-D pairs, from the photo library) or a folder with "
    "stereodemo_calibration.json and *_left.png / *_right.png",
)

OAKD_CALIBRATION = "stereodemo_calibration.json"

@dataclass(frozen=True)
class _PairFiles:
    """Where one sample's files are; the sample itself is read on access."""

    left: Path
    right: Path
    disparity: Path | None
    name: str
    stamp: float | None = None

    def load(self) -> StereoSample:
        left = read_image_rgb(self.left)
        right = read_image_rgb(self.right)
        disparity = read_disparity(self.disparity) if self.disparity is not None else None
        source = f"{str(self.left)!r} / {str(self.right)!r}"
        return checked_sample(left, right, disparity, self.name, self.stamp, source)


class _FilePairs(Sequence[StereoSample]):
    """A sequence of samples stored as image (and disparity) files."""

    def __init__(self, pairs: Sequence[_PairFiles]) -> None:
        self._pairs = tuple(pairs)

    def __len__(self) -> int:
        return len(self._pairs)

    def __getitem__(self, index: int) -> StereoSample:  # type: ignore[override]
        return self._pairs[checked_index(index, len(self._pairs))].load()

    def __iter__(self) -> Iterator[StereoSample]:
        return (pair.load() for pair in self._pairs)


def _require_dir(path: Path, what: str) -> Path:
    """Return ``path`` if it is a directory, else raise a ValueError saying what was expected."""
    if not path.is_dir():
        raise ValueError(f"expected {what} at {str(path)!r}, but it is not a directory")
    return path


class KittiStereo(_FilePairs):
    """KITTI 2015 or 2012 stereo benchmark split (training or testing), frames ``*_10.png``.

    KITTI 2015: ``image_2/`` (left), ``image_3/`` (right), ground truth in ``disp_occ_0/`` or
    ``disp_noc_0/``. KITTI 2012: ``colored_0/``, ``colored_1/``, ``disp_occ/`` or
    ``disp_noc/``. Ground truth is optional (the testing split has none; samples then have
    ``disparity=None``). Sample names are file stems, e.g. ``000042_10``.

    Args:
        root: the split folder (e.g. ``.../training``).
        gt: "occ" (ground truth for all pixels) or "noc" (non-occluded pixels only).
    """

    def __init__(self, root: PathLike, gt: str = "occ") -> None:
        if gt not in ("occ", "noc"):
            raise ValueError(f"gt must be 'occ' or 'noc', got {gt!r}")
        root = Path(root)
        if (root / "image_2").is_dir():
            left_dir, right_dir = root / "image_2", root / "image_3"
            gt_dir = root / f"disp_{gt}_0"
        elif (root / "colored_0").is_dir():
            left_dir, right_dir = root / "colored_0", root / "colored_1"
            gt_dir = root / f"disp_{gt}"
        else:
            raise ValueError(
                f"{str(root)!r} is not a KITTI stereo split: "
                "no image_2/ (2015) or colored_0/ (2012)"
            )
        _require_dir(right_dir, "the right images")
        lefts = sorted(left_dir.glob("*_10.png"))
        if not lefts:
            raise ValueError(f"no *_10.png frames in {str(left_dir)!r}")
        pairs = []
        for left in lefts:
            right = right_dir / left.name
            if not right.is_file():
                raise ValueError(f"right image {str(right)!r} for {str(left)!r} is missing")
            disparity = gt_dir / left.name
            pairs.append(
                _PairFiles(left, right, disparity if disparity.is_file() else None, left.stem)
            )
        super().__init__(pairs)


def _parse_kitti_timestamp(text: str) -> float:
    """Seconds since the epoch of a KITTI raw timestamp such as ``2011-09-26 13:02:25.964389445``.

    KITTI writes local time without a zone; it is read as UTC, which keeps differences between
    frames exact. The fraction is parsed separately because it has nanosecond digits.
    """
    whole, _, fraction = text.strip().partition(".")
    seconds = datetime.strptime(whole, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
    return seconds.timestamp() + (float(f"0.{fraction}") if fraction else 0.0)


class KittiRawDrive(_FilePairs):
    """One KITTI raw drive: ``image_02/data/*.png`` (left) and ``image_03/data/*.png`` (right).

    Frames are sorted by file name; there is no ground truth. Stamps, in seconds, come from
    ``image_02/timestamps.txt`` when it exists, else are None. Names are file stems.

    Args:
        root: the drive folder, e.g. ``2011_09_26_drive_0001_sync``.
    """

    def __init__(self, root: PathLike) -> None:
        root = Path(root)
        left_dir = _require_dir(root / "image_02" / "data", "the left images")
        right_dir = _require_dir(root / "image_03" / "data", "the right images")
        lefts = sorted(left_dir.glob("*.png"))
        rights = sorted(right_dir.glob("*.png"))
        if not lefts:
            raise ValueError(f"no .png frames in {str(left_dir)!r}")
        if [path.name for path in lefts] != [path.name for path in rights]:
            raise ValueError(
                f"{str(left_dir)!r} and {str(right_dir)!r} hold different frames "
                f"({len(lefts)} and {len(rights)} files)"
            )
        stamps: Sequence[float | None] = [None] * len(lefts)
        timestamps = root / "image_02" / "timestamps.txt"
        if timestamps.is_file():
            lines = [line for line in timestamps.read_text().splitlines() if line.strip()]
            if len(lines) != len(lefts):
                raise ValueError(
                    f"{str(timestamps)!r} has {len(lines)} stamps for {len(lefts)} frames"
                )
            stamps = [_parse_kitti_timestamp(line) for line in lines]
        super().__init__(
            [
                _PairFiles(left, right_dir / left.name, None, left.stem, stamp)
                for left, stamp in zip(lefts, stamps)
            ]
        )


def _middlebury_pair(scene: Path) -> _PairFiles:
    """The files of one Middlebury scene folder; ground truth ``disp0.pfm`` or ``disp0GT.pfm``."""
    right = scene / "im1.png"
    if not right.is_file():
        raise ValueError(f"Middlebury scene {str(scene)!r} has im0.png but no im1.png")
    disparity = next(
        (path for path in (scene / "disp0.pfm", scene / "disp0GT.pfm") if path.is_file()), None
    )
    return _PairFiles(scene / "im0.png", right, disparity, scene.name)


def _middlebury_scenes(root: Path) -> list[Path]:
    """``[root]`` when it is a scene folder, else its sorted subfolders that are scenes."""
    if (root / "im0.png").is_file():
        return [root]
    if not root.is_dir():
        return []
    return sorted(child for child in root.iterdir() if (child / "im0.png").is_file())


class MiddleburyScenes(_FilePairs):
    """Middlebury scenes: ``im0.png`` (left), ``im1.png`` (right), optional ``disp0.pfm``.

    ``root`` is either one scene folder or a folder of scene folders (sorted by name). Ground
    truth is ``disp0.pfm`` or ``disp0GT.pfm``, unknown (inf) pixels as NaN. Names are the scene
    folder names.

    Args:
        root: a scene folder or a folder of scene folders.
    """

    def __init__(self, root: PathLike) -> None:
        root = Path(root)
        scenes = _middlebury_scenes(root)
        if not scenes:
            raise ValueError(f"no Middlebury scene (a folder with im0.png) at {str(root)!r}")
        super().__init__([_middlebury_pair(scene) for scene in scenes])


def read_stereodemo_calibration(path: PathLike) -> StereoCamera:
    """The calibration in a stereodemo ``stereodemo_calibration.json``: ``fx``, ``fy``, ``cx0``
    (left), ``cx1`` (right), ``cy`` in pixels and ``baseline_meters``."""
    path = Path(path)
    try:
        fields = json.loads(path.read_text())
        return StereoCamera(fx=float(fields["fx"]), fy=float(fields["fy"]),
                            cx=float(fields["cx0"]), cy=float(fields["cy"]),
                            baseline=float(fields["baseline_meters"]),
                            doffs=float(fields["cx1"]) - float(fields["cx0"]))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{str(path)!r} is not a stereodemo calibration: {error}") from error


class OakdPairs(_FilePairs):
    """Stereo pairs in stereodemo's layout, such as the 12 indoor OAK-D Lite pairs it ships:
    ``<scene>_left.png``, ``<scene>_right.png`` (rectified; the OAK-D ones 640 x 480 grey,
    read as RGB) and ``stereodemo_calibration.json``.

    There is no ground truth (``disparity=None``). Names are the scene names (e.g. ``desk``),
    sorted.

    Args:
        root: the folder, e.g. ``<photo library>/stereodemo/oak-d``.

    Attributes:
        calibration: the pairs' ``StereoCamera`` (focal lengths and principal point in pixels,
            baseline in metres).
    """

    def __init__(self, root: PathLike) -> None:
        root = Path(root)
        self.calibration = read_stereodemo_calibration(root / OAKD_CALIBRATION)
        lefts = sorted(root.glob("*_left.png"))
        if not lefts:
            raise ValueError(f"no *_left.png images in {str(root)!r}")
        pairs = []
        for left in lefts:
            scene = left.name.removesuffix("_left.png")
            right = root / f"{scene}_right.png"
            if not right.is_file():
                raise ValueError(f"right image {str(right)!r} for {str(left)!r} is missing")
            pairs.append(_PairFiles(left, right, None, scene))
        super().__init__(pairs)


def _library_oakd(**kwargs: Any) -> OakdPairs:
    """The OAK-D pairs of the photo library (``stereo-adapt photos fetch``)."""
    folder = default_photo_root() / OAKD_FOLDER
    if not (folder / OAKD_CALIBRATION).is_file():
        raise ValueError(f"the OAK-D pairs are not in the photo library ({str(folder)!r}): run "
                         "`stereo-adapt photos fetch --source stereodemo`")
    return OakdPairs(folder, **kwargs)


def _parse_csv_line(line: str, line_number: int, base: Path, csv_path: Path) -> _PairFiles:
    """One ``left,right[,disparity]`` line, paths resolved against ``base``."""
    fields = [field.strip() for field in line.split(",")]
    # "left,right," (an empty third field) means "no ground truth", like "left,right".
    if fields[-1] == "" and len(fields) == 3:
        fields = fields[:2]
    if len(fields) not in (2, 3) or not all(fields):
        raise ValueError(
            f"{str(csv_path)!r} line {line_number}: expected 'left,right[,disparity]', "
            f"got {line.strip()!r}"
        )
    paths = [base / field for field in fields]
    for path in paths:
        if not path.is_file():
            raise ValueError(f"{str(csv_path)!r} line {line_number}: no file {str(path)!r}")
    left, right = paths[:2]
    return _PairFiles(left, right, paths[2] if len(paths) == 3 else None, left.stem)


class CsvPairs(_FilePairs):
    """Pairs listed in a CSV file, one ``left,right[,disparity]`` per line.

    Relative paths are resolved against the CSV file's directory; blank lines and lines
    starting with ``#`` are skipped. Disparity files may be .pfm, .png (KITTI) or .npy.
    Names are the left images' file stems. Listed files must exist when the reader is made.

    Args:
        path: the CSV file.
    """

    def __init__(self, path: PathLike) -> None:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as error:
            raise ValueError(f"cannot read CSV file {str(path)!r}: {error.strerror}") from error
        pairs = [
            _parse_csv_line(line, number, path.parent, path)
            for number, line in enumerate(text.splitlines(), start=1)
            if line.strip() and not line.lstrip().startswith("#")
        ]
        if not pairs:
            raise ValueError(f"{str(path)!r} lists no pairs")
        super().__init__(pairs)


def motorcycle_pan(
    num_frames: int = 40,
    crop_width: int = 640,
    crop_height: int | None = None,
    scale: float = 1.0,
) -> list[StereoSample]:
    """The embedded default sequence: a simulated camera pan over Middlebury 2014 Motorcycle.

    Built from ``skimage.data.stereo_motorcycle()`` (a real 741 x 500 rectified pair with
    ground truth up to ~60 px, shipped with scikit-image). Every frame cuts the same window
    from the left image, the right image and the ground truth; the window's horizontal offset
    eases (cosine) from the left edge to the right edge and back over ``num_frames``.

    Args:
        num_frames: number of frames.
        crop_width, crop_height: window size in pixels of the original pair; crop_height None
            keeps the full height (the window is centred vertically).
        scale: resize factor applied to every frame (cv2.INTER_AREA for images, nearest
            neighbour for ground truth so foreground and background disparities are not
            averaged at depth edges); disparities are multiplied by the resulting width ratio.

    Returns:
        ``num_frames`` samples named ``motorcycle_pan_000``..., stamps ``i / 10`` seconds,
        images uint8 RGB and disparity float32 (NaN where unknown), all of size
        ``round(scale * crop_height) x round(scale * crop_width)``.
    """
    left, right, disparity = skimage.data.stereo_motorcycle()
    height, width = left.shape[:2]
    crop_height = height if crop_height is None else crop_height
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if not (0 < crop_width <= width and 0 < crop_height <= height):
        raise ValueError(
            f"crop {crop_width} x {crop_height} (width x height) does not fit in the "
            f"{width} x {height} Motorcycle pair"
        )
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    disparity = np.where(np.isfinite(disparity), disparity, np.nan).astype(np.float32)
    size = (max(1, round(crop_width * scale)), max(1, round(crop_height * scale)))
    top = (height - crop_height) // 2
    travel = width - crop_width
    samples = []
    for i in range(num_frames):
        # The cosine ease starts and reverses with zero velocity, like a real pan.
        x = round(travel * (1.0 - math.cos(2.0 * math.pi * i / num_frames)) / 2.0)
        # Both views are cut at the same columns, so each point's disparity (its left column
        # minus its right column) is unchanged by the crop.
        rows, columns = slice(top, top + crop_height), slice(x, x + crop_width)
        frame_left, frame_right = left[rows, columns], right[rows, columns]
        frame_disparity = disparity[rows, columns]
        if size != (crop_width, crop_height):
            frame_left = cv2.resize(frame_left, size, interpolation=cv2.INTER_AREA)
            frame_right = cv2.resize(frame_right, size, interpolation=cv2.INTER_AREA)
            frame_disparity = cv2.resize(frame_disparity, size, interpolation=cv2.INTER_NEAREST)
            frame_disparity *= np.float32(size[0] / crop_width)
        samples.append(
            StereoSample(
                left=np.ascontiguousarray(frame_left),
                right=np.ascontiguousarray(frame_right),
                disparity=np.ascontiguousarray(frame_disparity),
                name=f"motorcycle_pan_{i:03d}",
                stamp=i / 10.0,
            )
        )
    return samples


def open_dataset(spec: PathLike | None = None, **kwargs: Any) -> Sequence[StereoSample]:
    """Open a dataset by name or path, recognising its layout.

    Args:
        spec: None or "motorcycle" for ``motorcycle_pan``; "oakd" for the OAK-D pairs of the
            photo library (``OakdPairs``); a .csv file (``CsvPairs``); a .mcap
            or .db3 file or a directory with metadata.yaml (``RosbagStereo``); a directory with
            image_2/ or colored_0/ (``KittiStereo``), image_02/data/ (``KittiRawDrive``),
            im0.png or scene subfolders with it (``MiddleburyScenes``), or
            stereodemo_calibration.json (``OakdPairs``).
        kwargs: passed on to the chosen reader.

    Raises:
        ValueError: when the path does not exist or its layout is not recognised; the message
            lists the recognised layouts.
    """
    if spec is None or str(spec) == "motorcycle":
        return motorcycle_pan(**kwargs)
    if str(spec) == "oakd":
        return _library_oakd(**kwargs)
    path = Path(spec)
    layouts = "; ".join(_RECOGNISED_LAYOUTS)
    if not path.exists():
        raise ValueError(f"dataset {str(spec)!r} does not exist; recognised: {layouts}")
    suffix = path.suffix.lower()
    if path.is_file() and suffix == ".csv":
        return CsvPairs(path, **kwargs)
    if (path.is_file() and suffix in (".mcap", ".db3")) or (path / "metadata.yaml").is_file():
        return RosbagStereo(path, **kwargs)
    if (path / "image_2").is_dir() or (path / "colored_0").is_dir():
        return KittiStereo(path, **kwargs)
    if (path / "image_02" / "data").is_dir():
        return KittiRawDrive(path, **kwargs)
    if _middlebury_scenes(path):
        return MiddleburyScenes(path, **kwargs)
    if (path / OAKD_CALIBRATION).is_file():
        return OakdPairs(path, **kwargs)
    raise ValueError(f"cannot recognise the dataset layout of {str(spec)!r}; recognised: {layouts}")
