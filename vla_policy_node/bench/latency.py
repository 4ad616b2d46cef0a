"""`vla-bench latency`: success against the inference delay, one line per execution mode or remedy.

Cells (config/bench/latency.yaml): a policy x a remedy (executor mode / merge / backend option, one
parameter set apart) x a delay d in control steps, each a set of episodes through the full graph in
lockstep with `executor.simulated_delay_steps: [d]` (deterministic: the chunk from step t runs
from t + d whatever the machine's speed). A cell holds success with its 95% Wilson interval, the
mean steps to success, the median chunk-boundary jerk ratio (max jerk where chunks meet / inside
chunks, per episode), starved ticks (steps the robot held for want of a chunk, after its first)
and the executor's measured delay. Free-running rows run the same graph on the wall clock at a
real-time factor; their measured delay picks the lockstep cell that should predict them. Writes
artifacts/bench/latency.json, latency.md and latency.png; cells are cached like leaderboard rows.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from ..core.embodiment import config_root, load_robot
from ..evaluation.reports import json_safe, markdown_table
from .leaderboard import Leaderboard, Row, row_key, run_closed_loop, wilson_interval


@dataclass
class Cell:
    name: str
    policy: str
    remedy: str
    delay: int | None                  # simulated delay (steps); None: free-running
    board: Leaderboard                 # protocol of this cell (its seeds, lockstep or not)
    row: Row
    real_time_factor: float | None = None


@dataclass
class LatencyBench:
    protocol: dict
    short_seeds: list
    delays: list
    remedies: dict
    policies: list
    free_running: list = field(default_factory=list)
    comparisons: list = field(default_factory=list)       # [remedy a, remedy b]: paired a - b

    @classmethod
    def load(cls, path: str | Path | None = None) -> "LatencyBench":
        path = Path(path) if path else config_root() / "bench" / "latency.yaml"
        try:
            data = yaml.safe_load(path.read_text())
            bench = cls(dict(data["protocol"]), list(data["short_seeds"]), [int(d) for d in data["delays"]],
                        dict(data["remedies"]), list(data["policies"]), list(data.get("free_running") or []),
                        [list(pair) for pair in data.get("comparisons") or []])
        except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a latency benchmark description: {exc}") from None
        for p in bench.policies:
            unknown = [r for r in p["remedies"] if r not in bench.remedies]
            if unknown:
                raise ValueError(f"{path}: policies: {p['name']}: remedies {unknown} not under 'remedies'")
            for key in ("name", "backend", "checkpoint"):
                if key not in p:
                    raise ValueError(f"{path}: policies: an entry lacks '{key}'")
        return bench

    def cells(self, delays: list[int] | None = None, short: bool = False) -> list[Cell]:
        """Every lockstep cell: each policy's remedies at every delay (full seeds at its full_delays
        unless `short`: then every cell on the short seeds)."""
        out = []
        for p in self.policies:
            for remedy in p["remedies"]:
                for d in delays or self.delays:
                    full = d in p.get("full_delays", []) and not short
                    protocol = dict(self.protocol, seeds=list(self.protocol["seeds"] if full else self.short_seeds))
                    settings = {**self.remedies[remedy], "executor.simulated_delay_steps": f"[{d}]",
                                "policy.decode_imagined": "false"}
                    name = f"{p['name']}-{remedy}-d{d}"
                    out.append(Cell(name, p["name"], remedy, d, Leaderboard(protocol, []),
                                    Row(name, p["backend"], p["checkpoint"], set=settings)))
        return out

    def free_running_cells(self) -> list[Cell]:
        out = []
        for p in self.free_running:
            rtf = float(p["real_time_factor"])
            protocol = dict(self.protocol, lockstep=False)
            settings = {**p.get("set", {}), "sim_bridge.real_time_factor": str(rtf),
                        "policy.decode_imagined": "false"}
            name = f"{p['name']}-free-running-{rtf:g}x"
            out.append(Cell(name, p["name"], "free_running", None, Leaderboard(protocol, []),
                            Row(name, p["backend"], p["checkpoint"], set=settings), rtf))
        return out


def executor_figures(stats: dict, episodes: list[dict], dt: float, space: str) -> list[dict]:
    """Per episode (in the report's order): median-free boundary jerk ratio, starved ticks (holds
    for want of a chunk after the episode's first chunk ran; every such hold when none ever ran,
    as when each chunk arrives with all its actions in the past) and actions executed."""
    from ..core.smoothness import boundary_jerk

    resets = []
    for stamp, episode_id in stats.get("resets", []):
        if not resets or resets[-1][1] != episode_id:           # a retried reset is the same episode
            resets.append((stamp, episode_id))
    resets = resets[-len(episodes):] if episodes else []
    bounds = [r[0] for r in resets] + [math.inf]
    rows = [c for c in stats.get("commands", [])]
    out = []
    for i in range(len(resets)):
        mine = [c for c in rows if bounds[i] - 1e-9 <= c[0] < bounds[i + 1] - 1e-9]
        ids = np.array([c[2] for c in mine], dtype=np.int64)
        started = np.nonzero(ids >= 0)[0]
        after = mine[started[0]:] if len(started) else mine    # no chunk ever ran: every hold starved
        starved = sum(1 for c in after if c[2] < 0 and c[5] in ("waiting for chunk", "chunk starts later"))
        jerk = {"ratio": math.nan}
        if len(mine) > 3:
            jerk = boundary_jerk(np.array([c[1] for c in mine]), ids, dt, space, dims=[0, 1, 2])
        out.append({"starved_ticks": starved, "boundary_jerk_ratio": jerk["ratio"],
                    "executed": int((ids >= 0).sum())})
    return out


def cell_result(cell: Cell, closed: dict, stats: dict | None) -> dict:
    """A cell's figures from the evaluator's report and the executor's stats file."""
    report = closed["report"]
    episodes = report["episodes"]
    n, k = len(episodes), sum(int(e["success"]) for e in episodes)
    low, high = wilson_interval(k, n)
    robot = load_robot(cell.board.protocol["robot"])
    dt = robot.config.action.dt
    per_episode = executor_figures(stats, episodes, dt, robot.config.action.space) if stats else []
    ratios = [e["boundary_jerk_ratio"] for e in per_episode if np.isfinite(e["boundary_jerk_ratio"])]
    steps = [e["steps"] for e in episodes if e["success"]]
    latency = (stats or {}).get("latency_s", {})
    out = {"name": cell.name, "policy": cell.policy, "remedy": cell.remedy, "delay_steps": cell.delay,
           "settings": cell.row.set, "episodes": n, "successes": k, "success_rate": k / n if n else math.nan,
           "success_ci95": [low, high], "mean_steps_to_success": float(np.mean(steps)) if steps else math.nan,
           "boundary_jerk_ratio_median": float(np.median(ratios)) if ratios else math.nan,
           "starved_ticks_per_episode": float(np.mean([e["starved_ticks"] for e in per_episode]))
           if per_episode else math.nan,
           "measured_delay_steps": {"p50": latency.get("p50", math.nan) / dt, "p95": latency.get("p95", math.nan) / dt},
           "chunk_latency_ms": {"p50": report["summary"]["latency_ms"]["p50"],
                                "p95": report["summary"]["latency_ms"]["p95"]},
           "per_episode": [{"task": e["task"], "seed": e["seed"], "success": bool(e["success"]), "steps": e["steps"],
                            "sim_s": e.get("duration_s"), "wall_s": e.get("wall_time_s"),
                            **(per_episode[i] if i < len(per_episode) else {})} for i, e in enumerate(episodes)],
           "closed_loop_wall_time_s": closed["wall_time_s"]}
    if cell.real_time_factor is not None:
        sim_s = sum(e.get("duration_s") or 0.0 for e in episodes)
        wall_s = sum(e.get("wall_time_s") or 0.0 for e in episodes)
        out["real_time_factor"] = {"requested": cell.real_time_factor, "reached": sim_s / wall_s if wall_s else None}
    return out


