"""The Qwen-VLA ablation table: each arm's closed-loop success on the robots it was trained for.

    python scripts/qwen_vla_ablation_table.py RESULTS_DIR ARM_CHECKPOINT ...
RESULTS_DIR/<arm>/sawyer and RESULTS_DIR/<arm>/panda are evaluator output folders (report.json);
the arm's name is its checkpoint folder's. Writes RESULTS_DIR/ablation.json and ablation.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tabulate import tabulate

from vla_policy_node.bench.leaderboard import wilson_interval


def score(run: Path) -> dict | None:
    report = run / "report.json"
    if not report.is_file():
        return None
    episodes = json.loads(report.read_text())["episodes"]
    k, n = sum(bool(e["success"]) for e in episodes), len(episodes)
    lo, hi = wilson_interval(k, n)
    return {"successes": k, "episodes": n, "rate": k / max(n, 1), "wilson_95": [lo, hi]}


def cell(s: dict | None) -> str:
    if s is None:
        return "-"
    return f"{s['successes']}/{s['episodes']} = {s['rate']:.2f} [{s['wilson_95'][0]:.2f}, {s['wilson_95'][1]:.2f}]"


def main(argv: list[str]) -> int:
    if len(argv) < 2 or any(a.startswith("-") for a in argv):
        print(__doc__, file=sys.stderr)
        return 2
    results, rows = Path(argv[0]), []
    for ckpt in map(Path, argv[1:]):
        config = json.loads((ckpt / "config.json").read_text())
        policy, training = config["policy"], config.get("training", {})
        row = {"arm": ckpt.name, "robots": sorted(policy["embodiments"]), "projection": policy["action_projection"],
               "steps": training.get("steps"), "batch_size": training.get("batch_size"),
               "training_min": round(training.get("wall_time_s", 0) / 60, 1),
               "sawyer": score(results / ckpt.name / "sawyer"), "panda": score(results / ckpt.name / "panda")}
        rows.append(row)
    results.mkdir(parents=True, exist_ok=True)
    (results / "ablation.json").write_text(json.dumps(rows, indent=2))
    table = [{"arm": r["arm"], "trained on": " + ".join(r["robots"]), "action projection": r["projection"],
              "Sawyer success [95% CI]": cell(r["sawyer"]), "Panda reach success [95% CI]": cell(r["panda"]),
              "steps x batch": f"{r['steps']} x {r['batch_size']}", "training (min)": r["training_min"]} for r in rows]
    md = tabulate(table, headers="keys", tablefmt="github")
    (results / "ablation.md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
