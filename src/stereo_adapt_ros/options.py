"""One declaration per option.

A configuration dataclass declares each of its options once, as a field made by ``option()``:
the field's name is the option's name everywhere (the ROS parameter's, and with dashes the
command-line flag's: ``adaptation_mode``, ``--adaptation-mode``), its annotation the type, and
``option()`` holds the default, the range or choices, the description, and whether the option
is fixed once the node runs and whether the node has it at all. ``declared_options`` reads
them back; from there the node's parameter descriptors and validation (``ros``), the flags of
``stereo-adapt eval``, ``bench`` and ``node`` and of the training commands (``train``,
``meta-train``, ``adapt``, ``proxy-confidence``, from their configs' own options; ``cli``) and
the launch file's arguments are derived, and tests hold ``config/stereo_adapt.yaml`` and the
README's parameter table to them.

To add an option: add the field, with ``option()``, to ``AdapterConfig`` (what the adapter
does) or to ``NodeConfig`` (what only the node does), and use it where it acts; then add it to
``config/stereo_adapt.yaml`` and the README's table if the node has it (the tests say so when
either is missing).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

_METADATA_KEY = "stereo_adapt_ros.option"
_TYPES = (bool, int, float, str)


@dataclass(frozen=True)
class Option:
    """One declared option (see the module docstring).

    name: the field's name, the ROS parameter's, and with dashes the flag's (``flag``).
    type: ``bool``, ``int``, ``float`` or ``str``, the field's annotation.
    default: the field's default, of that type.
    description: what the option does, in a sentence or two (parameter descriptor, --help).
    choices: the values a ``str`` option takes; empty: any.
    low, high: the closed range of a number; None: unbounded.
    read_only: the node takes it at start only.
    node: the node has it as a parameter.
    """

    name: str
    type: type
    default: Any
    description: str
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    read_only: bool = False
    node: bool = True

    @property
    def flag(self) -> str:
        """The command-line flag: ``--`` and the name with dashes."""
        return "--" + self.name.replace("_", "-")

    @property
    def allowed(self) -> str:
        """What the option takes, in words (for messages): ``one of a, b``, ``a float in
        [0, 1]``."""
        if self.choices:
            return f"one of {', '.join(self.choices)}"
        if self.type is bool:
            return "true or false"
        kind = {int: "an integer", float: "a float", str: "a string"}[self.type]
        if self.low is not None and self.high is not None:
            return f"{kind} in [{self.low:g}, {self.high:g}]"
        return kind

    def check(self, value: Any) -> None:
        """Raise ValueError with the reason if ``value`` is not one this option takes."""
        if self.choices and value not in self.choices:
            raise ValueError(f"{self.name} must be one of {', '.join(self.choices)}, "
                             f"got {value!r}")
        if self.type in (int, float):
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{self.name} must be finite, got {value}")
            if self.low is not None and not self.low <= value <= self.high:
                raise ValueError(f"{self.name} must be in [{self.low:g}, {self.high:g}], "
                                 f"got {value}")


def option(default: Any, description: str, *, choices: tuple[str, ...] = (),
           low: float | None = None, high: float | None = None, read_only: bool = False,
           node: bool = True) -> Any:
    """A dataclass field declaring an option (arguments as ``Option``'s; name and type come
    from the field). A range has both ends or none."""
    if (low is None) != (high is None):
        raise TypeError("an option's range needs both low and high")
    declared = dict(description=description, choices=tuple(choices), low=low, high=high,
                    read_only=read_only, node=node)
    return dataclasses.field(default=default, metadata={_METADATA_KEY: declared})


@functools.cache
def declared_options(config_type: type) -> Mapping[str, Option]:
    """The options a dataclass declares with ``option()``, by name, in field order."""
    hints = typing.get_type_hints(config_type)
    options = {}
    for field in dataclasses.fields(config_type):
        if _METADATA_KEY not in field.metadata:
            continue
        kind = hints[field.name]
        if kind not in _TYPES or type(field.default) is not kind:
            raise TypeError(f"option {config_type.__name__}.{field.name}: the type must be one "
                            f"of {_TYPES} and the default of that type, got {kind} and "
                            f"{field.default!r}")
        options[field.name] = Option(name=field.name, type=kind, default=field.default,
                                     **field.metadata[_METADATA_KEY])
    return MappingProxyType(options)


def check_options(config: Any) -> None:
    """Raise ValueError with the reason if a field of ``config`` is not one its declared
    option takes (choices and range; checks across fields are the config's own)."""
    # mypy checks a class against Hashable with its unbound __hash__: a false positive.
    for name, declared in declared_options(type(config)).items():  # type: ignore[arg-type]
        declared.check(getattr(config, name))


def option_value(declared: Option, text: str) -> Any:
    """``text`` (a launch argument, a command-line word) as a value of the option's type:
    ``true``/``false`` for a bool; checked as ``Option.check`` does."""
    if declared.type is bool:
        if text.lower() not in ("true", "false"):
            raise ValueError(f"{declared.name} must be true or false, got {text!r}")
        value: Any = text.lower() == "true"
    else:
        try:
            value = declared.type(text)
        except ValueError as error:
            raise ValueError(f"{declared.name} must be a {declared.type.__name__}, "
                             f"got {text!r}") from error
    declared.check(value)
    return value
