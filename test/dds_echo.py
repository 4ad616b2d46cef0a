"""Echo peer for test_messages_dds.py, run as a separate process (python dds_echo.py READY_FILE).

For every vla_msgs message type T it subscribes to /test_echo/T and republishes each received
message unchanged on /test_echo/T/back. It serves every vla_msgs service on /test_echo/srv/<Name>
with a response computed from the request, so the test can tell a real round trip from a stub.

When everything is created it writes READY_FILE. It exits on SIGTERM/SIGINT, when its parent
process goes away, or after MAX_LIFETIME_S, so a crashed test run cannot leave it behind.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from vla_msgs import msg as vla_msg
from vla_msgs import srv as vla_srv

MESSAGE_TYPES = ["Observation", "ActionChunk", "ImaginedFuture", "ExecutionFeedback", "PolicyStatus",
                 "ExecutorStatus", "EpisodeResult", "ActionCommand", "StateVector", "ImaginationDivergence",
                 "EpisodeAnnouncement"]
SERVICE_TYPES = ["ResetEpisode", "SetInstruction", "SetArmed", "EmergencyStop", "Perturb"]

# Fixed stamp the ResetEpisode response carries (the test checks it).
RESET_STAMP_SEC = 1_700_000_123
RESET_STAMP_NANOSEC = 456_789
MAX_LIFETIME_S = float(os.environ.get("DDS_ECHO_MAX_LIFETIME_S", "120"))

QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=10)


def reset_episode(request, response):
    response.success = bool(request.task)
    response.message = f"{request.task}|{request.seed}|{request.episode_id}"
    response.instruction = request.instruction.upper()
    response.stamp.sec = RESET_STAMP_SEC
    response.stamp.nanosec = RESET_STAMP_NANOSEC
    return response


def set_instruction(request, response):
    response.success = True
    response.message = f"got {request.instruction} for {request.episode_id}"
    return response


def set_armed(request, response):
    response.success = request.armed
    response.message = "armed" if request.armed else "disarmed"
    return response


def emergency_stop(request, response):
    response.estop = request.engage
    response.success = request.clear
    response.message = f"reason={request.reason}"
    return response


def perturb(request, response):
    response.success = request.kind == "object"
    response.message = f"{request.kind}|{','.join(repr(float(v)) for v in request.offset_m)}|{request.at_step}"
    return response


HANDLERS = {"ResetEpisode": reset_episode, "SetInstruction": set_instruction,
            "SetArmed": set_armed, "EmergencyStop": emergency_stop, "Perturb": perturb}


class Echo(Node):
    def __init__(self):
        super().__init__("dds_echo")
        self._pubs = {}
        self._subs = []
        self._srvs = []
        for name in MESSAGE_TYPES:
            cls = getattr(vla_msg, name)
            pub = self.create_publisher(cls, f"/test_echo/{name}/back", QOS)
            self._pubs[name] = pub
            # Republish the very object received: no copy, no field touched.
            self._subs.append(self.create_subscription(cls, f"/test_echo/{name}", pub.publish, QOS))
        for name in SERVICE_TYPES:
            self._srvs.append(self.create_service(getattr(vla_srv, name), f"/test_echo/srv/{name}",
                                                  HANDLERS[name]))


def main() -> int:
    ready_file = Path(sys.argv[1])
    parent = os.getppid()
    rclpy.init()
    node = Echo()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    ready_file.write_text(str(os.getpid()))
    deadline = time.monotonic() + MAX_LIFETIME_S
    try:
        while rclpy.ok() and time.monotonic() < deadline and os.getppid() == parent:
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
