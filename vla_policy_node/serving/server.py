"""vla-serve: any policy backend served over openpi's websocket protocol (a GPU box serving a robot).

    vla-serve --backend videovla --checkpoint checkpoints/videovla_metaworld --robot metaworld_sawyer \
              --port 8000 --device cuda

A client (the `remote` backend, or openpi's `openpi_client.websocket_client_policy`) connects,
receives the metadata frame, then sends observation dicts and gets {"actions": (horizon, dim)
physical units, "actions_normalized", "server_timing": {"infer_ms", ...}}. Beside openpi's plain
inference, three keys of this project's clients (advertised in the metadata under
"extensions"): {"__reset__": true, "prompt", "seed", "task"} starts an episode,
{"__update__": true, "executed_actions", [observation]} feeds a stateful backend, and a "prefix"
((k, dim) model space) in an observation keeps a real-time-chunking prefix. GET /healthz answers
200 with the server's counters (JSON). One backend, one inference at a time (requests from several
clients queue).

Exposure: the server listens on loopback (127.0.0.1) unless `--host` says otherwise; a frame larger
than `--max-frame-mb` is refused from its header (before its payload is read), the connection closed
with 1009 and counted; with a token (`--token` or VLA_SERVE_TOKEN) a client must send
`Authorization: Bearer <token>` (or openpi's `Api-Key <token>`) on the websocket handshake, else it
is refused with HTTP 401 and counted. Reaching it from another machine: docs/security.md.
"""

from __future__ import annotations

import argparse
import hmac
import http
import json
import logging
import os
import sys
import threading
import time

import numpy as np

from ..models.backend import PolicyBackend
from ..models.inference_threads import prepare_process, use_this_thread
from ..models.observation_keys import ObservationKeys
from ..models.remote import TOKEN_ENV
from ..models.wire import WireError, pack, unpack

EXTENSIONS = ["reset", "update", "prefix", "imagined"]
# A fixed bound rather than one sized from the robot file: clients may send camera frames at their
# native resolution (a 1080p RGB frame is 5.9 MiB), so 16 MiB holds two of them with the state.
DEFAULT_MAX_FRAME_MB = 16.0
MAX_QUEUED_FRAMES = 2      # frames read ahead per client while one is answered (the protocol sends one)
log = logging.getLogger("vla-serve")


def authorized(header: str | None, token: str) -> bool:
    """Whether an Authorization header carries `token` ('Bearer <token>', or openpi's 'Api-Key
    <token>'); compared in constant time."""
    scheme, _, value = (header or "").strip().partition(" ")
    if scheme.lower() not in ("bearer", "api-key"):
        value = ""
    return hmac.compare_digest(value.strip().encode(), token.encode())


class PolicyService:
    """The protocol's messages answered by one backend (no network: `handle` maps a dict to a dict)."""

    def __init__(self, backend: PolicyBackend, embodiment, keys: ObservationKeys | None = None):
        self.backend, self.embodiment = backend, embodiment
        self.keys = keys or ObservationKeys()
        cfg = embodiment.config
        self.cameras = {c.name: c.required for c in cfg.cameras}   # name -> required
        self.state_dim = len(cfg.state.names)
        self.lock = threading.Lock()
        self.requests = 0

    def metadata(self) -> dict:
        cfg = self.embodiment.config
        return {"server": "vla_policy_node", "backend": self.backend.name, "robot": self.embodiment.name,
                "action_names": list(cfg.action.names), "action_space": cfg.action.space,
                "horizon": int(self.backend.chunk_length), "dt": float(cfg.action.dt),
                "cameras": {c: self.keys.image_key(c) for c in self.cameras}, "state_key": self.keys.state,
                "prompt_key": self.keys.prompt, "state_names": list(cfg.state.names),
                "uses_privileged_state": bool(self.backend.uses_privileged_state),
                "supports_prefix": bool(self.backend.supports_prefix), "stateful": bool(self.backend.stateful),
                "future_offsets": list(self.backend.future_offsets), "extensions": EXTENSIONS}

    def handle(self, message: dict) -> dict:
        """One client message -> the answer; WireError / ValueError name what was wrong."""
        with self.lock:
            self.requests += 1
            if message.get("__reset__"):
                self.backend.reset(str(message.get(self.keys.prompt, "")), message.get("seed"),
                                   str(message.get("task", "")))
                return {"reset": True}
            if message.get("__update__"):
                executed = np.asarray(message.get("executed_actions", np.zeros((0, 0))), dtype=np.float64)
                dim = len(self.embodiment.config.action.names)
                if executed.ndim != 2 or executed.shape[1] != dim:
                    raise WireError(f"key 'executed_actions': expected (n, {dim}), got {executed.shape}")
                obs = self.observation(message) if self.keys.state in message else None
                self.backend.update(executed, obs)
                return {"updated": int(len(executed))}
            return self.infer(message)

    def observation(self, message: dict):
        return self.keys.from_message(message, self.cameras, self.state_dim)

    def infer(self, message: dict) -> dict:
        obs = self.observation(message)
        prefix = message.get("prefix")
        if prefix is not None:
            prefix = np.asarray(prefix, dtype=np.float64)
            if prefix.ndim != 2 or prefix.shape[1] != len(self.embodiment.config.action.names):
                raise WireError(f"key 'prefix': expected (k, {len(self.embodiment.config.action.names)}), "
                                f"got {prefix.shape}")
        self.backend.set_decode_imagined(bool(message.get("decode_imagined", False)))
        start = time.perf_counter()
        out = self.backend.predict(obs, prefix=prefix)
        infer_ms = (time.perf_counter() - start) * 1e3
        answer = {"actions": np.asarray(out.actions, dtype=np.float32),
                  "actions_normalized": np.asarray(out.actions_normalized, dtype=np.float32),
                  "server_timing": {"infer_ms": infer_ms, **{k: float(v) for k, v in out.timings_ms.items()}}}
        if out.imagined_frames:
            answer["imagined"] = {camera: np.asarray(f, dtype=np.uint8) for camera, f in out.imagined_frames.items()}
        return answer


