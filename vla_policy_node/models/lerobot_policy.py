"""A LeRobot policy directory as a backend: ACT, Diffusion Policy, SmolVLA, pi0, ... as LeRobot saved it
(`config.json` with its `type`, `model.safetensors`, `policy_preprocessor.json` /
`policy_postprocessor.json` and their state files).

The policy is built by lerobot's own factory and normalized by its own processors; this module
only maps the robot file onto the policy's input features (cameras and state by the robot file's
`lerobot` keys, instruction as `task`) and returns whole chunks, so the executor's async modes work.
A feature the policy needs that the robot file does not provide, or provides at another shape, is
refused at load with both names and shapes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from ..core.embodiment import Embodiment
from ..lerobot_compat import TRAINING_RECORD
from .backend import COMMON_OPTIONS, PolicyBackend, PolicyInput, PolicyOutput
from .checkpoint import checkpoint_size_mb
from .registry import is_lerobot_policy

LEROBOT_FILES = ("config.json", "model.safetensors")


class LeRobotFeatureError(ValueError):
    """The robot file cannot feed a LeRobot policy's input features (names the feature)."""


class Policy(PolicyBackend):
    name = "lerobot"
    options = dict(COMMON_OPTIONS)

    def __init__(self, embodiment: Embodiment, checkpoint: str = "", device: str = "cpu", dtype: str = "float32"):
        super().__init__(embodiment)
        from ..data.lerobot_format import feature_keys
        from ..lerobot_compat import prepare_lerobot
        from .checkpoint import resolve_checkpoint

        checkpoint = str(resolve_checkpoint(checkpoint)) if checkpoint else ""
        if not checkpoint or not is_lerobot_policy(checkpoint):
            raise ValueError(f"policy backend 'lerobot': checkpoint '{checkpoint}' is not a LeRobot policy directory "
                             f"({' and '.join(LEROBOT_FILES)} with a policy 'type')")
        if dtype != "float32":
            raise ValueError(f"policy backend 'lerobot': dtype '{dtype}': LeRobot's processors run in float32")
        prepare_lerobot()
        from lerobot.configs.policies import PreTrainedConfig
        from lerobot.configs.types import FeatureType
        from lerobot.policies.factory import get_policy_class, make_pre_post_processors

        self.checkpoint, self.device = checkpoint, torch.device(device)
        self.config = PreTrainedConfig.from_pretrained(self.checkpoint)
        self.config.device = str(self.device)
        self.policy = get_policy_class(self.config.type).from_pretrained(self.checkpoint, config=self.config)
        self.policy.to(self.device).eval()
        self.preprocess, self.postprocess = make_pre_post_processors(
            self.config, pretrained_path=self.checkpoint,
            preprocessor_overrides={"device_processor": {"device": str(self.device)}})
        keys = feature_keys(embodiment)
        cameras = {key: name for name, key in keys["cameras"].items()}
        sizes = {c.name: tuple(c.input_size) for c in embodiment.config.cameras}
        self.camera_keys, self.state_key = {}, None
        for key, feature in self.config.input_features.items():
            shape = tuple(feature.shape)
            if feature.type is FeatureType.VISUAL:
                if key not in cameras:
                    raise LeRobotFeatureError(
                        f"{self.checkpoint}: input feature '{key}' {shape}: no camera of {embodiment.path} maps to it "
                        f"(cameras give {', '.join(sorted(cameras))}; set lerobot.cameras in the robot file)")
                expected = (3, *sizes[cameras[key]])
                if shape != expected:
                    raise LeRobotFeatureError(
                        f"{self.checkpoint}: input feature '{key}' has shape {shape}, camera '{cameras[key]}' gives "
                        f"{expected} (cameras[].input_size in {embodiment.path})")
                self.camera_keys[key] = cameras[key]
            elif feature.type is FeatureType.STATE:
                expected = (len(embodiment.config.state.names),)
                if key != keys["state"] or shape != expected:
                    raise LeRobotFeatureError(
                        f"{self.checkpoint}: input feature '{key}' {shape}: the robot file gives state as "
                        f"'{keys['state']}' {expected} ({', '.join(embodiment.config.state.names)})")
                self.state_key = key
            else:
                raise LeRobotFeatureError(f"{self.checkpoint}: input feature '{key}' of type {feature.type.value} "
                                          "has no source in the graph (cameras and state only)")
        actions = self.config.output_features.get(keys["action"])
        if actions is None or tuple(actions.shape) != (embodiment.config.action.dim,):
            have = {k: tuple(f.shape) for k, f in self.config.output_features.items()}
            raise LeRobotFeatureError(f"{self.checkpoint}: output features {have}; the robot file needs "
                                      f"'{keys['action']}' ({embodiment.config.action.dim},) "
                                      f"({', '.join(embodiment.config.action.names)})")
        self._chunk_length = int(getattr(self.config, "chunk_size", 0) if self.config.type == "act"
                                 else getattr(self.config, "n_action_steps", 0)) or embodiment.config.action.horizon
        self.instruction = ""

    @property
    def chunk_length(self) -> int:
        return self._chunk_length

    def reset(self, instruction: str, seed: int | None = None, task: str = "") -> None:
        self.instruction = instruction
        if seed is not None:
            torch.manual_seed(int(seed))
        self.policy.reset()

    def _batch(self, obs: PolicyInput) -> dict:
        batch = {key: torch.from_numpy(np.ascontiguousarray(obs.images[name])).permute(2, 0, 1).float() / 255.0
                 for key, name in self.camera_keys.items()}
        if self.state_key is not None:
            batch[self.state_key] = torch.as_tensor(np.asarray(obs.state, np.float32))
        batch["task"] = obs.instruction or self.instruction
        return batch

    def _chunk(self, batch: dict) -> torch.Tensor:
        """(1, n, dim) normalized actions. Policies that keep an observation history in queues
        (Diffusion Policy, VQ-BeT) take this observation through `select_action`, which fills the
        history and queues a whole chunk; the others predict the chunk directly."""
        queues = getattr(self.policy, "_queues", None)
        if isinstance(queues, dict) and "action" in queues:
            queues["action"].clear()
            first = self.policy.select_action(batch)
            rest = list(queues["action"])
            queues["action"].clear()
            return torch.stack([first, *rest], dim=1)
        return self.policy.predict_action_chunk(batch)

    @torch.no_grad()
    def predict(self, obs: PolicyInput, prefix: np.ndarray | None = None) -> PolicyOutput:
        missing = [name for name in self.camera_keys.values() if name not in obs.images]
        if missing:
            raise ValueError(f"policy backend 'lerobot': observation without camera(s) {missing}")
        t0 = time.perf_counter()
        batch = self.preprocess(self._batch(obs))
        t1 = time.perf_counter()
        chunk = self._chunk(batch)
        t2 = time.perf_counter()
        physical = self.postprocess(chunk)
        t3 = time.perf_counter()
        self._chunk_length = int(chunk.shape[1])
        return PolicyOutput(actions_normalized=chunk[0].float().cpu().numpy(),
                            actions=physical[0].float().cpu().numpy().astype(np.float64),
                            timings_ms={"preprocess_ms": (t1 - t0) * 1e3, "inference_ms": (t2 - t1) * 1e3,
                                        "postprocess_ms": (t3 - t2) * 1e3})

    def describe(self) -> dict:
        training = {}
        state = Path(self.checkpoint) / "train_config.json"
        if state.is_file():
            train_config = json.loads(state.read_text())
            training = {k: train_config.get(k) for k in ("steps", "batch_size", "seed") if k in train_config}
            training["dataset"] = (train_config.get("dataset") or {}).get("root") or \
                (train_config.get("dataset") or {}).get("repo_id")
        record = Path(self.checkpoint) / TRAINING_RECORD        # written by vla-lerobot-train
        if record.is_file():
            recorded = json.loads(record.read_text())
            training.update({k: recorded[k] for k in ("wall_time_s", "episodes") if k in recorded})
        return {"backend": self.name, "policy_type": self.config.type,
                "parameters": int(sum(p.numel() for p in self.policy.parameters())),
                "checkpoint": self.checkpoint, "checkpoint_mb": round(checkpoint_size_mb(self.checkpoint), 2),
                "training": training}

    def close(self) -> None:
        self.policy = None
