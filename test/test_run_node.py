"""nodes.common.run_node: a node that ends itself sets `finished` from a worker thread (the evaluator
after its report); main() then stops spinning, returns the node's exit code and shuts the context
down itself, so no shutdown can land while the executor builds a wait set (which rcl refused with
RCLError / InvalidHandle and exit code 1 when the worker thread shut the context down)."""

import threading

import pytest
import rclpy
from rclpy.node import Node

from vla_policy_node.nodes.common import run_node


class SelfEndingNode(Node):
    """Ends from a worker thread a moment after it starts, as the evaluator does when its episodes are done."""

    def __init__(self):
        super().__init__("self_ending_node")
        self.exit_code, self.finished, self.context_ok_at_close = 3, False, None
        self.ticks = 0
        self.create_timer(0.01, self.on_tick)
        threading.Timer(0.3, self.finish).start()

    def on_tick(self):
        self.ticks += 1

    def finish(self):
        self.finished = True

    def close(self):
        self.context_ok_at_close = rclpy.ok()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("multithreaded", [False, True])
def test_a_node_that_finishes_ends_main_with_its_exit_code(multithreaded):
    nodes = []

    def make():
        nodes.append(SelfEndingNode())
        return nodes[-1]

    assert run_node(make, multithreaded=multithreaded) == 3
    node = nodes[0]
    assert node.ticks > 5                         # it really spun before finishing
    assert node.context_ok_at_close               # closed before the context went down
    assert not rclpy.ok()                         # and main() shut the context down
