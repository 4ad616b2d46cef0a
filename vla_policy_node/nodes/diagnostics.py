"""Publishing a node's health on /diagnostics (diagnostic_msgs/DiagnosticArray), as robot
operators' tools (rqt_robot_monitor, the diagnostic aggregator) expect it."""

from __future__ import annotations

from typing import Callable

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.clock import Clock, ClockType
from rclpy.node import Node

from ..core.health import assess

TOPIC = "/diagnostics"


def flatten(figures: dict, prefix: str = "") -> list[tuple[str, str]]:
    """Nested dicts become 'outer.inner' keys; floats keep 4 significant digits."""
    out = []
    for key, value in figures.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out += flatten(value, name + ".")
        elif isinstance(value, float):
            out.append((name, f"{value:.4g}"))
        else:
            out.append((name, str(value)))
    return out


class Diagnostics:
    """Every `period_s` (wall clock: diagnostics go on while a simulator's clock stands still),
    one DiagnosticStatus named '<node>: <what>' with the figures `collect()` returns and the level
    the `checks` (core/health.py) give them."""

    def __init__(self, node: Node, what: str, hardware_id: str, collect: Callable[[], dict], checks: list,
                 period_s: float = 1.0):
        self.node, self.collect, self.checks = node, collect, checks
        # "executor: execution", or "robot1/executor: execution" in a namespace
        self.name, self.hardware_id = f"{node.get_fully_qualified_name().lstrip('/')}: {what}", hardware_id
        self.pub = node.create_publisher(DiagnosticArray, TOPIC, 10)
        node.create_timer(period_s, self.publish, clock=Clock(clock_type=ClockType.STEADY_TIME))

    def status(self) -> DiagnosticStatus:
        figures = self.collect()
        level, message = assess(figures, self.checks)
        return DiagnosticStatus(level=bytes([level]), name=self.name, message=message, hardware_id=self.hardware_id,
                                values=[KeyValue(key=k, value=v) for k, v in flatten(figures)])

    def publish(self) -> None:
        msg = DiagnosticArray(status=[self.status()])
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.pub.publish(msg)
