"""Closed-loop evaluation split over a Ray cluster: one graph per episode, merged into one report.

Each episode (task, seed) of the protocol is one Ray task that runs the whole graph, every node
its own process as in a local run, into a scratch folder on the worker, isolated from the other
graphs on that machine by its own ROS_DOMAIN_ID (and discovery kept on the host). The task
returns the folder (report, run record, bag, video, logs) as a compressed archive; the driver
unpacks bags into <output>/bags, videos into <output>/videos, logs into <output>/shards/<episode>,
and renders one report from the merged run records (evaluation/run_record.py): the report a
local run of the same episodes writes. A task that fails (the graph failed, the worker or its
machine was lost) is submitted again up to `retries` times; every retry and every episode
still missing at the end is named in the report's `distributed` section.

Without an address a local Ray instance is started (its CPUs: this machine's), even when a
cluster started with `ray start` runs on this machine; with one (`ray start --head` / KubeRay's
service, e.g. head:6379, ray://head:10001 or auto) the episodes run on the cluster's nodes. A node
runs the episode from its own install of this package (config/ and the node executables from
there, whatever its working directory) and reads the checkpoint at the absolute path the driver
gives (a shared filesystem, or a copy at that path); a graph or robot file given by a relative
path is made absolute. Domain ids are handed out cluster-wide, so no two graphs share one. The
report names the node (Ray node id and IP) of every attempt. docs/distributed.md says what a
node needs.
"""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
import socket
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .run_record import RunRecord, merge_records

# Fast DDS maps domain d to UDP ports 7400 + 250 d (+ offsets): 0-101 stay clear of Linux's
# ephemeral ports. Concurrent graphs get base, base + 1, ...; the default leaves 0-79 to users.
DEFAULT_DOMAIN_BASE = 80
MAX_DOMAIN_ID = 101


@dataclass(frozen=True)
class ClosedLoopJob:
    """One closed-loop evaluation: a graph with node parameters over tasks x seeds.

    overrides: node -> {param: value string}, as `vla-graph --set node.param:=value` gives them;
    the evaluator's tasks, seeds, output_dir and index_dir are set per run from the fields here."""
    graph: str
    tasks: list[str]
    seeds: list[int]
    robot: str | None = None
    overrides: dict = field(default_factory=dict)
    timeout_s: float = 4 * 3600.0

    def for_nodes(self) -> ClosedLoopJob:
        """The job as a node with another working directory reads it: a graph or robot given as a
        file path made absolute (a name is looked up in each node's installed config/)."""
        def absolute(value: str | None) -> str | None:
            return str(Path(value).resolve()) if value and Path(value).suffix in (".yaml", ".yml") else value
        return dataclasses.replace(self, graph=absolute(self.graph), robot=absolute(self.robot))

    @property
    def episodes(self) -> list[tuple[str, int]]:
        """(task, seed) in the order one evaluator runs them."""
        return [(t, s) for t in self.tasks for s in self.seeds]

    def graph_overrides(self, tasks: list[str], seeds: list[int], out_dir: Path, index_dir: Path) -> dict:
        out = {node: dict(params) for node, params in self.overrides.items()}
        out.setdefault("evaluator", {}).update({
            "tasks": "[" + ",".join(tasks) + "]", "seeds": "[" + ",".join(map(str, seeds)) + "]",
            "episodes_per_task": "0", "output_dir": str(out_dir), "index_dir": str(index_dir)})
        return out


LOCKSTEP_NODES = ("evaluator", "sim_bridge", "executor")     # nodes whose `lockstep` must agree


