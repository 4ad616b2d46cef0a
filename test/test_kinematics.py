"""Forward and inverse kinematics of the Panda URDF (Pinocchio), and pose commands solved to joints:
round trips on random reachable poses, joint limits, clear failures, agreement with MuJoCo."""

import time

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from vla_policy_node.core.cartesian_ik import PoseCommandSolver
from vla_policy_node.core.embodiment import load_robot, urdf_file
from vla_policy_node.core.kinematics import KinematicChain, KinematicsError, urdf_joint_limits

URDF = urdf_file("panda_arm.urdf")
JOINTS = [f"panda_joint{i}" for i in range(1, 8)]
READY = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])


def angle_between(quat_a, quat_b) -> float:
    """Angle (rad) of the rotation from one (x, y, z, w) quaternion to another."""
    return float((Rotation.from_quat(quat_a).inv() * Rotation.from_quat(quat_b)).magnitude())


@pytest.fixture(scope="module")
def chain():
    return KinematicChain(URDF, "panda_link0", "panda_link8")


def random_configurations(chain, n, seed=0, margin=0.1):
    """Joint vectors drawn inside the limits, `margin` of each range away from them."""
    rng = np.random.default_rng(seed)
    span = chain.upper - chain.lower
    return rng.uniform(chain.lower + margin * span, chain.upper - margin * span, size=(n, chain.dof))


def test_chain_from_urdf(chain):
    assert chain.joint_names == JOINTS and chain.dof == 7
    np.testing.assert_allclose(chain.lower[[3, 5]], [-3.0718, -0.0175])
    position, quat = chain.fk(np.zeros(7))
    # all joints at zero: the arm stands straight up, the flange 0.333 + 0.316 + 0.384 - 0.107 m high
    np.testing.assert_allclose(position, [0.088, 0.0, 0.926], atol=1e-6)
    assert abs(np.linalg.norm(quat) - 1.0) < 1e-12 and quat[3] >= 0


def test_joint_limits_from_the_urdf():
    limits = urdf_joint_limits(URDF)
    assert list(limits) == JOINTS
    assert (limits["panda_joint4"].lower, limits["panda_joint4"].upper) == (-3.0718, -0.0698)
    assert (limits["panda_joint7"].velocity, limits["panda_joint7"].effort) == (2.61, 12.0)


def test_ik_round_trip_on_random_reachable_poses(chain):
    """FK of random configurations gives reachable poses; IK warm-started near the answer (as from
    measured joints, up to 0.2 rad off per joint) reaches them within 1 mm and 0.1 deg."""
    rng = np.random.default_rng(1)
    solved, iterations, times = 0, [], []
    for q_true in random_configurations(chain, 100):
        position, quat = chain.fk(q_true)
        seed = np.clip(q_true + rng.uniform(-0.2, 0.2, 7), chain.lower, chain.upper)
        t = time.perf_counter()
        result = chain.ik(position, quat, seed)
        times.append(time.perf_counter() - t)
        assert result.success, result.message
        reached, reached_quat = chain.fk(result.q)
        assert np.linalg.norm(reached - position) < 1e-3
        assert angle_between(reached_quat, quat) < np.radians(0.1)
        assert chain.within_limits(result.q)
        solved += 1
        iterations.append(result.iterations)
    assert solved == 100 and np.mean(iterations) < 15
    assert np.median(times) < 0.02, f"median IK solve {np.median(times) * 1e3:.1f} ms"


def test_ik_from_ready_pose_over_the_reach_workspace(chain):
    """The deployment case: flange pointing down anywhere in the reach workspace, from the ready pose."""
    down = chain.fk(READY)[1]
    rng = np.random.default_rng(2)
    for target in rng.uniform((0.3, -0.3, 0.1), (0.65, 0.3, 0.5), size=(50, 3)):
        result = chain.ik(target, down, READY)
        assert result.success, result.message
        assert np.linalg.norm(chain.fk(result.q)[0] - target) < 1e-3 and chain.within_limits(result.q)


def test_position_only_ik_leaves_orientation_free(chain):
    result = chain.ik([0.5, 0.2, 0.3], None, READY)
    assert result.success and result.orientation_error == 0.0
    assert np.linalg.norm(chain.fk(result.q)[0] - [0.5, 0.2, 0.3]) < 1e-3