def cache_path(cell: Cell, runs: Path) -> Path:
    """Where a cell's result is cached: its name and the digest of its protocol, settings and checkpoint."""
    return runs / "cache" / f"{cell.name}-{row_key(cell.board, cell.row, None)}.json"


def run_cell(cell: Cell, runs: Path, force: bool, log=print) -> dict:
    cached = cache_path(cell, runs)
    key = cached.stem[len(cell.name) + 1:]                  # the digest, without hashing the checkpoint again
    if cached.is_file() and not force:
        log(f"latency: {cell.name}: cached ({cached.name})")
        return json.loads(cached.read_text())
    out_dir = runs / cell.name
    stats_file = out_dir.parent / f"{cell.name}.executor_stats.json"
    cell.row.set = {**cell.row.set, "executor.stats_file": str(stats_file)}
    n = len(cell.board.protocol["tasks"]) * len(cell.board.protocol["seeds"])
    log(f"latency: {cell.name}: {n} episodes through the graph")
    started = time.monotonic()
    stats_file.unlink(missing_ok=True)
    closed = run_closed_loop(cell.board, cell.row, out_dir)
    stats = json.loads(stats_file.read_text()) if stats_file.is_file() else None
    cell.row.set = {k: v for k, v in cell.row.set.items() if k != "executor.stats_file"}
    result = json_safe(cell_result(cell, closed, stats))
    result["key"], result["bench_wall_time_s"] = key, round(time.monotonic() - started, 1)
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(result, indent=2))
    log(f"latency: {cell.name}: {result['successes']}/{result['episodes']} successes")
    return result


