"""`vla-bench imagination`: does the world model notice the unexpected, and does acting on it help?

config/bench/imagination.yaml: one policy, the leaderboard's episodes run once clean and once per
monitor action with each episode perturbed (sim/perturbation.py; the same perturbation per episode
in every arm, drawn from its seed). From the runs' report.json (evaluation/perturbation_detection.py):
- detection, per detector (the imagination divergence; the frame change that imagines nothing):
  AUROC of the 0.5 s after the perturbation against the 0.5 s before, detection rate and median
  delay, false alarms per clean episode; the world model at its robot file's threshold, both at the
  threshold that keeps the clean runs within `false_alarm_target` alarms an episode;
- success under perturbation per monitor action (none / replan / hold), Wilson intervals, paired
  differences on the same episodes.
Writes artifacts/bench/imagination.json and imagination.md; each arm's run is cached like a
leaderboard row (its protocol, settings and checkpoint digest).
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..core.embodiment import config_root, load_robot
from ..evaluation.perturbation_detection import (DETECTORS, detection_figures, perturbed_at,
                                                 threshold_for_false_alarms)
from ..evaluation.reports import json_safe, markdown_table
from .latency import paired_difference
from .leaderboard import Leaderboard, Row, row_key, run_closed_loop, wilson_interval


@dataclass
class ImaginationBench:
    protocol: dict
    policy: dict
    perturbation: dict
    window_s: float
    false_alarm_target: float
    arms: dict

    @classmethod
    def load(cls, path: str | Path | None = None) -> "ImaginationBench":
        path = Path(path) if path else config_root() / "bench" / "imagination.yaml"
        try:
            data = yaml.safe_load(path.read_text())
            bench = cls(dict(data["protocol"]), dict(data["policy"]), dict(data["perturbation"]),
                        float(data["window_s"]), float(data["false_alarm_target"]), dict(data["arms"]))
        except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError) as exc:
            raise ValueError(f"{path}: {type(exc).__name__}: {exc}") from None
        if "clean" not in bench.arms or not any(a.startswith("perturbed_") for a in bench.arms):
            raise ValueError(f"{path}: arms: needs 'clean' and at least one 'perturbed_<action>'")
        return bench

    def row(self, arm: str) -> Row:
        p = self.perturbation
        settings = {} if arm == "clean" else {
            "evaluator.perturbation": p["kind"], "evaluator.perturbation_steps": str(list(p["steps"])),
            "evaluator.perturbation_distance_m": str(list(p["distance_m"]))}
        settings.update({k: str(v) for k, v in self.arms[arm].items()})
        return Row(f"{self.policy['name']}-{arm}", self.policy["backend"], self.policy.get("checkpoint", ""),
                   set=settings)


def arm_cache(bench: ImaginationBench, arm: str, runs: Path) -> Path:
    """Where the arm's run is cached: its name and the digest of its protocol, settings and checkpoint."""
    row = bench.row(arm)
    return runs / "cache" / f"{row.name}-{row_key(Leaderboard(bench.protocol, []), row, None)}.json"


def run_arm(bench: ImaginationBench, arm: str, runs: Path, force: bool, cached: Path, log=print) -> dict:
    """The arm's report.json, from `cached` unless `force`."""
    board, row = Leaderboard(bench.protocol, []), bench.row(arm)
    if cached.is_file() and not force:
        log(f"imagination: {row.name}: cached ({cached.name})")
        return json.loads(cached.read_text())
    log(f"imagination: {row.name}: {len(board.protocol['tasks']) * len(board.protocol['seeds'])} episodes")
    closed = run_closed_loop(board, row, runs / row.name)
    result = json_safe({"arm": arm, "name": row.name, "settings": row.set, "report": closed["report"],
                        "wall_time_s": closed["wall_time_s"]})
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(result))
    return result


def success_row(arm: str, episodes: list[dict]) -> dict:
    k, n = sum(bool(e["success"]) for e in episodes), len(episodes)
    low, high = wilson_interval(k, n) if n else (float("nan"), float("nan"))
    return {"name": arm, "episodes": n, "successes": k, "success_rate": k / n if n else float("nan"),
            "success_ci95": [low, high],
            "per_episode": [{"task": e["task"], "seed": e["seed"], "success": bool(e["success"])} for e in episodes]}


