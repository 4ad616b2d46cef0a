"""How well the embedded Panda's reach target can be located from the scene camera alone.

The target is a small sphere anywhere in the sim's TARGET_BOX; one camera sees it as a dot, which
fixes the ray from the camera through it but not the depth along that ray. For targets drawn like
the sim draws them, prints the length of that ray inside the box (every point of it projects to
the same pixel) and the success a policy could reach if it knew the ray exactly and nothing of the
depth: a 2 cm ball placed anywhere on a segment of length L holds the target with probability at
most min(1, 4 cm / L) under a uniform prior along the segment.

    python scripts/panda_scene_ray_bound.py [SAMPLES]
"""

from __future__ import annotations

import sys

import numpy as np

from vla_policy_node.sim.panda_reach_sim import _SCENE_CAMERA, TARGET_BOX


def ray_lengths_in_box(samples: int, seed: int = 0) -> np.ndarray:
    """Length (m) of the camera ray through each sampled target that lies inside TARGET_BOX."""
    eye, (lo, hi) = np.asarray(_SCENE_CAMERA[0]), np.asarray(TARGET_BOX)
    targets = np.random.default_rng(seed).uniform(lo, hi, size=(samples, 3))
    direction = targets - eye
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    with np.errstate(divide="ignore"):
        a, b = (lo - eye) / direction, (hi - eye) / direction      # slab entry/exit distances per axis
    enter, leave = np.minimum(a, b).max(axis=1), np.maximum(a, b).min(axis=1)
    return np.clip(leave - enter, 0.0, None)


def main(samples: int = 20000) -> None:
    lengths = ray_lengths_in_box(samples)
    p10, p50, p90 = np.percentile(lengths, [10, 50, 90]) * 100
    bound = np.minimum(1.0, 0.04 / lengths).mean()
    print(f"{samples} targets: camera ray inside the target box {p50:.1f} cm median ({p10:.1f} p10, {p90:.1f} p90); "
          f"success within 2 cm from the ray alone at most {bound:.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20000)
