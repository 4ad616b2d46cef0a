"""What the evaluator reports about a run through the live graph (no rclpy).

Two modes run the graph: closed_loop (tasks x seeds against the simulator) and replay (a recorded
episode played to a dry-run executor, scored by evaluation/replay_scoring.py). This module turns
the run's protocol, its episodes (episode tracker + episode log) and the imagination monitor's
per-episode series into the run description `evaluation.reports.write_run_report` writes:
protocol, summary, index metrics, notes and tables. Times in s from each episode's start (its
reset stamp, on the graph's clock) unless named otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.episode_log import EpisodeLog
from ..core.metrics import auroc_text
from ..core.monitor_figures import monitor_figures
from ..core.progress import STAGES, StageThresholds
from ..core.protocol import training_seeds
from .episode_tracker import EpisodeTracker
from .reports import EpisodeRecord

MODES = ("closed_loop", "replay")


@dataclass(frozen=True)
class EvaluationProtocol:
    """The evaluator's protocol parameters (seeds resolved by core/protocol.py `resolve_seeds`)."""
    mode: str                           # closed_loop | replay
    lockstep: bool                      # the simulator advances one step per command
    episode_timeout_s: float            # wall-clock limit of one episode
    tasks: list[str]
    seeds: list[int]
    max_steps: int                      # step limit of a closed-loop episode
    min_eval_seed: int                  # seeds below it are the demonstration (training) range
    training_seeds: str                 # refuse | warn | allow (core/protocol.py)
    stage_progress: bool                # stage progress score (core/progress.py) or 1 success / 0
    stage_thresholds: StageThresholds
    early_window_s: float | None = None  # early-warning window (s); None: the shortest episode's span

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"parameter mode: '{self.mode}' unknown; use one of {', '.join(MODES)}")


def protocol_section(protocol: EvaluationProtocol, lockstep_of_nodes: dict) -> dict:
    """report.json's `protocol`; lockstep_of_nodes: node name -> its lockstep parameter (None: no answer)."""
    p, t = protocol, protocol.stage_thresholds
    out = {"mode": p.mode, "time": "lockstep" if p.lockstep else "free_running", "lockstep": p.lockstep,
           "lockstep_of_nodes": lockstep_of_nodes, "episode_timeout_s": p.episode_timeout_s}
    if p.mode == "closed_loop":
        used = training_seeds(p.seeds, p.min_eval_seed)
        out.update({"tasks": p.tasks, "seeds": p.seeds, "episodes_per_task": len(p.seeds),
                    "max_steps": p.max_steps, "min_eval_seed": p.min_eval_seed,
                    "training_seeds": p.training_seeds, "training_seeds_used": used, "held_out": not used})
    out["progress"] = {"stages": list(STAGES) if p.stage_progress else [],
                       "approach_radius_m": t.approach_radius_m, "approach_release_m": t.approach_release_m,
                       "contact_displacement_m": t.contact_displacement_m,
                       "score": "mean over stages: 1 first try, 0.5 after a retry, 0 not reached"
                       if p.stage_progress else "1 success, 0 failure"}
    return out


def monitor_row(success: bool, log: EpisodeLog) -> dict:
    """One episode's input to core/monitor_figures.py `monitor_figures`."""
    return {"success": success, "divergence": [v for _, v in log.divergence],
            "times": [t for t, _ in log.divergence], "psnr": log.psnr, "ssim": log.ssim}


def episode_record(name: str, task: str, seed: int, instruction: str, tracker: EpisodeTracker, log: EpisodeLog,
                   reason: str, bag: str, wall_s: float, frame_dt_s: float, success: bool | None = None,
                   steps: int | None = None, extra: dict | None = None) -> EpisodeRecord:
    """The report record of a finished episode; success and steps default to the tracker's (a
    success's steps: those to its first success, not the one or two commands that may still run
    before the disarm reaches the executor). wall_s: wall-clock duration; frame_dt_s: the robot's
    control period (s)."""
    success = tracker.success if success is None else success
    if steps is None:
        steps = tracker.success_steps if success and tracker.success_steps is not None else tracker.steps
    start = tracker.start
    row = {"duration_s": round(tracker.last_stamp - start, 4), "wall_time_s": round(wall_s, 3), **log.quality()}
    if tracker.staged:
        row["stages"] = tracker.stages.summary()["stages"]
    row.update(extra or {})
    return EpisodeRecord(
        name=name, task=task, seed=seed, success=success, steps=steps,
        time_to_success_s=None if tracker.success_stamp is None else round(tracker.success_stamp - start, 4),
        progress_score=tracker.progress_score, latencies_ms=list(log.latencies_ms),
        divergence=list(log.divergence), real_frames=log.frames, imagined_frames=list(log.imagined.items),
        frame_times_s=log.frame_times_s, frame_dt_s=frame_dt_s,
        imagined_offsets_s=log.imagined_offsets_s, instruction=instruction, bag=bag, reason=reason, extra=row,
        frame_change=list(log.frame_change))


