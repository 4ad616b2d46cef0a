"""perception: assembles vla_msgs/Observation from the cameras and state named in the robot YAML.

Each camera frame is checked (encoding, buffer size), cropped and resized to the model input;
frames, end-effector pose and privileged state are aligned to each joint-state message within
`sync.tolerance_s`. Stale, unsynchronized or malformed inputs are dropped and counted (malformed
ones by topic and field in `rejections`), with an error that names the topic and the field; nothing
crashes the graph.
"""

from __future__ import annotations

import dataclasses
import time

from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import Image, JointState
from vla_msgs.msg import EpisodeAnnouncement, Observation, StateVector
from vla_msgs.srv import SetInstruction

from ..core import images
from ..core.state import (StateAssemblyError, assemble_state, joint_state_problem, problem_field, state_joints,
                          values_problem)
from ..core.health import WARN, Above, Flag
from ..core.sync import TimeSynchronizer
from .diagnostics import Diagnostics
from .managed import ManagedNode
from .parameters import ROBOT, Param
from .common import (LATCHED_QOS, RELIABLE_QOS, SENSOR_QOS, SERVICES, TOPICS, image_msg, load_robot_or_exit,
                     run_node, to_sec)


class PerceptionNode(ManagedNode):
    PARAMETERS = (
        ROBOT,
        Param("include_env_state", True, "carry the simulator's privileged state (the robot file's env_state_topic) "
                                         "in observations; the oracle needs it, learned policies never read it"),
        Param("instruction", "", "instruction observations carry until a task sets one "
                                 "(/vla/perception/set_instruction); \"\" = none"),
    )

    def __init__(self, **kwargs):
        super().__init__("perception", **kwargs)

    def setup(self) -> None:
        """configure: the robot file, the topics and services, everything the node keeps."""
        self.robot = load_robot_or_exit(self, self.params.robot)
        self.include_env_state = self.params.include_env_state
        self.instruction = self.params.instruction
        self.episode_id = ""
        cfg = self.robot.config
        self.cameras = {c.name: c for c in cfg.cameras}
        self.state_sources = cfg.state.sources
        self.uses_ee = any(s.startswith("ee.") for s in self.state_sources)
        self.required_joints = state_joints(self.state_sources)
        self.use_env_state = self.include_env_state and cfg.env_state_topic is not None

        streams = [f"camera:{c.name}" for c in cfg.cameras if c.required]
        if self.uses_ee:
            streams.append("ee_pose")
        if self.use_env_state:
            streams.append("env_state")
        self.sync = TimeSynchronizer(streams, cfg.sync.tolerance_s, cfg.sync.max_age_s)
        self.rejected = {}      # topic -> count of malformed messages
        self.rejections = {}    # "<topic>: <field>" -> count of messages dropped for that field
        self.seq = 0

        for cam in cfg.cameras:
            self.create_subscription(Image, cam.topic, lambda m, c=cam: self.on_image(c, m), SENSOR_QOS)
        self.create_subscription(JointState, cfg.state.joint_states_topic, self.on_joint_state, RELIABLE_QOS)
        if self.uses_ee:
            self.create_subscription(PoseStamped, cfg.state.ee_pose_topic, self.on_ee_pose, RELIABLE_QOS)
        if self.use_env_state:
            self.create_subscription(StateVector, cfg.env_state_topic, self.on_env_state, RELIABLE_QOS)
        self.obs_pub = self.create_publisher(Observation, TOPICS["observation"], SENSOR_QOS)
        self.create_service(SetInstruction, SERVICES["set_instruction"], self.on_set_instruction)
        self.create_subscription(EpisodeAnnouncement, TOPICS["episode"], self.on_episode, LATCHED_QOS)
        self.last_published = None                       # wall time (monotonic s) of the last observation
        self.obs_window = (time.monotonic(), 0)          # (wall s, observations) at the last diagnostics
        self.diagnostics = Diagnostics(self, "observations", cfg.name, self.health_figures, [
            Above("since_last_observation_s", 0.5, 2.0, " s"),
            Flag("no_observation_yet", WARN, "no observation published yet (waiting for every stream)")])
        self.get_logger().info(f"perception ready for {cfg.name}: streams {streams}")

    def health_figures(self) -> dict:
        """What /diagnostics reports: observation rate, time since the last one, drops by reason."""
        now, (then, before) = time.monotonic(), self.obs_window
        self.obs_window = (now, self.seq)
        return {"episode_id": self.episode_id, "instruction_set": bool(self.instruction),
                "observations_published": self.seq,
                "observation_rate_hz": (self.seq - before) / max(now - then, 1e-6),
                "since_last_observation_s": None if self.last_published is None else now - self.last_published,
                "no_observation_yet": self.last_published is None,
                "dropped_by_reason": dict(self.rejections), "sync": dataclasses.asdict(self.sync.counters)}

    # ---- inputs -------------------------------------------------------------------------
    def reject(self, topic: str, field: str, reason: str) -> None:
        topic = self.resolve_topic_name(topic)        # as an operator sees it (namespace included)
        self.rejected[topic] = self.rejected.get(topic, 0) + 1
        key = f"{topic}: {field}"
        self.rejections[key] = self.rejections.get(key, 0) + 1
        self.get_logger().error(f"{topic}: {reason} (dropped; {self.rejected[topic]} so far)",
                                throttle_duration_sec=2.0)

    def on_image(self, cam, msg: Image) -> None:
        if msg.encoding != cam.encoding:
            self.reject(cam.topic, "encoding",
                        f"field 'encoding' is '{msg.encoding}', robot file expects '{cam.encoding}'")
            return
        try:
            rgb = images.decode(msg.encoding, msg.height, msg.width, msg.step, msg.data, where=cam.topic)
            rgb = images.to_model_input(rgb, cam.input_size, cam.crop)
        except images.ImageEncodingError as exc:
            self.reject(cam.topic, exc.field, str(exc))
            return
        if cam.required:
            self.sync.add(f"camera:{cam.name}", to_sec(msg.header.stamp), (rgb, msg.header.stamp))
        self.try_emit()

    def on_ee_pose(self, msg: PoseStamped) -> None:
        p, q = msg.pose.position, msg.pose.orientation
        pose = (p.x, p.y, p.z, q.x, q.y, q.z, q.w)
        problem = values_problem("pose", pose)
        if problem:
            self.reject(self.robot.config.state.ee_pose_topic, "pose", problem)
            return
        self.sync.add("ee_pose", to_sec(msg.header.stamp), pose)
        self.try_emit()

    def on_env_state(self, msg: StateVector) -> None:
        problem = values_problem("values", msg.values)
        if problem:
            self.reject(self.robot.config.env_state_topic, "values", problem)
            return
        self.sync.add("env_state", to_sec(msg.header.stamp), list(msg.values))
        self.try_emit()

    def on_joint_state(self, msg: JointState) -> None:
        problem = joint_state_problem(msg.name, msg.position, self.required_joints)
        if problem:
            self.reject(self.robot.config.state.joint_states_topic, problem_field(problem), problem)
            return
        jumps = self.sync.counters.clock_jumps_back
        self.sync.add_anchor(to_sec(msg.header.stamp), msg, self.get_clock().now().nanoseconds * 1e-9)
        if self.sync.counters.clock_jumps_back > jumps:
            self.get_logger().warning(f"{self.robot.config.state.joint_states_topic}: the clock went back to "
                                      f"{to_sec(msg.header.stamp):.3f} s; synchronization starts over")
        self.try_emit()

    def on_set_instruction(self, request, response):
        self.instruction, self.episode_id = request.instruction, request.episode_id
        response.success, response.message = True, f"instruction set for episode '{request.episode_id}'"
        return response

    def on_episode(self, msg: EpisodeAnnouncement) -> None:
        """Perception (re)started while an episode runs rejoins it: observations carry its id again."""
        if msg.active and msg.episode_id != self.episode_id:
            self.instruction, self.episode_id = msg.instruction, msg.episode_id
            self.get_logger().warning(f"{TOPICS['episode']}: rejoined running episode '{msg.episode_id}'")

    # ---- output -------------------------------------------------------------------------
    def try_emit(self) -> None:
        sample = self.sync.poll(self.get_clock().now().nanoseconds * 1e-9)
        if sample is None:
            return
        js: JointState = sample.anchor
        ee = sample.streams.get("ee_pose")
        try:
            state = assemble_state(self.state_sources, list(js.name), list(js.position), ee)
        except StateAssemblyError as exc:
            self.reject(self.robot.config.state.joint_states_topic, "name", str(exc))
            return
        obs = Observation()
        obs.header.stamp = js.header.stamp
        obs.header.frame_id = self.robot.config.output.frame_id
        obs.seq = self.seq
        self.seq += 1
        obs.episode_id, obs.embodiment, obs.instruction = self.episode_id, self.robot.name, self.instruction
        skew = 0.0
        for name, cam in self.cameras.items():
            key = f"camera:{name}"
            if key not in sample.streams:
                continue
            rgb, stamp = sample.streams[key]
            obs.camera_names.append(name)
            obs.images.append(image_msg(rgb, stamp, f"camera_{name}", "rgb8"))
            skew = max(skew, abs(sample.stream_stamps[key] - sample.stamp))
        obs.max_skew = float(skew)
        obs.joint_state = js
        obs.state_names = list(self.robot.config.state.names)
        obs.state = state.tolist()
        if "env_state" in sample.streams:
            obs.env_state = sample.streams["env_state"]
        if not self.active:                # inactive (lifecycle): observations are not published
            return
        self.obs_pub.publish(obs)
        self.last_published = time.monotonic()


def main(args=None):
    run_node(PerceptionNode, args)


if __name__ == "__main__":
    main()