def set_run_parameters(overrides: dict, backend: str | None = None, checkpoint: str | None = None,
                       lockstep: bool | None = None, max_steps: int | None = None, gpus: float = 0.0) -> dict:
    """Fill node parameters of a closed-loop run into `overrides` (node -> {param: value string}):
    the policy's backend and checkpoint (as an absolute path: a worker's folder is not this one),
    `lockstep` on every node that checks it, the evaluator's step limit, and `cuda` for a policy
    given GPUs unless its device is set. None leaves the graph's own value."""
    from ..models.checkpoint import resolve_checkpoint

    policy = overrides.setdefault("policy", {})
    if backend:
        policy["backend"] = backend
    if checkpoint:
        policy["checkpoint"] = str(resolve_checkpoint(checkpoint).resolve())
    if gpus > 0:
        policy.setdefault("device", "cuda")
    if max_steps is not None:
        overrides.setdefault("evaluator", {})["max_steps"] = str(max_steps)
    if lockstep is not None:
        for node in LOCKSTEP_NODES:
            overrides.setdefault(node, {})["lockstep"] = "true" if lockstep else "false"
    return overrides


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None          # None: start a local Ray instance
    workers: int = 2                    # graphs running at the same time
    cpus_per_graph: float = 1.0         # Ray CPUs each graph holds
    gpus_per_graph: float = 0.0         # Ray GPUs each graph holds (its policy node's device)
    retries: int = 2                    # more attempts of a failed or lost episode
    domain_base: int = DEFAULT_DOMAIN_BASE

    def __post_init__(self):
        if self.workers < 1:
            raise ValueError(f"workers: {self.workers}; at least 1")
        if self.retries < 0:
            raise ValueError(f"retries: {self.retries}; 0 or more")
        if not 0 <= self.domain_base or self.domain_base + self.workers - 1 > MAX_DOMAIN_ID:
            raise ValueError(f"domain_base {self.domain_base} with {self.workers} workers: ROS_DOMAIN_IDs "
                             f"{self.domain_base}-{self.domain_base + self.workers - 1} leave 0-{MAX_DOMAIN_ID}")


def episode_name(task: str, seed: int) -> str:
    return f"{task}_s{seed}"


# ---- one episode on a worker ------------------------------------------------------------------
def run_episode_graph(job: ClosedLoopJob, task: str, seed: int, domain_id: int) -> dict:
    """Run the graph on one episode in a scratch folder (ROS_DOMAIN_ID = domain_id); returns the
    graph runner's result, the host, timings and the folder as a .tar.gz archive (bytes).
    FileNotFoundError when the policy's checkpoint (an absolute path) is not on this machine."""
    from ..graph_runner import run_graph

    checkpoint = job.overrides.get("policy", {}).get("checkpoint", "")
    if checkpoint and Path(checkpoint).is_absolute() and not Path(checkpoint).exists():
        raise FileNotFoundError(f"checkpoint {checkpoint} not found on {socket.gethostname()}: every node reads it "
                                "at the driver's path (a shared filesystem, or a copy at that path)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vla_episode_") as scratch:
        out = Path(scratch) / "run"
        result = run_graph(job.graph, job.graph_overrides([task], [seed], out, Path(scratch) / "index"),
                           out / "logs", job.robot, timeout_s=job.timeout_s, env={"ROS_DOMAIN_ID": str(domain_id)})
        graph_s = time.monotonic() - started
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as archive:
            archive.add(out, arcname=".")
    return {"result": result, "host": socket.gethostname(), "domain_id": domain_id,
            "graph_wall_s": round(graph_s, 2), "worker_wall_s": round(time.monotonic() - started, 2),
            "archive": buffer.getvalue()}


# ---- the driver -------------------------------------------------------------------------------
def run_local(job: ClosedLoopJob, out_dir: Path) -> dict:
    """All episodes through one graph on this machine (what `vla-graph` does)."""
    from ..graph_runner import run_graph

    out_dir = Path(out_dir)
    index_dir = out_dir.resolve().parent / "runs_index"
    return run_graph(job.graph, job.graph_overrides(job.tasks, job.seeds, out_dir, index_dir), out_dir / "logs",
                     job.robot, timeout_s=job.timeout_s)


