"""The model core behind a websocket (openpi's protocol): our frames read by openpi's own client
package and theirs by us, `vla-serve`'s service answering openpi's client and the `remote`
backend, predictions equal to the same backend in-process, and every failure named. Only the
tests that talk to openpi's own package need openpi-client; the rest run without it."""

from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import tiny_videovla_checkpoint, wait_until

from vla_policy_node.core.embodiment import load_robot
from vla_policy_node.models import wire
from vla_policy_node.models.backend import PolicyInput
from vla_policy_node.models.observation_keys import ObservationKeys
from vla_policy_node.models.registry import make_backend
from vla_policy_node.models.remote import RemoteBackend, RemotePolicyError
from vla_policy_node.serving.server import PolicyServer, PolicyService


def openpi(module: str):
    """openpi-client's `module`; skips the test calling it when openpi-client is not installed."""
    return pytest.importorskip(f"openpi_client.{module}", reason="openpi-client is installed by make setup")


def test_frames_cross_both_ways_with_openpi_msgpack_numpy():
    openpi_msgpack = openpi("msgpack_numpy")
    message = {"actions": np.arange(12, dtype=np.float32).reshape(3, 4), "ms": np.float64(2.5), "text": "hi",
               "nested": {"image": np.full((2, 2, 3), 7, np.uint8)}}
    for decoded in (openpi_msgpack.unpackb(wire.pack(message)), wire.unpack(openpi_msgpack.packb(message))):
        np.testing.assert_array_equal(decoded["actions"], message["actions"])
        assert decoded["actions"].dtype == np.float32 and decoded["ms"] == 2.5 and decoded["text"] == "hi"
        np.testing.assert_array_equal(decoded["nested"]["image"], message["nested"]["image"])


def test_frames_refuse_objects_and_name_bad_bytes():
    with pytest.raises(wire.WireError, match="object"):
        wire.pack({"x": np.array([object()])})
    with pytest.raises(wire.WireError, match="msgpack"):
        wire.unpack(b"\xc1\xc1")
    with pytest.raises(wire.WireError, match="map"):
        wire.unpack(wire.pack([1, 2]))
    with pytest.raises(ValueError, match="CAMERA=KEY"):
        ObservationKeys.parse("scene")


@pytest.fixture(scope="module")
def robot():
    return load_robot("metaworld_sawyer")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_videovla_checkpoint(tmp_path_factory.mktemp("bc") / "ckpt", backend="bc")


def observation(robot, seed: int = 0) -> PolicyInput:
    rng = np.random.default_rng(seed)
    cfg = robot.config
    images = {c.name: rng.integers(0, 255, (*c.input_size, 3), dtype=np.uint8) for c in cfg.cameras}
    return PolicyInput(stamp=1.5, instruction="press the button", images=images,
                       state=rng.normal(size=len(cfg.state.names)))


@pytest.fixture(scope="module")
def served(robot, checkpoint):
    """The bc checkpoint served on a free port, and the same checkpoint in-process."""
    server = PolicyServer(PolicyService(make_backend("bc", robot, checkpoint=str(checkpoint)), robot),
                          "127.0.0.1", 0).start()
    local = make_backend("bc", robot, checkpoint=str(checkpoint))
    yield server, local
    server.stop()


def test_openpi_client_gets_metadata_and_the_same_actions(served, robot):
    server, local = served
    client = openpi("websocket_client_policy").WebsocketClientPolicy(host="127.0.0.1", port=server.port)
    meta = client.get_server_metadata()
    assert meta["backend"] == "bc" and meta["action_names"] == list(robot.config.action.names)
    obs = observation(robot)
    server.service.backend.reset("press the button", 0)      # openpi's protocol has no reset: seeded here
    answer = client.infer(ObservationKeys().to_message(obs))
    local.reset("press the button", 0)
    expected = local.predict(obs)
    np.testing.assert_allclose(answer["actions"], expected.actions, rtol=1e-5, atol=1e-6)
    assert answer["server_timing"]["infer_ms"] > 0


