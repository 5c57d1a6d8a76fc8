"""Stereo in rosbag2 (.mcap or sqlite3), with the pure-Python ``rosbags``: reading pairs and
ground truth (``RosbagStereo``), the calibration (``read_bag_calibration``, and in full
``read_bag_camera_infos``) and writing
(``write_stereo_bag``), and the message fields both bags and the ROS node use: header stamps
(``stamp_ns``) and DisparityImage values (``decode_disparity_image``). No ROS import.

Written bags hold, under a namespace: ``left/image_rect`` and ``right/image_rect`` (rgb8),
``left/camera_info`` and ``right/camera_info`` (rectified, ROS convention right
``P[3] = -fx * baseline``), and, where the samples have it, ``ground_truth/disparity``
(stereo_msgs/DisparityImage in stereo_image_proc's convention, as the node publishes it:
``x_l - x_r + doffs``, unknown pixels below ``min_disparity``). These are the topics the node
subscribes to, so the bag replays straight into it, and the topics ``RosbagStereo`` finds by
default.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from .image_encoding import decode_image, encode_image, to_rgb8
from .io import decode_encoded_image
from .sample import StereoSample, checked_index, checked_sample
from .stereo_camera import CameraCalibration, StereoCamera

PathLike = str | os.PathLike[str]

_IMAGE = "sensor_msgs/msg/Image"
_COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
_DISPARITY_IMAGE = "stereo_msgs/msg/DisparityImage"
_CAMERA_INFO = "sensor_msgs/msg/CameraInfo"

#: Largest left/right stamp difference, seconds, that pairs two images of a bag by default:
#: software-synchronised cameras stamp the views a few milliseconds apart, and a pair is
#: matched closest first, so this is safe up to 50 Hz (half the frame period).
BAG_PAIR_TOLERANCE_S = 0.01


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
def open_bag(path: Path) -> Iterator[AnyReader]:
    """Open a rosbag with ``AnyReader``; bags without embedded definitions use ROS 2 types.

    Raises:
        ValueError: when ``path`` is not a readable rosbag.
    """
    try:
        reader = AnyReader([path], default_typestore=get_typestore(Stores.LATEST))
        reader.open()
    except (AnyReaderError, FileNotFoundError) as error:
        raise ValueError(f"cannot open rosbag {str(path)!r}: {error}") from error
    try:
        yield reader
    finally:
        reader.close()


def stamp_ns(message: Any) -> int:
    """The header stamp of a message (rosbags' or rclpy's), in nanoseconds."""
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
        refs.append(_MessageRef(topic, log_time, rank, stamp_ns(message),
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


def decode_disparity_image(message: Any, doffs: float = 0.0) -> np.ndarray:
    """The float32 H x W disparity ``x_l - x_r`` of a stereo_msgs/DisparityImage (rosbags' or
    rclpy's: the fields are the same), NaN where invalid: non-finite, or below
    ``min_disparity``, which is how stereo_image_proc marks pixels without a match.

    doffs: ``cx_right - cx_left`` of the camera (``StereoCamera.doffs``): the message's values
        are ``x_l - x_r + doffs``, as stereo_image_proc publishes them (and
        ``ros.conversion.disparity_msg``; the README's disparity convention).

    Raises:
        ValueError: when the image is not 32FC1 or its layout is broken.
    """
    image = message.image
    if image.encoding != "32FC1":
        raise ValueError(f"disparity must be 32FC1, got {image.encoding!r}")
    disparity = decode_image(
        image.data, image.height, image.width, image.encoding, image.step, image.is_bigendian
    )
    with np.errstate(invalid="ignore"):
        disparity[~np.isfinite(disparity) | (disparity < message.min_disparity)] = np.nan
    return disparity - np.float32(doffs)


def _ground_truth(msgtype: str, message: Any, doffs: float, source: str) -> np.ndarray:
    """float32 H x W ground-truth disparity ``x_l - x_r`` from a 32FC1 Image (the disparity
    itself) or a DisparityImage (``decode_disparity_image`` with the camera's ``doffs``);
    NaN where unknown, which includes values that are not positive."""
    try:
        if msgtype == _DISPARITY_IMAGE:
            disparity = decode_disparity_image(message, doffs)
        elif message.encoding != "32FC1":
            raise ValueError(f"disparity must be 32FC1, got {message.encoding!r}")
        else:
            disparity = decode_image(message.data, message.height, message.width,
                                     message.encoding, message.step, message.is_bigendian)
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None
    with np.errstate(invalid="ignore"):
        disparity[~np.isfinite(disparity) | (disparity <= 0)] = np.nan
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
    A DisparityImage holds ``x_l - x_r + doffs`` (stereo_image_proc's convention), so it is
    decoded with the ``doffs`` (``cx_right - cx_left``) of the bag's left and right
    camera_info (``read_bag_calibration``; 0 where the bag has no such pair), as replay decodes
    the node's output, and samples hold the plain ``x_l - x_r``.

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
        doffs: the principal-point offset, pixels, that DisparityImage ground truth is
            decoded with (0 for other ground truth).
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
        with open_bag(self.path) as reader:
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
            self.doffs = 0.0
            if disparity_topic is not None and msgtypes[disparity_topic] == _DISPARITY_IMAGE:
                try:
                    camera = _calibration(reader)
                except ValueError as error:
                    raise ValueError(
                        f"{str(self.path)!r}: the ground truth on {disparity_topic} is offset by "
                        f"the principal points, but the camera_info does not give them: {error}"
                    ) from None
                self.doffs = camera.doffs if camera is not None else 0.0
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
        frame = self._frames[checked_index(index, len(self._frames))]
        return frame.left.stamp, frame.left.frame_id, frame.right.frame_id

    def _load(self, reader: AnyReader, index: int) -> StereoSample:
        frame = self._frames[index]
        source = f"{str(self.path)!r} at stamp {frame.left.stamp} ns"
        left = _image_message_rgb(*_read_message(reader, frame.left), source)
        right = _image_message_rgb(*_read_message(reader, frame.right), source)
        disparity = (
            _ground_truth(*_read_message(reader, frame.disparity), self.doffs, source)
            if frame.disparity is not None
            else None
        )
        name = f"{self.path.stem}_{index:06d}"
        return checked_sample(left, right, disparity, name, frame.left.stamp / 1e9, source)

    def __getitem__(self, index: int) -> StereoSample:  # type: ignore[override]
        index = checked_index(index, len(self._frames))
        with open_bag(self.path) as reader:
            return self._load(reader, index)

    def __iter__(self) -> Iterator[StereoSample]:
        with open_bag(self.path) as reader:
            for index in range(len(self._frames)):
                yield self._load(reader, index)


def read_bag_calibration(path: PathLike) -> StereoCamera | None:
    """The calibration from a rosbag2's left and right ``sensor_msgs/msg/CameraInfo`` topics
    (the only CameraInfo topics whose names contain "left" and "right"; their first messages),
    or None when the bag has no such pair."""
    with open_bag(Path(path)) as reader:
        return _calibration(reader)


def read_bag_camera_infos(path: PathLike) -> tuple[CameraCalibration, CameraCalibration] | None:
    """The left and right calibrations, as recorded, of the same first CameraInfo messages
    ``read_bag_calibration`` reads (distortion, K, R, P, binning, ROI), or None when the bag has
    no such pair."""
    with open_bag(Path(path)) as reader:
        return _camera_infos(reader)


def _camera_infos(reader: AnyReader) -> tuple[CameraCalibration, CameraCalibration] | None:
    """``read_bag_camera_infos`` of an open bag."""
    infos = [c for c in reader.connections if c.msgtype == _CAMERA_INFO]
    sides = {side: [c for c in infos if side in c.topic.lower()] for side in ("left", "right")}
    if any(len(connections) != 1 for connections in sides.values()):
        return None
    first: dict[str, CameraCalibration] = {}
    for side, (connection,) in sides.items():
        for _, _, raw in reader.messages(connections=[connection]):
            first[side] = _camera_calibration(reader.deserialize(raw, connection.msgtype))
            break
    if len(first) != 2:
        return None
    return first["left"], first["right"]


def _camera_calibration(info: Any) -> CameraCalibration:
    """The calibration fields of a deserialised sensor_msgs/msg/CameraInfo."""
    roi = info.roi
    return CameraCalibration(
        k=tuple(float(v) for v in info.k), p=tuple(float(v) for v in info.p),
        d=tuple(float(v) for v in info.d), distortion_model=str(info.distortion_model),
        r=tuple(float(v) for v in info.r), binning_x=int(info.binning_x),
        binning_y=int(info.binning_y),
        roi=(int(roi.x_offset), int(roi.y_offset), int(roi.height), int(roi.width),
             bool(roi.do_rectify)))


def _calibration(reader: AnyReader) -> StereoCamera | None:
    """``read_bag_calibration`` of an open bag."""
    infos = _camera_infos(reader)
    if infos is None:
        return None
    return StereoCamera.from_projections(infos[0].p, infos[1].p)


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
                # stereo_image_proc's values, as the node publishes them: x_l - x_r + doffs.
                lowest = max(float(camera.doffs), 0.0)
                published = sample.disparity.astype(np.float32) + np.float32(camera.doffs)
                with np.errstate(invalid="ignore"):
                    known = np.isfinite(published) & (published >= lowest)
                stored = np.where(known, published, np.float32(lowest - 1.0))
                messages.append((truth, Disparity(
                    header=header(ns), image=image(ns, stored.astype(np.float32), "32FC1"),
                    f=camera.fx, t=camera.baseline,
                    valid_window=Roi(0, 0, height, width, False), min_disparity=lowest,
                    max_disparity=float(np.nanmax(sample.disparity)) + float(camera.doffs),
                    delta_d=1 / 256)))
            for connection, message in messages:
                writer.write(connection, ns, typestore.serialize_cdr(message,
                                                                     connection.msgtype))
    return path
