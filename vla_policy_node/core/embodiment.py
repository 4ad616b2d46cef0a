"""Per-robot embodiment configuration (config/robots/<name>.yaml): schema, loader, validation.

Everything robot-specific lives in one YAML file: prompt, cameras, state, action space,
normalization statistics, limits and the command contract. Every validation error names the
file, the key (dotted path) and the reason, all in one message.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

ActionSpace = Literal["joint_position", "joint_delta", "ee_delta", "ee_absolute", "base_velocity"]
Contract = Literal["sim", "ros2_control", "isaac", "cartesian"]
NormMode = Literal["quantile", "mean_std", "min_max"]
ENCODINGS = ("rgb8", "bgr8", "mono8")


class EmbodimentConfigError(ValueError):
    """A robot YAML that cannot be used; the message names file, key and reason."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CameraConfig(_Strict):
    name: str
    topic: str
    encoding: Literal["rgb8", "bgr8", "mono8"] = "rgb8"
    input_size: tuple[int, int] = Field(description="model input (height, width) in pixels")
    crop: tuple[int, int, int, int] | None = Field(
        default=None, description="(top, left, height, width) in source pixels, applied before resizing")
    required: bool = True


class StateConfig(_Strict):
    joint_states_topic: str = "/joint_states"
    ee_pose_topic: str | None = None
    names: list[str]
    sources: list[str] = Field(description="per entry: 'joint.<joint name>' or 'ee.<x|y|z|qx|qy|qz|qw>'")

    @model_validator(mode="after")
    def _check(self):
        if len(self.sources) != len(self.names):
            raise ValueError(f"state.sources: expected {len(self.names)} entries (one per state.names), "
                             f"got {len(self.sources)}")
        for i, src in enumerate(self.sources):
            kind, _, field = src.partition(".")
            if kind == "joint" and field:
                continue
            if kind == "ee" and field in ("x", "y", "z", "qx", "qy", "qz", "qw"):
                if self.ee_pose_topic is None:
                    raise ValueError(f"state.sources[{i}]: '{src}' needs state.ee_pose_topic")
                continue
            raise ValueError(f"state.sources[{i}]: '{src}' is not 'joint.<name>' or 'ee.<x|y|z|qx|qy|qz|qw>'")
        return self


class SyncConfig(_Strict):
    tolerance_s: float = Field(0.02, gt=0, description="max |camera stamp - state stamp|, s")
    max_age_s: float = Field(0.5, gt=0, description="inputs older than this are stale, s")


class GripperConfig(_Strict):
    index: int = Field(ge=0)
    convention: Literal["binary", "continuous"] = "continuous"
    open_value: float = -1.0
    closed_value: float = 1.0


class UnifiedActionConfig(_Strict):
    """Placement of this robot's action channels in a padded cross-embodiment tensor (Qwen-VLA style)."""
    dim: int = Field(gt=0)
    channels: list[int]


class ActionConfig(_Strict):
    space: ActionSpace
    names: list[str]
    units: list[str]
    control_rate_hz: float = Field(gt=0)
    horizon: int = Field(gt=0, description="actions per predicted chunk: what training uses by default and "
                                           "scripted backends produce (a checkpoint's chunks keep its own length)")
    execute_per_chunk: int = Field(gt=0, description="actions executed before re-planning (sync mode)")
    gripper: GripperConfig | None = None
    unified: UnifiedActionConfig | None = None

    @property
    def dim(self) -> int:
        return len(self.names)

    @property
    def dt(self) -> float:
        """Seconds between consecutive actions."""
        return 1.0 / self.control_rate_hz

    @model_validator(mode="after")
    def _check(self):
        if len(set(self.names)) != len(self.names):
            raise ValueError("action.names: names must be unique")
        if len(self.units) != self.dim:
            raise ValueError(f"action.units: expected {self.dim} entries (one per action.names), got {len(self.units)}")
        if self.execute_per_chunk > self.horizon:
            raise ValueError(f"action.execute_per_chunk: {self.execute_per_chunk} exceeds action.horizon {self.horizon}")
        if self.gripper is not None and self.gripper.index >= self.dim:
            raise ValueError(f"action.gripper.index: {self.gripper.index} out of range for {self.dim} action dims")
        if self.unified is not None:
            ch = self.unified.channels
            if len(ch) != self.dim:
                raise ValueError(f"action.unified.channels: expected {self.dim} entries, got {len(ch)}")
            if len(set(ch)) != len(ch) or min(ch) < 0 or max(ch) >= self.unified.dim:
                raise ValueError(f"action.unified.channels: must be distinct indices in [0, {self.unified.dim})")
        return self


