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
            ready = (self.pub_left.get_subscription_count() > 0
                     and self.pub_right_info.get_subscription_count() > 0)
            if ready and self.listening:
                ready = self.count_publishers(f"{self.prefix}disparity") > 0
            if ready:
                # The node's subscriptions match our publishers a few milliseconds after ours
                # match theirs, and nothing on this side can observe it: a pair published in
                # between is lost.
                time.sleep(0.5)
                return
            rclpy.spin_once(self, timeout_sec=0.1)
        raise TimeoutError(f"no node subscribed to {self.pub_left.topic_name} within "
                           f"{self.options.wait_for_node_s:g} s")

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
    accumulator = MetricAccumulator(options.max_disparity)
    result = ReplayResult()
    sent: dict[int, _Sent] = {}
    scored: set[int] = set()
    previous_arrival: list[float] = []
    composites = options.save_dir is not None and have_matplotlib()
    if options.save_dir is not None and not composites:
        report("matplotlib is not installed: saving colourised disparity only "
               "(pip install '.[plot]' in this package's clone, for composites)")
    # One colour scale for every saved frame, so that they compare: --max-disparity, else
    # taken from the first saved frame.
    scales: dict[str, float] = {}

    def saving(index: int) -> bool:
        return options.save_dir is not None and index % options.save_every == 0

    def save(info: _Sent, disparity: np.ndarray, confidence: Image | None,
             record: dict[str, Any]) -> None:
        assert options.save_dir is not None
        options.save_dir.mkdir(parents=True, exist_ok=True)
        path = options.save_dir / f"{info.index:04d}_{info.name}.png"
        if not composites or info.left is None:
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

    def complete(stamp: int) -> bool:
        """Whether the frame's statistics, and its confidence if it is saved, are here."""
        return stamp in node.frame_stats and (stamp in node.confidence
                                              or not saving(sent[stamp].index))

    def score_ready(final: bool = False) -> None:
        for stamp in sorted(set(node.outputs) - scored):
            if stamp not in sent:
                continue
            if (not final and not complete(stamp)
                    and time.monotonic() - node.outputs[stamp][1] < 1.0):
                continue  # give the rest of the frame a moment to arrive
            scored.add(stamp)
            message, arrival = node.outputs[stamp]
            info = sent[stamp]
            stats = node.frame_stats.get(stamp, {})
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
            if previous_arrival:
                record["fps"] = 1.0 / max(arrival - previous_arrival[-1], 1e-9)
            previous_arrival.append(arrival)
            disparity = decode_disparity_image(message, info.doffs)
            if info.ground_truth is not None:
                metrics = accumulator.add(disparity, info.ground_truth)
                record["D1_all"], record["EPE"] = metrics["D1_all"], metrics["EPE"]
            confidence = node.confidence.pop(stamp, None)
            if saving(info.index):
                save(info, disparity, confidence, record)
            result.frames.append(record)
            report(_frame_line(record))
        for stamp in scored & set(node.confidence):
            del node.confidence[stamp]  # arrived after its frame was scored, not to be saved

    def recorded(position: int, sample: StereoSample) -> tuple[int, str, str]:
        if recorded_header is not None:
            return recorded_header(position)
        stamp = (round(sample.stamp * 1e9) if sample.stamp is not None
                 else FIRST_STAMP_NS + round(position * 1e9 / DEFAULT_RATE_HZ))
        return stamp, options.frame_id, options.frame_id

    try:
        node.wait_until_connected()
        period = None if options.rate in ("recorded", "fast") else 1.0 / float(options.rate)
        index = 0
        first_ns: int | None = None  # the first pair's recorded stamp
        offset_ns = 0  # added to recorded stamps: ROS time 0 means "not set"
        pass_ns = 0  # one pass's duration; each repeat comes that much later
        last_ns, count = 0, 0  # the first pass's latest stamp and number of pairs
        start = time.monotonic()
        for repeat in range(options.repeat):
            for position, sample in enumerate(samples):
                if options.max_frames is not None and index >= options.max_frames:
                    break
                recorded_ns, left_frame, right_frame = recorded(position, sample)
                if first_ns is None:
                    first_ns = recorded_ns
                    offset_ns = max(0, FIRST_STAMP_NS - recorded_ns)
                if not repeat:
                    last_ns, count = max(last_ns, recorded_ns), count + 1
                replay_ns = recorded_ns + offset_ns + repeat * pass_ns
                if options.rate == "recorded":
                    due = start + (replay_ns - offset_ns - first_ns) / 1e9
                elif period is not None:
                    due = start + index * period
                else:
                    due = time.monotonic()
                node.spin_until(lambda: time.monotonic() >= due,  # noqa: B023
                                max(0.0, due - time.monotonic()))
                stamp_value = replay_ns if options.clock else time.time_ns()
                camera = camera_for(sample)
                sent[stamp_value] = _Sent(index, sample.name, sample.disparity,
                                          time.monotonic(), not options.clock, camera.doffs,
                                          sample.left if saving(index) else None)
                node.publish_pair(sample, camera, _to_time(stamp_value), left_frame, right_frame,
                                  calibration)
                if options.rate == "fast":
                    if not node.spin_until(lambda: stamp_value in node.outputs,  # noqa: B023
                                           options.frame_timeout_s):
                        report(f"frame {index}: no output from the node within "
                               f"{options.frame_timeout_s:g} s (rejected or dropped?)")
                if node.listening:
                    score_ready()
                index += 1
            if not repeat and first_ns is not None:
                period_ns = (last_ns - first_ns) // (count - 1) if count > 1 \
                    else round(1e9 / DEFAULT_RATE_HZ)
                pass_ns = last_ns - first_ns + max(period_ns, 1)
        if node.listening:
            node.spin_until(lambda: set(sent) <= set(node.outputs), options.drain_s)
            node.spin_until(lambda: all(map(complete, set(node.outputs) & set(sent))), 1.5)
            score_ready(final=True)
    except KeyboardInterrupt:
        result.interrupted = True
        if node.listening:
            score_ready(final=True)
    finally:
        result.summary = _summary(result.frames, len(sent), accumulator, node.listening)
        if result.interrupted:
            result.summary["interrupted"] = True
        node.destroy_node()
    return result


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
