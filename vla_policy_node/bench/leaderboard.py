"""The policy leaderboard: every backend and checkpoint on one fixed protocol.

Protocol (config/bench/policies.yaml): the default tasks x held-out seeds through the full ROS
graph in lockstep (every node its own process, each episode recorded to rosbag2), then offline
scores of each learned checkpoint on the reference row's recorded episodes (the oracle's: the
same tasks and seeds). A row holds success with its 95% Wilson interval, progress score,
per-task success, per-chunk latency, policy-process peak memory, size, training cost,
imagined-frame quality next to the copy-current-frame baseline and the codec ceiling, and the
imagination monitor's early failure warning. Rows are cached under a key of the protocol, the
row's settings and the checkpoint's content digest, so adding a row does not rerun the others.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..core.embodiment import config_root, load_robot
from ..evaluation.reports import json_safe, markdown_table
from ..models.checkpoint import checkpoint_digest, resolve_checkpoint

CACHE_VERSION = 1


@dataclass
class Row:
    name: str
    backend: str
    checkpoint: str = ""
    reference: bool = False                      # its bags are the offline reference episodes
    set: dict = field(default_factory=dict)      # extra node parameters, {"node.param": value}


@dataclass
class Leaderboard:
    protocol: dict
    rows: list[Row]

    @classmethod
    def load(cls, path: str | Path | None = None) -> "Leaderboard":
        path = Path(path) if path else config_root() / "bench" / "policies.yaml"
        try:
            data = yaml.safe_load(path.read_text())
            rows = [Row(**r) for r in data["rows"]]
            protocol = dict(data["protocol"])
        except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a leaderboard description: {exc}") from None
        references = [r.name for r in rows if r.reference]
        if len(references) != 1:
            raise ValueError(f"{path}: rows: exactly one row needs 'reference: true', found {references}")
        missing = [k for k in ("graph", "robot", "tasks", "seeds", "max_steps", "lockstep", "early_window_s",
                               "offline_stride") if k not in protocol]
        if missing:
            raise ValueError(f"{path}: protocol: missing {missing}")
        for r in rows:
            if r.checkpoint and not (resolve_checkpoint(r.checkpoint) / "config.json").is_file():
                raise ValueError(f"{path}: row {r.name}: checkpoint '{r.checkpoint}' not found (no config.json); "
                                 "train it (make train) or remove the row")
        return cls(protocol, rows)

    @property
    def reference(self) -> Row:
        return next(r for r in self.rows if r.reference)


def training_wall_time_s(training: dict) -> float | None:
    """Wall time of every training stage of a checkpoint (a --init-from stage adds the one before it)."""
    if training.get("wall_time_s") is None:
        return None
    return round(float(training["wall_time_s"]) + float(training.get("init_wall_time_s", 0.0)), 1)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a success rate (scipy)."""
    if n == 0:
        return math.nan, math.nan
    from scipy.stats import binomtest
    ci = binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def row_key(board: Leaderboard, row: Row, reference_key: str | None) -> str:
    """Cache key: protocol, row settings, checkpoint content and (for offline scores) the reference."""

    digest = checkpoint_digest(row.checkpoint) if row.checkpoint else ""
    settings = {k: v for k, v in row.__dict__.items() if k != "checkpoint"}     # content, not path, counts
    blob = json.dumps({"version": CACHE_VERSION, "protocol": board.protocol, "row": settings,
                       "checkpoint": digest, "reference": reference_key}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _overrides(board: Leaderboard, row: Row, out_dir: Path) -> dict:
    p = board.protocol
    lockstep = "true" if p["lockstep"] else "false"
    out = {"policy": {"backend": row.backend},
           "evaluator": {"tasks": "[" + ",".join(p["tasks"]) + "]", "seeds": "[" + ",".join(map(str, p["seeds"])) + "]",
                         "max_steps": str(p["max_steps"]), "output_dir": str(out_dir), "record": "true",
                         "lockstep": lockstep, "early_window_s": str(p["early_window_s"]),
                         "index_dir": str(out_dir.parent.parent / "runs_index")},
           "sim_bridge": {"lockstep": lockstep}, "executor": {"lockstep": lockstep}}
    if row.checkpoint:
        out["policy"]["checkpoint"] = row.checkpoint
    for key, value in {**p.get("set", {}), **row.set}.items():     # the protocol's settings, then the row's
        node, _, param = key.partition(".")
        out.setdefault(node, {})[param] = str(value)
    return out


def run_closed_loop(board: Leaderboard, row: Row, out_dir: Path, ray=None) -> dict:
    """The row's episodes through the full graph; the evaluator's report plus process figures.
    `ray` (evaluation.distributed.RayOptions): every episode a Ray task, merged into the same report."""
    from ..graph_runner import run_graph

    if ray is not None:
        return _run_closed_loop_on_ray(board, row, out_dir, ray)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    result = run_graph(board.protocol["graph"], _overrides(board, row, out_dir), out_dir / "logs",
                       board.protocol["robot"], timeout_s=4 * 3600)
    report_path = out_dir / "report.json"
    if result["error"] or not report_path.is_file():
        raise RuntimeError(f"leaderboard row {row.name}: closed loop failed: {result['error']} (logs in {out_dir})")
    (out_dir / "processes.json").write_text(json.dumps(result, indent=2))
    return {"report": json.loads(report_path.read_text()), "processes": result["processes"],
            "wall_time_s": result["wall_time_s"]}


def _run_closed_loop_on_ray(board: Leaderboard, row: Row, out_dir: Path, ray) -> dict:
    from ..evaluation.distributed import ClosedLoopJob, run_on_ray, set_run_parameters

    overrides = set_run_parameters(_overrides(board, row, out_dir), checkpoint=row.checkpoint or None)
    for param in ("tasks", "seeds", "output_dir", "index_dir"):      # set per episode by the job
        overrides["evaluator"].pop(param)
    p = board.protocol
    result = run_on_ray(ClosedLoopJob(p["graph"], list(p["tasks"]), [int(s) for s in p["seeds"]], p["robot"],
                                      overrides, 4 * 3600), out_dir, ray, progress=False)
    section = result["distributed"]
    if section["failed"] or result["report"] is None:
        raise RuntimeError(f"leaderboard row {row.name}: episodes {section['failed']} failed on Ray (logs in "
                           f"{out_dir / 'shards'})")
    processes: dict = {}          # per node: its largest peak over the episodes' graphs
    for episode in section["per_episode"]:
        for node, info in (episode["tries"][-1].get("processes") or {}).items():
            peak = max(processes.get(node, {}).get("peak_rss_mb", 0.0), info["peak_rss_mb"])
            processes[node] = {**info, "peak_rss_mb": peak}
    (out_dir / "processes.json").write_text(json.dumps({"processes": processes, "distributed": section}, indent=2))
    return {"report": json.loads(Path(result["report"]).read_text()), "processes": processes,
            "wall_time_s": section["wall_time_s"]}


def run_offline_scores(board: Leaderboard, row: Row, reference_bags: Path, out_dir: Path) -> dict:
    """The checkpoint open loop on the reference row's recorded episodes."""
    from ..evaluation.offline import OfflineEvalConfig, run_offline

    config = OfflineEvalConfig(bags=[reference_bags], checkpoint=row.checkpoint, robot=board.protocol["robot"],
                               output=out_dir, stride=board.protocol["offline_stride"], videos=2,
                               index_dir=out_dir.parent.parent / "runs_index")
    result = run_offline(config)
    if not result["paths"]:
        raise RuntimeError(f"leaderboard row {row.name}: no reference episode could be scored offline "
                           f"({result['skipped'][:2]})")
    return result["summary"]


def early_warning_scores(report: dict, window_s: float) -> list[dict]:
    """Per episode: the largest imagination divergence over its first window_s seconds (None when
    no imagined frame met a real one in that window) and whether it failed."""
    out = []
    for e in report["episodes"]:
        early = [v for t, v in e.get("divergence", {}).get("series", []) if t <= window_s]
        out.append({"episode": e["name"], "failed": not e["success"], "max_divergence": max(early) if early else None})
    return out


def assemble_row(board: Leaderboard, row: Row, closed: dict, offline: dict | None, description: dict) -> dict:
    """One leaderboard row from the closed-loop report, the offline summary and the backend's description."""
    report = closed["report"]
    summary = report["summary"]
    episodes = report["episodes"]
    n, k = len(episodes), sum(int(e["success"]) for e in episodes)
    low, high = wilson_interval(k, n)
    progress = [e["progress_score"] for e in episodes if e.get("progress_score") is not None]
    monitor = summary.get("monitor", {})
    early = monitor.get("failure_auroc_common_window", {})
    training = description.get("training") or {}
    out = {"name": row.name, "backend": row.backend, "checkpoint": row.checkpoint or None,
           "episodes": n, "successes": k, "success_rate": k / n if n else math.nan,
           "success_ci95": [low, high], "progress_score": sum(progress) / len(progress) if progress else math.nan,
           "per_task": {t: v["success_rate"] for t, v in summary["per_task"].items()},
           "latency_ms": {"p50": summary["latency_ms"]["p50"], "p95": summary["latency_ms"]["p95"],
                          "chunks": summary["latency_ms"]["n"]},
           "policy_peak_rss_mb": closed["processes"].get("policy", {}).get("peak_rss_mb"),
           "parameters": description.get("parameters"), "checkpoint_mb": description.get("checkpoint_mb"),
           "training_wall_time_s": training_wall_time_s(training),
           "demonstrations": (sum(training["demonstrations_per_task"].values())
                              if training.get("demonstrations_per_task") else training.get("episodes")),
           "demonstrations_per_task": training.get("demonstrations_per_task"),
           "videos": sum((training.get("videos_per_task") or {}).values()),
           "video_actions": training.get("video_actions") or None,
           "early_warning_auroc": {"window_s": early.get("window_s"), "max_divergence": early.get("max_divergence"),
                                   "mean_divergence": early.get("mean_divergence"),
                                   "episodes": monitor.get("episodes", 0)},
           "early_warning_scores": early_warning_scores(report, board.protocol["early_window_s"]),
           "closed_loop_wall_time_s": closed["wall_time_s"],
           "held_out": report.get("protocol", {}).get("held_out")}
    if offline is not None:
        frames = offline["offline"]["frames"]
        out["offline"] = {"action_l1": offline["offline"]["actions"]["l1"],
                          "gripper_accuracy": offline["offline"]["gripper_accuracy"],
                          "imagined": {str(o): {key: v[key] for key in ("psnr", "ssim", "copy_psnr", "copy_ssim",
                                                                        "ceiling_psnr", "ceiling_ssim", "n")}
                                       for o, v in frames.items()}}
    return out


def _describe(board: Leaderboard, row: Row) -> dict:
    from ..models.registry import make_backend

    options = {"checkpoint": row.checkpoint} if row.checkpoint else {}
    backend = make_backend(row.backend, load_robot(board.protocol["robot"]), **options)
    try:
        return backend.describe()
    finally:
        backend.close()


def run_leaderboard(board: Leaderboard, out_dir: Path, only: list[str] | None = None, force: bool = False,
                    log=print, ray=None) -> list[dict]:
    """Every row (cached ones read back), reference first; writes policies.json and policies.md.
    ray: evaluation.distributed.RayOptions to run each row's episodes on Ray (same results in lockstep)."""
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    runs = out_dir / "policies"
    ordered = [board.reference] + [r for r in board.rows if not r.reference]
    reference_key = row_key(board, board.reference, None)
    results = []
    for row in ordered:
        key = row_key(board, row, None if row.reference else reference_key)
        cached = runs / "cache" / f"{row.name}-{key}.json"
        wanted = only is None or row.name in only
        if cached.is_file() and not (force and wanted):
            log(f"leaderboard: {row.name}: cached ({cached.name})")
            results.append(json.loads(cached.read_text()))
            continue
        if not wanted:
            log(f"leaderboard: {row.name}: not run (not selected, no cached result)")
            continue
        started = time.monotonic()
        log(f"leaderboard: {row.name}: {len(board.protocol['tasks']) * len(board.protocol['seeds'])} episodes "
            "through the graph")
        closed = run_closed_loop(board, row, runs / row.name / "closed_loop", ray)
        offline = None
        if not row.reference:
            reference_bags = runs / board.reference.name / "closed_loop" / "bags"
            if not reference_bags.is_dir():
                raise RuntimeError(f"leaderboard: reference row {board.reference.name} has no recorded episodes "
                                   f"in {reference_bags}; run it first (--force {board.reference.name})")
            log(f"leaderboard: {row.name}: offline scores on {reference_bags}")
            offline = run_offline_scores(board, row, reference_bags, runs / row.name / "offline")
        result = json_safe(assemble_row(board, row, closed, offline, _describe(board, row)))
        result["key"] = key
        result["bench_wall_time_s"] = round(time.monotonic() - started, 1)
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_text(json.dumps(result, indent=2))
        results.append(result)
        log(f"leaderboard: {row.name}: {result['successes']}/{result['episodes']} successes")
    write_leaderboard(board, results, out_dir)
    return results


def _fmt(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _videos(result: dict) -> str:
    """" + 250 videos" ("IDM-labelled" when an inverse-dynamics model gave them actions), or ""."""
    if not result.get("videos"):
        return ""
    labelled = " IDM-labelled" if result.get("video_actions") == "inverse_dynamics" else ""
    return f" + {result['videos']}{labelled} videos"


def leaderboard_tables(board: Leaderboard, results: list[dict]) -> dict[str, list[dict]]:
    """Rows of the markdown tables: main figures, per task, imagination."""
    main, per_task, imagination = [], [], []
    offsets = sorted({int(o) for r in results for o in r.get("offline", {}).get("imagined", {})})
    for r in results:
        low, high = r["success_ci95"]
        training = r.get("training_wall_time_s")
        main.append({"policy": r["name"], "success": f"{r['successes']}/{r['episodes']} = {_fmt(r['success_rate'])}",
                     "95% CI (Wilson)": f"[{_fmt(low)}, {_fmt(high)}]", "progress": _fmt(r["progress_score"]),
                     "latency p50 / p95 (ms)": f"{_fmt(r['latency_ms']['p50'], 0)} / {_fmt(r['latency_ms']['p95'], 0)}",
                     "policy peak RSS (MiB)": _fmt(r["policy_peak_rss_mb"], 0),
                     "parameters": f"{r['parameters'] / 1e6:.2f} M" if r.get("parameters") else "-",
                     "checkpoint (MB)": _fmt(r.get("checkpoint_mb"), 1),
                     "training (min)": _fmt(training / 60.0, 0) if training else "-",
                     "demos": _fmt(r.get("demonstrations")) + _videos(r),
                     "action L1 vs expert": _fmt(r.get("offline", {}).get("action_l1"), 3),
                     f"early warning AUROC (first {_fmt(board.protocol['early_window_s'], 1)} s)":
                         _fmt(r["early_warning_auroc"]["max_divergence"])})
        per_task.append({"policy": r["name"], **{t: _fmt(v) for t, v in r["per_task"].items()}})
        imagined = r.get("offline", {}).get("imagined", {})
        if imagined:
            row = {"policy": r["name"]}
            for o in offsets:
                v = imagined.get(str(o))
                if v:
                    row[f"+{o} PSNR / SSIM"] = f"{_fmt(v['psnr'], 1)} / {_fmt(v['ssim'], 3)}"
                    row[f"+{o} copy"] = f"{_fmt(v['copy_psnr'], 1)} / {_fmt(v['copy_ssim'], 3)}"
                    row[f"+{o} ceiling"] = f"{_fmt(v['ceiling_psnr'], 1)} / {_fmt(v['ceiling_ssim'], 3)}"
            imagination.append(row)
    return {"main": main, "per_task": per_task, "imagination": imagination}


def plot_early_warning(board: Leaderboard, results: list[dict], path: Path) -> Path | None:
    """ROC curves of the early failure warning, one per row whose episodes were scored and failed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = plt.subplots(figsize=(5.0, 5.0))
    drawn = 0
    for r in results:
        scored = [s for s in r.get("early_warning_scores", []) if s["max_divergence"] is not None]
        labels = [int(s["failed"]) for s in scored]
        if len(set(labels)) < 2:
            continue
        scores = [s["max_divergence"] for s in scored]
        fpr, tpr, _ = roc_curve(labels, scores)
        ax.plot(fpr, tpr, drawstyle="steps-post",
                label=f"{r['name']}: AUROC {roc_auc_score(labels, scores):.2f} ({sum(labels)} failed / {len(labels)})")
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
    ax.set_xlabel("false alarm rate (successful episodes flagged)")
    ax.set_ylabel("failures caught")
    ax.set_title(f"Early failure warning: max divergence in the first {board.protocol['early_window_s']:g} s")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_leaderboard(board: Leaderboard, results: list[dict], out_dir: Path) -> tuple[Path, Path]:

    out_dir.mkdir(parents=True, exist_ok=True)
    roc = plot_early_warning(board, results, out_dir / "policies_early_warning.png")
    json_path, md_path = out_dir / "policies.json", out_dir / "policies.md"
    json_path.write_text(json.dumps({"protocol": board.protocol, "rows": results}, indent=2))
    p = board.protocol
    tables = leaderboard_tables(board, results)
    lines = ["# Policy leaderboard", "",
             f"{len(p['tasks'])} tasks x {len(p['seeds'])} held-out seeds ({p['seeds'][0]}-{p['seeds'][-1]}) = "
             f"{len(p['tasks']) * len(p['seeds'])} episodes per row through the `{p['graph']}` graph "
             f"({'lockstep' if p['lockstep'] else 'free-running'}, at most {p['max_steps']} steps); offline scores "
             f"on the `{board.reference.name}` row's recorded episodes (every {p['offline_stride']}th step).", "",
             *markdown_table(tables["main"]), "", "## Success per task", "", *markdown_table(tables["per_task"])]
    if tables["imagination"]:
        lines += ["", "## Imagined frames vs the real future (PSNR dB / SSIM)", "",
                  "copy: the current frame as the prediction (nothing moves); ceiling: the real future frame "
                  "through the backend's own frame codec (the best it could imagine).", "",
                  *markdown_table(tables["imagination"])]
    lines += ["", "Success intervals are 95% Wilson score intervals over the row's episodes. Latency is per chunk in "
              "the closed loop (policy process, 2-core machine shared with the simulator). The early warning "
              "is the failure AUROC of each episode's largest imagination divergence (1 - SSIM) over the "
              f"first {p['early_window_s']} s (0.5 = chance)" + (f"; ROC curves in {roc.name}." if roc else ".")]
    md_path.write_text("\n".join(lines) + "\n")
    return json_path, md_path
