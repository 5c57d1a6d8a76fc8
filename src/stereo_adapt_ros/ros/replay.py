"""Replay a stereo dataset or rosbag2 as ROS topics, and optionally score what the node
publishes back against ground truth (so that a replay is an evaluation).

Samples come from the library's readers (``data.open_dataset``), so every dataset ``stereo-adapt
eval`` reads can be replayed; they are published as rgb8 ``left/image_rect`` and
``right/image_rect`` with matching ``left/camera_info`` and ``right/camera_info``. The two views
of a pair go out with one stamp (the left view's, for the node's exact sync) and, from a bag,
with their recorded frame ids and camera_info (distortion, K, R, P, binning and ROI as
recorded).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from stereo_msgs.msg import DisparityImage

from ..data.bag import decode_disparity_image, stamp_ns
from ..data.io import write_color_disparity
from ..data.sample import StereoSample
from ..data.stereo_camera import CameraCalibration, StereoCamera
from ..evaluation.figures import have_matplotlib, write_frame_composite
from ..evaluation.metrics import MetricAccumulator
from .conversion import array_from_msg, camera_info_msg, camera_info_msgs, image_msg

#: Rate when the samples have no stamps and the recorded rate is asked for.
DEFAULT_RATE_HZ = 10.0
#: Where recorded time starts for samples without stamps (sim time 0 means "not set").
FIRST_STAMP_NS = 1_000_000_000

#: The recorded header of sample ``index``: left stamp (ns), left and right frame_id.
RecordedHeader = Callable[[int], tuple[int, str, str]]


@dataclass
class ReplayOptions:
    """How to replay.

    rate: "recorded" (the samples' stamps; 10 Hz without stamps), "fast" (the next pair as
        soon as the node has published the output of the previous one), or a rate in Hz.
    clock: publish /clock and stamp with the recorded time (for use_sim_time): the samples'
        own stamps (from 1 s on at DEFAULT_RATE_HZ for samples without), shifted forward by
        one recording's span for each repeat; otherwise pairs are stamped with the wall-clock
        time at which they are published.
    evaluate: subscribe to the node's output and score it against the ground truth.
    namespace: the namespace of the node's topics.
    node: the node's full name (for its ~/frame_stats); None: ``stereo_adapt`` in
        ``namespace``.
    frame_id: the frame_id of samples that have none of their own (a bag's are kept).
    rviz_outputs: also subscribe to disparity/color, points2 and depth, which the node only
        computes while someone subscribes (to measure their cost).
    save_dir: while listening, write one frame in ``save_every`` here: a composite PNG (left
        image | disparity | the node's confidence | error against ground truth, with colour
        bars and the frame's D1 / EPE; see ``evaluation.figures``), or without matplotlib the
        colourised disparity alone.
    """

    rate: str | float = "recorded"
    clock: bool = False
    evaluate: bool = False
    namespace: str = ""
    node: str | None = None
    frame_id: str = "stereo_left_optical_frame"
    repeat: int = 1
    max_frames: int | None = None
    max_disparity: float | None = None
    wait_for_node_s: float = 120.0
    frame_timeout_s: float = 120.0
    drain_s: float = 30.0
    save_dir: Path | None = None
    save_every: int = 10
    rviz_outputs: bool = False


@dataclass
class _Sent:
    index: int
    name: str
    ground_truth: np.ndarray | None
    published: float  # time.monotonic()
    wall_stamp: bool
    doffs: float  # of the camera_info sent with the pair
    left: np.ndarray | None  # kept only for the frames to save


@dataclass
class ReplayResult:
    frames: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False


def _namespace(options: ReplayOptions) -> str:
    """``options.namespace`` as an absolute namespace ("/" for none)."""
    return "/" + options.namespace.strip("/")


def node_name(options: ReplayOptions) -> str:
    """The full name of the node replayed to (``options.node``, or stereo_adapt in the
    namespace)."""
    if options.node:
        return options.node
    return _namespace(options).rstrip("/") + "/stereo_adapt"


def _percentiles(values: Sequence[float]) -> dict[str, float]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return {}
    return {"median": float(np.median(finite)), "p90": float(np.percentile(finite, 90)),
            "mean": float(np.mean(finite)), "n": len(finite)}


class Replayer(Node):
    """Publishes samples and collects the node's answers (see ``replay``)."""

    def __init__(self, options: ReplayOptions, **kwargs: Any) -> None:
        super().__init__("stereo_adapt_replay", **kwargs)
        self.options = options
        prefix = _namespace(options).rstrip("/") + "/"
        self.prefix = prefix
        qos = QoSProfile(depth=10)
        self.pub_left = self.create_publisher(Image, f"{prefix}left/image_rect", qos)
        self.pub_right = self.create_publisher(Image, f"{prefix}right/image_rect", qos)
        self.pub_left_info = self.create_publisher(CameraInfo, f"{prefix}left/camera_info", qos)
        self.pub_right_info = self.create_publisher(CameraInfo, f"{prefix}right/camera_info",
                                                    qos)
        #: What a stereo node subscribes to, and so what the replay waits to be matched.
        self.inputs = (self.pub_left, self.pub_right, self.pub_left_info, self.pub_right_info)
        self.pub_clock = self.create_publisher(Clock, "/clock", 10) if options.clock else None
        self.outputs: dict[int, tuple[DisparityImage, float]] = {}
        self.frame_stats: dict[int, dict[str, str]] = {}
        self.confidence: dict[int, Image] = {}
        self.listening = options.evaluate or options.rate == "fast"
        if self.listening:
            self.create_subscription(DisparityImage, f"{prefix}disparity", self._on_disparity,
                                     QoSProfile(depth=10))
            self.create_subscription(DiagnosticArray, f"{node_name(options)}/frame_stats",
                                     self._on_frame_stats, 50)
            if options.save_dir is not None:
                self.create_subscription(Image, f"{prefix}confidence", self._on_confidence,
                                         QoSProfile(depth=10))
        if options.rviz_outputs:
            for kind, topic in ((Image, "disparity/color"), (PointCloud2, "points2"),
                                (Image, "depth")):
                self.create_subscription(kind, prefix + topic, lambda message: None,
                                         QoSProfile(depth=2))

    def _on_disparity(self, message: DisparityImage) -> None:
        self.outputs[stamp_ns(message)] = (message, time.monotonic())

    def _on_confidence(self, message: Image) -> None:
        self.confidence[stamp_ns(message)] = message

    def _on_frame_stats(self, message: DiagnosticArray) -> None:
        if message.status:
            self.frame_stats[stamp_ns(message)] = {v.key: v.value for v in message.status[0].values}

    def wait_until_connected(self) -> None:
        deadline = time.monotonic() + self.options.wait_for_node_s
        while time.monotonic() < deadline:
            # All four, as a stereo node subscribes to them: a pair or camera_info published
            # before its own subscription is matched here never reaches it.
            ready = all(publisher.get_subscription_count() > 0 for publisher in self.inputs)
            if ready and self.listening:
                ready = self.count_publishers(f"{self.prefix}disparity") > 0
            if ready:
                # The node's subscriptions match our publishers a few milliseconds after ours
                # match theirs, and nothing on this side can observe it: a pair published in
                # between is lost.
                time.sleep(0.5)
                return
            rclpy.spin_once(self, timeout_sec=0.1)
        missing = [publisher.topic_name for publisher in self.inputs
                   if publisher.get_subscription_count() == 0]
        what = (f"no node subscribed to {', '.join(missing)}" if missing
                else f"no node published {self.prefix}disparity")
        raise TimeoutError(f"{what} within {self.options.wait_for_node_s:g} s")

    def publish_pair(self, sample: StereoSample, camera: StereoCamera, stamp: Time,
                     left_frame: str, right_frame: str,
                     calibration: tuple[CameraCalibration, CameraCalibration] | None = None
                     ) -> None:
        """Publish the pair and its camera_info: ``calibration`` (the source's own, as
        recorded) where given, else made from ``camera``."""
        header = Header(stamp=stamp, frame_id=left_frame)
        right_header = Header(stamp=stamp, frame_id=right_frame)
        height, width = sample.left.shape[:2]
        if calibration is None:
            left_info, right_info = camera_info_msgs(camera, height, width, header)
        else:
            left_info = camera_info_msg(calibration[0], height, width, header)
            right_info = camera_info_msg(calibration[1], height, width, header)
        right_info.header = right_header
        if self.pub_clock is not None:
            self.pub_clock.publish(Clock(clock=stamp))
        self.pub_left_info.publish(left_info)
        self.pub_right_info.publish(right_info)
        self.pub_left.publish(image_msg(sample.left, "rgb8", header))
        self.pub_right.publish(image_msg(sample.right, "rgb8", right_header))

    def spin_until(self, done: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            rclpy.spin_once(self, timeout_sec=0.01)
        return done()


def _to_time(ns: int) -> Time:
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def replay(samples: Sequence[StereoSample], camera_for: Callable[[StereoSample], StereoCamera],
           options: ReplayOptions, report: Callable[[str], None] = print,
           recorded_header: RecordedHeader | None = None,
           calibration: tuple[CameraCalibration, CameraCalibration] | None = None
           ) -> ReplayResult:
    """Publish ``samples`` in order (``options.repeat`` times) and, when listening, collect and
    score the node's outputs. rclpy must be initialised. Returns per-frame records (stamp,
    latency, the node's loss / block / timings, D1_all / EPE where ground truth exists) and a
    summary of what was done, also when interrupted (KeyboardInterrupt: ``interrupted`` is
    set); ``report`` gets one line per frame.

    recorded_header: the recorded stamp and frame ids of sample ``index`` (a bag's, exact to
        the nanosecond: ``RosbagStereo.recorded_header``); otherwise the samples' stamps and
        ``options.frame_id``.
    calibration: the source's left and right camera_info as recorded (a bag's:
        ``read_bag_camera_infos``), published with every pair; otherwise the camera_info is
        made from ``camera_for``'s calibration (no distortion, K from P). ``camera_for`` must
        give the same P (its ``doffs`` undoes the node's principal point offset).
    """
    node = Replayer(options)
    scorer = _Scorer(node, _FrameSaver(options, report), options.max_disparity, report)
    source = _Source(samples, camera_for, _header_source(options, recorded_header), calibration)
    result = ReplayResult(frames=scorer.frames)
    try:
        node.wait_until_connected()
        _publish_all(node, scorer, source, options, report)
        if node.listening:
            scorer.drain(options.drain_s)
    except KeyboardInterrupt:
        result.interrupted = True
        if node.listening:
            scorer.score_ready(final=True)
    finally:
        result.summary = _summary(result.frames, len(scorer.sent), scorer.accumulator,
                                  node.listening)
        if result.interrupted:
            result.summary["interrupted"] = True
        node.destroy_node()
    return result


@dataclass(frozen=True)
class _Source:
    """What is replayed: the samples, their cameras, their recorded stamp and frame ids
    (``_header_source``) and the camera_info as recorded, if any (see ``replay``)."""

    samples: Sequence[StereoSample]
    camera_for: Callable[[StereoSample], StereoCamera]
    recorded: Callable[[int, StereoSample], tuple[int, str, str]]
    calibration: tuple[CameraCalibration, CameraCalibration] | None


def _header_source(options: ReplayOptions, recorded_header: RecordedHeader | None
                   ) -> Callable[[int, StereoSample], tuple[int, str, str]]:
    """The recorded (stamp in ns, left and right frame_id) of the sample at a position:
    ``recorded_header``'s, else the sample's own stamp (from FIRST_STAMP_NS on at
    DEFAULT_RATE_HZ without one) and ``options.frame_id``."""
    def recorded(position: int, sample: StereoSample) -> tuple[int, str, str]:
        if recorded_header is not None:
            return recorded_header(position)
        stamp = (round(sample.stamp * 1e9) if sample.stamp is not None
                 else FIRST_STAMP_NS + round(position * 1e9 / DEFAULT_RATE_HZ))
        return stamp, options.frame_id, options.frame_id
    return recorded


class _ReplayTime:
    """The recorded stamps as replayed: shifted forward so that the first is at least
    FIRST_STAMP_NS (ROS time 0 means "not set"), and each repeat one pass later (a pass: the
    first pass's span and one period between its pairs)."""

    def __init__(self) -> None:
        self.first_ns: int | None = None  # the first pair's recorded stamp
        self.offset_ns = 0  # added to recorded stamps
        self.pass_ns = 0  # one pass's duration; each repeat comes that much later
        self._last_ns, self._count = 0, 0  # the first pass's latest stamp and number of pairs

    def replayed(self, recorded_ns: int, repeat: int) -> int:
        """The stamp (ns) of the pair recorded at ``recorded_ns`` in pass ``repeat``."""
        if self.first_ns is None:
            self.first_ns = recorded_ns
            self.offset_ns = max(0, FIRST_STAMP_NS - recorded_ns)
        if not repeat:
            self._last_ns, self._count = max(self._last_ns, recorded_ns), self._count + 1
        return recorded_ns + self.offset_ns + repeat * self.pass_ns

    def elapsed_s(self, replay_ns: int) -> float:
        """Recorded seconds from the first pair to the one replayed at ``replay_ns``."""
        assert self.first_ns is not None
        return (replay_ns - self.offset_ns - self.first_ns) / 1e9

    def end_first_pass(self) -> None:
        """The first pass is over: its span sets when the repeats come."""
        if self.first_ns is None:
            return
        period_ns = (self._last_ns - self.first_ns) // (self._count - 1) if self._count > 1 \
            else round(1e9 / DEFAULT_RATE_HZ)
        self.pass_ns = self._last_ns - self.first_ns + max(period_ns, 1)


def _publish_all(node: Replayer, scorer: _Scorer, source: _Source, options: ReplayOptions,
                 report: Callable[[str], None]) -> None:
    """Publish the pairs (``options.repeat`` times, up to ``options.max_frames``) at
    ``options.rate``; when listening, score the outputs come so far after each pair."""
    period = None if options.rate in ("recorded", "fast") else 1.0 / float(options.rate)
    replay_time = _ReplayTime()
    index = 0
    start = time.monotonic()
    for repeat in range(options.repeat):
        for position, sample in enumerate(source.samples):
            if options.max_frames is not None and index >= options.max_frames:
                break
            recorded_ns, left_frame, right_frame = source.recorded(position, sample)
            replay_ns = replay_time.replayed(recorded_ns, repeat)
            if options.rate == "recorded":
                due = start + replay_time.elapsed_s(replay_ns)
            elif period is not None:
                due = start + index * period
            else:
                due = time.monotonic()
            node.spin_until(lambda: time.monotonic() >= due,  # noqa: B023
                            max(0.0, due - time.monotonic()))
            stamp_value = replay_ns if options.clock else time.time_ns()
            camera = source.camera_for(sample)
            scorer.sent[stamp_value] = _Sent(
                index, sample.name, sample.disparity, time.monotonic(), not options.clock,
                camera.doffs, sample.left if scorer.saver.wants(index) else None)
            node.publish_pair(sample, camera, _to_time(stamp_value), left_frame, right_frame,
                              source.calibration)
            if options.rate == "fast":
                if not node.spin_until(lambda: stamp_value in node.outputs,  # noqa: B023
                                       options.frame_timeout_s):
                    report(f"frame {index}: no output from the node within "
                           f"{options.frame_timeout_s:g} s (rejected or dropped?)")
            if node.listening:
                scorer.score_ready()
            index += 1
        if not repeat:
            replay_time.end_first_pass()


class _Scorer:
    """Matches the node's outputs (collected by the ``Replayer``) to the pairs ``sent`` and
    scores them: one record per frame in ``frames``, reported as it is scored, the metrics of
    the frames with ground truth in ``accumulator``, and the frames to save saved."""

    def __init__(self, node: Replayer, saver: _FrameSaver, max_disparity: float | None,
                 report: Callable[[str], None]) -> None:
        self.node = node
        self.saver = saver
        self.report = report
        self.accumulator = MetricAccumulator(max_disparity)
        self.sent: dict[int, _Sent] = {}
        self.frames: list[dict[str, Any]] = []
        self._scored: set[int] = set()
        self._previous_arrival: float | None = None

    def complete(self, stamp: int) -> bool:
        """Whether the frame's statistics, and its confidence if it is saved, are here."""
        return stamp in self.node.frame_stats and (
            stamp in self.node.confidence or not self.saver.wants(self.sent[stamp].index))

    def score_ready(self, final: bool = False) -> None:
        """Score the outputs of pairs sent that are complete, or waited for a second (with
        ``final``: every output of a pair sent)."""
        node = self.node
        for stamp in sorted(set(node.outputs) - self._scored):
            if stamp not in self.sent:
                continue
            if (not final and not self.complete(stamp)
                    and time.monotonic() - node.outputs[stamp][1] < 1.0):
                continue  # give the rest of the frame a moment to arrive
            self._scored.add(stamp)
            self._score(stamp)
        for stamp in self._scored & set(node.confidence):
            del node.confidence[stamp]  # arrived after its frame was scored, not to be saved

    def drain(self, timeout: float) -> None:
        """After the last pair: wait up to ``timeout`` for the outputs still to come (and a
        moment for their statistics), then score them all."""
        node = self.node
        node.spin_until(lambda: set(self.sent) <= set(node.outputs), timeout)
        node.spin_until(lambda: all(map(self.complete, set(node.outputs) & set(self.sent))),
                        1.5)
        self.score_ready(final=True)

    def _score(self, stamp: int) -> None:
        message, arrival = self.node.outputs[stamp]
        info = self.sent[stamp]
        record = self._record(stamp, message, arrival, info)
        disparity = decode_disparity_image(message, info.doffs)
        if info.ground_truth is not None:
            metrics = self.accumulator.add(disparity, info.ground_truth)
            record["D1_all"], record["EPE"] = metrics["D1_all"], metrics["EPE"]
        confidence = self.node.confidence.pop(stamp, None)
        if self.saver.wants(info.index):
            self.saver.save(info, disparity, confidence, record)
        self.frames.append(record)
        self.report(_frame_line(record))

    def _record(self, stamp: int, message: DisparityImage, arrival: float, info: _Sent
                ) -> dict[str, Any]:
        """The frame's record before scoring: stamp, latencies, the node's statistics, fps."""
        stats = self.node.frame_stats.get(stamp, {})
        record: dict[str, Any] = {"index": info.index, "name": info.name,
                                  "stamp": stamp / 1e9, "stamp_ns": stamp,
                                  "frame_id": message.header.frame_id,
                                  "round_trip_ms": (arrival - info.published) * 1e3}
        if info.wall_stamp:
            record["latency_ms"] = (time.time() - (time.monotonic() - arrival)
                                    - stamp / 1e9) * 1e3
        for key in ("loss", "block", "step_ms", "node_ms", "queue_wait_ms",
                    "adaptation_mode"):
            if key in stats:
                record[key] = stats[key]
        if self._previous_arrival is not None:
            record["fps"] = 1.0 / max(arrival - self._previous_arrival, 1e-9)
        self._previous_arrival = arrival
        return record


class _FrameSaver:
    """Writes one frame in ``options.save_every`` to ``options.save_dir`` (see
    ``ReplayOptions``), all with one colour scale so that they compare: --max-disparity, else
    taken from the first saved frame."""

    def __init__(self, options: ReplayOptions, report: Callable[[str], None]) -> None:
        self.options = options
        self.composites = options.save_dir is not None and have_matplotlib()
        if options.save_dir is not None and not self.composites:
            report("matplotlib is not installed: saving colourised disparity only "
                   "(pip install '.[plot]' in this package's clone, for composites)")
        self._scales: dict[str, float] = {}

    def wants(self, index: int) -> bool:
        return self.options.save_dir is not None and index % self.options.save_every == 0

    def save(self, info: _Sent, disparity: np.ndarray, confidence: Image | None,
             record: dict[str, Any]) -> None:
        options, scales = self.options, self._scales
        assert options.save_dir is not None
        options.save_dir.mkdir(parents=True, exist_ok=True)
        path = options.save_dir / f"{info.index:04d}_{info.name}.png"
        if not self.composites or info.left is None:
            write_color_disparity(path, disparity, options.max_disparity)
            return
        if not scales:
            reference = info.ground_truth if info.ground_truth is not None else disparity
            finite = reference[np.isfinite(reference)]
            scales["disparity"] = options.max_disparity or (
                float(np.percentile(finite, 99)) if finite.size else 1.0)
            scales["error"] = max(3.0, scales["disparity"] / 4)
        title = f"frame {info.index} ({info.name})"
        if "D1_all" in record:
            title += f"  D1_all {record['D1_all']:.2f} %  EPE {record['EPE']:.2f} px"
        write_frame_composite(path, info.left, disparity,
                              None if confidence is None else array_from_msg(confidence),
                              info.ground_truth, scales["disparity"], scales["error"], title)


def _frame_line(record: dict[str, Any]) -> str:
    parts = [f"frame {record['index']:4d}"]
    if "fps" in record:
        parts.append(f"fps {record['fps']:5.2f}")
    if "loss" in record:
        parts.append(f"loss {float(record['loss']):.4f}")
    if record.get("block"):
        parts.append(f"block {record['block']}")
    if "D1_all" in record:
        parts.append(f"D1 {record['D1_all']:6.2f}%  EPE {record['EPE']:6.2f}")
    if "latency_ms" in record:
        parts.append(f"latency {record['latency_ms']:7.1f} ms")
    return "  ".join(parts)


def _summary(frames: list[dict[str, Any]], sent: int, accumulator: MetricAccumulator,
             listening: bool) -> dict[str, Any]:
    """What was done; ``received`` only when the replay subscribed to the outputs (it did
    not count them otherwise, and 0 would be a claim it did not measure)."""
    summary: dict[str, Any] = {"sent": sent}
    if listening:
        summary["received"] = len(frames)
    if accumulator.frames:
        overall = accumulator.summary()
        summary.update(frames_scored=accumulator.frames, D1_all=overall["D1_all"],
                       EPE=overall["EPE"], bad3=overall["bad3"], density=overall["density"])
    for key in ("latency_ms", "round_trip_ms", "node_ms", "step_ms", "queue_wait_ms"):
        values = [float(f[key]) for f in frames if key in f]
        if values:
            summary[key] = _percentiles(values)
    node_ms = [float(f["node_ms"]) - float(f["step_ms"]) for f in frames
               if "node_ms" in f and "step_ms" in f]
    if node_ms:
        summary["node_overhead_ms"] = _percentiles(node_ms)
    fps = [f["fps"] for f in frames if "fps" in f]
    if fps:
        summary["fps"] = float(len(fps) / sum(1.0 / v for v in fps))
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """Human-readable lines of a replay summary."""
    counted = (f"received {summary['received']} outputs for {summary['sent']} pairs sent"
               if "received" in summary else
               f"{summary['sent']} pairs sent; outputs not counted (only --evaluate or "
               f"--rate fast subscribes to the node's outputs)")
    lines = [counted + (" (interrupted)" if summary.get("interrupted") else "")]
    if "D1_all" in summary:
        lines.append(f"overall over {summary['frames_scored']} frames: D1_all "
                     f"{summary['D1_all']:.2f} %, EPE {summary['EPE']:.2f} px, bad3 "
                     f"{summary['bad3']:.2f} %, density {summary['density']:.1f} %")
    if "fps" in summary:
        lines.append(f"output rate {summary['fps']:.2f} fps")
    names = {"latency_ms": "end-to-end latency (input stamp to output received)",
             "node_ms": "node time per frame (conversion, adapter step, publishing)",
             "step_ms": "adapter step",
             "node_overhead_ms": "node overhead beyond the adapter step",
             "queue_wait_ms": "wait in the node's queue"}
    for key, name in names.items():
        if key in summary:
            stats = summary[key]
            lines.append(f"{name}: median {stats['median']:.1f} ms, p90 {stats['p90']:.1f} ms")
    return "\n".join(lines)
