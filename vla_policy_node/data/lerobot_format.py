"""Episodes <-> LeRobotDataset, through lerobot's own API.

Export writes what `load_dataset` reads from our bags (frames at the model input size, state in the
robot file's order, the command that answered each state) as a LeRobotDataset: one frame per
control step, `fps` = the robot's control rate, the instruction as the frame's task, each camera a
video feature. Import reads such a dataset (ours or a user's) back into `Episode`s for training.
Feature keys come from the robot file's `lerobot` section (defaults: observation.images.<camera>,
observation.state, action).

What a LeRobotDataset has no place for (the simulator task name, seed, success flag and source bag
of each episode) goes to `meta/vla_episodes.json` beside LeRobot's own meta files; a dataset
without it imports with task = instruction, seed = episode index and every episode successful.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import numpy as np

from ..core.embodiment import Embodiment
from .episode import DatasetError, Episode, as_embodiment

SIDECAR = "meta/vla_episodes.json"


def import_lerobot():
    """lerobot's dataset module (lerobot 0.4.4 on our pins; see `lerobot_compat`)."""
    from ..lerobot_compat import prepare_lerobot

    prepare_lerobot()
    from lerobot.datasets import lerobot_dataset

    return lerobot_dataset


def feature_keys(robot: Embodiment) -> dict:
    """{'cameras': {camera name: image key}, 'state': key, 'action': key} of the robot file."""
    cfg = robot.config.lerobot
    return {"cameras": {c.name: cfg.cameras.get(c.name, f"observation.images.{c.name}") for c in robot.config.cameras},
            "state": cfg.state, "action": cfg.action}


def control_fps(robot: Embodiment) -> int:
    """The robot's control rate as LeRobot's integer fps (a dataset frame is one control step)."""
    rate = 1.0 / robot.config.action.dt
    if abs(rate - round(rate)) > 1e-6:
        raise DatasetError(f"{robot.path}: action.dt {robot.config.action.dt} s is not a whole number of frames "
                           "a second; a LeRobotDataset's fps is an integer")
    return int(round(rate))


def lerobot_features(robot: Embodiment, frame_shapes: dict[str, tuple], use_videos: bool = True) -> dict:
    """LeRobot feature spec: cameras (H, W, 3) as video (or PNG image) features, state and action."""
    keys = feature_keys(robot)
    features = {keys["cameras"][name]: {"dtype": "video" if use_videos else "image", "shape": tuple(shape),
                                        "names": ["height", "width", "channels"]}
                for name, shape in frame_shapes.items()}
    features[keys["state"]] = {"dtype": "float32", "shape": (len(robot.config.state.names),),
                               "names": list(robot.config.state.names)}
    features[keys["action"]] = {"dtype": "float32", "shape": (robot.config.action.dim,),
                                "names": list(robot.config.action.names)}
    return features


@contextlib.contextmanager
def keep_scheduling():
    """Restore the calling thread's scheduling policy and priority on exit. LeRobot encodes videos with
    SVT-AV1, which, where permitted (as root), switches the thread that starts the encoder to
    SCHED_FIFO 99, and every process started from it afterwards inherits that: a ROS graph started
    from such a process busy-waits at real-time priority and its DDS discovery starves."""
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        yield
    finally:
        if (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority) != (policy, param.sched_priority):
            os.sched_setscheduler(0, policy, param)


def export_lerobot(episodes: list[Episode], robot, out, repo_id: str = "", use_videos: bool = True):
    """Write `episodes` as a new LeRobotDataset at `out` (must not exist); returns the dataset."""
    robot = as_embodiment(robot)
    if not episodes:
        raise DatasetError("export: no episodes to write")
    out = Path(out)
    if out.exists():
        raise DatasetError(f"{out}: already exists; a LeRobotDataset is written to a new folder")
    keys = feature_keys(robot)
    cameras = [c for c in keys["cameras"] if c in episodes[0].frames]
    missing = [f"{ep.bag or ep.task}: camera {c}" for ep in episodes for c in cameras if c not in ep.frames]
    if missing:
        raise DatasetError(f"export: episodes without a camera the first one has: {', '.join(missing)}")
    shapes = {c: episodes[0].frames[c].shape[1:] for c in cameras}
    lerobot_dataset = import_lerobot()
    dataset = lerobot_dataset.LeRobotDataset.create(
        repo_id or f"local/{robot.name}", fps=control_fps(robot), root=out, robot_type=robot.name,
        features=lerobot_features(robot, shapes, use_videos), use_videos=use_videos)
    sidecar = []
    with keep_scheduling():
        for index, ep in enumerate(episodes):
            for k in range(len(ep)):
                frame = {keys["cameras"][c]: ep.frames[c][k] for c in cameras}
                frame[keys["state"]] = ep.states[k].astype(np.float32)
                frame[keys["action"]] = ep.actions[k].astype(np.float32)
                frame["task"] = ep.instruction
                dataset.add_frame(frame)
            dataset.save_episode()
            sidecar.append({"episode_index": index, "task": ep.task, "seed": int(ep.seed),
                            "success": bool(ep.success), "bag": str(ep.bag)})
        dataset.finalize()
    (out / SIDECAR).write_text(json.dumps(sidecar, indent=1))
    return dataset


