"""Checkpoint directories (Hugging Face save_pretrained / from_pretrained conventions).

    <dir>/config.json          backend name, format, policy configuration, embodiment and
                               action/state names, text encoder reference, training record
    <dir>/transformer/         the network, saved by its library (diffusers ModelMixin /
                               transformers PreTrainedModel: config.json + safetensors)
    <dir>/vae/                 diffusers VAE folder (or a reference to a local path in config.json)
    <dir>/scheduler/           diffusers scheduler configuration
    <dir>/normalization.json   statistics the model was trained with (they win over the robot file)
Nothing is ever downloaded: every reference is a local directory or an installed package.
Checkpoints of format 1 (weights in <dir>/model.safetensors) are converted once with
scripts/convert_checkpoint.py.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np


CHECKPOINT_FORMAT = 2


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be used; the message names the file and the problem."""


def checkpoint_files(path: Path) -> list[Path]:
    """The files that make up a checkpoint (resume state and logs excluded)."""
    skip = {"training_state.pt", "training_log.json"}
    return sorted(f for f in Path(path).rglob("*") if f.is_file() and f.name not in skip)


def checkpoint_digest(path: str | Path) -> str:
    """SHA-256 over the checkpoint's files (relative names and contents): equal digests, equal policy."""
    path = resolve_checkpoint(path)
    digest = hashlib.sha256()
    for f in checkpoint_files(path):
        digest.update(str(f.relative_to(path)).encode())
        digest.update(f.read_bytes())
    return digest.hexdigest()


def checkpoint_size_mb(path: str | Path) -> float:
    return sum(f.stat().st_size for f in checkpoint_files(resolve_checkpoint(path))) / 2 ** 20


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
    if config.get("format", 1) != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{cfg_file}: checkpoint format {config.get('format', 1)}, this version reads "
                              f"format {CHECKPOINT_FORMAT}; convert it once with "
                              f"scripts/convert_checkpoint.py {path}")
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


def own_memory(module):
    """Give every parameter and buffer freshly allocated storage. Weights loaded from a
    memory-mapped file can sit at addresses the CPU kernels treat differently (alignment), which
    changes float rounding: with this, a loaded model computes exactly what the saved one did."""
    for tensor in list(module.parameters()) + list(module.buffers()):
        tensor.data = tensor.data.clone()
    return module
