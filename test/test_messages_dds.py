"""Every vla_msgs message and service crosses a process boundary over DDS unchanged.

A separate process (test/dds_echo.py, same interpreter) echoes each message type back and serves
each service with a response computed from the request. Local-host discovery only, own domain id.
"""

from __future__ import annotations

import array
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import rclpy  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from builtin_interfaces.msg import Time  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from vla_msgs import msg as vla_msg  # noqa: E402
from vla_msgs import srv as vla_srv  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ECHO_SCRIPT = HERE / "dds_echo.py"
DOMAIN_ID = 47
WAIT_S = 20.0            # upper bound for any single round trip (discovery included)
REPUBLISH_S = 0.5

# Kept in sync with dds_echo.py by test_echo_covers_every_interface.
MESSAGE_TYPES = ["Observation", "ActionChunk", "ImaginedFuture", "ExecutionFeedback", "PolicyStatus",
                 "ExecutorStatus", "EpisodeResult", "ActionCommand", "StateVector", "ImaginationDivergence",
                 "EpisodeAnnouncement"]
SERVICE_TYPES = ["ResetEpisode", "SetInstruction", "SetArmed", "EmergencyStop", "Perturb"]
RESET_STAMP = (1_700_000_123, 456_789)   # dds_echo.RESET_STAMP_SEC / _NANOSEC

QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=10)


# --------------------------------------------------------------------------------------------
# Fully populated samples. Float32 values are exactly representable (dyadic) so == holds after
# the float64 -> float32 -> float64 trip of scalar float32 fields.
# --------------------------------------------------------------------------------------------

def _stamp(sec: int, nanosec: int) -> Time:
    return Time(sec=sec, nanosec=nanosec)


def _header(sec: int, nanosec: int, frame: str) -> Header:
    return Header(stamp=_stamp(sec, nanosec), frame_id=frame)


def _image(seed: int, height: int, width: int, sec: int) -> Image:
    data = array.array("B", [(seed * 31 + i * 7) % 256 for i in range(height * width * 3)])
    return Image(header=_header(sec, 1000 + seed, f"cam{seed}_optical"), height=height, width=width,
                 encoding="rgb8", is_bigendian=1, step=width * 3, data=data)


def _f32(*values: float) -> array.array:
    return array.array("f", values)