def paired_difference(a: dict, b: dict, resamples: int = 10000, seed: int = 0) -> dict | None:
    """Success of cell `a` minus cell `b` over the episodes both ran (same task and seed): the mean
    difference, a 95% bootstrap interval over episodes, the discordant pairs and McNemar's exact p."""
    from scipy.stats import binomtest

    ea = {(e["task"], e["seed"]): e["success"] for e in a["per_episode"]}
    eb = {(e["task"], e["seed"]): e["success"] for e in b["per_episode"]}
    both = sorted(set(ea) & set(eb))
    if not both:
        return None
    diff = np.array([int(ea[k]) - int(eb[k]) for k in both], dtype=np.float64)
    rng = np.random.default_rng(seed)
    boots = diff[rng.integers(0, len(diff), (resamples, len(diff)))].mean(axis=1)
    only_a, only_b = int((diff > 0).sum()), int((diff < 0).sum())
    p = binomtest(only_a, only_a + only_b).pvalue if only_a + only_b else 1.0
    return {"a": a["name"], "b": b["name"], "episodes": len(both), "difference": float(diff.mean()),
            "ci95": [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))],
            "only_a_succeeded": only_a, "only_b_succeeded": only_b, "mcnemar_p": float(p)}


def _fmt_cell(r: dict | None) -> str:
    if r is None:
        return "-"
    low, high = r["success_ci95"]
    return f"{r['successes']}/{r['episodes']} = {r['success_rate']:.2f} [{low:.2f}, {high:.2f}]"


def _num(value, digits: int = 1) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def write_outputs(bench: LatencyBench, results: list[dict], free: list[dict], comparisons: list[dict],
                  out_dir: Path, short: bool = False) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "latency.json", out_dir / "latency.md"
    json_path.write_text(json.dumps(json_safe({"protocol": bench.protocol, "short_seeds": bench.short_seeds,
                                               "delays": bench.delays, "remedies": bench.remedies, "cells": results,
                                               "free_running": free, "comparisons": comparisons}), indent=2))
    plot = plot_success(results, out_dir / "latency.png")
    by = {(r["policy"], r["remedy"], r["delay_steps"]): r for r in results}
    dt_ms = load_robot(bench.protocol["robot"]).config.action.dt * 1e3
    table, details = [], []
    for p in bench.policies:
        for remedy in p["remedies"]:
            row = {"policy": p["name"], "mode / remedy": remedy}
            for d in bench.delays:
                row[f"d = {d} ({d * dt_ms:.0f} ms)"] = _fmt_cell(by.get((p["name"], remedy, d)))
            table.append(row)
            for d in bench.delays:
                r = by.get((p["name"], remedy, d))
                if r is not None:
                    details.append({"cell": r["name"], "steps to success": _num(r["mean_steps_to_success"]),
                                    "boundary jerk ratio (median)": _num(r["boundary_jerk_ratio_median"], 2),
                                    "starved ticks / episode": _num(r["starved_ticks_per_episode"]),
                                    "measured delay p50 / p95 (steps)":
                                        f"{_num(r['measured_delay_steps']['p50'])} / "
                                        f"{_num(r['measured_delay_steps']['p95'])}",
                                    "chunk latency p50 (ms, wall)": _num(r["chunk_latency_ms"]["p50"], 0)})
    p = bench.protocol
    lines = ["# Success against inference delay", "",
             f"Lockstep through the `{p['graph']}` graph with a simulated delay of d control steps "
             f"({dt_ms:g} ms each): the chunk computed from the observation at step t runs from step t + d, while "
             "the simulator steps on the plan in flight (async modes) or the hold (sync). "
             + ("This table ran every cell on the short seeds (`--short`). " if short else "") + "Full cells: "
             f"{len(p['tasks'])} tasks x seeds {p['seeds'][0]}-{p['seeds'][-1]} ({len(p['tasks']) * len(p['seeds'])} "
             f"episodes); the others: seeds {bench.short_seeds} ({len(p['tasks']) * len(bench.short_seeds)} episodes). "
             "Success with 95% Wilson intervals; at most "
             f"{p['max_steps']} steps per episode.", "", *markdown_table(table), "",
             "Remedies: " + "; ".join(f"`{k}`: " + ", ".join(f"{a}={b}" for a, b in v.items())
                                      for k, v in bench.remedies.items()) + ".", ""]
    if comparisons:
        lines += ["## Paired comparisons (same episodes)", "", *markdown_table([
            {"a - b": f"{c['a']} - {c['b']}", "episodes": c["episodes"], "difference": f"{c['difference']:+.2f}",
             "95% CI (bootstrap)": f"[{c['ci95'][0]:+.2f}, {c['ci95'][1]:+.2f}]",
             "only a / only b succeeded": f"{c['only_a_succeeded']} / {c['only_b_succeeded']}",
             "McNemar p": f"{c['mcnemar_p']:.3f}"} for c in comparisons]), ""]
    if free:
        lines += ["## Free-running on the wall clock", "", *markdown_table([
            {"row": f["name"], "success": _fmt_cell(f),
             "real-time factor requested / reached": f"{f['real_time_factor']['requested']:g} / "
                                                     f"{_num(f['real_time_factor']['reached'], 2)}",
             "measured delay p50 / p95 (steps)": f"{_num(f['measured_delay_steps']['p50'])} / "
                                                 f"{_num(f['measured_delay_steps']['p95'])}",
             "lockstep prediction": f.get("predicted_by", "-")} for f in free]), ""]
    lines += ["## Per cell", "", *markdown_table(details), ""]
    if plot:
        lines += [f"Plot: {plot.name}", ""]
    md_path.write_text("\n".join(lines))
    return json_path, md_path


