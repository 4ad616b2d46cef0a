"""The one place policy backends and their trainers are named.

BACKENDS maps a backend name to a module that exposes `Policy` (a PolicyBackend subclass);
TRAINERS maps a family trained here to its trainer ("module:class", used by `vla-train --family
NAME`), a module of its own, so that loading a backend never loads training code (accelerate,
optimizers, data loading). Modules are imported on first use, so the scripted backends never load
torch. Packages outside this project add backends through the entry-point group
`vla_policy_node.backends` (name = "module"); such a module may expose `Trainer` too.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from .backend import PolicyBackend, check_options


def is_lerobot_policy(path) -> bool:
    """A directory LeRobot's `save_pretrained` wrote (its config.json names a policy `type`); read
    here without importing the backend (which loads torch and lerobot)."""
    import json
    from pathlib import Path

    folder = Path(path)
    if not ((folder / "config.json").is_file() and (folder / "model.safetensors").is_file()):
        return False
    try:
        config = json.loads((folder / "config.json").read_text())
    except ValueError:
        return False
    return isinstance(config, dict) and "type" in config and "backend" not in config

BACKENDS = {
    "oracle": "vla_policy_node.models.oracle",          # MetaWorld's scripted expert (privileged state)
    "reach_ik": "vla_policy_node.models.reach_ik",      # scripted reach for arms (privileged target)
    "videovla": "vla_policy_node.models.videovla",      # VideoVLA: joint video/action diffusion
    "bc": "vla_policy_node.models.bc",                  # the same encoders and action head, no video objective
    "vita": "vla_policy_node.models.vita",              # VITA: shared vision-action codebook, autoregressive codes
    "lingbot_va": "vla_policy_node.models.lingbot_va",  # LingBot-VA: autoregressive video-action chunks over a KV cache
    "qwen_vla": "vla_policy_node.models.qwen_vla",      # Qwen-VLA: VLM backbone + flow-matching DiT, one model for many robots
    "remote": "vla_policy_node.models.remote",          # any backend behind an openpi-protocol server (vla-serve)
    "lerobot": "vla_policy_node.models.lerobot_policy",  # a LeRobot policy directory (ACT, Diffusion Policy, ...)
}
TRAINERS = {
    "videovla": "vla_policy_node.models.videovla.training_videovla:VideoVLATrainer",
    "bc": "vla_policy_node.models.bc.training_bc:BCTrainer",
    "vita": "vla_policy_node.models.vita.training_vita:VITATrainer",
    "lingbot_va": "vla_policy_node.models.lingbot_va.training_lingbot_va:LingBotVATrainer",
    "qwen_vla": "vla_policy_node.models.qwen_vla.training_qwen_vla:QwenVLATrainer",
}
ENTRY_POINT_GROUP = "vla_policy_node.backends"


def _modules() -> dict[str, str]:
    found = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return {**found, **BACKENDS}


def available_backends() -> list[str]:
    return sorted(_modules())


def backend_module(name: str):
    modules = _modules()
    if name not in modules:
        raise KeyError(f"policy backend '{name}' unknown; available: {', '.join(sorted(modules))}")
    return importlib.import_module(modules[name])


def backend_class(name: str, checkpoint: str = "") -> type[PolicyBackend]:
    """The class a backend name stands for; 'auto': the backend named in `checkpoint`'s config.json,
    or 'lerobot' for a directory LeRobot saved (what the policy node needs before constructing one:
    the options the class declares)."""
    if name == "auto":
        from .checkpoint import read_config, resolve_checkpoint
        if checkpoint and is_lerobot_policy(resolve_checkpoint(checkpoint)):
            name = "lerobot"
        else:
            name = read_config(checkpoint)["backend"]
    cls = backend_module(name).Policy
    if cls.name != name:
        raise KeyError(f"module {_modules()[name]}: Policy.name is '{cls.name}', registered as '{name}'")
    return cls


def _trainable(name: str) -> bool:
    return name in TRAINERS or hasattr(backend_module(name), "Trainer")


def trainer(name: str):
    """The family's Trainer (add_arguments(parser), run(args)): its TRAINERS entry, else the backend
    module's `Trainer` (a family in one module, an entry point); KeyError for untrainable backends."""
    if name in TRAINERS:
        module, _, cls = TRAINERS[name].partition(":")
        return getattr(importlib.import_module(module), cls)
    if not _trainable(name):
        families = [n for n in available_backends() if _trainable(n)]
        raise KeyError(f"policy backend '{name}' is not trained here; families with a trainer: {', '.join(families)}")
    return backend_module(name).Trainer


def make_backend(name: str, embodiment, /, *, if_declared: dict | None = None, **options) -> PolicyBackend:
    """Backend by name, or 'auto' (read from the checkpoint's config.json), constructed with
    `options`, checked against the names it declares (an undeclared one is an error), and those of
    `if_declared` it declares that are set (not None or ""): the flags of a command that runs any
    backend, such as a device for learned ones."""
    offered = if_declared or {}
    cls = backend_class(name, options.get("checkpoint") or offered.get("checkpoint") or "")
    given = {k: v for k, v in offered.items() if k in cls.options and v is not None and v != ""}
    return cls(embodiment, **check_options(cls, {**given, **options}))
