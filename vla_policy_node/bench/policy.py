"""`make bench`: policy figures written to artifacts/bench/policy.json.

- per-chunk inference latency p50/p95 on this machine for several denoising step counts
  (imagined-frame decoding off), on real recorded frames;
- closed-loop success rate vs denoising steps through the full graph (held-out seeds);
- imagined-frame PSNR / SSIM against the frames that really followed, per horizon step,
  open loop on held-out recorded episodes;
- success with and without the video loss (when an ablation checkpoint exists).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def latency(policy, samples, steps_list, repeats: int) -> dict:
    out = {}
    for steps in steps_list:
        policy.num_inference_steps = steps
        times = []
        for r in range(repeats + 2):
            obs = samples[r % len(samples)]
            t = time.perf_counter()
            policy.predict(obs)
            if r >= 2:                                    # warm-up excluded
                times.append((time.perf_counter() - t) * 1e3)
        out[str(steps)] = {"p50_ms": round(float(np.percentile(times, 50)), 1),
                           "p95_ms": round(float(np.percentile(times, 95)), 1), "n": len(times)}
    return out


def imagination_quality(policy, episodes, offsets, stride: int = 8) -> dict:
    """PSNR/SSIM of decoded imagined frames vs the recorded frames at the same future steps."""
    import torch
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from .models.backend import PolicyInput

    policy.decode_imagined = True
    size = policy.model.config.image_size
    camera = policy.model.config.camera
    psnr = {o: [] for o in offsets}
    ssim = {o: [] for o in offsets}
    recon_psnr = []
    for ep in episodes:
        policy.reset(ep.instruction, seed=0)
        frames = ep.frames[camera]
        for k in range(0, len(frames) - max(offsets), stride):
            out = policy.predict(PolicyInput(0.0, ep.instruction, {camera: frames[k]}, ep.states[k]))
            imagined = out.imagined_frames[camera]
            for j, o in enumerate(offsets):
                real = _resize(frames[k + o], size)
                psnr[o].append(peak_signal_noise_ratio(real, imagined[j], data_range=255))
                ssim[o].append(structural_similarity(real, imagined[j], channel_axis=2, data_range=255))
            codec = policy.model.codec
            recon = codec.decode(codec.encode(torch.tensor(frames[k + offsets[0]])[None]))[0].numpy()
            recon_psnr.append(peak_signal_noise_ratio(_resize(frames[k + offsets[0]], size), recon, data_range=255))
    policy.decode_imagined = False
    return {"per_horizon_step": {str(o): {"psnr_db": round(float(np.mean(psnr[o])), 2),
                                          "ssim": round(float(np.mean(ssim[o])), 4), "n": len(psnr[o])}
                                 for o in offsets},
            "vae_reconstruction_psnr_db": round(float(np.mean(recon_psnr)), 2),
            "copy_current_frame_baseline": _copy_baseline(episodes, offsets, camera, size, stride)}


def _copy_baseline(episodes, offsets, camera, size, stride) -> dict:
    """The same metrics for 'nothing moves' (the current frame as the prediction)."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity
    out = {}
    for o in offsets:
        p, s = [], []
        for ep in episodes:
            f = ep.frames[camera]
            for k in range(0, len(f) - max(offsets), stride):
                a, b = _resize(f[k + o], size), _resize(f[k], size)
                p.append(peak_signal_noise_ratio(a, b, data_range=255))
                s.append(structural_similarity(a, b, channel_axis=2, data_range=255))
        out[str(o)] = {"psnr_db": round(float(np.mean(p)), 2), "ssim": round(float(np.mean(s)), 4)}
    return out


def _resize(frame: np.ndarray, size: int) -> np.ndarray:
    import cv2
    return cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)


