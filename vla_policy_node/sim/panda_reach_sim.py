"""A joint-space Franka Panda in MuJoCo, built from urdf/panda_arm.urdf, with one task: "reach".

Why this robot and scene: a 7-DoF arm described by a URDF is what ros2_control, Isaac Sim and
MoveIt users have, so it is the robot the `ros2_control`, `isaac` and `cartesian` command
contracts are tested against. Reaching a random point exercises every joint and, for the
Cartesian contract, the whole IK path, without grasping physics getting in the way.

The model: MuJoCo compiles the URDF's kinematic chain and joint limits; this module adds what
the URDF leaves out (capsule links with realistic masses, gravity compensation, armature, a
PD servo per joint, position and velocity actuators with the URDF effort as torque limit), a
flange site at panda_link8, a table under the base, a red target sphere (a mocap body) and two
cameras (`scene`, `wrist`). Frames: the arm's base panda_link0 is the world origin, z up, table
top at z = 0; positions in m, quaternions (x, y, z, w). One step = one control period
(`control_dt`, s) of 2 ms physics steps, during which the joint targets (rad) move linearly from
the previous command to the new one, as a joint trajectory controller interpolates.

Task "reach": move the flange within `SUCCESS_RADIUS` of a target drawn per seed in
`TARGET_BOX`; the arm starts near the Panda's ready pose. env_state = target xyz.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from .rendering import close_renderer

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

JOINTS = [f"panda_joint{i}" for i in range(1, 8)]
READY_POSE = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])   # rad, flange pointing down
START_NOISE_RAD = 0.1                    # uniform noise added to the ready pose per seed
TARGET_BOX = ((0.35, -0.25, 0.15), (0.60, 0.25, 0.45))   # reachable target positions, base frame, m
SUCCESS_RADIUS = 0.02                    # m, flange to target
PHYSICS_DT = 0.002                       # s
INSTRUCTIONS = {"reach": "reach the red target"}

# Per link (child body of joint i): capsule from the link origin to its child's origin (link
# frame, m), radius (m) and mass (kg, Franka's published values).
_LINKS = {
    "panda_link0": ((0, 0, 0.03), (0, 0, 0.20), 0.07, 0.0),     # fixed to the world
    "panda_link1": ((0, 0, -0.19), (0, 0, 0.0), 0.06, 4.97),
    "panda_link2": ((0, 0, 0), (0, -0.26, 0), 0.06, 0.65),
    "panda_link3": ((0, 0, -0.10), (0.0825, 0, 0), 0.055, 3.23),
    "panda_link4": ((0, 0, 0), (-0.0825, 0.30, 0), 0.055, 3.59),
    "panda_link5": ((0, 0, -0.22), (0, 0.06, -0.05), 0.05, 1.23),
    "panda_link6": ((0, 0, 0), (0.088, 0, 0), 0.045, 1.67),
    "panda_link7": ((0, 0, 0), (0, 0, 0.09), 0.04, 0.74),
}
# Joint servo gains (a joint trajectory controller's PD with velocity feed-forward): stiffness
# (N m / rad) on the position error and damping (N m s / rad) on the velocity error.
_KP = np.array([1500.0, 1500.0, 1200.0, 1200.0, 400.0, 400.0, 150.0])
_KV = np.array([90.0, 90.0, 60.0, 60.0, 12.0, 12.0, 4.0])
_SCENE_CAMERA = ((1.2, -0.9, 0.85), (0.35, 0.0, 0.3))   # position and point looked at, m


def _look_at(eye, target) -> list[float]:
    """MuJoCo camera xyaxes (image right, image up) for a camera at `eye` looking at `target`, z up."""
    forward = np.subtract(target, eye) / np.linalg.norm(np.subtract(target, eye))
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    return [*right, *np.cross(right, forward)]


def default_instruction(task: str) -> str:
    return INSTRUCTIONS.get(task, task.replace("-", " "))


def build_model(urdf: Path | None = None):
    """Compile the Panda URDF plus links, actuators, table, target and cameras into an MjModel.
    MuJoCo's own URDF import builds the bodies and joints (a simulation needs an MjSpec, which
    Pinocchio's model cannot give) and reads the joint ranges and efforts (`actfrcrange`, N m)."""
    import mujoco

    from ..core.embodiment import urdf_file

    spec = mujoco.MjSpec.from_file(str(urdf or urdf_file("panda_arm.urdf")))
    spec.compiler.fusestatic = False           # keep panda_link8 (a fixed child) as its own body: the flange
    spec.option.timestep = PHYSICS_DT
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    spec.compiler.inertiafromgeom = mujoco.mjtInertiaFromGeom.mjINERTIAFROMGEOM_TRUE
    spec.compiler.discardvisual = False        # URDF default would drop the (collision-free) link geoms
    spec.visual.global_.offwidth, spec.visual.global_.offheight = 640, 480
    spec.visual.quality.offsamples = 0         # no multisampling: cheaper CPU rendering
    bodies = {b.name: b for b in spec.bodies}
    for name, (a, b, radius, mass) in _LINKS.items():
        body = bodies[name]
        geom = body.add_geom(type=mujoco.mjtGeom.mjGEOM_CAPSULE, size=[radius, 0, 0],
                             fromto=[*a, *b], rgba=[0.92, 0.92, 0.95, 1], contype=0, conaffinity=0)
        geom.mass = mass
        body.gravcomp = 1.0
    flange = bodies["panda_link8"]
    flange.add_geom(type=mujoco.mjtGeom.mjGEOM_CYLINDER, size=[0.035, 0.008, 0], pos=[0, 0, -0.008],
                    rgba=[0.2, 0.2, 0.22, 1], contype=0, conaffinity=0, mass=0.1)
    flange.gravcomp = 1.0
    flange.add_site(name="flange", size=[0.01, 0, 0], rgba=[0, 0.6, 1, 1])
    flange.add_camera(name="wrist", pos=[0.05, 0, 0.02], quat=[0, 1, 0, 0], fovy=70)
    for joint in spec.joints:
        joint.armature, joint.damping = 0.1, 1.0
    joints = {j.name: j for j in spec.joints}
    for i, name in enumerate(JOINTS):      # ctrl[i]: position target (rad), ctrl[7 + i]: velocity (rad/s)
        joints[name].actfrclimited = True
        act = spec.add_actuator(name=f"{name}_position", target=name, trntype=mujoco.mjtTrn.mjTRN_JOINT)
        act.gaintype, act.biastype = mujoco.mjtGain.mjGAIN_FIXED, mujoco.mjtBias.mjBIAS_AFFINE
        act.gainprm[0] = _KP[i]
        act.biasprm[:3] = [0.0, -_KP[i], 0.0]
        act.ctrlrange, act.ctrllimited = joints[name].range, True
    for i, name in enumerate(JOINTS):
        act = spec.add_actuator(name=f"{name}_velocity", target=name, trntype=mujoco.mjtTrn.mjTRN_JOINT)
        act.gaintype, act.biastype = mujoco.mjtGain.mjGAIN_FIXED, mujoco.mjtBias.mjBIAS_AFFINE
        act.gainprm[0] = _KV[i]
        act.biasprm[:3] = [0.0, 0.0, -_KV[i]]
    world = spec.worldbody
    world.add_light(pos=[0.5, 0, 2.0], dir=[0, 0, -1], diffuse=[0.8, 0.8, 0.8])
    world.add_geom(type=mujoco.mjtGeom.mjGEOM_PLANE, size=[2, 2, 0.1], pos=[0, 0, -0.75], rgba=[0.3, 0.3, 0.3, 1])
    world.add_geom(name="table", type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.45, 0.6, 0.02], pos=[0.35, 0, -0.02],
                   rgba=[0.55, 0.4, 0.3, 1])
    target = world.add_body(name="target", mocap=True, pos=[0.5, 0, 0.3])
    target.add_geom(type=mujoco.mjtGeom.mjGEOM_SPHERE, size=[SUCCESS_RADIUS, 0, 0], rgba=[0.9, 0.1, 0.1, 0.8],
                    contype=0, conaffinity=0)
    world.add_camera(name="scene", pos=_SCENE_CAMERA[0], xyaxes=_look_at(*_SCENE_CAMERA), fovy=50)
    return spec.compile()