def run_on_ray(job: ClosedLoopJob, out_dir: Path, options: RayOptions, progress: bool = True) -> dict:
    """Every episode of the job as a Ray task; the merged report is written into out_dir.

    Returns {"report": path or None, "distributed": the report's section}."""
    import ray
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    job = job.for_nodes()
    started = time.monotonic()
    # "local": a new instance; None would join a `ray start` cluster of this machine or RAY_ADDRESS's
    ray.init(address=options.address or "local", include_dashboard=False, log_to_driver=False,
             logging_level="WARNING", ignore_reinit_error=True)
    try:
        ray_started_s = time.monotonic() - started
        remote = ray.remote(_ray_episode).options(num_cpus=options.cpus_per_graph, num_gpus=options.gpus_per_graph,
                                                  max_retries=0)
        omp_threads = os.environ.get("OMP_NUM_THREADS")
        pending = list(job.episodes)
        attempts: dict[tuple[str, int], list[dict]] = {e: [] for e in pending}
        free = list(range(options.domain_base, options.domain_base + options.workers))
        running: dict = {}                  # object ref -> (episode, domain id, submit time)
        done: dict[tuple[str, int], dict] = {}     # episode -> its successful attempt
        bar = tqdm(total=len(pending), desc="episodes", disable=not progress)
        while pending or running:
            while pending and free:
                episode, domain = pending.pop(0), free.pop(0)
                ref = remote.remote(job, episode[0], episode[1], domain, omp_threads)
                running[ref] = (episode, domain, time.monotonic())
            ready, _ = ray.wait(list(running), num_returns=1)
            episode, domain, submitted = running.pop(ready[0])
            free.append(domain)
            try:
                answer = ray.get(ready[0])
                error = answer["result"]["error"]
            except ray.exceptions.RayError as exc:      # the task raised, or its worker / node was lost
                answer, error = None, f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:400]}"
            attempt = {"attempt": len(attempts[episode]) + 1, "round_trip_s": round(time.monotonic() - submitted, 2),
                       "host": answer["host"] if answer else None, "node_id": answer["node_id"] if answer else None,
                       "node_ip": answer["node_ip"] if answer else None, "domain_id": domain, "error": error}
            attempts[episode].append(attempt)
            if answer is not None:
                folder = _unpack(answer["archive"], out_dir / "shards" / f"{episode_name(*episode)}.part")
                if error is None and not (folder / "run_record.json").is_file():
                    error = "the graph ended without a run record"
                attempt["folder"] = str(_keep(folder, episode, ok=error is None).relative_to(out_dir))
                attempt.update(graph_wall_s=answer["graph_wall_s"], worker_wall_s=answer["worker_wall_s"],
                               processes=answer["result"]["processes"])
            if error is None:
                done[episode] = attempt             # (not the answer: its archive is unpacked and let go)
                bar.update(1)
            elif len(attempts[episode]) <= options.retries:
                bar.write(f"episode {episode_name(*episode)}: attempt {attempt['attempt']} failed ({error}); again")
                pending.append(episode)
            else:
                bar.write(f"episode {episode_name(*episode)}: failed {len(attempts[episode])} times ({error})")
                bar.update(1)
        bar.close()
        resources = ray.cluster_resources()
        nodes = [{"node_id": n["NodeID"], "ip": n["NodeManagerAddress"], "CPU": n["Resources"].get("CPU", 0.0),
                  "GPU": n["Resources"].get("GPU", 0.0)} for n in ray.nodes() if n["Alive"]]
    finally:
        ray.shutdown()
    wall_s = time.monotonic() - started

    failed = [episode_name(*e) for e in job.episodes if e not in done]
    parts = [RunRecord.load(out_dir / "shards" / episode_name(*e)) for e in job.episodes if e in done]
    for part in parts:
        for ep in part.episodes:
            attempts[(ep.task, ep.seed)][-1]["episode_wall_s"] = ep.extra.get("wall_time_s")
    section = distributed_section(job, options, attempts, done, failed, resources, nodes, wall_s, ray_started_s)
    if not parts:
        return {"report": None, "distributed": section}
    merged = merge_records(parts, job.tasks, job.seeds)
    for ep in merged.episodes:
        ep.bag = _move(ep.bag, out_dir / "bags")
        ep.video = _move(ep.video, out_dir / "videos")
    merged.extra["distributed"] = section
    written = merged.write_report(out_dir)
    return {"report": written["report_json"], "distributed": section}


def _ray_episode(job: ClosedLoopJob, task: str, seed: int, domain_id: int, omp_threads: str | None) -> dict:
    """The Ray task: run_episode_graph's answer plus the Ray node it ran on. Ray sets OMP_NUM_THREADS
    from the task's CPUs; the graph's processes get the driver's setting instead, so that they
    compute as a local run would (equal results, not only speed)."""
    import ray

    if omp_threads:
        os.environ["OMP_NUM_THREADS"] = omp_threads
    else:
        os.environ.pop("OMP_NUM_THREADS", None)
    answer = run_episode_graph(job, task, seed, domain_id)
    answer.update(node_id=ray.get_runtime_context().get_node_id(), node_ip=ray.util.get_node_ip_address())
    return answer


