"""Where a policy's failed episodes leave the expert's path: for each failure of a run, the first step
at which the hand is more than `--tolerance` from every point of the reference run's hand path on the
same (task, seed), and the furthest it gets from that path (m). Reads /vla/sim/ee_pose from the bags.

    python scripts/path_departure.py REFERENCE_RUN RUN [RUN ...] [--tolerance 0.05]
RUN: an evaluator output folder (report.json + bags/), e.g. a leaderboard row's closed_loop folder;
REFERENCE_RUN: the oracle's on the same tasks and seeds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from vla_policy_node.data.bags import read_bag

EE_TOPIC = "/vla/sim/ee_pose"


def hand_path(bag: Path) -> np.ndarray:
    """(T, 3) hand positions (m, world frame) in the order recorded."""
    rows = [[m.pose.position.x, m.pose.position.y, m.pose.position.z]
            for topic, _, _, m in read_bag(bag) if topic == EE_TOPIC]          # geometry_msgs/PoseStamped
    if not rows:
        raise SystemExit(f"{bag}: no {EE_TOPIC} messages (record that topic)")
    return np.asarray(rows, dtype=np.float64)


def departures(reference: Path, run: Path, tolerance: float) -> list[dict]:
    out = []
    for e in json.loads((run / "report.json").read_text())["episodes"]:
        if e["success"]:
            continue
        name = f"{e['task']}_s{e['seed']}"
        expert, policy = hand_path(reference / "bags" / name), hand_path(run / "bags" / name)
        off = np.linalg.norm(policy[:, None] - expert[None], axis=2).min(axis=1)      # to the nearest expert point
        first = int(np.argmax(off > tolerance)) if (off > tolerance).any() else None
        out.append({"episode": name, "first_step_off": first, "max_distance_m": round(float(off.max()), 3),
                    "end_distance_m": round(float(np.linalg.norm(policy[-1] - expert[-1])), 3)})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("reference", type=Path)
    p.add_argument("runs", type=Path, nargs="+")
    p.add_argument("--tolerance", type=float, default=0.05, help="distance from the expert's path (m)")
    args = p.parse_args()
    for run in args.runs:
        rows = departures(args.reference, run, args.tolerance)
        firsts = [r["first_step_off"] for r in rows if r["first_step_off"] is not None]
        print(f"{run}: {len(rows)} failures; median first step off the expert's path "
              f"{np.median(firsts) if firsts else float('nan'):.0f}; median furthest "
              f"{np.median([r['max_distance_m'] for r in rows]) if rows else float('nan'):.2f} m")
        for r in rows:
            print(f"  {r}")


if __name__ == "__main__":
    main()
