"""replay: plays a rosbag2 episode (sqlite3 or mcap) on its original topics, with /clock.

Messages go out as the CDR bytes recorded (exactly what crossed DDS when the bag was made), each
through an rclpy publisher of the recorded type (looked up by its 'pkg/msg/Name'); topics can be
selected, excluded or renamed. /clock follows bag time (the recording clock), so nodes with
use_sim_time=true run on the recording's time, at `rate` bag seconds per wall second.

With `pace` (the replay graph sets it), playback also waits before each recorded message on `pace_state_topic`
until the graph answered the previous state (a message on `pace_answer_topic` stamped with that
state's time, at most `pace_timeout_s` wall s), as the simulator does in lockstep: every recorded
step gets its command whatever the policy's latency. /clock holds still while it waits.

Playback starts paused: it waits until every topic in `wait_for_subscribers` has a subscriber
(at most `wait_timeout_s`), then `start_delay_s`; with `wait_for_start` it also waits for a call
of the /vla/replay/start service (std_srvs/Trigger; the evaluator calls it after resetting the
episode). The recorded episode (task, seed, instruction, recorded success, steps) and the replay
state (reason: ready | playing | finished) are latched on /vla/replay/episode (vla_msgs/EpisodeResult).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosbags.rosbag2 import Reader
from rosgraph_msgs.msg import Clock
from std_srvs.srv import Trigger
from vla_msgs.msg import ActionCommand, EpisodeResult

from ..core.replay import Pacer, StepGate, parse_remaps, plan_topics, task_and_seed
from ..data.bags import at_root, bag_typestore, definition_changed, make_typestore, to_ros_message
from .common import LATCHED_QOS, SERVICES, TOPICS, message_class, run_node, to_stamp
from .parameters import Param, declare

REPLAY_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)
REPLAY_LATCHED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                durability=DurabilityPolicy.TRANSIENT_LOCAL)
CLOCK_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)


def _names(values) -> list[str]:
    return [v for v in values if v]


def describe_episode(bag: Path, typestore=None) -> EpisodeResult:
    """The recorded episode: episode id, task and seed from the bag's name ('<task>_s<seed>', the
    evaluator's naming), the instruction from its Observations, success and steps from the last
    simulator messages. `typestore`: the bag's own definitions unless given."""
    task, seed = task_and_seed(bag.name)
    desc = EpisodeResult(episode_id=bag.name, task=task, seed=seed or 0, reason="ready")
    with Reader(bag) as reader:
        typestore = typestore or bag_typestore(reader.connections)
        desc.header.stamp = to_stamp(reader.start_time * 1e-9)
        desc.duration_s = float(max(0, reader.end_time - reader.start_time) * 1e-9)
        by_topic = {c.topic: c for c in reader.connections}
        obs = by_topic.get(at_root(TOPICS["observation"]))
        if obs is not None:
            for conn, _, raw in reader.messages(connections=[obs]):
                msg = typestore.deserialize_cdr(raw, conn.msgtype)
                if msg.instruction and not desc.instruction:
                    desc.instruction = msg.instruction
                if msg.episode_id == bag.name:        # the bag may open on the previous episode's last messages
                    desc.instruction = msg.instruction or desc.instruction
                    break
        for key, field in (("success", "data"), ("env_state", "step")):
            conn = by_topic.get(at_root(TOPICS[key]))
            if conn is not None:
                last = None
                for c, _, raw in reader.messages(connections=[conn]):
                    last = (c, raw)
                if last is not None:
                    value = getattr(typestore.deserialize_cdr(last[1], last[0].msgtype), field)
                    if key == "success":
                        desc.success = bool(value)
                    else:
                        desc.steps = int(value)
    return desc


