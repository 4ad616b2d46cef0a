"""Training a Qwen-VLA checkpoint (`vla-train --family qwen_vla`) on one or several robots at once.

`--data`/`--robot` give the first dataset; `--also ROBOT=DIR` adds another robot's demonstrations
(repeatable). Each dataset keeps its own control convention: its actions are normalized with its
own per-dimension q01/q99 (clipped), placed into its channels of the unified H x K tensor, and
masked in the loss everywhere else; its samples carry its own embodiment prompt. Batches draw the
embodiments equally often (embodiment-balanced), whatever their sizes. The backbone and the action
expert train end to end from random weights (no pretrained VLM here; `--backbone DIR` starts from a
local Qwen2-VL checkpoint of the same size instead).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ...core.normalization import Normalizer
from ..components.diffusion import TrainingNoise, make_scheduler
from ..components.text_encoder import DEFAULT_TEXT_ENCODER, resolve_text_encoder
from ..checkpoint import CheckpointError
from ..components.training import (TrainingJob, chunk_length, compute_stats, demonstrations_per_task, earlier_stages,
                                   refuse_other_network, run_training, shift_frames)
from ..components.vae import resize_frames
from .configuration_qwen_vla import QwenVLAConfig
from .modeling_qwen_vla import PromptTokenizer, QwenVLAActionExpert, build_backbone, masked_flow_loss, views_to_patches
from .policy_qwen_vla import NORM_MODE, QwenVLAPipeline, embodiment_entry, to_unified


class EmbodimentData:
    """One robot's demonstrations as unified tensors: Y (N, H, K), M (N, H, K), views, prompts."""

    def __init__(self, robot, episodes: list, cfg: QwenVLAConfig, stats: dict | None = None):
        """`stats`: {"action", "state"} statistics to normalize with instead of these demonstrations' own
        (a second stage keeps its source's, so its network reads every value on the scale it learned)."""
        from ...data.dataset import chunk_samples

        self.name, self.entry = robot.name, cfg.embodiments[robot.name]
        data = chunk_samples(episodes, self.entry["horizon"])
        relative = self.entry.get("relative_actions", False)
        if relative:                                    # each chunk's targets less the state it starts from
            data["actions"] = data["actions"] - data["state"][:, None, :]
        if stats is None:
            rows = data["actions"][data["action_mask"] > 0] if relative else np.concatenate([ep.actions for ep in episodes])
            states = np.concatenate([ep.states for ep in episodes])
            stats = {"action": compute_stats(rows.astype(np.float64), NORM_MODE),
                     "state": compute_stats(states.astype(np.float64), NORM_MODE)}
        self.stats = stats
        actions_n = Normalizer(NORM_MODE, self.stats["action"]).normalize(data["actions"])
        y, m = to_unified(actions_n.astype(np.float32), self.entry["channels"], cfg.unified_dim, cfg.horizon)
        m *= np.pad(data["action_mask"], ((0, 0), (0, cfg.horizon - self.entry["horizon"])))[..., None]
        self.y, self.mask = torch.from_numpy(y), torch.from_numpy(m)
        state_n = Normalizer(NORM_MODE, self.stats["state"]).normalize(data["state"])
        self.proprio = torch.zeros(len(y), cfg.unified_dim)
        self.proprio[:, : state_n.shape[1]] = torch.as_tensor(state_n, dtype=torch.float32)
        self.views = torch.stack([resize_frames(data["frames"][c], cfg.image_size) for c in self.entry["cameras"]], 1)
        self.frame_index = torch.as_tensor(data["frame_index"], dtype=torch.long)
        self.prompts = [robot.config.render_prompt(s, chunk_size=self.entry["horizon"]) for s in data["instructions"]]
        self.instruction_id = torch.as_tensor(data["instruction_id"], dtype=torch.long)
        self.facts = {"robot": robot.name, "episodes": len(episodes), "samples": len(y),
                      "demonstrations_per_task": demonstrations_per_task(episodes)}

    def __len__(self) -> int:
        return len(self.y)


