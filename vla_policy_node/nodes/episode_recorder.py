"""Recording a graph's episodes to rosbag2, one bag per episode (the CDR bytes that crossed DDS).

Used by the evaluator (every evaluation episode) and by the task runner (tasks on a robot, when
`record_dir` is set). Topics are subscribed raw; a topic is recorded reliably when every
publisher offers reliability (nothing lost), else best effort (no back-pressure on a camera).
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from rosgraph_msgs.msg import Clock

from ..data.bags import BAG_COMPRESSIONS, BAG_STORAGES, BagWriter, make_typestore
from .common import message_class, to_sec
from .parameters import Param

# the recording parameters of the nodes that record (evaluator, task runner)
RECORD_TOPICS = Param("record_topics", [""], "topics recorded into each episode's bag (relative names: in the "
                                             "node's namespace; \"\" entries are ignored: [\"\"] records none)")
BAG_STORAGE = Param("bag_storage", "sqlite3", "rosbag2 storage of the bags", constraints="sqlite3 | mcap")
BAG_COMPRESSION = Param("bag_compression", "zstd", "zstd: each message compressed (rosbag2 message mode: raw camera "
                                                   "frames take about 7 times less disk, read back transparently); "
                                                   "none: as they crossed DDS", constraints="zstd | none")

# A recorder takes the reliability its publishers offer (as rosbag2 does): reliable topics are
# recorded without loss, best-effort ones (camera streams) without back-pressure on the robot.
RECORD_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.BEST_EFFORT)
RECORD_RELIABLE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000, reliability=ReliabilityPolicy.RELIABLE)


class EpisodeRecorder:
    """Records `topics` of `node`'s graph into <folder>/<episode id>/ (rosbag2, `storage`, `compression`)."""

    def __init__(self, node, folder: Path, topics: list[str], storage: str = "sqlite3", compression: str = "zstd"):
        for name, value, known in (("bag_storage", storage, BAG_STORAGES),
                                   ("bag_compression", compression, BAG_COMPRESSIONS)):
            if value not in known:
                raise ValueError(f"parameter {name}: '{value}' unknown; use {' or '.join(known)}")
        self.node, self.folder, self.storage, self.compression = node, Path(folder), storage, compression
        self.wanted = [node.resolve_topic_name(t) for t in topics if t]    # relative ones: in the namespace
        self.typestore = make_typestore()
        self.lock = threading.Lock()
        self.writer: BagWriter | None = None
        self.recorded: list[str] = []                       # topics subscribed
        self.clock_topic = node.resolve_topic_name("/clock")   # remapped into the graph's namespace
        self.recorded_clock = float("-inf")                # newest /clock written (s)

    def subscribe(self, wait_s: float = 10.0) -> None:
        """Subscribe the topics that are published within `wait_s`; the others are named and skipped."""
        deadline = time.monotonic() + wait_s
        found = {}
        while time.monotonic() < deadline:
            found = {name: types[0] for name, types in self.node.get_topic_names_and_types() if name in self.wanted}
            if len(found) == len(self.wanted):
                break
            time.sleep(0.2)
        missing = sorted(set(self.wanted) - set(found))
        if missing:
            self.node.get_logger().warning(f"parameter record_topics: not (yet) published, not recorded: {missing}")
        for topic, type_name in found.items():
            self.node.create_subscription(message_class(type_name), topic,
                                          lambda data, t=topic, m=type_name: self.on_raw(t, m, data),
                                          self.qos(topic), raw=True)
        self.recorded = sorted(found)

    def qos(self, topic: str) -> QoSProfile:
        """Reliable when every publisher of the topic offers it (nothing lost), else best effort."""
        offered = [info.qos_profile.reliability for info in self.node.get_publishers_info_by_topic(topic)]
        if offered and all(r == ReliabilityPolicy.RELIABLE for r in offered):
            return RECORD_RELIABLE_QOS
        return RECORD_QOS

    def on_raw(self, topic: str, msgtype: str, data: bytes) -> None:
        with self.lock:
            if self.writer is not None:
                self.writer.write(topic, msgtype, self.node.get_clock().now().nanoseconds, data)
                if topic == self.clock_topic:
                    self.recorded_clock = to_sec(deserialize_message(data, Clock).clock)

    def open(self, episode_id: str) -> str:
        """Start the bag <folder>/<episode_id> (replacing an older one); returns its path."""
        bag_path = self.folder / episode_id
        if bag_path.exists():
            shutil.rmtree(bag_path)
        bag_path.parent.mkdir(parents=True, exist_ok=True)
        with self.lock:
            self.writer = BagWriter(bag_path, self.typestore, self.storage, self.compression)
            self.recorded_clock = float("-inf")
        return str(bag_path)

    def drain(self, stamp: float, timeout_s: float = 2.0, settle_s: float = 0.1) -> None:
        """Before the bag closes: wait until the recorder has written the graph's clock up to
        `stamp` (the episode's last state; a loaded machine delivers the recorder's messages later
        than the tracker's), then `settle_s` for the other topics of that instant."""
        if self.writer is None or self.clock_topic not in self.recorded:
            return
        deadline = time.monotonic() + timeout_s
        while self.recorded_clock < stamp - 1e-9 and time.monotonic() < deadline:
            time.sleep(0.01)
        if self.recorded_clock < stamp - 1e-9:
            self.node.get_logger().warning(f"recording: /clock reached {self.recorded_clock:.3f} s of {stamp:.3f} s "
                                           f"within {timeout_s} s; the bag ends there")
        time.sleep(settle_s)

    def close(self) -> None:
        with self.lock:
            if self.writer is not None:
                self.writer.close()
                self.writer = None
