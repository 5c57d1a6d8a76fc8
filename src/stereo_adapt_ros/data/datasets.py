"""Readers that turn stereo datasets on disk, rosbags and the embedded sequence into samples.

Every reader is a ``Sequence[StereoSample]``: ``len()``, indexing and iteration, reading files
only when a sample is accessed. Every sample is checked: left and right images have the same
shape and ground truth, when present, has the image's height and width.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
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
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.typesys import Stores, get_typestore

from .image_encoding import decode_image, to_rgb8
from .io import decode_encoded_image, read_disparity, read_image_rgb
from .photos import OAKD_FOLDER
from .photos import default_root as default_photo_root
from .sample import StereoSample
from .stereo_camera import StereoCamera

PathLike = str | os.PathLike[str]

_IMAGE = "sensor_msgs/msg/Image"
_COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
_DISPARITY_IMAGE = "stereo_msgs/msg/DisparityImage"

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

#: Largest left/right stamp difference, seconds, that pairs two images of a bag by default:
#: software-synchronised cameras stamp the views a few milliseconds apart, and a pair is
#: matched closest first, so this is safe up to 50 Hz (half the frame period).
BAG_PAIR_TOLERANCE_S = 0.01


def _checked_sample(
    left: np.ndarray,
    right: np.ndarray,
    disparity: np.ndarray | None,
    name: str,
    stamp: float | None,
    source: str,
) -> StereoSample:
    """Build a sample after checking that images and ground truth agree in size.

    Args:
        source: where the data came from (files, bag and stamp), used in error messages.
    """
    if left.shape != right.shape:
        raise ValueError(
            f"{source}: left image shape {left.shape} differs from right image shape "
            f"{right.shape}"
        )
    if disparity is not None and disparity.shape != left.shape[:2]:
        raise ValueError(
            f"{source}: disparity shape {disparity.shape} differs from image size "
            f"{left.shape[:2]}"
        )
    return StereoSample(left=left, right=right, disparity=disparity, name=name, stamp=stamp)


def _checked_index(index: int, length: int) -> int:
    """Turn a possibly negative index into 0..length-1, raising IndexError when out of range."""
    if not -length <= index < length:
        raise IndexError(f"sample index {index} out of range for {length} samples")
    return index % length


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
        return _checked_sample(left, right, disparity, self.name, self.stamp, source)


class _FilePairs(Sequence[StereoSample]):
    """A sequence of samples stored as image (and disparity) files."""

    def __init__(self, pairs: Sequence[_PairFiles]) -> None:
        self._pairs = tuple(pairs)

    def __len__(self) -> int:
        return len(self._pairs)

    def __getitem__(self, index: int) -> StereoSample:  # type: ignore[override]
        return self._pairs[_checked_index(index, len(self._pairs))].load()

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


@dataclass(frozen=True)
class _MessageRef:
    """Where one message is in a bag, so it can be read again without a full scan.

    Attributes:
        topic: the message's topic.
        log_time: the bag's record time, ns; a read windowed on it finds the message.
        rank: position among this topic's messages with the same ``log_time``.
        stamp: the message header stamp, ns.
        frame_id: the message header's frame_id.
    """

    topic: str
    log_time: int
    rank: int
    stamp: int
    frame_id: str = ""


def _pair_by_stamp(
    left: Sequence[int], right: Sequence[int], tolerance: int
) -> list[tuple[int, int]]:
    """Match stamps one to one, closest pairs first, at most ``tolerance`` apart.

    Args:
        left, right: stamps in any unit, any order.
        tolerance: largest accepted difference in that unit (0: exact matches only).

    Returns:
        ``(i, j)`` index pairs into ``left`` and ``right``, sorted by ``i``; each index
        appears at most once.
    """
    order = sorted(range(len(right)), key=right.__getitem__)
    sorted_right = [right[j] for j in order]
    candidates: list[tuple[int, int, int]] = []
    for i, stamp in enumerate(left):
        low = bisect.bisect_left(sorted_right, stamp - tolerance)
        high = bisect.bisect_right(sorted_right, stamp + tolerance)
        candidates.extend((abs(sorted_right[k] - stamp), i, order[k]) for k in range(low, high))
    used_left: set[int] = set()
    used_right: set[int] = set()
    pairs = []
    for _, i, j in sorted(candidates):
        if i not in used_left and j not in used_right:
            used_left.add(i)
            used_right.add(j)
            pairs.append((i, j))
    return sorted(pairs)


def _no_pairs_reason(path: Path, left_topic: str, lefts: Sequence[_MessageRef],
                     right_topic: str, rights: Sequence[_MessageRef], tolerance: float) -> str:
    """Why no left message of a bag found a right partner, with the nearest stamps."""
    counts = (f"{len(lefts)} messages on {left_topic} and {len(rights)} on {right_topic}")
    if not lefts or not rights:
        return f"no stereo pair in {str(path)!r}: {counts}"
    right_stamps = sorted(ref.stamp for ref in rights)
    nearest = math.inf
    for ref in lefts:
        k = bisect.bisect_left(right_stamps, ref.stamp)
        for j in (k - 1, k):
            if 0 <= j < len(right_stamps):
                nearest = min(nearest, abs(right_stamps[j] - ref.stamp))
    return (f"no stereo pair in {str(path)!r}: {counts}, but the closest left and right "
            f"stamps are {nearest / 1e9:.6f} s apart, more than the pairing tolerance of "
            f"{tolerance:g} s; raise the tolerance if they are views of the same instant")


@dataclass(frozen=True)
class _BagFrame:
    """The messages that make up one sample of a bag."""

    left: _MessageRef
    right: _MessageRef
    disparity: _MessageRef | None


@contextlib.contextmanager
def _opened_bag(path: Path) -> Iterator[AnyReader]:
    """Open a rosbag with ``AnyReader``; bags without embedded definitions use ROS 2 types."""
    try:
        reader = AnyReader([path], default_typestore=get_typestore(Stores.LATEST))
        reader.open()
    except (AnyReaderError, FileNotFoundError) as error:
        raise ValueError(f"cannot open rosbag {str(path)!r}: {error}") from error
    try:
        yield reader
    finally:
        reader.close()


def _stamp_ns(message: Any) -> int:
    """The header stamp of a deserialized message, in nanoseconds."""
    stamp = message.header.stamp
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _index_topic(reader: AnyReader, topic: str) -> list[_MessageRef]:
    """Locate every message of ``topic``, sorted by header stamp."""
    connections = [connection for connection in reader.connections if connection.topic == topic]
    refs = []
    previous_time, rank = None, 0
    for connection, log_time, raw in reader.messages(connections=connections):
        rank = rank + 1 if log_time == previous_time else 0
        previous_time = log_time
        message: Any = reader.deserialize(raw, connection.msgtype)
        refs.append(_MessageRef(topic, log_time, rank, _stamp_ns(message),
                                str(message.header.frame_id)))
    return sorted(refs, key=lambda ref: ref.stamp)


def _read_message(reader: AnyReader, ref: _MessageRef) -> tuple[str, Any]:
    """Read back one indexed message; returns its type name and the deserialized message."""
    connections = [connection for connection in reader.connections if connection.topic == ref.topic]
    window = reader.messages(connections=connections, start=ref.log_time, stop=ref.log_time + 1)
    connection, _, raw = next(itertools.islice(window, ref.rank, None))
    return connection.msgtype, reader.deserialize(raw, connection.msgtype)


def _image_message_rgb(msgtype: str, message: Any, source: str) -> np.ndarray:
    """uint8 H x W x 3 RGB from a sensor_msgs Image or CompressedImage."""
    if msgtype == _COMPRESSED_IMAGE:
        return decode_encoded_image(np.asarray(message.data, dtype=np.uint8), source)
    image = decode_image(
        message.data, message.height, message.width, message.encoding, message.step,
        message.is_bigendian,
    )
    return to_rgb8(image, message.encoding)


def _disparity_message(msgtype: str, message: Any, source: str) -> np.ndarray:
    """float32 H x W disparity from a 32FC1 Image or a stereo_msgs DisparityImage.

    Non-finite and non-positive values become NaN, and so do values below a DisparityImage's
    ``min_disparity``, which is how stereo_image_proc marks pixels without a match.
    """
    image = message.image if msgtype == _DISPARITY_IMAGE else message
    if image.encoding != "32FC1":
        raise ValueError(f"{source}: disparity must be 32FC1, got {image.encoding!r}")
    disparity = decode_image(
        image.data, image.height, image.width, image.encoding, image.step, image.is_bigendian
    )
    lowest = float(message.min_disparity) if msgtype == _DISPARITY_IMAGE else 0.0
    with np.errstate(invalid="ignore"):
        unknown = ~np.isfinite(disparity) | (disparity <= 0) | (disparity < lowest)
    disparity[unknown] = np.nan
    return disparity


def _choose_topic(requested: str | None, side: str, image_topics: Sequence[str], bag: Path) -> str:
    """The requested image topic, or the only image topic whose name contains ``side``."""
    listing = ", ".join(image_topics) or "none"
    if requested is not None:
        if requested not in image_topics:
            raise ValueError(
                f"{side} topic {requested!r} is not an image topic of {str(bag)!r}; "
                f"image topics: {listing}"
            )
        return requested
    matches = [topic for topic in image_topics if side in topic.lower()]
    if len(matches) != 1:
        raise ValueError(
            f"cannot choose the {side} image topic of {str(bag)!r}: {len(matches)} image topics "
            f"contain {side!r}; pass {side}_topic. Image topics: {listing}"
        )
    return matches[0]


class RosbagStereo(Sequence[StereoSample]):
    """Stereo pairs from a rosbag2 (a directory with metadata.yaml, or a .mcap or .db3 file).

    Left and right topics carry ``sensor_msgs/msg/Image`` or ``CompressedImage``. Messages are
    paired by header stamp: equal stamps, or else the nearest stamps at most ``tolerance``
    seconds apart, each message used once (cameras that are not hardware-synchronised stamp
    the two views a few milliseconds apart). Unpaired messages are counted in ``dropped`` and
    per topic in ``unpaired``; a bag where no pair forms raises ValueError. An
    optional ground-truth topic (32FC1 ``Image`` or ``stereo_msgs/msg/DisparityImage``) is
    matched to the left stamps the same way; frames without a match have ``disparity=None``.

    Construction reads the bag once to index message positions and stamps; samples are
    decoded only on access (each access reopens the bag; iteration opens it once). Samples
    are ordered by left stamp, named ``<bag name>_<index>``, with the left stamp in seconds.

    Args:
        path: the bag directory or storage file.
        left_topic, right_topic: image topics; None picks the only image topic whose name
            contains "left" (respectively "right").
        tolerance: largest stamp difference, seconds, accepted when pairing (0: equal stamps
            only); ``BAG_PAIR_TOLERANCE_S`` by default.
        disparity_topic: optional ground-truth disparity topic; None picks the only
            DisparityImage topic whose name contains "ground_truth" (as ``write_stereo_bag``
            writes), if there is one.

    Attributes:
        left_topic, right_topic, disparity_topic: the topics used.
        tolerance: the pairing tolerance, seconds.
        dropped: number of left and right image messages that found no partner.
        unpaired: that number per topic (left, then right).
    """

    def __init__(
        self,
        path: PathLike,
        left_topic: str | None = None,
        right_topic: str | None = None,
        tolerance: float = BAG_PAIR_TOLERANCE_S,
        disparity_topic: str | None = None,
    ) -> None:
        if not tolerance >= 0:
            raise ValueError(f"tolerance must be >= 0 seconds, got {tolerance}")
        self.path = Path(path)
        self.tolerance = tolerance
        with _opened_bag(self.path) as reader:
            msgtypes = {name: info.msgtype for name, info in reader.topics.items()}
            image_topics = sorted(
                name for name, msgtype in msgtypes.items() if msgtype in (_IMAGE, _COMPRESSED_IMAGE)
            )
            self.left_topic = _choose_topic(left_topic, "left", image_topics, self.path)
            self.right_topic = _choose_topic(right_topic, "right", image_topics, self.path)
            if self.left_topic == self.right_topic:
                raise ValueError(f"left and right topics are both {self.left_topic!r}")
            if disparity_topic is None:
                truth_topics = [name for name, msgtype in msgtypes.items()
                                if msgtype == _DISPARITY_IMAGE and "ground_truth" in name]
                disparity_topic = truth_topics[0] if len(truth_topics) == 1 else None
            if disparity_topic is not None and msgtypes.get(disparity_topic) not in (
                _IMAGE,
                _DISPARITY_IMAGE,
            ):
                raise ValueError(
                    f"disparity topic {disparity_topic!r} of {str(self.path)!r} is not an Image "
                    f"or DisparityImage topic; topics: {', '.join(sorted(msgtypes))}"
                )
            self.disparity_topic = disparity_topic
            lefts = _index_topic(reader, self.left_topic)
            rights = _index_topic(reader, self.right_topic)
            truths = _index_topic(reader, disparity_topic) if disparity_topic else []
        tolerance_ns = round(tolerance * 1e9)
        pairs = _pair_by_stamp(
            [ref.stamp for ref in lefts], [ref.stamp for ref in rights], tolerance_ns
        )
        self.dropped = len(lefts) + len(rights) - 2 * len(pairs)
        self.unpaired = {self.left_topic: len(lefts) - len(pairs),
                         self.right_topic: len(rights) - len(pairs)}
        if not pairs:
            raise ValueError(_no_pairs_reason(self.path, self.left_topic, lefts,
                                              self.right_topic, rights, tolerance))
        truth_of = dict(
            _pair_by_stamp(
                [lefts[i].stamp for i, _ in pairs], [ref.stamp for ref in truths], tolerance_ns
            )
        )
        self._frames = tuple(
            _BagFrame(lefts[i], rights[j], truths[truth_of[k]] if k in truth_of else None)
            for k, (i, j) in enumerate(pairs)
        )

    def __len__(self) -> int:
        return len(self._frames)

    def recorded_header(self, index: int) -> tuple[int, str, str]:
        """The left stamp (ns, exact, unlike the sample's float seconds) and the left and
        right frame_id of frame ``index``, as recorded; reads nothing."""
        frame = self._frames[_checked_index(index, len(self._frames))]
        return frame.left.stamp, frame.left.frame_id, frame.right.frame_id

    def _load(self, reader: AnyReader, index: int) -> StereoSample:
        frame = self._frames[index]
        source = f"{str(self.path)!r} at stamp {frame.left.stamp} ns"
        left = _image_message_rgb(*_read_message(reader, frame.left), source)
        right = _image_message_rgb(*_read_message(reader, frame.right), source)
        disparity = (
            _disparity_message(*_read_message(reader, frame.disparity), source)
            if frame.disparity is not None
            else None
        )
        name = f"{self.path.stem}_{index:06d}"
        return _checked_sample(left, right, disparity, name, frame.left.stamp / 1e9, source)

    def __getitem__(self, index: int) -> StereoSample:  # type: ignore[override]
        index = _checked_index(index, len(self._frames))
        with _opened_bag(self.path) as reader:
            return self._load(reader, index)

    def __iter__(self) -> Iterator[StereoSample]:
        with _opened_bag(self.path) as reader:
            for index in range(len(self._frames)):
                yield self._load(reader, index)


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