class QwenVLATrainingModel(nn.Module):
    """Backbone + action expert; forward(batch) -> the flow-matching loss on the unified tensor."""

    def __init__(self, backbone: nn.Module, expert: QwenVLAActionExpert, cfg: QwenVLAConfig):
        super().__init__()
        self.backbone, self.action_expert, self.cfg = backbone, expert, cfg
        self.noise = TrainingNoise("flow")

    def forward(self, views, input_ids, attention_mask, mm_token_type_ids, y, mask, proprio, embodiment, tau,
                noise) -> dict:
        cfg = self.cfg
        b, v = views.shape[:2]
        pixel_values, grid = views_to_patches(views.flatten(0, 1), cfg.patch_size, cfg.spatial_merge_size,
                                              cfg.temporal_patch_size)
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, mm_token_type_ids=mm_token_type_ids,
                               pixel_values=pixel_values, image_grid_thw=grid).last_hidden_state
        y_tau = self.noise.noised(y, noise, tau)                  # (1 - tau) Y0 + tau Y1
        velocity = self.action_expert(y_tau, self.noise.model_timestep(tau), hidden, attention_mask,
                                      proprio if cfg.use_proprio else None,
                                      embodiment if cfg.action_projection == "per_embodiment" else None)
        loss = masked_flow_loss(velocity, self.noise.target(y, noise), mask)
        return {"loss": loss}


