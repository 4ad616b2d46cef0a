"""Convert a format-1 VideoVLA checkpoint (weights in model.safetensors, the model configuration
under "model" in config.json) to format 2 (transformer/ and scheduler/ saved by diffusers, the
policy configuration under "policy"). Outputs of the converted checkpoint are identical.

    .venv/bin/python scripts/convert_checkpoint.py CHECKPOINT_DIR [--output DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path


def convert(src: Path, dst: Path) -> None:
    from safetensors.torch import load_file

    from vla_policy_node.models.checkpoint import CHECKPOINT_FORMAT
    from vla_policy_node.models.components.diffusion import make_scheduler
    from vla_policy_node.models.videovla.configuration_videovla import VideoVLAConfig
    from vla_policy_node.models.videovla.modeling_videovla import VideoVLATransformer

    meta = json.loads((src / "config.json").read_text())
    if meta.get("format", 1) == CHECKPOINT_FORMAT:
        raise SystemExit(f"{src}: already format {CHECKPOINT_FORMAT}")
    if meta.get("backend") != "videovla" or "model" not in meta:
        raise SystemExit(f"{src}/config.json: not a format-1 videovla checkpoint (backend {meta.get('backend')})")
    config = VideoVLAConfig.from_dict(meta.pop("model"))
    if dst != src:
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("training_state.pt"))
    network = VideoVLATransformer(**config.transformer_config())
    missing, unexpected = network.load_state_dict(load_file(str(src / "model.safetensors")), strict=False)
    if missing or unexpected:
        raise SystemExit(f"{src / 'model.safetensors'}: does not match its config (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    network.save_pretrained(dst / "transformer")
    make_scheduler(config.objective, config.num_train_timesteps).save_pretrained(dst / "scheduler")
    meta.update(format=CHECKPOINT_FORMAT, policy=config.to_dict())
    (dst / "config.json").write_text(json.dumps(meta, indent=2))
    (dst / "model.safetensors").unlink()
    print(f"{dst}: format {CHECKPOINT_FORMAT}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--output", type=Path, help="write here instead of converting in place")
    args = p.parse_args(argv)
    convert(args.checkpoint, args.output or args.checkpoint)
    return 0


if __name__ == "__main__":
    sys.exit(main())
