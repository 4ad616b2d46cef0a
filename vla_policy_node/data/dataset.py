"""Recorded episodes -> training arrays (observation/action pairs, action chunks, future frames).

An evaluator run writes one rosbag2 folder per episode (`<output_dir>/bags/<task>_s<seed>/`) and
`<output_dir>/report.json`. In lockstep the simulator publishes the camera image(s),
/joint_states and the hand pose of a step with the same stamp t, and the command answering that
state carries header.stamp == t. `load_episode` pairs every command with the observation it
answered; `chunk_samples` turns episodes into action-chunk / future-frame samples that index
into one concatenated frame array (frames are never copied per sample).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
from rosbags.rosbag2 import Reader

from ..core.images import ImageEncodingError, decode, to_model_input
from ..core.state import StateAssemblyError, assemble_state, joint_state_problem, state_joints, values_problem
from .bags import at_root, bag_typestore, read_bag
from .episode import DatasetError, Episode, as_embodiment

SUCCESS_TOPIC = "/vla/sim/success"
OBSERVATION_TOPIC = "/vla/observation"
LEROBOT_PREFIX = "lerobot:"          # a training source that is a LeRobotDataset folder
EXACT_S = 1e-6                      # stamps closer than this are "the same step"
_EPISODE_NAME = re.compile(r"^(?P<task>.+)_s(?P<seed>\d+)$")


# ---------------------------------------------------------------------------------------------
def _stamp_ns(msg, fallback: int) -> int:
    header = getattr(msg, "header", None)
    if header is None:
        return int(fallback)
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


# Fields a message must have to serve as each input (checked before reading, so a wrong type
# names the topic and the field instead of failing mid-episode).
_REQUIRED_FIELDS = {"camera": [("encoding", "height", "width", "step", "data"), ("format", "data")],
                    "command": [("values",), ("data",), ("joint_names", "points"), ("name", "position")],
                    "joint states": [("name", "position")],
                    "end-effector pose": [("pose",)]}


def _check_fields(bag: Path, topic: str, what: str, msgtype: str, typestore) -> None:
    if msgtype not in typestore.fielddefs:
        raise DatasetError(f"{bag}: topic {topic} ({what}): message type '{msgtype}' unknown "
                           f"(not a ROS 2 standard or vla_msgs type, and the bag carries no definition)")
    fields = {name for name, _ in typestore.fielddefs[msgtype][1]}
    options = _REQUIRED_FIELDS[what.split(" '")[0]]
    if not any(set(option) <= fields for option in options):
        expected = " or ".join("+".join(option) for option in options)
        raise DatasetError(f"{bag}: topic {topic} ({what}): message type '{msgtype}' has no field(s) "
                           f"{expected} (has {', '.join(sorted(fields))})")


def _topic_table(bag: Path, needed: list[str]) -> tuple[dict[str, str], object, tuple[int, int]]:
    """{topic: msgtype} of the bag, a typestore able to read the needed topics, and the bag's
    (start, end) log times in ns."""
    if not bag.is_dir():
        raise DatasetError(f"{bag}: bag folder not found")
    try:
        with Reader(bag) as reader:
            conns = list(reader.connections)
            span = (int(reader.start_time), int(reader.end_time)) if reader.message_count else (0, 0)
    except Exception as exc:  # noqa: BLE001  (rosbags raises several types for unreadable bags)
        raise DatasetError(f"{bag}: not a readable rosbag2 folder: {exc}") from None
    typestore = bag_typestore(conns)            # the definitions the bag was written with
    return {c.topic: c.msgtype for c in conns}, typestore, span


def _image(msg, cam, where: str) -> np.ndarray:
    if hasattr(msg, "format") and not hasattr(msg, "encoding"):       # sensor_msgs/CompressedImage
        data = np.frombuffer(bytes(msg.data), np.uint8)
        buf = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        if buf is None:
            raise ImageEncodingError(f"{where}: compressed image ({msg.format}) could not be decoded")
        img = cv2.cvtColor(buf, cv2.COLOR_BGR2RGB)
    else:
        img = decode(msg.encoding, msg.height, msg.width, msg.step, msg.data, where=where)
    return to_model_input(img, tuple(cam.input_size), cam.crop)


def _command_values(msg, names: list[str], where: str) -> np.ndarray:
    """The action a command carried: vla_msgs/Float64MultiArray-like values, the first point of a
    trajectory_msgs/JointTrajectory (ros2_control), or a sensor_msgs/JointState's positions (Isaac Sim)."""
    if hasattr(msg, "points"):
        if not len(msg.points):
            raise DatasetError(f"{where}: JointTrajectory command without points")
        field_name, raw, msg_names = "points[0].positions", msg.points[0].positions, list(msg.joint_names)
    elif hasattr(msg, "position"):
        field_name, raw, msg_names = "position", msg.position, list(msg.name)
    else:
        field_name = "values" if hasattr(msg, "values") else "data"
        raw, msg_names = getattr(msg, field_name, None), list(getattr(msg, "names", []) or [])
    try:
        values = np.asarray(raw, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: command field '{field_name}' is not numeric") from None
    if msg_names and msg_names != names:
        if sorted(msg_names) != sorted(names) or len(msg_names) != len(values):
            raise DatasetError(f"{where}: command names {msg_names} differ from action.names {names}")
        values = values[[msg_names.index(n) for n in names]]
    if values.shape != (len(names),):
        raise DatasetError(f"{where}: command with {values.size} values, expected {len(names)} ({', '.join(names)})")
    problem = values_problem(field_name, values)
    if problem:
        raise DatasetError(f"{where}: command {problem}")
    return values


def _match(keys: np.ndarray, stamps: np.ndarray, tol_ns: int) -> np.ndarray:
    """Index into sorted `stamps` of the nearest stamp to each key within tol_ns, else -1."""
    if stamps.size == 0:
        return np.full(keys.shape, -1, np.int64)
    if len(stamps) == 1:
        pos = np.zeros(keys.shape, np.int64)
    else:
        pos = np.clip(np.searchsorted(stamps, keys), 1, len(stamps) - 1)
        left = pos - 1
        pos = np.where(np.abs(stamps[left] - keys) <= np.abs(stamps[pos] - keys), left, pos)
    return np.where(np.abs(stamps[pos] - keys) <= tol_ns, pos, -1)


def load_episode(bag_dir, embodiment, topic_map: dict | None = None, action_free: bool = False) -> Episode:
    """One recorded episode as arrays: row k = the k-th commanded state and its command.

    topic_map renames topics for bags from other writers: {robot file's topic: bag's topic}
    (also applies to /vla/sim/success and /vla/observation). `action_free`: the episode as a video
    with proprio: only the cameras, the state topics, the instruction and success are read (no
    command or action topic, present or not), row k = the k-th frame of the first camera, and
    `actions` are zeros flagged by `Episode.action_free`."""
    emb = as_embodiment(embodiment)
    cfg = emb.config
    bag = Path(bag_dir)
    tmap = dict(topic_map or {})
    t = lambda topic: tmap.get(topic, tmap.get(at_root(topic), at_root(topic)))  # noqa: E731

    need_joint = any(s.startswith("joint.") for s in cfg.state.sources)
    need_ee = any(s.startswith("ee.") for s in cfg.state.sources)
    required = {t(c.topic): f"camera '{c.name}'" for c in cfg.cameras if c.required}
    if not action_free:
        required[t(cfg.output.command_topic)] = "command"
    if need_joint:
        required[t(cfg.state.joint_states_topic)] = "joint states"
    if need_ee:
        required[t(cfg.state.ee_pose_topic)] = "end-effector pose"
    optional = [t(SUCCESS_TOPIC), t(OBSERVATION_TOPIC)]
    optional_cameras = {t(c.topic): f"camera '{c.name}'" for c in cfg.cameras if not c.required}

    available, typestore, (start_ns, end_ns) = _topic_table(bag, list(required) + optional + list(optional_cameras))
    # a camera the robot file marks optional is read when the bag has it (an arm without a wrist camera)
    required.update({topic: what for topic, what in optional_cameras.items() if topic in available})
    cameras = [c for c in cfg.cameras if t(c.topic) in required]
    if action_free and not cameras:
        raise DatasetError(f"{bag}: an action-free episode needs a camera; bag has "
                           f"{', '.join(sorted(available)) or 'no topics'}")
    # the rows' clock: the command answering each state, or without actions the first camera's frames
    key_topic = t(cameras[0].topic) if action_free else t(cfg.output.command_topic)
    missing = [f"{topic} ({what})" for topic, what in required.items() if topic not in available]
    if missing:
        raise DatasetError(f"{bag}: missing topic(s) {', '.join(missing)}; "
                           f"bag has {', '.join(sorted(available)) or 'no topics'}")
    for topic, what in required.items():
        _check_fields(bag, topic, what, available[topic], typestore)
    optional = [x for x in optional if available.get(x) in typestore.fielddefs]   # unreadable extras: ignored

    wanted = list(required) + [x for x in optional if x in available]
    by_topic: dict[str, dict[int, object]] = {topic: {} for topic in wanted}
    duplicates: dict[str, int] = {}
    success, instruction, episode_id, success_ns = None, None, "", None
    try:
        for topic, _, ts, msg in read_bag(bag, typestore, wanted):
            if topic == t(SUCCESS_TOPIC):
                success = bool(msg.data)
                if success and success_ns is None:
                    success_ns = ts
                continue
            if topic == t(OBSERVATION_TOPIC):
                if not instruction and msg.instruction:   # skip observations made before the instruction was set
                    instruction, episode_id = str(msg.instruction), str(getattr(msg, "episode_id", ""))
                continue
            stamp = _stamp_ns(msg, ts)
            table = by_topic[topic]
            if stamp in table:                              # re-published state / re-sent command
                duplicates[topic] = duplicates.get(topic, 0) + 1
            else:
                table[stamp] = msg
    except DatasetError:
        raise
    except Exception as exc:  # noqa: BLE001  (corrupt data / unknown type: name the bag)
        raise DatasetError(f"{bag}: could not read messages: {exc}") from None

    cmd_table = by_topic[key_topic]
    cmd_stamps = np.array(sorted(cmd_table), dtype=np.int64)
    tol_ns = int(round(max(EXACT_S, cfg.sync.tolerance_s) * 1e9))
    streams = [topic for topic in required if topic != key_topic]
    matched: dict[str, np.ndarray] = {}
    keep = np.ones(len(cmd_stamps), bool)
    for topic in streams:
        stamps = np.array(sorted(by_topic[topic]), dtype=np.int64)
        idx = _match(cmd_stamps, stamps, tol_ns)
        matched[topic] = np.where(idx >= 0, stamps[np.maximum(idx, 0)] if stamps.size else 0, -1)
        keep &= idx >= 0

    rows = np.flatnonzero(keep)
    names = list(cfg.action.names)
    actions = (np.zeros if action_free else np.empty)((len(rows), len(names)), np.float32)
    states = np.empty((len(rows), len(cfg.state.sources)), np.float32)
    frames = {c.name: np.empty((len(rows), *c.input_size, 3), np.uint8) for c in cameras}
    try:
        for r, i in enumerate(rows):
            stamp = int(cmd_stamps[i])
            if not action_free:
                actions[r] = _command_values(cmd_table[stamp], names, f"{bag}: t={stamp * 1e-9:.6f}")
            for cam in cameras:
                topic = t(cam.topic)
                msg = cmd_table[stamp] if topic == key_topic else by_topic[topic][int(matched[topic][i])]
                frames[cam.name][r] = _image(msg, cam,
                                             f"{bag}: {topic} t={stamp * 1e-9:.6f}")
            js = by_topic[t(cfg.state.joint_states_topic)][int(matched[t(cfg.state.joint_states_topic)][i])] \
                if need_joint else None
            if js is not None:
                problem = joint_state_problem(js.name, js.position, state_joints(cfg.state.sources))
                if problem:
                    raise DatasetError(f"{bag}: {t(cfg.state.joint_states_topic)} t={stamp * 1e-9:.6f}: {problem}")
            ee = None
            if need_ee:
                pose = by_topic[t(cfg.state.ee_pose_topic)][int(matched[t(cfg.state.ee_pose_topic)][i])]
                p, q = pose.pose.position, pose.pose.orientation
                ee = (p.x, p.y, p.z, q.x, q.y, q.z, q.w)
                problem = values_problem("pose", ee)
                if problem:
                    raise DatasetError(f"{bag}: {t(cfg.state.ee_pose_topic)} t={stamp * 1e-9:.6f}: {problem}")
            states[r] = assemble_state(cfg.state.sources, list(js.name) if js is not None else [],
                                       list(js.position) if js is not None else [], ee)
    except (ImageEncodingError, StateAssemblyError) as exc:
        raise DatasetError(f"{bag}: {exc}") from None

    task, seed = bag.name, -1
    for label in (bag.name, episode_id):
        m = _EPISODE_NAME.match(label or "")
        if m:
            task, seed = m["task"], int(m["seed"])
            break
    return Episode(task=task, seed=seed, instruction=instruction or "", success=bool(success),
                   frames=frames, states=states, actions=actions,
                   stamps=cmd_stamps[rows].astype(np.float64) * 1e-9, bag=str(bag),
                   skipped=int(len(cmd_stamps) - len(rows)), extra={"duplicates": duplicates},
                   duration_s=(end_ns - start_ns) * 1e-9,
                   time_to_success_s=None if success_ns is None else (success_ns - start_ns) * 1e-9,
                   action_free=action_free)


# ---------------------------------------------------------------------------------------------
def _resolve_bag(root: Path, entry: dict) -> Path:
    name = f"{entry.get('task')}_s{entry.get('seed')}"
    recorded = entry.get("bag") or ""
    candidates = []
    if recorded:
        rp = Path(recorded)
        candidates += [root / "bags" / rp.name, rp if rp.is_absolute() else root / rp, rp]
    candidates.append(root / "bags" / name)
    for c in candidates:
        if c.is_dir():
            return c
    raise DatasetError(f"{root / 'report.json'}: episode {name}: bag "
                       f"{recorded or '(none recorded)'} not found (looked in {root / 'bags'})")


def load_dataset(root, embodiment, successful_only: bool = True, topic_map: dict | None = None,
                 action_free: bool = False, seeds=None) -> list[Episode]:
    """Episodes of an evaluator output folder (report.json + bags/), or of a list of bag folders.

    With report.json, the report picks the episodes and gives task, seed and success; with bag
    folders (a list, a single bag, or a folder of bags without a report) success is read from
    each bag. A LeRobotDataset (`lerobot:DIR`, or a folder with meta/info.json) is read with
    `lerobot_format.load_lerobot`. `successful_only` drops unsuccessful episodes either way;
    `seeds` (a collection of ints, None = all) keeps those seeds' episodes only; `action_free`
    reads every episode as a video with proprio (`load_episode`)."""
    emb = as_embodiment(embodiment)
    if isinstance(root, (str, Path)) and (str(root).startswith(LEROBOT_PREFIX)
                                          or (Path(root) / "meta" / "info.json").is_file()):
        from .lerobot_format import load_lerobot

        if action_free:
            raise DatasetError(f"{root}: a LeRobotDataset is read with its actions (action-free sources: bags)")
        return [e for e in load_lerobot(str(root).removeprefix(LEROBOT_PREFIX), emb, successful_only)
                if seeds is None or e.seed in seeds]
    if isinstance(root, (list, tuple)):
        bags = [Path(b) for b in root]
    else:
        root = Path(root)
        report = root / "report.json"
        if report.is_file():
            try:
                entries = json.loads(report.read_text())["episodes"]
            except (ValueError, KeyError, TypeError) as exc:
                raise DatasetError(f"{report}: not an evaluator report ({exc})") from None
            episodes = []
            for entry in entries:
                if successful_only and not entry.get("success"):
                    continue
                if seeds is not None and int(entry.get("seed", -1)) not in seeds:
                    continue
                ep = load_episode(_resolve_bag(root, entry), emb, topic_map, action_free)
                ep.task, ep.seed, ep.success = str(entry["task"]), int(entry["seed"]), bool(entry["success"])
                ep.instruction = ep.instruction or str(entry.get("instruction", ""))
                episodes.append(ep)
            return episodes
        if (root / "metadata.yaml").is_file():
            bags = [root]
        elif (root / "bags").is_dir():
            bags = sorted(p for p in (root / "bags").iterdir() if p.is_dir())
        elif root.is_dir():
            raise DatasetError(f"{root}: neither an evaluator output (report.json, bags/) nor a bag folder")
        else:
            raise DatasetError(f"{root}: folder not found")
    episodes = [load_episode(b, emb, topic_map, action_free) for b in bags]
    return [e for e in episodes if (e.success or not successful_only) and (seeds is None or e.seed in seeds)]


# ---------------------------------------------------------------------------------------------
def chunk_samples(episodes: list[Episode], horizon: int, future_frame_offsets=()) -> dict:
    """One sample per (episode, step k): the action chunk actions[k:k+horizon] (the tail padded
    by repeating the episode's last action; action_mask 1 real / 0 padded), the state at k and
    indices into `frames` (camera -> all episodes' frames concatenated) for the frame at k and
    the frames at k + offset (clipped to the episode). An action-free episode's samples have
    action_mask 0 everywhere (their frames and states train, their zero actions never)."""
    if int(horizon) < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    horizon = int(horizon)
    offsets = np.asarray(list(future_frame_offsets), dtype=np.int64).reshape(-1)
    episodes = [e for e in episodes if len(e.actions) > 0]
    lengths = np.array([len(e.actions) for e in episodes], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if len(lengths) else lengths
    n = int(lengths.sum())

    episode = np.repeat(np.arange(len(episodes), dtype=np.int64), lengths)
    step = np.arange(n, dtype=np.int64) - np.repeat(starts, lengths)
    ep_len, ep_start = np.repeat(lengths, lengths), np.repeat(starts, lengths)

    if episodes:
        all_actions = np.concatenate([e.actions for e in episodes]).astype(np.float32, copy=False)
        all_states = np.concatenate([e.states for e in episodes]).astype(np.float32, copy=False)
        action_dim, state_dim = all_actions.shape[1], all_states.shape[1]
    else:
        all_actions = all_states = np.zeros((0, 0), np.float32)
        action_dim = state_dim = 0

    local = step[:, None] + np.arange(horizon, dtype=np.int64)[None, :]           # (N, horizon)
    labelled = np.array([not e.action_free for e in episodes], dtype=bool)
    action_mask = ((local < ep_len[:, None]) & labelled[episode][:, None]).astype(np.float32)
    rows = ep_start[:, None] + np.minimum(local, ep_len[:, None] - 1)
    actions = all_actions[rows] if n else np.zeros((0, horizon, action_dim), np.float32)

    future = np.clip(step[:, None] + offsets[None, :], 0, ep_len[:, None] - 1) + ep_start[:, None]

    ids: dict[str, int] = {}
    per_episode = np.array([ids.setdefault(e.instruction, len(ids)) for e in episodes], dtype=np.int64)
    instructions = list(ids)

    cameras = list(episodes[0].frames) if episodes else []
    frames = {c: np.concatenate([e.frames[c] for e in episodes]) for c in cameras}
    return {
        "actions": actions.reshape(n, horizon, action_dim),
        "action_mask": action_mask.reshape(n, horizon),
        "state": all_states.reshape(n, state_dim),
        "frame_index": np.arange(n, dtype=np.int64),
        "future_index": future.reshape(n, len(offsets)).astype(np.int64),
        "episode": episode,
        "step": step,
        "instruction_id": per_episode[episode] if n else np.zeros(0, np.int64),
        "instructions": instructions,
        "frames": frames,
    }
