"""Everything a run's report is computed from, saved beside it, so that runs can be merged.

The evaluator writes `run_record.json` next to report.json: the protocol, the nodes' lockstep
answers, the backend, robot, graph and recorded topics, and every episode's record without its
frames (those are already in videos/ and bags/). A report is always rendered from a RunRecord,
so a run split into shards (evaluation/distributed.py) and merged back here gives the report a
single run of the same episodes would have given: the same rows, summary and monitor figures.
Floats are stored exactly (no rounding); paths of bags and videos relative to the run folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..core.progress import StageThresholds
from .closed_loop_report import EvaluationProtocol, run_description
from .reports import EpisodeRecord, write_run_report

FILE_NAME = "run_record.json"
FORMAT_VERSION = 1
_FRAMES = ("real_frames", "imagined_frames")        # not kept: the run's videos show them


@dataclass
class RunRecord:
    protocol: EvaluationProtocol
    lockstep_of_nodes: dict
    backend: str
    robot: str
    graph: str
    recorded_topics: list[str]
    episodes: list[EpisodeRecord]
    monitor_rows: list[dict]                         # one per episode, same order (closed_loop_report.monitor_row)
    replay_bag: str | None = None
    extra: dict = field(default_factory=dict)        # more top-level report sections (e.g. "distributed")

    def write_report(self, out_dir: str | Path, index_dir: str | Path | None = None) -> dict[str, Path]:
        """report.json / report.md / plots (evaluation.reports.write_run_report) and run_record.json."""
        run = run_description(self.protocol, self.lockstep_of_nodes, self.monitor_rows, self.episodes,
                              self.backend, self.robot, self.graph, self.recorded_topics, self.replay_bag)
        run.update(self.extra)
        written = write_run_report(out_dir, run, self.episodes, index_dir)
        written["run_record"] = self.save(Path(out_dir))
        return written

    # ---- JSON ----------------------------------------------------------------------------
    def save(self, out_dir: Path) -> Path:
        """Write <out_dir>/run_record.json (bag and video paths relative to out_dir)."""
        episodes = []
        for ep in self.episodes:
            row = {f.name: getattr(ep, f.name) for f in dataclasses.fields(ep) if f.name not in _FRAMES}
            row["bag"], row["video"] = _relative(ep.bag, out_dir), _relative(ep.video, out_dir)
            episodes.append(row)
        data = {"version": FORMAT_VERSION, "protocol": dataclasses.asdict(self.protocol),
                "lockstep_of_nodes": self.lockstep_of_nodes, "backend": self.backend, "robot": self.robot,
                "graph": self.graph, "recorded_topics": self.recorded_topics, "replay_bag": self.replay_bag,
                "extra": self.extra, "episodes": episodes, "monitor_rows": self.monitor_rows}
        path = out_dir / FILE_NAME
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, default=_plain))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, run_dir: str | Path) -> "RunRecord":
        """The record of an evaluator output folder; bag and video paths resolved against it."""
        run_dir = Path(run_dir)
        path = run_dir / FILE_NAME
        try:
            data = json.loads(path.read_text())
            if data.get("version") != FORMAT_VERSION:
                raise ValueError(f"format version {data.get('version')}, expected {FORMAT_VERSION}")
            protocol = dict(data["protocol"])
            protocol["stage_thresholds"] = StageThresholds(**protocol["stage_thresholds"])
            episodes = []
            for row in data["episodes"]:
                row = dict(row)
                row["divergence"] = [tuple(p) for p in row["divergence"]]
                for key in ("bag", "video"):
                    row[key] = str(run_dir / row[key]) if row[key] else ""
                episodes.append(EpisodeRecord(**row))
            return cls(EvaluationProtocol(**protocol), data["lockstep_of_nodes"], data["backend"], data["robot"],
                       data["graph"], list(data["recorded_topics"]), episodes, list(data["monitor_rows"]),
                       data.get("replay_bag"), dict(data.get("extra") or {}))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a readable run record: {exc}") from None


def merge_records(parts: list[RunRecord], tasks: list[str] | None = None,
                  seeds: list[int] | None = None) -> RunRecord:
    """One closed-loop run from runs of the same graph, backend and settings on parts of its episodes.

    Episodes are ordered as one evaluator would have run them (task by task, seeds in the order of
    `tasks` and `seeds`; default: as first met, seeds ascending) and the protocol lists every task
    and seed; parts that disagree on anything but their tasks and
    seeds are refused (they would not be one run)."""
    if not parts:
        raise ValueError("no run to merge")
    first = parts[0]
    if first.protocol.mode != "closed_loop":
        raise ValueError(f"only closed_loop runs merge (mode {first.protocol.mode})")

    def settings(r: RunRecord) -> dict:
        p = dataclasses.asdict(r.protocol)
        p.pop("tasks"), p.pop("seeds")
        return {"protocol": p, "backend": r.backend, "robot": r.robot, "graph": r.graph,
                "lockstep_of_nodes": r.lockstep_of_nodes, "recorded_topics": sorted(r.recorded_topics)}
    for i, part in enumerate(parts[1:], 1):
        a, b = settings(first), settings(part)
        if a != b:
            differ = sorted(k for k in a if a[k] != b[k])
            raise ValueError(f"run part {i} differs from part 0 in {differ}: not one run")
    tasks = list(tasks or dict.fromkeys(t for r in parts for t in r.protocol.tasks))
    seeds = list(seeds or sorted(dict.fromkeys(s for r in parts for s in r.protocol.seeds)))
    pairs = [(ep, row) for r in parts for ep, row in zip(r.episodes, r.monitor_rows)]
    seen: dict[tuple[str, int], int] = {}
    for ep, _ in pairs:
        seen[(ep.task, ep.seed)] = seen.get((ep.task, ep.seed), 0) + 1
    doubled = [f"{t}_s{s}" for (t, s), n in seen.items() if n > 1]
    if doubled:
        raise ValueError(f"episodes in more than one part: {doubled}")
    strays = [ep.name for ep, _ in pairs if ep.task not in tasks or ep.seed not in seeds]
    if strays:
        raise ValueError(f"episodes outside tasks {tasks} x seeds {seeds}: {strays}")
    pairs.sort(key=lambda p: (tasks.index(p[0].task), seeds.index(p[0].seed)))
    protocol = dataclasses.replace(first.protocol, tasks=tasks, seeds=seeds)
    return RunRecord(protocol, first.lockstep_of_nodes, first.backend, first.robot, first.graph,
                     first.recorded_topics, [ep for ep, _ in pairs], [row for _, row in pairs])


def _relative(path: str, out_dir: Path) -> str:
    return os.path.relpath(path, out_dir) if path else ""


def _plain(value):
    """JSON for numpy values, unrounded."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
