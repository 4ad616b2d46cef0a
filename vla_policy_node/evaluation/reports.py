"""Run reports: report.json, report.md, plots/*.png, videos/<episode>.mp4 and a run index.

One writer for closed-loop and offline runs. `write_run_report` lays out

    <out_dir>/report.json        the caller's run description + computed summary + one row per episode
    <out_dir>/report.md          the same as tables a person reads
    <out_dir>/plots/*.png        success per task, latency histogram, action error per horizon step,
                                 imagination divergence over time (successful vs failed episodes)
    <out_dir>/videos/<name>.mp4  real frame left, imagined frame for that time right
    <index_dir>/index.json, index.md   one row per run, so checkpoints or executor modes compare side by side

report.json holds the run description at the top level, `summary` with episodes / successes /
success_rate / per_task, and `episodes` rows with task, seed, success, steps, instruction, bag:
what `data.dataset.load_dataset` reads to train on an evaluator's output.

Keys of `summary` (the caller's run description) the writer understands, all optional:
    policy: {backend, checkpoint}, robot, mode (closed_loop | offline), executor: {mode}
    summary: {...}        run-level figures merged into the computed summary
    index_metrics: {...}  extra columns of the run index (e.g. action_l1, imagined_psnr_db)
    tables: {title: [row dict, ...]}   rendered as markdown tables in report.md, kept in report.json
    notes: [str, ...]     rendered as a bullet list in report.md
    skipped: [{bag, reason}, ...]      inputs that produced no episode, listed in report.md
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tabulate import tabulate

from ..core.metrics import auroc, auroc_text, correlation

VIDEO_PANEL_PX = 256          # small frames are up-scaled to at least this height per panel
VIDEO_MAX_FPS = 20.0          # playback rate cap: 80 Hz control-rate frames play slowed down
TIME_RESOLUTION_S = 1e-6      # times of real and imagined frames are paired in whole microseconds


@dataclass
class EpisodeRecord:
    """One episode of a run. Times in s from the episode start; frames RGB uint8 HxWx3.

    divergence: (time of the real frame compared, 1 - SSIM of imagined vs real frame) pairs.
    imagined_frames: one (time of the chunk's source observation, frames imagined by that chunk)
    pair per chunk; frame j is for time + imagined_offsets_s[j] (without offsets: + j * frame_dt_s).
    action_error_per_step: mean L1 action error per horizon step (offline, against recorded actions).
    progress_score: in [0, 1], how far the episode got (1 = success).
    """
    name: str
    task: str
    seed: int
    success: bool
    steps: int
    time_to_success_s: float | None = None
    progress_score: float = math.nan
    latencies_ms: list[float] = field(default_factory=list)
    divergence: list[tuple[float, float]] = field(default_factory=list)
    real_frames: list[np.ndarray] = field(default_factory=list)
    imagined_frames: list[tuple[float, list[np.ndarray]]] = field(default_factory=list)
    action_error_per_step: list[float] | None = None
    frame_times_s: list[float] | None = None       # time of each real frame; None: i * frame_dt_s
    frame_dt_s: float = 0.1
    imagined_offsets_s: list[float] | None = None
    instruction: str = ""
    bag: str = ""
    reason: str = ""                                # success | step_limit | timeout | error: ... | recorded
    extra: dict = field(default_factory=dict)       # more per-episode figures, copied into the row
    video: str = ""                                 # its video, when written before the report (frames dropped)
    frame_change: list[tuple[float, float]] = field(default_factory=list)    # (s, 1 - SSIM to the frame before)


# ---------------------------------------------------------------------------------------------
def json_safe(value):
    """JSON-safe value: nan -> None, +-inf -> "inf" / "-inf", numpy scalars -> Python."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return round(value, 6)
    return value


def _percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def _mean(values: Sequence[float]) -> float | None:
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(values)) if values else None


def episode_row(ep: EpisodeRecord) -> dict:
    """The report.json row of an episode: everything but frames and long series."""
    divergence = [v for _, v in ep.divergence]
    row = {"name": ep.name, "task": ep.task, "seed": ep.seed, "instruction": ep.instruction,
           "success": bool(ep.success), "steps": int(ep.steps), "time_to_success_s": ep.time_to_success_s,
           "progress_score": ep.progress_score, "reason": ep.reason, "bag": ep.bag,
           "latency_ms": {"p50": _percentile(ep.latencies_ms, 50), "p95": _percentile(ep.latencies_ms, 95),
                          "n": len(ep.latencies_ms)},
           "divergence": {"mean": _mean(divergence), "max": max(divergence) if divergence else None,
                          "n": len(divergence),
                          "series": [[round(float(t), 4), float(v)] for t, v in ep.divergence]},
           "action_error_per_step": ep.action_error_per_step}
    if ep.frame_change:                   # evaluator.score_frame_change: the detector that imagines nothing
        row["frame_change"] = {"series": [[round(float(t), 4), round(float(v), 6)] for t, v in ep.frame_change]}
    row.update(ep.extra)
    return row


