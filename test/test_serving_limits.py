"""vla-serve's exposure: loopback by default, a bounded frame size (a larger frame is refused from its
header, counted, and the server keeps serving), an optional shared token checked at the handshake
(refused and counted without it), and the `remote` backend sending the token, or no header at all
for a server that wants none (openpi's)."""

from __future__ import annotations

import json
import socket
import time
import urllib.request

import numpy as np
import pytest
from conftest import wait_until
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from vla_policy_node.core.embodiment import load_robot
from vla_policy_node.models.backend import PolicyBackend, PolicyInput, PolicyOutput
from vla_policy_node.models import wire
from vla_policy_node.models.remote import TOKEN_ENV, RemoteBackend, RemotePolicyError
from vla_policy_node.serving.server import DEFAULT_MAX_FRAME_MB, PolicyServer, PolicyService, authorized, parse_args

MIB = 2**20


class ZeroPolicy(PolicyBackend):
    """Answers zeros: the server's network side without a model."""

    name = "zero"

    def reset(self, instruction: str, seed=None, task: str = "") -> None:
        pass

    def predict(self, obs: PolicyInput, prefix=None) -> PolicyOutput:
        cfg = self.embodiment.config
        zeros = np.zeros((cfg.action.horizon, len(cfg.action.names)))
        return PolicyOutput(zeros, zeros)


@pytest.fixture(scope="module")
def robot():
    return load_robot("metaworld_sawyer")


def observation(robot) -> PolicyInput:
    cfg = robot.config
    images = {c.name: np.zeros((*c.input_size, 3), np.uint8) for c in cfg.cameras}
    return PolicyInput(stamp=0.0, instruction="press the button", images=images, state=np.zeros(len(cfg.state.names)))


class RecordingServer(PolicyServer):
    """Keeps the Authorization header of every handshake."""

    def admit(self, connection, request):
        self.seen = [*getattr(self, "seen", []), request.headers.get("Authorization")]
        return super().admit(connection, request)


@pytest.fixture
def serve(robot):
    servers = []

    def start(**kwargs) -> PolicyServer:
        server = RecordingServer(PolicyService(ZeroPolicy(robot), robot), port=0, **kwargs).start()
        servers.append(server)
        return server
    yield start
    for server in servers:
        server.stop()


def health(server) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5) as response:
        assert response.status == 200
        return json.loads(response.read())


def settled(server, key: str, value: int, timeout_s: float = 5.0) -> dict:
    """/healthz once `key` reached `value` (a handler thread counts after its client saw the close)."""
    end = time.monotonic() + timeout_s
    while (figures := health(server))[key] != value and time.monotonic() < end:
        time.sleep(0.05)
    return figures


def test_the_server_listens_on_loopback_by_default(serve):
    assert parse_args(["--robot", "metaworld_sawyer"]).host == "127.0.0.1"
    assert parse_args(["--robot", "metaworld_sawyer"]).max_frame_mb == DEFAULT_MAX_FRAME_MB
    server = serve()
    assert server.server.socket.getsockname()[0] == "127.0.0.1"
    addresses = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    for address in addresses - {"127.0.0.1"}:       # another interface of this machine: nothing listens there
        with pytest.raises(OSError):
            socket.create_connection((address, server.port), timeout=1).close()


def test_an_oversized_frame_is_refused_counted_and_the_server_serves_on(serve, robot):
    server = serve(max_frame_bytes=1 * MIB)
    with connect(f"ws://127.0.0.1:{server.port}", compression=None, max_size=None) as ws:
        assert wire.unpack(ws.recv(timeout=5))["backend"] == "zero"
        ws.send(b"\x00" * (8 * MIB))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009      # message too big
    figures = settled(server, "oversized_frames", 1)
    assert figures["oversized_frames"] == 1 and figures["max_frame_bytes"] == MIB
    assert figures["failed_requests"] == 0 and server.service.requests == 0     # refused before it was read
    remote = RemoteBackend(robot, server=f"127.0.0.1:{server.port}")           # another client, served
    out = remote.predict(observation(robot))
    assert out.actions.shape == (robot.config.action.horizon, len(robot.config.action.names))
    remote.close()
    assert health(server)["oversized_frames"] == 1


def test_a_token_is_required_when_set_and_the_right_one_works(serve, robot, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    server = serve(token="s3cret-token")
    with pytest.raises(RemotePolicyError, match="401.*missing or wrong token"):
        RemoteBackend(robot, server=f"127.0.0.1:{server.port}")
    with pytest.raises(RemotePolicyError, match="401"):
        RemoteBackend(robot, server=f"127.0.0.1:{server.port}", token="s3cret-tokem")
    assert health(server)["unauthorized"] == 2 and health(server)["connections"] == 0
    remote = RemoteBackend(robot, server=f"127.0.0.1:{server.port}", token="s3cret-token")
    assert remote.predict(observation(robot)).actions.shape[1] == len(robot.config.action.names)
    remote.close()
    monkeypatch.setenv(TOKEN_ENV, "s3cret-token")                               # the robot's environment
    RemoteBackend(robot, server=f"127.0.0.1:{server.port}").close()
    assert server.seen[-1] == "Bearer s3cret-token"
    wait_until(lambda: health(server)["clients"] == 0, 10.0, lambda: f"closed clients still counted: {health(server)}")
    assert health(server) == {**health(server), "unauthorized": 2, "connections": 2, "token_required": True}


def test_openpi_clients_keep_working(serve, robot, monkeypatch):
    """No token: no Authorization header (openpi's servers); openpi's own client with its api_key
    reaches a vla-serve that requires a token."""
    openpi = pytest.importorskip("openpi_client.websocket_client_policy", reason="openpi-client: make setup")
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    open_server = serve()
    RemoteBackend(robot, server=f"127.0.0.1:{open_server.port}").close()
    assert open_server.seen == [None]
    guarded = serve(token="s3cret-token")
    client = openpi.WebsocketClientPolicy(host="127.0.0.1", port=guarded.port, api_key="s3cret-token")
    assert client.get_server_metadata()["backend"] == "zero"
    with pytest.raises(ValueError, match="token and api_key"):
        RemoteBackend(robot, server=f"127.0.0.1:{guarded.port}", token="a", api_key="b")


def test_authorization_header_forms():
    assert authorized("Bearer abc", "abc") and authorized("bearer  abc ", "abc") and authorized("Api-Key abc", "abc")
    assert not authorized(None, "abc") and not authorized("abc", "abc") and not authorized("Basic abc", "abc")
    assert not authorized("Bearer abcd", "abc") and not authorized("Bearer ", "abc")
