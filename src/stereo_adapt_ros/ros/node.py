"""The ROS 2 node: synchronised rectified stereo in; disparity, confidence, and for rviz a
colourised disparity, a point cloud and depth out; MADNet adapting online as it runs.

Callbacks only synchronise and hand the newest pair to a one-slot queue; one worker thread owns
the ``OnlineAdapter``, converts, steps, publishes, and applies model-affecting parameter changes
and service requests between frames.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
import rclpy.executors
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_srvs.srv import SetBool, Trigger
from stereo_msgs.msg import DisparityImage

from ..adaptation.adapter import (LOSSES, MODES, OPTIMIZERS, AdapterConfig, OnlineAdapter,
                                  StepResult, select_device)
from ..adaptation.proxy import CONFIDENCE_MEASURES, PROXY_METHODS
from ..adaptation.sampler import SAMPLING_STRATEGIES
from ..data.io import colorize_disparity
from ..evaluation.sgbm import SGBM_MODES
from ..network.weights import load_model
from .conversion import camera_from_infos, disparity_msg, image_from_msg, image_msg, points_msg
from .sync import StreamMonitor, make_synchronizer, stamp_ns

NODE_NAME = "stereo_adapt"
INPUT_TOPICS = ("left/image_rect", "right/image_rect", "left/camera_info", "right/camera_info")
RELIABILITIES = ("best_effort", "reliable")
#: How often, at most, the log explains why input pairs are not forming or are rejected.
EXPLAIN_PERIOD_S = 5.0
#: Messages that have not formed a pair after this long are explained in the log.
UNPAIRED_AGE_S = 1.0
SERVICE_TIMEOUT_S = 60.0

# Parameters the worker applies to the adapter between frames.
_ADAPTER_PARAMETERS = {"adaptation_mode": "mode", "learning_rate": "learning_rate",
                       "optimizer": "optimizer", "mad_sampling": "mad_sampling",
                       "mad_fixed_block": "mad_fixed_block", "mad_loss_scale": "mad_loss_scale",
                       "adapt_every_n": "adapt_every_n",
                       "reset_loss_threshold": "reset_loss_threshold",
                       "input_scale": "input_scale", "smoothness_weight": "smoothness_weight",
                       "adaptation_loss": "loss", "proxy_method": "proxy_method",
                       "proxy_confidence": "proxy_confidence", "proxy_tau": "proxy_tau",
                       "proxy_weight": "proxy_weight",
                       "proxy_max_disparity": "proxy_max_disparity",
                       "proxy_sgbm_mode": "proxy_sgbm_mode"}


def _describe(description: str, read_only: bool = False, choices: tuple[str, ...] = (),
              low: float | None = None, high: float | None = None, integer: bool = False
              ) -> ParameterDescriptor:
    if choices:
        description += f" One of: {', '.join(choices)}."
    descriptor = ParameterDescriptor(description=description, read_only=read_only)
    if low is not None and integer:
        descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=1)]
    elif low is not None:
        descriptor.floating_point_range = [FloatingPointRange(from_value=float(low),
                                                              to_value=float(high), step=0.0)]
    return descriptor


# name: (default, descriptor). validate_parameter() checks what the descriptors cannot.
PARAMETERS: dict[str, tuple[Any, ParameterDescriptor]] = {
    "adaptation_mode": ("mad", _describe(
        "Online adaptation: none (inference only), full (whole network) or mad (one sampled "
        "block per frame).", choices=MODES)),
    "weights": ("synthetic", _describe(
        "Initial weights: a shipped name (synthetic, l2a), a .safetensors file, or random. "
        "Changing it loads the new weights between frames (and makes them what reset returns "
        "to).")),
    "learning_rate": (1e-4, _describe("Learning rate of the online optimiser.", low=1e-8,
                                      high=1.0)),
    "optimizer": ("adam", _describe("Online optimiser.", choices=OPTIMIZERS)),
    "mad_sampling": ("probabilistic", _describe("How MAD picks the block to train.",
                                                choices=SAMPLING_STRATEGIES)),
    "mad_fixed_block": (2, _describe("The block trained when mad_sampling is fixed.", low=2,
                                     high=6, integer=True)),
    "mad_loss_scale": (1.0, _describe(
        "MAD steps on blocks 3-6 compute the block's photometric loss on images resized by "
        "this (1: full resolution, as the original; 0.25: the network's output resolution, "
        "cheaper). Needs adaptation_loss photometric below 1.", low=0.1, high=1.0)),
    "adapt_every_n": (1, _describe("Adapt on one frame in n (the others are inference only).",
                                   low=1, high=1000, integer=True)),
    "reset_loss_threshold": (0.0, _describe(
        "Back to the initial weights when a frame's loss exceeds this (0: never).", low=0.0,
        high=10.0)),
    "smoothness_weight": (0.0, _describe("Weight of the edge-aware smoothness loss term.",
                                         low=0.0, high=10.0)),
    "adaptation_loss": ("photometric", _describe(
        "Adaptation loss: photometric (SSIM + L1 reconstruction), proxy (confidence-guided "
        "regression to a traditional matcher's disparity, computed on the CPU in parallel; "
        "MAD++ in mad mode) or both.", choices=LOSSES)),
    "proxy_method": ("sgbm", _describe("Proxy-label matcher: OpenCV SGBM, AD or census block "
                                       "matching.", choices=PROXY_METHODS)),
    "proxy_confidence": ("combined", _describe(
        "Proxy confidence: lr (left-right consistency), peak (uniqueness) or combined.",
        choices=CONFIDENCE_MEASURES)),
    "proxy_tau": (0.8, _describe("Only proxy pixels with confidence above this are regressed.",
                                 low=0.0, high=0.999)),
    "proxy_weight": (0.1, _describe("Weight of the proxy term when adaptation_loss is both.",
                                    low=1e-6, high=1000.0)),
    "proxy_max_disparity": (128, _describe("Proxy search range, pixels of the input image.",
                                           low=1, high=1024, integer=True)),
    "proxy_sgbm_mode": ("sgbm", _describe("OpenCV SGBM variant of the sgbm proxy.",
                                          choices=tuple(SGBM_MODES))),
    "input_scale": (1.0, _describe(
        "The network runs on images resized by this factor; disparity is published in pixels "
        "of the input image.", low=0.05, high=4.0)),
    "max_disparity": (256.0, _describe(
        "Largest valid disparity in pixels (DisparityImage.max_disparity; larger values are "
        "published as invalid); also the top of disparity/color's colour scale.", low=1.0,
        high=4096.0)),
    "confidence_threshold": (0.0, _describe(
        "Pixels with a lower confidence are NaN in points2 and depth.", low=0.0, high=1.0)),
    "save_path": ("~/.ros/stereo_adapt/adapted.safetensors", _describe(
        "Where ~/save_weights writes the adapted weights (atomically).")),
    "device": ("auto", _describe("Torch device: auto (CUDA if available), cpu, cuda, cuda:1.",
                                 read_only=True)),
    "num_threads": (0, _describe("Torch CPU threads (0: torch's default).", read_only=True,
                                 low=0, high=256, integer=True)),
    "approximate_sync": (False, _describe(
        "Pair images whose stamps differ by up to approximate_sync_tolerance_seconds; "
        "exact stamps otherwise.", read_only=True)),
    "approximate_sync_tolerance_seconds": (0.01, _describe(
        "Largest stamp difference accepted by approximate sync.", read_only=True, low=0.0,
        high=10.0)),
    "queue_size": (5, _describe("Synchroniser queue per input.", read_only=True, low=1,
                                high=1000, integer=True)),
    "input_reliability": ("best_effort", _describe(
        "QoS reliability of the input subscriptions (SensorDataQoS is best_effort).",
        read_only=True, choices=RELIABILITIES)),
    "input_depth": (5, _describe("QoS history depth of the input subscriptions.",
                                 read_only=True, low=1, high=1000, integer=True)),
}


def validate_parameter(name: str, value: Any) -> None:
    """Raise ValueError with the reason if ``value`` is not acceptable for ``name``.

    Range checks of the descriptors are done by rclpy; this checks the rest. No side effects.
    """
    if name == "adaptation_mode" and value not in MODES:
        raise ValueError(f"adaptation_mode must be one of {', '.join(MODES)}, got {value!r}")
    if name == "optimizer" and value not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {value!r}")
    if name == "mad_sampling" and value not in SAMPLING_STRATEGIES:
        raise ValueError(f"mad_sampling must be one of {', '.join(SAMPLING_STRATEGIES)}, "
                         f"got {value!r}")
    for choice, allowed in (("adaptation_loss", LOSSES), ("proxy_method", PROXY_METHODS),
                            ("proxy_confidence", CONFIDENCE_MEASURES),
                            ("proxy_sgbm_mode", tuple(SGBM_MODES))):
        if name == choice and value not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    if name == "input_reliability" and value not in RELIABILITIES:
        raise ValueError(f"input_reliability must be one of {', '.join(RELIABILITIES)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if name == "weights" and value != "random":
        # Loads the file fully (on the CPU) so that a bad file is refused here, with the reason,
        # instead of failing later in the worker.
        load_model(value, "cpu")
    if name == "save_path" and not str(value).strip():
        raise ValueError("save_path must not be empty")


@dataclass
class _Pair:
    left: Image
    right: Image
    left_info: CameraInfo
    right_info: CameraInfo
    received: float  # time.perf_counter() when the pair formed


@dataclass
class _Stats:
    pairs_in: int = 0
    frames_out: int = 0
    dropped: int = 0
    rejected: int = 0
    loss: float = math.nan
    block: int | None = None
    step_ms: float = math.nan
    proxy_wait_ms: float = math.nan
    proxy_density: float = math.nan
    overhead_ms: float = math.nan
    latency_ms: float = math.nan
    fps: float = 0.0
    last_rejection: str = ""


class StereoAdaptNode(Node):
    """See the module docstring; the README lists topics, parameters and services."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for name, (default, descriptor) in PARAMETERS.items():
            self.declare_parameter(name, default, descriptor)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        # Accepted changes wake the worker so that they apply at once when no frames come
        # (rclpy has post-set callbacks from Jazzy on; on Humble they apply before the next
        # frame or service call).
        if hasattr(self, "add_post_set_parameters_callback"):
            self.add_post_set_parameters_callback(lambda parameters: self._wake())
        self._parameters_changed = False
        self._stats = _Stats()
        self._lock = threading.Condition()
        self._slot: _Pair | None = None
        self._commands: list[tuple[Callable[[], str], Future]] = []
        self._running = True
        self._output_times: list[float] = []
        self._last_warned: dict[str, float] = {}

        threads = self._param("num_threads")
        if threads > 0:
            torch.set_num_threads(threads)
        try:
            self.device = select_device(self._param("device"))
        except (ValueError, RuntimeError) as error:
            raise RuntimeError(f"device {self._param('device')!r}: {error}") from error
        self._weights = self._param("weights")
        try:
            self.adapter = OnlineAdapter.from_weights(self._weights, self._adapter_config(),
                                                      self.device)
        except ValueError as error:
            raise RuntimeError(f"cannot load weights {self._weights!r}: {error}. Set the "
                               "weights parameter to a shipped name (synthetic, l2a), a "
                               ".safetensors file, or random for an untrained network"
                               ) from error
        self.get_logger().info(f"weights {self._weights} ({self.adapter.info.trained_on}), "
                               f"device {self.device}, mode {self.adapter.config.mode}")

        output_qos = QoSProfile(depth=2)
        self._pub_disparity = self.create_publisher(DisparityImage, "disparity", output_qos)
        self._pub_confidence = self.create_publisher(Image, "confidence", output_qos)
        self._pub_color = self.create_publisher(Image, "disparity/color", output_qos)
        self._pub_points = self.create_publisher(PointCloud2, "points2", output_qos)
        self._pub_depth = self.create_publisher(Image, "depth", output_qos)
        self._pub_status = self.create_publisher(DiagnosticArray, "~/status", 10)
        self._pub_frame = self.create_publisher(DiagnosticArray, "~/frame_stats", 10)
        # Services wait for the worker to finish its frame: their own group keeps the input
        # callbacks running meanwhile (with the multi-threaded executor).
        services = ReentrantCallbackGroup()
        self.create_service(Trigger, "~/reset_weights", self._on_reset, callback_group=services)
        self.create_service(Trigger, "~/save_weights", self._on_save, callback_group=services)
        self.create_service(SetBool, "~/pause_adaptation", self._on_pause,
                            callback_group=services)

        input_qos = QoSProfile(depth=self._param("input_depth"),
                               history=qos_profile_sensor_data.history,
                               durability=qos_profile_sensor_data.durability,
                               reliability=ReliabilityPolicy.RELIABLE
                               if self._param("input_reliability") == "reliable"
                               else ReliabilityPolicy.BEST_EFFORT)
        self._approximate = self._param("approximate_sync")
        self._slop = self._param("approximate_sync_tolerance_seconds")
        self._monitor = StreamMonitor([self.resolve_topic_name(t) for t in INPUT_TOPICS])
        implementation = make_synchronizer(
            self, (Image, Image, CameraInfo, CameraInfo), INPUT_TOPICS, input_qos,
            self._approximate, self._param("queue_size"), self._slop, self._on_pair,
            self._monitor)
        self.get_logger().info(
            f"{'approximate' if self._approximate else 'exact'} time sync ({implementation}) "
            f"of {', '.join(self._monitor.names)}")
        # On the steady clock, so that status keeps coming when /clock stops (use_sim_time).
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(1.0, self._publish_status, clock=steady)
        self.create_timer(EXPLAIN_PERIOD_S, self._explain_missing_pairs, clock=steady)
        self._worker = threading.Thread(target=self._work, name="stereo_adapt_worker",
                                        daemon=True)
        self._worker.start()

    # --- parameters -------------------------------------------------------------------
    def _param(self, name: str) -> Any:
        return self.get_parameter(name).value

    def _adapter_config(self, overrides: dict[str, Any] | None = None) -> AdapterConfig:
        values = {name: self._param(name) for name in _ADAPTER_PARAMETERS}
        values.update(overrides or {})
        fields = {field: values[name] for name, field in _ADAPTER_PARAMETERS.items()}
        fields["reset_loss_threshold"] = fields["reset_loss_threshold"] or None
        return AdapterConfig(**fields)

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        """Validate only (no side effects): the worker applies accepted values between frames."""
        changes = {}
        try:
            for parameter in parameters:
                if parameter.name in PARAMETERS:
                    validate_parameter(parameter.name, parameter.value)
                    changes[parameter.name] = parameter.value
            if changes.keys() & _ADAPTER_PARAMETERS.keys():
                self._adapter_config(changes).validate()
        except ValueError as error:
            return SetParametersResult(successful=False, reason=str(error))
        return SetParametersResult(successful=True)

    def _apply_parameters(self) -> None:
        """In the worker, between frames: bring the adapter up to date with the parameters."""
        config = replace(self._adapter_config(), seed=self.adapter.config.seed)
        if config != self.adapter.config:
            self.adapter.reconfigure(config)
            self.get_logger().info(f"adapter reconfigured: mode {config.mode}, lr "
                                   f"{config.learning_rate:g}, optimizer {config.optimizer}")
        weights = self._param("weights")
        if weights != self._weights:
            try:
                model, info, extra = load_model(weights, self.device)
            except ValueError as error:
                self.get_logger().error(f"cannot load weights {weights!r}: {error}; keeping "
                                        f"{self._weights!r}")
            else:
                self.adapter.set_initial_weights(model.state_dict(), info, extra)
                self.get_logger().info(f"loaded weights {weights} ({info.trained_on})")
            self._weights = weights

    # --- inputs -----------------------------------------------------------------------
    def _on_pair(self, left: Image, right: Image, left_info: CameraInfo,
                 right_info: CameraInfo) -> None:
        pair = _Pair(left, right, left_info, right_info, time.perf_counter())
        self._monitor.paired()
        with self._lock:
            self._stats.pairs_in += 1
            if self._slot is not None:
                self._stats.dropped += 1
            self._slot = pair
            self._lock.notify()

    def _explain_missing_pairs(self) -> None:
        """Say why, when input messages have waited a while without forming a pair."""
        if self._monitor.stalled(UNPAIRED_AGE_S):
            self.get_logger().warning(
                f"no synchronised stereo pair for messages received over {UNPAIRED_AGE_S:g} s "
                f"ago: {self._monitor.explain(self._approximate, self._slop)}")

    # --- services ---------------------------------------------------------------------
    def _run_in_worker(self, command: Callable[[], str]) -> tuple[bool, str]:
        future: Future = Future()
        with self._lock:
            self._commands.append((command, future))
            self._lock.notify()
        try:
            return True, future.result(timeout=SERVICE_TIMEOUT_S)
        except Exception as error:  # the reason goes back to the caller
            return False, str(error) or type(error).__name__

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response):
        def reset() -> str:
            self.adapter.reset()
            return f"weights reset to the initial ones ({self._weights})"
        response.success, response.message = self._run_in_worker(reset)
        return response

    def _on_save(self, request: Trigger.Request, response: Trigger.Response):
        path = Path(os.path.expanduser(self._param("save_path")))

        def save() -> str:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.adapter.save(str(path))
            return f"saved the adapted weights to {path}"
        response.success, response.message = self._run_in_worker(save)
        return response

    def _on_pause(self, request: SetBool.Request, response: SetBool.Response):
        def pause() -> str:
            self.adapter.paused = bool(request.data)
            return "adaptation paused" if request.data else "adaptation resumed"
        response.success, response.message = self._run_in_worker(pause)
        return response

    # --- worker -----------------------------------------------------------------------
    def stop(self) -> None:
        with self._lock:
            self._running = False
            self._lock.notify()
        self._worker.join(timeout=30)

    def _wake(self) -> None:
        with self._lock:
            self._parameters_changed = True
            self._lock.notify()

    def _work(self) -> None:
        while True:
            with self._lock:
                while (self._running and self._slot is None and not self._commands
                       and not self._parameters_changed):
                    self._lock.wait()
                if not self._running:
                    return
                self._parameters_changed = False
                commands, self._commands = self._commands, []
                pair, self._slot = self._slot, None
            self._apply_parameters()
            for command, future in commands:
                try:
                    future.set_result(command())
                except Exception as error:
                    future.set_exception(error)
            if pair is not None:
                self._process(pair)

    def _reject(self, pair: _Pair, reason: str) -> None:
        message = f"dropped the pair stamped {stamp_ns(pair.left) / 1e9:.6f}: {reason}"
        with self._lock:
            self._stats.rejected += 1
            self._stats.last_rejection = reason
        # Throttled per kind of problem (the reason's first words) so that a stream of bad
        # frames does not flood the log while a new kind of problem shows at once.
        kind = " ".join(reason.split()[:3])
        now = time.monotonic()
        if now - self._last_warned.get(kind, -math.inf) >= EXPLAIN_PERIOD_S:
            self._last_warned[kind] = now
            self.get_logger().warning(message)

    def _process(self, pair: _Pair) -> None:
        start = time.perf_counter()
        try:
            left = image_from_msg(pair.left)
        except ValueError as error:
            return self._reject(pair, f"left image: {error}")
        try:
            right = image_from_msg(pair.right)
        except ValueError as error:
            return self._reject(pair, f"right image: {error}")
        if left.shape != right.shape:
            return self._reject(pair, f"left image is {pair.left.width} x {pair.left.height} "
                                      f"{pair.left.encoding} but right image is "
                                      f"{pair.right.width} x {pair.right.height} "
                                      f"{pair.right.encoding}")
        height, width = left.shape[:2]
        try:
            camera = camera_from_infos(pair.left_info, pair.right_info, height, width)
        except ValueError as error:
            return self._reject(pair, str(error))
        try:
            result = self.adapter.step(left, right)
        except ValueError as error:
            return self._reject(pair, str(error))
        self._publish(pair, camera, result, left)
        now = time.perf_counter()
        self._record(pair, result, (now - start) * 1e3)

    def _publish(self, pair: _Pair, camera, result: StepResult, left: np.ndarray) -> None:
        header = pair.left.header
        max_disparity = self._param("max_disparity")
        disparity = result.disparity
        valid = (result.confidence > 0) & (disparity <= max_disparity)
        self._pub_disparity.publish(disparity_msg(disparity, valid, camera, header,
                                                  max_disparity))
        self._pub_confidence.publish(image_msg(result.confidence, "32FC1", header))
        if self._pub_color.get_subscription_count():
            shown = np.where(valid, disparity, np.nan)
            colour = colorize_disparity(shown, max_disparity)[:, :, ::-1]
            self._pub_color.publish(image_msg(np.ascontiguousarray(colour), "bgr8", header))
        want_points = self._pub_points.get_subscription_count() > 0
        want_depth = self._pub_depth.get_subscription_count() > 0
        if want_points or want_depth:
            confident = valid & (result.confidence >= self._param("confidence_threshold"))
            if want_depth:
                self._pub_depth.publish(image_msg(camera.depth(disparity, confident), "32FC1",
                                                  header))
            if want_points:
                rgb = left if left.ndim == 3 else np.repeat(
                    (left[..., None] * 255).astype(np.uint8), 3, axis=2)
                self._pub_points.publish(points_msg(camera.points(disparity, confident), rgb,
                                                    header))

    def _record(self, pair: _Pair, result: StepResult, busy_ms: float) -> None:
        now = time.perf_counter()
        latency = (time.time() - stamp_ns(pair.left) / 1e9) * 1e3
        step_ms = result.timings.get("total", math.nan)
        with self._lock:
            stats = self._stats
            stats.frames_out += 1
            stats.loss, stats.block = result.loss, result.block
            stats.step_ms = step_ms
            if result.proxy_density is not None:
                stats.proxy_density = result.proxy_density
                stats.proxy_wait_ms = result.timings.get("proxy_wait", math.nan)
            stats.overhead_ms = busy_ms - step_ms
            stats.latency_ms = latency
            self._output_times = [t for t in self._output_times if now - t < 5.0] + [now]
            if len(self._output_times) > 1:
                stats.fps = (len(self._output_times) - 1) / (self._output_times[-1]
                                                            - self._output_times[0])
        values = {"loss": result.loss, "block": result.block if result.block else "",
                  "adapted": result.adapted, "reset": result.reset,
                  "step_ms": step_ms, "node_ms": busy_ms, "queue_wait_ms":
                  (time.perf_counter() - pair.received) * 1e3 - busy_ms,
                  "mode": self.adapter.config.mode}
        self._pub_frame.publish(self._diagnostics("frame", values, pair.left.header.stamp))

    # --- status -----------------------------------------------------------------------
    def _diagnostics(self, name: str, values: dict[str, Any], stamp=None,
                     level: bytes = DiagnosticStatus.OK, message: str = "") -> DiagnosticArray:
        array = DiagnosticArray()
        array.header.stamp = stamp if stamp is not None else self.get_clock().now().to_msg()
        array.status = [DiagnosticStatus(
            level=level, name=f"{self.get_fully_qualified_name()}: {name}", message=message,
            hardware_id=str(self.device),
            values=[KeyValue(key=k, value=f"{v:.4g}" if isinstance(v, float) else str(v))
                    for k, v in values.items()])]
        return array

    def _publish_status(self) -> None:
        with self._lock:
            stats = replace(self._stats)
        values = {"frames_in": stats.pairs_in, "frames_out": stats.frames_out,
                  "dropped": stats.dropped, "rejected": stats.rejected, "fps": stats.fps,
                  "loss": stats.loss, "block": stats.block or "",
                  "mode": self.adapter.config.mode, "paused": self.adapter.paused,
                  "device": str(self.device), "weights": self._weights,
                  "step_ms": stats.step_ms, "overhead_ms": stats.overhead_ms,
                  "latency_ms": stats.latency_ms, "last_rejection": stats.last_rejection,
                  "adaptation_loss": self.adapter.config.loss,
                  "proxy_density": stats.proxy_density, "proxy_wait_ms": stats.proxy_wait_ms}
        level, message = DiagnosticStatus.OK, "running"
        if stats.rejected and stats.last_rejection:
            level, message = DiagnosticStatus.WARN, f"last rejected pair: {stats.last_rejection}"
        self._pub_status.publish(self._diagnostics("status", values, level=level,
                                                   message=message))


def run(args: list[str] | None = None) -> int:
    """Init, spin, shutdown (``args``: the command line, with any ``--ros-args``)."""
    rclpy.init(args=args)
    node = None
    try:
        node = StereoAdaptNode()
    except RuntimeError as error:
        rclpy.logging.get_logger(NODE_NAME).fatal(str(error))
        rclpy.try_shutdown()
        return 1
    executor = rclpy.executors.MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    finally:
        node.stop()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