class PandaReachSim:
    """The arm and the reach task; same interface as MetaWorldSim (reset/step/render/joint_state/ee_pose)."""

    action_names = JOINTS
    frame_id = "panda_link0"      # poses are in the arm's base frame (= the MuJoCo world frame)

    def __init__(self, cameras: list[str], width: int = 64, height: int = 64, control_dt: float = 0.02,
                 max_steps: int = 300, urdf: Path | None = None):
        import mujoco

        self.model = build_model(urdf)
        self.data = mujoco.MjData(self.model)
        self.cameras = list(cameras)
        missing = [c for c in self.cameras if mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, c) < 0]
        if missing:
            raise ValueError(f"panda_reach scene has no camera {missing} (cameras: scene, wrist)")
        self.width, self.height = width, height
        self.renderer = None
        if self.cameras:
            self.renderer = mujoco.Renderer(self.model, height, width)
            self.renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            self.renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        self.substeps = max(1, round(control_dt / PHYSICS_DT))
        self.max_steps = max_steps
        self.qadr = np.array([self.model.joint(n).qposadr[0] for n in JOINTS])
        self.dadr = np.array([self.model.joint(n).dofadr[0] for n in JOINTS])
        self.lower = self.model.jnt_range[[self.model.joint(n).id for n in JOINTS], 0]
        self.upper = self.model.jnt_range[[self.model.joint(n).id for n in JOINTS], 1]
        self.site = self.model.site("flange").id
        self.task = ""
        self.step_index, self.success = 0, False
        self.target = np.zeros(3)

    @property
    def dt(self) -> float:
        """Simulated seconds per step (one control period)."""
        return self.substeps * PHYSICS_DT

    @property
    def env_state(self) -> np.ndarray:
        """Privileged task state: target position (m, base frame)."""
        return self.target.copy()

    @property
    def joint_targets(self) -> np.ndarray:
        """Current position targets of the 7 joint servos (rad)."""
        return self.data.ctrl[:7].copy()

    def reset(self, task: str, seed: int):
        import mujoco

        if task not in INSTRUCTIONS:
            raise ValueError(f"panda_reach task '{task}' unknown; tasks: {', '.join(INSTRUCTIONS)}")
        rng = np.random.default_rng(int(seed))
        q0 = np.clip(READY_POSE + rng.uniform(-START_NOISE_RAD, START_NOISE_RAD, 7), self.lower, self.upper)
        self.target = rng.uniform(*TARGET_BOX)
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[self.qadr] = q0
        self.data.ctrl[:7] = q0          # hold the start pose
        self.data.mocap_pos[0] = self.target
        mujoco.mj_forward(self.model, self.data)
        self.task = task
        self.step_index, self.success = 0, False
        return self

    def step(self, joint_targets) -> None:
        """Move the joint targets (7 rad, clipped to the joint ranges) linearly from the previous ones
        over one control period, with the matching velocity feed-forward, as a trajectory controller does."""
        import mujoco

        q = np.asarray(joint_targets, dtype=np.float64)
        if q.shape != (7,) or not np.all(np.isfinite(q)):
            raise ValueError(f"panda_reach command must be 7 finite joint positions (rad), got {q}")
        if self.step_index >= self.max_steps:
            return
        start, goal = self.data.ctrl[:7].copy(), np.clip(q, self.lower, self.upper)
        self.data.ctrl[7:14] = (goal - start) / self.dt
        for k in range(1, self.substeps + 1):
            self.data.ctrl[:7] = start + (goal - start) * (k / self.substeps)
            mujoco.mj_step(self.model, self.data)
        self.data.ctrl[7:14] = 0.0
        self.step_index += 1
        self.success = self.success or self.distance() < SUCCESS_RADIUS

    def perturbation_kinds(self) -> list[str]:
        """What `perturb` can do: move the target."""
        return ["object"]

    def perturb(self, kind: str, offset_m) -> np.ndarray:
        """Displace the target by `offset_m` (m, base frame) now: the reach task's object is the target;
        the offset applied. A pushed hand is not modelled on this position-servoed arm."""
        import mujoco

        if kind not in self.perturbation_kinds():
            raise ValueError(f"perturb: kind '{kind}' not available for panda_reach (object: the target)")
        offset = np.asarray(offset_m, dtype=np.float64)
        self.target = self.target + offset
        self.data.mocap_pos[0] = self.target
        mujoco.mj_forward(self.model, self.data)
        return offset.copy()

    def distance(self) -> float:
        """Flange to target, m."""
        return float(np.linalg.norm(self.data.site_xpos[self.site] - self.target))

    def render(self) -> dict[str, np.ndarray]:
        """camera name -> HxWx3 uint8 RGB."""
        frames = {}
        for cam in self.cameras:
            self.renderer.update_scene(self.data, camera=cam)
            frames[cam] = np.ascontiguousarray(self.renderer.render())
        return frames

    def joint_state(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """The 7 arm joints: names, positions (rad), velocities (rad/s)."""
        return list(JOINTS), self.data.qpos[self.qadr].copy(), self.data.qvel[self.dadr].copy()

    def ee_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Flange (panda_link8) position (m) and orientation quaternion (x, y, z, w; w >= 0), base frame."""
        rotation = Rotation.from_matrix(self.data.site_xmat[self.site].reshape(3, 3))
        return self.data.site_xpos[self.site].copy(), rotation.as_quat(canonical=True)

    def close(self) -> None:
        close_renderer(self.renderer)
        self.renderer = None
