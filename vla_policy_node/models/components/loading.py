"""Loading what every learned family's checkpoint holds besides its networks: config.json, the
frame VAE, the text encoder and the normalization statistics, and the checks that a checkpoint
fits the robot file it is asked to drive."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import CheckpointError, load_normalization, own_memory, read_config, resolve_checkpoint
from .text_encoder import DEFAULT_TEXT_ENCODER, TextEncoder
from .vae import FrameCodec, load_vae

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class CheckpointParts:
    path: Path
    meta: dict                     # config.json
    config: object                 # the family's configuration (config_class.from_dict(meta["policy"]))
    dtype: torch.dtype
    codec: FrameCodec
    text_encoder: TextEncoder
    norm_mode: str
    action_stats: dict
    state_stats: dict


def read_checkpoint_config(path: str | Path, backend: str | tuple, config_class, dtype: str = "float32",
                           required: tuple = ()) -> tuple:
    """(path, config.json, the family's configuration) after checking the backend (one name, or a
    tuple of accepted ones), the dtype name and that the `required` network folders exist;
    CheckpointError naming the file otherwise."""
    path = resolve_checkpoint(path)
    meta = read_config(path)
    accepted = (backend,) if isinstance(backend, str) else tuple(backend)
    if meta["backend"] not in accepted:
        wanted = " or ".join(f"'{name}'" for name in accepted)
        raise CheckpointError(f"{path}/config.json: backend is '{meta['backend']}', not {wanted}")
    try:
        config = config_class.from_dict(meta["policy"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}/config.json: key 'policy': {exc}") from None
    if dtype not in DTYPES:
        raise ValueError(f"dtype '{dtype}' unknown; use one of {sorted(DTYPES)}")
    for part in required:
        if not (path / part).is_dir():
            raise CheckpointError(f"{path / part}: missing")
    return path, meta, config


def vae_location(path: Path, meta: dict) -> Path:
    """The frame VAE folder config.json names: absolute, or relative to the checkpoint."""
    vae_path = Path(meta["vae"]["path"])
    return vae_path if vae_path.is_absolute() else path / vae_path


def load_checkpoint_parts(path: str | Path, backend: str, config_class, device: str = "cpu",
                          dtype: str = "float32", required: tuple = ()) -> CheckpointParts:
    """config.json checked against `backend`, the policy configuration, the VAE, the text encoder and
    the statistics; `required`: the family's network folders, which must exist."""
    path, meta, config = read_checkpoint_config(path, backend, config_class, dtype, required)
    if "vae" not in meta:
        raise CheckpointError(f"{path}/config.json: key 'vae' missing")
    torch_dtype = DTYPES[dtype]
    vae_ref = meta["vae"]
    vae_path = vae_location(path, meta)
    try:
        vae = load_vae(vae_path, vae_ref.get("class", "AutoencoderKL")).to(device, torch_dtype)
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{vae_path}: the frame VAE cannot be loaded: {exc}") from None
    codec = FrameCodec(vae, config.image_size, float(vae_ref.get("scaling_factor", 1.0)))
    text = TextEncoder(meta.get("text_encoder", DEFAULT_TEXT_ENCODER), config.text_tokens, device, torch_dtype)
    mode, action_stats, state_stats = load_normalization(path, config.action_dim, config.state_dim)
    return CheckpointParts(path, meta, config, torch_dtype, codec, text, mode, action_stats, state_stats)


def check_fits_robot(checkpoint: str, config, meta: dict, embodiment) -> None:
    """CheckpointError unless the checkpoint's actions, proprio and camera are the robot file's and its
    chunks hold at least the actions the robot file executes per chunk."""
    emb = embodiment.config
    names = meta.get("action_names")
    if names is not None and list(names) != list(emb.action.names):
        raise CheckpointError(f"{checkpoint}: trained for actions {names}, robot file {embodiment.path} "
                              f"has {emb.action.names}")
    states = meta.get("state_names")
    if states is not None and list(states) != list(emb.state.names):
        raise CheckpointError(f"{checkpoint}: trained on proprio {states}, robot file {embodiment.path} "
                              f"has state {emb.state.names}")
    # the chunk length is the checkpoint's (the robot file's action.horizon is what training uses by
    # default); the executor must be able to run execute_per_chunk of its actions
    if config.horizon < emb.action.execute_per_chunk:
        raise CheckpointError(f"{checkpoint}: trained for chunks of {config.horizon} actions, robot file "
                              f"{embodiment.path} executes action.execute_per_chunk {emb.action.execute_per_chunk}")
    if config.camera not in [c.name for c in emb.cameras]:
        raise CheckpointError(f"{checkpoint}: needs camera '{config.camera}', not in {embodiment.path}")


def load_network(folder: Path, network_class, device: str, dtype: torch.dtype):
    """A diffusers-saved network from a checkpoint folder, on `device` in `dtype`, frozen for inference;
    a CheckpointError naming the folder when it cannot be loaded."""
    try:
        network = network_class.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{folder}: {exc}") from None
    return own_memory(network).to(device, dtype).eval().requires_grad_(False)


def load_scheduler(folder: Path):
    """The diffusers scheduler saved in `folder` (its class named in scheduler_config.json)."""
    import json

    import diffusers

    config = json.loads((folder / "scheduler_config.json").read_text())
    return getattr(diffusers, config["_class_name"]).from_config(config)
