"""Episode results -> report.json and report.md (summary, per task, per episode)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class EpisodeRecord:
    task: str
    seed: int
    instruction: str
    success: bool
    steps: int
    duration_s: float                 # simulated seconds from reset to the end of the episode
    wall_time_s: float
    reason: str                       # success | step_limit | timeout | error: ...
    bag: str                          # rosbag2 folder of the episode ("" when not recorded)


def summarize(episodes: list[EpisodeRecord]) -> dict:
    per_task = {}
    for ep in episodes:
        t = per_task.setdefault(ep.task, {"episodes": 0, "successes": 0, "steps": []})
        t["episodes"] += 1
        t["successes"] += int(ep.success)
        if ep.success:
            t["steps"].append(ep.steps)
    for t in per_task.values():
        steps = t.pop("steps")
        t["success_rate"] = t["successes"] / t["episodes"]
        t["mean_steps_to_success"] = sum(steps) / len(steps) if steps else None
    n = len(episodes)
    successes = sum(ep.success for ep in episodes)
    return {"episodes": n, "successes": successes, "success_rate": successes / n if n else 0.0,
            "per_task": per_task}


def write_report(out_dir: str | Path, episodes: list[EpisodeRecord], meta: dict) -> Path:
    """Write report.json and report.md into out_dir; returns the report.json path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = dict(meta)
    report["summary"] = summarize(episodes)
    report["episodes"] = [asdict(ep) for ep in episodes]
    path = out / "report.json"
    path.write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(render_markdown(report))
    return path


def render_markdown(report: dict) -> str:
    s = report["summary"]
    lines = [f"# Evaluation report: {report.get('policy', {}).get('backend', '?')} on "
             f"{report.get('robot', '?')}", "",
             f"**Success rate {s['success_rate']:.2f}** ({s['successes']}/{s['episodes']} episodes)", "",
             "| task | episodes | success rate | mean steps to success |", "|---|---|---|---|"]
    for task, t in s["per_task"].items():
        steps = "-" if t["mean_steps_to_success"] is None else f"{t['mean_steps_to_success']:.1f}"
        lines.append(f"| {task} | {t['episodes']} | {t['success_rate']:.2f} | {steps} |")
    lines += ["", "| task | seed | success | steps | sim s | wall s | reason | bag |", "|---|---|---|---|---|---|---|---|"]
    for ep in report["episodes"]:
        lines.append(f"| {ep['task']} | {ep['seed']} | {'yes' if ep['success'] else 'no'} | {ep['steps']} | "
                     f"{ep['duration_s']:.2f} | {ep['wall_time_s']:.1f} | {ep['reason']} | {ep['bag']} |")
    return "\n".join(lines) + "\n"