def distributed_section(job: ClosedLoopJob, options: RayOptions, attempts: dict, done: dict, failed: list[str],
                        resources: dict, nodes: list[dict], wall_s: float, ray_started_s: float) -> dict:
    """The report's `distributed` section: engine, resources, the cluster's nodes (with the episodes
    each completed), per-episode attempts, overhead."""
    episodes, overheads = [], []
    for episode, tries in attempts.items():
        row = {"episode": episode_name(*episode), "attempts": len(tries), "ok": episode in done, "tries": tries}
        if episode in done:
            last = tries[-1]
            ran = last.get("episode_wall_s")
            if ran is not None:
                # graph start and stop, archive and transfer: what one episode costs beyond running it
                row["overhead_s"] = round(last["round_trip_s"] - ran, 2)
                overheads.append(row["overhead_s"])
        episodes.append(row)
    retried = [r["episode"] for r in episodes if r["attempts"] > 1]
    return {"engine": "ray", "address": options.address or "local", "workers": options.workers,
            "cpus_per_graph": options.cpus_per_graph, "gpus_per_graph": options.gpus_per_graph,
            "retries": options.retries, "domain_ids": [options.domain_base, options.domain_base + options.workers - 1],
            "cluster_resources": {k: v for k, v in resources.items() if k in ("CPU", "GPU", "memory")},
            "nodes": [{**n, "episodes": [episode_name(*e) for e in job.episodes
                                         if e in done and done[e]["node_id"] == n["node_id"]]} for n in nodes],
            "episodes": len(job.episodes), "completed": len(done), "retried": retried, "failed": failed,
            "wall_time_s": round(wall_s, 2), "ray_start_s": round(ray_started_s, 2),
            "overhead_per_episode_s": {"mean": round(sum(overheads) / len(overheads), 2) if overheads else None,
                                       "max": max(overheads) if overheads else None},
            "per_episode": episodes}


def _unpack(archive: bytes, target: Path) -> Path:
    """Unpack an episode's folder (a .tar.gz archive) into target."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        tar.extractall(target, filter="data")
    return target


def _keep(folder: Path, episode: tuple[str, int], ok: bool) -> Path:
    """Rename an unpacked attempt to shards/<episode>, or shards/<episode>_failed<n> (kept for its logs)."""
    name = episode_name(*episode)
    target = folder.with_name(name)
    n = 0
    while not ok and (target.exists() or n == 0):
        n += 1
        target = folder.with_name(f"{name}_failed{n}")
    if target.exists():
        shutil.rmtree(target)
    return folder.rename(target)


def _move(path: str, folder: Path) -> str:
    """Move a shard's bag folder or video into the run's folder; its new path ("" stays "")."""
    if not path or not Path(path).exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / Path(path).name
    if target.exists():
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    shutil.move(path, target)
    return str(target)


# ---- equality of two runs ---------------------------------------------------------------------
def compare_runs(a_dir: Path, b_dir: Path, robot: str) -> dict:
    """Episode by episode: success, steps, end reason, progress score and the recorded commands
    (exactly, each of the episode's steps; a bag may hold one more command, sent after the success
    before the disarm reached the executor) of two runs of the same episodes.

    Returns {"episodes": n, "equal": bool, "differences": [...]} (a difference names the episode
    and what differs)."""
    import numpy as np

    from ..data.dataset import load_dataset

    runs = [RunRecord.load(a_dir), RunRecord.load(b_dir)]
    rows = [{(ep.task, ep.seed): ep for ep in r.episodes} for r in runs]
    bags = [{(ep.task, ep.seed): ep for ep in load_dataset(d, robot, successful_only=False)} for d in (a_dir, b_dir)]
    differences = []
    if set(rows[0]) != set(rows[1]):
        differences.append(f"episodes differ: {sorted(set(rows[0]) ^ set(rows[1]))}")
    for key in sorted(set(rows[0]) & set(rows[1])):
        name = episode_name(*key)
        a, b = rows[0][key], rows[1][key]
        for what in ("success", "steps", "reason", "progress_score"):
            if getattr(a, what) != getattr(b, what):
                differences.append(f"{name}: {what} {getattr(a, what)!r} != {getattr(b, what)!r}")
        recorded = [m.get(key) for m in bags]
        if None in recorded:
            differences.append(f"{name}: no bag in {'the first' if recorded[0] is None else 'the second'} run")
            continue
        commands = [r.actions[:ep.steps] for r, ep in zip(recorded, (a, b))]
        if commands[0].shape != commands[1].shape:
            differences.append(f"{name}: {len(commands[0])} vs {len(commands[1])} commands recorded")
        elif not np.array_equal(commands[0], commands[1]):
            worst = float(np.abs(commands[0] - commands[1]).max())
            differences.append(f"{name}: commands differ (max |difference| {worst:.3g})")
    return {"episodes": len(rows[0]), "equal": not differences, "differences": differences}
