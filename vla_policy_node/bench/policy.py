"""`vla-bench policy`: one checkpoint's speed and imagination, written to artifacts/bench/policy.json.

- per-chunk inference latency p50/p95 on this machine for several denoising step counts
  (imagined-frame decoding off), on real recorded frames;
- imagined-frame PSNR / SSIM against the frames that really followed, per horizon step, next to
  the copy-current-frame baseline and the codec ceiling (offline evaluation on held-out episodes);
- closed-loop success rate vs denoising steps through the full graph (held-out seeds), unless
  --skip-closed-loop.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def latency(make, observations, steps_list: list[int], repeats: int) -> dict:
    """p50/p95 ms of predict() per denoising step count; make(steps) builds the backend."""
    out = {}
    for steps in steps_list:
        policy = make(steps)
        policy.reset(observations[0].instruction, seed=0)
        times = []
        for r in range(repeats + 2):
            t = time.perf_counter()
            policy.predict(observations[r % len(observations)])
            if r >= 2:                                    # warm-up excluded
                times.append((time.perf_counter() - t) * 1e3)
        out[str(steps)] = {"p50_ms": round(float(np.percentile(times, 50)), 1),
                           "p95_ms": round(float(np.percentile(times, 95)), 1), "n": len(times)}
        policy.close()
    return out


def closed_loop(backend: str, checkpoint: str, tasks: list, seeds: list, steps: int, out_dir: Path,
                max_steps: int) -> dict:
    from ..graph_runner import run_graph

    overrides = {"policy": {"backend": backend, "checkpoint": checkpoint, "num_inference_steps": str(steps)},
                 "evaluator": {"tasks": "[" + ",".join(tasks) + "]", "seeds": "[" + ",".join(map(str, seeds)) + "]",
                               "output_dir": str(out_dir), "record": "false", "max_steps": str(max_steps)}}
    result = run_graph("sim_demo", overrides, out_dir / "logs", timeout_s=3600)
    if result["error"]:
        return {"error": result["error"]}
    report = json.loads((out_dir / "report.json").read_text())
    return {"success_rate": report["summary"]["success_rate"], "episodes": report["summary"]["episodes"],
            "per_task": {t: v["success_rate"] for t, v in report["summary"]["per_task"].items()},
            "peak_rss_mb": {n: p["peak_rss_mb"] for n, p in result["processes"].items()},
            "wall_time_s": result["wall_time_s"]}


def build_argparser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(prog="vla-bench policy", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="checkpoints/videovla_metaworld")
    p.add_argument("--heldout", default="artifacts/demo", help="recorded held-out episodes (evaluator output)")
    p.add_argument("--robot", default="metaworld_sawyer")
    p.add_argument("--out", default="artifacts/bench/policy.json")
    p.add_argument("--steps", default="1,5,10,25")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--tasks", default="button-press,drawer-open,door-open,window-open,plate-slide")
    p.add_argument("--seeds", default="100,101")
    p.add_argument("--max-steps", type=int, default=300)
    p.add_argument("--skip-closed-loop", action="store_true")
    return p


def run(args) -> int:
    from ..core.embodiment import load_robot
    from ..data.dataset import load_dataset
    from ..evaluation.offline import OfflineEvalConfig, OpenLoopEvaluator, run_offline
    from ..models.checkpoint import read_config, resolve_checkpoint
    from ..models.registry import backend_class

    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    robot = load_robot(args.robot)
    checkpoint = str(resolve_checkpoint(args.checkpoint))
    backend = read_config(checkpoint)["backend"]
    cls = backend_class(backend)
    steps_list = [int(s) for s in args.steps.split(",")] if "num_inference_steps" in cls.options else [0]

    def make(steps: int):
        options = {"checkpoint": checkpoint}
        if "num_inference_steps" in cls.options:
            options["num_inference_steps"] = steps
        return cls(robot, **options)

    episodes = load_dataset(Path(args.heldout), robot, successful_only=False)[:5]
    observations = [OpenLoopEvaluator.observation(ep, k) for ep in episodes for k in (0, len(ep) // 2)]
    results = {"checkpoint": checkpoint, "backend": backend, "machine": {"cpus": os.cpu_count()},
               "latency_per_chunk": latency(make, observations, steps_list, args.repeats)}
    print(json.dumps(results["latency_per_chunk"]))
    offline = run_offline(OfflineEvalConfig(bags=[Path(args.heldout)], checkpoint=checkpoint, robot=args.robot,
                                            output=out_path.parent / "policy_offline", videos=0))
    if offline["summary"]:
        results["imagination"] = offline["summary"]["offline"]["frames"]
        results["action_l1"] = offline["summary"]["offline"]["actions"]["l1"]
        print(json.dumps(results["imagination"]))
    out_path.write_text(json.dumps(results, indent=2))
    if not args.skip_closed_loop:
        tasks, seeds = args.tasks.split(","), [int(s) for s in args.seeds.split(",")]
        results["success_vs_steps"] = {}
        for steps in steps_list:
            results["success_vs_steps"][str(steps)] = closed_loop(backend, checkpoint, tasks, seeds, steps,
                                                                  out_path.parent / "runs" / f"steps_{steps}",
                                                                  args.max_steps)
            print(steps, json.dumps(results["success_vs_steps"][str(steps)]))
            out_path.write_text(json.dumps(results, indent=2))
    out_path.write_text(json.dumps(results, indent=2, default=float))
    print(f"bench: wrote {out_path}")
    return 0
