"""Open-loop evaluation of a checkpoint on recorded rosbag2 episodes.

Every `stride` steps of every episode the policy sees the recorded observation (camera frame,
proprio, instruction) and predicts an action chunk and imagined future frames; observations of
many episodes go through the model as one batch. Predicted chunks are scored against the actions
that were really commanded (L1/L2 per dimension and per horizon step, gripper open/close
agreement); imagined frames against the frames recorded `future_offsets` steps later (PSNR/SSIM
at the model's resolution, next to a "nothing moves" baseline that repeats the current frame).
Bags that cannot be read are listed with the reason and the rest is evaluated.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import time
from collections import deque
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm

from ..core.embodiment import load_robot
from ..core.metrics import action_errors, correlation, gripper_accuracy, psnr, ssim
from ..data.dataset import DatasetError, Episode, load_episode
from ..models.backend import PolicyInput, PolicyOutput
from .reports import EpisodeRecord, write_run_report


class OfflineEvalError(ValueError):
    """Inputs that make an offline evaluation impossible (names the file or option and why)."""


@dataclass
class OfflineEvalConfig:
    bags: list[Path]                      # bag folders, folders of bags, or evaluator outputs (bags/)
    checkpoint: str
    robot: str
    output: Path
    topic_map: dict[str, str] | None = None   # {robot file's topic: bag's topic}
    instruction: str = ""                 # for bags that record none (no /vla/observation)
    stride: int | None = None             # steps between evaluated observations (default: the chunk length)
    steps: int | None = None              # denoising steps (default: the checkpoint's)
    batch: int = 32                       # observations per model call
    max_episodes: int | None = None
    videos: int = 4                       # episodes (first ones) that get a real-vs-imagined video
    actions_only: bool = False            # skip decoding and scoring imagined frames (about twice as fast)
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None            # torch CPU threads (default: the cores the load average leaves idle)
    index_dir: Path | None = None


def idle_cpu_threads() -> int:
    """CPU cores not busy with other work (1-minute load average), at least 1. On a shared CPU a
    thread pool wider than the idle cores runs several times slower than one thread: every
    parallel op waits for its descheduled threads."""
    cpus = os.cpu_count() or 1
    return max(1, min(cpus, cpus - int(round(os.getloadavg()[0]))))


def load_topic_map(path: str | Path) -> dict[str, str]:
    """A YAML mapping {robot file's topic: bag's topic}."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise OfflineEvalError(f"{path}: cannot read topic map: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise OfflineEvalError(f"{path}: a topic map is a mapping of topic names, "
                               "robot file's topic: bag's topic (e.g. /vla/sim/command: /arm/cmd)")
    return data


def _is_bag(path: Path) -> bool:
    return (path / "metadata.yaml").is_file() or any(path.glob("*.db3")) or any(path.glob("*.mcap"))


def find_bags(paths: Iterable[str | Path]) -> tuple[list[Path], list[dict]]:
    """Bag folders under the given paths (a bag, a folder of bags, an evaluator output with bags/),
    and skip entries for paths that hold none."""
    bags, skipped = [], []
    for path in map(Path, paths):
        if not path.is_dir():
            skipped.append({"bag": str(path), "reason": "not a folder (a rosbag2 bag is a folder)"})
        elif _is_bag(path):
            bags.append(path)
        else:
            root = path / "bags" if (path / "bags").is_dir() else path
            found = sorted(p for p in root.iterdir() if p.is_dir() and _is_bag(p))
            if not found:
                skipped.append({"bag": str(path), "reason": "no rosbag2 folder (metadata.yaml, *.db3, *.mcap) inside"})
            bags += found
    return bags, skipped


def perceptual_metric_note() -> str:
    """Why no perceptual metric (LPIPS-like) is reported: only models with shipped weights are used."""
    if importlib.util.find_spec("lpips") is None:
        return ("No perceptual metric: no package with shipped perceptual-model weights is installed "
                "(lpips would also download its torchvision backbone at first use, which evaluation never does).")
    return ("No perceptual metric: lpips is installed, but its torchvision backbone weights are fetched at "
            "first use, which evaluation never does.")


