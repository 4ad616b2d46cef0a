"""Shared ROS plumbing for the nodes: QoS profiles, time conversion, image messages, robot loading,
requests asked again until answered."""

from __future__ import annotations

import array
import threading
import time
from typing import Callable

import numpy as np
from builtin_interfaces.msg import Time
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from ..core.embodiment import EmbodimentConfigError, load_robot

# Camera images and observations: best effort, shallow.
SENSOR_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
# Chunks, feedback, commands, robot state.
RELIABLE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
# Configuration and status: latched for late joiners.
LATCHED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)

# Relative names: a graph started in a namespace (`vla-graph --namespace robot1`, launch argument
# `namespace`) keeps its topics and services under it, so two robots run side by side.
TOPICS = {
    "observation": "vla/observation",
    "action_chunk": "vla/action_chunk",
    "imagined": "vla/imagined",
    "feedback": "vla/execution_feedback",
    "policy_status": "vla/policy_status",
    "executor_status": "vla/executor_status",
    "episode_result": "vla/episode_result",
    # the running episode (vla_msgs/EpisodeAnnouncement, latched): restarted nodes rejoin it
    "episode": "vla/episode",
    "success": "vla/sim/success",
    "env_state": "vla/sim/env_state",
    # what a dry-run executor would have commanded (vla_msgs/ActionCommand); never read by a robot
    "dry_run_command": "vla/executor/dry_run_command",
    # imagination monitor: imagined vs real frames (vla_msgs/ImaginationDivergence)
    "divergence": "vla/imagination/divergence",
    # bag replay: the recorded episode being played and the replay's state (vla_msgs/EpisodeResult, latched)
    "replay_episode": "vla/replay/episode",
}
SERVICES = {
    "sim_reset": "vla/sim/reset_episode",
    "sim_perturb": "vla/sim/perturb",
    "policy_reset": "vla/policy/reset_episode",
    "executor_reset": "vla/executor/reset_episode",
    "set_instruction": "vla/perception/set_instruction",
    "set_armed": "vla/executor/set_armed",
    "estop": "vla/executor/emergency_stop",
    "replay_start": "vla/replay/start",
}


def ask_until_answered(server_ready: Callable[[float], bool], send: Callable[[], object], timeout_s: float,
                       first_attempt_s: float = 5.0, unanswered: Callable[[object, float], None] | None = None):
    """Send a request (`send()` returns its rclpy future) and wait for the answer; a request that goes
    unanswered is sent again, waiting `first_attempt_s`, then twice as long each time, within `timeout_s`
    (s) in all. A request can be lost when its server was just restarted, or sent while a node on a
    loaded machine is still coming up. `server_ready(remaining_s)` waits for the server;
    `unanswered(future, waited_s)` runs before each new request. Returns (the answered future, requests
    sent), or (None, requests sent) once the deadline passes."""
    deadline = time.monotonic() + timeout_s
    attempt_s, sent = first_attempt_s, 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not server_ready(remaining):
            return None, sent
        done = threading.Event()
        future = send()
        future.add_done_callback(lambda _: done.set())
        sent += 1
        if done.wait(min(attempt_s, max(deadline - time.monotonic(), 0.0))):
            return future, sent
        if unanswered is not None:
            unanswered(future, attempt_s)
        attempt_s *= 2


def to_sec(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def to_stamp(seconds: float) -> Time:
    ns = int(round(seconds * 1e9))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def image_msg(frame: np.ndarray, stamp: Time, frame_id: str, encoding: str = "rgb8") -> Image:
    """HxWx3 (or HxW mono) uint8 array -> sensor_msgs/Image without per-element conversion."""
    frame = np.ascontiguousarray(frame, dtype=np.uint8)
    msg = Image()
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.height, msg.width = int(frame.shape[0]), int(frame.shape[1])
    msg.encoding = encoding
    channels = 1 if frame.ndim == 2 else int(frame.shape[2])
    msg.step = msg.width * channels
    msg.data = array.array("B", frame.tobytes())
    return msg


def message_class(type_name: str):
    """'pkg/msg/Name' -> the Python message class; ImportError/AttributeError when not installed."""
    import importlib
    pkg, kind, name = type_name.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


def load_robot_or_exit(node, name: str):
    """Load the embodiment named by the node's `robot` parameter; log the reason and exit on error."""
    try:
        return load_robot(name)
    except (EmbodimentConfigError, FileNotFoundError) as exc:
        node.get_logger().fatal(str(exc))
        raise SystemExit(2) from None


def run_node(node_cls, args=None, multithreaded: bool = False) -> int:
    """Standard main(): init, spin until shutdown, Ctrl-C or the node setting `finished` (a node that
    ends itself, as the evaluator after its report, sets it from any thread: the context is shut
    down here, after spinning stopped, never under a wait set being built), clean up; returns the
    node's exit_code."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor

    rclpy.init(args=args)
    node = None
    exit_code = 0
    try:
        node = node_cls()
        executor = MultiThreadedExecutor(num_threads=4) if multithreaded else SingleThreadedExecutor()
        executor.add_node(node)
        while rclpy.ok() and not getattr(node, "finished", False):
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            close = getattr(node, "close", None)
            if close is not None:
                close()
            node.destroy_node()
        if node is not None:
            exit_code = int(getattr(node, "exit_code", 0))
        if rclpy.ok():
            rclpy.shutdown()
    return exit_code
