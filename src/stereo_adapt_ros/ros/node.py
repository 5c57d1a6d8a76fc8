"""The ROS 2 node: synchronised rectified stereo in; disparity, confidence, and for rviz a
colourised disparity, a point cloud and depth out; MADNet adapting online as it runs.

Callbacks only synchronise and hand the newest pair to a one-slot queue; one worker thread owns
the ``OnlineAdapter``, converts, steps, publishes, and applies model-affecting parameter changes
and service requests between frames.

Two nodes share that implementation (``StereoAdaptNodeBase``): ``StereoAdaptNode`` runs from its
start; ``StereoAdaptLifecycleNode`` is a managed node that loads the network on configure and
subscribes on activate. With ``process_only_while_subscribed`` both subscribe to their inputs
only while something subscribes to an output.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
import traceback
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
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import ParameterException
from rclpy.lifecycle import (LifecycleNodeMixin, LifecyclePublisher, LifecycleState,
                             TransitionCallbackReturn)
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.service import Service
from rclpy.signals import SignalHandlerOptions
from rclpy.timer import Timer
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_srvs.srv import SetBool, Trigger
from stereo_msgs.msg import DisparityImage

from ..adaptation.adapter import AdapterConfig, OnlineAdapter, StepResult
from ..adaptation.precision import select_device
from ..adaptation.proxy import check_confidence_available
from ..data.bag import stamp_ns
from ..data.io import colorize_disparity
from ..files import remove_stale_temporaries
from ..network.weights import load_model
from ..options import Option
from .conversion import (camera_from_infos, camera_info_beside, disparity_msg, image_conversion,
                         image_from_compressed_msg, image_from_msg, image_msg, points_msg,
                         valid_disparity)
from .parameters import (ADAPTER_PARAMETERS, PARAMETERS, check_value,
                         not_a_parameter_warning, validate_parameter, wrong_type_reason)
from .sync import InputSubscriptions, StreamMonitor, make_synchronizer

NODE_NAME = "stereo_adapt"
INPUT_TOPICS = ("left/image_rect", "right/image_rect", "left/camera_info", "right/camera_info")
#: How often, at most, the log explains why input pairs are not forming or are rejected.
EXPLAIN_PERIOD_S = 5.0
#: Messages that have not formed a pair after this long are explained in the log.
UNPAIRED_AGE_S = 1.0
SERVICE_TIMEOUT_S = 60.0
#: Service requests kept per service while one is being answered.
SERVICE_QUEUE_DEPTH = 100
#: The longest the main thread waits in the executor (how soon it sees a signal).
SPIN_PERIOD_S = 0.1
#: How long shutting down waits for the worker to finish the frame it is on.
STOP_TIMEOUT_S = 30.0
#: How compressed inputs are decoded (``data.io.decode_encoded_image``), for the log.
_COMPRESSED = "compressed (PNG and JPEG by Pillow, other formats by OpenCV)"
#: Inputs silent for this long make ~/status WARN "no input for N s" (stale, as
#: diagnostic_updater says of a topic that stopped), and the output frequency is counted
#: over a window this long.
STALE_INPUT_S = 5.0
#: latency_ms (wall clock minus input stamp) is reported only for stamps this close to the
#: wall clock: bag stamps and sim time are not on it, and the difference means nothing.
LATENCY_PLAUSIBLE_S = 60.0
#: How long a rejected pair, a collapse reset or an unexpected error keeps ~/status at WARN.
WARNING_HOLD_S = 10.0
#: How often the idle worker looks whether a subscriber came, while idle steps wait for one
#: (process_only_while_subscribed): nothing in rclpy wakes it when one does.
SUBSCRIBER_POLL_S = 0.5


def parameter_descriptor(declared: Option) -> ParameterDescriptor:
    """The ROS descriptor of a declared option: its description (with the choices), read-only,
    and its range (rclpy refuses values outside it)."""
    description = declared.description
    if declared.choices:
        description += f" One of: {', '.join(declared.choices)}."
    descriptor = ParameterDescriptor(description=description, read_only=declared.read_only)
    low, high = declared.low, declared.high
    if low is not None and high is not None and declared.type is int:
        descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=int(high),
                                                 step=1)]
    elif low is not None and high is not None:
        descriptor.floating_point_range = [FloatingPointRange(
            from_value=float(low), to_value=float(high), step=0.0)]
    return descriptor


@dataclass
class _Pair:
    left: Image | CompressedImage
    right: Image | CompressedImage
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
    receive_to_output_ms: float = math.nan
    last_rejection: str = ""
    collapse_resets: int = 0
    last_collapse: str = ""
    reference_checks: int = 0  # adapted frames judged against the frozen initial weights
    reference_won: int = 0  # of which the initial weights' prediction was published
    idle_steps: int = 0
    idle_steps_left: int = 0  # of the idle_steps_per_pair budget of the last pair
    errors: int = 0
    last_error: str = ""
    unsubscribed: int = 0  # pairs not processed for want of a subscriber
    # time.monotonic() of the last rejection, collapse reset and unexpected error
    rejected_at: float = -math.inf
    collapse_at: float = -math.inf
    error_at: float = -math.inf


class StereoAdaptNodeBase(Node):
    """The node's implementation, shared by ``StereoAdaptNode`` (which configures and
    activates itself at start) and ``StereoAdaptLifecycleNode`` (which waits for the
    lifecycle transitions). The parameters are declared at construction; ``_configure``
    loads the network and makes the outputs, services, timers and the worker; ``_activate``
    and ``_deactivate`` open and close the inputs; the README lists topics, parameters and
    services."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._declare_parameters()
        self._parameters_changed = False
        self._stats = _Stats()
        self._lock = threading.Condition()
        self._slot: _Pair | None = None
        self._commands: list[tuple[Callable[[], str], Future]] = []
        self._running = False  # whether the worker runs (from _configure on)
        self._worker: threading.Thread | None = None
        self._in_flight = False  # whether the worker is on a pair
        self._output_times: list[float] = []  # time.monotonic() of the recent outputs
        self._started = time.monotonic()
        # Status stamps on the system clock: under use_sim_time the node's clock stops with
        # /clock, and diagnostics stamped with it would freeze.
        self._system_clock = Clock(clock_type=ClockType.SYSTEM_TIME)
        self._last_warned: dict[str, float] = {}
        # What _configure makes (publishers, services, timers), for the lifecycle's cleanup.
        self._made: list[Any] = []
        # Whether pairs are wanted at all (active); the inputs are subscribed while they are
        # and, with process_only_while_subscribed, something subscribes to an output.
        self._active = False
        self._inputs: InputSubscriptions | None = None
        self._inputs_lock = threading.Lock()
        self._inputs_described = False
        self._inputs_since = time.monotonic()  # when they were last subscribed
        self._monitor = StreamMonitor(self._input_topics()[0])

    def _configure(self) -> None:
        """Check the parameters, load the network, make the outputs, services and timers,
        and start the worker; RuntimeError with the reason (one line) when the parameters or
        the weights are refused, in which case nothing was made."""
        self._check_start_values()
        self._load_adapter()
        self._stats = _Stats()
        self._output_times = []
        self._started = time.monotonic()
        self._slot, self._parameters_changed = None, False
        self._make_publishers()
        self._make_services()
        # On the steady clock, so that status keeps coming when /clock stops (use_sim_time).
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._made += [
            self.create_timer(1.0, self._publish_status, clock=steady),
            self.create_timer(EXPLAIN_PERIOD_S, self._explain_missing_pairs, clock=steady),
            # Lazy subscription: rclpy calls nothing when a subscriber comes or goes (matched
            # events are not in every distribution's rclpy), so the outputs are looked at.
            self.create_timer(SUBSCRIBER_POLL_S, self._update_inputs, clock=steady)]
        self._running = True
        self._worker = threading.Thread(target=self._work, name="stereo_adapt_worker",
                                        daemon=True)
        self._worker.start()

    def _activate(self) -> None:
        """Pairs are wanted from now on: the inputs are subscribed (at once, or with
        process_only_while_subscribed once something subscribes to an output)."""
        self._active = True
        self._update_inputs()
        if self._inputs is None:
            self.get_logger().info("process_only_while_subscribed: the inputs are subscribed "
                                   "once something subscribes to an output")

    def _deactivate(self) -> None:
        """No more pairs: the inputs are unsubscribed, a waiting pair is discarded, and the
        frame in progress is finished (and published) before this returns."""
        self._active = False
        self._update_inputs()
        with self._lock:
            self._slot = None
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while self._in_flight and time.monotonic() < deadline:
                self._lock.wait(SPIN_PERIOD_S)

    def _update_inputs(self) -> None:
        """Subscribe to the inputs while active and, with process_only_while_subscribed, while
        something subscribes to an output; unsubscribe otherwise (as image_pipeline's lazy
        nodes do), so that no image crosses DDS for nobody."""
        wanted = self._active and (not self._param("process_only_while_subscribed")
                                   or self._subscribed())
        with self._inputs_lock:
            if wanted and self._inputs is None:
                self._inputs = self._subscribe_inputs()
            elif not wanted and self._inputs is not None:
                self._inputs.destroy(self)
                self._inputs = None
                if self._active:
                    self.get_logger().info("no subscriber to any output: inputs unsubscribed "
                                           "(process_only_while_subscribed)")

    def _declare_parameters(self) -> None:
        """Declare the parameters; RuntimeError (the FATAL line) naming the parameter, the
        value and what it takes when ROS refuses a start value (-p, --params-file)."""
        for name, declared in PARAMETERS.items():
            try:
                self.declare_parameter(name, declared.default, parameter_descriptor(declared))
            except ParameterException as error:
                raise RuntimeError(f"cannot start: {self._refusal(name, error)}") from error
        self.add_on_set_parameters_callback(self._on_set_parameters)
        # Accepted changes wake the worker so that they apply at once when no frames come
        # (rclpy has post-set callbacks from Jazzy on; on Humble they apply before the next
        # frame or service call).
        if hasattr(self, "add_post_set_parameters_callback"):
            self.add_post_set_parameters_callback(lambda parameters: self._wake())

    def _start_values(self) -> dict[str, Any]:
        """The values given at start (-p, --params-file) by name, declared or not. rclpy keeps
        them in an attribute of its own only (the same since Dashing); they are read to name a
        refused value and to check the qos_overrides before rclpy reads them."""
        overrides = getattr(self, "_parameter_overrides", {})
        return {name: parameter.value for name, parameter in overrides.items()}

    def _refusal(self, name: str, error: ParameterException) -> str:
        """The reason ROS refused the start value of parameter ``name``, in our words."""
        value = self._start_values().get(name)
        declared = PARAMETERS[name]
        if value is None:
            return f"{name}: {error}"
        if type(value) is not declared.type:
            return wrong_type_reason(name, value)
        try:
            check_value(name, value)
        except ValueError as reason:
            return str(reason)
        return f"{name}: {error}"

    def _check_start_values(self) -> None:
        """What ROS does not check at start: the choices of the parameters (ROS descriptors
        have none), an empty save_path, and the QoS overrides (which rclpy refuses with a
        traceback); RuntimeError (the FATAL line) with the parameter, value and what it takes.
        The weights are checked by loading them. A start value for an adapter option that is
        not a parameter (an old params file) is ignored with a warning."""
        for name in self._start_values():
            warning = not_a_parameter_warning(name)
            if warning:
                self.get_logger().warning(warning)
        try:
            for name in PARAMETERS:
                if name != "weights":
                    check_value(name, self._param(name))
            for name, value in self._start_values().items():
                check_qos_override(name, value)
        except ValueError as error:
            raise RuntimeError(f"cannot start: {error}") from error

    def _load_adapter(self) -> None:
        """The device, the adapter with its initial weights, and the cleanup of what a killed
        save left; RuntimeError with the reason (the FATAL line) when they cannot be had."""
        threads = self._param("num_threads")
        if threads > 0:
            torch.set_num_threads(threads)
        try:
            self.device = select_device(self._param("device"))
        except (ValueError, RuntimeError) as error:
            raise RuntimeError(f"device {self._param('device')!r}: {error}") from error
        self._weights = self._param("weights")
        config = self._adapter_config()
        try:
            config.validate()
        except ValueError as error:
            raise RuntimeError(f"cannot start: {error}") from error
        try:
            model, info, extra = load_model(self._weights, self.device)
        except ValueError as error:
            raise RuntimeError(f"cannot load weights {self._weights!r}: {error}. Set the "
                               "weights parameter to a shipped name (synthetic, l2a), a "
                               ".safetensors file, or random for an untrained network"
                               ) from error
        try:
            self.adapter = OnlineAdapter(model, info, config, self.device, extra)
        except ValueError as error:  # what the adapter needs beyond its options
            raise RuntimeError(f"cannot start: {error}") from error
        self.get_logger().info(f"weights {self._weights} ({self.adapter.info.trained_on}), "
                               f"device {self.device}, adaptation_mode "
                               f"{self.adapter.config.adaptation_mode}")
        save_path = Path(os.path.expanduser(self._param("save_path")))
        for stale in remove_stale_temporaries(save_path):
            self.get_logger().info(f"removed {stale}, left by a save that did not finish")

    def _make_publishers(self) -> None:
        """The outputs (reliable, depth 2, with the standard qos_overrides parameters), the
        node's status and per-frame diagnostics, and the status on /diagnostics too."""
        overrides = QoSOverridingOptions.with_default_policies()

        def output(kind: type, topic: str) -> Any:
            # A profile of its own: rclpy writes the topic's overrides into it.
            return self._publisher(kind, topic, QoSProfile(depth=2),
                                   qos_overriding_options=overrides)
        self._pub_disparity = output(DisparityImage, "disparity")
        self._pub_confidence = output(Image, "confidence")
        self._pub_color = output(Image, "disparity/color")
        self._pub_points = output(PointCloud2, "points2")
        self._pub_depth = output(Image, "depth")
        self._outputs = (self._pub_disparity, self._pub_confidence, self._pub_color,
                         self._pub_points, self._pub_depth)
        # Beside each output image, as depth_image_proc, rtabmap and nvblox expect; published
        # with their image only (a subscriber to one alone has nothing to pair it with).
        self._pub_info = {self._pub_confidence: output(CameraInfo, "confidence/camera_info"),
                          self._pub_color: output(CameraInfo, "disparity/color/camera_info"),
                          self._pub_depth: output(CameraInfo, "depth/camera_info")}
        self._pub_status = self._publisher(DiagnosticArray, "~/status", 10)
        self._pub_diagnostics = self._publisher(DiagnosticArray, "/diagnostics", 10)
        self._pub_frame = self._publisher(DiagnosticArray, "~/frame_stats", 10)

    def _publisher(self, kind: type, topic: str, qos: QoSProfile | int, **options: Any) -> Any:
        """A publisher, remembered among what _configure made (a lifecycle publisher in the
        lifecycle node, which publishes only while active)."""
        publisher = self.create_publisher(kind, topic, qos, **options)
        self._made.append(publisher)
        return publisher

    def _make_services(self) -> None:
        # Services wait for the worker to finish its frame. In a group of their own, one at
        # a time, they hold at most one of the executor's threads: the input and timer
        # callbacks (the default group) keep the other, also under a storm of calls. The
        # requests waiting meanwhile queue in DDS, SERVICE_QUEUE_DEPTH of them.
        services = MutuallyExclusiveCallbackGroup()
        service_qos = QoSProfile(depth=SERVICE_QUEUE_DEPTH)
        self._made += [
            self.create_service(Trigger, "~/reset_weights", self._on_reset,
                                qos_profile=service_qos, callback_group=services),
            self.create_service(Trigger, "~/save_weights", self._on_save,
                                qos_profile=service_qos, callback_group=services),
            self.create_service(SetBool, "~/pause_adaptation", self._on_pause,
                                qos_profile=service_qos, callback_group=services)]

    def _input_topics(self) -> tuple[list[str], list[str], type]:
        """The inputs' resolved names, their names as given, and the images' message type
        (raw or compressed, per image_transport)."""
        topics = list(INPUT_TOPICS)
        image_type: type = Image
        if self._param("image_transport") == "compressed":
            # As image_transport does: the base topic is resolved (remapped) first, then the
            # transport's suffix appended, so remapping left/image_rect moves both.
            topics[:2] = [f"{self.resolve_topic_name(t)}/compressed" for t in topics[:2]]
            image_type = CompressedImage
        return [self.resolve_topic_name(t) for t in topics], topics, image_type

    def _subscribe_inputs(self) -> InputSubscriptions:
        """The synchronised subscriptions to the images and camera_infos, with a new
        StreamMonitor (what came before they were closed says nothing about the inputs now)."""
        input_qos = QoSProfile(depth=self._param("input_depth"),
                               history=qos_profile_sensor_data.history,
                               durability=qos_profile_sensor_data.durability,
                               reliability=ReliabilityPolicy.RELIABLE
                               if self._param("input_reliability") == "reliable"
                               else ReliabilityPolicy.BEST_EFFORT)
        self._approximate = self._param("approximate_sync")
        self._slop = self._param("approximate_sync_tolerance_seconds")
        names, topics, image_type = self._input_topics()
        self._monitor = StreamMonitor(names)
        self._inputs_since = time.monotonic()
        inputs = make_synchronizer(
            self, message_types=(image_type, image_type, CameraInfo, CameraInfo),
            topics=topics, qos=input_qos, approximate=self._approximate,
            queue_size=self._param("queue_size"), slop=self._slop, callback=self._on_pair,
            monitor=self._monitor)
        if not self._inputs_described:
            self._inputs_described = True
            self.get_logger().info(
                f"{'approximate' if self._approximate else 'exact'} time sync "
                f"({inputs.implementation}) of {', '.join(names)}; image conversion: "
                f"{_COMPRESSED if image_type is CompressedImage else image_conversion()}")
        elif self._param("process_only_while_subscribed"):
            self.get_logger().info("an output has a subscriber: inputs subscribed again")
        return inputs

    # --- parameters -------------------------------------------------------------------
    def _param(self, name: str) -> Any:
        return self.get_parameter(name).value

    def _adapter_config(self, overrides: dict[str, Any] | None = None) -> AdapterConfig:
        """The adapter's parameters as a config, with ``overrides`` (proposed values) applied."""
        changes = overrides or {}
        return AdapterConfig(**{name: changes[name] if name in changes else self._param(name)
                                for name in ADAPTER_PARAMETERS})

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        """Validate only (no side effects): the worker applies accepted values between frames."""
        changes = {}
        try:
            for parameter in parameters:
                if parameter.name in PARAMETERS:
                    validate_parameter(parameter.name, parameter.value)
                    changes[parameter.name] = parameter.value
            if changes.keys() & ADAPTER_PARAMETERS.keys():
                config = self._adapter_config(changes)
                config.validate()
                if config.adaptation_loss != "photometric":
                    check_confidence_available(config.proxy_config())
        except ValueError as error:
            return SetParametersResult(successful=False, reason=str(error))
        except Exception as error:  # refused with the reason; the node stays up
            return SetParametersResult(successful=False,
                                       reason=f"{type(error).__name__}: {error}")
        return SetParametersResult(successful=True)

    def _apply_parameters(self) -> None:
        """In the worker, between frames: bring the adapter up to date with the parameters."""
        config = replace(self._adapter_config(), seed=self.adapter.config.seed)
        if config != self.adapter.config:
            self.adapter.reconfigure(config)
            self.get_logger().info(f"adapter reconfigured: adaptation_mode "
                                   f"{config.adaptation_mode}, lr "
                                   f"{config.learning_rate:g}, optimizer {config.optimizer}")
        weights = self._param("weights")
        if weights != self._weights:
            try:
                model, info, extra = load_model(weights, self.device)
            except Exception as error:  # the file may have changed since it was set
                self.get_logger().error(f"cannot load weights {weights!r}: {error}; keeping "
                                        f"{self._weights!r}")
            else:
                self.adapter.set_initial_weights(model.state_dict(), info, extra)
                self.get_logger().info(f"loaded weights {weights} ({info.trained_on})")
            self._weights = weights

    # --- inputs -----------------------------------------------------------------------
    def _want_confidence(self) -> bool:
        """Whether this frame needs the confidence map itself: someone subscribes to it, or
        a confidence_threshold above 0 applies to an output. Otherwise the adapter skips it
        (its in-view mask is all that marks the published disparity valid)."""
        if self._pub_confidence.get_subscription_count():
            return True
        if self._param("confidence_threshold") <= 0:
            return False
        return bool(self._param("mask_low_confidence")
                    or self._pub_points.get_subscription_count()
                    or self._pub_depth.get_subscription_count())

    def _subscribed(self) -> bool:
        """Whether anything subscribes to one of the outputs."""
        return any(publisher.get_subscription_count() for publisher in self._outputs)

    def _on_pair(self, left: Image | CompressedImage, right: Image | CompressedImage,
                 left_info: CameraInfo, right_info: CameraInfo) -> None:
        pair = _Pair(left, right, left_info, right_info, time.perf_counter())
        self._monitor.paired()
        wanted = not self._param("process_only_while_subscribed") or self._subscribed()
        with self._lock:
            self._stats.pairs_in += 1
            if not wanted:
                self._stats.unsubscribed += 1
                return
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
            if not self._running:
                return False, "the node is not configured (no network loaded)"
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
        if not response.success:  # the caller sees the reason; whoever reads the log too
            self.get_logger().error(f"cannot save the adapted weights to {path}: "
                                    f"{response.message}")
        return response

    def _on_pause(self, request: SetBool.Request, response: SetBool.Response):
        def pause() -> str:
            self.adapter.paused = bool(request.data)
            return "adaptation paused" if request.data else "adaptation resumed"
        response.success, response.message = self._run_in_worker(pause)
        return response

    # --- worker -----------------------------------------------------------------------
    def stop(self) -> None:
        """Let the worker finish the frame it is on (publishing its outputs) and end; service
        requests still waiting are answered with a failure. Call before destroying the node."""
        if self._worker is None:
            return
        with self._lock:
            self._running = False
            self._lock.notify()
            in_flight = self._in_flight
        if in_flight:
            self.get_logger().info("shutting down: finishing the frame in progress first")
        self._worker.join(timeout=STOP_TIMEOUT_S)
        if self._worker.is_alive():
            self.get_logger().warning(f"the worker did not finish its frame within "
                                      f"{STOP_TIMEOUT_S:g} s; shutting down anyway")
        with self._lock:
            commands, self._commands = self._commands, []
        for _, future in commands:
            future.set_exception(RuntimeError("the node is shutting down"))

    def _wake(self) -> None:
        with self._lock:
            self._parameters_changed = True
            self._lock.notify()

    def _work(self) -> None:
        # Whether an idle step may find something to adapt on: not after one found nothing
        # (paused, adaptation_mode none, no recent pair) until a pair, a service call or a
        # parameter change (a resume, say) comes.
        idle_ready = False
        while True:
            with self._lock:
                self._in_flight = False
                self._lock.notify_all()  # _deactivate may wait for the frame to be done
                while (self._running and self._slot is None and not self._commands
                       and not self._parameters_changed
                       and not (idle_ready and self._idle_allowed())):
                    self._lock.wait(SUBSCRIBER_POLL_S if idle_ready and self._idle_pending()
                                    else None)
                if not self._running:
                    return
                if self._commands or self._parameters_changed:
                    idle_ready = True
                self._parameters_changed = False
                commands, self._commands = self._commands, []
                pair, self._slot = self._slot, None
                self._in_flight = pair is not None
            # Whatever goes wrong in one piece of work is reported and the worker goes on with
            # the next, keeping the adapted weights: an exception must not end the thread.
            try:
                self._apply_parameters()
            except Exception as error:
                self._unexpected("applying the parameters", error)
            for command, future in commands:
                try:
                    future.set_result(command())
                except Exception as error:
                    future.set_exception(error)
            if pair is not None:
                idle_ready = True
                try:
                    self._process(pair)
                except Exception as error:
                    self._unexpected(f"the pair stamped {stamp_ns(pair.left) / 1e9:.6f}", error)
            elif idle_ready and self._idle_allowed():
                # Nothing waits: one replay step, then the loop looks for new work again.
                try:
                    idle_ready = self._idle_step()
                except Exception as error:
                    idle_ready = False
                    self._unexpected("an idle adaptation step", error)

    def _unexpected(self, what: str, error: Exception) -> None:
        """Log (with the traceback, throttled per kind of error) and count an unexpected error
        of the worker; ~/status reports the last one."""
        reason = f"{type(error).__name__}: {error}"
        with self._lock:
            self._stats.errors += 1
            self._stats.last_error = f"{what}: {reason}"
            self._stats.error_at = time.monotonic()
        kind = f"error {type(error).__name__}"
        now = time.monotonic()
        if now - self._last_warned.get(kind, -math.inf) >= EXPLAIN_PERIOD_S:
            self._last_warned[kind] = now
            self.get_logger().error(
                f"unexpected error in {what} (the node keeps running with its current "
                f"weights): {reason}\n{traceback.format_exc().rstrip()}")

    def _idle_pending(self) -> bool:
        """Whether idle_adaptation is on and the last pair's budget is not spent."""
        return bool(self._param("idle_adaptation")) and self._stats.idle_steps_left > 0

    def _idle_allowed(self) -> bool:
        """Whether an idle step may run now: ``_idle_pending``, and something subscribes to an
        output unless process_only_while_subscribed is off (pairs held back for want of a
        subscriber would otherwise leave the device busy adapting for nobody)."""
        return self._active and self._idle_pending() and (
            not self._param("process_only_while_subscribed") or self._subscribed())

    def _idle_step(self) -> bool:
        """One adaptation step on a recent pair, out of the budget; False when there was
        nothing to do (paused, adaptation_mode none, no recent pair)."""
        result = self.adapter.replay_step()
        if result is None:
            return False
        with self._lock:
            self._stats.idle_steps += 1
            self._stats.idle_steps_left -= 1
            left = self._stats.idle_steps_left
        self._note_collapse(result)
        self.get_logger().debug(
            f"idle step on a recent pair: {self._adaptation(result)}, loss {result.loss:.4g}, "
            f"{_timings(result.timings)}; {left} left of this pair's idle_steps_per_pair")
        return True

    def _note_collapse(self, result: StepResult) -> None:
        # Counted only: the adapter logs each reset itself, a collapse or a lost reference
        # check (into this node's log, see LibraryLogHandler); a line here would say it twice.
        if result.collapse:
            with self._lock:
                self._stats.collapse_resets += 1
                self._stats.last_collapse = result.collapse
                self._stats.collapse_at = time.monotonic()

    def _reject(self, pair: _Pair, reason: str) -> None:
        message = f"dropped the pair stamped {stamp_ns(pair.left) / 1e9:.6f}: {reason}"
        with self._lock:
            self._stats.rejected += 1
            self._stats.last_rejection = reason
            self._stats.rejected_at = time.monotonic()
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
            left = _input_image(pair.left)
        except ValueError as error:
            return self._reject(pair, f"left image: {error}")
        try:
            right = _input_image(pair.right)
        except ValueError as error:
            return self._reject(pair, f"right image: {error}")
        if left.shape != right.shape:
            return self._reject(pair, f"left image is {_describe(pair.left, left)} but right "
                                      f"image is {_describe(pair.right, right)}")
        height, width = left.shape[:2]
        try:
            camera = camera_from_infos(pair.left_info, pair.right_info, height, width)
        except ValueError as error:
            return self._reject(pair, str(error))
        want_confidence = self._want_confidence()
        try:
            result = self.adapter.step(left, right, want_confidence=want_confidence,
                                       want_loss=self._pub_frame.get_subscription_count() > 0)
        except ValueError as error:
            return self._reject(pair, str(error))
        self._publish(pair, camera, result, left, want_confidence)
        now = time.perf_counter()
        self._record(pair, result, (now - start) * 1e3)

    def _publish(self, pair: _Pair, camera, result: StepResult, left: np.ndarray,
                 want_confidence: bool) -> None:
        """The outputs of one frame; those that need the confidence map only when it was
        computed for this frame (``want_confidence``; a subscriber that joined during the
        step gets them from the next frame on)."""
        header = pair.left.header
        max_disparity = self._param("max_disparity")
        disparity = result.disparity
        valid = (result.confidence > 0) & valid_disparity(disparity, camera, max_disparity)
        if self._param("mask_low_confidence"):
            valid &= result.confidence >= self._param("confidence_threshold")
        self._pub_disparity.publish(disparity_msg(disparity, valid, camera, header,
                                                  max_disparity))
        height, width = disparity.shape

        def publish_image(publisher: Any, image: np.ndarray, encoding: str) -> None:
            publisher.publish(image_msg(image, encoding, header))
            self._pub_info[publisher].publish(camera_info_beside(pair.left_info, header,
                                                                 height, width))
        # Only a confidence computed for this frame goes out (not the in-view mask that
        # stands in for it when nobody wanted it, even if a subscriber joined since).
        if want_confidence and self._pub_confidence.get_subscription_count():
            publish_image(self._pub_confidence, result.confidence, "32FC1")
        if self._pub_color.get_subscription_count():
            shown = np.where(valid, disparity, np.nan)
            colour = colorize_disparity(shown, max_disparity)[:, :, ::-1]
            publish_image(self._pub_color, np.ascontiguousarray(colour), "bgr8")
        thresholded = self._param("confidence_threshold") > 0
        want_points = (self._pub_points.get_subscription_count() > 0
                       and (want_confidence or not thresholded))
        want_depth = (self._pub_depth.get_subscription_count() > 0
                      and (want_confidence or not thresholded))
        if want_points or want_depth:
            confident = valid & (result.confidence >= self._param("confidence_threshold"))
            if want_depth:
                publish_image(self._pub_depth, camera.depth(disparity, confident), "32FC1")
            if want_points:
                rgb = left if left.ndim == 3 else np.repeat(
                    (left[..., None] * 255).astype(np.uint8), 3, axis=2)
                self._pub_points.publish(points_msg(camera.points(disparity, confident), rgb,
                                                    header))

    def _record(self, pair: _Pair, result: StepResult, busy_ms: float) -> None:
        now = time.perf_counter()
        behind_s = time.time() - stamp_ns(pair.left) / 1e9
        latency = behind_s * 1e3 if abs(behind_s) < LATENCY_PLAUSIBLE_S else math.nan
        step_ms = result.timings.get("total", math.nan)
        with self._lock:
            stats = self._stats
            stats.frames_out += 1
            stats.idle_steps_left = self._param("idle_steps_per_pair")
            if result.reference_won is not None:
                stats.reference_checks += 1
                stats.reference_won += result.reference_won
            stats.loss, stats.block = result.loss, result.block
            stats.step_ms = step_ms
            if result.proxy_density is not None:
                stats.proxy_density = result.proxy_density
                stats.proxy_wait_ms = result.timings.get("proxy_wait", math.nan)
            stats.overhead_ms = busy_ms - step_ms
            stats.latency_ms = latency
            stats.receive_to_output_ms = (now - pair.received) * 1e3
            out_at = time.monotonic()
            self._output_times = [t for t in self._output_times
                                  if out_at - t < STALE_INPUT_S] + [out_at]
        self._note_collapse(result)
        values = {"loss": result.loss, "block": result.block if result.block else "",
                  "adapted": result.adapted, "reset": result.reset,
                  "collapse": result.collapse or "",
                  "reference_won": "" if result.reference_won is None else
                  result.reference_won,
                  "step_ms": step_ms, "node_ms": busy_ms, "queue_wait_ms":
                  (time.perf_counter() - pair.received) * 1e3 - busy_ms,
                  "adaptation_mode": self.adapter.config.adaptation_mode}
        self._pub_frame.publish(self._diagnostics("frame", values, pair.left.header.stamp))
        reference = ("" if result.reference_won is None else
                     ", reference check: the initial weights' prediction published"
                     if result.reference_won else
                     ", reference check: the adapted prediction published")
        self.get_logger().debug(
            f"frame {stamp_ns(pair.left) / 1e9:.6f}: {self._adaptation(result)}{reference}, "
            f"loss {result.loss:.4g}, node {busy_ms:.1f} ms, queue wait "
            f"{values['queue_wait_ms']:.1f} ms, {_timings(result.timings)}")

    def _adaptation(self, result: StepResult) -> str:
        """What a step did to the weights and why, for the debug log."""
        if result.collapse:  # the collapse guard or the lost reference checks
            return f"not adapted: back to the initial weights ({result.collapse})"
        if result.reset:
            return "not adapted: back to the initial weights (loss above reset_loss_threshold)"
        if result.skipped:
            return f"not adapted: step skipped ({result.skipped})"
        if result.adapted:
            block = f" block {result.block}" if result.block else ""
            return f"adapted ({self.adapter.config.adaptation_mode}{block})"
        if self.adapter.config.adaptation_mode == "none":
            return "not adapted: adaptation_mode none"
        if self.adapter.paused:
            return "not adapted: paused"
        return "not adapted: adapt_every_n"

    # --- status -----------------------------------------------------------------------
    def _diagnostics(self, name: str, values: dict[str, Any], stamp,
                     level: bytes = DiagnosticStatus.OK, message: str = "") -> DiagnosticArray:
        array = DiagnosticArray()
        array.header.stamp = stamp
        array.status = [self._status(name, values, level, message)]
        return array

    def _status(self, name: str, values: dict[str, Any], level: bytes = DiagnosticStatus.OK,
                message: str = "") -> DiagnosticStatus:
        return DiagnosticStatus(
            level=level, name=f"{self.get_fully_qualified_name()}: {name}", message=message,
            hardware_id=str(self.device),
            values=[KeyValue(key=k, value=f"{v:.4g}" if isinstance(v, float) else str(v))
                    for k, v in values.items()])

    def _frequency(self, frames_out: int) -> tuple[float, DiagnosticStatus]:
        """The output rate over the last STALE_INPUT_S (0 once outputs stop), and its status
        as diagnostic_updater's FrequencyStatus gives one."""
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._output_times if now - t < STALE_INPUT_S]
        window = min(STALE_INPUT_S, now - self._started)
        fps = len(recent) / window if window > 0 else 0.0
        values = {"events in window": len(recent), "events since startup": frames_out,
                  "duration of window (s)": window, "actual frequency (Hz)": fps}
        if recent:
            return fps, self._status("output frequency", values, message=f"{fps:.2f} Hz")
        return fps, self._status("output frequency", values, DiagnosticStatus.WARN,
                                 f"no output in the last {window:.0f} s")

    def _publish_status(self) -> None:
        with self._lock:
            stats = replace(self._stats)
        fps, frequency = self._frequency(stats.frames_out)
        values = {"frames_in": stats.pairs_in, "frames_out": stats.frames_out,
                  "dropped": stats.dropped, "rejected": stats.rejected, "fps": fps,
                  "loss": stats.loss, "block": stats.block or "",
                  "adaptation_mode": self.adapter.config.adaptation_mode,
                  "paused": self.adapter.paused,
                  "device": str(self.device), "weights": self._weights,
                  "step_ms": stats.step_ms, "overhead_ms": stats.overhead_ms,
                  "receive_to_output_ms": stats.receive_to_output_ms,
                  "last_rejection": stats.last_rejection,
                  "adaptation_loss": self.adapter.config.adaptation_loss,
                  "proxy_density": stats.proxy_density, "proxy_wait_ms": stats.proxy_wait_ms,
                  "collapse_resets": stats.collapse_resets, "idle_steps": stats.idle_steps,
                  "idle_steps_left": stats.idle_steps_left,
                  "reference_checks": stats.reference_checks,
                  "initial_weights_published": stats.reference_won,
                  "errors": stats.errors, "last_error": stats.last_error,
                  "unsubscribed": stats.unsubscribed}
        if math.isfinite(stats.latency_ms):  # only for stamps on the wall clock
            values["latency_ms"] = stats.latency_ms
        # Each problem is reported for WARNING_HOLD_S after it last happened; the last_* values
        # keep the history.
        problems = []
        now = time.monotonic()
        # Inputs closed on purpose (inactive, or nobody listens) are not silent inputs.
        subscribed = self._inputs is not None
        input_age = self._monitor.input_age()
        silent_s = input_age if input_age is not None else now - self._inputs_since
        if subscribed and silent_s >= STALE_INPUT_S:
            # Stale: what was left unpaired when the inputs stopped no longer matters.
            problems.append(f"no input for {silent_s:.0f} s" + (
                " (none since the inputs were subscribed)" if input_age is None else ""))
        unpaired = self._monitor.unpaired_age()
        if (subscribed and silent_s < STALE_INPUT_S and unpaired is not None
                and unpaired >= UNPAIRED_AGE_S):
            problems.append(f"no synchronised stereo pair for {unpaired:.1f} s: "
                            f"{self._monitor.explain(self._approximate, self._slop)}")
        if now - stats.rejected_at < WARNING_HOLD_S:
            problems.append(f"last rejected pair: {stats.last_rejection}")
        if now - stats.collapse_at < WARNING_HOLD_S:
            problems.append(f"last collapse reset: {stats.last_collapse}")
        if now - stats.error_at < WARNING_HOLD_S:
            problems.append(f"last unexpected error in {stats.last_error}")
        level = DiagnosticStatus.WARN if problems else DiagnosticStatus.OK
        message = "; ".join(problems) or "running"
        if not problems and stats.reference_checks:
            message += (f"; the initial weights' prediction was published on "
                        f"{stats.reference_won} of {stats.reference_checks} checked frames "
                        "(the adapted weights did worse there)")
        if (not problems and self._param("process_only_while_subscribed")
                and not self._subscribed()):
            message = ("idle: no subscriber to any output (process_only_while_subscribed): "
                       + ("inputs unsubscribed" if not subscribed else "pairs dropped"))
        status = self._diagnostics("status", values, self._system_clock.now().to_msg(),
                                   level=level, message=message)
        status.status.append(frequency)
        self._pub_status.publish(status)
        self._pub_diagnostics.publish(status)


