"""Closed-loop evaluation protocol: which seeds run, and whether any of them were trained on (no rclpy).

Demonstrations (`make data`) are recorded from seeds below `min_eval_seed` (100); a learned policy
evaluated on those seeds is scored on its training scenes. `training_seeds` decides what happens:
refuse (no episode runs), warn (runs, logged, and the report says held_out=false) or allow
(recording demonstrations, where the oracle is the policy).
"""

from __future__ import annotations

TRAINING_SEED_POLICIES = ("refuse", "warn", "allow")


def resolve_seeds(seeds: list[int], episodes_per_task: int) -> list[int]:
    """Seeds run for every task. episodes_per_task 0: one episode per listed seed; N: the first N
    listed seeds, extended with consecutive seeds after the largest when N exceeds the list."""
    seeds = [int(s) for s in seeds]
    if episodes_per_task < 0:
        raise ValueError(f"parameter episodes_per_task: {episodes_per_task} must be >= 0")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"parameter seeds: {seeds} repeats a seed")
    if episodes_per_task == 0:
        if not seeds:
            raise ValueError("parameter seeds: empty and episodes_per_task is 0: nothing to run")
        return seeds
    out = seeds[:episodes_per_task]
    nxt = max(seeds) + 1 if seeds else 100
    while len(out) < episodes_per_task:
        out.append(nxt)
        nxt += 1
    return out


def training_seeds(seeds: list[int], min_eval_seed: int) -> list[int]:
    """The seeds below `min_eval_seed`: the demonstration (training) range."""
    return [s for s in seeds if s < min_eval_seed]


def check_training_seeds(seeds: list[int], min_eval_seed: int, policy: str) -> str | None:
    """None when nothing is wrong; else the message to log. Raises ValueError when `policy` is
    'refuse' and training seeds are listed, or when `policy` is unknown."""
    if policy not in TRAINING_SEED_POLICIES:
        raise ValueError(f"parameter training_seeds: '{policy}' unknown; use one of {', '.join(TRAINING_SEED_POLICIES)}")
    used = training_seeds(seeds, min_eval_seed)
    if not used or policy == "allow":
        return None
    message = (f"parameter seeds: {used} are below min_eval_seed={min_eval_seed}, the range demonstrations are "
               "recorded from; a learned policy is scored on its training scenes")
    if policy == "refuse":
        raise ValueError(message + " (refused; use seeds >= min_eval_seed, or training_seeds:=warn|allow)")
    return message + " (the report marks the run held_out=false)"