def _check_feature(root: Path, info: dict, key: str, what: str, shape: tuple | None) -> None:
    features = info["features"]
    if key not in features:
        raise DatasetError(f"{root}: feature '{key}' ({what}) not in the dataset; it has "
                           f"{', '.join(sorted(features))} (map it in the robot file's lerobot section)")
    if shape is not None and tuple(features[key]["shape"]) != shape:
        raise DatasetError(f"{root}: feature '{key}' ({what}) has shape {tuple(features[key]['shape'])}, "
                           f"the robot file needs {shape}")


def load_lerobot(root, robot, successful_only: bool = True) -> list[Episode]:
    """A LeRobotDataset folder as `Episode`s: frames resized to each camera's model input, state and
    action in the robot file's order (checked by shape), stamps = LeRobot timestamps (s from the
    episode's start)."""
    from ..core.images import to_model_input

    robot = as_embodiment(robot)
    root = Path(root)
    if not (root / "meta" / "info.json").is_file():
        raise DatasetError(f"{root}: not a LeRobotDataset (no meta/info.json)")
    lerobot_dataset = import_lerobot()
    from lerobot.datasets.video_utils import decode_video_frames

    dataset = lerobot_dataset.LeRobotDataset(f"local/{root.name}", root=root)
    info, keys = dataset.meta.info, feature_keys(robot)
    cameras = {c.name: c for c in robot.config.cameras}
    present = {name: key for name, key in keys["cameras"].items() if key in info["features"]}
    for name, key in keys["cameras"].items():
        if name not in present and cameras[name].required:
            _check_feature(root, info, key, f"camera '{name}'", None)
    _check_feature(root, info, keys["state"], "state", (len(robot.config.state.names),))
    _check_feature(root, info, keys["action"], "action", (robot.config.action.dim,))
    if dataset.fps != control_fps(robot):
        raise DatasetError(f"{root}: fps {dataset.fps}, the robot file's control rate is {control_fps(robot)} "
                           "steps a second (action.dt); a frame must be one control step")
    sidecar_path = root / SIDECAR
    sidecar = {e["episode_index"]: e for e in json.loads(sidecar_path.read_text())} if sidecar_path.is_file() else {}
    table = dataset.hf_dataset.with_format("numpy")
    episode_column = np.asarray(table["episode_index"])
    episodes = []
    for index in range(dataset.meta.total_episodes):
        rows = np.flatnonzero(episode_column == index)
        part = table[rows]
        stamps = np.asarray(part["timestamp"], np.float64)
        frames = {}
        for name, key in present.items():
            if key in dataset.meta.video_keys:
                meta = dataset.meta.episodes[index]
                start = float(meta[f"videos/{key}/from_timestamp"])
                images = decode_video_frames(dataset.root / dataset.meta.get_video_file_path(index, key),
                                             (stamps + start).tolist(), dataset.tolerance_s, dataset.video_backend)
                images = (images.permute(0, 2, 3, 1).numpy() * 255.0).round().astype(np.uint8)
            else:
                # LeRobot's table transform gives PNG frames as CHW float tensors in [0, 1], as for videos
                images = np.stack([img.numpy() for img in dataset.hf_dataset.select(rows.tolist())[key]])
                images = (images.transpose(0, 2, 3, 1) * 255.0).round().astype(np.uint8)
            cam = cameras[name]
            frames[name] = np.stack([to_model_input(img, tuple(cam.input_size), cam.crop) for img in images])
        task_index = int(np.asarray(part["task_index"])[0])
        instruction = str(dataset.meta.tasks.index[task_index])
        extra = sidecar.get(index, {})
        ep = Episode(task=extra.get("task", instruction), seed=int(extra.get("seed", index)), instruction=instruction,
                     success=bool(extra.get("success", True)), frames=frames,
                     states=np.asarray(part[keys["state"]], np.float32),
                     actions=np.asarray(part[keys["action"]], np.float32), stamps=stamps,
                     bag=f"{root}#episode{index}", duration_s=float(stamps[-1] - stamps[0]) if len(stamps) else 0.0)
        if ep.success or not successful_only:
            episodes.append(ep)
    return episodes