class QwenVLATrainer:
    family = "qwen_vla"

    @classmethod
    def add_arguments(cls, p: argparse.ArgumentParser) -> None:
        p.add_argument("--also", action="append", default=[], metavar="ROBOT=DIR",
                       help="another robot's demonstrations (robot file name or path = evaluator output folder)")
        p.add_argument("--image-size", type=int, default=112)
        p.add_argument("--hidden-size", type=int, default=128)
        p.add_argument("--num-layers", type=int, default=4)
        p.add_argument("--vision-depth", type=int, default=2)
        p.add_argument("--expert-width", type=int, default=128)
        p.add_argument("--expert-layers", type=int, default=4)
        p.add_argument("--horizon", type=int, default=16, help="rows H of the unified action tensor")
        p.add_argument("--unified-dim", type=int, default=32, help="channels K of the unified action tensor")
        p.add_argument("--num-inference-steps", type=int, default=5)
        p.add_argument("--per-embodiment-heads", action="store_true",
                       help="ablation: one action projection per robot instead of the shared zero-padded one")
        p.add_argument("--proprio", action="store_true", help="add the proprio token (off in the paper)")
        p.add_argument("--max-shift", type=int, default=4, help="random image shift (px at --image-size)")
        p.add_argument("--text-tokenizer", default=DEFAULT_TEXT_ENCODER,
                       help="WordPiece/BPE tokenizer directory or package:<module> (vision tokens are added)")
        p.add_argument("--backbone", default="", help="start from a local Qwen2-VL checkpoint directory")
        p.add_argument("--init-from", default="",
                       help="a finished qwen_vla checkpoint to continue training from (its backbone and action "
                            "expert weights; a fresh optimizer and schedule): a second stage of --steps on the same "
                            "robots. It normalizes with the source's statistics (its network learned on that "
                            "scale); the record keeps its steps and wall time (init_steps, init_wall_time_s)")
        p.add_argument("--relative-actions", action="append", default=[], metavar="ROBOT",
                       help="this robot's actions are learned as joint targets minus the joint positions each chunk "
                            "starts from (joint_position robots whose state.names are their action.names)")
        p.add_argument("--renormalize", action="append", default=[], metavar="ROBOT",
                       help="with --init-from: this robot's statistics are computed from this run's demonstrations "
                            "instead (a stage that brings the robot demonstrations covering more of its space)")

    def run(self, args, episodes: list, robot, out: Path) -> dict:
        from transformers import AutoTokenizer, Qwen2VLModel

        from ...core.embodiment import load_robot
        from ...data.dataset import load_dataset

        started = time.time()
        datasets = [(robot, episodes)]
        for spec in args.also:
            name, _, folder = spec.partition("=")
            if not folder:
                raise SystemExit(f"vla-train: --also {spec}: expected ROBOT=DIR")
            other = load_robot(name)
            found = load_dataset(Path(folder), other, successful_only=not args.include_failed)
            if not found:
                raise SystemExit(f"vla-train: --also {spec}: no usable episodes")
            datasets.append((other, found))
        if args.norm_mode != NORM_MODE:
            raise SystemExit(f"vla-train: qwen_vla normalizes per dataset with q01/q99 (--norm-mode {NORM_MODE})")

        cfg = QwenVLAConfig(image_size=args.image_size, hidden_size=args.hidden_size, num_layers=args.num_layers,
                            vision_depth=args.vision_depth, expert_width=args.expert_width,
                            expert_layers=args.expert_layers, horizon=args.horizon, unified_dim=args.unified_dim,
                            num_inference_steps=args.num_inference_steps, use_proprio=args.proprio,
                            action_projection="per_embodiment" if args.per_embodiment_heads else "shared",
                            embodiments={r.name: embodiment_entry(
                                r, min(args.horizon, chunk_length(args, r) if r is robot else r.config.action.horizon),
                                relative_actions=r.name in args.relative_actions)
                                for r, _ in datasets})
        pretrained = None
        if args.backbone:             # a local Qwen2-VL checkpoint: its sizes, patching and tokenizer win
            pretrained = Qwen2VLModel.from_pretrained(args.backbone, local_files_only=True)
            text, vision = pretrained.config.text_config, pretrained.config.vision_config
            cfg.hidden_size, cfg.num_layers = text.hidden_size, text.num_hidden_layers
            cfg.num_heads, cfg.num_kv_heads = text.num_attention_heads, text.num_key_value_heads
            cfg.intermediate_size, cfg.vision_depth = text.intermediate_size, vision.depth
            cfg.vision_embed_dim, cfg.vision_heads = vision.embed_dim, vision.num_heads
            cfg.patch_size, cfg.spatial_merge_size = vision.patch_size, vision.spatial_merge_size
            cfg.temporal_patch_size = vision.temporal_patch_size
            cfg.__post_init__()
        own_tokenizer = args.backbone and (Path(args.backbone) / "tokenizer_config.json").is_file()
        source = str(args.backbone) if own_tokenizer else str(resolve_text_encoder(args.text_tokenizer))
        prompts = PromptTokenizer(AutoTokenizer.from_pretrained(source, local_files_only=True),
                                  cfg.tokens_per_view, cfg.max_text_tokens)
        cfg.vocab_size, cfg.image_token_id = len(prompts), prompts.image_token_id
        cfg.vision_start_token_id, cfg.vision_end_token_id = prompts.vision_start_id, prompts.vision_end_id
        for option, names in (("--relative-actions", args.relative_actions), ("--renormalize", args.renormalize)):
            unknown = sorted(set(names) - set(cfg.embodiments))
            if unknown:
                raise SystemExit(f"vla-train: {option} {' '.join(names)}: no robot {unknown} in this run "
                                 f"(robots: {sorted(cfg.embodiments)})")
        if args.renormalize and not args.init_from:
            raise SystemExit(f"vla-train: --renormalize {' '.join(args.renormalize)}: only with --init-from "
                             "(a first stage always computes its statistics)")
        initial = initial_checkpoint(args.init_from, cfg, args.renormalize) if args.init_from else None
        data = [EmbodimentData(r, eps, cfg, None if initial is None or r.name in args.renormalize
                               else initial.statistics[r.name]) for r, eps in datasets]
        for d in data:
            print(f"{d.name}: {d.facts['episodes']} episodes, {len(d)} samples, channels {d.entry['channels']}")

        torch.manual_seed(args.seed)
        backbone = pretrained if pretrained is not None else build_backbone(cfg.backbone_config())
        if len(prompts) > backbone.get_input_embeddings().num_embeddings:
            backbone.resize_token_embeddings(len(prompts))      # the vision tokens a text tokenizer lacked
        cfg.vocab_size = backbone.get_input_embeddings().num_embeddings
        expert = QwenVLAActionExpert(**cfg.action_expert_config())
        facts = {}
        if initial is not None:
            backbone.load_state_dict(initial.backbone.state_dict())
            expert.load_state_dict(initial.action_expert.state_dict())
            facts = earlier_stages(Path(args.init_from), initial.meta.get("training", {}))
            del initial
        model = QwenVLATrainingModel(backbone, expert, cfg)
        names = sorted(cfg.embodiments)
        scheduler = make_scheduler("flow")

        def make_batch(gen: torch.Generator, batch_size: int) -> dict:
            which = torch.randint(0, len(data), (batch_size,), generator=gen)
            parts = []
            for k, d in enumerate(data):
                rows = int((which == k).sum())
                if rows:
                    idx = torch.randint(0, len(d), (rows,), generator=gen)
                    parts.append((d, idx))
            views, y, mask, proprio, prompt_list, view_names, emb = [], [], [], [], [], [], []
            for d, idx in parts:
                v = d.views[d.frame_index[idx]]
                if args.max_shift:
                    dx, dy = torch.randint(-args.max_shift, args.max_shift + 1, (2,), generator=gen).tolist()
                    v = shift_frames(v.flatten(0, 1), dx, dy).reshape(v.shape)
                views.append(v)
                y.append(d.y[idx])
                mask.append(d.mask[idx])
                proprio.append(d.proprio[idx])
                prompt_list += [d.prompts[i] for i in d.instruction_id[idx].tolist()]
                view_names += [tuple(d.entry["cameras"])] * len(idx)
                emb += [names.index(d.name)] * len(idx)
            if len({v.shape[1:] for v in views}) > 1:
                raise SystemExit("vla-train: the embodiments have different numbers of views; give each robot "
                                 "file the same count of required cameras")
            y = torch.cat(y)
            return {"views": torch.cat(views), **prompts.batch(prompt_list, view_names), "y": y,
                    "mask": torch.cat(mask), "proprio": torch.cat(proprio), "embodiment": torch.tensor(emb),
                    "tau": torch.rand(len(y), generator=gen), "noise": torch.randn(y.shape, generator=gen)}

        def export(trained: QwenVLATrainingModel, step: int, final: bool, record: dict) -> None:
            meta = {"embodiment": ",".join(names), "text_tokenizer": source}
            QwenVLAPipeline(cfg, trained.backbone, trained.action_expert, scheduler, prompts,
                            {d.name: d.stats for d in data}, meta).save_pretrained(out, record)

        facts |= {"episodes": sum(d.facts["episodes"] for d in data), "samples": sum(len(d) for d in data),
                  "data": [str(x) for x in args.data] + list(args.also), "embodiments": [d.facts for d in data],
                  "demonstrations_per_task": {f"{d.name}/{t}": n for d in data
                                              for t, n in d.facts["demonstrations_per_task"].items()}}
        if args.renormalize:
            facts["renormalized"] = sorted(args.renormalize)
        if args.relative_actions:
            facts["relative_actions"] = sorted(args.relative_actions)
        return run_training(args, TrainingJob(model, make_batch, lambda m, b: m(**b), export, facts), out,
                            self.family, setup_s=time.time() - started)