def test_a_bad_observation_is_named_to_an_openpi_client(served, robot):
    server, _ = served
    client = openpi("websocket_client_policy").WebsocketClientPolicy(host="127.0.0.1", port=server.port)
    message = ObservationKeys().to_message(observation(robot))
    camera = robot.config.cameras[0].name
    del message[f"observation/images/{camera}"]
    with pytest.raises(RuntimeError, match=f"observation/images/{camera}"):
        client.infer(message)


def test_remote_backend_predicts_like_the_backend_in_process(served, robot):
    server, local = served
    remote = make_backend("remote", robot, server=f"ws://127.0.0.1:{server.port}")
    assert isinstance(remote, RemoteBackend) and remote.metadata["backend"] == "bc"
    for seed in range(3):
        obs = observation(robot, seed)
        remote.reset("press the button", seed)
        local.reset("press the button", seed)
        got, expected = remote.predict(obs), local.predict(obs)
        np.testing.assert_allclose(got.actions, expected.actions, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got.actions_normalized, expected.actions_normalized, rtol=1e-5, atol=1e-6)
        assert got.timings_ms["inference_ms"] >= got.timings_ms["server_infer_ms"] > 0
    assert server.service.requests >= 6
    remote.close()


class SlowBackend:
    """Wraps a backend; predict sleeps `delay_s` first (a server that cannot keep up) and counts
    the predictions it finished."""

    def __init__(self, inner, delay_s: float):
        self.inner, self.delay_s = inner, delay_s
        self.answered = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def predict(self, obs, prefix=None):
        time.sleep(self.delay_s)
        out = self.inner.predict(obs, prefix)
        self.answered += 1
        return out


def test_a_slow_server_is_named_and_the_backend_reconnects(robot, checkpoint):
    slow = SlowBackend(make_backend("bc", robot, checkpoint=str(checkpoint)), 0.0)
    server = PolicyServer(PolicyService(slow, robot), "127.0.0.1", 0).start()
    try:
        remote = make_backend("remote", robot, server=f"127.0.0.1:{server.port}", timeout_s=10.0, reconnect_s=0.5)
        remote.reset("press the button", 0)
        obs = observation(robot)
        remote.predict(obs)
        remote.timeout_s, slow.delay_s = 0.3, 1.0
        with pytest.raises(RemotePolicyError, match="no answer .* within 0.3 s"):
            remote.predict(obs)
        remote.timeout_s, slow.delay_s = 10.0, 0.0
        with pytest.raises(RemotePolicyError, match="reconnecting after 0.5 s"):
            remote.predict(obs)                      # not hammering a failing server
        # the late answer drains with the old connection, and the backend's wait before reconnecting is over
        wait_until(lambda: slow.answered == 2 and time.monotonic() - remote.last_failure >= remote.reconnect_s, 10.0,
                   lambda: f"{slow.answered} of 2 predictions answered by the server, "
                           f"{time.monotonic() - remote.last_failure:.2f} s since the backend's failure")
        out = remote.predict(obs)
        assert out.actions.shape == (slow.inner.config.horizon, len(robot.config.action.names))   # the checkpoint's chunk
        assert remote.reconnects == 1
        remote.close()
    finally:
        server.stop()


def test_no_server_is_named(robot):
    with pytest.raises(RemotePolicyError, match="cannot connect to ws://127.0.0.1:9"):
        make_backend("remote", robot, server="ws://127.0.0.1:9", connect_timeout_s=2.0)


def test_a_server_for_another_robot_is_refused(served):
    server, _ = served
    with pytest.raises(RemotePolicyError, match="serves actions"):
        make_backend("remote", load_robot("panda_isaac"), server=f"ws://127.0.0.1:{server.port}")


def test_health_check_answers(served):
    import urllib.request

    server, _ = served
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5) as response:
        assert response.status == 200
