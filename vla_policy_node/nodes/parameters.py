"""Node parameters, each declared from one row of its node's table with an
rcl_interfaces/ParameterDescriptor: what it means (units), its type, its range, and whether it may
change while the node runs.

`ros2 param describe` shows the row; rclpy refuses a set that is read-only, out of range or of the
wrong type, with the reason. A parameter is read-only unless its row says `live`: most are read
when the node starts (lifecycle nodes: at configure), so a change afterwards would do nothing. A
live parameter is applied by its node's on-set callback. A parameter that overrides a robot file
value has that value as its default (`ros2 param get` shows what is in force), not a number that
stands for "the file's". Parameters are declared once, when the node is constructed: a second
declaration is an error naming the node and the parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.exceptions import (InvalidParameterTypeException, InvalidParameterValueException,
                              ParameterAlreadyDeclaredException)
from rclpy.parameter import Parameter

CONFIG_ERROR_EXIT = 2          # the graph runner does not restart a node that refused its configuration


@dataclass(frozen=True)
class Param:
    """One parameter: name, default (its type is the parameter's), description with units."""
    name: str
    default: Any
    description: str
    range: tuple[float, float] | None = None     # (min, max), both included; integer or double parameters
    live: bool = False                           # applied while running (the node's on-set callback)
    constraints: str = ""                        # the values accepted, in words (e.g. "sync | async")

    @property
    def kind(self) -> Parameter.Type:
        return Parameter.Type.from_parameter_value(self.default)

    def descriptor(self) -> ParameterDescriptor:
        kind = self.kind
        d = ParameterDescriptor(name=self.name, type=kind.value, description=self.description,
                                additional_constraints=self.constraints, read_only=not self.live)
        if self.range is not None:
            low, high = self.range
            if kind == Parameter.Type.INTEGER:
                d.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=0)]
            elif kind == Parameter.Type.DOUBLE:
                d.floating_point_range = [FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)]
            else:
                raise ValueError(f"parameter {self.name}: a range needs an integer or double parameter")
        return d


ROBOT = Param("robot", "metaworld_sawyer", "the robot file: a name in config/robots/ (without .yaml) or a path "
              "to a .yaml file")
USE_SIM_TIME = Param("use_sim_time", False,
                     "take time from /clock (a simulator's or a bag's) instead of the system clock; fixed at "
                     "start: the node's timers and stamps follow the clock chosen then")


class ParameterDeclaredTwice(ParameterAlreadyDeclaredException):
    """A node declared one of its parameters a second time (a mistake in the node, never hidden)."""

    def __init__(self, node, names: list[str]):
        self.node_name, self.names = node.get_fully_qualified_name(), list(names)
        Exception.__init__(self, f"node {self.node_name}: parameter {', '.join(self.names)} declared twice "
                                 "(a node declares each parameter once, when it is constructed)")


class Values:
    """A node's parameters by attribute, as they are now."""

    def __init__(self, node):
        self._node = node

    def __getattr__(self, name: str):
        if name.startswith("_") or not self._node.has_parameter(name):
            raise AttributeError(f"node {self._node.get_fully_qualified_name()} has no parameter '{name}'")
        return self._node.get_parameter(name).value


def declare(node, table: Iterable[Param]) -> Values:
    """Declare every row of `table` on `node` with its descriptor (kept in `node.parameter_rows`);
    the values, launch overrides applied. A value that does not fit its descriptor (type, range)
    ends the node with a fatal error naming the parameter (SystemExit, as a robot file that does
    not load does)."""
    if not hasattr(node, "parameter_rows"):
        node.parameter_rows = {}
    for row in table:
        if node.has_parameter(row.name):
            raise ParameterDeclaredTwice(node, [row.name])
        descriptor = row.descriptor()
        descriptor.dynamic_typing = row.default is None        # a typeless option (a plugin backend's)
        try:
            node.declare_parameter(row.name, row.default, descriptor)
        except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
            node.get_logger().fatal(f"parameter {row.name}: {exc}")
            raise SystemExit(CONFIG_ERROR_EXIT) from None
        node.parameter_rows[row.name] = row
    if node.has_parameter(USE_SIM_TIME.name) and not node.describe_parameter(USE_SIM_TIME.name).read_only:
        node.set_descriptor(USE_SIM_TIME.name, USE_SIM_TIME.descriptor())
    return Values(node)


def live_names(table: Iterable[Param]) -> set[str]:
    return {row.name for row in table if row.live}


TYPE_NAMES = {ParameterType.PARAMETER_BOOL: "boolean", ParameterType.PARAMETER_INTEGER: "integer",
              ParameterType.PARAMETER_DOUBLE: "double", ParameterType.PARAMETER_STRING: "string",
              ParameterType.PARAMETER_BYTE_ARRAY: "byte array", ParameterType.PARAMETER_BOOL_ARRAY: "boolean array",
              ParameterType.PARAMETER_INTEGER_ARRAY: "integer array",
              ParameterType.PARAMETER_DOUBLE_ARRAY: "double array",
              ParameterType.PARAMETER_STRING_ARRAY: "string array"}


def describe(descriptor: ParameterDescriptor) -> str:
    """A descriptor as `ros2 param describe` prints it."""
    lines = [f"Parameter name: {descriptor.name}", f"  Type: {TYPE_NAMES.get(descriptor.type, 'not set')}"]
    if descriptor.description:
        lines.append(f"  Description: {descriptor.description}")
    lines.append("  Constraints:")
    if descriptor.read_only:
        lines.append("    Read only: true")
    ranges = list(descriptor.floating_point_range) + list(descriptor.integer_range)
    if ranges:
        lines += [f"    Min value: {ranges[0].from_value}", f"    Max value: {ranges[0].to_value}"]
        if ranges[0].step:
            lines.append(f"    Step: {ranges[0].step}")
    if descriptor.additional_constraints:
        lines.append(f"    Additional constraints: {descriptor.additional_constraints}")
    return "\n".join(lines)
