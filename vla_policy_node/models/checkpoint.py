"""Checkpoint directories (Hugging Face save_pretrained / from_pretrained conventions).

    <dir>/config.json          backend name, model config, embodiment and action/state names,
                               references to the text encoder and the VAE, training record
    <dir>/model.safetensors    policy weights
    <dir>/normalization.json   statistics the model was trained with (they win over the robot file)
    <dir>/vae/                 diffusers VAE folder (or a reference to a local path in config.json)
Nothing is ever downloaded: every reference is a local directory or an installed package.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be used; the message names the file and the problem."""


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint path as given, else relative to the project (source tree or installed share)."""
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path
    from ..core.embodiment import config_root
    candidate = config_root().parent / path
    return candidate if candidate.exists() else path


def read_config(path: str | Path) -> dict:
    path = resolve_checkpoint(path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise CheckpointError(f"{path}: not a checkpoint directory (no config.json)")
    try:
        config = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{cfg_file}: not valid JSON: {exc}") from None
    if "backend" not in config:
        raise CheckpointError(f"{cfg_file}: key 'backend' missing")
    return config


def save_normalization(path: Path, mode: str, action: dict, state: dict) -> None:
    data = {"mode": mode, "action": {k: np.asarray(v).tolist() for k, v in action.items()},
            "state": {k: np.asarray(v).tolist() for k, v in state.items()}}
    (path / "normalization.json").write_text(json.dumps(data, indent=1))


def load_normalization(path: Path, action_dim: int, state_dim: int) -> tuple[str, dict, dict]:
    """Statistics of a checkpoint; missing or mis-shaped ones fail loudly, naming the key."""
    from ..core.embodiment import REQUIRED_STATS

    file = path / "normalization.json"
    if not file.is_file():
        raise CheckpointError(f"{file}: missing; a learned policy never runs without its statistics")
    data = json.loads(file.read_text())
    mode = data.get("mode")
    if mode not in REQUIRED_STATS:
        raise CheckpointError(f"{file}: mode '{mode}' unknown")
    out = []
    for part, dim in (("action", action_dim), ("state", state_dim)):
        stats = {}
        for key in REQUIRED_STATS[mode]:
            if key not in data.get(part, {}):
                raise CheckpointError(f"{file}: {part}.{key} missing for mode '{mode}'")
            arr = np.asarray(data[part][key], dtype=np.float64)
            if arr.shape[-1] != dim or not np.all(np.isfinite(arr)):
                raise CheckpointError(f"{file}: {part}.{key} has shape {arr.shape}, expected (..., {dim}) finite")
            stats[key] = arr
        out.append(stats)
    return mode, out[0], out[1]
