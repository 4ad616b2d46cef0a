"""`vla-bench async-grounding`: LingBot-VA's asynchronous inference, the paper's comparison at our
scale: synchronous control vs naive asynchronous (the next chunk predicted from the stale
observation) vs FDM-grounded asynchronous (the outcome of the in-flight actions imagined first),
through the full graph with the simulator running free (sim time advances on its own, so the robot
really waits in sync and really moves on while the policy thinks in async). Same checkpoint, tasks
and seeds for every arm; success with its Wilson interval, progress score, completion time (sim s)
paired over episodes both arms solve, measured chunk delay. Written to
artifacts/bench/async_grounding.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

ARMS = {
    "sync": {"mode": "sync", "policy": {"async_grounding": "none"}},
    "async_naive": {"mode": "async", "merge": "replace", "policy": {"async_grounding": "none"}},
    "async_fdm": {"mode": "async", "merge": "replace", "policy": {"async_grounding": "fdm"}},
}


def build_argparser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(prog="vla-bench async-grounding", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="checkpoints/lingbot_va_metaworld")
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--tasks", default="button-press,drawer-open,door-open,window-open,plate-slide")
    p.add_argument("--seeds", default="100,101")
    p.add_argument("--max-steps", type=int, default=500,
                   help="MetaWorld's own episode limit (its environments truncate at 500 steps); sync spends much "
                        "of it waiting")
    p.add_argument("--episode-timeout-s", type=float, default=200.0, help="wall-clock bound of an episode")
    p.add_argument("--real-time-factor", type=float, default=0.25,
                   help="requested free-running speed; the simulator runs slower when rendering cannot keep up "
                        "(the delay is measured in sim time either way)")
    p.add_argument("--out", default="artifacts/bench/async_grounding.json")
    return p


def run(args) -> int:
    from ..evaluation.reports import markdown_table
    from ..models.checkpoint import resolve_checkpoint
    from .executor import paired_completion_ratio, run_mode
    from .leaderboard import wilson_interval

    args.tasks = args.tasks.split(",")
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.checkpoint = str(resolve_checkpoint(args.checkpoint))
    args.backend = "lingbot_va"
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    protocol = {"tasks": args.tasks, "seeds": args.seeds, "max_steps": args.max_steps,
                "requested_real_time_factor": args.real_time_factor, "checkpoint": args.checkpoint,
                "time": "free-running sim time"}
    results = {"protocol": protocol, "arms": {}}
    if out.is_file():                  # arms of an earlier run on the same protocol are kept (--arms reruns some)
        earlier = json.loads(out.read_text())
        if earlier.get("protocol") == protocol:
            results["arms"] = {k: v for k, v in earlier.get("arms", {}).items() if k in ARMS}
    for name in args.arms.split(","):
        results["arms"][name] = run_mode(name, ARMS[name], args, out.parent / "async_grounding_runs" / name)
        print(name, json.dumps({k: v for k, v in results["arms"][name].items() if k != "episodes"}))
        out.write_text(json.dumps(results, indent=2))
    rows = []
    arms = {k: results["arms"][k] for k in ARMS if k in results["arms"]}
    for name, r in arms.items():
        if "error" in r:
            rows.append({"arm": name, "success": f"error: {r['error']}"})
            continue
        eps = r["episodes"]
        wins = sum(e["success"] for e in eps)
        lo, hi = wilson_interval(wins, len(eps))
        ratio = paired_completion_ratio(arms, name) if "sync" in arms and "error" not in arms["sync"] else None
        row = {"arm": name, "success": f"{wins}/{len(eps)} = {wins / len(eps):.2f}", "95% CI": f"[{lo:.2f}, {hi:.2f}]",
               "progress": f"{np.mean([e['progress_score'] or 0.0 for e in eps]):.2f}",
               "completion time (sim s, mean)": f"{r['mean_completion_time_s']:.2f}",
               "completion vs sync (paired)": "-" if ratio is None else f"{ratio:.2f}",
               "chunk delay p50 / p95 (sim ms)": "/".join(f"{1e3 * r['latency_s'].get(k, 0.0):.0f}"
                                                          for k in ("p50", "p95")),
               "starved ticks": r["starved_ticks"], "commands outside limits": r["gate"]["outside_limits"]}
        r["summary"] = row
        rows.append(row)
    out.write_text(json.dumps(results, indent=2))
    md = out.with_suffix(".md")
    md.write_text(f"# LingBot-VA: sync vs naive async vs FDM-grounded async (free-running)\n\n"
                  f"{len(args.tasks)} tasks x seeds {args.seeds}, requested real-time factor {args.real_time_factor}\n\n"
                  + "\n".join(markdown_table(rows)) + "\n")
    print(md.read_text())
    print(f"bench: wrote {out} and {md}")
    return 0
