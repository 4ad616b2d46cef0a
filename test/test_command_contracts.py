"""The ros2_control, isaac and cartesian command contracts end to end against the MuJoCo Panda.

For each contract a full graph (sim bridge with panda_reach, perception, reach_ik policy, executor,
evaluator; one process each, real DDS; the three graphs side by side in ROS domains 64-66) runs a
reach episode that must succeed; the recorded bag
shows the commands crossing on the contract's topic with the contract's type and the Panda's
joint names, and the executor's safety gate shows no command outside limits. Before that, the
robot-file keys the contracts need fail with file and key, and trajectories sample as a
JointTrajectoryController plays them.
"""

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pytest
import yaml
from scipy.spatial.transform import Rotation

from vla_policy_node.core.embodiment import EmbodimentConfigError, load_embodiment, load_robot, urdf_file
from vla_policy_node.core.joint_trajectory import JointCommandError, joint_vector, sample_trajectory
from vla_policy_node.core.kinematics import KinematicChain
from vla_policy_node.data.bags import read_bag

JOINTS = [f"panda_joint{i}" for i in range(1, 8)]
SEED = 100


@dataclass
class Contract:
    graph: str
    robot: str
    domain_id: int                    # ROS_DOMAIN_ID of its graph (60-69 are this file's)
    topic: str                        # where the commands cross
    msgtype: str


CONTRACTS = {
    "ros2_control": Contract("arm_ros2_control", "panda_ros2_control", 64, "/panda_arm_controller/joint_trajectory",
                             "trajectory_msgs/msg/JointTrajectory"),
    "isaac": Contract("arm_isaac", "panda_isaac", 65, "/joint_command", "sensor_msgs/msg/JointState"),
    "cartesian": Contract("arm_cartesian", "panda_cartesian", 66, "/panda_arm_controller/joint_trajectory",
                          "trajectory_msgs/msg/JointTrajectory"),
}


# ---- robot files ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["panda_ros2_control", "panda_isaac", "panda_cartesian"])
def test_panda_robot_files_load(name):
    cfg = load_robot(name).config
    assert cfg.kinematics.tip_link == "panda_link8" and cfg.output.joint_names == JOINTS
    assert cfg.action.space == ("ee_absolute" if name == "panda_cartesian" else "joint_position")


@pytest.fixture
def cartesian_copy(tmp_path, robots_dir):
    """Write an edited copy of panda_cartesian.yaml; returns the error message of loading it."""
    def load(edit):
        data = yaml.safe_load((robots_dir / "panda_cartesian.yaml").read_text())
        edit(data)
        path = tmp_path / "arm.yaml"
        path.write_text(yaml.safe_dump(data))
        with pytest.raises(EmbodimentConfigError) as info:
            load_embodiment(path)
        assert str(path) in str(info.value)
        return str(info.value)
    return load


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["output"].pop("ik"), "output.ik: required when output.joint_names are set"),
    (lambda d: d.pop("kinematics"), "kinematics: required with output.ik"),
    (lambda d: d["output"].pop("joint_names"), "output.joint_names: required with output.ik"),
    (lambda d: d["output"]["ik"].update(joint_command="effort"), "output.ik.joint_command"),
    (lambda d: d["output"]["ik"].update(tolerance_m=0), "output.ik.tolerance_m"),
    (lambda d: d["kinematics"].update(tip_link="tool0"), "kinematics.tip_link: no link 'tool0'"),
    (lambda d: d["kinematics"].update(urdf="ur5.urdf"), "kinematics.urdf: 'ur5.urdf' not found"),
    (lambda d: d["kinematics"].update(base_link="panda_link2"), "output.joint_names: ['panda_joint1'"),
    (lambda d: d["action"].update(space="ee_delta"), "action.space: the 'cartesian' contract needs 'ee_absolute'"),
])
def test_cartesian_ik_keys_fail_with_file_and_key(cartesian_copy, edit, message):
    assert message in cartesian_copy(edit)