def summarize_episodes(episodes: Sequence[EpisodeRecord]) -> dict:
    """Success per task, latency percentiles and how well imagination divergence predicts failure."""
    per_task: dict[str, dict] = {}
    for ep in episodes:
        t = per_task.setdefault(ep.task, {"episodes": 0, "successes": 0, "steps": [], "times": []})
        t["episodes"] += 1
        t["successes"] += int(ep.success)
        if ep.success:
            t["steps"].append(ep.steps)
            if ep.time_to_success_s is not None:
                t["times"].append(ep.time_to_success_s)
    for t in per_task.values():
        steps, times = t.pop("steps"), t.pop("times")
        t["success_rate"] = t["successes"] / t["episodes"]
        t["mean_steps_to_success"] = float(np.mean(steps)) if steps else None
        t["mean_time_to_success_s"] = float(np.mean(times)) if times else None
    n = len(episodes)
    successes = sum(int(ep.success) for ep in episodes)
    latencies = [v for ep in episodes for v in ep.latencies_ms]
    scored = [(np.mean([v for _, v in ep.divergence]), int(not ep.success)) for ep in episodes if ep.divergence]
    failure_auroc = auroc([s for s, _ in scored], [f for _, f in scored]) if scored else math.nan
    progress = correlation([ep.progress_score for ep in episodes], [float(ep.success) for ep in episodes])
    sim_s = sum(ep.extra.get("duration_s") or 0.0 for ep in episodes)
    wall_s = sum(ep.extra.get("wall_time_s") or 0.0 for ep in episodes)
    return {"episodes": n, "successes": successes, "success_rate": successes / n if n else 0.0,
            "per_task": per_task,
            # sim s per wall s over the episodes: 1 x real time and above only where the machine keeps up
            "real_time_factor": sim_s / wall_s if wall_s > 0 else None,
            "latency_ms": {"p50": _percentile(latencies, 50), "p95": _percentile(latencies, 95),
                           "mean": _mean(latencies), "n": len(latencies)},
            "divergence_failure_auroc": failure_auroc,
            "divergence_failure_auroc_episodes": len(scored),
            "divergence_failure_auroc_failures": sum(f for _, f in scored),
            "progress_success_correlation": progress}