# ---------------------------------------------------------------------------------------------
@dataclass
class _EpisodeScores:
    """What open-loop prediction produced for one episode, filled batch by batch."""
    episode: Episode
    queries: list[int]                               # evaluated steps k
    model_frames: np.ndarray                         # (T, S, S, 3) uint8, recorded frames at model resolution
    keep_video: bool
    pred: dict[int, np.ndarray] = field(default_factory=dict)          # k -> (H, D) physical units
    imagined: dict[int, np.ndarray] = field(default_factory=dict)      # k -> (F, S, S, 3) uint8
    latency_ms: dict[int, float] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return len(self.pred) == len(self.queries)


def _target_chunk(actions: np.ndarray, k: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Recorded actions[k:k+horizon], padded with the last action; mask True for recorded steps."""
    idx = k + np.arange(horizon)
    return actions[np.minimum(idx, len(actions) - 1)], idx < len(actions)


class OpenLoopEvaluator:
    """Open-loop prediction over episodes, batched across episodes for stateless backends and
    episode by episode (reset, then update with the recorded actions and observations) for
    stateful ones, and scoring against the recording."""

    def __init__(self, policy, robot, stride: int | None, batch: int, seed: int, actions_only: bool = False):
        self.policy, self.robot = policy, robot
        # the checkpoint's chunk length (the robot file's action.horizon is a training default)
        self.horizon = policy.chunk_length
        imagines = not actions_only and bool(policy.future_offsets) and policy.imagined_camera is not None
        policy.set_decode_imagined(imagines)
        self.camera = policy.imagined_camera if imagines else robot.config.cameras[0].name
        self.offsets = list(policy.future_offsets) if imagines else []     # imagined frames scored
        self.stride, self.batch, self.seed = int(stride or self.horizon), int(batch), int(seed)
        self.pending: list[tuple[_EpisodeScores, int]] = []
        self.imagined_size: tuple[int, int] = (0, 0)
        self.model_wall_s = 0.0
        self.ceiling_wall_s = 0.0           # codec-ceiling reconstructions: scoring, not inference
        self.chunks = 0
        policy.reset("", seed=self.seed)

    @staticmethod
    def observation(episode: Episode, k: int) -> PolicyInput:
        return PolicyInput(float(episode.stamps[k]), episode.instruction,
                           {name: frames[k] for name, frames in episode.frames.items()}, episode.states[k])

    def add(self, episode: Episode, keep_video: bool) -> _EpisodeScores:
        frames = episode.frames[self.camera]
        model_frames = self.policy.imagined_view(frames) if self.offsets else frames[:0]
        self.imagined_size = tuple(model_frames.shape[1:3])
        scores = _EpisodeScores(episode, list(range(0, len(episode), self.stride)), model_frames, keep_video)
        if self.policy.stateful:
            self._run_episode(scores)
        else:
            self.pending += [(scores, k) for k in scores.queries]
        return scores

    def _keep(self, s: _EpisodeScores, k: int, out: PolicyOutput, latency_ms: float) -> None:
        s.pred[k] = out.actions
        s.imagined[k] = out.imagined_frames[self.camera] if self.offsets else []
        s.latency_ms[k] = latency_ms

    def _run_episode(self, s: _EpisodeScores) -> None:
        """A stateful backend sees the episode in order: what executed since its last chunk (the
        recorded commands) and the observation after it, then predicts."""
        ep = s.episode
        self.policy.reset(ep.instruction, seed=self.seed, task=ep.task)
        previous = None
        for k in s.queries:
            t0 = time.perf_counter()
            obs = self.observation(ep, k)
            if previous is not None:
                self.policy.update(ep.actions[previous:k], obs)
            out = self.policy.predict(obs)
            wall = time.perf_counter() - t0
            self.model_wall_s += wall
            self.chunks += 1
            self._keep(s, k, out, wall * 1e3)
            previous = k

    def run(self, flush: bool = False) -> None:
        """Predict for pending observations in full batches (and the remainder when flush)."""
        while len(self.pending) >= self.batch or (flush and self.pending):
            items, self.pending = self.pending[: self.batch], self.pending[self.batch:]
            t0 = time.perf_counter()
            outs = self.policy.predict_batch([self.observation(s.episode, k) for s, k in items])
            wall = time.perf_counter() - t0
            self.model_wall_s += wall
            self.chunks += len(items)
            for (s, k), out in zip(items, outs):
                self._keep(s, k, out, wall * 1e3 / len(items))      # batched: amortized per chunk

    def score(self, s: _EpisodeScores) -> tuple[EpisodeRecord, dict]:
        """The episode's record for the report and its raw arrays for the run totals."""
        ep, act = s.episode, self.robot.config.action
        dt = act.dt
        t_rel = ep.stamps - ep.stamps[0]
        pred = np.stack([s.pred[k] for k in s.queries])
        target, mask = zip(*(_target_chunk(ep.actions, k, self.horizon) for k in s.queries))
        target, mask = np.stack(target), np.stack(mask)
        errors = action_errors(pred, target, mask, list(act.names))
        chunk_l1 = [float(np.abs(p - t)[m].mean()) for p, t, m in zip(pred, target, mask)]

        frames = s.model_frames
        per_offset = {o: {"psnr": [], "ssim": [], "copy_psnr": [], "copy_ssim": [], "ceiling_psnr": [],
                          "ceiling_ssim": []} for o in self.offsets}
        raw_frames = ep.frames[self.camera]
        pairs = [(k, o) for k in s.queries for o in self.offsets if k + o < len(frames)]
        ceilings = {}                         # (k, o) -> the codec ceiling frame, one batched call per episode
        if pairs:
            t0 = time.perf_counter()
            batch = self.policy.reconstruct_future(raw_frames[[k for k, _ in pairs]],
                                                   raw_frames[[k + o for k, o in pairs]])
            self.ceiling_wall_s += time.perf_counter() - t0
            if batch is not None:
                ceilings = dict(zip(pairs, batch))
        divergence, chunk_divergence = [], []
        for k in s.queries:
            values = []
            for j, o in enumerate(self.offsets):
                if k + o >= len(frames):               # the recording ends before this imagined frame
                    continue
                real, imagined = frames[k + o], s.imagined[k][j]
                value_ssim = ssim(imagined, real)
                per_offset[o]["psnr"].append(psnr(imagined, real))
                per_offset[o]["ssim"].append(value_ssim)
                per_offset[o]["copy_psnr"].append(psnr(frames[k], real))
                per_offset[o]["copy_ssim"].append(ssim(frames[k], real))
                if (k, o) in ceilings:
                    per_offset[o]["ceiling_psnr"].append(psnr(ceilings[(k, o)], real))
                    per_offset[o]["ceiling_ssim"].append(ssim(ceilings[(k, o)], real))
                divergence.append((float(t_rel[k + o]), 1.0 - value_ssim))
                values.append(1.0 - value_ssim)
            chunk_divergence.append(float(np.mean(values)) if values else np.nan)

        grip_acc, _ = _gripper_agreement(pred, target, mask, act.gripper)
        record = EpisodeRecord(
            name=Path(ep.bag).name, task=ep.task, seed=ep.seed, success=ep.success, steps=len(ep),
            time_to_success_s=ep.time_to_success_s, progress_score=float(ep.success),
            latencies_ms=[s.latency_ms[k] for k in s.queries], divergence=divergence,
            real_frames=list(ep.frames[self.camera]) if s.keep_video else [],
            imagined_frames=[(float(t_rel[k]), list(s.imagined[k])) for k in s.queries] if s.keep_video else [],
            action_error_per_step=errors["per_step"]["l1"],
            frame_times_s=[float(t) for t in t_rel], frame_dt_s=dt,
            imagined_offsets_s=[o * dt for o in self.offsets], instruction=ep.instruction, bag=ep.bag,
            reason="recorded",
            extra={"chunks": len(s.queries), "duration_s": ep.duration_s, "action_l1": errors["l1"],
                   "action_l2": errors["l2"], "gripper_accuracy": grip_acc,
                   "imagined_psnr_db": {str(o): _nanmean(v["psnr"]) for o, v in per_offset.items()},
                   "imagined_ssim": {str(o): _nanmean(v["ssim"]) for o, v in per_offset.items()},
                   "skipped_commands": ep.skipped})
        raw = {"pred": pred, "target": target, "mask": mask, "per_offset": per_offset,
               "chunk_l1": chunk_l1, "chunk_divergence": chunk_divergence}
        return record, raw


def _gripper_agreement(pred, target, mask, gripper) -> tuple[float | None, int]:
    """Open/close agreement, split halfway between the open and closed values, on the recorded
    steps whose command is decisively open or closed (at least halfway from the split to either
    end: an effort of 0 commands neither and is not scored). Returns (agreement, steps scored)."""
    if gripper is None:
        return None, 0
    threshold = (gripper.open_value + gripper.closed_value) / 2.0
    half_range = abs(gripper.closed_value - gripper.open_value) / 2.0
    decisive = mask & (np.abs(target[..., gripper.index] - threshold) >= half_range / 2.0)
    if not decisive.any():
        return None, 0
    return gripper_accuracy(pred[decisive], target[decisive], gripper.index, threshold), int(decisive.sum())


def _nanmean(values) -> float:
    values = [v for v in values if np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


# ---------------------------------------------------------------------------------------------
def _make_policy(checkpoint: str, robot, steps: int | None, device: str):
    """The checkpoint's backend; options it does not declare (device, steps) are left out."""
    from ..models.checkpoint import CheckpointError
    from ..models.registry import make_backend

    try:
        policy = make_backend("auto", robot, if_declared={"checkpoint": checkpoint, "device": device,
                                                          "num_inference_steps": steps})
    except (CheckpointError, KeyError, FileNotFoundError) as exc:
        raise OfflineEvalError(f"checkpoint {checkpoint}: {exc}") from None
    if policy.uses_privileged_state:
        raise OfflineEvalError(f"checkpoint {checkpoint}: backend '{policy.name}' reads privileged simulator "
                               "state, which recordings do not hold")
    return policy


def _totals(raws: list[dict], names: list[str], offsets: list[int], gripper) -> dict:
    pred = np.concatenate([r["pred"] for r in raws])
    target = np.concatenate([r["target"] for r in raws])
    mask = np.concatenate([r["mask"] for r in raws])
    errors = action_errors(pred, target, mask, names)
    grip, grip_steps = _gripper_agreement(pred, target, mask, gripper)
    frames = {}
    for o in offsets:
        merged = {key: [v for r in raws for v in r["per_offset"][o][key]]
                  for key in ("psnr", "ssim", "copy_psnr", "copy_ssim", "ceiling_psnr", "ceiling_ssim")}
        frames[o] = {"n": len(merged["psnr"]), **{key: _nanmean(v) for key, v in merged.items()},
                     "copy_identical": int(np.sum(np.isinf(merged["copy_psnr"]))),
                     "psnr_median": float(np.median(merged["psnr"])) if merged["psnr"] else float("nan")}
    div_vs_err = correlation([v for r in raws for v in r["chunk_divergence"]], [v for r in raws for v in r["chunk_l1"]])
    return {"actions": errors, "gripper_accuracy": grip, "gripper_steps": grip_steps, "frames": frames,
            "divergence_vs_action_l1": div_vs_err}


def _read_episode(bag: Path, robot, topic_map) -> tuple[Path, Episode | None, str, float]:
    """(bag, episode or None, why not, seconds spent): bad data is a reason, never an exception."""
    t0 = time.perf_counter()
    try:
        return bag, load_episode(bag, robot, topic_map), "", time.perf_counter() - t0
    except DatasetError as exc:
        return bag, None, str(exc), time.perf_counter() - t0
    except Exception as exc:  # noqa: BLE001  (damaged data raises many types: report, never abort)
        return bag, None, f"{type(exc).__name__}: {exc}", time.perf_counter() - t0


def _read_ahead(bags: list[Path], read, depth: int = 2):
    """read(bag) for each bag in order, `depth` bags ahead on a reader thread, so reading overlaps
    the model (torch ops and OpenCV release the GIL) while at most depth + 1 episodes are held."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bag-reader") as pool:
        pending = deque(pool.submit(read, bag) for bag in bags[:depth])
        for bag in bags[depth:]:
            done = pending.popleft().result()
            pending.append(pool.submit(read, bag))
            yield done
        while pending:
            yield pending.popleft().result()


def run_offline(config: OfflineEvalConfig) -> dict:
    """Evaluate, write the report; returns {"paths": written files, "summary": the run summary}."""
    if config.stride is not None and config.stride < 1:
        raise OfflineEvalError(f"--stride must be >= 1, got {config.stride}")
    if config.batch < 1:
        raise OfflineEvalError(f"--batch must be >= 1, got {config.batch}")
    threads = config.threads or idle_cpu_threads()
    if config.device == "cpu":
        torch.set_num_threads(threads)
    started = time.perf_counter()
    robot = load_robot(config.robot)
    bags, skipped = find_bags(config.bags)
    evaluator = None                      # the checkpoint loads once a bag gave an episode
    checkpoint_load_s, load_wall = 0.0, 0.0

    records, raws, open_scores = [], [], []
    evaluated = 0

    def finish(scores: _EpisodeScores) -> None:
        record, raw = evaluator.score(scores)
        records.append(record)
        raws.append(raw)
        open_scores.remove(scores)

    read = functools.partial(_read_episode, robot=robot, topic_map=config.topic_map)
    for bag, episode, problem, read_s in tqdm(_read_ahead(bags, read), total=len(bags), desc="vla-eval offline",
                                              unit="bag", disable=None):
        if config.max_episodes is not None and evaluated >= config.max_episodes:
            break
        load_wall += read_s
        if problem:
            skipped.append({"bag": str(bag), "reason": problem})
            continue
        if len(episode) == 0:
            skipped.append({"bag": str(bag), "reason": "no command could be paired with a recorded observation"})
            continue
        episode.instruction = episode.instruction or config.instruction
        if not episode.instruction:
            skipped.append({"bag": str(bag), "reason": "no instruction recorded (no /vla/observation with one); "
                                                       "give it with --instruction"})
            continue
        if evaluator is None:
            t0 = time.perf_counter()
            policy = _make_policy(config.checkpoint, robot, config.steps, config.device)
            evaluator = OpenLoopEvaluator(policy, robot, config.stride, config.batch, config.seed, config.actions_only)
            checkpoint_load_s = time.perf_counter() - t0
        evaluated += 1
        open_scores.append(evaluator.add(episode, keep_video=evaluated <= config.videos))
        evaluator.run()
        for scores in [s for s in open_scores if s.done]:
            finish(scores)
    if evaluator is None:
        return {"paths": {}, "summary": {}, "skipped": skipped}
    evaluator.run(flush=True)
    for scores in list(open_scores):
        finish(scores)
    wall = time.perf_counter() - started - checkpoint_load_s - evaluator.ceiling_wall_s   # scoring aids excluded

    summary = _run_summary(config, robot, evaluator, evaluator.stride, records, raws, skipped, wall, load_wall,
                           checkpoint_load_s)
    paths = write_run_report(config.output, summary, records, config.index_dir)
    return {"paths": paths, "summary": summary, "skipped": skipped}


def _run_summary(config, robot, evaluator, stride, records, raws, skipped, wall, load_wall,
                 checkpoint_load_s) -> dict:
    policy = evaluator.policy
    act = robot.config.action
    description = policy.describe()
    steps = description.get("num_inference_steps")
    real_s = float(sum(r.extra["duration_s"] for r in records))
    speed = {"episodes": len(records), "chunks": evaluator.chunks, "bag_duration_s": real_s,
             "wall_time_s": wall, "bag_read_s": load_wall, "model_s": evaluator.model_wall_s,
             "checkpoint_load_s": checkpoint_load_s, "codec_ceiling_s": evaluator.ceiling_wall_s,
             "real_time_factor": real_s / wall if wall > 0 else float("nan"),
             "real_time_factor_with_load": real_s / (wall + checkpoint_load_s),
             "denoising_steps": steps, "batch": evaluator.batch, "stride": stride,
             "torch_threads": torch.get_num_threads(), "load_average_1min": os.getloadavg()[0]}
    summary = {"mode": "offline", "policy": {"backend": policy.name, "checkpoint": str(config.checkpoint),
                                             "description": description},
               "robot": robot.name, "executor": {"mode": "open_loop"},
               "inputs": [str(b) for b in config.bags], "topic_map": config.topic_map or {},
               "offline": {"speed": speed}, "skipped": skipped}
    totals = _totals(raws, list(act.names), evaluator.offsets, act.gripper)
    errors = totals["actions"]
    summary["offline"].update(totals)
    summary["index_metrics"] = {"action_l1": errors["l1"], "gripper_accuracy": totals["gripper_accuracy"]}
    scored = [o for o in evaluator.offsets if (totals["frames"].get(o) or {}).get("n")]
    if scored:                                   # the furthest offset the recordings reach
        last = scored[-1]
        summary["index_metrics"].update({f"imagined_psnr_db@{last}": totals["frames"][last]["psnr"],
                                         f"imagined_ssim@{last}": totals["frames"][last]["ssim"]})
    summary["index_metrics"].update(steps=steps, real_time_factor=speed["real_time_factor"])
    tables = {
        "Action error per dimension (recorded commands as target)": [
            {"dimension": n, "unit": u, "L1": v["l1"], "L2 (RMS)": v["l2"]}
            for (n, v), u in zip(errors["per_dim"].items(), act.units or [""] * len(act.names))]
            + [{"dimension": "all", "unit": "", "L1": errors["l1"], "L2 (RMS)": errors["l2"]}],
        "Action error per horizon step": [
            {"step": i, "time ahead (s)": i * act.dt, "L1": l1, "L2 (RMS)": l2}
            for i, (l1, l2) in enumerate(zip(errors["per_step"]["l1"], errors["per_step"]["l2"]))]}
    if evaluator.offsets:
        size = "x".join(map(str, evaluator.imagined_size))
        tables[f"Imagined frames vs recorded frames ({size})"] = [
            {"offset (steps)": o, "time ahead (s)": o * act.dt, "PSNR (dB)": v["psnr"], "SSIM": v["ssim"],
             "copy-current-frame PSNR (dB)": v["copy_psnr"], "copy-current-frame SSIM": v["copy_ssim"],
             "codec ceiling PSNR (dB)": v["ceiling_psnr"], "codec ceiling SSIM": v["ceiling_ssim"],
             "n": v["n"], "unchanged frames": v["copy_identical"]}
            for o, v in totals["frames"].items()]
    tables["Speed"] = [{"episodes": speed["episodes"], "chunks": speed["chunks"],
                        "bag duration (s)": real_s, "wall time (s)": wall, "bag reading (s, reader thread)": load_wall,
                        "model (s)": evaluator.model_wall_s, "real-time factor": speed["real_time_factor"],
                        "checkpoint load (s)": checkpoint_load_s,
                        "real-time factor incl. load": speed["real_time_factor_with_load"],
                        "denoising steps": steps, "batch": evaluator.batch, "stride": stride,
                        "torch threads": speed["torch_threads"], "load average": speed["load_average_1min"]}]
    summary["tables"] = tables
    grip = totals["gripper_accuracy"]
    corr = totals["divergence_vs_action_l1"]
    imagination = [
        f"Imagination divergence (1 - SSIM) vs chunk action L1: Pearson {corr['pearson']:.3f}, "
        f"Spearman {corr['spearman']:.3f} over {corr['n']} chunks.",
        "Imagined frames are compared only where the recording has the frame they were imagined for; "
        "copy-current-frame is the 'nothing moves' baseline a useful world model must beat; the codec "
        "ceiling decodes the real future frame's latent as the backend decodes its imagined ones (the best "
        "imagined frame its frame codec can express); PSNR means "
        "leave out frames identical to the current one (infinite PSNR, counted as unchanged frames).",
        perceptual_metric_note()] if evaluator.offsets else [
        "Imagined frames were neither decoded nor scored (--actions-only)."]
    summary["notes"] = [
        f"Open loop: every {stride} steps the policy saw the recorded observation; {evaluator.chunks} chunks "
        f"of {evaluator.horizon} actions, {steps or '-'} denoising steps, batches of {evaluator.batch}.",
        f"Gripper open/close agreement with the recorded command: {grip:.3f} over {totals['gripper_steps']} "
        "steps whose recorded command is decisively open or closed." if grip is not None
        else "No gripper agreement: no gripper in the action space or no decisive open/close command recorded.",
        *imagination,
        "Latency is the batched model time divided by the batch size (amortized per chunk), not a "
        "closed-loop per-chunk latency.",
        f"Evaluated {speed['episodes']} episodes ({real_s:.1f} s recorded) in {wall:.1f} s wall after a "
        f"{checkpoint_load_s:.1f} s checkpoint load: {speed['real_time_factor']:.2f}x real time "
        f"({speed['real_time_factor_with_load']:.2f}x including the load); above 1 is faster than real time.",
    ]
    return summary
