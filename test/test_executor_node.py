"""The executor node in its own process, driven over DDS from this test: a wall-clock control loop
(free-running) turns chunks into commands on the robot's contract; e-stop latches; dry-run
publishes nothing to the robot; stale state holds; bad chunks are rejected and counted; the
policy gets an RTC prefix with its request."""

import os
import subprocess
import time

import numpy as np
import pytest
import rclpy
from geometry_msgs.msg import PoseStamped
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import JointState
from vla_msgs.msg import ActionChunk, ActionCommand, ExecutionFeedback, ExecutorStatus
from vla_msgs.srv import EmergencyStop, ResetEpisode, SetArmed

from vla_policy_node.graph_runner import find_executable
from vla_policy_node.nodes.common import LATCHED_QOS, RELIABLE_QOS, SERVICES, TOPICS, to_sec, to_stamp

DT = 1.0 / 80
HORIZON = 8                                         # actions in each chunk this test sends


class Robot:
    """This test's side: publishes the measured state, answers requests, records what comes out."""

    def __init__(self, domain: int, **params):
        os.environ["ROS_DOMAIN_ID"] = str(domain)
        args = [find_executable("vla_executor"), "--ros-args", "-p", "lockstep:=false", "-p", "armed_at_start:=false"]
        for k, v in params.items():
            args += ["-p", f"{k}:={v}"]
        self.proc = subprocess.Popen(args, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("robot", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        n = self.node
        self.commands, self.dry, self.feedback, self.status = [], [], [], []
        n.create_subscription(ActionCommand, "/vla/sim/command", self.commands.append, RELIABLE_QOS)
        n.create_subscription(ActionCommand, TOPICS["dry_run_command"], self.dry.append, RELIABLE_QOS)
        n.create_subscription(ExecutionFeedback, TOPICS["feedback"], self.feedback.append, RELIABLE_QOS)
        n.create_subscription(ExecutorStatus, TOPICS["executor_status"], self.status.append, LATCHED_QOS)
        self.joint_pub = n.create_publisher(JointState, "/joint_states", RELIABLE_QOS)
        self.ee_pub = n.create_publisher(PoseStamped, "/vla/sim/ee_pose", RELIABLE_QOS)
        self.chunk_pub = n.create_publisher(ActionChunk, TOPICS["action_chunk"], RELIABLE_QOS)
        self.clients = {k: n.create_client(t, SERVICES[k]) for k, t in
                        (("executor_reset", ResetEpisode), ("set_armed", SetArmed), ("estop", EmergencyStop))}
        self.fresh_state = True
        n.create_timer(DT, self.publish_state)
        self.chunk_id = 0

    def now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def publish_state(self) -> None:
        stamp = to_stamp(self.now() if self.fresh_state else self.now() - 5.0)
        js = JointState(name=["r_close", "l_close"], position=[0.0, 0.0])
        js.header.stamp = stamp
        ee = PoseStamped()
        ee.header.stamp = stamp
        ee.pose.position.x, ee.pose.position.y, ee.pose.position.z = 0.0, 0.6, 0.2
        self.joint_pub.publish(js)
        self.ee_pub.publish(ee)

    def spin(self, seconds: float, until=None) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.01)
            if until is not None and until():
                return

    def call(self, name: str, request):
        client = self.clients[name]
        assert client.wait_for_service(timeout_sec=20.0), f"service {SERVICES[name]} missing"
        future = client.call_async(request)
        self.spin(10.0, until=future.done)
        assert future.done(), f"{SERVICES[name]} did not answer"
        return future.result()

    def set_parameter(self, name: str, value):
        """Set one of the executor's parameters at run time; the SetParametersResult list."""
        from rclpy.parameter import Parameter
        from rclpy.parameter_client import AsyncParameterClient

        client = AsyncParameterClient(self.node, "executor")
        assert client.wait_for_services(timeout_sec=20.0)
        future = client.set_parameters([Parameter(name, value=value)])
        self.spin(10.0, until=future.done)
        assert future.done(), "executor did not answer set_parameters"
        return future.result().results

    def send_chunk(self, t0: float, actions: np.ndarray, episode="ep") -> None:
        self.chunk_id += 1
        h, d = actions.shape
        msg = ActionChunk(chunk_id=self.chunk_id, episode_id=episode, action_space="ee_delta",
                          action_names=["dx", "dy", "dz", "gripper"], horizon=h, action_dim=d, dt=DT)
        msg.header.stamp = to_stamp(t0)
        msg.actions = actions.astype(np.float32).ravel().tolist()
        msg.actions_normalized = (actions / 2).astype(np.float32).ravel().tolist()
        self.chunk_pub.publish(msg)

    def answer_requests(self, value: float, seconds: float, until=None) -> None:
        """Answer every request with a constant chunk computed 'now' (stamped at request_after), for
        `seconds` or until `until()` holds."""
        answered = set()
        end = time.monotonic() + seconds
        while time.monotonic() < end and not (until is not None and until()):
            self.executor.spin_once(timeout_sec=0.005)
            for i, fb in enumerate(self.feedback):
                if fb.request_chunk and i not in answered:
                    answered.add(i)
                    self.send_chunk(to_sec(fb.request_after), np.tile([value, 0.0, 0.0, 1.0], (HORIZON, 1)))

    def close(self) -> None:
        self.proc.send_signal(2)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


@pytest.fixture
def robot(request):
    r = Robot(**request.param)
    yield r
    r.close()


def start(r: Robot) -> None:
    assert r.call("executor_reset", ResetEpisode.Request(episode_id="ep")).success
    assert r.call("set_armed", SetArmed.Request(armed=True)).success


@pytest.mark.parametrize("robot", [dict(domain=52, mode="async_rtc")], indirect=True)
def test_free_running_async_executes_chunks_and_latches_estop(robot):
    """Commands flow from chunk after chunk; the command rate is a benchmark figure (`vla-bench executor`)."""
    def moving():
        return [c for c in robot.commands if c.values[0] > 0.4]

    def requests():
        return [f for f in robot.feedback if f.request_chunk]

    def rtc_request():                              # RTC: the plan goes with the request
        return any(len(f.leftover_normalized) for f in requests()[2:])

    start(robot)
    robot.answer_requests(0.5, 60.0, until=lambda: len(moving()) > 12 * HORIZON and rtc_request())
    assert len(moving()) > 12 * HORIZON, f"{len(moving())} commands of the chunks' actions sent " \
                                        f"({len(robot.commands)} in all) for {len(requests())} requests"
    assert rtc_request(), f"no request after the second carried the plan: {len(requests())} requests"
    assert robot.call("estop", EmergencyStop.Request(engage=True, reason="test")).estop
    robot.commands.clear()
    robot.answer_requests(0.5, 30.0, until=lambda: len(robot.commands) >= 10 * HORIZON)
    assert len(robot.commands) >= 10 * HORIZON, f"{len(robot.commands)} commands while e-stopped"
    assert all(c.values[0] == 0.0 and c.values[1] == 0.0 for c in robot.commands)                  # holds
    assert not robot.call("set_armed", SetArmed.Request(armed=True)).success                         # latched
    assert robot.call("estop", EmergencyStop.Request(clear=True)).success
    assert robot.call("set_armed", SetArmed.Request(armed=True)).success
    robot.commands.clear()
    robot.answer_requests(0.5, 30.0, until=moving)
    assert moving(), f"no chunk executed after the e-stop was cleared ({len(robot.commands)} commands)"


@pytest.mark.parametrize("robot", [dict(domain=53, mode="async", dry_run="true")], indirect=True)
def test_dry_run_publishes_nothing_to_the_robot_until_turned_off_disarmed(robot):
    start(robot)
    robot.answer_requests(0.7, 2.5)
    assert robot.commands == []
    assert any(abs(c.values[0] - 0.7) < 1e-6 for c in robot.dry)
    refused, = robot.set_parameter("dry_run", False)             # armed: leaving dry-run is refused
    assert not refused.successful and "disarm first" in refused.reason
    robot.answer_requests(0.7, 0.5)
    assert robot.commands == []
    assert robot.call("set_armed", SetArmed.Request(armed=False)).success
    accepted, = robot.set_parameter("dry_run", False)
    assert accepted.successful
    assert robot.call("set_armed", SetArmed.Request(armed=True)).success
    robot.answer_requests(0.7, 1.5)
    assert any(abs(c.values[0] - 0.7) < 1e-6 for c in robot.commands)
    robot.spin(1.0, until=lambda: robot.status and not robot.status[-1].dry_run)
    assert not robot.status[-1].dry_run


@pytest.mark.parametrize("robot", [dict(domain=54, mode="async")], indirect=True)
def test_stale_state_holds_and_bad_chunks_are_counted(robot):
    start(robot)
    robot.answer_requests(0.5, 1.5)
    t = robot.now()
    bad = np.tile([0.5, 0.0, 0.0, 1.0], (8, 1))
    bad[3, 0] = np.nan
    robot.send_chunk(t, bad)
    robot.send_chunk(t, np.zeros((8, 3)))
    robot.fresh_state = False                       # the measured state is now 5 s old
    robot.spin(0.3)
    robot.commands.clear()
    robot.spin(1.0)
    assert robot.commands and all(abs(c.values[0]) < 1e-9 for c in robot.commands)
    robot.spin(1.0, until=lambda: robot.status and robot.status[-1].chunks_rejected >= 2)
    status = robot.status[-1]
    assert status.chunks_rejected == 2 and status.stale_holds > 0