# ---------------------------------------------------------------------------------------------
def _new_figure(width_in: float = 6.0, height_in: float = 4.0):
    """A figure drawn on the Agg canvas (no pyplot, no display, safe in any thread)."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width_in, height_in), dpi=100, layout="constrained")
    return fig, fig.add_subplot()


def plot_success_per_task(episodes: Sequence[EpisodeRecord], path: Path) -> str | None:
    """Bar chart of the success rate per task; returns why it was skipped, else None."""
    if not episodes:
        return "no episodes"
    per_task = summarize_episodes(episodes)["per_task"]
    names = sorted(per_task)
    fig, ax = _new_figure(max(4.0, 0.8 * len(names) + 2), 4.0)
    rates = [per_task[n]["success_rate"] for n in names]
    bars = ax.bar(names, rates, color="tab:green")
    for bar, name in zip(bars, names):
        ax.annotate(f"{per_task[name]['successes']}/{per_task[name]['episodes']}",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom")
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("success rate")
    ax.set_title("Success per task")
    ax.tick_params(axis="x", labelrotation=30)
    fig.savefig(path)
    return None


def plot_latency_histogram(episodes: Sequence[EpisodeRecord], path: Path) -> str | None:
    latencies = np.array([v for ep in episodes for v in ep.latencies_ms], dtype=np.float64)
    if latencies.size == 0:
        return "no latency measurements"
    fig, ax = _new_figure()
    ax.hist(latencies, bins=min(50, max(5, latencies.size // 5)), color="tab:blue")
    for q, style in ((50, "--"), (95, ":")):
        value = np.percentile(latencies, q)
        ax.axvline(value, color="k", linestyle=style, label=f"p{q} {value:.1f} ms")
    ax.set_xlabel("latency per chunk (ms)")
    ax.set_ylabel("chunks")
    ax.set_title("Inference latency")
    ax.legend()
    fig.savefig(path)
    return None


def plot_action_error_per_step(episodes: Sequence[EpisodeRecord], path: Path) -> str | None:
    rows = [ep.action_error_per_step for ep in episodes if ep.action_error_per_step]
    if not rows:
        return "no action errors (closed-loop runs have no recorded target actions)"
    horizon = max(len(r) for r in rows)
    table = np.full((len(rows), horizon), np.nan)
    for i, r in enumerate(rows):
        table[i, : len(r)] = np.asarray(r, dtype=np.float64)
    steps = np.arange(horizon)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)          # a step no episode reached: nan
        mean, std = np.nanmean(table, axis=0), np.nanstd(table, axis=0)
    fig, ax = _new_figure()
    ax.plot(steps, mean, marker="o", color="tab:orange", label=f"mean over {len(rows)} episodes")
    ax.fill_between(steps, np.maximum(mean - std, 0.0), mean + std, color="tab:orange", alpha=0.25, label="+-1 std")
    ax.set_xlabel("horizon step")
    ax.set_ylabel("L1 action error (action units)")
    ax.set_title("Action error per horizon step")
    ax.legend()
    fig.savefig(path)
    return None


def plot_divergence_over_time(episodes: Sequence[EpisodeRecord], path: Path) -> str | None:
    with_div = [ep for ep in episodes if ep.divergence]
    if not with_div:
        return "no imagination divergence recorded"
    fig, ax = _new_figure(7.0, 4.0)
    for outcome, color in ((True, "tab:green"), (False, "tab:red")):
        group = [ep for ep in with_div if bool(ep.success) == outcome]
        for i, ep in enumerate(group):
            times, values = zip(*sorted(ep.divergence))
            ax.plot(times, values, color=color, alpha=0.5, linewidth=1,
                    label=f"{'successful' if outcome else 'failed'} ({len(group)})" if i == 0 else None)
    ax.set_xlabel("time in episode (s)")
    ax.set_ylabel("divergence (1 - SSIM)")
    ax.set_title("Imagined vs real frames over time")
    ax.legend()
    fig.savefig(path)
    return None


PLOTS = {"success_per_task": plot_success_per_task, "latency_histogram": plot_latency_histogram,
         "action_error_per_step": plot_action_error_per_step, "divergence_over_time": plot_divergence_over_time}


# ---------------------------------------------------------------------------------------------
def _panel(frame: np.ndarray | None, size: int, label: str) -> np.ndarray:
    """A size x size RGB panel: the frame up-scaled (nearest, pixels stay visible) or a blank, labelled."""
    if frame is None:
        panel = np.full((size, size, 3), 40, np.uint8)
    else:
        frame = np.asarray(frame, dtype=np.uint8)
        panel = cv2.resize(frame, (size, size), interpolation=cv2.INTER_NEAREST if frame.shape[0] < size
                           else cv2.INTER_AREA)
    panel = np.ascontiguousarray(panel)
    cv2.rectangle(panel, (0, 0), (size, 18), (0, 0, 0), thickness=-1)
    cv2.putText(panel, label, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return panel


def _microseconds(times) -> np.ndarray:
    """Times (s) in whole microseconds, so that an offset that crossed the wire as float32 (0.1 s
    arrives as 0.10000000149 s) lands on the instant it names, and predictions of one instant by
    several chunks tie."""
    return np.rint(np.asarray(times, dtype=np.float64) / TIME_RESOLUTION_S).astype(np.int64)


def _imagined_timeline(ep: EpisodeRecord) -> tuple[np.ndarray, list[tuple[float, np.ndarray]]]:
    """Imagined frames sorted by the time they were imagined for: (target times in whole us,
    [(source time s, frame)]); of frames for the same time the most recent source comes last."""
    items = []
    for source_t, frames in ep.imagined_frames:
        for j, frame in enumerate(frames):
            offset = ep.imagined_offsets_s[j] if ep.imagined_offsets_s else j * ep.frame_dt_s
            items.append((float(source_t) + float(offset), float(source_t), frame))
    targets = _microseconds([x[0] for x in items])
    order = sorted(range(len(items)), key=lambda i: (targets[i], items[i][1]))
    return targets[order], [(items[i][1], items[i][2]) for i in order]


def write_episode_video(ep: EpisodeRecord, path: Path) -> int:
    """mp4 of the episode: real frame left; right, the imagined frame whose time has come: of the
    imagined frames for the latest time at or before the real frame's (the most recent prediction
    of that time), held until the next one's time; before the first, a blank "no imagination"
    panel. Times are compared in whole microseconds. Returns the frame count."""
    frames = ep.real_frames
    times = np.asarray(ep.frame_times_s if ep.frame_times_s is not None
                       else np.arange(len(frames)) * ep.frame_dt_s, dtype=np.float64)
    if len(times) != len(frames):
        raise ValueError(f"episode {ep.name}: {len(frames)} real frames but {len(times)} frame times")
    dt = float(np.median(np.diff(times))) if len(times) > 1 else ep.frame_dt_s
    fps = min(1.0 / dt if dt > 0 else VIDEO_MAX_FPS, VIDEO_MAX_FPS)
    size = max(VIDEO_PANEL_PX, max(np.asarray(f).shape[0] for f in frames))
    targets, imagined = _imagined_timeline(ep)
    shown = np.searchsorted(targets, _microseconds(times), side="right") - 1
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (2 * size, size))
    if not writer.isOpened():
        raise OSError(f"{path}: OpenCV cannot write mp4 here")
    try:
        for frame, t, k in zip(frames, times, shown):
            left = _panel(frame, size, f"real t={t:.3f}s")
            if k >= 0:
                source_t, img = imagined[k]
                right = _panel(img, size, f"imagined for t={targets[k] * TIME_RESOLUTION_S:.3f}s "
                                          f"(from t={source_t:.3f}s)")
            else:
                right = _panel(None, size, "no imagination")
            writer.write(cv2.cvtColor(np.concatenate([left, right], axis=1), cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return len(frames)


# ---------------------------------------------------------------------------------------------
def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(rows: Sequence[dict]) -> list[str]:
    """Rows of dicts -> GitHub markdown table lines (columns = union of keys, in first-seen order;
    cells formatted by `_fmt`, a "|" inside a cell shown as "/")."""
    if not rows:
        return ["(none)"]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    cells = [[_fmt(row.get(c)).replace("|", "/") for c in columns] for row in rows]
    return tabulate(cells, headers=columns, tablefmt="github", disable_numparse=True).splitlines()


def render_markdown(report: dict, skipped_plots: dict[str, str], plots: dict[str, Path],
                    videos: dict[str, Path], out_dir: Path) -> str:
    s = report["summary"]
    policy = report.get("policy", {})
    title = f"# {report.get('mode', 'evaluation').replace('_', ' ').capitalize()} report: " \
            f"{policy.get('backend', '?')} on {report.get('robot', '?')}"
    lines = [title, ""]
    described = {"checkpoint": policy.get("checkpoint"), "executor mode": report.get("executor", {}).get("mode"),
                 "created": report.get("created")}
    lines += [f"- {k}: `{v}`" for k, v in described.items() if v]
    headline = [f"**Success rate {s['success_rate']:.2f}** ({s['successes']}/{s['episodes']} episodes)"]
    lat = s["latency_ms"]
    if lat["n"]:
        headline.append(f"latency p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms over {lat['n']} chunks")
    if s["divergence_failure_auroc_episodes"]:
        auc = auroc_text(s["divergence_failure_auroc"], s["divergence_failure_auroc_failures"],
                         s["divergence_failure_auroc_episodes"])
        headline.append(f"failure prediction from mean imagination divergence: AUROC {auc}")
    lines += ["", "; ".join(headline) + "."]
    lines += ["", "## Per task", ""]
    lines += markdown_table([{"task": task, "episodes": t["episodes"], "success rate": t["success_rate"],
                              "mean steps to success": t["mean_steps_to_success"],
                              "mean time to success (s)": t["mean_time_to_success_s"]}
                             for task, t in s["per_task"].items()])
    for title_, rows in report.get("tables", {}).items():
        lines += ["", f"## {title_}", ""] + markdown_table(rows)
    if report.get("skipped"):
        lines += ["", "## Skipped inputs", ""] + markdown_table(report["skipped"])
    if report.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {note}" for note in report["notes"]]
    lines += ["", "## Episodes", ""]
    lines += markdown_table([{"episode": e["name"], "task": e["task"], "seed": e["seed"], "success": e["success"],
                              "steps": e["steps"], "time to success (s)": e["time_to_success_s"],
                              "progress": e["progress_score"], "latency p50 (ms)": e["latency_ms"]["p50"],
                              "divergence mean": e["divergence"]["mean"], "reason": e["reason"] or None}
                             for e in report["episodes"]])
    lines += ["", "## Plots", ""]
    for name in PLOTS:
        if name in plots:
            lines.append(f"![{name}]({plots[name].relative_to(out_dir)})")
        else:
            lines.append(f"- {name}: not drawn ({skipped_plots[name]})")
    lines += ["", "## Videos", ""]
    if videos:
        lines += [f"- [{name}]({p.relative_to(out_dir)})" for name, p in videos.items()]
        lines.append(f"\nReal frame left, imagined frame right; playback at most {VIDEO_MAX_FPS:.0f} frames/s.")
    else:
        lines.append("- none (no episode carried real frames)")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
INDEX_COLUMNS = ("run", "created", "mode", "backend", "checkpoint", "executor_mode", "robot", "episodes",
                 "success_rate", "latency_p50_ms")


def _index_row(report: dict, report_path: Path) -> dict:
    policy = report.get("policy", {})
    row = {"run": str(report_path.parent.resolve()), "created": report.get("created"),
           "mode": report.get("mode"),
           "backend": policy.get("backend", report.get("backend")),
           "checkpoint": policy.get("checkpoint", report.get("checkpoint")),
           "executor_mode": report.get("executor", {}).get("mode", report.get("executor_mode")),
           "robot": report.get("robot"), "episodes": report["summary"]["episodes"],
           "success_rate": report["summary"]["success_rate"],
           "latency_p50_ms": report["summary"]["latency_ms"]["p50"]}
    row.update(report.get("index_metrics", {}))
    return row


def append_to_index(index_dir: Path, report: dict, report_path: Path) -> tuple[Path, Path]:
    """Add the run to index.json / index.md (a run already listed under the same folder is replaced).
    A lock file serializes runs finishing at the same time."""
    index_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = index_dir / "index.json", index_dir / "index.md"
    row = json_safe(_index_row(report, report_path))
    with open(index_dir / ".index.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = []
        if json_path.is_file():
            try:
                rows = json.loads(json_path.read_text())["runs"]
            except (ValueError, KeyError, TypeError):
                rows = []                    # an unreadable index is rebuilt from this run on
        rows = [r for r in rows if r.get("run") != row["run"]] + [row]
        tmp = json_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"runs": rows}, indent=2))
        os.replace(tmp, json_path)
        shown = [{**{c: r.get(c) for c in INDEX_COLUMNS},
                  **{k: v for k, v in r.items() if k not in INDEX_COLUMNS}} for r in rows]
        md = ["# Evaluation runs", "", "One row per run (newest last); `run` is the report folder.", ""]
        md += markdown_table(shown)
        tmp = md_path.with_suffix(".md.tmp")
        tmp.write_text("\n".join(md) + "\n")
        os.replace(tmp, md_path)
    return json_path, md_path


def write_run_report(out_dir: str | Path, summary: dict, episodes: list[EpisodeRecord],
                     index_dir: str | Path | None = None) -> dict[str, Path]:
    """Write report.json, report.md, plots/*.png and videos/*.mp4 into out_dir and append the run
    to the run index (default out_dir.parent / "runs_index"). Returns {name: path} of every file
    written: "report_json", "report_md", "plot:<name>", "video:<episode>", "index_json", "index_md"."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **summary}
    report["summary"] = {**summarize_episodes(episodes), **summary.get("summary", {})}
    report["episodes"] = [episode_row(ep) for ep in episodes]

    written: dict[str, Path] = {}
    plots: dict[str, Path] = {}
    skipped_plots: dict[str, str] = {}
    (out / "plots").mkdir(exist_ok=True)
    for name, draw in PLOTS.items():
        path = out / "plots" / f"{name}.png"
        reason = draw(episodes, path)
        if reason is None:
            plots[name] = written[f"plot:{name}"] = path
        else:
            skipped_plots[name] = reason
            path.unlink(missing_ok=True)      # never leave a stale plot of an earlier run
    videos: dict[str, Path] = {}
    for ep in episodes:
        if ep.real_frames:
            path = out / "videos" / f"{ep.name}.mp4"
            write_episode_video(ep, path)
            videos[ep.name] = written[f"video:{ep.name}"] = path
        elif ep.video and Path(ep.video).is_file():
            videos[ep.name] = written[f"video:{ep.name}"] = Path(ep.video)
    report["plots"] = {name: str(p.relative_to(out)) for name, p in plots.items()}
    report["plots_skipped"] = skipped_plots
    report["videos"] = {name: os.path.relpath(p, out) for name, p in videos.items()}

    written["report_json"] = out / "report.json"
    written["report_json"].write_text(json.dumps(json_safe(report), indent=2))
    written["report_md"] = out / "report.md"
    written["report_md"].write_text(render_markdown(report, skipped_plots, plots, videos, out))
    index = Path(index_dir) if index_dir is not None else out.resolve().parent / "runs_index"
    written["index_json"], written["index_md"] = append_to_index(index, report, written["report_json"])
    return written
