"""Perception node in-process over real rclpy: wrong encodings are rejected with a clear count,
good inputs are synchronized into an Observation with the state in the robot file's order."""

import array
import os
import time

import numpy as np
import pytest
import rclpy
from geometry_msgs.msg import PoseStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState
from vla_msgs.msg import Observation, StateVector

from vla_policy_node.nodes.common import RELIABLE_QOS, SENSOR_QOS, to_stamp
from vla_policy_node.nodes.perception import PerceptionNode

CAMERA = "/vla/sim/camera/corner/image_raw"


@pytest.fixture
def graph():
    os.environ["ROS_DOMAIN_ID"] = "53"
    context = rclpy.Context()
    rclpy.init(context=context)
    perception = PerceptionNode(context=context, parameter_overrides=[Parameter("robot", value="metaworld_sawyer")])
    driver = rclpy.create_node("fake_robot", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(perception)
    executor.add_node(driver)
    received = []
    driver.create_subscription(Observation, "/vla/observation", received.append, SENSOR_QOS)
    pubs = {
        "image": driver.create_publisher(Image, CAMERA, SENSOR_QOS),
        "joints": driver.create_publisher(JointState, "/joint_states", RELIABLE_QOS),
        "ee": driver.create_publisher(PoseStamped, "/vla/sim/ee_pose", RELIABLE_QOS),
        "env": driver.create_publisher(StateVector, "/vla/sim/env_state", RELIABLE_QOS),
    }
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(p.get_subscription_count() for p in pubs.values()):
        executor.spin_once(timeout_sec=0.05)
    yield perception, executor, pubs, received
    executor.shutdown()
    perception.destroy_node()
    driver.destroy_node()
    rclpy.shutdown(context=context)


def publish_step(pubs, t, encoding="rgb8", size=(96, 160), positions=(0.1, 0.02, -0.02)):
    stamp = to_stamp(t)
    h, w = size
    frame = np.zeros((h, w, 3), np.uint8)
    frame[..., 0] = 255                                   # pure red in RGB
    if encoding == "bgr8":
        frame = frame[..., ::-1]
    img = Image(height=h, width=w, encoding=encoding, step=w * 3, data=array.array("B", frame.tobytes()))
    img.header.stamp = stamp
    js = JointState(name=["right_j0", "r_close", "l_close"], position=list(positions))
    js.header.stamp = stamp
    ee = PoseStamped()
    ee.header.stamp = stamp
    ee.pose.position.x, ee.pose.position.y, ee.pose.position.z = 0.1, 0.6, 0.2
    ee.pose.orientation.w = 1.0
    env = StateVector(values=[float(i) for i in range(39)], step=int(t * 80))
    env.header.stamp = stamp
    for key, msg in (("image", img), ("ee", ee), ("env", env), ("joints", js)):
        pubs[key].publish(msg)


def spin_for(executor, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        executor.spin_once(timeout_sec=0.02)


def test_wrong_encoding_rejected_and_counted(graph):
    perception, executor, pubs, received = graph
    for i in range(3):
        publish_step(pubs, time.time(), encoding="mono16")
        spin_for(executor, 0.2)
    assert perception.rejected.get(CAMERA, 0) >= 1
    assert received == []                                 # no observation without a valid frame


def test_bgr_frame_on_rgb_camera_rejected(graph):
    perception, executor, pubs, received = graph
    publish_step(pubs, time.time(), encoding="bgr8")
    spin_for(executor, 0.5)
    assert perception.rejected.get(CAMERA, 0) >= 1 and received == []


def test_synchronized_observation(graph):
    perception, executor, pubs, received = graph
    perception.on_set_instruction(type("R", (), {"instruction": "open the drawer", "episode_id": "e1"})(),
                                  type("S", (), {})())
    for i in range(3):
        publish_step(pubs, time.time())      # perception runs on the wall clock here
        spin_for(executor, 0.3)
        if received:
            break
    assert received, "no observation assembled"
    obs = received[0]
    assert obs.instruction == "open the drawer" and obs.episode_id == "e1" and obs.embodiment == "metaworld_sawyer"
    assert list(obs.camera_names) == ["corner"]
    img = obs.images[0]
    assert (img.height, img.width, img.encoding) == (128, 128, "rgb8")   # resized to the model input
    pixels = np.frombuffer(bytes(img.data), np.uint8).reshape(128, 128, 3)
    assert pixels[..., 0].min() == 255 and pixels[..., 1].max() == 0
    np.testing.assert_allclose(obs.state, [0.1, 0.6, 0.2, 0.02], rtol=1e-6)
    assert list(obs.state_names) == ["ee_x", "ee_y", "ee_z", "finger_right"]
    assert len(obs.env_state) == 39 and obs.max_skew == 0.0


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_joint_positions_rejected_and_counted(graph, bad):
    perception, executor, pubs, received = graph
    perception.on_set_instruction(type("R", (), {"instruction": "open the drawer", "episode_id": "e1"})(),
                                  type("S", (), {})())
    publish_step(pubs, time.time(), positions=(0.1, bad, -0.02))
    spin_for(executor, 0.5)
    assert perception.rejected.get("/joint_states", 0) == 1 and received == []
