"""Panda reach results of evaluator runs as one table: success with its Wilson interval, steps to
success, and every command the arm received checked against the robot file's URDF joint limits.

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
from vla_policy_node.evaluation.command_limits import commands_outside_limits


def summarize(label: str, run: Path, robot_name: str) -> dict:
    robot = load_robot(robot_name)
    report = json.loads((run / "report.json").read_text())
    episodes = report["episodes"]
    successes = sum(bool(e["success"]) for e in episodes)
    lo, hi = wilson_interval(successes, len(episodes))
    commands = outside = 0
    for e in episodes:
        c, o = commands_outside_limits(run / "bags" / Path(e.get("bag") or f"{e['task']}_s{e['seed']}").name, robot)
        commands, outside = commands + c, outside + o
    steps = [e["steps"] for e in episodes if e["success"] and "steps" in e]
    return {"arm": label, "robot": robot_name, "contract": robot.config.output.contract,
            "backend": report.get("policy", {}).get("backend"), "episodes": len(episodes), "successes": successes,
            "success_rate": successes / max(1, len(episodes)), "wilson_95": [lo, hi],
            "seeds": [e["seed"] for e in episodes], "mean_steps_to_success": float(np.mean(steps)) if steps else None,
            "commands": commands, "commands_outside_urdf_limits": outside}


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
              "commands outside URDF limits": f"{r['commands_outside_urdf_limits']} of {r['commands']}"} for r in rows]
    md = tabulate(table, headers="keys", tablefmt="github")
    (out / "panda.md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
