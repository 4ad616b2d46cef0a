"""Bag replay: the replay node publishes a recorded episode with /clock (a use_sim_time node follows
the bag's time), and the replay graph runs perception, policy and a dry-run executor on it while the
evaluator scores the would-be commands against the recorded ones."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, record_episodes, stop_peer

from vla_policy_node.core.replay import Pacer, match_commands, parse_remaps, plan_topics, task_and_seed
from vla_policy_node.data.bags import read_bag
from vla_policy_node.evaluation.replay_scoring import replay_score

DOMAIN_ID = 73
SHIPPED_BAG = ROOT / "artifacts" / "data" / "bags" / "button-press_s0"   # from `make data`, if present


@pytest.fixture(scope="module")
def bag(tmp_path_factory) -> Path:
    """A short recorded episode: the demonstration bag copied to tmp, else one recorded now."""
    tmp = tmp_path_factory.mktemp("replay_bag")
    if (SHIPPED_BAG / "metadata.yaml").is_file():
        return Path(shutil.copytree(SHIPPED_BAG, tmp / SHIPPED_BAG.name))
    record_episodes(tmp, DOMAIN_ID + 1, "[button-press]", "[100]", 70)
    return tmp / "bags" / "button-press_s100"


@pytest.fixture(scope="module")
def recorded(bag) -> dict:
    out = {}
    for topic, _, stamp, msg in read_bag(bag):
        out.setdefault(topic, []).append((stamp * 1e-9, msg))
    return out


# ---- core -----------------------------------------------------------------------------------

def test_topic_plan_selects_excludes_and_renames():
    conns = [("/clock", "rosgraph_msgs/msg/Clock", 5), ("/joint_states", "sensor_msgs/msg/JointState", 9),
             ("/vla/sim/success", "std_msgs/msg/Bool", 9)]
    plan = plan_topics(conns, [], ["/clock"], parse_remaps(["/vla/sim/success:=/replayed/success", ""]))
    assert [(t.source, t.target, t.count) for t in plan] == [("/joint_states", "/joint_states", 9),
                                                             ("/vla/sim/success", "/replayed/success", 9)]
    assert [t.source for t in plan_topics(conns, ["/joint_states"], [], {})] == ["/joint_states"]
    with pytest.raises(ValueError, match="parameter remap\\[0\\]: 'joint_states' is not '/from:=/to'"):
        parse_remaps(["joint_states"])
    with pytest.raises(ValueError, match="topic '/nope' is not in the bag"):
        plan_topics(conns, ["/nope"], [], {})
    with pytest.raises(ValueError, match="would both play on '/joint_states'"):
        plan_topics(conns, [], [], {"/vla/sim/success": "/joint_states"})


def test_pacer_and_episode_names():
    p = Pacer(0.5, bag_start_s=10.0, wall_start_s=100.0)
    assert p.wall_at(11.0) == pytest.approx(102.0) and p.bag_at(102.0) == pytest.approx(11.0)
    with pytest.raises(ValueError, match="rate must be > 0"):
        Pacer(0.0, 0.0, 0.0)
    assert task_and_seed("drawer-open_s3") == ("drawer-open", 3)
    assert task_and_seed("my_recording") == ("my_recording", None)


def test_commands_pair_by_stamp_within_tolerance():
    dt = 0.0125
    recorded = [(k * dt, [k, 0.0]) for k in (0, 1, 2, 3, 5)] + [(5 * dt, [55.0, 0.0])]   # step 5 resent
    commanded = [(0.0, [0.5, 0.0]), (2 * dt + 0.004, [2.0, 1.0]), (3 * dt + 0.007, [9.0, 9.0]), (5 * dt, [5.0, 0.0])]
    times, pred, target = match_commands(commanded, recorded, 0.5 * dt)
    assert times.tolist() == pytest.approx([0.0, 2 * dt + 0.004, 5 * dt])   # 3*dt+7 ms: beyond half a period
    assert target.tolist() == [[0, 0.0], [2, 0.0], [55.0, 0.0]]              # the latest recorded command wins
    assert pred.tolist() == [[0.5, 0.0], [2.0, 1.0], [5.0, 0.0]]
    empty = match_commands([], recorded, 0.5 * dt)
    assert empty[0].size == 0 and empty[1].shape == (0, 0)


def test_replay_score_coverage_and_l1_of_the_paired_commands():
    dt = 0.1
    commanded = [(0.0, [1.0, 0.0]), (0.1, [1.0, 1.0]), (0.2, [0.0, 0.0]), (0.2, [0.0, 0.5])]   # 0.2 re-sent
    recorded = [(0.0, [0.0, 0.0]), (0.1, [1.0, 1.0]), (0.3, [0.0, 0.0])]       # 0.2 vs 0.3: not paired
    score = replay_score(commanded, recorded, ["x", "grip"], dt)
    assert (score["matched"], score["commanded"], score["recorded"]) == (2, 3, 3)
    assert score["coverage"] == pytest.approx(2 / 3)
    assert score["l1"] == pytest.approx(0.25)                   # |1 - 0| once over 2 pairs x 2 dimensions
    assert score["l2"] == pytest.approx(0.5)
    assert score["per_dim_l1"] == {"x": pytest.approx(0.5), "grip": 0.0}
    assert score["per_dim_l2"] == {"x": pytest.approx(np.sqrt(0.5)), "grip": 0.0}


def test_replay_score_without_pairs_is_nan():
    apart = replay_score([(0.0, [1.0])], [(0.5, [1.0])], ["x"], 0.1)
    assert (apart["matched"], apart["coverage"]) == (0, 0.0)
    assert np.isnan(apart["l1"]) and np.isnan(apart["l2"]) and np.isnan(apart["per_dim_l1"]["x"])
    nothing_recorded = replay_score([(0.0, [1.0])], [], ["x"], 0.1)
    assert nothing_recorded["recorded"] == 0 and np.isnan(nothing_recorded["coverage"])


# ---- the replay node, across processes ---------------------------------------------------------

@pytest.mark.slow      # replays an episode recorded through the full graph
def test_replay_publishes_with_clock_and_sim_time_follows(bag, recorded, monkeypatch, tmp_path):
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Bool
    from vla_msgs.msg import EpisodeResult

    from vla_policy_node.nodes.common import LATCHED_QOS, TOPICS

    monkeypatch.setenv("ROS_DOMAIN_ID", str(DOMAIN_ID))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    rate = 2.0
    log = open(tmp_path / "replay.log", "w")
    proc = subprocess.Popen(
        [os.path.join(sys.prefix, "bin", "vla_replay"), "--ros-args", "-p", f"bag:={bag}", "-p", f"rate:={rate}",
         "-p", "wait_for_subscribers:=[/joint_states, /replayed/success]", "-p", "start_delay_s:=0.5",
         "-p", "exclude_topics:=[/clock, /vla/sim/ee_pose]", "-p", "remap:=['/vla/sim/success:=/replayed/success']"],
        env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    node = rclpy.create_node("sim_time_follower", context=context,
                             parameter_overrides=[Parameter("use_sim_time", value=True)])
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    deep = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000, reliability=ReliabilityPolicy.RELIABLE)
    joints, success, poses, states = [], [], [], []
    now = lambda: node.get_clock().now().nanoseconds * 1e-9
    node.create_subscription(JointState, "/joint_states",
                             lambda m: joints.append((m.header.stamp.sec + m.header.stamp.nanosec * 1e-9, now())),
                             deep)
    node.create_subscription(Bool, "/replayed/success", lambda m: success.append(m.data), deep)
    node.create_subscription(PoseStamped, "/vla/sim/ee_pose", poses.append, deep)
    node.create_subscription(EpisodeResult, TOPICS["replay_episode"], states.append, LATCHED_QOS)
    try:
        deadline = time.monotonic() + 40.0
        while time.monotonic() < deadline and not (states and states[-1].reason == "finished"):
            assert proc.poll() is None, (tmp_path / "replay.log").read_text()
            executor.spin_once(timeout_sec=0.05)
        for _ in range(20):                       # the last messages still in flight
            executor.spin_once(timeout_sec=0.05)
        assert states and states[-1].reason == "finished", (tmp_path / "replay.log").read_text()
        final_clock = now()
    finally:
        stop_peer(executor, node, context, proc, log)

    rec_joints = recorded["/joint_states"]
    assert len(joints) == len(rec_joints)                                  # reliable: every message
    assert [s for s, _ in joints] == pytest.approx(
        [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for _, m in rec_joints])
    assert success == [m.data for _, m in recorded["/vla/sim/success"]]    # renamed topic, same content
    assert poses == [] and "/vla/sim/ee_pose" in recorded                  # excluded
    # The follower's clock is the bag's time: at each message, close to the message's own stamp.
    clocks = np.array([c for _, c in joints])
    assert np.all(np.diff(clocks) >= 0)
    lag = clocks - np.array([s for s, _ in joints])
    assert lag.min() > -0.03 and lag.max() < 0.3, (lag.min(), lag.max())
    bag_end = max(t for topic, msgs in recorded.items() if topic not in ("/clock", "/vla/sim/ee_pose")
                  for t, _ in msgs)
    assert final_clock == pytest.approx(bag_end, abs=1e-6)
    # The latched description: the recorded episode and the replay's state.
    assert [s.reason for s in states][-1] == "finished" and "playing" in [s.reason for s in states]
    last = states[-1]
    task, seed = task_and_seed(bag.name)
    assert (last.task, last.seed, last.episode_id) == (task, seed, bag.name)
    assert last.success is True and last.steps == recorded["/vla/sim/env_state"][-1][1].step
    assert last.instruction == "press the button on the box"
    duration = last.duration_s
    assert duration / rate * 0.8 < last.wall_time_s < duration / rate + 1.5


# ---- the replay graph: live nodes on recorded data, dry-run -------------------------------------

@pytest.mark.slow      # replays an episode recorded through the full graph
def test_replay_graph_dry_run_is_scored_against_the_recording(bag, recorded, tmp_path):
    from vla_policy_node.graph_runner import run_graph

    os.environ["ROS_DOMAIN_ID"] = str(DOMAIN_ID + 2)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    out = tmp_path / "replay_run"
    overrides = {"replay": {"bag": str(bag)},
                 # the scripted expert on the recorded simulator state reproduces the recording
                 "policy": {"backend": "oracle"}, "executor": {"merge": "replace"},
                 "evaluator": {"output_dir": str(out), "record": "true",
                               "record_topics": "[/vla/executor/dry_run_command, /vla/sim/command]"}}
    result = run_graph("replay", overrides, out / "logs", timeout_s=150)
    assert result["error"] is None, result["error"]
    assert set(result["processes"]) == {"replay", "perception", "policy", "executor", "imagination_monitor",
                                        "evaluator"}
    report = json.loads((out / "report.json").read_text())
    assert report["mode"] == "replay" and report["policy"]["backend"] == "oracle"
    assert report["summary"]["replay_bag"] == str(bag)
    (ep,) = report["episodes"]
    assert (ep["task"], ep["reason"], ep["success"]) == ("button-press", "recorded", True)
    score = ep["replay"]
    rec_stamps = {round(m.header.stamp.sec + m.header.stamp.nanosec * 1e-9, 6)
                  for _, m in recorded["/vla/sim/command"]}
    assert score["recorded"] == len(rec_stamps)
    # paced playback: every recorded state waited for its answer, so (almost) every command pairs
    assert score["matched"] >= 0.95 * score["recorded"] and score["commanded"] >= score["matched"]
    # The oracle reads the recorded simulator state, so it commands what was recorded (up to timing).
    assert 0.0 <= score["l1"] < 0.05 and set(score["per_dim_l1"]) == {"dx", "dy", "dz", "gripper"}
    assert report["summary"]["replay_action_l1"] == pytest.approx(score["l1"])
    assert ep["progress_score"] == 1.0
    # What the dry-run executor published crossed DDS into the evaluator's recording.
    replayed = out / "bags" / f"{ep['name']}_replay"
    dry = [(s, m) for t, _, s, m in read_bag(replayed) if t == "/vla/executor/dry_run_command"]
    assert len(dry) >= score["matched"]
    assert all(len(m.values) == 4 and np.all(np.isfinite(m.values)) for _, m in dry)
    assert sum(round(m.header.stamp.sec + m.header.stamp.nanosec * 1e-9, 6) in rec_stamps for _, m in dry) \
        >= score["matched"]


def test_step_gate_holds_the_next_state_until_the_last_one_is_answered():
    from vla_policy_node.core.replay import StepGate

    gate = StepGate(timeout_s=5.0)
    assert not gate.waiting                                   # nothing published yet
    gate.state_published(1.0125)
    assert gate.waiting
    gate.answer(1.0)                                          # an answer to an older state does not count
    assert gate.waiting
    gate.answer(1.0125 - 1e-9)                                # the same stamp, float-rounded
    assert not gate.waiting
    gate.state_published(1.025)
    gate.timed_out()                                          # no answer: counted, playback goes on
    assert not gate.waiting and (gate.states, gate.timeouts) == (2, 1)


OLD_STATE_VECTOR = "std_msgs/Header header\nstring[] names\nfloat32[] values\nuint32 step\n"


def test_a_bag_recorded_before_a_message_gained_a_field_still_reads_and_replays(tmp_path):
    """A StateVector recorded without `success` (an older vla_msgs): the bag is read with its own
    stored definition, and the replay re-encodes it for this version with success = -1 (unknown)."""
    from rosbags.rosbag2 import Reader, Writer
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    from vla_msgs.msg import StateVector
    from vla_policy_node.data.bags import bag_typestore, definition_changed, make_typestore, to_ros_message
    from vla_policy_node.nodes.replay import describe_episode

    old = get_typestore(Stores.ROS2_KILTED)
    old.register(get_types_from_msg(OLD_STATE_VECTOR, "vla_msgs/msg/StateVector"))
    Header, Time = old.types["std_msgs/msg/Header"], old.types["builtin_interfaces/msg/Time"]
    Msg, Bool = old.types["vla_msgs/msg/StateVector"], old.types["std_msgs/msg/Bool"]
    path = tmp_path / "drawer-open_s7"
    with Writer(path, version=9) as writer:
        env = writer.add_connection("/vla/sim/env_state", "vla_msgs/msg/StateVector", typestore=old)
        success = writer.add_connection("/vla/sim/success", "std_msgs/msg/Bool", typestore=old)
        for step in range(3):
            msg = Msg(Header(Time(1, step * 1000), "world"), ["a", "b"], np.array([0.5, step], np.float32), step)
            writer.write(env, 10**9 + step, old.serialize_cdr(msg, Msg.__msgtype__))
            writer.write(success, 10**9 + step, old.serialize_cdr(Bool(step == 2), Bool.__msgtype__))
    with Reader(path) as reader:
        raw = next(r for c, _, r in reader.messages() if c.topic == "/vla/sim/env_state")
    with pytest.raises(Exception):            # this version's definition cannot read the old bytes
        make_typestore().deserialize_cdr(raw, "vla_msgs/msg/StateVector")
    steps = [msg.step for topic, _, _, msg in read_bag(path) if topic == "/vla/sim/env_state"]
    assert steps == [0, 1, 2]
    with Reader(path) as reader:
        recorded = bag_typestore(reader.connections)
    assert definition_changed("vla_msgs/msg/StateVector", recorded, make_typestore())
    assert not definition_changed("std_msgs/msg/Bool", recorded, make_typestore())
    current = to_ros_message(recorded.deserialize_cdr(raw, "vla_msgs/msg/StateVector"), StateVector)
    assert (current.success, current.step, list(current.names), current.header.frame_id) == (-1, 0, ["a", "b"], "world")
    assert list(current.values) == [0.5, 0.0] and current.header.stamp.sec == 1
    episode = describe_episode(path)
    assert (episode.task, episode.seed, episode.success, episode.steps) == ("drawer-open", 7, True, 2)