class StatsConfig(_Strict):
    """Per-dimension statistics; per-timestep ones are lists of per-dimension lists (horizon x dim)."""
    q01: list | None = None
    q99: list | None = None
    mean: list | None = None
    std: list | None = None
    min: list | None = None
    max: list | None = None


class NormalizationConfig(_Strict):
    mode: NormMode = "quantile"
    file: str | None = Field(None, description="YAML/JSON file with {action: stats, state: stats}, relative to this YAML")
    action: StatsConfig | None = None
    state: StatsConfig | None = None


class WorkspaceConfig(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)   # a limit is a number
    min: tuple[float, float, float]
    max: tuple[float, float, float]


class LimitsConfig(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)   # a limit is a number
    action_min: list[float]
    action_max: list[float]
    max_step: list[float] | None = Field(None, description="max |change| between consecutive commands, per action dim")
    joint_names: list[str] = []
    joint_position_min: list[float] = []
    joint_position_max: list[float] = []
    joint_velocity_max: list[float] = []
    joint_acceleration_max: list[float] = []
    urdf: str | None = Field(None, description="URDF file (relative to the repository urdf/ folder) the joint limits come from")
    workspace: WorkspaceConfig | None = None
    max_deviation: list[float] | None = Field(
        None, description="position spaces: max |command - measured state|, per action dim")
    ee_delta_scale_m: float | None = Field(
        None, gt=0, description="ee_delta: metres of hand travel per action unit (workspace check)")


class ExecutorConfig(_Strict):
    """How chunks become commands (DESIGN section 7); node parameters may override each key."""
    mode: Literal["sync", "async", "async_rtc"] = "sync"
    merge: Literal["replace", "ensemble", "average"] = "replace"
    ensemble_decay: float = Field(0.5, ge=0, description="temporal ensembling: weight exp(-decay * rank)")
    ensemble_chunks: int = Field(0, ge=0, description="temporal ensembling: only the newest N chunks covering a "
                                                      "time vote (0 = all)")
    interpolation: Literal["nearest", "linear", "smooth"] = "nearest"
    control_rate_hz: float | None = Field(None, gt=0, description="controller rate (default: action rate)")
    latency_margin_s: float = Field(0.0, ge=0, description="async: request when remaining <= latency + margin")
    latency_percentile: float = Field(95.0, gt=0, le=100)
    latency_window: int = Field(50, gt=0)
    latency_warmup: int = Field(3, ge=0, description="first chunks of a run left out of the latency estimate")
    initial_latency_s: float = Field(0.2, ge=0, description="latency assumed before the first measurement")
    max_chunk_age_s: float = Field(1.0, gt=0, description="chunks computed from older observations are refused")
    max_acceleration: list[float] | None = Field(
        None, description="smooth interpolation / holds: per action dim, action units per s^2 "
                          "(delta spaces: change of the per-step command per s)")


class MonitorConfig(_Strict):
    """Imagination monitor: imagined vs real frames (divergence = 1 - SSIM at the imagined resolution)."""
    threshold: float = Field(gt=0, le=2, description="divergence above which a frame is flagged")
    action: Literal["none", "replan", "hold"] = Field(
        "none", description="what a flagged frame asks the executor to do")
    camera: str | None = Field(None, description="camera to compare (default: every imagined camera)")


class KinematicsConfig(_Strict):
    """The arm's serial chain in a URDF, for forward / inverse kinematics (core/kinematics.py)."""
    urdf: str = Field(description="URDF file, relative to the repository urdf/ folder")
    base_link: str = Field(description="frame poses are expressed in (the robot's base)")
    tip_link: str = Field(description="frame whose pose is commanded / measured (flange or tool)")


