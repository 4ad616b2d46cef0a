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
200. One backend, one inference at a time (requests from several clients queue).
"""

from __future__ import annotations

import argparse
import http
import logging
import sys
import threading
import time

import numpy as np

from ..models.backend import PolicyBackend
from ..models.observation_keys import ObservationKeys
from ..models.wire import WireError, pack, unpack

EXTENSIONS = ["reset", "update", "prefix", "imagined"]
log = logging.getLogger("vla-serve")


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
                "horizon": int(cfg.action.horizon), "dt": float(cfg.action.dt),
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
        self.backend.decode_imagined = bool(message.get("decode_imagined", False))
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
    """A PolicyService on a websocket port (websockets' threaded server: one thread per client)."""

    def __init__(self, service: PolicyService, host: str = "0.0.0.0", port: int = 8000):
        from websockets.sync.server import serve

        self.service = service
        self.server = serve(self.session, host, port, compression=None, max_size=None,
                            process_request=self.health)
        self.port = self.server.socket.getsockname()[1]
        self.thread: threading.Thread | None = None

    @staticmethod
    def health(connection, request):
        if request.path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "OK\n")
        return None

    def session(self, ws) -> None:
        from websockets.exceptions import ConnectionClosed

        peer = ws.remote_address
        log.info("client %s connected", peer)
        try:
            ws.send(pack(self.service.metadata()))
            for frame in ws:
                try:
                    answer = pack(self.service.handle(unpack(frame)))
                except Exception as exc:  # noqa: BLE001 - any failure is sent to the client, named
                    log.error("client %s: %s", peer, exc)
                    ws.send(f"{type(exc).__name__}: {exc}")
                    ws.close(1011, "request failed")
                    return
                ws.send(answer)
        except ConnectionClosed:
            pass
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
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8000, help="0: any free port (printed)")
    parser.add_argument("--device", default="", help="torch device (learned backends): cpu, cuda, mps")
    parser.add_argument("--dtype", default="", help="float32, bfloat16, float16 (learned backends)")
    parser.add_argument("--image-keys", default="", help="CAMERA=KEY,... (default observation/images/<camera>)")
    parser.add_argument("--state-key", default="", help="default observation/state")
    parser.add_argument("--prompt-key", default="", help="default prompt")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    from ..core.embodiment import EmbodimentConfigError, load_robot
    from ..models.registry import backend_class, make_backend

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] [%(name)s] %(message)s")
    try:
        embodiment = load_robot(args.robot)
        keys = ObservationKeys.parse(args.image_keys, args.state_key, args.prompt_key)
        options = {"checkpoint": args.checkpoint, "device": args.device, "dtype": args.dtype}
        name = args.backend
        if name == "auto":
            from ..models.checkpoint import read_config
            name = read_config(args.checkpoint)["backend"]
        declared = backend_class(name).options
        backend = make_backend(name, embodiment, **{k: v for k, v in options.items() if v and k in declared})
    except (EmbodimentConfigError, FileNotFoundError, KeyError, ValueError, OSError, RuntimeError) as exc:
        print(f"vla-serve: {exc}", file=sys.stderr)
        return 2
    try:
        server = PolicyServer(PolicyService(backend, embodiment, keys), args.host, args.port)
    except OSError as exc:
        print(f"vla-serve: --host {args.host} --port {args.port}: {exc}", file=sys.stderr)
        return 2
    print(f"vla-serve: {backend.name} for {embodiment.name} on ws://{args.host}:{server.port}", flush=True)
    try:
        server.server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