def figures(bench: ImaginationBench, results: dict[str, dict], robot_threshold: float) -> dict:
    """Detection and success figures from the arms' reports (see the module's docstring)."""
    episodes = {arm: r["report"]["episodes"] for arm, r in results.items()}
    clean = episodes.get("clean", [])
    out: dict = {"detection": [], "success": [], "comparisons": []}
    watched = episodes.get("perturbed_none")
    if watched is not None:         # detection is judged where the monitor only watches
        reached = [e for e in watched if perturbed_at(e) is not None]
        out["perturbed_before_end"] = len(reached)
        for detector in DETECTORS:
            matched = threshold_for_false_alarms(clean, detector, bench.false_alarm_target)
            rows = [("matched false alarms", matched)]
            if detector == "divergence":
                rows.insert(0, ("robot file threshold", robot_threshold))
            for point, threshold in rows:
                row = detection_figures(watched, clean, detector, threshold, bench.window_s)
                out["detection"].append({"operating_point": point, **row})
    by_arm = {arm: success_row(arm, eps) for arm, eps in episodes.items()}
    out["success"] = list(by_arm.values())
    for a, b in (("perturbed_replan", "perturbed_none"), ("perturbed_hold", "perturbed_none"),
                 ("perturbed_none", "clean")):
        if a in by_arm and b in by_arm:
            out["comparisons"].append(paired_difference(by_arm[a], by_arm[b]))
    return out


def _num(value, digits: int = 2) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def write_outputs(bench: ImaginationBench, summary: dict, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "imagination.json", out_dir / "imagination.md"
    json_path.write_text(json.dumps(json_safe({"protocol": bench.protocol, "policy": bench.policy,
                                               "perturbation": bench.perturbation, "window_s": bench.window_s,
                                               "false_alarm_target": bench.false_alarm_target, **summary}),
                                    indent=2))
    lines = [f"# Imagination under perturbation: {bench.policy['name']}", "",
             f"{bench.perturbation['kind']} displaced {bench.perturbation['distance_m'][0] * 100:g}-"
             f"{bench.perturbation['distance_m'][1] * 100:g} cm before a step in {bench.perturbation['steps']}, "
             f"drawn from each episode's seed; detection window {bench.window_s:g} s; "
             f"{summary.get('perturbed_before_end', '-')} perturbed episodes reached their perturbation.", "",
             "## Detection (monitor action none)", ""]
    lines += markdown_table([{
        "detector": DETECTORS[d["detector"]], "operating point": d["operating_point"],
        "threshold": _num(d["threshold"], 4), "AUROC after vs before": _num(d["auroc"]),
        "detected": f"{d['detected']}/{d['scored']}", "median delay s": _num(d["median_delay_s"], 3),
        "false alarms / clean episode": _num(d["false_alarms_per_episode"])} for d in summary["detection"]])
    lines += ["", "## Success", ""]
    lines += markdown_table([{
        "arm": s["name"], "success": f"{s['successes']}/{s['episodes']} = {_num(s['success_rate'])} "
                                     f"[{_num(s['success_ci95'][0])}, {_num(s['success_ci95'][1])}]"}
        for s in summary["success"]])
    if summary["comparisons"]:
        lines += ["", "## Paired differences (same episodes)", ""]
        lines += markdown_table([{
            "a - b": f"{c['a']} - {c['b']}", "difference": f"{c['difference']:+.2f}",
            "95% CI": f"[{c['ci95'][0]:+.2f}, {c['ci95'][1]:+.2f}]",
            "only a / only b succeeded": f"{c['only_a_succeeded']} / {c['only_b_succeeded']}",
            "McNemar p": f"{c['mcnemar_p']:.3f}"} for c in summary["comparisons"] if c])
    md_path.write_text("\n".join(lines) + "\n")
    return json_path, md_path


def build_argparser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--config", type=Path, help="benchmark description (default config/bench/imagination.yaml)")
    p.add_argument("--out", type=Path, default=Path("artifacts/bench"))
    p.add_argument("--only", nargs="+", help="run only these arms (the others are read from the cache when there)")
    p.add_argument("--force", action="store_true", help="rerun the selected arms even when cached")
    return p


def run(args) -> int:
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    try:
        bench = ImaginationBench.load(args.config)
    except ValueError as exc:
        print(f"vla-bench imagination: {exc}")
        return 2
    runs = args.out / "imagination"
    results = {}
    for arm in bench.arms:
        cached, selected = arm_cache(bench, arm, runs), args.only is None or arm in args.only
        if selected or cached.is_file():
            results[arm] = run_arm(bench, arm, runs, args.force and selected, cached)
    monitor = load_robot(bench.protocol["robot"]).config.monitor
    summary = figures(bench, results, monitor.threshold if monitor is not None else float("inf"))
    json_path, md_path = write_outputs(bench, summary, args.out)
    print(md_path.read_text())
    print(f"bench: wrote {json_path} and {md_path}")
    return 0