class IKConfig(_Strict):
    """cartesian contract on a joint-commanded robot: each pose target is solved to joint positions
    (warm-started from the measured joints) and sent as a joint command on output.command_topic."""
    joint_command: Literal["joint_trajectory", "joint_state"] = Field(
        "joint_trajectory", description="trajectory_msgs/JointTrajectory (ros2_control) or "
                                        "sensor_msgs/JointState (Isaac Sim joint_command)")
    position_only: bool = Field(False, description="solve for x y z only; the orientation is free")
    pose_topic: str | None = Field(None, description="also publish each pose target (PoseStamped) here")
    max_iterations: int = Field(100, gt=0)
    tolerance_m: float = Field(1e-4, gt=0, description="position tolerance, m")
    tolerance_rad: float = Field(1e-3, gt=0, description="orientation tolerance, rad")
    max_joint_step: float | None = Field(
        None, gt=0, description="rad: a solution farther than this from the previous joint command is not sent")


class TrajectoryActionConfig(_Strict):
    """ros2_control contract: each command as a control_msgs/action/FollowJointTrajectory goal to
    the controller's action server instead of a message on output.command_topic; the controller's
    result is counted by error code."""
    name: str = Field(description="action name, e.g. panda_arm_controller/follow_joint_trajectory")
    path_tolerance: float | list[float] = Field(0.0, description="rad (per joint or one for all); 0: the controller's default")
    goal_tolerance: float | list[float] = Field(0.0, description="rad (per joint or one for all); 0: the controller's default")
    goal_time_tolerance_s: float = Field(0.0, ge=0, description="s after the trajectory's end")

    @model_validator(mode="after")
    def _check(self):
        for key in ("path_tolerance", "goal_tolerance"):
            value = getattr(self, key)
            values = value if isinstance(value, list) else [value]
            if any(v < 0 and v != -1 for v in values):
                raise ValueError(f"trajectory_action.{key}: {value}: tolerances are >= 0 rad (or -1: none)")
        return self


class OutputConfig(_Strict):
    contract: Contract
    command_topic: str
    joint_names: list[str] = []
    frame_id: str = "base"
    ik: IKConfig | None = None
    trajectory_action: TrajectoryActionConfig | None = None

    @model_validator(mode="after")
    def _check_action(self):
        action = self.trajectory_action
        if action is None:
            return self
        if self.contract != "ros2_control":
            raise ValueError(f"trajectory_action: needs contract 'ros2_control', not '{self.contract}'")
        for key in ("path_tolerance", "goal_tolerance"):
            value = getattr(action, key)
            if isinstance(value, list) and self.joint_names and len(value) != len(self.joint_names):
                raise ValueError(f"trajectory_action.{key}: {len(value)} values for {len(self.joint_names)} "
                                 "joint_names")
        return self


class LeRobotConfig(_Strict):
    """This robot's feature keys in a LeRobotDataset and at a LeRobot policy's inputs and output."""
    cameras: dict[str, str] = Field(default_factory=dict,
                                    description="camera name -> image key (default observation.images.<name>)")
    state: str = "observation.state"
    action: str = "action"


