"""`oracle` backend: MetaWorld's scripted expert read from the privileged simulator state.

An upper bound and a demonstration source, never a learned policy. The expert is a feedback
controller on the 39-D MetaWorld observation; a chunk is made by rolling it forward with a
kinematic look-ahead (the hand moves by action[:3] / 100 m per step, MetaWorld's mocap scale)
so later actions of the chunk account for the motion of earlier ones.
"""

from __future__ import annotations

import time

import numpy as np

from ..core.normalization import Normalizer
from .backend import PolicyBackend, PolicyInput, PolicyOutput

MOCAP_SCALE = 1.0 / 100.0   # m of hand motion per unit of MetaWorld xyz action


class OracleBackend(PolicyBackend):
    name = "oracle"
    uses_privileged_state = True

    def __init__(self, embodiment, **options):
        super().__init__(embodiment, **options)
        cfg = embodiment.config
        if cfg.action.space != "ee_delta" or cfg.action.dim != 4:
            raise ValueError(f"oracle backend drives MetaWorld's 4-D ee_delta action; "
                             f"{embodiment.path}: action is {cfg.action.space} with {cfg.action.dim} dims")
        self.horizon = cfg.action.horizon
        self.normalizer = Normalizer(cfg.normalization.mode, embodiment.action_stats)
        self.expert = None
        self.task = ""

    def reset(self, instruction: str, seed: int | None = None, task: str = "") -> None:
        from metaworld.policies import ENV_POLICY_MAP
        name = task if task.endswith("-v3") else f"{task}-v3"
        if name not in ENV_POLICY_MAP:
            raise KeyError(f"no scripted expert for task '{task}'")
        self.expert = ENV_POLICY_MAP[name]()
        self.task = task

    def predict(self, obs: PolicyInput, prefix: np.ndarray | None = None) -> PolicyOutput:
        if self.expert is None:
            raise RuntimeError("oracle backend: predict before reset (no task)")
        if obs.env_state is None or len(obs.env_state) != 39:
            got = 0 if obs.env_state is None else len(obs.env_state)
            raise ValueError(f"oracle backend needs the 39-D MetaWorld env_state in the observation, got {got}")
        t = time.perf_counter()
        o = np.asarray(obs.env_state, dtype=np.float64).copy()
        actions = np.empty((self.horizon, 4))
        for i in range(self.horizon):
            a = np.clip(self.expert.get_action(o), -1.0, 1.0)
            actions[i] = a
            previous = o[:18].copy()
            o[:3] = o[:3] + a[:3] * MOCAP_SCALE
            o[18:36] = previous
        inference_ms = (time.perf_counter() - t) * 1e3
        return PolicyOutput(self.normalizer.normalize(actions), actions, None, {"inference_ms": inference_ms})


Policy = OracleBackend
