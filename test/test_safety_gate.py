"""Safety gate on every command: limits, workspace, deviation from the measured state, velocity and
acceleration, counted by reason; holds decelerate smoothly; nothing outside limits ever leaves."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vla_policy_node.core.action_queue import Chunk
from vla_policy_node.core.embodiment import load_robot
from vla_policy_node.core.executor import ChunkExecutor
from vla_policy_node.core.safety import ChunkRejected, SafetyGate


@pytest.fixture(scope="module")
def sawyer():
    return load_robot("metaworld_sawyer")


@pytest.fixture(scope="module")
def panda():
    return load_robot("panda_ros2_control")


def test_ee_delta_step_is_shortened_at_the_workspace_wall():
    gate = SafetyGate(["dx", "dy", "dz", "g"], [-1] * 4, [1] * 4, space="ee_delta",
                      workspace=([-0.5, 0.3, 0.0], [0.5, 1.0, 0.7]), ee_delta_scale_m=0.01)
    out, notes = gate.filter(np.array([1.0, 0.0, -1.0, 1.0]), None, measured_ee=np.array([0.495, 0.6, 0.005]))
    np.testing.assert_allclose(out, [0.5, 0.0, -0.5, 1.0])        # stops exactly at x=0.5 and z=0
    assert notes == ["workspace:dx,dz"] and gate.counters.reasons["workspace"] == 1
    out, _ = gate.filter(np.array([-1.0, 0.0, 1.0, 1.0]), None, measured_ee=np.array([0.495, 0.6, 0.005]))
    np.testing.assert_allclose(out, [-1.0, 0.0, 1.0, 1.0])       # moving back inside is never blocked


def test_position_commands_respect_deviation_velocity_and_acceleration(panda):
    gate = SafetyGate.from_embodiment(panda)
    q = np.array([0.0, -0.3, 0.0, -2.2, 0.0, 2.0, 0.8])
    far = q + 0.5
    out, notes = gate.filter(far, q, measured=q, previous2=q)
    dt = panda.config.action.dt
    vmax = np.array(panda.config.limits.joint_velocity_max)
    amax = np.array(panda.config.limits.joint_acceleration_max)
    assert np.all(np.abs(out - q) <= np.minimum(vmax * dt, amax * dt ** 2) + 1e-12)
    assert {n.split(":")[0] for n in notes} >= {"max_step", "velocity", "acceleration"}
    gate_dev = SafetyGate(panda.config.action.names, panda.config.limits.action_min, panda.config.limits.action_max,
                          space="joint_position", max_deviation=[0.1] * 7)
    out, notes = gate_dev.filter(far, None, measured=q)
    np.testing.assert_allclose(out, np.clip(q + 0.1, None, panda.config.limits.action_max))
    assert notes[0].startswith("deviation")


def test_joint_limits_from_the_urdf_clamp(panda):
    lim = panda.config.limits
    gate = SafetyGate(panda.config.action.names, lim.action_min, lim.action_max, space="joint_position")
    hi = np.array(lim.action_max)
    out, notes = gate.filter(hi + 1.0, None)
    np.testing.assert_allclose(out, hi)
    assert notes[0].startswith("limit:") and gate.counters.outside_limits == 0


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.floats(-1e6, 1e6), min_size=7, max_size=7),
       prev=st.lists(st.floats(-3, 3), min_size=7, max_size=7))
def test_nothing_outside_limits_leaves_the_gate(panda, values, prev):
    gate = SafetyGate.from_embodiment(panda)
    prev = np.clip(np.array(prev), panda.config.limits.action_min, panda.config.limits.action_max)
    out, _ = gate.filter(np.array(values), prev, measured=prev, previous2=prev)
    assert np.all(out >= np.array(panda.config.limits.action_min) - 1e-12)
    assert np.all(out <= np.array(panda.config.limits.action_max) + 1e-12)
    assert gate.counters.outside_limits == 0


def test_invalid_command_is_refused_not_clamped(sawyer):
    gate = SafetyGate.from_embodiment(sawyer)
    for bad in (np.array([np.nan, 0, 0, 0]), np.zeros(3)):
        with pytest.raises(ChunkRejected):
            gate.filter(bad, None)
    assert gate.counters.nonfinite_commands == 2 and gate.counters.reasons["command:invalid"] == 2


def test_free_running_hold_decelerates_smoothly(panda):
    """Stale state while moving: the joint command brakes at the configured deceleration, no jump."""
    amax = np.full(7, 2.0)
    ex = ChunkExecutor(panda, mode="async", lockstep=False, max_state_age_s=0.05,
                       overrides={"max_acceleration": amax.tolist(), "interpolation": "smooth"})
    dt = panda.config.action.dt
    ex.reset("ep", 0.0)
    ex.set_armed(True)
    q0 = np.array([0.0, -0.3, 0.0, -2.2, 0.0, 2.0, 0.8])
    moving = q0 + 0.02 * np.arange(16)[:, None] * np.ones(7) * 0.05   # ~0.05 rad/s ramp
    ex.on_chunk(Chunk(1, 0.0, dt, moving, moving, 0, "ep"), 0.0)
    cmds = [ex.tick(k * dt, k * dt, measured=q0).command for k in range(10)]           # executing
    holds = [ex.tick(k * dt, 0.0, measured=q0) for k in range(10, 40)]              # state goes stale
    assert all(h.hold_reason == "stale state" for h in holds[5:])
    seq = np.array(cmds + [h.command for h in holds])
    acc = np.diff(seq, n=2, axis=0) / dt ** 2
    assert np.all(np.abs(acc) <= 2.0 + 1e-6)                     # bounded deceleration
    assert np.allclose(np.diff(seq[-3:], axis=0), 0.0, atol=1e-9)   # and then it stands still


@pytest.mark.parametrize("robot_name", ["panda_ros2_control", "panda_isaac"])
def test_joint_commands_keep_the_tip_inside_the_workspace(robot_name):
    """Forward kinematics of every joint command: a step that would take the flange out of the box
    is cut at the box's wall, and a command outside it is never sent."""
    robot = load_robot(robot_name)
    gate = SafetyGate.from_embodiment(robot)
    lo, hi = (np.asarray(v) for v in gate.workspace)
    home = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])       # flange near (0.31, 0, 0.59)
    assert gate._outside(home) == 0.0
    # joint 2 forward: the flange sweeps down through the table plane (z < 0.02)
    down = home + np.array([0.0, 1.7, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert gate.tip_position(down)[2] < lo[2]
    out, notes = gate.filter(down, None, measured=home)
    tip = gate.tip_position(out)
    assert notes[-1] == "workspace:tip" and gate.counters.reasons["workspace"] == 1
    assert np.all(tip >= lo - 1e-6) and np.all(tip <= hi + 1e-6)
    assert tip[2] == pytest.approx(lo[2], abs=2e-3)                      # cut at the wall, not before
    # from the wall, a further step out holds there; a step back in passes unchanged
    again, _ = gate.filter(down, out, measured=out)
    assert gate._outside(again) == 0.0 and np.allclose(again, out, atol=1e-3)
    back = out - np.array([0.0, 0.01, 0.0, 0.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(gate.filter(back, out, measured=out)[0], back)
    # a command outside the box with nothing to hold is refused (the executor holds instead)
    with pytest.raises(ChunkRejected, match="limits.workspace"):
        gate.filter(down, None)


def test_joint_executor_never_commands_the_tip_out_of_the_box():
    """A chunk that drives the flange through the table, executed at the control rate from home:
    every command that leaves the executor keeps the flange inside the box."""
    robot = load_robot("panda_ros2_control")
    ex = ChunkExecutor(robot, mode="async", lockstep=False, overrides={"merge": "replace"})
    ex.set_armed(True)
    ex.reset("e", 0.0)
    home = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])
    target = home + np.array([0.0, 1.7, 0.0, 0.0, 0.0, 0.0, 0.0])
    actions = np.repeat(target[None], robot.config.action.horizon, axis=0)
    measured, commands = home.copy(), []
    for k in range(600):                                  # 6 s at 100 Hz, a new chunk every 0.25 s
        now = k * ex.control_dt
        if k % 25 == 0:
            assert ex.on_chunk(Chunk(k, now, ex.dt, actions.copy(), np.zeros_like(actions), 0, "e"), now)[0]
        result = ex.tick(now, now, measured)
        if result.command is not None:
            commands.append(result.command)
            measured = result.command
    lo, hi = (np.asarray(v) for v in ex.gate.workspace)
    tips = np.array([ex.gate.tip_position(c) for c in commands])
    assert len(commands) > 100 and ex.gate.counters.reasons.get("workspace", 0) > 0
    assert np.all(tips >= lo - 1e-6) and np.all(tips <= hi + 1e-6)
    assert tips[:, 2].min() < lo[2] + 0.01                                 # it did go to the wall


def test_a_nonfinite_measured_state_never_yields_a_command(panda):
    lim = panda.config.limits
    gate = SafetyGate(panda.config.action.names, lim.action_min, lim.action_max, space="joint_position",
                      max_deviation=[0.1] * 7)
    q = np.zeros(7)
    with pytest.raises(ChunkRejected, match="not finite after the gate"):
        gate.filter(q, None, measured=np.full(7, np.nan))
    assert gate.counters.reasons["command:nonfinite_result"] == 1 and gate.counters.outside_limits == 0


def test_joint_state_problems_are_named():
    from vla_policy_node.core.state import joint_state_problem

    assert joint_state_problem(["a", "b"], [0.0, 1.0]) == ""
    assert joint_state_problem(["a", "b"], [0.0]) == "2 names but 1 positions"
    assert joint_state_problem(["a", "a"], [0.0, 1.0]) == "field 'name': joint 'a' appears twice"
    assert joint_state_problem(["a", "b"], [np.nan, np.inf]) == "field 'position': non-finite value for a, b"
