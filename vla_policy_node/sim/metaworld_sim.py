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

# The task object a perturbation displaces: the root body of a fixed-base object (moved with its goal)
# or the qpos address of a loose object's (x, y) slide joints.
FIXED_OBJECT_BODY = {"button-press": "box", "button-press-topdown": "box", "drawer-open": "drawer",
                     "drawer-close": "drawer", "door-open": "door", "window-open": "window",
                     "window-close": "window"}
LOOSE_OBJECT_QPOS = {"plate-slide": 9}


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

    def perturbation_kinds(self) -> list[str]:
        """What `perturb` can do to the current task: its object when it has a known one, the hand always."""
        return ["object", "hand"] if self.task in {*FIXED_OBJECT_BODY, *LOOSE_OBJECT_QPOS} else ["hand"]

    def perturb(self, kind: str, offset_m) -> np.ndarray:
        """Displace the task object or push the hand by `offset_m` (m, world frame) now; the offset
        really applied (the hand's clipped to MetaWorld's hand workspace, a loose object's turned back
        at the end of its slide joints' travel). sim/perturbation.py."""
        import mujoco

        offset = np.asarray(offset_m, dtype=np.float64)
        if self.env is None:
            raise ValueError("perturb: no episode (reset first)")
        u = self.env.unwrapped
        if kind == "hand":
            before = u.data.mocap_pos[0].copy()
            u.data.mocap_pos[0] = np.clip(before + offset, u.mocap_low, u.mocap_high)
            applied = u.data.mocap_pos[0] - before
        elif kind == "object" and self.task in LOOSE_OBJECT_QPOS:
            adr = LOOSE_OBJECT_QPOS[self.task]                 # slide joints (x, y) of a loose object
            joints = [j for j in range(u.model.njnt) if adr <= u.model.jnt_qposadr[j] < adr + 2]
            low, high = (u.model.jnt_range[joints, i] for i in (0, 1))      # kept inside their travel
            before = u.data.qpos[adr:adr + 2].copy()
            moved = before + offset[:2]
            outside = (moved < low) | (moved > high)         # past an end: the other way (same distance)
            moved[outside] = before[outside] - offset[:2][outside]
            u.data.qpos[adr:adr + 2] = np.clip(moved, low, high)
            u.data.qvel[adr:adr + 2] = 0.0
            applied = np.array([*(u.data.qpos[adr:adr + 2] - before), 0.0])
        elif kind == "object" and self.task in FIXED_OBJECT_BODY:
            u.model.body(FIXED_OBJECT_BODY[self.task]).pos += offset     # the object with its goal
            u._target_pos = np.asarray(u._target_pos) + offset
            u.obj_init_pos = np.asarray(u.obj_init_pos) + offset
            goal = mujoco.mj_name2id(u.model, mujoco.mjtObj.mjOBJ_SITE, "goal")
            if goal >= 0 and u.model.site_bodyid[goal] == 0:            # a world-frame goal marker
                u.model.site_pos[goal] += offset
            applied = offset.copy()
        else:
            raise ValueError(f"perturb: kind '{kind}' not available for MetaWorld task '{self.task}' "
                             f"(available: {', '.join(self.perturbation_kinds())})")
        mujoco.mj_forward(u.model, u.data)
        return applied

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
