"""MetaWorld (MuJoCo) as a robot: step with its own 4-D action, render fast, read joint and hand state.

Rendering uses one `mujoco.Renderer` per scene with shadows and reflections off (the default
4096 px shadow map is most of the cost on a CPU). Set MUJOCO_GL=egl (or osmesa) for headless use.
Frames: positions in the MuJoCo world frame (m), quaternions (x, y, z, w).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from .rendering import close_renderer

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

# Natural-language instructions for MetaWorld tasks (MetaWorld itself has none).
INSTRUCTIONS = {
    "button-press": "press the button on the box",
    "button-press-topdown": "press the button down from the top",
    "door-open": "open the door",
    "door-close": "close the door",
    "drawer-open": "open the drawer",
    "drawer-close": "close the drawer",
    "window-open": "slide the window open",
    "window-close": "slide the window closed",
    "plate-slide": "slide the plate into the goal",
    "reach": "reach the red target",
    "push": "push the puck to the goal",
    "pick-place": "pick up the puck and place it at the goal",
    "dial-turn": "turn the dial",
    "handle-press": "press the handle down",
    "lever-pull": "pull the lever up",
    "coffee-button": "press the button on the coffee machine",
}


def task_id(task: str) -> str:
    """'drawer-open' or 'drawer-open-v3' -> 'drawer-open-v3'."""
    return task if task.endswith("-v3") else f"{task}-v3"


def default_instruction(task: str) -> str:
    base = task.removesuffix("-v3")
    return INSTRUCTIONS.get(base, base.replace("-", " "))


@dataclass
class SimStep:
    env_state: np.ndarray             # 39-D MetaWorld observation
    success: bool
    step: int


class MetaWorldSim:
    """One MetaWorld task at a time; a new scene per reset so (task, seed) is reproducible."""

    action_names = ["dx", "dy", "dz", "gripper"]

    def __init__(self, cameras: list[str], width: int = 128, height: int = 128, flip_vertical: bool = True,
                 max_steps: int = 500):
        self.cameras = list(cameras)
        self.width, self.height, self.flip_vertical = width, height, flip_vertical
        self.max_steps = max_steps
        self.env = None
        self.renderer = None
        self.task = ""
        self.step_index = 0
        self.success = False
        self.env_state = np.zeros(39)

    @property
    def dt(self) -> float:
        """Simulated seconds per step (MetaWorld: 5 physics steps of 2.5 ms)."""
        return float(self.env.unwrapped.dt) if self.env is not None else 0.0125

    def reset(self, task: str, seed: int) -> SimStep:
        import gymnasium as gym
        import metaworld  # noqa: F401  (registers the Meta-World environments)
        import mujoco

        name = task_id(task)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                env = gym.make("Meta-World/MT1", env_name=name, seed=int(seed), disable_env_checker=True)
            except (ValueError, KeyError, gym.error.Error) as exc:
                raise ValueError(f"unknown MetaWorld task '{task}': {exc}") from None
            obs, _ = env.reset(seed=int(seed))
        self.close()
        self.env, self.task = env, name.removesuffix("-v3")
        model = env.unwrapped.model
        missing = [c for c in self.cameras if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, c) < 0]
        if missing:
            raise ValueError(f"MetaWorld scene has no camera {missing}")
        self.renderer = mujoco.Renderer(model, self.height, self.width)
        self.renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        self.renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        self.step_index, self.success = 0, False
        self.env_state = np.asarray(obs, dtype=np.float64)
        return SimStep(self.env_state, False, 0)

    def step(self, action) -> SimStep:
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (4,) or not np.all(np.isfinite(a)):
            raise ValueError(f"MetaWorld action must be 4 finite values (dx, dy, dz, gripper), got {a}")
        if self.step_index >= self.max_steps:
            return SimStep(self.env_state, self.success, self.step_index)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obs, _, _, _, info = self.env.step(np.clip(a, -1.0, 1.0).astype(np.float32))
        self.step_index += 1
        self.env_state = np.asarray(obs, dtype=np.float64)
        self.success = self.success or bool(info.get("success", 0.0))
        return SimStep(self.env_state, self.success, self.step_index)

    def render(self) -> dict[str, np.ndarray]:
        """camera name -> HxWx3 uint8 RGB."""
        frames = {}
        data = self.env.unwrapped.data
        for cam in self.cameras:
            self.renderer.update_scene(data, camera=cam)
            img = self.renderer.render()
            frames[cam] = np.ascontiguousarray(img[::-1] if self.flip_vertical else img)
        return frames

    def joint_state(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Robot joints (arm + fingers): names, positions (rad or m), velocities."""
        model, data = self.env.unwrapped.model, self.env.unwrapped.data
        import mujoco
        names, pos, vel = [], [], []
        for j in range(model.njnt):
            name = model.joint(j).name
            if not (name.startswith("right_j") or name in ("r_close", "l_close")):
                continue
            if model.jnt_type[j] not in (mujoco.mjtJoint.mjJNT_HINGE, mujoco.mjtJoint.mjJNT_SLIDE):
                continue
            names.append(name)
            pos.append(data.qpos[model.jnt_qposadr[j]])
            vel.append(data.qvel[model.jnt_dofadr[j]])
        return names, np.array(pos), np.array(vel)

    def ee_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Tool centre point position (m) and hand orientation quaternion (x, y, z, w), world frame."""
        u = self.env.unwrapped
        hand = Rotation.from_quat(u.data.body("hand").xquat, scalar_first=True)     # MuJoCo: w, x, y, z
        return np.asarray(u.tcp_center, dtype=np.float64), hand.as_quat()

    def close(self) -> None:
        close_renderer(self.renderer)
        self.renderer = None
        if self.env is not None:
            self.env.close()
            self.env = None
