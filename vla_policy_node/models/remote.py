"""remote: a backend whose model runs elsewhere, behind any openpi-protocol websocket server
(`vla-serve` on a GPU box, or an openpi policy server).

Each predict is one round trip; its time is the chunk's inference time, so the executor's
measured observation-to-arrival delay includes the network. A server that does not answer
within `timeout_s` gives a named error for that chunk (the executor holds when its queue runs
out) and the connection is dropped (a late answer must not be taken for the next request); the
next predict reconnects, at most once per `reconnect_s`. With a vla-serve server, resets,
executed actions (stateful backends) and real-time-chunking prefixes cross too; with an openpi
server only observations do (the server keeps no episode). A vla-serve that requires a token gets
it as 'Authorization: Bearer <token>' (option `token`, default the VLA_SERVE_TOKEN environment
variable); without one no Authorization header is sent, as openpi's servers expect.
"""

from __future__ import annotations

import os
import time

import numpy as np

from ..core.normalization import Normalizer
from .backend import BackendOption, PolicyBackend, PolicyInput, PolicyOutput
from .observation_keys import ObservationKeys
from .wire import WireError, pack, unpack


TOKEN_ENV = "VLA_SERVE_TOKEN"      # the shared token of vla-serve (server and client side)


class RemotePolicyError(RuntimeError):
    """The server is unreachable, slow or answered with an error (names the server and the cause)."""