def edited_panda(tmp_path, robots_dir, name: str, output: dict):
    """A copy of a Panda robot file (with its statistics file) whose output section gets `output`."""
    data = yaml.safe_load((robots_dir / f"{name}.yaml").read_text())
    data["output"].update(output)
    shutil.copy(robots_dir / "panda_ros2_control_stats.yaml", tmp_path)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_ik_keys_only_for_the_cartesian_contract(tmp_path, robots_dir):
    path = edited_panda(tmp_path, robots_dir, "panda_isaac", {"ik": {"joint_command": "joint_state"}})
    with pytest.raises(EmbodimentConfigError, match=r"panda_isaac.yaml: output.ik: only for the 'cartesian' contract"):
        load_embodiment(path)


# ---- joint commands as a trajectory controller reads them ----------------------------------------

def test_joint_commands_map_names_and_sample_trajectories():
    current = np.zeros(7)
    q = joint_vector(["panda_joint3", "panda_joint1"], [0.3, 0.1], JOINTS, current)
    np.testing.assert_allclose(q, [0.1, 0, 0.3, 0, 0, 0, 0])
    with pytest.raises(JointCommandError, match="unknown joints"):
        joint_vector(["elbow"], [0.1], JOINTS, current)
    with pytest.raises(JointCommandError, match="non-finite"):
        joint_vector(["panda_joint1"], [np.nan], JOINTS, current)
    a, b = np.full(7, 1.0), np.full(7, 3.0)
    # from the current target at start (t = 10 s) to a at +0.02 s, then b at +0.06 s
    np.testing.assert_allclose(sample_trajectory(current, 10.0, [0.02, 0.06], [a, b], 10.01), 0.5)
    np.testing.assert_allclose(sample_trajectory(current, 10.0, [0.02, 0.06], [a, b], 10.04), 2.0)
    np.testing.assert_allclose(sample_trajectory(current, 10.0, [0.02, 0.06], [a, b], 11.0), 3.0)
    np.testing.assert_allclose(sample_trajectory(current, 10.0, [0.0], [a], 10.0), 1.0)
    with pytest.raises(JointCommandError, match="must increase"):
        sample_trajectory(current, 0.0, [0.04, 0.02], [a, b], 0.0)


# ---- full graphs over DDS ---------------------------------------------------------------------------