class StereoAdaptNode(StereoAdaptNodeBase):
    """The node, configured and active from its start: RuntimeError with the reason (the
    FATAL line) when a parameter or the weights are refused."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._configure()
        self._activate()


class StereoAdaptLifecycleNode(LifecycleNodeMixin, StereoAdaptNodeBase):
    """The node as a managed (lifecycle) node, for launch's lifecycle events or nav2's
    lifecycle manager. It starts unconfigured, its parameters declared (and settable);
    ``configure`` checks them and loads the weights (FAILURE with the reason in one log line,
    staying unconfigured); ``activate`` activates the publishers and subscribes to the inputs;
    ``deactivate`` unsubscribes, finishes the frame in progress and deactivates the
    publishers; ``cleanup`` stops the worker and releases the network, the publishers, services
    and timers; ``shutdown`` does what the state it comes from needs of those."""

    def __init__(self, **kwargs: Any) -> None:
        StereoAdaptNodeBase.__init__(self, **kwargs)
        LifecycleNodeMixin.__init__(self)

    def _publisher(self, kind: type, topic: str, qos: QoSProfile | int, **options: Any) -> Any:
        publisher: LifecyclePublisher[Any] = self.create_lifecycle_publisher(
            kind, topic, qos, **options)
        self._made.append(publisher)
        return publisher

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._configure()
        except Exception as error:  # refused with the reason; the node stays unconfigured
            reason = str(error) if isinstance(error, RuntimeError) else \
                f"{type(error).__name__}: {error}"
            self.get_logger().error(f"configure failed, staying unconfigured: {reason}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)  # the publishers first: no output is lost
        self._activate()
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._active:
            self._deactivate()
        self._release()
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """After an unexpected error in a transition: back to unconfigured, released."""
        self._active = False
        self._update_inputs()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        """Stop the worker and destroy what _configure made; the network goes with the
        adapter. Does nothing for what was not made."""
        self.stop()
        self._worker = None
        for entity in self._made:
            if isinstance(entity, LifecyclePublisher):
                self.destroy_lifecycle_publisher(entity)
            elif isinstance(entity, Service):
                self.destroy_service(entity)
            elif isinstance(entity, Timer):
                self.destroy_timer(entity)
        self._made = []
        if hasattr(self, "adapter"):
            del self.adapter
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


#: What each QoS policy override takes, as rclpy reads it (the enum member's name, any case).
_QOS_POLICIES = {"history": HistoryPolicy, "reliability": ReliabilityPolicy,
                 "durability": DurabilityPolicy}


def check_qos_override(name: str, value: Any) -> None:
    """Raise ValueError naming the parameter, the value and what it takes when ``name`` is a
    standard qos_overrides parameter (``qos_overrides.<topic>.<publisher|subscription>.<policy>``)
    whose value rclpy would refuse with a traceback or DDS with an error."""
    if not name.startswith("qos_overrides."):
        return
    policy = name.rsplit(".", 1)[-1]
    if policy == "depth":
        if type(value) is not int or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    elif policy in _QOS_POLICIES:
        names = [member.lower() for member in _QOS_POLICIES[policy].__members__
                 if member != "UNKNOWN"]
        if not isinstance(value, str) or value.lower() not in names:
            raise ValueError(f"{name} must be one of {', '.join(names)}, got {value!r}")


class LibraryLogHandler(logging.Handler):
    """The library's Python log records (``stereo_adapt_ros.*``: the adapter's collapse
    resets, skipped steps, ...) as lines of the node's ROS log, in its format and on /rosout,
    instead of a second format on stderr."""

    def __init__(self, logger: Any) -> None:
        super().__init__()
        self._logger = logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
        except Exception:
            self.handleError(record)
            return
        if record.levelno >= logging.ERROR:
            self._logger.error(message)
        elif record.levelno >= logging.WARNING:
            self._logger.warning(message)
        elif record.levelno >= logging.INFO:
            self._logger.info(message)
        else:
            self._logger.debug(message)


def _input_image(message: Image | CompressedImage) -> np.ndarray:
    """A stereo input image from either transport; ValueError with the reason when bad."""
    if isinstance(message, CompressedImage):
        return image_from_compressed_msg(message)
    return image_from_msg(message)


def _timings(timings: dict[str, float]) -> str:
    """A step's timings (``StepResult.timings``) as "name N ms, ...", for the debug log."""
    return ", ".join(f"{name} {ms:.1f} ms" for name, ms in timings.items())