class EmbodimentConfig(_Strict):
    name: str
    description: str = ""
    robot_tag: str
    arms: Literal["single arm", "dual arms"] = "single arm"
    waist: bool = False
    mobile_base: bool = False
    prompt: str
    cameras: list[CameraConfig]
    state: StateConfig
    env_state_topic: str | None = None
    sync: SyncConfig = SyncConfig()
    action: ActionConfig
    normalization: NormalizationConfig
    limits: LimitsConfig
    output: OutputConfig
    kinematics: KinematicsConfig | None = None
    executor: ExecutorConfig = ExecutorConfig()
    monitor: MonitorConfig | None = None
    lerobot: LeRobotConfig = LeRobotConfig()

    @model_validator(mode="after")
    def _check(self):
        if not self.cameras:
            raise ValueError("cameras: at least one camera is required")
        names = [c.name for c in self.cameras]
        if len(set(names)) != len(names):
            raise ValueError("cameras: camera names must be unique")
        unknown = sorted(set(self.lerobot.cameras) - set(names))
        if unknown:
            raise ValueError(f"lerobot.cameras: {unknown} are not among cameras {names}")
        if self.monitor is not None and self.monitor.camera is not None and self.monitor.camera not in names:
            raise ValueError(f"monitor.camera: '{self.monitor.camera}' is not one of cameras {names}")
        dim = self.action.dim
        for key in ("action_min", "action_max"):
            if len(getattr(self.limits, key)) != dim:
                raise ValueError(f"limits.{key}: expected {dim} entries (action.names), got {len(getattr(self.limits, key))}")
        for key in ("max_step", "max_deviation"):
            values = getattr(self.limits, key)
            if values is not None and len(values) != dim:
                raise ValueError(f"limits.{key}: expected {dim} entries (action.names), got {len(values)}")
        if self.executor.max_acceleration is not None and len(self.executor.max_acceleration) != dim:
            raise ValueError(f"executor.max_acceleration: expected {dim} entries (action.names), "
                             f"got {len(self.executor.max_acceleration)}")
        if self.executor.control_rate_hz and self.action.space in ("ee_delta", "joint_delta", "base_velocity") \
                and abs(self.executor.control_rate_hz - self.action.control_rate_hz) > 1e-9:
            raise ValueError(f"executor.control_rate_hz: {self.executor.control_rate_hz} differs from "
                             f"action.control_rate_hz {self.action.control_rate_hz}; a {self.action.space} "
                             "action is a step per action period and cannot be resampled")
        for i, (lo, hi) in enumerate(zip(self.limits.action_min, self.limits.action_max)):
            if not lo < hi:
                raise ValueError(f"limits.action_min[{i}]: {lo} is not below limits.action_max[{i}] = {hi} "
                                 f"({self.action.names[i]})")
        nj = len(self.limits.joint_names)
        for key in ("joint_position_min", "joint_position_max", "joint_velocity_max", "joint_acceleration_max"):
            values = getattr(self.limits, key)
            if values and len(values) != nj:
                raise ValueError(f"limits.{key}: expected {nj} entries (limits.joint_names), got {len(values)}")
        for i, (lo, hi) in enumerate(zip(self.limits.joint_position_min, self.limits.joint_position_max)):
            if not lo < hi:
                raise ValueError(f"limits.joint_position_min[{i}]: {lo} is not below joint_position_max[{i}] = {hi}")
        if self.action.space in ("joint_position", "joint_delta"):
            if self.output.joint_names and self.output.joint_names != self.action.names:
                raise ValueError("output.joint_names: must equal action.names for a joint-space action")
        if self.output.contract in ("ros2_control", "isaac") and not self.output.joint_names:
            raise ValueError(f"output.joint_names: required for the '{self.output.contract}' contract")
        self._check_cartesian_output()
        self._check_workspace()
        return self

    def _check_workspace(self) -> None:
        """A workspace box must be enforceable for the action space, or it is refused: a limit a
        user writes either acts or fails at load."""
        if self.limits.workspace is None:
            return
        space = self.action.space
        if space == "ee_delta" and self.limits.ee_delta_scale_m is None:
            raise ValueError("limits.workspace: an ee_delta robot needs limits.ee_delta_scale_m (metres of hand "
                             "travel per action unit) to keep the hand inside the box")
        if space == "joint_position" and self.kinematics is None:
            raise ValueError("limits.workspace: a joint_position robot needs kinematics (urdf, base_link, tip_link) "
                             "to compute the tip position of each command")
        if space not in ("ee_absolute", "ee_delta", "joint_position"):
            raise ValueError(f"limits.workspace: not enforceable for action.space '{space}' (ee_absolute, ee_delta "
                             "and joint_position only)")

    def _check_cartesian_output(self) -> None:
        out, ik = self.output, self.output.ik
        if out.contract != "cartesian":
            if ik is not None:
                raise ValueError(f"output.ik: only for the 'cartesian' contract, not '{out.contract}'")
            return
        if self.action.space != "ee_absolute":
            raise ValueError(f"action.space: the 'cartesian' contract needs 'ee_absolute', not '{self.action.space}'")
        need = 3 if ik is not None and ik.position_only else 7
        if self.action.dim < need:
            raise ValueError(f"action.names: the 'cartesian' contract needs x y z{'' if need == 3 else ' qx qy qz qw'} "
                             f"first ({need} entries), got {self.action.dim}")
        if out.joint_names and ik is None:
            raise ValueError("output.ik: required when output.joint_names are set for the 'cartesian' contract "
                             "(pose targets are solved to those joints)")
        if ik is not None:
            if not out.joint_names:
                raise ValueError("output.joint_names: required with output.ik (the joints the IK solves for)")
            if self.kinematics is None:
                raise ValueError("kinematics: required with output.ik (urdf, base_link, tip_link)")

    @property
    def camera_names(self) -> list[str]:
        return [c.name for c in self.cameras]

    def render_prompt(self, instruction: str, chunk_size: int | None = None) -> str:
        """The embodiment prompt (Qwen-VLA template) for one instruction; `chunk_size` defaults to
        action.horizon."""
        arms = self.arms + (", waist" if self.waist else "") + (", and mobile base" if self.mobile_base else "")
        fields = dict(robot_tag=self.robot_tag, arms=arms, fps=_format_number(self.action.control_rate_hz),
                      chunk_size=chunk_size or self.action.horizon, instruction=instruction, name=self.name)
        return self.prompt.format(**fields)


