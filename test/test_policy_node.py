"""The policy node (videovla backend, tiny checkpoint) answers a chunk request for an Observation
over real rclpy with a valid ActionChunk stamped at the observation's capture time."""

import os
import time

import numpy as np
import pytest
import rclpy
from conftest import stop_in_process, tiny_videovla_checkpoint
import torch
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from vla_msgs.msg import ActionChunk, ExecutionFeedback, ImaginedFuture, Observation

from vla_policy_node.core.embodiment import load_robot
from vla_policy_node.models.backend import PolicyInput
from vla_policy_node.models.registry import make_backend
from vla_policy_node.nodes.common import RELIABLE_QOS, SENSOR_QOS, image_msg, to_stamp
from vla_policy_node.nodes.policy import PolicyNode


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_videovla_checkpoint(tmp_path_factory.mktemp("ckpt"), action_head_std=0.3)   # a chunk that depends on its inputs


def test_policy_node_answers_request_with_chunk(checkpoint):
    os.environ["ROS_DOMAIN_ID"] = "57"
    context = rclpy.Context()
    rclpy.init(context=context)
    node = PolicyNode(context=context, parameter_overrides=[
        Parameter("backend", value="videovla"), Parameter("checkpoint", value=str(checkpoint)),
        Parameter("decode_imagined", value=True)])
    peer = rclpy.create_node("peer", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(peer)
    chunks, imagined = [], []
    peer.create_subscription(ActionChunk, "/vla/action_chunk", chunks.append, RELIABLE_QOS)
    peer.create_subscription(ImaginedFuture, "/vla/imagined", imagined.append, RELIABLE_QOS)
    obs_pub = peer.create_publisher(Observation, "/vla/observation", SENSOR_QOS)
    fb_pub = peer.create_publisher(ExecutionFeedback, "/vla/execution_feedback", RELIABLE_QOS)
    try:
        request = type("R", (), dict(task="drawer-open", instruction="open the drawer", seed=1, episode_id="e7"))()
        response = type("S", (), {})()
        assert node.on_reset(request, response).success
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (obs_pub.get_subscription_count() and fb_pub.get_subscription_count()):
            executor.spin_once(timeout_sec=0.05)
        obs = Observation(seq=3, episode_id="e7", embodiment="metaworld_sawyer", instruction="open the drawer",
                          camera_names=["corner"], state=[0.0, 0.6, 0.2, 0.0])
        obs.header.stamp = to_stamp(12.5)
        frame = np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)
        obs.images = [image_msg(frame, obs.header.stamp, "camera_corner")]
        fb = ExecutionFeedback(episode_id="e7", request_chunk=True, action_dim=4)
        fb.request_after = to_stamp(12.5)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not chunks:
            obs_pub.publish(obs)
            fb_pub.publish(fb)
            end = time.monotonic() + 0.5
            while time.monotonic() < end and not chunks:
                executor.spin_once(timeout_sec=0.05)
        assert chunks, "no ActionChunk received"
        chunk = chunks[0]
        assert chunk.episode_id == "e7" and chunk.obs_seq == 3 and chunk.backend == "videovla"
        assert (chunk.header.stamp.sec, chunk.header.stamp.nanosec) == (12, 500_000_000)
        assert chunk.horizon == 8 and chunk.action_dim == 4 and abs(chunk.dt - 0.0125) < 1e-9
        # the chunk is the backend's for this observation (same checkpoint, same episode seed)
        backend = make_backend("videovla", load_robot("metaworld_sawyer"), checkpoint=str(checkpoint))
        backend.reset("open the drawer", seed=1)
        expected = backend.predict(PolicyInput(12.5, "open the drawer", {"corner": frame}, np.array(obs.state)))
        np.testing.assert_allclose(np.asarray(chunk.actions).reshape(8, 4), expected.actions, atol=1e-5)
        np.testing.assert_allclose(np.asarray(chunk.actions_normalized).reshape(8, 4), expected.actions_normalized,
                                   atol=1e-5)
        assert chunk.inference_ms > 0
        end = time.monotonic() + 2
        while time.monotonic() < end and not imagined:
            executor.spin_once(timeout_sec=0.05)
        assert imagined and imagined[0].chunk_id == chunk.chunk_id and len(imagined[0].frames) == 2
        assert list(imagined[0].frame_offsets) == pytest.approx([o * 0.0125 for o in backend.future_offsets])
        stale = ExecutionFeedback(episode_id="other", request_chunk=True, action_dim=4)
        fb_pub.publish(stale)                                # requests of another episode are ignored
        n = len(chunks)
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            obs_pub.publish(obs)
            executor.spin_once(timeout_sec=0.05)
        assert len(chunks) == n
        # observations newer than a request are there already (a simulator stepping on during a
        # simulated delay): the chunk is computed from the first one captured at or after the request
        for k, t in enumerate((20.0, 20.0125, 20.025)):
            later = Observation(seq=10 + k, episode_id="e7", embodiment="metaworld_sawyer",
                                instruction="open the drawer", camera_names=["corner"], state=[0.0, 0.6, 0.2, 0.0])
            later.header.stamp = to_stamp(t)
            later.images = [image_msg(frame, later.header.stamp, "camera_corner")]
            end = time.monotonic() + 5.0
            while time.monotonic() < end and node.observations[-1].seq != later.seq:
                obs_pub.publish(later)                       # best effort: until it is there
                executor.spin_once(timeout_sec=0.05)
        assert {10, 11, 12} <= {o.seq for o in node.observations}
        fb.request_after = to_stamp(20.0)
        fb_pub.publish(fb)
        end = time.monotonic() + 10
        while time.monotonic() < end and len(chunks) == n:
            executor.spin_once(timeout_sec=0.05)
        assert len(chunks) == n + 1 and chunks[-1].obs_seq == 10
        assert (chunks[-1].header.stamp.sec, chunks[-1].header.stamp.nanosec) == (20, 0)
    finally:
        stop_in_process(node, peer, executor, context)
