"""The MuJoCo Panda reach simulation and the reach_ik backend, without ROS: reproducible scenes, a
servo that tracks joint targets, rendering, and the scripted reach succeeding within the robot
files' joint limits (position, velocity, acceleration, max step) for joint and Cartesian actions."""

import numpy as np
import pytest

from vla_policy_node.core.cartesian_ik import PoseCommandSolver
from vla_policy_node.core.embodiment import load_robot
from vla_policy_node.models.backend import PolicyInput
from vla_policy_node.models.registry import available_backends, make_backend
from vla_policy_node.sim.panda_reach_sim import READY_POSE, SUCCESS_RADIUS, TARGET_BOX, PandaReachSim

SEEDS = [100, 101, 102, 103, 104]


@pytest.fixture(scope="module")
def sim():
    s = PandaReachSim(["scene"], width=64, height=64)
    yield s
    s.close()


def test_reset_is_reproducible_per_seed(sim):
    sim.reset("reach", 7)
    a, qa = sim.env_state, sim.joint_state()[1]
    sim.reset("reach", 7)
    np.testing.assert_array_equal(a, sim.env_state)
    np.testing.assert_array_equal(qa, sim.joint_state()[1])
    sim.reset("reach", 8)
    assert not np.allclose(a, sim.env_state)
    assert np.all(sim.env_state >= TARGET_BOX[0]) and np.all(sim.env_state <= TARGET_BOX[1])
    assert np.max(np.abs(sim.joint_state()[1] - READY_POSE)) <= 0.1 + 1e-12
    with pytest.raises(ValueError, match="task 'push' unknown"):
        sim.reset("push", 0)


def test_servo_tracks_a_joint_ramp_and_holds_still(sim):
    sim.reset("reach", 0)
    q0 = sim.joint_state()[1]
    for _ in range(25):                     # held targets: the arm does not sag (gravity compensated)
        sim.step(q0)
    assert np.max(np.abs(sim.joint_state()[1] - q0)) < 1e-4
    target = q0.copy()
    for _ in range(40):                     # 0.8 rad/s on every joint
        target += 0.8 * sim.dt
        sim.step(target)
    assert np.max(np.abs(sim.joint_state()[1] - target)) < 0.01
    assert sim.step_index == 65 and not sim.success


def test_render_and_state(sim):
    sim.reset("reach", 1)
    frame = sim.render()["scene"]
    assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8 and frame.std() > 10
    names, pos, vel = sim.joint_state()
    assert names == [f"panda_joint{i}" for i in range(1, 8)] and pos.shape == vel.shape == (7,)
    xyz, quat = sim.ee_pose()
    assert 0.2 < xyz[0] < 0.4 and xyz[2] > 0.5 and abs(np.linalg.norm(quat) - 1) < 1e-9


def test_reach_ik_is_registered():
    assert "reach_ik" in available_backends()
    with pytest.raises(ValueError, match="kinematics .* is required"):
        make_backend("reach_ik", _without_kinematics())


def _without_kinematics():
    robot = load_robot("panda_isaac")
    robot.config = robot.config.model_copy(update={"kinematics": None})
    return robot


def run_reach(robot_name: str, seed: int, sim: PandaReachSim):
    """Closed loop as the executor runs it (sync: 8 of 16 actions, executed actions fed back);
    returns (success, steps, sent actions)."""
    robot = load_robot(robot_name)
    cfg = robot.config
    backend = make_backend("reach_ik", robot)
    solver = PoseCommandSolver.from_embodiment(robot) if cfg.output.ik is not None else None
    sim.reset("reach", seed)
    backend.reset("reach the red target", seed, "reach")
    sent = []
    while not sim.success and sim.step_index < 200:
        q = sim.joint_state()[1]
        state = q if cfg.action.space == "joint_position" else np.concatenate(sim.ee_pose())
        out = backend.predict(PolicyInput(0.0, "", {}, state, sim.env_state))
        assert out.actions.shape == (cfg.action.horizon, cfg.action.dim)
        executed = out.actions[: cfg.action.execute_per_chunk].astype(np.float32).astype(np.float64)
        for action in executed:
            joints = solver.solve(action, sim.joint_state()[1])[0] if solver else action
            sim.step(joints)
            sent.append(action)
        backend.update(executed)
    return sim.success, sim.step_index, np.array(sent)


