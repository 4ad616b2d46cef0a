"""`vla-bench policy-node`: what the policy node adds to a model's own time per chunk.

For each checkpoint: the sim_demo graph in lockstep (the simulator waits, so nothing else runs
while the policy thinks), every chunk's wall-clock round trip as the executor sees it (request
sent to chunk received: both transports, waiting for the observation, decoding, inference,
publishing), then the bare `predict` of the same backend on the same recorded observations, in
one process, on its main thread, with the torch threads the node's inference thread uses. The
ratio in-graph / bare is the node's overhead (target <= 1.15).
`--policy-env KEY=VALUE` sets the policy process's environment in place of the graph's (e.g.
MKL_NUM_THREADS=2 to measure the node without its thread settings). Writes
artifacts/bench/policy_node.json.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

TARGET_RATIO = 1.15
ROWS = {"vita": "checkpoints/vita_metaworld", "bc": "checkpoints/bc_metaworld",
        "videovla": "checkpoints/videovla_metaworld"}


def build_argparser(p) -> None:
    p.add_argument("--rows", nargs="+", default=list(ROWS), help=f"checkpoints to measure ({', '.join(ROWS)})")
    p.add_argument("--tasks", nargs="+", default=["button-press", "drawer-open"])
    p.add_argument("--seeds", type=int, nargs="+", default=[200])
    p.add_argument("--max-steps", type=int, default=80)
    p.add_argument("--warmup", type=int, default=3, help="first chunks of each measurement left out")
    p.add_argument("--policy-env", nargs="*", default=None, metavar="KEY=VALUE",
                   help="the policy process's environment instead of the graph's")
    p.add_argument("--out", type=Path, default=Path("artifacts/bench"))


def percentiles(values) -> dict:
    v = np.asarray(values, dtype=np.float64)
    return {"p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95)), "n": int(len(v))} if len(v) \
        else {"p50": None, "p95": None, "n": 0}


def graph_with_policy_env(env: dict, folder: Path) -> Path:
    """A copy of sim_demo whose policy node has environment `env`."""
    from ..graph import graph_path

    raw = yaml.safe_load(graph_path("sim_demo").read_text())
    for node in raw["nodes"]:
        if node["executable"] == "vla_policy":
            node["env"] = env
    path = folder / "sim_demo_policy_env.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def recorded_requests(bags: Path) -> list[tuple[str, int, list]]:
    """Per episode (instruction, seed, observations the chunks were computed from, in order)."""
    from ..data.bags import read_bag

    out = []
    for bag in sorted(p for p in bags.iterdir() if p.is_dir()):
        observations, answered = {}, []
        for topic, _, _, msg in read_bag(bag, topics=["/vla/observation", "/vla/action_chunk"]):
            if topic == "/vla/observation":
                observations[int(msg.seq)] = msg
            else:
                answered.append(int(msg.obs_seq))
        obs = [observations[s] for s in answered if s in observations]
        if obs:
            out.append((obs[0].instruction, int(bag.name.rsplit("_s", 1)[-1]), obs))
    return out


def bare_predict_ms(backend_name: str, checkpoint: str, episodes: list, warmup: int) -> tuple[list[float], int]:
    """The backend's predict time on the recorded observations, this process's main thread, with
    the torch threads the policy node gives its inference thread by default; and that number."""
    from ..core.embodiment import load_robot
    from ..models.inference_threads import use_this_thread
    from ..models.registry import make_backend
    from ..nodes.policy import GRAPH_RESERVED_CPUS, observation_to_input

    backend = make_backend(backend_name, load_robot("metaworld_sawyer"), checkpoint=checkpoint)
    threads = use_this_thread(0, reserve=GRAPH_RESERVED_CPUS)
    times = []
    try:
        for instruction, seed, observations in episodes:
            backend.reset(instruction, seed=seed)
            for k, obs in enumerate(observations):
                inputs = observation_to_input(obs, instruction, backend.uses_privileged_state)
                start = time.perf_counter()
                backend.predict(inputs)
                if k >= warmup:
                    times.append((time.perf_counter() - start) * 1e3)
    finally:
        backend.close()
    return times, threads


def measure(row: str, args) -> dict:
    from ..graph_runner import run_graph

    out = args.out / "policy_node" / row
    stats_file = out / "executor_stats.json"
    overrides = {"policy": {"backend": row, "checkpoint": ROWS[row], "decode_imagined": "false"},
                 "executor": {"stats_file": str(stats_file)},
                 "evaluator": {"tasks": "[" + ",".join(args.tasks) + "]", "seeds": "[" + ",".join(map(str, args.seeds)) + "]",
                               "max_steps": str(args.max_steps), "output_dir": str(out), "record": "true",
                               "training_seeds": "allow", "record_topics": "[/vla/observation,/vla/action_chunk]"}}
    with tempfile.TemporaryDirectory() as tmp:
        graph = "sim_demo"
        if args.policy_env is not None:
            graph = str(graph_with_policy_env(dict(kv.split("=", 1) for kv in args.policy_env), Path(tmp)))
        result = run_graph(graph, overrides, out / "logs", timeout_s=3600)
    if result["error"]:
        raise RuntimeError(f"policy-node {row}: graph failed: {result['error']} (logs in {out / 'logs'})")
    trips = json.loads(stats_file.read_text())["chunk_round_trip_ms"]
    episodes = recorded_requests(out / "bags")
    bare, threads = bare_predict_ms(row, ROWS[row], episodes, args.warmup)
    in_graph = percentiles(trips[args.warmup:])
    alone = percentiles(bare)
    return {"checkpoint": ROWS[row], "in_graph_round_trip_ms": in_graph, "bare_predict_ms": alone,
            "ratio_p50": in_graph["p50"] / alone["p50"], "ratio_p95": in_graph["p95"] / alone["p95"],
            "torch_threads": threads, "policy_env": args.policy_env, "target_ratio": TARGET_RATIO}


def run(args) -> int:
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    figures = {row: measure(row, args) for row in args.rows}
    args.out.mkdir(parents=True, exist_ok=True)
    name = "policy_node.json" if args.policy_env is None else "policy_node_env.json"
    path = args.out / name
    path.write_text(json.dumps(figures, indent=2))
    for row, f in figures.items():
        print(f"policy-node {row}: in-graph {f['in_graph_round_trip_ms']['p50']:.1f} / "
              f"{f['in_graph_round_trip_ms']['p95']:.1f} ms, bare {f['bare_predict_ms']['p50']:.1f} / "
              f"{f['bare_predict_ms']['p95']:.1f} ms (p50 / p95): ratio {f['ratio_p50']:.2f} / {f['ratio_p95']:.2f}")
    print(f"bench: wrote {path}")
    return 0
