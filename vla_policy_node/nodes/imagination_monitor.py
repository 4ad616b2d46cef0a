"""imagination_monitor: scores the policy's imagined future frames against the real camera frames.

Subscribes to /vla/imagined (vla_msgs/ImaginedFuture), /vla/action_chunk (for the episode of each
chunk) and the cameras of the robot file; publishes one vla_msgs/ImaginationDivergence per
imagined frame that met its real frame on /vla/imagination/divergence. Threshold, action and
camera come from the robot file's `monitor:` section unless the node parameters set them; the
executor decides what to do with `action` (this node only reports).
"""

from __future__ import annotations

import math
from collections import OrderedDict

from rclpy.node import Node
from sensor_msgs.msg import Image
from vla_msgs.msg import ActionChunk, ImaginationDivergence, ImaginedFuture

from ..core import images
from ..core.imagination_monitor import Comparison, ImaginationMonitor, MonitorSettings
from .diagnostics import Diagnostics
from .common import RELIABLE_QOS, SENSOR_QOS, TOPICS, load_robot_or_exit, run_node, to_sec, to_stamp

EPISODES_KEPT = 256          # chunk id -> episode id entries remembered


class ImaginationMonitorNode(Node):
    def __init__(self, **kwargs):
        super().__init__("imagination_monitor", **kwargs)
        p = self.declare_parameter
        self.robot = load_robot_or_exit(self, p("robot", "metaworld_sawyer").value)
        cfg = self.robot.config
        section = cfg.monitor
        threshold = float(p("threshold", 0.0).value) or (section.threshold if section else math.inf)
        action = p("action", "").value or (section.action if section else "none")
        camera = p("camera", "").value or (section.camera if section and section.camera else "")
        tolerance = float(p("tolerance_s", 0.0).value) or 0.5 * cfg.action.dt
        try:
            settings = MonitorSettings(threshold, action, camera, tolerance, int(p("max_chunks", 32).value),
                                       int(p("real_frames_kept", 64).value))
        except ValueError as exc:
            self.get_logger().fatal(f"{self.robot.path} monitor / node parameters: {exc}")
            raise SystemExit(2) from None
        if camera and camera not in cfg.camera_names:
            self.get_logger().fatal(f"parameter camera: '{camera}' is not a camera of {self.robot.path} "
                                    f"({cfg.camera_names})")
            raise SystemExit(2)
        views = {c.name: (c.input_size, c.crop) for c in cfg.cameras}
        self.monitor = ImaginationMonitor(settings, views)
        self.episodes: OrderedDict[int, str] = OrderedDict()
        self.episode_id = ""

        self.pub = self.create_publisher(ImaginationDivergence, TOPICS["divergence"], RELIABLE_QOS)
        self.create_subscription(ImaginedFuture, TOPICS["imagined"], self.on_imagined, RELIABLE_QOS)
        self.create_subscription(ActionChunk, TOPICS["action_chunk"], self.on_chunk, RELIABLE_QOS)
        for cam in cfg.cameras:
            if not camera or cam.name == camera:
                self.create_subscription(Image, cam.topic, lambda m, c=cam: self.on_image(c, m), SENSOR_QOS)
        self.diagnostics = Diagnostics(self, "imagination", self.robot.name,
                                       lambda: {"episode_id": self.episode_id, **self.monitor.counts}, [])
        self.get_logger().info(f"imagination monitor ready: threshold {threshold:g} (1 - SSIM), action "
                               f"{action}, camera {camera or 'all'}, tolerance {tolerance * 1e3:.2f} ms")

    def on_chunk(self, msg: ActionChunk) -> None:
        self.episodes[msg.chunk_id] = msg.episode_id
        while len(self.episodes) > EPISODES_KEPT:
            self.episodes.popitem(last=False)
        if msg.episode_id != self.episode_id:
            self.episode_id = msg.episode_id
            self.monitor.drop_other_episodes(msg.episode_id)

    def on_imagined(self, msg: ImaginedFuture) -> None:
        where = f"{TOPICS['imagined']} chunk {msg.chunk_id}"
        try:
            frames = [images.decode(f.encoding, f.height, f.width, f.step, f.data, where=where) for f in msg.frames]
            results = self.monitor.add_imagined(msg.chunk_id, self.episodes.get(msg.chunk_id, self.episode_id),
                                                to_sec(msg.header.stamp), list(msg.camera_names), frames,
                                                list(msg.frame_offsets))
        except ValueError as exc:
            self.get_logger().error(f"{where}: {exc} (dropped)", throttle_duration_sec=2.0)
            return
        self.publish(results)

    def on_image(self, cam, msg: Image) -> None:
        try:
            frame = images.decode(msg.encoding, msg.height, msg.width, msg.step, msg.data, where=cam.topic)
            results = self.monitor.on_real_frame(cam.name, to_sec(msg.header.stamp), frame)
        except ValueError as exc:
            self.get_logger().error(f"{cam.topic}: {exc} (dropped)", throttle_duration_sec=2.0)
            return
        self.publish(results)

    def publish(self, results: list[Comparison]) -> None:
        for r in results:
            msg = ImaginationDivergence(episode_id=r.episode_id, chunk_id=r.chunk_id, camera_name=r.camera,
                                        frame_index=r.frame_index, horizon_offset_s=r.offset_s,
                                        time_error_s=r.time_error_s, width=r.width, height=r.height,
                                        psnr=r.psnr, ssim=r.ssim, divergence=r.divergence,
                                        threshold=r.threshold, exceeded=r.exceeded, action=r.action)
            msg.header.stamp = to_stamp(r.real_stamp_s)
            msg.header.frame_id = f"camera_{r.camera}"
            self.pub.publish(msg)
            if r.exceeded:
                self.get_logger().warning(f"chunk {r.chunk_id} camera {r.camera} +{r.offset_s:.3f} s: divergence "
                                          f"{r.divergence:.3f} > {r.threshold:g} -> {r.action}",
                                          throttle_duration_sec=1.0)

    def close(self) -> None:
        self.get_logger().info(f"imagination monitor counts: {self.monitor.counts}")


def main(args=None):
    run_node(ImaginationMonitorNode, args)


if __name__ == "__main__":
    main()