class ReplayNode(Node):
    PARAMETERS = (
        Param("bag", "", "the rosbag2 folder to play (sqlite3 or mcap; required)"),
        Param("rate", 1.0, "bag seconds played per wall second", (0.001, 1000.0)),
        Param("topics", [""], "play only these bag topics (\"\" entries are ignored; none: every topic)"),
        Param("exclude_topics", ["/clock"], "bag topics not played (produced live by the graph, or /clock by this "
                                            "node)"),
        Param("latched_topics", [""], "topics published transient-local (latched) for late subscribers "
                                      "(\"\" entries are ignored)"),
        Param("remap", [""], "\"/recorded:=/published\" entries: play a bag topic under another name "
                             "(\"\" entries are ignored)"),
        Param("publish_clock", True, "publish /clock on bag time (nodes with use_sim_time run on the recording's "
                                     "time)"),
        Param("clock_period_s", 0.01, "wall s between /clock messages while waiting for the next message (s)",
              (0.001, 1.0)),
        Param("wait_for_subscribers", [""], "playback waits until each of these topics has a subscriber "
                                            "(\"\" entries are ignored)"),
        Param("wait_timeout_s", 30.0, "longest wait for those subscribers; then playback starts anyway (wall s)",
              (0.0, 3600.0)),
        Param("start_delay_s", 1.0, "wall s between the subscribers being there and the first message (s)",
              (0.0, 600.0)),
        Param("wait_for_start", False, "also wait for a call of /vla/replay/start (std_srvs/Trigger) before playing"),
        Param("pace", False, "hold each recorded message on pace_state_topic until the graph answered the previous "
                             "state (as the simulator does in lockstep)"),
        Param("pace_state_topic", "/joint_states", "pace: the robot-state topic whose messages wait for an answer"),
        Param("pace_answer_topic", TOPICS["dry_run_command"], "pace: the answers (vla_msgs/ActionCommand stamped with "
                                                              "the state's time)"),
        Param("pace_timeout_s", 10.0, "pace: longest wait for an answer before playing on (counted; wall s)",
              (0.01, 3600.0)),
    )

    def __init__(self, **kwargs):
        super().__init__("replay", **kwargs)
        p = declare(self, self.PARAMETERS)
        bag = p.bag
        self.rate = p.rate
        only = _names(p.topics)
        exclude = _names(p.exclude_topics)
        latched = set(_names(p.latched_topics))
        self.publish_clock = p.publish_clock
        self.clock_period_s = p.clock_period_s
        self.wait_for = _names(p.wait_for_subscribers)
        self.wait_timeout_s = p.wait_timeout_s
        self.start_delay_s = p.start_delay_s
        self.wait_for_start = p.wait_for_start
        self.pace_topic = p.pace_state_topic if p.pace else ""
        self.gate = StepGate(p.pace_timeout_s)
        answer_topic = p.pace_answer_topic
        self.bag = Path(bag)
        if not bag or not (self.bag / "metadata.yaml").is_file():
            self.get_logger().fatal(f"parameter bag: '{bag}' is not a rosbag2 folder (no metadata.yaml)")
            raise SystemExit(2)
        try:
            with Reader(self.bag) as reader:
                conns = [(c.topic, c.msgtype, c.msgcount) for c in reader.connections]
                self.typestore = bag_typestore(reader.connections)   # as the bag was written
            self.plan = plan_topics(conns, only, exclude, parse_remaps(_names(p.remap)))
            self.description = describe_episode(self.bag, self.typestore)
        except (ValueError, KeyError) as exc:
            self.get_logger().fatal(f"bag {self.bag}: {exc}")
            raise SystemExit(2) from None
        self.pubs, self.reencode, self.skipped = {}, {}, {}
        installed = make_typestore()
        for t in self.plan:
            try:
                cls = message_class(t.msgtype)
            except (ImportError, AttributeError, ValueError):
                self.get_logger().warning(f"bag {self.bag}: topic {t.source}: type {t.msgtype} not installed, "
                                          "not replayed")
                continue
            qos = REPLAY_LATCHED_QOS if t.source in latched or t.target in latched else REPLAY_QOS
            self.pubs[t.source] = self.create_publisher(cls, t.target, qos)
            if definition_changed(t.msgtype, self.typestore, installed):
                # recorded by an older definition of the type: re-encoded field by field, new fields at
                # their defaults (a StateVector without `success` plays with success = -1, unknown)
                self.reencode[t.source] = (lambda raw, mt=t.msgtype, c=cls:
                                           to_ros_message(self.typestore.deserialize_cdr(raw, mt), c))
                self.get_logger().info(f"bag {self.bag}: topic {t.source}: recorded with an older {t.msgtype}; "
                                       "re-encoded for this version")
        self.clock_pub = self.create_publisher(Clock, "/clock", CLOCK_QOS) if self.publish_clock else None
        if self.pace_topic:
            self.create_subscription(ActionCommand, answer_topic,
                                     lambda m: self.gate.answer(m.header.stamp.sec + m.header.stamp.nanosec * 1e-9),
                                     REPLAY_QOS)
        self.episode_pub = self.create_publisher(EpisodeResult, TOPICS["replay_episode"], LATCHED_QOS)
        self.start_requested = threading.Event()
        self.create_service(Trigger, SERVICES["replay_start"], self.on_start)
        self.stopping = threading.Event()
        self.clock_s = self.description.header.stamp.sec + self.description.header.stamp.nanosec * 1e-9
        self.published = 0
        self.publish_state("ready")
        self.worker = threading.Thread(target=self.run, name="replay", daemon=True)
        self.worker.start()
        self.get_logger().info(f"replay of {self.bag} ({self.description.duration_s:.3f} s, "
                               f"{sum(t.count for t in self.plan)} messages on {len(self.pubs)} topics) at rate "
                               f"{self.rate:g}{', paced by ' + self.pace_topic if self.pace_topic else ''}; "
                               f"waiting for subscribers {self.wait_for or '(none)'}"
                               + (" and /vla/replay/start" if self.wait_for_start else ""))

    # ---- control ------------------------------------------------------------------------
    def on_start(self, request, response):
        already = self.start_requested.is_set()
        self.start_requested.set()
        response.success = not already
        response.message = "already started" if already else f"playing {self.bag.name}"
        return response

    def publish_state(self, reason: str, wall_s: float = 0.0) -> None:
        """reason: ready | playing | finished; wall_s: wall-clock seconds the playback took."""
        self.description.reason = reason
        self.description.wall_time_s = float(wall_s)
        self.episode_pub.publish(self.description)

    def tick_clock(self, bag_s: float) -> None:
        self.clock_s = max(self.clock_s, bag_s)
        if self.clock_pub is not None:
            self.clock_pub.publish(Clock(clock=to_stamp(self.clock_s)))

    def wait(self, seconds: float) -> bool:
        """Sleep while keeping /clock alive; False when the node is stopping."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.tick_clock(self.clock_s)
            if self.stopping.wait(min(self.clock_period_s * 10, max(0.0, end - time.monotonic()))):
                return False
        return True

    def wait_until_ready(self) -> bool:
        deadline = time.monotonic() + self.wait_timeout_s
        pubs_by_name = {t.target: self.pubs[t.source] for t in self.plan if t.source in self.pubs}
        missing = list(self.wait_for)
        while missing and time.monotonic() < deadline:
            missing = [n for n in self.wait_for if n not in pubs_by_name
                       or pubs_by_name[n].get_subscription_count() == 0]
            if missing and not self.wait(0.1):
                return False
        if missing:
            self.get_logger().warning(f"no subscriber on {missing} after {self.wait_timeout_s:.0f} s; playing anyway")
        if not self.wait(self.start_delay_s):
            return False
        while self.wait_for_start and not self.start_requested.is_set():
            if not self.wait(0.1):
                return False
        return True

    def run(self) -> None:
        try:
            if self.wait_until_ready():
                self.play()
        except Exception as exc:
            if not self.stopping.is_set():
                self.get_logger().error(f"replay of {self.bag} failed: {exc}")

    def play(self) -> None:
        self.publish_state("playing")
        wall_start = time.monotonic()
        conns_wanted = set(self.pubs)
        with Reader(self.bag) as reader:
            conns = [c for c in reader.connections if c.topic in conns_wanted]
            pacer = None
            for conn, stamp_ns, raw in reader.messages(connections=conns):
                bag_s = stamp_ns * 1e-9
                if pacer is None:
                    pacer = Pacer(self.rate, bag_s, time.monotonic())
                while (ahead := pacer.wall_at(bag_s) - time.monotonic()) > 0:
                    self.tick_clock(min(bag_s, pacer.bag_at(time.monotonic())))
                    if self.stopping.wait(min(ahead, self.clock_period_s)):
                        return
                self.tick_clock(bag_s)
                if conn.topic == self.pace_topic:
                    if not self.wait_for_answer():
                        return
                    pacer = Pacer(self.rate, bag_s, time.monotonic())     # the wait does not count as lag
                convert = self.reencode.get(conn.topic)
                try:
                    self.pubs[conn.topic].publish(bytes(raw) if convert is None else convert(raw))
                except Exception as exc:  # noqa: BLE001  (a message this version cannot take: named, skipped)
                    self.skipped[conn.topic] = self.skipped.get(conn.topic, 0) + 1
                    self.get_logger().error(f"bag {self.bag}: topic {conn.topic} ({conn.msgtype}): message at "
                                            f"{bag_s:.6f} s not replayed: {exc}", throttle_duration_sec=2.0)
                    continue
                self.published += 1
                if conn.topic == self.pace_topic:
                    stamp = self.typestore.deserialize_cdr(raw, conn.msgtype).header.stamp
                    self.gate.state_published(stamp.sec + stamp.nanosec * 1e-9)
        if self.pace_topic and not self.wait_for_answer():
            return
        self.tick_clock(self.clock_s)
        self.publish_state("finished", time.monotonic() - wall_start)
        paced = f", {self.gate.timeouts} of {self.gate.states} states unanswered after " \
                f"{self.gate.timeout_s:g} s" if self.pace_topic else ""
        skipped = f", not replayed: {self.skipped}" if self.skipped else ""
        self.get_logger().info(f"replay of {self.bag.name} finished: {self.published} messages{paced}{skipped}")

    def wait_for_answer(self) -> bool:
        """Paced: hold playback (and /clock) until the last state was answered; False when stopping."""
        deadline = time.monotonic() + self.gate.timeout_s
        while self.gate.waiting:
            if time.monotonic() > deadline:
                self.get_logger().warning(f"{self.pace_topic} t={self.gate.pending:.4f}: no answer within "
                                          f"{self.gate.timeout_s:g} s; playing on")
                self.gate.timed_out()
                break
            self.tick_clock(self.clock_s)
            if self.stopping.wait(self.clock_period_s):
                return False
        return True

    def close(self) -> None:
        self.stopping.set()
        if self.worker.is_alive():
            self.worker.join(timeout=5.0)


def main(args=None):
    run_node(ReplayNode, args)


if __name__ == "__main__":
    main()
