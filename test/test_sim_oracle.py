"""The embedded simulator and the oracle backend, without ROS: reproducible scenes, real rendering,
and the scripted expert's chunks really solving a task through the executor core."""

import numpy as np
import pytest

from vla_policy_node.core.embodiment import load_robot
from vla_policy_node.models.backend import PolicyInput
from vla_policy_node.models.registry import available_backends, make_backend
from vla_policy_node.sim.metaworld_sim import MetaWorldSim


@pytest.fixture(scope="module")
def sim():
    s = MetaWorldSim(["corner2"], width=64, height=64)
    yield s
    s.close()


def test_reset_is_reproducible_per_seed(sim):
    a = sim.reset("drawer-open", 7).env_state.copy()
    b = sim.reset("drawer-open", 7).env_state.copy()
    c = sim.reset("drawer-open", 8).env_state.copy()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_render_and_state(sim):
    sim.reset("button-press", 0)
    frame = sim.render()["corner2"]
    assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8 and frame.std() > 10
    names, pos, vel = sim.joint_state()
    assert names[:7] == [f"right_j{i}" for i in range(7)] and "r_close" in names
    xyz, quat = sim.ee_pose()
    np.testing.assert_allclose(np.linalg.norm(quat), 1.0, atol=1e-6)
    before = xyz.copy()
    for _ in range(10):
        sim.step([1.0, 0.0, 0.0, -1.0])
    assert sim.ee_pose()[0][0] > before[0] + 0.02      # hand moved along +x


def test_unknown_task_and_bad_action(sim):
    with pytest.raises(ValueError, match="unknown MetaWorld task 'fly-away'"):
        sim.reset("fly-away", 0)
    sim.reset("reach", 0)
    with pytest.raises(ValueError, match="4 finite values"):
        sim.step([0.0, np.nan, 0.0, 0.0])


def test_registry_names_backends():
    assert "oracle" in available_backends()
    with pytest.raises(KeyError, match="policy backend 'nope' unknown; available: .*oracle"):
        make_backend("nope", load_robot("metaworld_sawyer"))


def test_oracle_chunks_solve_task_in_sync_loop(sim):
    robot = load_robot("metaworld_sawyer")
    oracle = make_backend("oracle", robot)
    k, h = robot.config.action.execute_per_chunk, robot.config.action.horizon
    step = sim.reset("drawer-open", 3)
    oracle.reset("open the drawer", seed=3, task="drawer-open")
    for _ in range(60):
        out = oracle.predict(PolicyInput(0.0, "open the drawer", {}, np.zeros(4), step.env_state))
        assert out.actions.shape == (h, 4) and np.abs(out.actions_normalized).max() <= 1.0
        for a in out.actions[:k]:
            step = sim.step(a)
        if step.success:
            break
    assert step.success, f"oracle failed drawer-open after {step.step} steps"
    with pytest.raises(ValueError, match="39-D MetaWorld env_state"):
        oracle.predict(PolicyInput(0.0, "x", {}, np.zeros(4), None))