def make_sample(name: str):
    big = 2**63 + 12345  # exercises the full uint64 range
    if name == "Observation":
        return vla_msg.Observation(
            header=_header(1_234, 500_000_000, "base"), seq=big, episode_id="ep-0042",
            embodiment="metaworld_sawyer", instruction="press the red button",
            camera_names=["corner", "wrist"],
            images=[_image(1, 32, 32, 1_234), _image(2, 4, 6, 1_233)],
            joint_state=JointState(header=_header(1_234, 499_000_000, "joints"), name=["j1", "j2", "j3"],
                                   position=array.array("d", [0.1, -0.2, 0.3]),
                                   velocity=array.array("d", [1.5, -2.5, 3.5]),
                                   effort=array.array("d", [10.0, 20.0, -30.0])),
            state_names=["x", "y", "z", "gripper"], state=_f32(0.5, -0.25, 1.125, 0.0625),
            env_state=_f32(7.0, 8.5, -9.75), max_skew=0.015625)
    if name == "ActionChunk":
        return vla_msg.ActionChunk(
            header=_header(2_000, 1, "base"), chunk_id=big, obs_seq=77, episode_id="ep-7",
            action_space="ee_delta", action_names=["dx", "dy", "dz", "grip"], horizon=3, action_dim=4,
            dt=0.0625, actions=_f32(*[0.25 * i - 1.0 for i in range(12)]),
            actions_normalized=_f32(*[0.125 * i - 0.5 for i in range(12)]), start_index=1, prefix_length=2,
            backend="oracle", preprocess_ms=1.5, inference_ms=12.25, postprocess_ms=0.75, obs_age_ms=20.5)
    if name == "ImaginedFuture":
        return vla_msg.ImaginedFuture(
            header=_header(3_000, 3, "base"), chunk_id=99, camera_names=["corner", "wrist"],
            frames=[_image(k, 3, 5, 3_000 + k) for k in range(4)], frame_offsets=_f32(0.0625, 0.125))
    if name == "ExecutionFeedback":
        return vla_msg.ExecutionFeedback(
            header=_header(4_000, 4, "base"), episode_id="ep-fb", chunk_id=big - 1, executed_index=-3,
            action_dim=2, leftover_normalized=_f32(0.5, -0.5, 0.25, -0.25), prefix_fixed=True,
            executed_actions=_f32(1.0, 2.0), executed_count=1, state_names=["q1", "q2"],
            state=_f32(0.375, -0.875), request_chunk=True, request_after=_stamp(4_001, 999_999_999))
    if name == "PolicyStatus":
        return vla_msg.PolicyStatus(
            header=_header(5_000, 5, "policy"), backend="smolvla", embodiment="panda_ros2_control",
            ready=True, message="warm", chunks_published=big, requests_pending=3,
            inference_ms_p50=10.5, inference_ms_p95=30.25, inference_ms_last=11.75)
    if name == "ExecutorStatus":
        return vla_msg.ExecutorStatus(
            header=_header(6_000, 6, "executor"), mode="async_rtc", contract="ros2_control", armed=True,
            estop=True, dry_run=True, holding=True, hold_reason="stale state", queue_depth=13,
            commands_sent=big, chunks_received=101, chunks_rejected=2, actions_skipped_stale=3,
            starved_ticks=4, clamp_count=5, stale_holds=6, latency_ms_p50=40.5, latency_ms_p95=80.25)
    if name == "EpisodeResult":
        return vla_msg.EpisodeResult(
            header=_header(7_000, 7, "eval"), episode_id="ep-res", task="drawer-open",
            instruction="open the drawer", seed=101, success=True, steps=287, duration_s=5.75,
            wall_time_s=42.5, reason="success")
    if name == "ActionCommand":
        return vla_msg.ActionCommand(
            header=_header(8_000, 8, "base"), action_space="joint_position", names=["a", "b", "c"],
            values=array.array("d", [0.1, 0.2, -0.3]))
    if name == "StateVector":
        return vla_msg.StateVector(header=_header(9_000, 9, "world"), names=["obj_x", "obj_y"],
                                   values=_f32(0.5, 1.5), step=321, success=1)
    if name == "ImaginationDivergence":
        return vla_msg.ImaginationDivergence(
            header=_header(10_000, 10, "camera_corner"), episode_id="ep-div", chunk_id=big, camera_name="corner",
            frame_index=1, horizon_offset_s=0.1015625, time_error_s=-0.00390625, width=64, height=48,
            psnr=float("inf"), ssim=0.9375, divergence=0.0625, threshold=0.046875, exceeded=True, action="replan")
    if name == "EpisodeAnnouncement":
        return vla_msg.EpisodeAnnouncement(header=_header(11_000, 11, "eval"), episode_id="ep-ann", task="reach",
                                           instruction="reach the red sphere", seed=4_000_000_000, active=True)
    raise KeyError(name)


def default_valued_fields(msg, prefix: str = "") -> list[str]:
    """Dotted paths of fields (recursively) still equal to their type's default value."""
    out = []
    default = type(msg)()
    for field in msg.get_fields_and_field_types():
        value, path = getattr(msg, field), f"{prefix}{field}"
        if hasattr(value, "get_fields_and_field_types"):
            out += default_valued_fields(value, path + ".")
            continue
        if value == getattr(default, field):
            out.append(path)
        elif isinstance(value, list) and value and hasattr(value[0], "get_fields_and_field_types"):
            for i, item in enumerate(value):
                out += default_valued_fields(item, f"{path}[{i}].")
    return out


def differing_fields(a, b, prefix: str = "") -> list[str]:
    """Dotted paths of fields (recursively) whose values differ between two messages of one type."""
    out = []
    for field in a.get_fields_and_field_types():
        x, y, path = getattr(a, field), getattr(b, field), f"{prefix}{field}"
        if hasattr(x, "get_fields_and_field_types"):
            out += differing_fields(x, y, path + ".")
        elif x != y:
            out.append(f"{path}: {x!r} != {y!r}"[:200])
    return out


