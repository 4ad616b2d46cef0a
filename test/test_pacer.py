"""Free-running pace: the factor the simulation reaches (core/pacer.py), and sim_bridge behind its pace:
evenly slower, no step skipped, no burst after a stall, and it says so on /diagnostics."""

import os
import time

import numpy as np
import pytest
import rclpy
from conftest import stop_in_process
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rosgraph_msgs.msg import Clock

from vla_policy_node.core.pacer import PaceMeter
from vla_policy_node.nodes.common import RELIABLE_QOS
from vla_policy_node.nodes.sim_bridge import SimBridgeNode


def test_the_meter_reports_the_factor_reached_and_the_deficit():
    now = [0.0]
    meter = PaceMeter(0.25, 0.0125, window=50, clock=lambda: now[0])
    assert meter.reached() is None and meter.deficit() is None
    for _ in range(50):                          # on pace: a step every 50 ms of wall time
        meter.on_step()
        now[0] += 0.05
    assert meter.full and meter.reached() == pytest.approx(0.25) and meter.deficit() == pytest.approx(0.0)
    for _ in range(50):                          # behind: a step every 100 ms
        meter.on_step()
        now[0] += 0.1
    assert meter.reached() == pytest.approx(0.125) and meter.deficit() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="real_time_factor"):
        PaceMeter(0.0, 0.0125)


@pytest.fixture
def free_running_sim():
    def start(factor, domain):
        os.environ["ROS_DOMAIN_ID"] = str(domain)
        context = rclpy.Context()
        rclpy.init(context=context)
        node = SimBridgeNode(context=context, parameter_overrides=[
            Parameter("lockstep", value=False), Parameter("real_time_factor", value=factor)])
        peer = rclpy.create_node("peer", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        executor.add_node(peer)
        clocks, statuses = [], []
        peer.create_subscription(Clock, "/clock", lambda m: clocks.append(
            (m.clock.sec + m.clock.nanosec * 1e-9, time.monotonic())), RELIABLE_QOS)
        peer.create_subscription(DiagnosticArray, "/diagnostics",
                                 lambda m: statuses.extend(s for s in m.status if "simulation" in s.name), 10)
        started.append((node, peer, executor, context))
        return node, peer, executor, clocks, statuses

    started = []
    yield start
    for node, peer, executor, context in started:
        stop_in_process(node, peer, executor, context)


def test_a_simulator_behind_its_pace_says_so_and_skips_no_step(free_running_sim):
    """20 x real time (1600 rendered steps a second) is out of reach: every /clock is one step after
    the last, /diagnostics reports the factor reached and warns of the deficit."""
    node, _, executor, clocks, statuses = free_running_sim(20.0, 69)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (statuses and node.pace.full and len(statuses) >= 2):
        executor.spin_once(timeout_sec=0.05)
    values = {kv.key: kv.value for kv in statuses[-1].values}
    assert float(values["real_time_factor_requested"]) == 20.0 and float(values["real_time_factor_reached"]) < 18.0
    assert float(values["pace_deficit"]) > 0.1 and statuses[-1].level == bytes([1])            # WARN
    assert "pace_deficit" in statuses[-1].message
    sim_times = np.array([c[0] for c in clocks])
    assert len(sim_times) > 20
    np.testing.assert_allclose(np.diff(sim_times), node.sim.dt, atol=1e-6)                     # none skipped


def test_after_a_stall_the_simulator_keeps_its_pace_without_a_burst(free_running_sim):
    """0.05 x real time (a step every 250 ms of wall time): after the process stalls for 1 s the steps
    go on at their period, not 4 missed steps fired in a row (a step itself costs far less than 250 ms,
    even on a loaded machine, so a burst would show as gaps well under the period)."""
    node, peer, executor, clocks, _ = free_running_sim(0.05, 70)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(clocks) < 5:
        executor.spin_once(timeout_sec=0.01)
    stall = []
    peer.create_timer(0.0, lambda: stall or (stall.append(time.monotonic()), time.sleep(1.0)))
    end = time.monotonic() + 3.0
    while time.monotonic() < end:
        executor.spin_once(timeout_sec=0.01)
    after = [wall for sim, wall in clocks if wall > stall[0] + 1.0]
    gaps = np.diff(after[:7])
    assert len(gaps) >= 4 and np.sum(gaps < 0.125) <= 1, gaps    # at most the one overdue step comes early