def plot_success(results: list[dict], path: Path) -> Path | None:
    if not results:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 4.5))
    lines = sorted({(r["policy"], r["remedy"]) for r in results})
    for i, (policy, remedy) in enumerate(lines):
        cells = sorted((r for r in results if (r["policy"], r["remedy"]) == (policy, remedy)),
                       key=lambda r: r["delay_steps"])
        d = np.array([r["delay_steps"] for r in cells], dtype=float) + 0.15 * (i - len(lines) / 2)
        y = np.array([r["success_rate"] for r in cells])
        low = np.array([r["success_ci95"][0] for r in cells])
        high = np.array([r["success_ci95"][1] for r in cells])
        ax.errorbar(d, y, yerr=[y - low, high - y], marker="o", capsize=3,
                    linestyle="-" if policy == lines[0][0] else "--", label=f"{policy}: {remedy}")
    ax.set_xlabel("inference delay d (control steps of 12.5 ms)")
    ax.set_ylabel("success rate (95% Wilson interval)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def build_argparser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="benchmark description (default config/bench/latency.yaml)")
    p.add_argument("--out", type=Path, default=Path("artifacts/bench"))
    p.add_argument("--only", nargs="+", help="run only cells whose name starts with one of these (the others are "
                                            "read from the cache when there)")
    p.add_argument("--delays", type=int, nargs="+", help="run these delays only (default: the description's)")
    p.add_argument("--force", action="store_true", help="rerun the selected cells even when cached")
    p.add_argument("--short", action="store_true", help="every lockstep cell on the short seeds (a quicker, "
                                                         "wider-interval table)")
    p.add_argument("--no-free-running", action="store_true", help="skip the free-running rows")


def run(args) -> int:
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    try:
        bench = LatencyBench.load(args.config)
    except ValueError as exc:
        print(f"vla-bench latency: {exc}")
        return 2
    runs = args.out / "latency"
    selected = lambda name: args.only is None or any(name.startswith(o) for o in args.only)   # noqa: E731
    results = []
    for cell in bench.cells(args.delays, args.short):
        if selected(cell.name) or cache_path(cell, runs).is_file():
            results.append(run_cell(cell, runs, args.force and selected(cell.name)))
    by = {(r["policy"], r["remedy"], r["delay_steps"]): r for r in results}
    comparisons = []
    for p in bench.policies:
        for d in bench.delays:
            for a, b in bench.comparisons:
                if (p["name"], a, d) in by and (p["name"], b, d) in by:
                    comparisons.append(paired_difference(by[(p["name"], a, d)], by[(p["name"], b, d)]))
    free = []
    if not args.no_free_running:
        dt = load_robot(bench.protocol["robot"]).config.action.dt
        for cell in bench.free_running_cells():
            if not (selected(cell.name) or cache_path(cell, runs).is_file()):
                continue
            r = run_cell(cell, runs, args.force and selected(cell.name))
            steps = r["measured_delay_steps"]["p50"]
            if steps is not None and np.isfinite(steps):
                near = min(bench.delays, key=lambda d: abs(d - steps))
                match = [c for c in results if c["policy"] == r["policy"] and c["delay_steps"] == near]
                if match:
                    r["predicted_by"] = "; ".join(f"{c['remedy']} at d = {near}: {_fmt_cell(c)}" for c in match)
            r["delay_step_s"] = dt
            free.append(r)
    json_path, md_path = write_outputs(bench, results, free, [c for c in comparisons if c], args.out,
                                        args.short)
    print(f"bench: wrote {json_path} and {md_path}")
    return 0
