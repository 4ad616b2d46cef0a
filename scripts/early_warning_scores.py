"""Which early signal tells a failing episode from a succeeding one? Failure AUROC of candidate scores
over the first seconds of every episode of closed-loop runs (evaluator output folders with bags).

Imagination scores (from /vla/imagined and the real camera frames at the imagined times, compared as
the imagination monitor compares them: the model's view, 1 - SSIM at the imagined resolution):
  max_divergence / mean_divergence   what the monitor reports
  max_excess / mean_excess           divergence minus that of the still frame (the source frame as the
                                     prediction): how much worse the imagination did than "nothing moves"
  worse_than_still                   share of imagined frames that the still frame beat
Chunk scores (from /vla/action_chunk, normalized actions): for every step, the chunks that planned it
  max_spread / mean_spread           mean absolute deviation of their position actions from their mean

Use it on validation runs to choose a score before looking at held-out ones.

    python scripts/early_warning_scores.py RUN_DIR [RUN_DIR ...] [--window-s 1.0] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from vla_policy_node.core.embodiment import load_robot
from vla_policy_node.core.imagination_monitor import real_frame_at
from vla_policy_node.core.metrics import auroc, auroc_text, ssim
from vla_policy_node.data.bags import read_bag

SCORES = ("max_divergence", "mean_divergence", "max_excess", "mean_excess", "worse_than_still", "max_spread",
          "mean_spread")


def stamp_s(header) -> float:
    return header.stamp.sec + header.stamp.nanosec * 1e-9


def image_of(msg) -> np.ndarray:
    return np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, -1)[..., :3]


def episode_scores(bag: Path, camera, window_s: float) -> dict:
    """The candidate scores of one episode over its first window_s seconds (from its first frame)."""
    real, futures, chunks, dt = {}, [], [], None
    for topic, _, _, m in read_bag(bag, topics=[camera.topic, "/vla/imagined", "/vla/action_chunk"]):
        if topic == camera.topic:
            real[stamp_s(m.header)] = image_of(m)
        elif topic == "/vla/imagined":
            futures.append((stamp_s(m.header), list(m.frame_offsets), list(m.camera_names), m.frames))
        else:
            dt = float(m.dt)
            values = m.actions_normalized if len(m.actions_normalized) else m.actions
            chunks.append((stamp_s(m.header), np.asarray(values).reshape(m.horizon, m.action_dim)))
    stamps = np.array(sorted(real))
    t_start, tol = stamps[0], (dt or 0.0125) / 2

    def frame_at(t: float):
        i = int(np.argmin(np.abs(stamps - t)))
        return real[stamps[i]] if abs(stamps[i] - t) <= tol else None

    size = tuple(camera.input_size)
    imagined, still = [], []
    for t0, offsets, names, frames in futures:
        source = frame_at(t0)
        if source is None or camera.name not in names:
            continue
        for k, offset in enumerate(offsets):
            future = frame_at(t0 + offset)
            if future is None or t0 + offset - t_start > window_s:
                continue
            guess = image_of(frames[k * len(names) + names.index(camera.name)])
            imagined.append(1 - ssim(guess, real_frame_at(future, guess.shape[:2], size, camera.crop)))
            still.append(1 - ssim(real_frame_at(source, guess.shape[:2], size, camera.crop),
                                  real_frame_at(future, guess.shape[:2], size, camera.crop)))
    planned = defaultdict(list)
    for t0, actions in chunks:
        for i, row in enumerate(actions):
            if t0 + i * dt - t_start <= window_s:
                planned[round((t0 + i * dt - t_start) / dt)].append(row[:3])
    spread = [float(np.abs(np.array(v) - np.mean(v, axis=0)).mean()) for v in planned.values() if len(v) > 1]
    out = dict.fromkeys(SCORES)
    if imagined:
        d, s = np.array(imagined), np.array(still)
        out.update(max_divergence=d.max(), mean_divergence=d.mean(), max_excess=(d - s).max(),
                   mean_excess=(d - s).mean(), worse_than_still=float((d > s).mean()))
    if spread:
        out.update(max_spread=max(spread), mean_spread=float(np.mean(spread)))
    return {k: (None if v is None else float(v)) for k, v in out.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="evaluator output folders (report.json, bags/)")
    p.add_argument("--window-s", type=float, default=1.0, help="early window from each episode's first frame, s")
    p.add_argument("--json", type=Path, help="write every episode's scores here")
    args = p.parse_args()
    episodes = []
    for run in args.runs:
        report = json.loads((run / "report.json").read_text())
        robot = load_robot(report["robot"]).config
        name = robot.monitor.camera if robot.monitor and robot.monitor.camera else robot.cameras[0].name
        camera = next(c for c in robot.cameras if c.name == name)
        for e in report["episodes"]:
            episodes.append({"run": str(run), "episode": e["name"], "failed": not e["success"],
                             **episode_scores(Path(e["bag"]), camera, args.window_s)})
    failures = sum(e["failed"] for e in episodes)
    print(f"{len(episodes)} episodes, {failures} failed; failure AUROC over the first {args.window_s:g} s "
          "(0.5 = chance)")
    for score in SCORES:
        scored = [e for e in episodes if e[score] is not None]
        failed = [int(e["failed"]) for e in scored]
        value = auroc([e[score] for e in scored], failed)
        print(f"  {score:18s} {auroc_text(value, sum(failed), len(scored), digits=2)}  ({len(scored)} episodes)")
    if args.json:
        args.json.write_text(json.dumps(episodes, indent=1))


if __name__ == "__main__":
    main()