def _describe(message: Image | CompressedImage, image: np.ndarray) -> str:
    """"W x H encoding" of an input image, for the log."""
    kind = message.encoding if isinstance(message, Image) else message.format
    return f"{image.shape[1]} x {image.shape[0]} {kind}"


def _stop_on_signals(stop: threading.Event) -> None:
    """SIGINT and SIGTERM set ``stop``; a second one ends the process at once."""
    def handler(number: int, frame: Any) -> None:
        stop.set()
        signal.signal(number, signal.SIG_DFL)
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def run(args: list[str] | None = None, lifecycle: bool = False) -> int:
    """Init, spin, shutdown (``args``: the command line, with any ``--ros-args``) of the node,
    or with ``lifecycle`` of the lifecycle node (which stays unconfigured until told).

    rclpy's own signal handlers would shut the context down at once, under a frame the
    worker is still publishing; here a signal only ends the spin, and shutdown goes in order:
    the worker finishes its frame, then the node and its publishers go, then the context.
    """
    stop = threading.Event()
    _stop_on_signals(stop)
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    try:
        node: StereoAdaptNodeBase = StereoAdaptLifecycleNode() if lifecycle else StereoAdaptNode()
    except RuntimeError as error:
        rclpy.logging.get_logger(NODE_NAME).fatal(str(error))
        rclpy.try_shutdown()
        return 1
    library = logging.getLogger("stereo_adapt_ros")
    handler = LibraryLogHandler(node.get_logger())
    library.addHandler(handler)
    library.propagate = False
    # One thread for the services' group, one for the inputs, timers and parameters.
    executor = rclpy.executors.MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    try:
        # Short waits, so that a signal is seen within SPIN_PERIOD_S.
        while not stop.is_set():
            executor.spin_once(timeout_sec=SPIN_PERIOD_S)
    except rclpy.executors.ExternalShutdownException:
        pass
    finally:
        node.stop()
        executor.shutdown()
        node.destroy_node()
        library.removeHandler(handler)
        library.propagate = True
        rclpy.try_shutdown()
    return 0