def initial_checkpoint(path: str, cfg: QwenVLAConfig, renormalize: list[str]) -> QwenVLAPipeline:
    """The `--init-from` checkpoint, refused (naming the key) unless it is the network this run builds.
    A robot whose actions change between absolute and relative is the same network on other targets:
    allowed when its statistics are computed anew (`renormalize`)."""
    try:
        source = QwenVLAPipeline.from_pretrained(path)
    except CheckpointError as exc:
        raise CheckpointError(f"--init-from: {exc}") from None
    theirs, ours = source.config.to_dict(), cfg.to_dict()
    for name, entry in ours["embodiments"].items():
        before = theirs["embodiments"].get(name, {}).get("relative_actions", False)
        if entry["relative_actions"] != before and name not in renormalize:
            raise SystemExit(f"vla-train: --init-from {path}: {name}'s actions were "
                             f"{'relative' if before else 'absolute'}, this run's are "
                             f"{'relative' if entry['relative_actions'] else 'absolute'}: add --renormalize {name}")

    def network(config: dict) -> dict:
        return {**config, "embodiments": {n: {k: v for k, v in e.items() if k != "relative_actions"}
                                          for n, e in config["embodiments"].items()}}
    refuse_other_network(path, network(theirs), network(ours), "pass the options and data the checkpoint was trained with")
    return source