def _format_number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


class Embodiment:
    """A validated embodiment with its normalization statistics resolved to arrays."""

    def __init__(self, config: EmbodimentConfig, path: Path, action_stats: dict, state_stats: dict):
        self.config = config
        self.path = path
        self.action_stats = action_stats
        self.state_stats = state_stats

    @property
    def name(self) -> str:
        return self.config.name

    def __getattr__(self, item):
        return getattr(self.config, item)


REQUIRED_STATS = {"quantile": ("q01", "q99"), "mean_std": ("mean", "std"), "min_max": ("min", "max")}


def _resolve_stats(where: str, stats: StatsConfig | None, mode: str, dim: int, horizon: int | None,
                   names: list[str]) -> dict:
    """Check and convert one stats block; `horizon` allows per-timestep (horizon x dim) arrays."""
    required = REQUIRED_STATS[mode]
    if stats is None:
        raise ValueError(f"{where}: missing; mode '{mode}' needs {' and '.join(required)} "
                         f"with {dim} entries ({', '.join(names)})")
    out = {}
    for key in required:
        value = getattr(stats, key)
        if value is None:
            raise ValueError(f"{where}.{key}: missing; mode '{mode}' needs it with {dim} entries")
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{where}.{key}: not a numeric list or list of lists") from None
        shapes = [(dim,)] + ([(horizon, dim)] if horizon else [])
        if arr.shape not in shapes:
            allowed = " or ".join(str(s) for s in shapes)
            raise ValueError(f"{where}.{key}: shape {arr.shape}, expected {allowed}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{where}.{key}: contains non-finite values")
        out[key] = arr
    lo_key, hi_key = required
    if mode == "mean_std":
        if np.any(out["std"] <= 0):
            raise ValueError(f"{where}.std: must be > 0 in every dimension")
    elif np.any(out[hi_key] < out[lo_key]):
        raise ValueError(f"{where}.{hi_key}: below {lo_key} in some dimension")
    return out


def _flatten_pydantic(err: ValidationError) -> list[str]:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in e["loc"]).replace(".[", "[")
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        head = msg.split(": ", 1)[0]
        if ": " in msg and " " not in head:
            lines.append(msg)  # model validators name the full key themselves
        else:
            lines.append(f"{loc}: {msg}" if loc else msg)
    return lines