def spot_check(name: str, sent, back) -> None:
    """A few explicit field checks on top of ==."""
    assert back.header.stamp.sec == sent.header.stamp.sec
    assert back.header.stamp.nanosec == sent.header.stamp.nanosec
    assert back.header.frame_id == sent.header.frame_id
    if name == "Observation":
        assert back.seq == 2**63 + 12345
        assert back.camera_names == ["corner", "wrist"]
        assert len(back.images) == 2
        assert bytes(back.images[0].data) == bytes(sent.images[0].data)
        assert len(back.images[0].data) == 32 * 32 * 3
        assert (back.images[1].height, back.images[1].width, back.images[1].encoding) == (4, 6, "rgb8")
        assert list(back.joint_state.position) == [0.1, -0.2, 0.3]
        assert list(back.state) == [0.5, -0.25, 1.125, 0.0625]
        assert back.max_skew == 0.015625
    elif name == "ActionChunk":
        assert back.chunk_id == 2**63 + 12345
        assert list(back.actions) == [0.25 * i - 1.0 for i in range(12)]
        assert back.dt == 0.0625 and back.inference_ms == 12.25
        assert back.action_names == ["dx", "dy", "dz", "grip"]
    elif name == "ImaginedFuture":
        assert len(back.frames) == 4
        assert [f.header.stamp.sec for f in back.frames] == [3_000, 3_001, 3_002, 3_003]
        assert bytes(back.frames[3].data) == bytes(sent.frames[3].data)
    elif name == "ExecutionFeedback":
        assert back.executed_index == -3 and back.request_chunk is True and back.prefix_fixed is True
        assert (back.request_after.sec, back.request_after.nanosec) == (4_001, 999_999_999)
    elif name == "ExecutorStatus":
        assert back.mode == "async_rtc" and back.estop is True and back.commands_sent == 2**63 + 12345
    elif name == "ActionCommand":
        assert list(back.values) == [0.1, 0.2, -0.3]
    elif name == "StateVector":
        assert back.step == 321 and list(back.values) == [0.5, 1.5] and back.success == 1
    elif name == "ImaginationDivergence":
        assert back.chunk_id == 2**63 + 12345 and back.psnr == float("inf")
        assert (back.exceeded, back.action, back.divergence) == (True, "replan", 0.0625)
    elif name == "EpisodeAnnouncement":
        assert (back.episode_id, back.seed, back.active) == ("ep-ann", 4_000_000_000, True)


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ros_env():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ROS_DOMAIN_ID", str(DOMAIN_ID))
        mp.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        mp.delenv("ROS_STATIC_PEERS", raising=False)
        mp.delenv("ROS_LOCALHOST_ONLY", raising=False)
        yield dict(os.environ)


@pytest.fixture(scope="module")
def echo_process(ros_env, tmp_path_factory):
    """The echo peer; terminated in the finalizer whatever the tests did."""
    workdir = tmp_path_factory.mktemp("dds_echo")
    ready = workdir / "ready"
    log = open(workdir / "echo.log", "w+")
    proc = subprocess.Popen([sys.executable, str(ECHO_SCRIPT), str(ready)], env=ros_env, cwd=str(workdir),
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + WAIT_S
        while not ready.exists():
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"dds_echo.py exited with {proc.returncode}:\n{log.read()}")
            if time.monotonic() > deadline:
                pytest.fail("dds_echo.py did not become ready")
            time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        log.close()


class Peer:
    """This process's side: publishers, echo subscribers and service clients on one node."""

    def __init__(self, context, echo):
        self.context = context
        self.echo = echo
        self.node = rclpy.create_node("dds_echo_test", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.pubs, self.subs, self.received, self.clients = {}, {}, {}, {}
        for name in MESSAGE_TYPES:
            cls = getattr(vla_msg, name)
            self.received[name] = []
            self.pubs[name] = self.node.create_publisher(cls, f"/test_echo/{name}", QOS)
            self.subs[name] = self.node.create_subscription(
                cls, f"/test_echo/{name}/back", self.received[name].append, QOS)
        for name in SERVICE_TYPES:
            self.clients[name] = self.node.create_client(getattr(vla_srv, name), f"/test_echo/srv/{name}")

    def spin_until(self, predicate, timeout: float, every=None, period: float = REPUBLISH_S) -> bool:
        deadline = time.monotonic() + timeout
        next_action = 0.0
        while time.monotonic() < deadline:
            if predicate():
                return True
            if self.echo.poll() is not None:
                raise AssertionError(f"dds_echo.py died (exit code {self.echo.returncode})")
            if every is not None and time.monotonic() >= next_action:
                every()
                next_action = time.monotonic() + period
            self.executor.spin_once(timeout_sec=0.02)
        return predicate()

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()


@pytest.fixture(scope="module")
def peer(ros_env, echo_process):
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    p = Peer(context, echo_process)
    try:
        yield p
    finally:
        p.close()
        context.try_shutdown()


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------

def test_echo_covers_every_interface():
    import importlib.util
    spec = importlib.util.spec_from_file_location("dds_echo_helper", ECHO_SCRIPT)
    helper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helper)   # only defines things; main() is not run
    msgs = sorted(p.stem for p in (ROOT / "vla_msgs" / "msg").glob("*.msg"))
    srvs = sorted(p.stem for p in (ROOT / "vla_msgs" / "srv").glob("*.srv"))
    assert sorted(MESSAGE_TYPES) == msgs == sorted(helper.MESSAGE_TYPES)
    assert sorted(SERVICE_TYPES) == srvs == sorted(helper.SERVICE_TYPES)
    assert (helper.RESET_STAMP_SEC, helper.RESET_STAMP_NANOSEC) == RESET_STAMP


