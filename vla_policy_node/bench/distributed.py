"""Closed-loop evaluation on Ray against the same episodes run locally: equality and scaling.

The same episodes (a backend on tasks x seeds, lockstep) run once through one local graph, then on
a local Ray instance with each worker count asked for. Reported per run: wall time, speed-up over
the local run, Ray's start-up, the per-episode overhead of the Ray path (a graph started and stopped
per episode, the folder archived and sent back), and whether every episode equals the local run's
(success, steps, progress, each recorded command). Writes artifacts/bench/distributed.json.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from ..evaluation.distributed import (ClosedLoopJob, RayOptions, compare_runs, run_local, run_on_ray,
                                      set_run_parameters)


def build_argparser(parser) -> None:
    parser.add_argument("--backend", default="videovla")
    parser.add_argument("--checkpoint", default="checkpoints/videovla_metaworld")
    parser.add_argument("--tasks", default="button-press,drawer-open,door-open,window-open,plate-slide")
    parser.add_argument("--seeds", default="100,101")
    parser.add_argument("--workers", default="1,2", help="Ray worker counts to run (comma-separated)")
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench"))


def run(args) -> int:
    overrides = set_run_parameters({}, args.backend, args.checkpoint, lockstep=True, max_steps=args.max_steps)
    job = ClosedLoopJob("sim_demo", args.tasks.split(","), [int(s) for s in args.seeds.split(",")],
                        overrides=overrides)
    scratch = args.out / "distributed"
    if scratch.exists():
        shutil.rmtree(scratch)
    started = time.monotonic()
    local = run_local(job, scratch / "local")
    local_s = time.monotonic() - started
    if local["error"]:
        raise SystemExit(f"vla-bench distributed: the local run failed: {local['error']}")
    print(f"local: {len(job.episodes)} episodes in {local_s:.0f} s")
    runs = []
    for workers in [int(w) for w in args.workers.split(",")]:
        out = scratch / f"ray_{workers}"
        section = run_on_ray(job, out, RayOptions(workers=workers), progress=False)["distributed"]
        equal = compare_runs(scratch / "local", out, "metaworld_sawyer")
        runs.append({"workers": workers, "wall_time_s": section["wall_time_s"],
                     "speedup_vs_local": round(local_s / section["wall_time_s"], 3),
                     "ray_start_s": section["ray_start_s"], "overhead_per_episode_s": section["overhead_per_episode_s"],
                     "completed": section["completed"], "retried": section["retried"], "failed": section["failed"],
                     "equal_to_local": equal["equal"], "differences": equal["differences"]})
        print(f"ray, {workers} workers: {section['wall_time_s']:.0f} s ({runs[-1]['speedup_vs_local']:.2f}x local), "
              f"overhead per episode {section['overhead_per_episode_s']['mean']} s, equal to local: {equal['equal']}")
    report = json.loads((scratch / "local" / "report.json").read_text())
    result = {"backend": args.backend, "checkpoint": args.checkpoint, "tasks": job.tasks, "seeds": job.seeds,
              "episodes": len(job.episodes), "cores": os.cpu_count(), "lockstep": True,
              "local": {"wall_time_s": round(local_s, 2), "successes": report["summary"]["successes"]},
              "ray": runs,
              "note": "one machine: every graph (simulator, model, five more nodes) shares the same cores, so "
                      "more workers than cores cannot be faster; the figures show the Ray path's cost"}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "distributed.json").write_text(json.dumps(result, indent=2))
    print(f"bench: wrote {args.out / 'distributed.json'}")
    return 0 if all(r["equal_to_local"] and not r["failed"] for r in runs) else 1
