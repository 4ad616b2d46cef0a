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
    horizon: int = Field(gt=0, description="actions per predicted chunk")
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
    min: tuple[float, float, float]
    max: tuple[float, float, float]


class LimitsConfig(_Strict):
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


class OutputConfig(_Strict):
    contract: Contract
    command_topic: str
    joint_names: list[str] = []
    frame_id: str = "base"


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

    @model_validator(mode="after")
    def _check(self):
        if not self.cameras:
            raise ValueError("cameras: at least one camera is required")
        names = [c.name for c in self.cameras]
        if len(set(names)) != len(names):
            raise ValueError("cameras: camera names must be unique")
        dim = self.action.dim
        for key in ("action_min", "action_max"):
            if len(getattr(self.limits, key)) != dim:
                raise ValueError(f"limits.{key}: expected {dim} entries (action.names), got {len(getattr(self.limits, key))}")
        if self.limits.max_step is not None and len(self.limits.max_step) != dim:
            raise ValueError(f"limits.max_step: expected {dim} entries (action.names), got {len(self.limits.max_step)}")
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
        return self

    @property
    def camera_names(self) -> list[str]:
        return [c.name for c in self.cameras]

    def render_prompt(self, instruction: str) -> str:
        """The embodiment prompt (Qwen-VLA template) for one instruction."""
        arms = self.arms + (", waist" if self.waist else "") + (", and mobile base" if self.mobile_base else "")
        fields = dict(robot_tag=self.robot_tag, arms=arms, fps=_format_number(self.action.control_rate_hz),
                      chunk_size=self.action.horizon, instruction=instruction, name=self.name)
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
    except ValueError as exc:
        raise EmbodimentConfigError(f"{path}: {exc}") from None
    return Embodiment(config, path, act, st)


def urdf_limits(urdf_path: Path) -> dict[str, tuple[float, float, float]]:
    """joint name -> (lower, upper, velocity) for the revolute/prismatic joints of a URDF."""
    import xml.etree.ElementTree as ET
    out = {}
    for joint in ET.parse(urdf_path).getroot().iter("joint"):
        limit = joint.find("limit")
        if joint.get("type") in ("revolute", "prismatic") and limit is not None:
            out[joint.get("name")] = (float(limit.get("lower", "-inf")), float(limit.get("upper", "inf")),
                                      float(limit.get("velocity", "inf")))
    return out


def _check_urdf_limits(limits: LimitsConfig) -> None:
    """Explicit joint limits must name URDF joints and lie within the URDF's limits."""
    urdf = config_root().parent / "urdf" / limits.urdf
    if not urdf.is_file():
        raise ValueError(f"limits.urdf: '{limits.urdf}' not found in {urdf.parent}")
    known = urdf_limits(urdf)
    for i, name in enumerate(limits.joint_names):
        if name not in known:
            raise ValueError(f"limits.joint_names[{i}]: joint '{name}' not in {limits.urdf}")
        lo, hi, vel = known[name]
        checks = [("joint_position_min", lambda v: v >= lo - 1e-9, f">= {lo}"),
                  ("joint_position_max", lambda v: v <= hi + 1e-9, f"<= {hi}"),
                  ("joint_velocity_max", lambda v: 0 < v <= vel + 1e-9, f"in (0, {vel}]")]
        for key, ok, bound in checks:
            values = getattr(limits, key)
            if values and not ok(values[i]):
                raise ValueError(f"limits.{key}[{i}]: {values[i]} for {name} must be {bound} ({limits.urdf})")


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


def resolve_robot(name_or_path: str) -> Path:
    """A robot name ('metaworld_sawyer') or a path to a YAML file."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        return p
    return config_root() / "robots" / f"{name_or_path}.yaml"


def load_robot(name_or_path: str) -> Embodiment:
    return load_embodiment(resolve_robot(name_or_path))
