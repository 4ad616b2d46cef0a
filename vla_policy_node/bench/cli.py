"""`vla-bench`: benchmarks, each writing JSON (and markdown) under artifacts/bench/.

    vla-bench policies [--rows NAME ...] [--force] [--ray [ADDRESS]]   the policy leaderboard (policies.json / .md)
    vla-bench latency [--only CELL ...] [--delays D ...]   success against inference delay (latency.json / .md / .png)
    vla-bench imagination [--only ARM ...]            perturbed episodes: detection and success (imagination.json / .md)
    vla-bench policy [--checkpoint DIR] ...           one checkpoint: latency, imagination, success vs steps
    vla-bench executor [--modes ...] ...              execution modes free-running, control-loop jitter
    vla-bench faults [--cases NAME ...]               fault injection through the graph (faults.json / .md)
    vla-bench soak [--sim-minutes 30]                 the learned policy for a long run with random faults
    vla-bench remote [--checkpoint DIR]               the model core behind vla-serve vs in-process (remote.json)
    vla-bench policy-node [--rows vita bc videovla]   the policy node's round trip vs bare predict (policy_node.json)
    vla-bench distributed [--workers 1,2]             closed loop on Ray vs local: equality, scaling
    vla-bench kv-cache [--checkpoint DIR]             LingBot-VA: latency with the KV cache vs recomputing history
    vla-bench async-grounding [--checkpoint DIR]      LingBot-VA free-running: sync vs naive async vs FDM-grounded
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
    from . import (async_grounding, distributed, executor, faults, imagination, kv_cache, latency, policy,
                   policy_node, remote, soak)

    parser = argparse.ArgumentParser(prog="vla-bench", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    board = commands.add_parser("policies", help="every backend on the leaderboard protocol")
    board.add_argument("--config", type=Path, help="leaderboard description (default config/bench/policies.yaml)")
    board.add_argument("--out", type=Path, default=Path("artifacts/bench"))
    board.add_argument("--rows", nargs="+", help="run only these rows (others are read from the cache)")
    board.add_argument("--force", action="store_true", help="rerun the selected rows even when cached")
    board.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                       help="run each row's episodes on Ray (a local instance, or the cluster at ADDRESS)")
    board.add_argument("--workers", type=int, default=2, help="graphs running at once on Ray (default 2)")
    board.add_argument("--cpus-per-graph", type=float, default=1.0, help="Ray CPUs each graph holds")
    board.add_argument("--gpus-per-graph", type=float, default=0.0, help="Ray GPUs each graph holds")
    latency.build_argparser(commands.add_parser("latency", help="success against inference delay, per remedy"))
    imagination.build_argparser(commands.add_parser("imagination", help="perturbed episodes: detection, success"))
    policy.build_argparser(commands.add_parser("policy", help="one checkpoint's latency and imagination"))
    executor.build_argparser(commands.add_parser("executor", help="execution modes and control-loop jitter"))
    faults.build_argparser(commands.add_parser("faults", help="fault injection through the graph"))
    soak.build_argparser(commands.add_parser("soak", help="long run with random faults: leaks and drift"))
    remote.build_argparser(commands.add_parser("remote", help="added latency of a policy behind vla-serve"))
    policy_node.build_argparser(commands.add_parser("policy-node", help="the policy node's overhead per chunk"))
    distributed.build_argparser(commands.add_parser("distributed", help="closed loop on Ray vs local"))
    kv_cache.build_argparser(commands.add_parser("kv-cache", help="KV cache vs recomputing the history"))
    async_grounding.build_argparser(commands.add_parser("async-grounding",
                                                        help="sync vs naive async vs FDM-grounded async"))
    args = parser.parse_args(argv)
    if args.command == "latency":
        return latency.run(args)
    if args.command == "policy":
        return policy.run(args)
    if args.command == "imagination":
        return imagination.run(args)
    if args.command == "executor":
        return executor.run(args)
    if args.command == "faults":
        return faults.run(args)
    if args.command == "soak":
        return soak.run(args)
    if args.command == "remote":
        return remote.run(args)
    if args.command == "policy-node":
        return policy_node.run(args)
    if args.command == "distributed":
        return distributed.run(args)
    if args.command == "kv-cache":
        return kv_cache.run(args)
    if args.command == "async-grounding":
        return async_grounding.run(args)
    from .leaderboard import Leaderboard, run_leaderboard
    try:
        leaderboard = Leaderboard.load(args.config)
    except ValueError as exc:
        print(f"vla-bench: {exc}", file=sys.stderr)
        return 2
    ray = None
    if args.ray:
        from ..evaluation.distributed import RayOptions
        ray = RayOptions(None if args.ray == "local" else args.ray, args.workers, args.cpus_per_graph,
                         args.gpus_per_graph)
    run_leaderboard(leaderboard, args.out, args.rows, args.force, ray=ray)
    print(f"bench: wrote {args.out / 'policies.json'} and {args.out / 'policies.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
