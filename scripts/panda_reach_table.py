"""Panda reach results of evaluator runs as one table: success with its Wilson interval, steps to
success, the flange's distance to the target (at the start, closest, at the end: medians over episodes,
from /vla/sim/ee_pose and the target in /vla/sim/env_state), and every command the arm received checked
against the robot file's URDF joint limits.

    python scripts/panda_reach_table.py OUT_DIR LABEL=RUN_DIR[:ROBOT] ...
RUN_DIR: an evaluator output folder (report.json + bags/) of an arm_* graph; ROBOT the robot file
whose limits apply (default panda_ros2_control). Writes OUT_DIR/panda.json and OUT_DIR/panda.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tabulate import tabulate

from vla_policy_node.bench.leaderboard import wilson_interval
from vla_policy_node.core.embodiment import load_robot
from vla_policy_node.data.bags import read_bag
from vla_policy_node.evaluation.command_limits import commands_outside_limits


def flange_distances(bag: Path) -> tuple[float, float, float] | None:
    """(start, closest, end) distance in m from the flange to the target over one episode's bag; None when
    the bag holds no hand pose or no target."""
    target, distances = None, []
    for topic, _, _, msg in read_bag(bag, topics=["/vla/sim/env_state", "/vla/sim/ee_pose"]):
        if topic == "/vla/sim/env_state":
            target = np.asarray(msg.values[:3], dtype=np.float64)
        elif target is not None:
            p = msg.pose.position
            distances.append(float(np.linalg.norm(np.array([p.x, p.y, p.z]) - target)))
    return (distances[0], min(distances), distances[-1]) if distances else None


def summarize(label: str, run: Path, robot_name: str) -> dict:
    robot = load_robot(robot_name)
    report = json.loads((run / "report.json").read_text())
    episodes = report["episodes"]
    successes = sum(bool(e["success"]) for e in episodes)
    lo, hi = wilson_interval(successes, len(episodes))
    commands = outside = 0
    distances = []
    for e in episodes:
        bag = run / "bags" / Path(e.get("bag") or f"{e['task']}_s{e['seed']}").name
        c, o = commands_outside_limits(bag, robot)
        commands, outside = commands + c, outside + o
        distances.append(flange_distances(bag))
    measured = np.array([d for d in distances if d is not None]).reshape(-1, 3)
    median_cm = [float(v) for v in np.median(measured, axis=0) * 100] if len(measured) else None
    steps = [e["steps"] for e in episodes if e["success"] and "steps" in e]
    return {"arm": label, "robot": robot_name, "contract": robot.config.output.contract,
            "backend": report.get("policy", {}).get("backend"), "episodes": len(episodes), "successes": successes,
            "success_rate": successes / max(1, len(episodes)), "wilson_95": [lo, hi],
            "seeds": [e["seed"] for e in episodes], "mean_steps_to_success": float(np.mean(steps)) if steps else None,
            "commands": commands, "commands_outside_urdf_limits": outside,
            "flange_to_target_median_cm": None if median_cm is None else dict(zip(("start", "closest", "end"), median_cm)),
            "ending_within_5_cm": int(np.sum(measured[:, 2] < 0.05)) if len(measured) else None}


def distance_cell(row: dict) -> str:
    d = row["flange_to_target_median_cm"]
    return "-" if d is None else f"{d['start']:.0f} / {d['closest']:.1f} / {d['end']:.1f}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path, help="where panda.json and panda.md are written")
    parser.add_argument("runs", nargs="+", metavar="LABEL=RUN_DIR[:ROBOT]")
    args = parser.parse_args(argv)
    out, rows = args.out_dir, []
    for spec in args.runs:
        label, _, rest = spec.partition("=")
        if not label or not rest:
            parser.error(f"'{spec}' is not LABEL=RUN_DIR[:ROBOT]")
        run, _, robot = rest.partition(":")
        rows.append(summarize(label, Path(run), robot or "panda_ros2_control"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "panda.json").write_text(json.dumps(rows, indent=2))
    table = [{"arm": r["arm"], "contract": r["contract"], "backend": r["backend"],
              "success": f"{r['successes']}/{r['episodes']} = {r['success_rate']:.2f}",
              "95% CI (Wilson)": f"[{r['wilson_95'][0]:.2f}, {r['wilson_95'][1]:.2f}]",
              "steps to success (mean)": "-" if r["mean_steps_to_success"] is None else f"{r['mean_steps_to_success']:.0f}",
              "flange to target, median cm (start / closest / end)": distance_cell(r),
              "commands outside URDF limits": f"{r['commands_outside_urdf_limits']} of {r['commands']}"} for r in rows]
    md = tabulate(table, headers="keys", tablefmt="github")
    (out / "panda.md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
