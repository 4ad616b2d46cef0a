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


def _read_json_object(file: Path) -> dict:
    """A JSON file holding an object, else CheckpointError naming the file."""
    try:
        data = json.loads(file.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{file}: not valid JSON: {exc}") from None
    except OSError as exc:
        raise CheckpointError(f"{file}: cannot be read: {exc}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{file}: top level is a JSON {type(data).__name__}, expected an object of keys")
    return data


# config.json keys the loaders read, with the JSON type each must have when present
_CONFIG_TYPES = {"backend": (str, "string"), "embodiment": (str, "string"), "action_space": (str, "string"),
                 "text_encoder": (str, "string"), "policy": (dict, "object"), "vae": (dict, "object"),
                 "action_names": (list, "list"), "state_names": (list, "list")}


def read_config(path: str | Path) -> dict:
    path = resolve_checkpoint(path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise CheckpointError(f"{path}: not a checkpoint directory (no config.json)")
    config = _read_json_object(cfg_file)
    if "backend" not in config:
        raise CheckpointError(f"{cfg_file}: key 'backend' missing")
    if config.get("format", 1) != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{cfg_file}: checkpoint format {config.get('format', 1)}, this version reads "
                              f"format {CHECKPOINT_FORMAT}; convert it once with "
                              f"scripts/convert_checkpoint.py {path}")
    for key, (kind, name) in _CONFIG_TYPES.items():
        if key in config and not isinstance(config[key], kind):
            raise CheckpointError(f"{cfg_file}: key '{key}' is a {type(config[key]).__name__}, expected a {name}")
    if not config["backend"]:
        raise CheckpointError(f"{cfg_file}: key 'backend' is empty")
    if "vae" in config and not isinstance(config["vae"].get("path"), str):
        raise CheckpointError(f"{cfg_file}: key 'vae.path' missing or not a string")
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
    data = _read_json_object(file)
    mode = data.get("mode")
    if not isinstance(mode, str) or mode not in REQUIRED_STATS:
        raise CheckpointError(f"{file}: mode {mode!r} unknown (use one of {', '.join(REQUIRED_STATS)})")
    out = []
    for part, dim in (("action", action_dim), ("state", state_dim)):
        block = data.get(part)
        if not isinstance(block, dict):
            raise CheckpointError(f"{file}: {part}: missing or not an object of statistics")
        stats = {}
        for key in REQUIRED_STATS[mode]:
            if key not in block:
                raise CheckpointError(f"{file}: {part}.{key} missing for mode '{mode}'")
            try:
                arr = np.asarray(block[key], dtype=np.float64)
            except (TypeError, ValueError):
                raise CheckpointError(f"{file}: {part}.{key} is not a list of numbers (or of lists)") from None
            if arr.ndim not in (1, 2) or arr.shape[-1] != dim or not np.all(np.isfinite(arr)):
                raise CheckpointError(f"{file}: {part}.{key} has shape {arr.shape}, expected ({dim},) or "
                                      f"(horizon, {dim}), finite")
            stats[key] = arr
        lo, hi = (stats[k] for k in REQUIRED_STATS[mode])
        if lo.shape != hi.shape:
            raise CheckpointError(f"{file}: {part}: {' and '.join(REQUIRED_STATS[mode])} differ in shape "
                                  f"{lo.shape} vs {hi.shape}")
        if mode == "mean_std" and np.any(hi <= 0):
            raise CheckpointError(f"{file}: {part}.std must be > 0 in every dimension")
        if mode != "mean_std" and np.any(hi < lo):
            key = REQUIRED_STATS[mode][1]
            raise CheckpointError(f"{file}: {part}.{key} below {REQUIRED_STATS[mode][0]} in some dimension")
        out.append(stats)
    return mode, out[0], out[1]


def own_memory(module):
    """Give every parameter and buffer freshly allocated storage. Weights loaded from a
    memory-mapped file can sit at addresses the CPU kernels treat differently (alignment), which
    changes float rounding: with this, a loaded model computes exactly what the saved one did."""
    for tensor in list(module.parameters()) + list(module.buffers()):
        tensor.data = tensor.data.clone()
    return module