def load_embodiment(path: str | Path) -> Embodiment:
    """Load and validate an embodiment YAML; raise EmbodimentConfigError naming file, key and reason."""
    path = Path(path)
    if not path.is_file():
        raise EmbodimentConfigError(f"{path}: embodiment file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise EmbodimentConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise EmbodimentConfigError(f"{path}: top level must be a mapping of keys")
    try:
        config = EmbodimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise EmbodimentConfigError("\n".join(f"{path}: {line}" for line in _flatten_pydantic(exc))) from None
    norm = config.normalization
    action_stats, state_stats = norm.action, norm.state
    try:
        if norm.file is not None:
            stats_path = path.parent / norm.file
            if not stats_path.is_file():
                raise ValueError(f"normalization.file: '{norm.file}' not found next to the YAML")
            data = yaml.safe_load(stats_path.read_text()) or {}
            if action_stats is not None or state_stats is not None:
                raise ValueError("normalization.file: give statistics inline or in a file, not both")
            try:
                action_stats = StatsConfig.model_validate(data["action"]) if "action" in data else None
                state_stats = StatsConfig.model_validate(data["state"]) if "state" in data else None
            except ValidationError as exc:
                raise ValueError(f"normalization.file: {_flatten_pydantic(exc)[0]}") from None
        act = _resolve_stats("normalization.action", action_stats, norm.mode, config.action.dim,
                             config.action.horizon, config.action.names)
        st = _resolve_stats("normalization.state", state_stats, norm.mode, len(config.state.names),
                            None, config.state.names)
        if config.limits.urdf is not None:
            _check_urdf_limits(config.limits)
        if config.kinematics is not None:
            _check_kinematics(config)
    except ValueError as exc:
        raise EmbodimentConfigError(f"{path}: {exc}") from None
    return Embodiment(config, path, act, st)


def _check_urdf_limits(limits: LimitsConfig) -> None:
    """Explicit joint limits must name URDF joints and lie within the URDF's limits."""
    from .kinematics import urdf_joint_limits
    urdf = urdf_file(limits.urdf)
    if not urdf.is_file():
        raise ValueError(f"limits.urdf: '{limits.urdf}' not found in {urdf.parent}")
    known = urdf_joint_limits(urdf)
    for i, name in enumerate(limits.joint_names):
        if name not in known:
            raise ValueError(f"limits.joint_names[{i}]: joint '{name}' not in {limits.urdf}")
        lim = known[name]
        checks = [("joint_position_min", lambda v: v >= lim.lower - 1e-9, f">= {lim.lower}"),
                  ("joint_position_max", lambda v: v <= lim.upper + 1e-9, f"<= {lim.upper}"),
                  ("joint_velocity_max", lambda v: 0 < v <= lim.velocity + 1e-9, f"in (0, {lim.velocity}]")]
        for key, ok, bound in checks:
            values = getattr(limits, key)
            if values and not ok(values[i]):
                raise ValueError(f"limits.{key}[{i}]: {values[i]} for {name} must be {bound} ({limits.urdf})")


def _check_kinematics(config: EmbodimentConfig) -> None:
    """The kinematic chain exists in the URDF and its joints are the robot's commanded joints."""
    from .kinematics import KinematicsError, chain_joints, urdf_model
    kin = config.kinematics
    urdf = urdf_file(kin.urdf)
    if not urdf.is_file():
        raise ValueError(f"kinematics.urdf: '{kin.urdf}' not found in {urdf.parent}")
    try:
        model = urdf_model(urdf)
        chain = [model.names[j] for j in chain_joints(model, kin.base_link, kin.tip_link, kin.urdf)]
    except KinematicsError as exc:
        raise ValueError(f"kinematics.{exc}") from None
    joints = config.output.joint_names or (config.action.names if config.action.space == "joint_position" else [])
    if joints and sorted(joints) != sorted(chain):
        key = "output.joint_names" if config.output.joint_names else "action.names"
        raise ValueError(f"{key}: {joints} are not the joints of the chain {kin.base_link} -> {kin.tip_link} "
                         f"in {kin.urdf} ({', '.join(chain)})")


def config_root() -> Path:
    """The config/ folder (urdf/ is its sibling): in the source tree, else the installed package share
    (found through the ament index under a ROS install, or under the Python prefix)."""
    here = Path(__file__).resolve().parents[2] / "config"
    if here.is_dir():
        return here
    candidates = [Path(sys.prefix) / "share" / "vla_policy_node" / "config"]
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
        try:
            candidates.insert(0, Path(get_package_share_directory("vla_policy_node")) / "config")
        except PackageNotFoundError:
            pass
    except ImportError:
        pass
    for share in candidates:
        if share.is_dir():
            return share
    raise FileNotFoundError(f"config folder not found in {here} or {', '.join(map(str, candidates))}")



def project_path(path: str | Path) -> Path:
    """A file path as given (absolute, or relative to the working directory), else relative to the
    project (the source tree or the installed package share): e.g. checkpoints/...."""
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path
    candidate = config_root().parent / path
    return candidate if candidate.exists() else path

def urdf_file(name: str) -> Path:
    """A robot description in the urdf/ folder beside config/."""
    return config_root().parent / "urdf" / name


def resolve_robot(name_or_path: str) -> Path:
    """A robot name ('metaworld_sawyer') or a path to a YAML file."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        return p
    return config_root() / "robots" / f"{name_or_path}.yaml"


def load_robot(name_or_path: str) -> Embodiment:
    return load_embodiment(resolve_robot(name_or_path))
