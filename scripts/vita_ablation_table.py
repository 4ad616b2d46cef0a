#!/usr/bin/env python3
"""VITA's ablation table: each arm's leaderboard figures (success with its interval, action L1
against the expert, next-frame PSNR/SSIM next to copy-current) beside its codebook use over the
training samples (perplexity, used and dead codes, from the checkpoint's training record).

    scripts/vita_ablation_table.py artifacts/bench/vita_ablations   # writes ablation.md / ablation.json there
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tabulate import tabulate


def arm_row(row: dict) -> dict:
    config = json.loads((Path(row["checkpoint"]) / "config.json").read_text())
    usage = config["training"].get("codebook_usage", {})
    imagined = row.get("offline", {}).get("imagined", {}).get("8", {})
    ci = row.get("success_ci95") or [float("nan")] * 2
    return {"arm": row["name"], "shared codebook": config["policy"]["shared_codebook"],
            "next-frame objective": config["policy"]["next_frame_objective"],
            "success": f"{row['successes']}/{row['episodes']} = {row['success_rate']:.2f}",
            "95% CI": f"[{ci[0]:.2f}, {ci[1]:.2f}]", "progress": round(row["progress_score"], 2),
            "action L1 vs expert": row.get("offline", {}).get("action_l1"),
            "+8 PSNR / SSIM (copy)": (f"{imagined['psnr']:.1f} / {imagined['ssim']:.3f} "
                                      f"({imagined['copy_psnr']:.1f} / {imagined['copy_ssim']:.3f})") if imagined else "-",
            "action codes: perplexity / used / dead": _usage(usage.get("action")),
            "vision codes: perplexity / used / dead": _usage(usage.get("vision")),
            "all codes: perplexity / used / dead": _usage(usage.get("all")),
            "training (min)": round(config["training"]["wall_time_s"] / 60, 1)}


def _usage(u: dict | None) -> str:
    return "-" if not u else f"{u['perplexity']:.1f} / {u['used_codes']} / {u['dead_codes']}"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[0])
    board = json.loads((out / "policies.json").read_text())
    rows = [arm_row(r) for r in board["rows"] if r["backend"] == "vita"]
    (out / "ablation.json").write_text(json.dumps(rows, indent=2))
    (out / "ablation.md").write_text("# VITA ablations\n\n" + tabulate(rows, headers="keys", tablefmt="github") + "\n")
    print((out / "ablation.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