@pytest.mark.parametrize("seed", SEEDS)
def test_reach_in_joint_space_within_the_joint_limits(sim, seed):
    success, steps, q = run_reach("panda_ros2_control", seed, sim)
    assert success and steps < 150 and sim.distance() < SUCCESS_RADIUS
    lim, dt = load_robot("panda_ros2_control").config.limits, 1 / 50
    assert np.all(q >= lim.action_min) and np.all(q <= lim.action_max)
    step = np.abs(np.diff(q, axis=0))
    assert np.all(step <= np.minimum(lim.max_step, np.asarray(lim.joint_velocity_max) * dt))
    assert np.all(np.abs(np.diff(q, 2, axis=0)) <= np.asarray(lim.joint_acceleration_max) * dt ** 2)


@pytest.mark.parametrize("seed", SEEDS[:3])
def test_reach_with_pose_targets_solved_by_ik(sim, seed):
    success, steps, poses = run_reach("panda_cartesian", seed, sim)
    assert success and steps < 150
    lim = load_robot("panda_cartesian").config.limits
    assert np.all(np.abs(np.diff(poses, axis=0)) <= lim.max_step)
    np.testing.assert_allclose(np.linalg.norm(poses[:, 3:], axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(poses[:, 3:], poses[:1, 3:].repeat(len(poses), axis=0), atol=1e-6)   # held
    speed = np.linalg.norm(np.diff(poses[:, :3], axis=0), axis=1) * 50
    assert speed.max() <= 0.25 + 1e-4      # m/s (float32 actions)


def test_a_holding_executor_does_not_drag_a_reset_arm_back_to_its_last_command():
    """A task ends (the executor disarms and holds), the simulator is reset to the next task's seed,
    and the resets of the graph reach the executor a few ticks later: the held arm stays where the
    reset put it. (Holding the last command dragged it up to 0.78 rad back towards the last task's
    pose in 15 ticks, so the next episode started from a pose that depended on the graph's timing.)"""
    from vla_policy_node.core.action_queue import Chunk
    from vla_policy_node.core.executor import ChunkExecutor

    robot = load_robot("panda_ros2_control")
    names, dt = robot.config.action.names, robot.config.action.dt
    sim = PandaReachSim([], control_dt=dt)
    ex = ChunkExecutor(robot, lockstep=False, overrides={"merge": "replace"})

    def measured():
        joints, positions, _ = sim.joint_state()
        return np.array([positions[joints.index(n)] for n in names])

    sim.reset("reach", 7)
    ex.reset("a", 0.0)
    ex.set_armed(True)
    t = 0.0
    for k in range(40):                           # the last task: joint 1 turned by 0.6 rad
        result = ex.tick(t, t, measured())
        if result.request_chunk:
            plan = measured() + np.outer(np.linspace(0.04, 0.6, 16), np.eye(7)[0])
            ex.on_chunk(Chunk(k + 1, t, dt, plan, plan, 0, "a"), t)
        if result.command is not None:
            sim.step(result.command)
        t += dt
    ex.set_armed(False)
    sim.reset("reach", 101)
    start = measured()
    for _ in range(15):
        result = ex.tick(t, t, measured())
        assert result.hold_reason == "disarmed"
        sim.step(result.command)
        t += dt
    assert np.abs(measured() - start).max() < 1e-3
    assert ex.counters["hold_resyncs"] == 1
    # an arm that merely lags its command is still held at the command
    ex.set_armed(True)
    held = ex.tick(t, t, measured() + 0.5 * np.asarray(robot.config.limits.max_step))
    assert ex.counters["hold_resyncs"] == 1 and held.command is not None