def test_ik_respects_narrowed_joint_limits():
    """Limits narrower than the URDF's (a robot file's) hold for every solution. A pose that needs
    joint 1 at +0.8 rad: with joint 1 capped at 0.3 rad the redundant arm still reaches it with
    joint 1 at the cap; with every twist joint (1, 3, 5, 7) within +-0.1 rad it cannot, and says so."""
    full = KinematicChain(URDF, "panda_link0", "panda_link8")
    q_true = READY + np.array([0.8, 0.2, 0.0, 0.3, 0.0, -0.2, 0.0])
    position, quat = full.fk(q_true)
    upper = full.upper.copy()
    upper[0] = 0.3
    capped = KinematicChain(URDF, "panda_link0", "panda_link8", upper=upper)
    result = capped.ik(position, quat, READY)
    assert result.success and result.q[0] <= 0.3 + 1e-12 and capped.within_limits(result.q)
    assert np.linalg.norm(capped.fk(result.q)[0] - position) < 1e-3
    lower, upper = full.lower.copy(), full.upper.copy()
    lower[[0, 2, 4, 6]], upper[[0, 2, 4, 6]] = -0.1, 0.1
    twist_capped = KinematicChain(URDF, "panda_link0", "panda_link8", lower=lower, upper=upper)
    result = twist_capped.ik(position, quat, READY)
    assert not result.success and result.position_error > 0.05 and twist_capped.within_limits(result.q)


def test_unreachable_pose_fails_clearly(chain):
    result = chain.ik([1.5, 0.0, 0.4], [1.0, 0.0, 0.0, 0.0], READY, max_iterations=50)
    assert not result.success and result.iterations == 50
    assert result.position_error > 0.5
    assert "did not converge in 50 iterations" in result.message and "position error" in result.message
    assert chain.within_limits(result.q)
    bad = chain.ik([0.5, 0.0, 0.4], [0.0, 0.0, 0.0, 0.0], READY)
    assert not bad.success and "no orientation" in bad.message


def test_chain_errors_name_urdf_and_link(tmp_path):
    with pytest.raises(KinematicsError, match="tip_link: no link 'tool0'"):
        KinematicChain(URDF, "panda_link0", "tool0")
    with pytest.raises(KinematicsError, match="base_link: no link 'panda_joint1'"):      # a joint, not a link
        KinematicChain(URDF, "panda_joint1", "panda_link8")
    with pytest.raises(KinematicsError, match="no movable joint between 'panda_link8' and 'panda_link0'"):
        KinematicChain(URDF, "panda_link8", "panda_link0")
    with pytest.raises(KinematicsError, match="not the chain"):
        KinematicChain(URDF, "panda_link0", "panda_link8", JOINTS[:6])
    with pytest.raises(KinematicsError, match="URDF not found"):
        KinematicChain(tmp_path / "none.urdf", "panda_link0", "panda_link8")


def test_sub_chain_locks_the_other_joints():
    wrist = KinematicChain(URDF, "panda_link4", "panda_link8")
    assert wrist.joint_names == ["panda_joint5", "panda_joint6", "panda_joint7"]
    assert np.linalg.norm(wrist.fk([0.0, 0.0, 0.0])[0]) > 0.1


def test_fk_agrees_with_mujoco():
    """The MuJoCo Panda compiled from the same URDF puts its flange where Pinocchio computes it."""
    from vla_policy_node.sim.panda_reach_sim import PandaReachSim

    chain = KinematicChain(URDF, "panda_link0", "panda_link8")
    sim = PandaReachSim([])
    for seed in range(5):
        sim.reset("reach", seed)
        _, q, _ = sim.joint_state()
        position, quat = chain.fk(q)
        sim_position, sim_quat = sim.ee_pose()
        np.testing.assert_allclose(position, sim_position, atol=1e-9)
        assert angle_between(quat, sim_quat) < 1e-6
    sim.close()


def test_pose_command_solver_warm_starts_holds_and_refuses():
    """The cartesian contract's solver (robot file panda_cartesian): tracks a pose stream from the
    measured joints; on an unreachable pose or a joint jump it holds the measured joints."""
    solver = PoseCommandSolver.from_embodiment(load_robot("panda_cartesian"))
    assert solver.joint_names == JOINTS and solver.max_joint_step == 0.1
    position, quat = solver.chain.fk(READY)
    q, result, why = solver.solve(np.concatenate([position + [0.005, 0, 0], quat]), READY)
    assert why == "" and result.success and result.iterations <= 5
    np.testing.assert_allclose(solver.chain.fk(q)[0], position + [0.005, 0, 0], atol=1e-4)
    held, result, why = solver.solve(np.concatenate([[1.5, 0.0, 0.4], quat]), READY)
    assert not result.success and "did not converge" in why
    np.testing.assert_array_equal(held, READY)
    held, result, why = solver.solve(np.concatenate([position + [0.0, 0.15, -0.1], quat]), READY)
    assert result.success and "max_joint_step" in why
    np.testing.assert_array_equal(held, READY)
    assert (solver.counters.solves, solver.counters.failures, solver.counters.refused) == (3, 1, 1)
