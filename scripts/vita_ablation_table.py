#!/usr/bin/env python3
"""VITA's ablation table: each arm's open-loop scores on the reference episodes (action L1 against
the expert, next-frame PSNR/SSIM next to copy-current and the codec ceiling, from `vla-eval offline`
reports in <out>/<arm>/) beside its codebook use over the training samples and its training record.

    scripts/vita_ablation_table.py artifacts/bench/vita_ablations artifacts/ablations/vita_shared ...
writes <out>/ablation.md and <out>/ablation.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tabulate import tabulate


def _usage(u: dict | None) -> str:
    return "-" if not u else f"{u['perplexity']:.1f} / {u['used_codes']} / {u['dead_codes']}"


def arm_row(out: Path, checkpoint: Path) -> dict:
    config = json.loads((checkpoint / "config.json").read_text())
    training, policy = config["training"], config["policy"]
    offline = json.loads((out / checkpoint.name / "report.json").read_text())["offline"]
    frame = offline.get("frames", {}).get(str(policy["future_offsets"][0])) if policy["next_frame_objective"] else None
    usage = training.get("codebook_usage", {})
    return {"arm": checkpoint.name, "shared codebook": policy["shared_codebook"],
            "next-frame objective": policy["next_frame_objective"],
            "action L1 vs expert": round(offline["actions"]["l1"], 4),
            "action L1 dx / dy / dz": " / ".join(f"{offline['actions']['per_dim'][k]['l1']:.3f}" for k in ("dx", "dy", "dz")),
            "gripper accuracy": round(offline.get("gripper_accuracy", float("nan")), 3),
            "+8 PSNR / SSIM": f"{frame['psnr']:.1f} / {frame['ssim']:.3f}" if frame else "-",
            "+8 copy": f"{frame['copy_psnr']:.1f} / {frame['copy_ssim']:.3f}" if frame else "-",
            "action codes: perplexity / used / dead": _usage(usage.get("action")),
            "vision codes: perplexity / used / dead": _usage(usage.get("vision")),
            "codes per sample": policy["action_tokens"] + (policy["vision_tokens"] if policy["next_frame_objective"] else 0),
            "chunks scored": offline["speed"]["chunks"],
            "steps (warm-up + co-train)": f"{training.get('tokenizer_steps')} + {training['steps']}",
            "training (min)": round(training["wall_time_s"] / 60, 1)}


def main(argv: list[str]) -> int:
    if len(argv) < 2 or any(a.startswith("-") for a in argv):
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[0])
    rows = [arm_row(out, Path(c)) for c in argv[1:]]
    (out / "ablation.json").write_text(json.dumps(rows, indent=2))
    (out / "ablation.md").write_text("# VITA ablations\n\n" + tabulate(rows, headers="keys", tablefmt="github") + "\n")
    print((out / "ablation.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
