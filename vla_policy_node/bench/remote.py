"""What serving the model core in another process costs: the same checkpoint predicting in-process
and behind `vla-serve` (openpi's websocket protocol, loopback), per chunk, at a given image size.

The added latency per chunk is the client's round trip minus the server's own inference time
(serialization, the socket, deserialization, the other process's scheduling); the totals of both
paths are reported beside it. Writes artifacts/bench/remote.json.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ..models.observation_keys import ObservationKeys
from ..models.wire import pack

TARGET_ADDED_P50_MS = 5.0


def build_argparser(parser) -> None:
    parser.add_argument("--checkpoint", default="checkpoints/bc_metaworld")
    parser.add_argument("--robot", default="metaworld_sawyer")
    parser.add_argument("--image-size", type=int, default=224, help="square camera images sent per chunk (pixels)")
    parser.add_argument("--chunks", type=int, default=100, help="timed chunks per path")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench"))


def percentiles(values_ms: list[float]) -> dict:
    v = np.asarray(values_ms)
    return {"p50": round(float(np.percentile(v, 50)), 3), "p95": round(float(np.percentile(v, 95)), 3),
            "max": round(float(v.max()), 3), "n": int(len(v))}


def observations(embodiment, size: int, n: int, seed: int = 0) -> list:
    from ..models.backend import PolicyInput

    rng = np.random.default_rng(seed)
    cfg = embodiment.config
    return [PolicyInput(stamp=0.05 * i, instruction="press the button",
                        images={c.name: rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for c in cfg.cameras},
                        state=rng.normal(size=len(cfg.state.names))) for i in range(n)]


def time_predictions(backend, obs: list, warmup: int) -> tuple[list[float], list[dict]]:
    backend.reset("press the button", 0)
    for o in obs[:warmup]:
        backend.predict(o)
    times, timings = [], []
    for o in obs[warmup:]:
        start = time.perf_counter()
        out = backend.predict(o)
        times.append((time.perf_counter() - start) * 1e3)
        timings.append(out.timings_ms)
    return times, timings


def start_server(checkpoint: str, robot: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-m", "vla_policy_node.serving.server", "--checkpoint", checkpoint,
                             "--robot", robot, "--host", "127.0.0.1", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    banner = proc.stdout.readline()
    match = re.search(r"ws://127\.0\.0\.1:(\d+)", banner)
    if not match:
        proc.kill()
        raise RuntimeError(f"vla-serve did not start: {banner!r}")
    return proc, int(match[1])


def run(args) -> int:
    from ..core.embodiment import load_robot
    from ..models.registry import make_backend

    embodiment = load_robot(args.robot)
    obs = observations(embodiment, args.image_size, args.warmup + args.chunks)
    local = make_backend("auto", embodiment, checkpoint=args.checkpoint)
    local_ms, _ = time_predictions(local, obs, args.warmup)
    local.close()
    proc, port = start_server(args.checkpoint, args.robot)
    try:
        remote = make_backend("remote", embodiment, server=f"ws://127.0.0.1:{port}", timeout_s=30.0)
        remote_ms, timings = time_predictions(remote, obs, args.warmup)
        remote.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    added = [t["inference_ms"] - t["server_infer_ms"] for t in timings]
    figures = {
        "checkpoint": args.checkpoint, "robot": args.robot, "image_size": args.image_size,
        "cameras": len(embodiment.config.cameras),
        "request_bytes": len(pack(ObservationKeys().to_message(obs[0]))),
        "in_process_ms": percentiles(local_ms), "remote_ms": percentiles(remote_ms),
        "server_infer_ms": percentiles([t["server_infer_ms"] for t in timings]),
        "added_ms": percentiles(added),
        "added_p50_of_totals_ms": round(float(np.percentile(remote_ms, 50) - np.percentile(local_ms, 50)), 3),
        "target_added_p50_ms": TARGET_ADDED_P50_MS,
    }
    figures["meets_target"] = figures["added_ms"]["p50"] <= TARGET_ADDED_P50_MS
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "remote.json"
    path.write_text(json.dumps(figures, indent=2))
    print(f"remote: added {figures['added_ms']['p50']:.2f} ms p50 / {figures['added_ms']['p95']:.2f} ms p95 per "
          f"chunk ({figures['request_bytes'] / 1024:.0f} KiB requests); in-process {figures['in_process_ms']['p50']:.1f}"
          f" ms, remote {figures['remote_ms']['p50']:.1f} ms p50; wrote {path}")
    return 0
