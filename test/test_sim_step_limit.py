"""An episode's step limit is kept where steps happen: the simulator stops stepping at the limit the
reset asked for, so a free-running or async graph cannot run past it while the task runner disarms."""

import os
import time

import pytest
import rclpy
from conftest import stop_in_process
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter

from vla_msgs.msg import StateVector
from vla_msgs.srv import ResetEpisode
from vla_policy_node.nodes.common import RELIABLE_QOS, TOPICS
from vla_policy_node.nodes.sim_bridge import SimBridgeNode


@pytest.fixture
def free_running_sim():
    os.environ["ROS_DOMAIN_ID"] = "71"
    context = rclpy.Context()
    rclpy.init(context=context)
    node = SimBridgeNode(context=context, parameter_overrides=[
        Parameter("lockstep", value=False), Parameter("real_time_factor", value=20.0),
        Parameter("max_steps", value=30)])
    peer = rclpy.create_node("peer", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(peer)
    steps = []
    peer.create_subscription(StateVector, TOPICS["env_state"], lambda m: steps.append(m.step), RELIABLE_QOS)
    yield node, executor, steps
    stop_in_process(node, peer, executor, context)


def run_for(executor, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        executor.spin_once(timeout_sec=0.01)


@pytest.mark.parametrize("asked, kept", [(7, 7), (0, 30), (1000, 30)])
def test_the_simulator_stops_at_the_episode_step_limit(free_running_sim, asked, kept):
    """Asked 7: 7 steps; 0: the simulator's own limit (parameter max_steps 30); more than its own: its own."""
    node, executor, steps = free_running_sim
    response = node.on_reset(ResetEpisode.Request(task="button-press", seed=100, episode_id="limit",
                                                  max_steps=asked), ResetEpisode.Response())
    assert response.success, response.message
    steps.clear()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not steps or steps[-1] < kept):
        executor.spin_once(timeout_sec=0.01)
    run_for(executor, 1.0)                    # at 20 x real time, many more steps' worth of wall time
    assert steps and max(steps) == kept and steps[-1] == kept
