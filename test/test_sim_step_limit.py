"""An episode's step limit is kept where steps happen: the simulator stops stepping at the limit the
reset asked for, so a free-running or async graph cannot run past it while the task runner disarms."""

import time

import pytest
from conftest import free_running_sim_bridge

from vla_msgs.srv import ResetEpisode


@pytest.fixture
def free_running_sim():
    steps = []
    with free_running_sim_bridge(71, 30, lambda m: steps.append(m.step)) as (node, executor):
        yield node, executor, steps


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