def test_recorded_joint_commands_are_checked_against_the_urdf_limits(tmp_path):
    """A bag of JointTrajectory commands (two points each) for panda_ros2_control: every point is one
    commanded configuration; only those past a joint's URDF limit count as outside."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    from vla_policy_node.data.bags import make_typestore
    from vla_policy_node.evaluation.command_limits import commands_outside_limits

    robot = load_robot("panda_ros2_control")
    lo = np.asarray(robot.config.limits.joint_position_min)
    hi = np.asarray(robot.config.limits.joint_position_max)
    inside, past_max = (lo + hi) / 2, (lo + hi) / 2
    past_max[3] = hi[3] + 0.01                         # one joint 10 mrad beyond its limit
    ts, msgtype = make_typestore(), "trajectory_msgs/msg/JointTrajectory"
    T = ts.types
    writer = Writer(tmp_path / "bag", version=9, storage_plugin=StoragePlugin.SQLITE3)
    writer.open()
    conn = writer.add_connection("/panda_arm_controller/joint_trajectory", msgtype, typestore=ts)
    for k, second in enumerate([inside, past_max, hi]):            # exactly at the limit is inside
        points = [T["trajectory_msgs/msg/JointTrajectoryPoint"](
            positions=np.asarray(q, float), velocities=np.zeros(0), accelerations=np.zeros(0), effort=np.zeros(0),
            time_from_start=T["builtin_interfaces/msg/Duration"](sec=0, nanosec=n * 10_000_000))
            for n, q in enumerate([inside, second])]
        msg = T[msgtype](header=T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=1, nanosec=k),
                                                          frame_id=""), joint_names=JOINTS, points=points)
        writer.write(conn, 10 ** 9 + k, ts.serialize_cdr(msg, msgtype))
    writer.close()
    assert commands_outside_limits(tmp_path / "bag", robot) == (6, 1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One reach episode through each contract's graph, the three graphs side by side (each in its
    own ROS domain); contract name -> (output folder, runner result)."""
    from vla_policy_node.graph_runner import run_graph

    outs = {name: tmp_path_factory.mktemp(c.graph) for name, c in CONTRACTS.items()}

    def run_one(name: str):
        contract, out = CONTRACTS[name], outs[name]
        overrides = {"evaluator": {"seeds": f"[{SEED}]", "output_dir": str(out), "episode_timeout_s": "45.0"},
                     "executor": {"stats_file": str(out / "executor_stats.json")}}
        env = {"ROS_DOMAIN_ID": str(contract.domain_id), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
        return out, run_graph(contract.graph, overrides, out / "logs", timeout_s=100, env=env)

    with ThreadPoolExecutor(len(CONTRACTS)) as pool:
        futures = {name: pool.submit(run_one, name) for name in CONTRACTS}
        return {name: future.result() for name, future in futures.items()}


@pytest.fixture(params=list(CONTRACTS))
def run(request, runs):
    """(contract, output folder, runner result) of one contract's graph, which must have finished."""
    contract = CONTRACTS[request.param]
    out, result = runs[request.param]
    if result["error"] is not None:
        logs = "".join(f"\n--- {log.name}\n" + "".join(log.read_text().splitlines(True)[-15:])
                       for log in sorted((out / "logs").glob("*.log")))
        pytest.fail(f"{contract.graph}: {result['error']}{logs}")
    return contract, out, result


def bag_messages(out) -> dict:
    messages = {}
    for topic, msgtype, _, msg in read_bag(out / "bags" / f"reach_s{SEED}"):
        messages.setdefault(topic, []).append((msgtype, msg))
    return messages


def panda_chain() -> KinematicChain:
    return KinematicChain(urdf_file("panda_arm.urdf"), "panda_link0", "panda_link8")


def stamp(msg) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


@pytest.mark.slow      # three full Panda graphs
def test_reach_episode_succeeds(run):
    contract, out, result = run
    assert set(result["processes"]) == {"sim_bridge", "perception", "policy", "executor", "evaluator"}
    report = json.loads((out / "report.json").read_text())
    assert report["robot"] == contract.robot and report["policy"]["backend"] == "reach_ik"
    episode, = report["episodes"]
    assert episode["task"] == "reach" and episode["seed"] == SEED
    assert episode["success"] and episode["reason"] == "success" and 20 < episode["steps"] < 200


@pytest.mark.slow      # three full Panda graphs
def test_commands_crossed_on_the_contract_topic(run):
    """Every step of the episode was driven by a command of the contract's type naming the Panda's
    joints, stamped with a sim time the robot published (lockstep), inside the joint limits; the
    flange ended at the target; for the cartesian contract, each command solves its pose target."""
    contract, out, _ = run
    messages = bag_messages(out)
    commands = messages.get(contract.topic, [])
    assert commands, f"no command recorded on {contract.topic}"
    assert {t for t, _ in commands} == {contract.msgtype}
    state_stamps = {round(stamp(m), 6) for _, m in messages["/joint_states"]}
    chain = panda_chain()
    for _, msg in commands:
        if contract.msgtype.startswith("trajectory_msgs"):
            assert list(msg.joint_names) == JOINTS and len(msg.points) == 1
            point = msg.points[0]
            assert (point.time_from_start.sec, point.time_from_start.nanosec) == (0, 20_000_000)
            positions = np.asarray(point.positions)
        else:
            assert list(msg.name) == JOINTS
            positions = np.asarray(msg.position)
        assert positions.shape == (7,) and chain.within_limits(positions)
        assert round(stamp(msg), 6) in state_stamps
    steps = max(m.step for _, m in messages["/vla/sim/env_state"])
    assert len(commands) >= steps - 1           # the sim advanced once per command
    ee_topic = load_robot(contract.robot).config.state.ee_pose_topic or "/vla/sim/ee_pose"
    final = messages[ee_topic][-1][1].pose.position
    target = np.asarray(messages["/vla/sim/env_state"][-1][1].values[:3])
    assert np.linalg.norm([final.x - target[0], final.y - target[1], final.z - target[2]]) < 0.02
    if contract.robot == "panda_cartesian":
        check_pose_targets_solved(messages, commands)


def check_pose_targets_solved(messages: dict, commands: list) -> None:
    """cartesian contract: each joint command is the IK solution of the pose target of its stamp."""
    targets = {round(stamp(m), 6): m.pose for _, m in messages["/vla/executor/pose_target"]}
    chain = panda_chain()
    assert len(targets) >= len(commands) - 1
    for _, msg in commands:
        pose = targets[round(stamp(msg), 6)]
        position, quat = chain.fk(msg.points[0].positions)
        p, q = pose.position, pose.orientation
        assert np.linalg.norm(position - [p.x, p.y, p.z]) < 1e-3
        assert (Rotation.from_quat(quat).inv() * Rotation.from_quat([q.x, q.y, q.z, q.w])).magnitude() < 2e-3


@pytest.mark.slow      # three full Panda graphs
def test_safety_gate_saw_no_command_outside_limits(run):
    contract, out, _ = run
    status = [m for _, m in bag_messages(out)["/vla/executor_status"]]
    assert status and all(s.contract == contract.graph.removeprefix("arm_") for s in status)
    assert status[-1].commands_sent > 20
    assert all(s.clamp_count == 0 and s.chunks_rejected == 0 for s in status)
    gate = json.loads((out / "executor_stats.json").read_text())["gate"]
    assert gate["commands_checked"] > 20
    assert gate["outside_limits"] == 0 and gate["commands_clamped"] == 0 and gate["chunks_rejected"] == 0


@pytest.mark.slow      # a full Panda graph
def test_follow_joint_trajectory_goals_drive_the_reach(tmp_path, robots_dir):
    """The ros2_control contract with output.trajectory_action: every command a FollowJointTrajectory
    goal (tolerances from the robot file) to the embedded Panda's trajectory controller, none on the
    topic; the controller's results are counted; the reach succeeds."""
    from vla_policy_node.graph_runner import run_graph

    robot = edited_panda(tmp_path, robots_dir, "panda_ros2_control", {"trajectory_action": {
        "name": "panda_arm_controller/follow_joint_trajectory", "path_tolerance": 0.2, "goal_tolerance": [0.05] * 7,
        "goal_time_tolerance_s": 0.1}})
    assert load_embodiment(robot).config.output.trajectory_action.goal_tolerance == [0.05] * 7
    out = tmp_path / "run"
    overrides = {"evaluator": {"seeds": f"[{SEED}]", "output_dir": str(out), "episode_timeout_s": "45.0"},
                 "executor": {"stats_file": str(out / "executor_stats.json")}}
    env = {"ROS_DOMAIN_ID": "67", "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    result = run_graph("arm_ros2_control", overrides, out / "logs", robot=str(robot), timeout_s=120, env=env)
    assert result["error"] is None, result["error"]
    episode, = json.loads((out / "report.json").read_text())["episodes"]
    assert episode["success"] and 20 < episode["steps"] < 200
    stats = json.loads((out / "executor_stats.json").read_text())
    controller = stats["controller"]
    assert controller["sent"] >= episode["steps"] - 1 and controller["successful"] >= episode["steps"] - 1
    # nothing refused or failed; a command re-sent in lockstep (its state seemed lost) comes late
    assert set(controller) <= {"sent", "successful", "old_header_timestamp"}
    assert controller.get("old_header_timestamp", 0) <= stats["commands_resent"]
    assert "/panda_arm_controller/joint_trajectory" not in bag_messages(out)    # goals, not topic messages


def test_trajectory_action_keys_are_checked(tmp_path, robots_dir):
    path = edited_panda(tmp_path, robots_dir, "panda_isaac", {"trajectory_action": {"name": "arm/fjt"}})
    with pytest.raises(EmbodimentConfigError, match="trajectory_action: needs contract 'ros2_control'"):
        load_embodiment(path)
    path = edited_panda(tmp_path, robots_dir, "panda_ros2_control",
                        {"trajectory_action": {"name": "arm/fjt", "goal_tolerance": [0.1, 0.1]}})
    with pytest.raises(EmbodimentConfigError, match="trajectory_action.goal_tolerance: 2 values for 7 joint_names"):
        load_embodiment(path)
