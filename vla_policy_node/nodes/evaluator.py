"""evaluator: runs closed-loop episodes against a sim bridge, records each one to rosbag2, reports.

Per episode: disarm -> reset the simulator (task, seed; returns the instruction) -> set the
instruction in perception, reset policy and executor -> arm -> wait for success or the step
limit -> disarm. Every episode's topics are recorded (as the CDR bytes that crossed DDS) into
<output_dir>/bags/<task>_s<seed>/. Writes report.json and report.md, then shuts down.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import rclpy
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Bool
from vla_msgs.msg import EpisodeResult, PolicyStatus, StateVector
from vla_msgs.srv import ResetEpisode, SetArmed, SetInstruction

from ..core.report import EpisodeRecord, write_report
from ..data.bags import BagWriter, make_typestore
from .common import LATCHED_QOS, RELIABLE_QOS, SERVICES, TOPICS, load_robot_or_exit, run_node, to_sec

RECORD_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.BEST_EFFORT)


class EpisodeTracker:
    """Success and step count of the running episode, from the simulator's topics.

    The simulator publishes success=False on reset and the topic is ordered, so a True counts
    only after the first False of this episode."""

    def __init__(self, start: float):
        self.start = start
        self.steps = 0
        self.last_stamp = start
        self.success = False
        self._seen_reset = False
        self.changed = threading.Event()

    def on_env_state(self, stamp: float, step: int) -> None:
        if stamp >= self.start - 1e-9:
            self.steps, self.last_stamp = max(self.steps, step), max(self.last_stamp, stamp)
            self.changed.set()

    def on_success(self, value: bool) -> None:
        if not value:
            self._seen_reset = True
        elif self._seen_reset:
            self.success = True
            self.changed.set()


class EvaluatorNode(Node):
    def __init__(self, **kwargs):
        super().__init__("evaluator", **kwargs)
        p = self.declare_parameter
        self.robot = load_robot_or_exit(self, p("robot", "metaworld_sawyer").value)
        self.tasks = list(p("tasks", ["button-press", "drawer-open", "window-open"]).value)
        self.seeds = [int(s) for s in p("seeds", [100, 101, 102]).value]
        self.max_steps = int(p("max_steps", 300).value)
        self.episode_timeout_s = float(p("episode_timeout_s", 120.0).value)
        self.output_dir = Path(p("output_dir", "artifacts/demo").value)
        self.record = bool(p("record", True).value)
        self.record_topics = list(p("record_topics", [""]).value)
        self.bag_storage = p("bag_storage", "sqlite3").value
        self.graph_name = p("graph", "").value
        self.lockstep = bool(p("lockstep", True).value)
        self.backend = "unknown"
        self.tracker: EpisodeTracker | None = None
        self.writer: BagWriter | None = None
        self.write_lock = threading.Lock()
        self.typestore = make_typestore() if self.record else None
        self.exit_code = 0
        self.recorded: list[str] = []

        self.service_clients = {
            "sim_reset": self.create_client(ResetEpisode, SERVICES["sim_reset"]),
            "policy_reset": self.create_client(ResetEpisode, SERVICES["policy_reset"]),
            "executor_reset": self.create_client(ResetEpisode, SERVICES["executor_reset"]),
            "set_instruction": self.create_client(SetInstruction, SERVICES["set_instruction"]),
            "set_armed": self.create_client(SetArmed, SERVICES["set_armed"]),
        }
        self.create_subscription(StateVector, self.robot.config.env_state_topic or TOPICS["env_state"],
                                 self.on_env_state, RELIABLE_QOS)
        self.create_subscription(Bool, TOPICS["success"], self.on_success, RELIABLE_QOS)
        self.create_subscription(PolicyStatus, TOPICS["policy_status"], self.on_policy_status, LATCHED_QOS)
        self.result_pub = self.create_publisher(EpisodeResult, TOPICS["episode_result"], RELIABLE_QOS)
        self.runner = threading.Thread(target=self.run, name="episodes", daemon=True)
        self.runner.start()

    # ---- topic callbacks ---------------------------------------------------------------
    def on_env_state(self, msg: StateVector) -> None:
        if self.tracker is not None:
            self.tracker.on_env_state(to_sec(msg.header.stamp), int(msg.step))

    def on_success(self, msg: Bool) -> None:
        if self.tracker is not None:
            self.tracker.on_success(msg.data)

    def on_policy_status(self, msg: PolicyStatus) -> None:
        self.backend = msg.backend

    def on_raw(self, topic: str, msgtype: str, data: bytes) -> None:
        with self.write_lock:
            if self.writer is not None:
                self.writer.write(topic, msgtype, self.get_clock().now().nanoseconds, data)

    # ---- recording -----------------------------------------------------------------------
    def subscribe_recorded_topics(self, wait_s: float = 10.0) -> None:
        wanted = [t for t in self.record_topics if t]
        deadline = time.monotonic() + wait_s
        found = {}
        while time.monotonic() < deadline:
            found = {name: types[0] for name, types in self.get_topic_names_and_types() if name in wanted}
            if len(found) == len(wanted):
                break
            time.sleep(0.2)
        missing = sorted(set(wanted) - set(found))
        if missing:
            self.get_logger().warning(f"parameter record_topics: not (yet) published, not recorded: {missing}")
        for topic, type_name in found.items():
            self.create_subscription(_import_type(type_name), topic,
                                     lambda data, t=topic, m=type_name: self.on_raw(t, m, data),
                                     RECORD_QOS, raw=True)
        self.recorded = sorted(found)

    # ---- episodes ------------------------------------------------------------------------
    def call(self, name: str, request, timeout_s: float = 30.0):
        client = self.service_clients[name]
        if not client.wait_for_service(timeout_sec=timeout_s):
            raise RuntimeError(f"service {client.srv_name} not available after {timeout_s:.0f} s")
        done = threading.Event()
        future = client.call_async(request)
        future.add_done_callback(lambda _: done.set())
        if not done.wait(timeout_s):
            raise RuntimeError(f"service {client.srv_name} did not answer within {timeout_s:.0f} s")
        response = future.result()
        if hasattr(response, "success") and not response.success:
            raise RuntimeError(f"service {client.srv_name} refused: {response.message}")
        return response

    def run_episode(self, task: str, seed: int) -> EpisodeRecord:
        episode_id = f"{task}_s{seed}"
        wall_start = time.monotonic()
        self.call("set_armed", SetArmed.Request(armed=False))
        self.tracker = None
        bag = ""
        if self.record:  # open before the reset so the episode's first state is in the bag
            bag_path = self.output_dir / "bags" / episode_id
            if bag_path.exists():
                shutil.rmtree(bag_path)
            bag_path.parent.mkdir(parents=True, exist_ok=True)
            with self.write_lock:
                self.writer = BagWriter(bag_path, self.typestore, self.bag_storage)
            bag = str(bag_path)
        reset = self.call("sim_reset", ResetEpisode.Request(task=task, seed=seed, episode_id=episode_id))
        instruction, start = reset.instruction, to_sec(reset.stamp)
        self.call("set_instruction", SetInstruction.Request(instruction=instruction, episode_id=episode_id))
        self.call("policy_reset", ResetEpisode.Request(task=task, instruction=instruction, seed=seed,
                                                      episode_id=episode_id))
        self.call("executor_reset", ResetEpisode.Request(task=task, instruction=instruction, seed=seed,
                                                        episode_id=episode_id))
        tracker = EpisodeTracker(start)
        self.tracker = tracker
        self.call("set_armed", SetArmed.Request(armed=True))
        reason = "timeout"
        while time.monotonic() - wall_start < self.episode_timeout_s:
            tracker.changed.wait(0.5)
            tracker.changed.clear()
            if tracker.success:
                reason = "success"
                break
            if tracker.steps >= self.max_steps:
                reason = "step_limit"
                break
        self.call("set_armed", SetArmed.Request(armed=False))
        with self.write_lock:
            if self.writer is not None:
                self.writer.close()
                self.writer = None
        record = EpisodeRecord(task, seed, instruction, tracker.success, tracker.steps,
                               round(tracker.last_stamp - start, 4), round(time.monotonic() - wall_start, 3),
                               reason, bag)
        result = EpisodeResult(episode_id=episode_id, task=task, instruction=instruction, seed=seed,
                               success=record.success, steps=record.steps, duration_s=record.duration_s,
                               wall_time_s=record.wall_time_s, reason=reason)
        result.header.stamp = self.get_clock().now().to_msg()
        self.result_pub.publish(result)
        self.get_logger().info(f"episode {episode_id}: {reason} after {record.steps} steps "
                               f"({record.wall_time_s:.1f} s wall)")
        return record

    def run(self) -> None:
        episodes = []
        try:
            if self.record:
                self.subscribe_recorded_topics()
            for task in self.tasks:
                for seed in self.seeds:
                    episodes.append(self.run_episode(task, seed))
        except Exception as exc:  # noqa: BLE001  (report what was done, then fail loudly)
            self.get_logger().error(f"evaluation aborted: {exc}")
            self.exit_code = 1
        meta = {"policy": {"backend": self.backend}, "robot": self.robot.name, "graph": self.graph_name,
                "protocol": {"tasks": self.tasks, "seeds": self.seeds, "max_steps": self.max_steps,
                             "lockstep": self.lockstep},
                "recorded_topics": self.recorded}
        path = write_report(self.output_dir, episodes, meta)
        self.get_logger().info(f"report written to {path}")
        if rclpy.ok():
            rclpy.try_shutdown()


def _import_type(type_name: str):
    """'pkg/msg/Name' -> the Python message class."""
    import importlib
    pkg, kind, name = type_name.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


def main(args=None):
    raise SystemExit(run_node(EvaluatorNode, args, multithreaded=True))


if __name__ == "__main__":
    main()
