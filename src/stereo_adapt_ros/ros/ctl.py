"""Control of a running node through rclpy, for where there is no ``ros2`` CLI: set and get
parameters, call the services, read ~/status."""

from __future__ import annotations

import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.executors import Executor, SingleThreadedExecutor
from rclpy.node import Node
from std_srvs.srv import SetBool, Trigger

_FIELDS = {ParameterType.PARAMETER_BOOL: "bool_value",
           ParameterType.PARAMETER_INTEGER: "integer_value",
           ParameterType.PARAMETER_DOUBLE: "double_value",
           ParameterType.PARAMETER_STRING: "string_value"}


def parse_value(text: str, kind: int) -> ParameterValue:
    """``text`` as a ParameterValue of type ``kind`` (the parameter's current type)."""
    value = ParameterValue(type=kind)
    if kind == ParameterType.PARAMETER_BOOL:
        if text.lower() not in ("true", "false"):
            raise ValueError(f"expected true or false, got {text!r}")
        value.bool_value = text.lower() == "true"
    elif kind == ParameterType.PARAMETER_INTEGER:
        value.integer_value = int(text)
    elif kind == ParameterType.PARAMETER_DOUBLE:
        value.double_value = float(text)
    elif kind == ParameterType.PARAMETER_STRING:
        value.string_value = text
    else:
        raise ValueError(f"parameters of type {kind} cannot be set from the command line")
    return value


def value_of(value: ParameterValue) -> Any:
    field = _FIELDS.get(value.type)
    return getattr(value, field) if field else None


class Controller:
    """Talks to the node ``target`` (e.g. ``/stereo_adapt``) from ``node``, spun by
    ``executor`` (one is made for ``node`` when none is given)."""

    def __init__(self, node: Node, target: str, timeout: float = 10.0,
                 executor: Executor | None = None) -> None:
        self.node = node
        self.target = target.rstrip("/") or "/"
        self.timeout = timeout
        if executor is None:
            executor = SingleThreadedExecutor(context=node.context)
            executor.add_node(node)
        self.executor = executor

    def _call(self, kind, service: str, request):
        client: Any = self.node.create_client(kind, f"{self.target}/{service}")
        try:
            if not client.wait_for_service(timeout_sec=self.timeout):
                raise TimeoutError(f"service {self.target}/{service} is not available; is the "
                                   "node running (with the same ROS_DOMAIN_ID)?")
            future = client.call_async(request)
            self.executor.spin_until_future_complete(future, timeout_sec=self.timeout)
            if not future.done():
                raise TimeoutError(f"{self.target}/{service} did not answer in {self.timeout} s")
            return future.result()
        finally:
            self.node.destroy_client(client)

    def get(self, name: str) -> ParameterValue:
        response = self._call(GetParameters, "get_parameters", GetParameters.Request(names=[name]))
        value = response.values[0]
        if value.type == ParameterType.PARAMETER_NOT_SET:
            raise ValueError(f"{self.target} has no parameter {name!r}")
        return value

    def set(self, name: str, text: str) -> tuple[bool, str]:
        """Set ``name`` from its text form; returns (accepted, the node's reason if not)."""
        value = parse_value(text, self.get(name).type)
        request = SetParameters.Request(parameters=[Parameter(name=name, value=value)])
        result = self._call(SetParameters, "set_parameters", request).results[0]
        return result.successful, result.reason

    def trigger(self, service: str) -> tuple[bool, str]:
        response = self._call(Trigger, service, Trigger.Request())
        return response.success, response.message

    def pause(self, paused: bool) -> tuple[bool, str]:
        response = self._call(SetBool, "pause_adaptation", SetBool.Request(data=paused))
        return response.success, response.message

    def status(self) -> dict[str, str]:
        """The next ~/status message's values (with ``level`` and ``message``)."""
        received: list[DiagnosticArray] = []
        subscription = self.node.create_subscription(
            DiagnosticArray, f"{self.target}/status", received.append, 10)
        try:
            deadline = time.monotonic() + self.timeout
            while not received and time.monotonic() < deadline:
                self.executor.spin_once(timeout_sec=0.1)
        finally:
            self.node.destroy_subscription(subscription)
        if not received:
            raise TimeoutError(f"no message on {self.target}/status in {self.timeout} s")
        status = received[-1].status[0]
        return {"level": str(int.from_bytes(status.level, "little")), "message": status.message,
                **{pair.key: pair.value for pair in status.values}}
