"""imagination_monitor: scores the policy's imagined future frames against the real camera frames.

Subscribes to /vla/imagined (vla_msgs/ImaginedFuture), /vla/action_chunk (for the episode of each
chunk) and the cameras of the robot file; publishes one vla_msgs/ImaginationDivergence per
imagined frame that met its real frame on /vla/imagination/divergence. Threshold, action and
camera come from the robot file's `monitor:` section unless the node parameters set them; the
executor decides what to do with `action` (this node only reports). `threshold` and `action` may
change while running (`ros2 param set /imagination_monitor threshold 0.2`): frames compared from
then on use them; the other parameters are read at start.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict

from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from sensor_msgs.msg import Image
from vla_msgs.msg import ActionChunk, ImaginationDivergence, ImaginedFuture

from ..core import images
from ..core.imagination_monitor import Comparison, ImaginationMonitor, MonitorSettings
from .diagnostics import Diagnostics
from .common import RELIABLE_QOS, SENSOR_QOS, TOPICS, load_robot_or_exit, run_node, to_sec, to_stamp
from .parameters import ROBOT, Param, declare

EPISODES_KEPT = 256          # chunk id -> episode id entries remembered
NEVER = 2.0                  # a threshold no divergence (1 - SSIM <= 2) exceeds


class ImaginationMonitorNode(Node):
    PARAMETERS = (
        ROBOT,
        Param("camera", "", "compare only this camera; \"\" = the robot file's monitor.camera, else every imagined "
                            "camera"),
        Param("max_chunks", 32, "imagined futures kept while their real frames are awaited", (1, 100000)),
        Param("real_frames_kept", 64, "recent real frames kept per camera, for imagination that arrives late",
              (1, 100000)),
    )

    @staticmethod
    def robot_parameters(cfg) -> tuple[Param, ...]:
        """The robot file's monitor section (and control period), each a parameter with the file's value
        as its default."""
        section = cfg.monitor
        return (
            Param("threshold", section.threshold if section else NEVER,
                  f"divergence (1 - SSIM) above which an imagined frame is flagged; default: the robot file's "
                  f"monitor.threshold ({NEVER:g}, never flagged, without a monitor section)", (1e-6, NEVER),
                  live=True),
            Param("action", section.action if section else "none",
                  "what a flagged frame asks the executor to do; default and \"\": the robot file's monitor.action "
                  "(none without a monitor section)", live=True, constraints="none | replan | hold"),
            Param("tolerance_s", 0.5 * cfg.action.dt, "largest |real frame stamp - imagined time| for a comparison "
                                                      "(s); default: half the control period", (1e-6, 1.0)),
        )

    def __init__(self, **kwargs):
        super().__init__("imagination_monitor", **kwargs)
        p = declare(self, self.PARAMETERS)
        self.robot = load_robot_or_exit(self, p.robot)
        cfg = self.robot.config
        declare(self, self.robot_parameters(cfg))
        self.section = section = cfg.monitor
        threshold = p.threshold
        action = p.action or (section.action if section else "none")
        camera = p.camera or (section.camera if section and section.camera else "")
        tolerance = p.tolerance_s
        try:
            settings = MonitorSettings(threshold, action, camera, tolerance, p.max_chunks, p.real_frames_kept)
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
        self.add_on_set_parameters_callback(self.on_parameters)
        self.get_logger().info(f"imagination monitor ready: threshold {threshold:g} (1 - SSIM), action "
                               f"{action}, camera {camera or 'all'}, tolerance {tolerance * 1e3:.2f} ms")

    def on_parameters(self, params) -> SetParametersResult:
        """`threshold` and `action` changed while running: frames compared from now on use them
        (`action` "" returns to the robot file's). Nothing else changes while running."""
        changes = {}
        for param in params:
            if param.name == "threshold":
                changes["threshold"] = param.value
            elif param.name == "action":
                changes["action"] = param.value or (self.section.action if self.section else "none")
            else:
                return SetParametersResult(successful=False,
                                           reason=f"{param.name}: not changeable while the monitor runs")
        try:
            settings = dataclasses.replace(self.monitor.settings, **changes)
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        self.monitor.settings = settings
        self.get_logger().info(f"now: threshold {settings.threshold:g} (1 - SSIM), action {settings.action}")
        return SetParametersResult(successful=True)

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