def closed_loop(checkpoint: str, tasks: list, seeds: list, steps: int, out_dir: Path, max_steps: int) -> dict:
    from .graph_runner import run_graph

    overrides = {"policy": {"backend": "videovla", "checkpoint": checkpoint, "num_inference_steps": str(steps)},
                 "evaluator": {"tasks": "[" + ",".join(tasks) + "]", "seeds": "[" + ",".join(map(str, seeds)) + "]",
                               "output_dir": str(out_dir), "record": "false", "max_steps": str(max_steps)}}
    result = run_graph("sim_demo", overrides, out_dir / "logs", timeout_s=3600)
    if result["error"]:
        return {"error": result["error"]}
    report = json.loads((out_dir / "report.json").read_text())
    return {"success_rate": report["summary"]["success_rate"], "episodes": report["summary"]["episodes"],
            "per_task": {t: v["success_rate"] for t, v in report["summary"]["per_task"].items()},
            "peak_rss_mb": {n: p["peak_rss_mb"] for n, p in result["processes"].items()},
            "wall_time_s": result["wall_time_s"]}


def main(argv=None) -> int:
    from .core.embodiment import load_robot
    from .data.dataset import load_dataset
    from .models.backend import PolicyInput, make_backend
    from .models.checkpoint import resolve_checkpoint

    p = argparse.ArgumentParser(prog="vla-bench", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="checkpoints/videovla_metaworld")
    p.add_argument("--ablation", default="checkpoints/videovla_metaworld_no_video",
                   help="checkpoint trained without the video loss (skipped when absent)")
    p.add_argument("--heldout", default="artifacts/demo", help="recorded held-out episodes (evaluator output)")
    p.add_argument("--robot", default="metaworld_sawyer")
    p.add_argument("--out", default="artifacts/bench/policy.json")
    p.add_argument("--steps", default="1,5,10,25")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--tasks", default="button-press,drawer-open,door-open,window-open,plate-slide")
    p.add_argument("--seeds", default="100,101")
    p.add_argument("--max-steps", type=int, default=300)
    p.add_argument("--skip-closed-loop", action="store_true")
    args = p.parse_args(argv)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    robot = load_robot(args.robot)
    checkpoint = str(resolve_checkpoint(args.checkpoint))
    policy = make_backend("videovla", robot, checkpoint=checkpoint)
    steps_list = [int(s) for s in args.steps.split(",")]
    episodes = load_dataset(Path(args.heldout), robot, successful_only=False)[:5]
    camera = policy.model.config.camera
    samples = [PolicyInput(0.0, ep.instruction, {camera: ep.frames[camera][k]}, ep.states[k])
               for ep in episodes for k in (0, len(ep) // 2)]
    policy.reset(episodes[0].instruction, seed=0)
    results = {"checkpoint": checkpoint, "machine": {"cpus": os.cpu_count()},
               "latency_per_chunk": latency(policy, samples, steps_list, args.repeats),
               "default_steps": policy.model.config.num_inference_steps}
    print(json.dumps(results["latency_per_chunk"]))
    results["imagination"] = imagination_quality(policy, episodes, policy.model.config.future_offsets)
    print(json.dumps(results["imagination"]))
    out_path.write_text(json.dumps(results, indent=2))
    if not args.skip_closed_loop:
        tasks, seeds = args.tasks.split(","), [int(s) for s in args.seeds.split(",")]
        runs = out_path.parent / "runs"
        results["success_vs_steps"] = {}
        for steps in steps_list:
            results["success_vs_steps"][str(steps)] = closed_loop(checkpoint, tasks, seeds, steps,
                                                                  runs / f"steps_{steps}", args.max_steps)
            print(steps, json.dumps(results["success_vs_steps"][str(steps)]))
            out_path.write_text(json.dumps(results, indent=2))
        default = results["default_steps"]
        with_video = results["success_vs_steps"].get(str(default)) or closed_loop(
            checkpoint, tasks, seeds, default, runs / "with_video", args.max_steps)
        ablation = Path(args.ablation)
        results["video_loss_ablation"] = {"with_video_loss": with_video.get("success_rate")}
        if (resolve_checkpoint(str(ablation)) / "config.json").is_file():
            no_video = closed_loop(str(resolve_checkpoint(str(ablation))), tasks, seeds, default,
                                   runs / "no_video", args.max_steps)
            results["video_loss_ablation"]["without_video_loss"] = no_video.get("success_rate")
            results["video_loss_ablation"]["without_detail"] = no_video
        else:
            results["video_loss_ablation"]["without_video_loss"] = None
            results["video_loss_ablation"]["note"] = f"no ablation checkpoint at {ablation}"
    out_path.write_text(json.dumps(results, indent=2))
    print(f"bench: wrote {out_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