class PolicyServer:
    """A PolicyService on a websocket port (websockets' threaded server: one thread per client).

    `max_frame_bytes` bounds one client frame (larger ones are refused and counted in
    `stats["oversized_frames"]`); with a `token`, a handshake without it is refused (HTTP 401,
    `stats["unauthorized"]`). GET /healthz needs no token: it answers the counters."""

    def __init__(self, service: PolicyService, host: str = "127.0.0.1", port: int = 8000,
                 max_frame_bytes: int = int(DEFAULT_MAX_FRAME_MB * 2**20), token: str = "", torch_threads: int = 0):
        from websockets.sync.server import serve

        if max_frame_bytes <= 0:
            raise ValueError(f"max_frame_bytes: must be > 0, got {max_frame_bytes}")
        self.service, self.token, self.max_frame_bytes = service, token, int(max_frame_bytes)
        self.torch_threads = int(torch_threads)      # intra-op threads of each client's thread (0: one per CPU)
        self.stats = {"clients": 0, "connections": 0, "unauthorized": 0, "oversized_frames": 0,
                      "failed_requests": 0}
        self.stats_lock = threading.Lock()
        self.server = serve(self.session, host, port, compression=None, max_size=self.max_frame_bytes,
                            max_queue=MAX_QUEUED_FRAMES, process_request=self.admit)
        self.port = self.server.socket.getsockname()[1]
        self.thread: threading.Thread | None = None

    def count(self, key: str, step: int = 1) -> None:
        with self.stats_lock:
            self.stats[key] += step

    def health(self) -> dict:
        with self.stats_lock:
            return {"status": "ok", "requests": self.service.requests, "max_frame_bytes": self.max_frame_bytes,
                    "token_required": bool(self.token), **self.stats}

    def admit(self, connection, request):
        """The handshake: /healthz answered, a client without the token refused; None lets it in."""
        if request.path == "/healthz":
            response = connection.respond(http.HTTPStatus.OK, json.dumps(self.health()) + "\n")
            del response.headers["Content-Type"]
            response.headers["Content-Type"] = "application/json"
            return response
        if self.token and not authorized(request.headers.get("Authorization"), self.token):
            self.count("unauthorized")
            log.warning("client %s refused: missing or wrong token", connection.remote_address)
            return connection.respond(http.HTTPStatus.UNAUTHORIZED,
                                      "vla-serve: missing or wrong token: send 'Authorization: Bearer <token>' "
                                      f"(the server's --token / {TOKEN_ENV})\n")
        return None

    def session(self, ws) -> None:
        from websockets.exceptions import ConnectionClosed
        from websockets.frames import CloseCode

        peer = ws.remote_address
        use_this_thread(self.torch_threads)          # this client's thread runs the model
        log.info("client %s connected", peer)
        self.count("connections")
        self.count("clients")
        try:
            ws.send(pack(self.service.metadata()))
            for frame in ws:
                try:
                    answer = pack(self.service.handle(unpack(frame)))
                except Exception as exc:  # noqa: BLE001 - any failure is sent to the client, named
                    log.error("client %s: %s", peer, exc)
                    self.count("failed_requests")
                    ws.send(f"{type(exc).__name__}: {exc}")
                    ws.close(1011, "request failed")
                    return
                ws.send(answer)
        except ConnectionClosed as exc:
            if exc.sent is not None and exc.sent.code == CloseCode.MESSAGE_TOO_BIG:
                self.count("oversized_frames")
                log.warning("client %s: frame over %d bytes refused (--max-frame-mb)", peer, self.max_frame_bytes)
        finally:
            self.count("clients", -1)
        log.info("client %s disconnected", peer)

    def start(self) -> "PolicyServer":
        self.thread = threading.Thread(target=self.server.serve_forever, name="vla-serve", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        if self.thread is not None:
            self.thread.join(timeout=5.0)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vla-serve", description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="auto", help="registry name, or auto (read from --checkpoint)")
    parser.add_argument("--checkpoint", default="", help="checkpoint directory (learned backends)")
    parser.add_argument("--robot", required=True, help="robot file name or path (config/robots/)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default loopback; another machine: docs/security.md)")
    parser.add_argument("--port", type=int, default=8000, help="0: any free port (printed)")
    parser.add_argument("--device", default="", help="torch device (learned backends): cpu, cuda, mps")
    parser.add_argument("--dtype", default="", help="float32, bfloat16, float16 (learned backends)")
    parser.add_argument("--torch-threads", type=int, default=0,
                        help="intra-op CPU threads of the thread serving a client (0: one per CPU); MKL runs "
                             "single-threaded unless MKL_NUM_THREADS says otherwise")
    parser.add_argument("--image-keys", default="", help="CAMERA=KEY,... (default observation/images/<camera>)")
    parser.add_argument("--state-key", default="", help="default observation/state")
    parser.add_argument("--prompt-key", default="", help="default prompt")
    parser.add_argument("--max-frame-mb", type=float, default=DEFAULT_MAX_FRAME_MB,
                        help="largest client frame (MiB); larger ones are refused and counted in /healthz")
    parser.add_argument("--token", default="",
                        help=f"shared token clients send as 'Authorization: Bearer <token>' (default: the "
                             f"{TOKEN_ENV} environment variable, which keeps it out of the process list)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    from ..core.embodiment import EmbodimentConfigError, load_robot
    from ..models.registry import make_backend

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] [%(name)s] %(message)s")
    if not args.max_frame_mb > 0:
        print(f"vla-serve: --max-frame-mb {args.max_frame_mb}: must be > 0", file=sys.stderr)
        return 2
    token = args.token or os.environ.get(TOKEN_ENV, "")
    if args.torch_threads < 0:
        print(f"vla-serve: --torch-threads {args.torch_threads}: must be >= 0", file=sys.stderr)
        return 2
    prepare_process()                                # before the backend loads torch
    try:
        embodiment = load_robot(args.robot)
        keys = ObservationKeys.parse(args.image_keys, args.state_key, args.prompt_key)
        backend = make_backend(args.backend, embodiment, if_declared={"checkpoint": args.checkpoint,
                                                                      "device": args.device, "dtype": args.dtype})
    except (EmbodimentConfigError, FileNotFoundError, KeyError, ValueError, OSError, RuntimeError) as exc:
        print(f"vla-serve: {exc}", file=sys.stderr)
        return 2
    try:
        server = PolicyServer(PolicyService(backend, embodiment, keys), args.host, args.port,
                              int(args.max_frame_mb * 2**20), token, args.torch_threads)
    except OSError as exc:
        print(f"vla-serve: --host {args.host} --port {args.port}: {exc}", file=sys.stderr)
        return 2
    if not token and args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s without a token: anyone who reaches the port can use the model; set %s "
                    "and put TLS in front (docs/security.md)", args.host, TOKEN_ENV)
    print(f"vla-serve: {backend.name} for {embodiment.name} on ws://{args.host}:{server.port} "
          f"(frames up to {args.max_frame_mb:g} MiB, token {'required' if token else 'not required'})", flush=True)
    try:
        server.server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
