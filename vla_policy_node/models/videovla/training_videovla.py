"""Training a VideoVLA checkpoint (`vla-train --family videovla`).

Stages: chunk samples from the episodes -> frames resized to the model input -> the frame VAE
(trained here unless one is given) -> every frame encoded once (optionally under DrQ-style random
shifts) -> normalization statistics -> joint video/action diffusion training in the shared loop
-> a checkpoint directory (VideoVLAPipeline.save_pretrained). Under a launcher the main process
trains the VAE and saves it to <output>/vae, the others load it, and the latent scaling factors
are the main process's.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate.utils import broadcast_object_list

from ..checkpoint import CheckpointError
from ..components.diffusion import TrainingNoise, make_scheduler
from ..components.loading import read_checkpoint_config, vae_location
from ..components.text_encoder import DEFAULT_TEXT_ENCODER
from ..components.training import (TrainingJob, add_frame_vae_arguments, augmented_latents, chunk_length,
                                   earlier_stages, frame_vae, refuse_other_network, run_training, training_arrays,
                                   training_samples)
from ..components.vae import FrameCodec
from .configuration_videovla import FUTURE_TARGETS, IMAGINED_DECODINGS, VideoVLAConfig
from .modeling_videovla import VideoVLATransformer, training_loss
from .policy_videovla import VideoVLAPipeline


class VideoVLATrainer:
    family = "videovla"
    config_class = VideoVLAConfig
    # action-free episodes train the video objective (and the frame VAE), never the action objective
    learns_from_videos = True

    @classmethod
    def add_arguments(cls, p: argparse.ArgumentParser) -> None:
        p.add_argument("--objective", choices=["ddpm", "flow"], default="ddpm")
        p.add_argument("--num-inference-steps", type=int, default=10, help="the checkpoint's default sampling steps")
        p.add_argument("--hidden-size", type=int, default=192)
        p.add_argument("--num-layers", type=int, default=6)
        p.add_argument("--num-heads", type=int, default=4)
        p.add_argument("--image-size", type=int, default=64)
        p.add_argument("--patch-size", type=int, default=2)
        p.add_argument("--text-encoder", default=DEFAULT_TEXT_ENCODER)
        p.add_argument("--no-proprio", action="store_true", help="camera and instruction only")
        p.add_argument("--train-prefix-max", type=int, default=0,
                       help="TT-RTC: give up to this many leading actions of a chunk clean in training (the plan "
                            "that runs during inference), so a prefix can be given at inference as in training; "
                            "0 = off (prefixes are then kept by inpainting)")
        p.add_argument("--train-prefix-probability", type=float, default=0.5,
                       help="TT-RTC: share of the samples given a prefix (the rest train the prefix-free chunk)")
        add_frame_vae_arguments(p)
        p.add_argument("--shift-augment", type=int, default=0,
                       help="random image shift in pixels at --image-size (0 = none); DrQ-style augmentation")
        p.add_argument("--augment-copies", type=int, default=4, help="shifted copies of every frame encoded up front")
        p.add_argument("--labelled-share", type=float, default=0.0,
                       help="with action-free --videos: share of every batch drawn from the action-labelled samples "
                            "(0 = their share of the data), so the action objective sees enough of them")
        p.add_argument("--init-from", default="",
                       help="a finished checkpoint of this family to continue training from (its network weights, "
                            "latent scales and VAE; a fresh optimizer and schedule): a second stage of --steps on "
                            "the same data. The record keeps its steps and wall time (init_steps, init_wall_time_s). "
                            "videovla may also start from a bc checkpoint: its action network, the future-frame "
                            "tokens new")
        if cls.config_class is VideoVLAConfig:
            p.add_argument("--future-offsets", default="4,8", help="steps ahead of each imagined frame")
            p.add_argument("--future-target", choices=FUTURE_TARGETS, default="absolute")
            p.add_argument("--imagined-decoding", choices=IMAGINED_DECODINGS, default="latent")
            p.add_argument("--no-video-loss", action="store_true", help="ablation: train without the video loss")
            p.add_argument("--video-loss-weight", type=float, default=1.0,
                           help="weight of the future-latent loss against the action loss (the paper's is 1)")
            p.add_argument("--action-sees-video", choices=["yes", "no"], default="yes",
                           help="no: actions do not attend to the noised future latents "
                                "(action-conditioned imagination)")

    def make_config(self, args, robot) -> VideoVLAConfig:
        emb = robot.config
        fields = dict(horizon=chunk_length(args, robot), action_dim=emb.action.dim, state_dim=len(emb.state.names),
                      hidden_size=args.hidden_size, num_layers=args.num_layers, num_heads=args.num_heads,
                      objective=args.objective, num_inference_steps=args.num_inference_steps,
                      image_size=args.image_size, latent_size=args.image_size // args.vae_downsample,
                      patch_size=args.patch_size, camera=emb.cameras[0].name, use_proprio=not args.no_proprio,
                      train_prefix_max=args.train_prefix_max, train_prefix_probability=args.train_prefix_probability)
        if self.config_class is VideoVLAConfig:
            fields.update(future_offsets=[int(o) for o in args.future_offsets.split(",") if o.strip()],
                          future_target=args.future_target, imagined_decoding=args.imagined_decoding,
                          video_loss_weight=0.0 if args.no_video_loss else args.video_loss_weight,
                          action_sees_video=args.action_sees_video == "yes")
        return self.config_class(**fields)

    def run(self, args, episodes: list, robot, out: Path) -> dict:
        started = time.time()
        cfg = self.make_config(args, robot)
        device = torch.device(args.device)
        state, data, n, frames = training_samples(episodes, cfg)
        source = InitialCheckpoint.read(args.init_from, cfg, self.family) if args.init_from else None
        if source is not None:
            args.vae = str(source.vae_path)            # the source's latents are the ones its network knows
        vae = frame_vae(args, frames, cfg.latent_channels, out, device, state)
        codec = FrameCodec(vae, cfg.image_size)
        copies = args.augment_copies if args.shift_augment > 0 else 1
        latents = augmented_latents(codec, frames, copies, args.shift_augment, args.seed)
        # scaling factors: the source checkpoint's, else the main process's on every process
        codec.scaling_factor = (source.vae_scaling_factor if source is not None
                                else broadcast_object_list([float(1.0 / latents[0].std())])[0])
        latents = latents * codec.scaling_factor
        frame_index = torch.as_tensor(data["frame_index"], dtype=torch.long)
        future_index = torch.as_tensor(data["future_index"], dtype=torch.long)
        if cfg.future_target == "delta" and cfg.num_future:
            if source is not None and source.config.num_future:
                cfg.delta_scaling_factor = source.config.delta_scaling_factor
            else:
                delta = latents[0, future_index] - latents[0, frame_index][:, None]
                cfg.delta_scaling_factor = broadcast_object_list([float(1.0 / delta.std().clamp(min=1e-6))])[0]

        arrays = training_arrays(args, episodes, data, robot, self.family, cfg.text_tokens)
        text_table, instruction_id = arrays.text_table, arrays.instruction_id
        noise = TrainingNoise(cfg.objective, cfg.num_train_timesteps)

        labelled = torch.nonzero(arrays.action_mask[:, 0] > 0).flatten()
        if not 0.0 <= args.labelled_share <= 1.0:
            raise ValueError(f"--labelled-share {args.labelled_share}: must be in [0, 1]")

        def make_batch(gen: torch.Generator, batch_size: int) -> dict:
            idx = torch.randint(0, n, (batch_size,), generator=gen)
            if args.labelled_share > 0 and len(labelled) < n:
                k = int(round(args.labelled_share * batch_size))
                idx[:k] = labelled[torch.randint(0, len(labelled), (k,), generator=gen)]
            aug = torch.randint(0, copies, (batch_size,), generator=gen)
            v1 = latents[aug, frame_index[idx]]
            future = latents[aug[:, None].expand(-1, cfg.num_future), future_index[idx]]
            if cfg.future_target == "delta":
                future = (future - v1[:, None]) * cfg.delta_scaling_factor
            return dict(text=text_table[instruction_id[idx]], v1=v1, future=future, actions=arrays.actions[idx],
                        action_mask=arrays.action_mask[idx], state=arrays.state[idx])

        def loss(model, batch: dict) -> dict:
            return training_loss(model, noise, video_loss_weight=cfg.video_loss_weight,
                                 prefix_max=cfg.train_prefix_max, prefix_probability=cfg.train_prefix_probability,
                                 **batch)

        facts = {**arrays.facts, "video_loss": cfg.video_loss_weight > 0, "shift_augment": args.shift_augment,
                 "labelled_share": args.labelled_share}
        if source is not None:
            facts |= source.facts()

        def export(model, step: int, final: bool, record: dict) -> None:
            network = VideoVLATransformer(**cfg.transformer_config())
            network.load_state_dict(model.state_dict())
            VideoVLAPipeline(cfg, network, codec, arrays.text_encoder,
                             make_scheduler(cfg.objective, cfg.num_train_timesteps), args.norm_mode,
                             arrays.action_stats, arrays.state_stats, arrays.meta).save_pretrained(out, record)

        model = VideoVLATransformer(**cfg.transformer_config())
        if not cfg.num_future:
            # bc has no future tokens: its latent head gets no gradient, which DDP (several processes) refuses
            model.latent_out.requires_grad_(False)
        if source is not None:
            model.load_state_dict(source.network_state(model))
        return run_training(args, TrainingJob(model, make_batch, loss, export, facts), out, self.family,
                            setup_s=time.time() - started)


# the backends a family's second stage may start from: bc is videovla without future frames
SOURCE_BACKENDS = {"videovla": ("videovla", "bc")}
# options that may differ when the source imagines nothing (they only shape the future-frame tokens)
FUTURE_ONLY_KEYS = ("num_future", "future_offsets", "future_target", "action_sees_video")


@dataclass
class InitialCheckpoint:
    """A finished checkpoint a second training stage starts from (`--init-from`)."""
    path: Path
    config: object                   # its family configuration (config.json "policy")
    training: dict                   # its config.json "training" record
    vae_path: Path
    vae_scaling_factor: float

    @classmethod
    def read(cls, path: str, cfg, family: str) -> "InitialCheckpoint":
        """The checkpoint at `path`, refused with the differing key if its network is not the one `cfg` builds."""
        try:
            path, meta, theirs = read_checkpoint_config(path, SOURCE_BACKENDS.get(family, family), type(cfg),
                                                        required=("transformer",))
        except CheckpointError as exc:
            raise CheckpointError(f"--init-from: {exc}") from None
        wanted = cfg.transformer_config() | {"future_offsets": cfg.future_offsets, "objective": cfg.objective,
                                             "future_target": cfg.future_target}
        if not theirs.num_future:
            wanted = {k: v for k, v in wanted.items() if k not in FUTURE_ONLY_KEYS}
        their_network = theirs.transformer_config()
        refuse_other_network(path, {k: their_network.get(k, getattr(theirs, k)) for k in wanted}, wanted)
        return cls(path, theirs, meta.get("training", {}), vae_location(path, meta),
                   float(meta["vae"]["scaling_factor"]))

    def facts(self) -> dict:
        """What the new checkpoint's training record says about the stages before it."""
        return earlier_stages(self.path, self.training)

    def network_state(self, model: VideoVLATransformer) -> dict:
        """The source's weights for `model`. From a source without future frames (bc), the position
        embeddings of the context (text, current frame) and of the action and proprio tokens are the
        source's, those of the future-frame tokens and the latent head stay `model`'s own: with
        `action_sees_video` off the new network then predicts the source's actions exactly."""
        theirs = VideoVLATransformer.from_pretrained(self.path / "transformer").state_dict()
        mine = model.state_dict()
        if theirs["pos_embed"].shape != mine["pos_embed"].shape:
            cfg = model.config
            context = cfg.text_tokens + model.patches_per_frame
            tail = cfg.horizon + 1                       # action tokens and the proprio token
            pos_embed = mine["pos_embed"].clone()
            pos_embed[:, :context] = theirs["pos_embed"][:, :context]
            pos_embed[:, -tail:] = theirs["pos_embed"][:, -tail:]
            theirs["pos_embed"] = pos_embed
            theirs["latent_out.weight"], theirs["latent_out.bias"] = mine["latent_out.weight"], mine["latent_out.bias"]
        return theirs