def run_description(protocol: EvaluationProtocol, lockstep_of_nodes: dict, monitor_rows: list[dict],
                    episodes: list[EpisodeRecord], backend: str, robot: str, graph: str,
                    recorded_topics: list[str], replay_bag: str | None = None) -> dict:
    """The run description for `write_run_report`: protocol, summary (imagination monitor figures;
    replay: action L1, commands paired, coverage, the bag), index metrics, notes and tables.
    monitor_rows: `monitor_row` of every episode; replay_bag: the replayed bag's path, if known."""
    monitor = monitor_figures(monitor_rows, protocol.early_window_s)
    notes = []
    if not monitor["episodes"]:
        notes.append("imagination monitor: no imagined frame met a real frame (the backend does not imagine, "
                     "or policy.decode_imagined is false, or no imagination_monitor node ran)")
    else:
        notes.append("imagination monitor: divergence = 1 - SSIM of each imagined frame against the real frame "
                     "at its time (resized to the imagined resolution); failure AUROC uses the per-episode max "
                     "and mean divergence (0.5 = chance). Failed episodes run to the step limit, so the "
                     "whole-episode AUROC also reflects episode length; the common-window AUROC compares every "
                     "episode over the same first seconds only")
    described = protocol_section(protocol, lockstep_of_nodes)
    if described.get("training_seeds_used"):
        notes.append(f"seeds {described['training_seeds_used']} are below min_eval_seed={protocol.min_eval_seed} "
                     "(demonstration range): not a held-out evaluation")
    summary = {"monitor": monitor}
    index = {"divergence_auroc_max": monitor["failure_auroc"]["max_divergence"],
             "imagined_psnr_db": monitor["mean_psnr_db"],
             "progress_score_mean": float(np.mean([e.progress_score for e in episodes])) if episodes else None}
    auc, early, corr = (monitor["failure_auroc"], monitor["failure_auroc_common_window"],
                        monitor["quality_success_correlation"])
    scored, failures = monitor["episodes"], monitor["failures"]
    early_failures = failures if not early["left_out"] else None    # the window's own count is not kept
    tables = {"Imagination monitor": [{
        "episodes scored": scored, "failures": failures,
        "frames compared": monitor["compared_frames"], "mean PSNR (dB)": monitor["mean_psnr_db"],
        "mean SSIM": monitor["mean_ssim"],
        "failure AUROC (max divergence)": auroc_text(auc["max_divergence"], failures, scored),
        "failure AUROC (mean divergence)": auroc_text(auc["mean_divergence"], failures, scored),
        "early window (s)": early["window_s"],
        "early-window failure AUROC (max divergence)": auroc_text(early["max_divergence"], early_failures,
                                                                  early["episodes"]),
        "early-window failure AUROC (mean divergence)": auroc_text(early["mean_divergence"], early_failures,
                                                                   early["episodes"]),
        "PSNR vs success (Pearson)": corr["psnr_db"]["pearson"],
        "SSIM vs success (Pearson)": corr["ssim"]["pearson"]}]}
    if protocol.mode == "replay" and episodes:
        scores = [e.extra["replay"] for e in episodes]
        summary["replay_action_l1"] = scores[0]["l1"] if len(scores) == 1 else \
            float(np.nanmean([s["l1"] for s in scores]))
        summary["replay_commands_matched"] = int(sum(s["matched"] for s in scores))
        summary["replay_coverage"] = scores[0]["coverage"] if len(scores) == 1 else \
            float(np.nanmean([s["coverage"] for s in scores]))
        index["action_l1"] = summary["replay_action_l1"]
        tables["Replay: dry-run commands vs recorded commands (L1 per dimension)"] = [
            {"episode": e.name, **{f"L1 {n}": v for n, v in e.extra["replay"]["per_dim_l1"].items()},
             "L1 all": e.extra["replay"]["l1"], "matched": e.extra["replay"]["matched"],
             "recorded": e.extra["replay"]["recorded"]} for e in episodes]
        if replay_bag:
            summary["replay_bag"] = replay_bag
    return {"mode": protocol.mode, "policy": {"backend": backend}, "robot": robot, "graph": graph,
            "protocol": described, "recorded_topics": recorded_topics, "summary": summary,
            "index_metrics": index, "notes": notes, "tables": tables}
