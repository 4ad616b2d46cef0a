"""`vla-bench kv-cache`: per-chunk latency of a LingBot-VA checkpoint with its KV cache of real
observations against recomputing the history, at 1..16 chunks of history; cache memory.

One chunk in closed loop is `update` (the executed actions and the new real frame into the cache)
then `predict` (video chunk partially denoised, action chunk fully). Three ways to give the model
its history, same checkpoint, same inputs, one process, medians over repetitions:
- cached:           the KV cache (each real frame and action group encoded once, when it arrives);
- recompute/chunk:  the whole history re-encoded in one pass once per chunk, then the same sampling;
- no cache:         the history re-encoded before every model call of the chunk (what a model
                    without a KV cache computes: its history tokens go through every layer at
                    every denoising step).
The window holds exactly `h` real frames for every h (the oldest evicted), so each measurement sees
h chunks of history. Written to artifacts/bench/kv_cache.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch


def build_argparser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(prog="vla-bench kv-cache", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="checkpoints/lingbot_va_metaworld")
    p.add_argument("--history", default="1,2,4,8,16", help="chunks of history to measure at")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--executed-per-chunk", type=int, default=2, help="actions executed between observations")
    p.add_argument("--out", default="artifacts/bench/kv_cache.json")
    return p


class HistoryRecompute:
    """model.run with the cached history swapped for one recomputed from the raw history at every call."""

    def __init__(self, model, history_tokens: int, groups: list, text: torch.Tensor):
        from ..models.lingbot_va.modeling_lingbot_va import encode_history

        self.model, self.history_tokens, self.groups, self.text = model, history_tokens, groups, text
        self.encode_history, self.original = encode_history, model.run

    def __enter__(self):
        def run(xv, xa, layout, text, past=None, outputs=True):
            if past is not None:
                fresh = self.encode_history(self.model, self.groups, self.text)
                past = [(torch.cat([fk, k[:, :, self.history_tokens:]], dim=2),
                         torch.cat([fv, v[:, :, self.history_tokens:]], dim=2)) for (fk, fv), (k, v) in zip(fresh, past)]
            return self.original(xv, xa, layout, text, past, outputs)
        self.model.run = run
        return self

    def __exit__(self, *exc):
        self.model.run = self.original


def measure(checkpoint: str, h: int, repeats: int, executed: int) -> dict:
    from ..core.embodiment import load_robot
    from ..models.backend import PolicyInput
    from ..models.lingbot_va.modeling_lingbot_va import encode_history
    from ..models.registry import make_backend

    robot = load_robot("metaworld_sawyer")
    policy = make_backend("lingbot_va", robot, checkpoint=checkpoint, cache_frames=h)
    pipe, model = policy.pipeline, policy.pipeline.transformer
    rng = np.random.default_rng(h)
    size = robot.config.cameras[0].input_size
    instruction = "press the button"

    def observation(i: int) -> PolicyInput:
        return PolicyInput(i * executed * robot.config.action.dt, instruction,
                           {policy.config.camera: rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)},
                           np.array([0.0, 0.6, 0.2, 0.0]))

    policy.reset(instruction, seed=0)
    raw: list = []            # the real history as groups, for recomputation
    obs = observation(0)
    out = policy.predict(obs)
    latent, state = pipe.encode_frames(policy._frame(obs)[None], obs.state[None])
    raw.append(("frame", latent, state, 0))
    cached, per_chunk, no_cache = [], [], []
    for i in range(1, h + repeats):
        obs = observation(i)
        actions = out.actions[:executed]
        step = policy.step
        t0 = time.perf_counter()
        policy.update(actions, obs)
        out = policy.predict(obs)
        elapsed = time.perf_counter() - t0
        raw += [("actions", pipe.normalized_actions(actions), step),
                ("frame", *pipe.encode_frames(policy._frame(obs)[None], obs.state[None]), policy.step)]
        while sum(g[0] == "frame" for g in raw) > h:               # the same window as the cache
            raw.pop(0)
            while raw[0][0] != "frame":
                raw.pop(0)
        if i < h:
            continue                                               # the history is still filling
        cached.append(elapsed)
        text = policy._text(instruction)
        for target, recompute_every_call in ((per_chunk, False), (no_cache, True)):
            generator = torch.Generator().manual_seed(i)
            t0 = time.perf_counter()
            pipe.encode_frames(policy._frame(obs)[None], obs.state[None])       # the frame encoding update pays
            past = encode_history(model, raw, text)
            if recompute_every_call:
                with HistoryRecompute(model, past[0][0].shape[2], raw, text):
                    pipe.chunk(text, past, float(policy.step), generator, policy.num_inference_steps,
                               policy.num_video_steps)
            else:
                pipe.chunk(text, past, float(policy.step), generator, policy.num_inference_steps,
                           policy.num_video_steps)
            target.append(time.perf_counter() - t0)
    return {"history_chunks": h, "cache_frames": policy.cache.frames, "cache_tokens": len(policy.cache),
            "cache_bytes": policy.cache.memory_bytes(),
            "cached_ms": 1e3 * statistics.median(cached),
            "recompute_once_per_chunk_ms": 1e3 * statistics.median(per_chunk),
            "no_cache_ms": 1e3 * statistics.median(no_cache), "repeats": len(cached)}


def run(args) -> int:
    from ..models.checkpoint import resolve_checkpoint

    checkpoint = str(resolve_checkpoint(args.checkpoint))
    torch.set_grad_enabled(False)
    rows = []
    for h in [int(x) for x in args.history.split(",")]:
        rows.append(measure(checkpoint, h, args.repeats, args.executed_per_chunk))
        print(json.dumps(rows[-1]))
    last = rows[-1]
    cached = [r["cached_ms"] for r in rows]
    summary = {"history_chunks": last["history_chunks"],
               "cached_vs_no_cache": last["cached_ms"] / last["no_cache_ms"],
               "cached_vs_recompute_once_per_chunk": last["cached_ms"] / last["recompute_once_per_chunk_ms"],
               "cached_max_over_min": max(cached) / min(cached),
               "cache_mb_at_most_history": last["cache_bytes"] / 2 ** 20}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"checkpoint": checkpoint, "threads": torch.get_num_threads(), "rows": rows,
                               "summary": summary}, indent=2))
    print(json.dumps(summary))
    print(f"bench: wrote {out}")
    return 0
