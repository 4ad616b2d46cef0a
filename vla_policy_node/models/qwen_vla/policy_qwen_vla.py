"""`qwen_vla` backend: one Qwen-VLA checkpoint behind the policy interface, for every robot it was
trained on.

The robot file selects everything robot-specific: the embodiment prompt (its template, tag, arms,
control rate and chunk length), the camera views, the channels of the unified action tensor its
actions occupy, and the checkpoint's statistics for that robot (looked up by those channels and
the action space). Per observation: views -> Qwen2-VL patches, [tagged views | prompt] through the
backbone, a few Euler steps of the action expert over the H x K unified tensor, the robot's rows
and channels read back and unnormalized. Channels and rows the robot does not use are dropped
before anything reaches it.

Checkpoint folder: config.json (policy configuration with its embodiments), backbone/ (transformers
Qwen2VLModel), action_expert/ (diffusers ModelMixin), scheduler/, tokenizer/, normalization.json
(quantile statistics per embodiment).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..backend import COMMON_OPTIONS, BackendOption, PolicyInput, PolicyOutput
from ..checkpoint import CHECKPOINT_FORMAT, CheckpointError, own_memory
from ..components.loading import DTYPES, load_network, load_scheduler, read_checkpoint_config
from ..components.pipeline import LearnedPolicy
from ..components.vae import resize_frames
from ...core.normalization import Normalizer
from .configuration_qwen_vla import QwenVLAConfig
from .modeling_qwen_vla import PromptTokenizer, QwenVLAActionExpert, sample_actions, views_to_patches

NORM_MODE = "quantile"          # 2 (a - q01) / (q99 - q01) - 1, clipped: the paper's, per dataset and dimension


def embodiment_entry(robot, max_horizon: int | None = None, relative_actions: bool = False) -> dict:
    """What a checkpoint records of a robot file it was trained on (and matches robot files against);
    the robot's chunk is its action.horizon, at most `max_horizon` (the unified tensor's rows).
    `relative_actions`: the model's actions are joint targets minus the joint positions the chunk
    starts from (openpi's delta actions): the motion, not the pose, fills the normalized range."""
    emb = robot.config
    if emb.action.unified is None:
        raise CheckpointError(f"{robot.path}: key action.unified missing: qwen_vla places actions into the "
                              f"unified tensor by its channel ids")
    if relative_actions and (emb.action.space != "joint_position" or list(emb.action.names) != list(emb.state.names)):
        raise CheckpointError(f"{robot.path}: relative actions need action.space joint_position (it is "
                              f"{emb.action.space}) and state.names equal to action.names")
    return {"action_space": emb.action.space, "action_names": list(emb.action.names),
            "state_names": list(emb.state.names), "channels": list(emb.action.unified.channels),
            "unified_dim": int(emb.action.unified.dim),
            "horizon": int(min(emb.action.horizon, max_horizon or emb.action.horizon)),
            "cameras": [c.name for c in emb.cameras if c.required], "relative_actions": bool(relative_actions)}


def match_embodiment(checkpoint: str, config: QwenVLAConfig, robot) -> str:
    """The checkpoint's embodiment a robot file is, by action space, action names and unified channels;
    a CheckpointError naming the robot file, the key and the checkpoint when there is none."""
    entry = embodiment_entry(robot)
    if entry["unified_dim"] != config.unified_dim:
        raise CheckpointError(f"{robot.path}: action.unified.dim {entry['unified_dim']} is not the unified "
                              f"tensor of checkpoint {checkpoint} ({config.unified_dim} channels)")
    for name, known in sorted(config.embodiments.items()):
        if (known["channels"], known["action_space"], known["action_names"]) == \
                (entry["channels"], entry["action_space"], entry["action_names"]):
            if known["horizon"] < robot.config.action.execute_per_chunk:
                raise CheckpointError(f"{robot.path}: action.execute_per_chunk {robot.config.action.execute_per_chunk} "
                                      f"exceeds the {known['horizon']}-action chunks checkpoint {checkpoint} learned "
                                      f"for '{name}'")
            missing = [c for c in known["cameras"] if c not in robot.config.camera_names]
            if missing:
                raise CheckpointError(f"{robot.path}: cameras lack {missing}, the views checkpoint {checkpoint} "
                                      f"learned for '{name}'")
            if config.use_proprio and known["state_names"] != entry["state_names"]:
                raise CheckpointError(f"{robot.path}: state.names {entry['state_names']} differ from the proprio "
                                      f"checkpoint {checkpoint} learned for '{name}' ({known['state_names']})")
            return name
    have = {n: (e["action_space"], e["channels"]) for n, e in sorted(config.embodiments.items())}
    raise CheckpointError(f"{robot.path}: action.unified.channels {entry['channels']} ({entry['action_space']}, "
                          f"{entry['action_names']}) are not an embodiment of checkpoint {checkpoint}, which "
                          f"has statistics for {have}")


def save_statistics(path: Path, stats: dict) -> None:
    data = {"mode": NORM_MODE, "embodiments": {
        name: {part: {k: np.asarray(v).tolist() for k, v in block.items()} for part, block in s.items()}
        for name, s in stats.items()}}
    (path / "normalization.json").write_text(json.dumps(data, indent=1))


def load_statistics(path: Path, config: QwenVLAConfig) -> dict:
    """name -> {"action": {q01, q99}, "state": {q01, q99}} arrays; each embodiment's must be there."""
    file = path / "normalization.json"
    if not file.is_file():
        raise CheckpointError(f"{file}: missing; a learned policy never runs without its statistics")
    try:
        data = json.loads(file.read_text())
        if data["mode"] != NORM_MODE:
            raise CheckpointError(f"{file}: mode {data['mode']!r}, qwen_vla checkpoints use '{NORM_MODE}'")
        out = {}
        for name, emb in config.embodiments.items():
            block = data["embodiments"][name]
            out[name] = {}
            for part, dim in (("action", len(emb["action_names"])), ("state", len(emb["state_names"]))):
                stats = {k: np.asarray(block[part][k], dtype=np.float64) for k in ("q01", "q99")}
                if any(v.shape != (dim,) or not np.all(np.isfinite(v)) for v in stats.values()):
                    raise CheckpointError(f"{file}: embodiments.{name}.{part}: q01/q99 are not {dim} finite numbers")
                out[name][part] = stats
        return out
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"{file}: {type(exc).__name__} {exc} (expected mode and embodiments.<name>."
                              f"action/state.q01/q99)") from None


