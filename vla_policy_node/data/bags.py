"""rosbag2 writing and reading with `rosbags` (no ROS install needed; `ros2 bag` reads the result).

Messages are written as the CDR bytes that crossed DDS, so a recording is exactly what the graph
exchanged. vla_msgs definitions are registered from the package's .msg files.
"""

from __future__ import annotations

import functools
import logging
import queue
import sys
import threading
from pathlib import Path

from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.rosbag2.enums import CompressionFormat, CompressionMode
from rosbags.typesys import Stores, get_types_from_msg, get_typestore


def at_root(topic: str) -> str:
    """A topic name as a graph at the root spells it, and so as its bags store it: relative names
    (the graph's own, the Panda robot files') get a leading '/'."""
    return topic if topic.startswith("/") else "/" + topic


def vla_msgs_dir() -> Path:
    """Folder holding vla_msgs/msg/*.msg: the installed share, else the source tree."""
    for candidate in (Path(sys.prefix) / "share" / "vla_msgs" / "msg",
                      Path(__file__).resolve().parents[2] / "vla_msgs" / "msg"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("vla_msgs message definitions not found (build vla_msgs first)")


def make_typestore():
    """ROS 2 Kilted standard types plus every vla_msgs message."""
    typestore = get_typestore(Stores.ROS2_KILTED)
    typestore.register(_installed_vla_types())
    return typestore


def bag_typestore(connections):
    """A typestore that reads a bag as it was written: the definitions the bag stored for its own
    types (rosbag2 keeps each connection's .msg text), the installed vla_msgs and ROS 2 Kilted types
    for the rest. A bag recorded before a message gained a field still deserializes."""
    typestore = get_typestore(Stores.ROS2_KILTED)
    for conn in connections:
        msgdef = getattr(getattr(conn, "msgdef", None), "data", "")
        if msgdef and conn.msgtype not in typestore.fielddefs:
            try:
                typestore.register(get_types_from_msg(msgdef, conn.msgtype))
            except Exception as exc:  # noqa: BLE001  (rosbags raises several types)
                logging.getLogger(__name__).warning(
                    f"topic {conn.topic}: the bag's definition of {conn.msgtype} is not usable ({exc}); "
                    "read with the installed one")
    typestore.register({k: v for k, v in _installed_vla_types().items() if k not in typestore.fielddefs})
    return typestore


@functools.lru_cache(maxsize=1)
def _installed_vla_types() -> dict:
    types = {}
    for path in sorted(vla_msgs_dir().glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"vla_msgs/msg/{path.stem}"))
    return types


def definition_changed(msgtype: str, recorded, installed, _seen: frozenset = frozenset()) -> bool:
    """True when the bag's definition of `msgtype` (or of a message inside it) is not the
    installed one: its bytes must be re-encoded before a node of this version can read them."""
    if msgtype not in recorded.fielddefs:
        return False                                # nothing known of it: its bytes pass as recorded
    if recorded.fielddefs.get(msgtype) != installed.fielddefs.get(msgtype):
        return True
    text = repr(recorded.fielddefs[msgtype])
    return any(inner in text and definition_changed(inner, recorded, installed, _seen | {msgtype})
               for inner in recorded.fielddefs if inner not in _seen and inner != msgtype and f"'{inner}'" in text)


def _ros_class(type_name: str):
    """'pkg/Name' or 'pkg/msg/Name' -> the installed rclpy message class."""
    import importlib
    parts = type_name.split("/")
    return getattr(importlib.import_module(f"{parts[0]}.msg"), parts[-1])


