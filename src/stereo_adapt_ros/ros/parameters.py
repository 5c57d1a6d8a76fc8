"""The node's parameters: the adapter's options that the node has (``AdapterConfig``) and the
node's own (``NodeConfig``), each declared once with ``option()`` and a ROS parameter of the
same name. No ROS import here, so that the command line and the launch file can read them
without starting one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ..adaptation.adapter import AdapterConfig
from ..network.weights import load_model
from ..options import Option, declared_options, option

RELIABILITIES = ("best_effort", "reliable")
#: How the input images arrive, as image_transport names its transports: ``raw``
#: (sensor_msgs/Image on ``left/image_rect``) or ``compressed`` (sensor_msgs/CompressedImage on
#: ``left/image_rect/compressed``, PNG or JPEG, as compressed_image_transport and bags write).
IMAGE_TRANSPORTS = ("raw", "compressed")


@dataclass(frozen=True)
class NodeConfig:
    """The options of the node only: what it publishes, where it saves, where it runs and how
    it receives. The node reads them as parameters; this class declares them."""

    weights: str = option(
        "synthetic", "Initial weights: a shipped name (synthetic; l2a: stale, meta-learned from "
        "older weights and worse than synthetic, for comparison only), a .safetensors file, "
        "or random. Changing it loads the new weights between frames (and makes them what "
        "reset returns to).")
    max_disparity: float = option(
        256.0, "Largest valid disparity x_l - x_r in pixels (larger values are published as "
        "invalid; DisparityImage.max_disparity is this plus the principal point offset "
        "cx_r - cx_l, as the published values are); also the top of disparity/color's colour "
        "scale.", low=1.0, high=4096.0)
    idle_adaptation: bool = option(
        False, "When no new pair is waiting, keep adapting on the few most recent pairs "
        "(the adapter's replay_buffer), one step at a time (a new pair waits at most one "
        "step): a camera slower than the network turns into extra adaptation. Keeps the "
        "device busy, within idle_steps_per_pair; no idle steps while "
        "process_only_while_subscribed is set and nothing subscribes to an output.")
    idle_steps_per_pair: int = option(
        4, "Budget of idle_adaptation: after each pair it processes, the node takes at most "
        "this many idle steps until the next pair (the budget does not add up over pairs; a "
        "change counts from the next pair), so idle adaptation stops once the input stops. "
        "A pause holds the budget, a resume goes on with what is left.", low=1, high=100000)
    confidence_threshold: float = option(
        0.0, "Pixels with a lower confidence are NaN in points2 and depth (and invalid in "
        "disparity with mask_low_confidence).", low=0.0, high=1.0)
    mask_low_confidence: bool = option(
        False, "Publish disparity pixels whose confidence is below confidence_threshold as "
        "invalid too (as Isaac ROS ESS does), not only in points2 and depth.")
    process_only_while_subscribed: bool = option(
        False, "Lazy subscription: while nothing subscribes to any output, unsubscribe from "
        "the inputs (no image crosses DDS; no inference, no adaptation) and subscribe again "
        "once something does; a pair that comes in before the node notices is dropped "
        "unprocessed, counted as unsubscribed in ~/status.")
    save_path: str = option("~/.ros/stereo_adapt/adapted.safetensors",
                            "Where ~/save_weights writes the adapted weights (atomically).")
    device: str = option("auto", "Torch device: auto (CUDA if available), cpu, cuda, cuda:1.",
                         read_only=True)
    num_threads: int = option(0, "Torch CPU threads (0: torch's default).", low=0, high=256,
                              read_only=True)
    approximate_sync: bool = option(
        False, "Pair images whose stamps differ by up to approximate_sync_tolerance_seconds; "
        "exact stamps otherwise.", read_only=True)
    approximate_sync_tolerance_seconds: float = option(
        0.01, "Largest stamp difference accepted by approximate sync; 0: unbounded (the "
        "nearest stamps pair, as in stereo_image_proc).", low=0.0, high=10.0, read_only=True)
    queue_size: int = option(5, "Synchroniser queue per input.", low=1, high=1000,
                             read_only=True)
    input_reliability: str = option(
        "best_effort", "QoS reliability of the input subscriptions (SensorDataQoS is "
        "best_effort).", choices=RELIABILITIES, read_only=True)
    input_depth: int = option(5, "QoS history depth of the input subscriptions.", low=1,
                              high=1000, read_only=True)
    image_transport: str = option(
        "raw", "Input transport: raw (sensor_msgs/Image on left/image_rect, ...) or compressed "
        "(sensor_msgs/CompressedImage, PNG or JPEG, on left/image_rect/compressed, ...).",
        choices=IMAGE_TRANSPORTS, read_only=True)


#: The adapter's options the node has as parameters; the worker applies them between frames.
ADAPTER_PARAMETERS: Mapping[str, Option] = MappingProxyType(
    {name: declared for name, declared in declared_options(AdapterConfig).items()
     if declared.node})
#: Every parameter of the node, by name: the adapter's, then the node's own.
PARAMETERS: Mapping[str, Option] = MappingProxyType(
    {**ADAPTER_PARAMETERS, **declared_options(NodeConfig)})
#: The adapter's options the node does not have: experiment settings, flags of ``stereo-adapt
#: eval``; a start value for one (an old params file) is ignored with a warning.
NOT_PARAMETERS: Mapping[str, Option] = MappingProxyType(
    {name: declared for name, declared in declared_options(AdapterConfig).items()
     if not declared.node})


def not_a_parameter_warning(name: str) -> str | None:
    """What to say of a start value for ``name`` when it is an adapter option the node does
    not have; None for any other name."""
    declared = NOT_PARAMETERS.get(name)
    if declared is None:
        return None
    return (f"{name} is not a parameter of this node: the node runs it at its default "
            f"({declared.default!r}); it is a flag of stereo-adapt eval ({declared.flag}). "
            "The value given is ignored.")


def validate_parameter(name: str, value: Any) -> None:
    """Raise ValueError with the reason if ``value`` is not acceptable for ``name``: its
    declaration's choices and range, and that weights load and save_path is not empty. No side
    effects (checks across the adapter's parameters are ``AdapterConfig.validate``'s)."""
    check_value(name, value)
    if name == "weights" and value != "random":
        # Loads the file fully (on the CPU) so that a bad file is refused here, with the reason,
        # instead of failing later in the worker.
        load_model(value, "cpu")


def check_value(name: str, value: Any) -> None:
    """``validate_parameter`` without loading weights: choices, range, a save_path."""
    PARAMETERS[name].check(value)
    if name == "save_path" and not str(value).strip():
        raise ValueError("save_path must not be empty")


def wrong_type_reason(name: str, value: Any) -> str:
    """Why ROS refused ``value`` for ``name`` when its type is not the parameter's: the
    parameter, the value and what it takes."""
    declared = PARAMETERS[name]
    reason = f"{name} must be {declared.allowed}, got {value!r}"
    if declared.type is float and type(value) is int:
        try:
            declared.check(float(value))
        except ValueError:
            return reason
        # -p learning_rate:=1 is an integer to ROS, which does not make it a double.
        return reason + f" (an integer to ROS: write {value}.0)"
    return reason