class RemoteBackend(PolicyBackend):
    name = "remote"
    supports_prefix = True          # sent only to servers that advertise it
    options = {
        "server": BackendOption("ws://localhost:8000", "websocket address of the policy server"),
        "timeout_s": BackendOption(5.0, "longest wait for one answer (s)"),
        "connect_timeout_s": BackendOption(10.0, "longest wait to connect (s)"),
        "reconnect_s": BackendOption(1.0, "after a failure, wait at least this long before connecting again (s)"),
        "api_key": BackendOption("", "sent as 'Authorization: Api-Key <key>' when set (openpi servers)"),
        "token": BackendOption("", f"vla-serve's token, sent as 'Authorization: Bearer <token>'; default the "
                                   f"{TOKEN_ENV} environment variable (a ROS parameter is readable by its peers)"),
        "image_keys": BackendOption("", "CAMERA=KEY,... observation keys of the cameras (default observation/images/<camera>)"),
        "state_key": BackendOption("", "observation key of the state (default observation/state)"),
        "prompt_key": BackendOption("", "observation key of the instruction (default prompt)"),
        "decode_imagined": BackendOption(False, "ask a vla-serve server for the imagined future frames (for the "
                                                "monitor)"),
    }

    def __init__(self, embodiment, server: str = "ws://localhost:8000", timeout_s: float = 5.0,
                 connect_timeout_s: float = 10.0, reconnect_s: float = 1.0, api_key: str = "", image_keys: str = "",
                 state_key: str = "", prompt_key: str = "", token: str = "", decode_imagined: bool = False):
        super().__init__(embodiment)
        self.set_decode_imagined(decode_imagined)
        if timeout_s <= 0 or connect_timeout_s <= 0:
            raise ValueError(f"remote backend: timeout_s ({timeout_s}) and connect_timeout_s ({connect_timeout_s}) "
                             "must be > 0 s")
        self.uri = server if server.startswith(("ws://", "wss://")) else f"ws://{server}"
        self.timeout_s, self.connect_timeout_s, self.reconnect_s = timeout_s, connect_timeout_s, reconnect_s
        if token and api_key:
            raise ValueError("remote backend: token and api_key both set; a request carries one Authorization header")
        self.api_key = api_key
        self.token = token or ("" if api_key else os.environ.get(TOKEN_ENV, ""))
        self.keys = ObservationKeys.parse(image_keys, state_key, prompt_key)
        cfg = embodiment.config
        self.dim, self.horizon = len(cfg.action.names), int(cfg.action.horizon)
        self.normalizer = Normalizer(cfg.normalization.mode, embodiment.action_stats)
        self.ws = None
        self.metadata: dict = {}
        self.last_failure = -np.inf
        self.round_trips = self.reconnects = 0
        self.episode: dict | None = None      # the last reset, replayed to a server after a reconnect
        self.connect()                        # fail at start-up when the server is not there

    # ---- connection ------------------------------------------------------------------------
    def connect(self) -> None:
        from websockets.sync.client import connect

        headers = {"Authorization": f"Bearer {self.token}"} if self.token else \
            {"Authorization": f"Api-Key {self.api_key}"} if self.api_key else None
        try:
            ws = connect(self.uri, compression=None, max_size=None, additional_headers=headers,
                         open_timeout=self.connect_timeout_s)
            metadata = unpack(ws.recv(timeout=self.connect_timeout_s))
        except (OSError, TimeoutError, WireError, Exception) as exc:   # websockets raises its own types too
            self.last_failure = time.monotonic()
            refusal = getattr(getattr(exc, "response", None), "body", b"") or b""   # a refused handshake's reason
            reason = f" ({refusal.decode(errors='replace').strip()})" if refusal else ""
            raise RemotePolicyError(f"remote backend: cannot connect to {self.uri}: {type(exc).__name__}: {exc}"
                                    f"{reason}") from None
        self.check_metadata(metadata)
        self.ws, self.metadata = ws, metadata
        self.uses_privileged_state = bool(metadata.get("uses_privileged_state", False))
        if self.episode is not None and self.extension("reset"):
            self.exchange({"__reset__": True, **self.episode})

    def check_metadata(self, metadata: dict) -> None:
        names = metadata.get("action_names")
        expected = list(self.embodiment.config.action.names)
        if names is not None and list(names) != expected:
            raise RemotePolicyError(f"remote backend: {self.uri} serves actions {list(names)}, the robot file "
                                    f"{self.embodiment.path} has {expected}")

    def extension(self, name: str) -> bool:
        return name in self.metadata.get("extensions", [])

    def drop(self) -> None:
        if self.ws is not None:
            try:
                self.ws.close()
            except Exception:  # noqa: BLE001 - already broken
                pass
        self.ws = None
        self.last_failure = time.monotonic()

    def ensure_connected(self) -> None:
        if self.ws is not None:
            return
        wait = self.reconnect_s - (time.monotonic() - self.last_failure)
        if wait > 0:
            raise RemotePolicyError(f"remote backend: {self.uri} failed {self.reconnect_s - wait:.2f} s ago; "
                                    f"reconnecting after {self.reconnect_s} s")
        self.connect()
        self.reconnects += 1

    def exchange(self, message: dict) -> dict:
        """Send one message, wait for its answer (timeout_s); RemotePolicyError names what failed."""
        from websockets.exceptions import ConnectionClosed

        self.ensure_connected()
        try:
            self.ws.send(pack(message))
            answer = self.ws.recv(timeout=self.timeout_s)
        except TimeoutError:
            self.drop()
            raise RemotePolicyError(f"remote backend: no answer from {self.uri} within {self.timeout_s} s") from None
        except ConnectionClosed as exc:
            self.drop()
            raise RemotePolicyError(f"remote backend: {self.uri} closed the connection ({exc})") from None
        if isinstance(answer, str):
            self.drop()
            raise RemotePolicyError(f"remote backend: {self.uri} refused the request: {answer}")
        try:
            return unpack(answer)
        except WireError as exc:
            self.drop()
            raise RemotePolicyError(f"remote backend: {self.uri} sent a bad frame: {exc}") from None

    # ---- the backend contract --------------------------------------------------------------
    def reset(self, instruction: str, seed: int | None = None, task: str = "") -> None:
        self.episode = {self.keys.prompt: instruction, "seed": seed, "task": task}
        if self.ws is None:
            try:
                self.ensure_connected()   # replays the reset itself
            except RemotePolicyError:
                pass                      # the next predict tries again and names the failure
            return
        if self.extension("reset"):
            self.exchange({"__reset__": True, **self.episode})

    def predict(self, obs: PolicyInput, prefix: np.ndarray | None = None) -> PolicyOutput:
        t0 = time.perf_counter()
        message = self.keys.to_message(obs if self.uses_privileged_state else
                                       PolicyInput(obs.stamp, obs.instruction, obs.images, obs.state))
        if prefix is not None and len(prefix) and self.extension("prefix"):
            message["prefix"] = np.asarray(prefix, dtype=np.float32)
        if self.decode_imagined and self.extension("imagined"):
            message["decode_imagined"] = True
        t1 = time.perf_counter()
        answer = self.exchange(message)
        t2 = time.perf_counter()
        self.round_trips += 1
        actions = np.asarray(answer.get("actions", np.zeros((0,))), dtype=np.float64)
        if actions.ndim != 2 or actions.shape[1] != self.dim or not len(actions) or not np.all(np.isfinite(actions)):
            raise RemotePolicyError(f"remote backend: {self.uri}: key 'actions': expected finite (horizon, "
                                    f"{self.dim}), got {actions.shape}")
        normalized = answer.get("actions_normalized")
        normalized = self.normalizer.normalize(actions) if normalized is None else np.asarray(normalized, np.float64)
        imagined = answer.get("imagined") or None
        timing = answer.get("server_timing", {})
        timings = {"preprocess_ms": (t1 - t0) * 1e3, "inference_ms": (t2 - t1) * 1e3,
                   "postprocess_ms": (time.perf_counter() - t2) * 1e3,
                   "server_infer_ms": float(timing.get("infer_ms", float("nan")))}
        return PolicyOutput(normalized, actions, imagined, timings)

    def update(self, executed_actions: np.ndarray, obs: PolicyInput | None = None) -> None:
        if not self.metadata.get("stateful") or not self.extension("update") or self.ws is None:
            return
        message = {"__update__": True, "executed_actions": np.asarray(executed_actions, dtype=np.float32)}
        if obs is not None:
            message.update(self.keys.to_message(obs))
        self.exchange(message)

    @property
    def future_offsets(self) -> list[int]:
        return list(self.metadata.get("future_offsets", []))

    @property
    def chunk_length(self) -> int:
        """The served backend's chunk length as its server announced it (openpi servers: the robot file's)."""
        return int(self.metadata.get("horizon", self.embodiment.config.action.horizon))

    def describe(self) -> dict:
        return {"backend": self.name, "parameters": 0, "checkpoint": None, "training": {},
                "server": self.uri, "served_backend": self.metadata.get("backend", "unknown")}

    def close(self) -> None:
        self.drop()


Policy = RemoteBackend