@pytest.mark.parametrize("name", MESSAGE_TYPES)
def test_sample_is_fully_populated(name):
    sample = make_sample(name)
    assert default_valued_fields(sample) == []
    assert sample != getattr(vla_msg, name)()


def test_populated_check_detects_default_fields():
    sample = make_sample("Observation")
    sample.images[1].step = 0
    sample.max_skew = 0.0
    assert default_valued_fields(sample) == ["images[1].step", "max_skew"]


@pytest.mark.parametrize("name", MESSAGE_TYPES)
def test_message_round_trip(peer, name):
    sent = make_sample(name)
    pub, sub, received = peer.pubs[name], peer.subs[name], peer.received[name]
    assert peer.spin_until(lambda: pub.get_subscription_count() > 0 and sub.get_publisher_count() > 0,
                           WAIT_S), f"/test_echo/{name}: echo peer not matched"
    assert peer.spin_until(lambda: bool(received), WAIT_S, every=lambda: pub.publish(sent)), \
        f"/test_echo/{name}: nothing came back within {WAIT_S} s"
    peer.executor.spin_once(timeout_sec=0.05)
    for back in received:
        assert type(back) is type(sent)
        assert back is not sent
        assert back == sent, f"changed in transit: {differing_fields(sent, back)}"
    back = received[0]
    spot_check(name, sent, back)
    assert back != getattr(vla_msg, name)()


def _call(peer, name: str, **request_fields):
    client = peer.clients[name]
    assert peer.spin_until(client.service_is_ready, WAIT_S), f"/test_echo/srv/{name}: no server"
    request = getattr(vla_srv, name).Request(**request_fields)
    future = client.call_async(request)
    assert peer.spin_until(future.done, WAIT_S), f"/test_echo/srv/{name}: no response"
    response = future.result()
    assert isinstance(response, getattr(vla_srv, name).Response)
    return response


def test_set_instruction_service(peer):
    r = _call(peer, "SetInstruction", instruction="open the drawer", episode_id="ep-1")
    assert (r.success, r.message) == (True, "got open the drawer for ep-1")
    r = _call(peer, "SetInstruction", instruction="close it", episode_id="ep-2")
    assert (r.success, r.message) == (True, "got close it for ep-2")


def test_reset_episode_service(peer):
    r = _call(peer, "ResetEpisode", task="button-press", instruction="Press the Button", seed=4_000_000_000,
              episode_id="ep-9")
    assert r.success is True
    assert r.instruction == "PRESS THE BUTTON"
    assert r.message == "button-press|4000000000|ep-9"
    assert (r.stamp.sec, r.stamp.nanosec) == RESET_STAMP
    r = _call(peer, "ResetEpisode", task="", instruction="", seed=0, episode_id="")
    assert (r.success, r.instruction, r.message) == (False, "", "|0|")
    assert (r.stamp.sec, r.stamp.nanosec) == RESET_STAMP


@pytest.mark.parametrize("armed", [True, False])
def test_set_armed_service(peer, armed):
    r = _call(peer, "SetArmed", armed=armed)
    assert r.success is armed
    assert r.message == ("armed" if armed else "disarmed")


@pytest.mark.parametrize("engage,clear", [(True, False), (False, True), (True, True), (False, False)])
def test_emergency_stop_service(peer, engage, clear):
    r = _call(peer, "EmergencyStop", engage=engage, clear=clear, reason=f"operator {engage}/{clear}")
    assert r.estop is engage
    assert r.success is clear
    assert r.message == f"reason=operator {engage}/{clear}"


def test_perturb_service(peer):
    r = _call(peer, "Perturb", kind="object", offset_m=[0.1, -0.0625, 1e-9], at_step=4_000_000_000)
    assert (r.success, r.message) == (True, f"object|0.1,-0.0625,{1e-9!r}|4000000000")   # float64 exact
    r = _call(peer, "Perturb", kind="hand", offset_m=[0.0, 0.0, 0.0], at_step=0)
    assert (r.success, r.message) == (False, "hand|0.0,0.0,0.0|0")


def test_echo_process_still_running(echo_process):
    """The echo peer survived every round trip (a crash would otherwise only show as timeouts)."""
    assert echo_process.poll() is None
