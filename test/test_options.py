"""One declaration per option: the node's parameters, the command lines' flags, the YAML
defaults and the README's table all come from (or are held to) the config dataclasses."""

import re
from dataclasses import dataclass, fields
from pathlib import Path

import pytest
import yaml

from stereo_adapt_ros.adaptation import AdapterConfig
from stereo_adapt_ros.cli.main import build_parser
from stereo_adapt_ros.cli.node_command import ros_arguments
from stereo_adapt_ros.options import declared_options, option, option_value
from stereo_adapt_ros.ros.parameters import (ADAPTER_PARAMETERS, NOT_PARAMETERS, PARAMETERS,
                                             NodeConfig, not_a_parameter_warning,
                                             validate_parameter)

ROOT = Path(__file__).parents[1]
ADAPTER_OPTIONS = declared_options(AdapterConfig)


def test_every_config_field_is_a_declared_option_and_the_parameters_are_their_union():
    assert list(ADAPTER_OPTIONS) == [f.name for f in fields(AdapterConfig)]
    assert list(declared_options(NodeConfig)) == [f.name for f in fields(NodeConfig)]
    assert list(PARAMETERS) == [*ADAPTER_PARAMETERS, *declared_options(NodeConfig)]
    assert set(ADAPTER_PARAMETERS) == {n for n, o in ADAPTER_OPTIONS.items() if o.node}
    for name, declared in PARAMETERS.items():
        assert type(declared.default) is declared.type, name
        declared.check(declared.default)


def test_the_node_keeps_what_a_robot_sets_and_eval_has_the_experiments():
    """Issue 25: at most 28 node parameters; the adapter's experiment settings are eval flags,
    and a start value for one is ignored with a warning that says where it went."""
    assert len(PARAMETERS) <= 28, list(PARAMETERS)
    assert {"mad_sampling", "mad_loss_scale", "proxy_tau", "proxy_scale",
            "reset_loss_threshold", "smoothness_weight"} <= NOT_PARAMETERS.keys()
    assert not NOT_PARAMETERS.keys() & PARAMETERS.keys()
    warning = not_a_parameter_warning("proxy_scale")
    assert warning is not None and "--proxy-scale" in warning and "ignored" in warning
    assert not_a_parameter_warning("learning_rate") is None
    assert not_a_parameter_warning("qos_overrides./disparity.publisher.depth") is None


def test_shipped_parameters_file_holds_the_declared_defaults():
    path = ROOT / "config" / "stereo_adapt.yaml"
    values = yaml.safe_load(path.read_text())["/**"]["ros__parameters"]
    assert values.keys() == PARAMETERS.keys()
    for name, value in values.items():
        # ROS refuses a value of another type than the declared default's (1 for a double).
        assert type(value) is PARAMETERS[name].type, name
        assert value == PARAMETERS[name].default, name
        validate_parameter(name, value)  # "weights: synthetic" loads the shipped file