def to_ros_message(value, cls):
    """A message read by rosbags (any older definition of the type) -> an rclpy message of the
    installed class `cls`: fields present in both are copied (recursively), fields the recording
    lacks keep the installed definition's defaults, fields it has but this version dropped are left."""
    msg = cls()
    for name, spec in cls.get_fields_and_field_types().items():
        if not hasattr(value, name):
            continue
        v = getattr(value, name)
        if hasattr(v, "__msgtype__"):
            v = to_ros_message(v, type(getattr(msg, name)))
        elif isinstance(v, list) and v and hasattr(v[0], "__msgtype__"):
            # 'sequence<pkg/Type>', 'sequence<pkg/Type, N>' or 'pkg/Type[N]'
            inner = spec.split("<", 1)[1].split(",")[0].rstrip(">") if "<" in spec else spec.split("[", 1)[0]
            v = [to_ros_message(x, _ros_class(inner)) for x in v]
        elif hasattr(v, "tolist"):
            v = v.tolist()
        setattr(msg, name, v)
    return msg


BAG_STORAGES = ("sqlite3", "mcap")
BAG_COMPRESSIONS = ("none", "zstd")


class BagWriter:
    """One rosbag2 folder, written by its own thread (sqlite needs a single thread; callbacks
    never wait on disk). Connections are created on the first message of each topic.
    `compression` "zstd": each message compressed on its own (rosbag2's message mode, read back
    transparently by rosbags and `ros2 bag`; a raw camera episode shrinks about 7 times)."""

    def __init__(self, path: str | Path, typestore, storage: str = "sqlite3", compression: str = "none"):
        if storage not in BAG_STORAGES:
            raise ValueError(f"bag storage '{storage}' unknown; use {' or '.join(BAG_STORAGES)}")
        if compression not in BAG_COMPRESSIONS:
            raise ValueError(f"bag compression '{compression}' unknown; use {' or '.join(BAG_COMPRESSIONS)}")
        self.path = Path(path)
        self.typestore = typestore
        self.storage = storage
        self.compression = compression
        self.counts: dict[str, int] = {}
        self.error: Exception | None = None
        self._queue: queue.Queue = queue.Queue()
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"bag:{self.path.name}", daemon=True)
        self._thread.start()
        self._opened.wait()
        if self.error is not None:
            raise self.error

    def write(self, topic: str, msgtype: str, stamp_ns: int, cdr: bytes) -> None:
        self._queue.put((topic, msgtype, int(stamp_ns), bytes(cdr)))

    def close(self) -> None:
        """Flush everything queued, then finish the bag (metadata.yaml)."""
        self._queue.put(None)
        self._thread.join()
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        plugin = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}[self.storage]
        try:
            writer = Writer(self.path, version=9, storage_plugin=plugin)
            if self.compression == "zstd":
                writer.set_compression(CompressionMode.MESSAGE, CompressionFormat.ZSTD)
            writer.open()
        except Exception as exc:  # noqa: BLE001  (reported to the caller of __init__)
            self.error = exc
            self._opened.set()
            return
        self._opened.set()
        connections = {}
        try:
            while (item := self._queue.get()) is not None:
                topic, msgtype, stamp, data = item
                conn = connections.get(topic)
                if conn is None:
                    conn = connections[topic] = writer.add_connection(topic, msgtype, typestore=self.typestore)
                writer.write(conn, stamp, data)
                self.counts[topic] = self.counts.get(topic, 0) + 1
        except Exception as exc:  # noqa: BLE001  (reported by close())
            self.error = exc
            while self._queue.get() is not None:
                pass
        finally:
            writer.close()


def read_bag(path: str | Path, typestore=None, topics: list[str] | None = None):
    """Yield (topic, msgtype, timestamp_ns, deserialized message) from a rosbag2 folder, read with
    `typestore` or else the definitions the bag was written with."""
    with Reader(Path(path)) as reader:
        typestore = typestore or bag_typestore(reader.connections)
        conns = [c for c in reader.connections if topics is None or c.topic in topics]
        for conn, stamp, raw in reader.messages(connections=conns):
            yield conn.topic, conn.msgtype, stamp, typestore.deserialize_cdr(raw, conn.msgtype)