def to_unified(values: np.ndarray, channels: list, unified_dim: int, horizon: int) -> tuple:
    """(B, h, c) robot actions in model space -> the (B, H, K) zero-padded tensor and its (B, H, K) mask."""
    b, h = values.shape[:2]
    y = np.zeros((b, horizon, unified_dim), np.float32)
    mask = np.zeros_like(y)
    y[:, :h, channels] = values
    mask[:, :h, channels] = 1.0
    return y, mask


def from_unified(y: np.ndarray, channels: list, h: int) -> np.ndarray:
    """The robot's first h rows and its channels of (B, H, K): nothing else reaches it."""
    return y[:, :h][..., channels]


@dataclass
class QwenVLAPipeline:
    """Everything a checkpoint holds, and chunk sampling from it for one embodiment at a time."""
    config: QwenVLAConfig
    backbone: torch.nn.Module
    action_expert: QwenVLAActionExpert
    scheduler: object
    tokenizer: PromptTokenizer
    statistics: dict                 # embodiment name -> {"action": stats, "state": stats}
    meta: dict
    _normalizers: dict = field(default_factory=dict, repr=False)    # (embodiment, part) -> Normalizer

    @property
    def device(self) -> torch.device:
        return self.action_expert.device

    @property
    def dtype(self) -> torch.dtype:
        return self.action_expert.dtype

    def normalizer(self, embodiment: str, part: str) -> Normalizer:
        """`part` ("action" / "state") statistics of one embodiment, built once."""
        key = (embodiment, part)
        if key not in self._normalizers:
            self._normalizers[key] = Normalizer(NORM_MODE, self.statistics[embodiment][part])
        return self._normalizers[key]

    # ---- checkpoint ---------------------------------------------------------------------
    def save_pretrained(self, path: str | Path, training: dict | None = None) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = dict(self.meta, backend="qwen_vla", format=CHECKPOINT_FORMAT, policy=self.config.to_dict())
        if training is not None:
            meta["training"] = training
        (path / "config.json").write_text(json.dumps(meta, indent=2))
        self.backbone.save_pretrained(path / "backbone")
        self.action_expert.save_pretrained(path / "action_expert")
        self.scheduler.save_pretrained(path / "scheduler")
        self.tokenizer.tokenizer.save_pretrained(path / "tokenizer")
        save_statistics(path, self.statistics)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu", dtype: str = "float32") -> "QwenVLAPipeline":
        from transformers import AutoTokenizer, Qwen2VLModel

        path, meta, config = read_checkpoint_config(path, "qwen_vla", QwenVLAConfig, dtype,
                                                    ("backbone", "action_expert", "scheduler", "tokenizer"))
        try:
            backbone = Qwen2VLModel.from_pretrained(path / "backbone", local_files_only=True)
            tokenizer = AutoTokenizer.from_pretrained(path / "tokenizer", local_files_only=True)
        except (OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{path}: backbone or tokenizer cannot be loaded: {exc}") from None
        backbone = own_memory(backbone).to(device, DTYPES[dtype]).eval().requires_grad_(False)
        expert = load_network(path / "action_expert", QwenVLAActionExpert, device, DTYPES[dtype])
        prompts = PromptTokenizer(tokenizer, config.tokens_per_view, config.max_text_tokens)
        if len(prompts) > config.vocab_size or prompts.image_token_id != backbone.config.image_token_id:
            raise CheckpointError(f"{path / 'tokenizer'}: {len(prompts)} tokens, image token "
                                  f"{prompts.image_token_id}; the backbone has {config.vocab_size} embeddings, "
                                  f"image token {backbone.config.image_token_id}")
        return cls(config, backbone, expert, load_scheduler(path / "scheduler"), prompts,
                   load_statistics(path, config), meta)

    # ---- inference ----------------------------------------------------------------------
    def condition(self, views: torch.Tensor, prompts: list[str], view_names: tuple) -> tuple:
        """Backbone states (B, L, hidden) and their mask (B, L) for views (B, V, S, S, 3) uint8 and prompts."""
        cfg = self.config
        b, v = views.shape[:2]
        pixel_values, grid = views_to_patches(views.reshape(b * v, *views.shape[2:]).to(self.device),
                                              cfg.patch_size, cfg.spatial_merge_size, cfg.temporal_patch_size)
        text = self.tokenizer.batch(prompts, [view_names] * b, self.device)
        hidden = self.backbone(**text, pixel_values=pixel_values.to(self.dtype), image_grid_thw=grid).last_hidden_state
        return hidden, text["attention_mask"]

    @torch.no_grad()
    def __call__(self, views: np.ndarray, prompts: list[str], embodiment: str, states: np.ndarray | None = None,
                 num_inference_steps: int = 0, generator=None, prefix: np.ndarray | None = None) -> dict:
        """Chunks for B observations of one embodiment: views (B, V, H, W, 3) uint8 RGB in the
        embodiment's camera order, prompts rendered from its robot file, states (B, state_dim) physical
        units (read with use_proprio, and for relative actions, which are added to them), prefix (B, k, dim)
        model space or None (not kept for relative actions: they are relative to another state). Returns
        actions_normalized / actions (B, horizon, dim), unified (B, H, K) and the times (ms)."""
        t0 = time.perf_counter()
        cfg, emb = self.config, self.config.embodiments[embodiment]
        b, v = views.shape[:2]
        frames = resize_frames(np.asarray(views).reshape(b * v, *views.shape[2:]), cfg.image_size)
        frames = frames.reshape(b, v, cfg.image_size, cfg.image_size, 3)
        proprio = None
        if cfg.use_proprio:
            state_n = self.normalizer(embodiment, "state").normalize(np.asarray(states, dtype=np.float64))
            proprio = torch.zeros(b, cfg.unified_dim, dtype=self.dtype, device=self.device)
            proprio[:, : state_n.shape[1]] = torch.as_tensor(state_n, dtype=self.dtype, device=self.device)
        relative = bool(emb.get("relative_actions", False))
        prefix_t = prefix_mask = None
        if prefix is not None and len(prefix[0]) and not relative:
            y, m = to_unified(np.asarray(prefix, dtype=np.float32), emb["channels"], cfg.unified_dim, cfg.horizon)
            prefix_t = torch.as_tensor(y, dtype=self.dtype, device=self.device)
            prefix_mask = torch.as_tensor(m, device=self.device)
        index = self.action_expert.embodiment_index([embodiment] * b, self.device)
        t1 = time.perf_counter()
        hidden, mask = self.condition(frames, prompts, tuple(emb["cameras"]))
        unified = sample_actions(self.action_expert, self.scheduler, hidden, mask,
                                 num_inference_steps or cfg.num_inference_steps, proprio, index, generator,
                                 prefix_t, prefix_mask)
        t2 = time.perf_counter()
        unified = unified.float().cpu().numpy()
        actions_n = from_unified(unified, emb["channels"], emb["horizon"]).clip(-1.0, 1.0)
        actions = self.normalizer(embodiment, "action").unnormalize(actions_n)
        if relative:                                   # joint targets = the chunk's start + the motion
            actions = actions + np.asarray(states, dtype=np.float64)[:, None, :]
        return {"actions_normalized": actions_n, "actions": actions,
                "unified": unified, "timings_ms": {"preprocess_ms": (t1 - t0) * 1e3, "inference_ms": (t2 - t1) * 1e3,
                                                   "postprocess_ms": (time.perf_counter() - t2) * 1e3}}


class QwenVLAPolicy(LearnedPolicy):
    name = "qwen_vla"
    supports_prefix = True
    options = {**COMMON_OPTIONS,
               "num_inference_steps": BackendOption(0, "Euler steps of the action expert (0 = the checkpoint's)")}
    counted_networks = ("backbone", "action_expert")
    reported_networks = ("backbone", "action_expert")

    def __init__(self, embodiment, checkpoint: str = "", device: str = "cpu", dtype: str = "float32",
                 num_inference_steps: int = 0):
        super().__init__(embodiment, checkpoint, device, dtype)
        entry = self.pipeline.config.embodiments[self.embodiment_name]
        self.cameras = list(entry["cameras"])
        # a real-time-chunking prefix is the previous chunk's motion from another start: not kept
        self.supports_prefix = not entry.get("relative_actions", False)
        self.num_inference_steps = int(num_inference_steps) or self.pipeline.config.num_inference_steps

    def load_pipeline(self, checkpoint: str, device: str, dtype: str) -> QwenVLAPipeline:
        return QwenVLAPipeline.from_pretrained(checkpoint, device, dtype)

    def fit_robot(self, checkpoint: str) -> None:
        """The checkpoint's embodiment this robot file is (CheckpointError when it is none)."""
        self.embodiment_name = match_embodiment(self.checkpoint, self.pipeline.config, self.embodiment)

    def cache_instruction(self, instruction: str) -> None:
        """Nothing to compute ahead: the prompt is tokenized with each chunk's views."""

    @property
    def chunk_length(self) -> int:
        """The rows of the unified tensor this robot uses (the chunk the checkpoint learned for it)."""
        return int(self.pipeline.config.embodiments[self.embodiment_name]["horizon"])

    def prompt(self, instruction: str) -> str:
        """The embodiment prompt of the robot file this backend drives, with the chunk length the
        checkpoint learned for it (the robot file's action.horizon is a training default)."""
        return self.embodiment.config.render_prompt(instruction, chunk_size=self.chunk_length)

    def camera_input(self, obs: PolicyInput) -> np.ndarray:
        """(V, H, W, 3) uint8: the views of the embodiment's cameras, in the checkpoint's order."""
        return np.stack(self.camera_frames(obs, self.cameras))

    def instruction_text(self, obs: PolicyInput) -> str:
        return self.prompt(super().instruction_text(obs))

    def predict(self, obs: PolicyInput, prefix: np.ndarray | None = None) -> PolicyOutput:
        views, prompts, states = self.pack([obs])
        out = self.pipeline(views, prompts, self.embodiment_name, states, self.num_inference_steps,
                            self.observation_generator(obs.stamp), None if prefix is None else np.asarray(prefix)[None])
        return self.outputs(out, 1)[0]

    def predict_batch(self, observations: list[PolicyInput]) -> list[PolicyOutput]:
        views, prompts, states = self.pack(observations)
        out = self.pipeline(views, prompts, self.embodiment_name, states, self.num_inference_steps,
                            [self.observation_generator(o.stamp) for o in observations])
        return self.outputs(out, len(observations))

    def inference_settings(self) -> dict:
        return {"embodiment": self.embodiment_name, "num_inference_steps": self.num_inference_steps}