def _readme_parameter_table() -> dict[str, tuple[str, bool]]:
    """parameter -> (default as written, marked read-only), from the README's table."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Parameters"):]
    rows = re.findall(r"^\| (`\w+`(?: \(read-only\))?) \| ([^|]+) \|", section, re.MULTILINE)
    table = {}
    for name_cell, default in rows:
        name = name_cell.split("`")[1]
        assert name not in table, f"{name} listed twice"
        table[name] = (default.strip().strip("`"), name_cell.endswith("(read-only)"))
    return table


def _written(value) -> object:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def test_readme_table_lists_exactly_the_declared_parameters_and_defaults():
    table = _readme_parameter_table()
    assert list(table) == list(PARAMETERS), "the README's rows, in declaration order"
    for name, (default, read_only) in table.items():
        declared = PARAMETERS[name]
        assert read_only == declared.read_only, name
        if declared.type in (int, float):
            assert float(default) == declared.default, name
        else:
            assert default == _written(declared.default), name


def test_parameters_refuse_values_outside_their_declaration_with_the_reason():
    for name, value, reason in [("adaptation_mode", "fast", "must be one of none, full, mad"),
                                ("learning_rate", 0.0, "learning_rate must be in [1e-08, 1]"),
                                ("adapt_every_n", 0, "adapt_every_n must be in [1, 1000]"),
                                ("input_scale", float("nan"), "input_scale must be finite"),
                                ("input_reliability", "fast", "must be one of best_effort"),
                                ("save_path", " ", "save_path must not be empty")]:
        with pytest.raises(ValueError, match=re.escape(reason)):
            validate_parameter(name, value)


def test_node_descriptors_derive_from_the_declarations():
    from stereo_adapt_ros.ros.node import parameter_descriptor

    every = parameter_descriptor(PARAMETERS["adapt_every_n"])
    assert (every.integer_range[0].from_value, every.integer_range[0].to_value) == (1, 1000)
    threshold = parameter_descriptor(PARAMETERS["confidence_threshold"])
    assert (threshold.floating_point_range[0].from_value,
            threshold.floating_point_range[0].to_value) == (0.0, 1.0)
    assert parameter_descriptor(PARAMETERS["device"]).read_only
    assert not parameter_descriptor(PARAMETERS["adaptation_mode"]).read_only
    assert parameter_descriptor(PARAMETERS["adaptation_loss"]).description.endswith(
        "One of: photometric, proxy, both.")


def _subcommand(name):
    commands = next(a for a in build_parser()._actions if a.dest == "command")
    return commands.choices[name]


def test_eval_has_a_flag_per_adapter_option_whose_defaults_make_the_default_config():
    parser = _subcommand("eval")
    flags = {s for action in parser._actions for s in action.option_strings}
    assert {declared.flag for declared in ADAPTER_OPTIONS.values()} <= flags
    args = parser.parse_args([])
    given = {name: getattr(args, name) for name in ADAPTER_OPTIONS}
    assert given.pop("adaptation_mode") == [AdapterConfig().adaptation_mode]
    assert AdapterConfig(**given) == AdapterConfig()
    args = parser.parse_args(["--no-channels-last", "--compile", "--reset-loss-threshold",
                              "0.5", "--adaptation-mode", "none,mad"])
    assert (args.channels_last, args.compile, args.reset_loss_threshold,
            args.adaptation_mode) == (False, True, 0.5, ["none", "mad"])


def test_bench_flags_share_the_adapter_options_names():
    args = _subcommand("bench").parse_args(["--amp", "off", "--no-channels-last",
                                            "--proxy-method", "census"])
    assert (args.amp, args.channels_last, args.compile, args.proxy_method,
            args.mad_loss_scale) == ("off", False, False, "census", None)


def test_node_command_has_a_flag_per_parameter_that_sets_it():
    parser = _subcommand("node")
    assert ros_arguments(parser.parse_args([])) == ["stereo-adapt-node"]
    args = parser.parse_args(["--adaptation-mode", "full", "--input-scale", "1",
                              "--approximate-sync", "--weights", "random"])
    assert ros_arguments(args) == [
        "stereo-adapt-node", "--ros-args", "-p", "adaptation_mode:=full",
        "-p", "input_scale:=1.0", "-p", "weights:=random", "-p", "approximate_sync:=true"]


def test_launch_arguments_become_values_of_the_declared_type():
    assert option_value(PARAMETERS["input_scale"], "0.5") == 0.5
    assert option_value(PARAMETERS["approximate_sync"], "True") is True
    assert option_value(PARAMETERS["queue_size"], "3") == 3
    assert option_value(PARAMETERS["adaptation_mode"], "full") == "full"
    for name, text in (("queue_size", "three"), ("approximate_sync", "yes"),
                       ("adaptation_mode", "fast"), ("input_scale", "9")):
        with pytest.raises(ValueError, match=name):
            option_value(PARAMETERS[name], text)


def test_a_declaration_of_the_wrong_type_is_refused():
    @dataclass(frozen=True)
    class Bad:
        rate: float = option(1, "an int default for a float option")

    with pytest.raises(TypeError, match="rate"):
        declared_options(Bad)
    with pytest.raises(TypeError, match="both"):
        option(1.0, "half a range", low=0.0)
