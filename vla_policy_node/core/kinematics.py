"""A URDF through Pinocchio's model: joint limits, and forward / inverse kinematics of one serial
chain (base_link -> tip_link). The URDF is parsed here only; every caller reads it through this module.

Poses are of the tip link's frame expressed in the base link's frame: position (m) and
quaternion (x, y, z, w), the ROS and scipy `Rotation.as_quat` order, with w >= 0. Joint vectors
(rad, or m for prismatic joints) follow `joint_names`.
IK is damped least squares on the SE(3) log error (or on the position error only), warm-started
from a given configuration (the measured joints), projected onto the joint limits after every
step; it reports failure, with the residual error, when it does not converge.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation


class KinematicsError(ValueError):
    """A URDF chain that cannot be built (missing link, unsupported joint, names that do not match)."""


@dataclass(frozen=True)
class JointLimits:
    """One revolute (rad) or prismatic (m) joint's limits as the URDF states them."""
    lower: float
    upper: float
    velocity: float               # rad/s or m/s
    effort: float                 # N m or N


@dataclass
class IKResult:
    q: np.ndarray                 # joint positions in `joint_names` order (the last iterate when not converged)
    success: bool
    iterations: int
    position_error: float         # m, |target - reached|
    orientation_error: float      # rad, angle between target and reached orientation (0 if position only)
    message: str = ""


def urdf_model(urdf: str | Path):
    """Pinocchio's model of a URDF (KinematicsError when the file is missing)."""
    import pinocchio as pin

    if not Path(urdf).is_file():
        raise KinematicsError(f"{urdf}: URDF not found")
    return pin.buildModelFromUrdf(str(urdf))


def urdf_joint_limits(urdf: str | Path) -> dict[str, JointLimits]:
    """Joint name -> limits of every one-coordinate (revolute or prismatic) joint of a URDF."""
    model = urdf_model(urdf)
    return {model.names[j]: JointLimits(float(model.lowerPositionLimit[model.idx_qs[j]]),
                                        float(model.upperPositionLimit[model.idx_qs[j]]),
                                        float(model.velocityLimit[model.idx_vs[j]]),
                                        float(model.effortLimit[model.idx_vs[j]]))
            for j in range(1, model.njoints) if model.nqs[j] == 1}


def chain_joints(model, base_link: str, tip_link: str, where: str = "URDF") -> list[int]:
    """Ids of the movable joints of `model` from base_link down to tip_link, base first;
    KinematicsError naming the key (base_link / tip_link) and `where` otherwise."""
    import pinocchio as pin

    for key, link in (("base_link", base_link), ("tip_link", tip_link)):
        if not model.existFrame(link, pin.FrameType.BODY):
            raise KinematicsError(f"{key}: no link '{link}' in {where}")
    base_joint = model.frames[model.getFrameId(base_link, pin.FrameType.BODY)].parentJoint
    path, j = [], model.frames[model.getFrameId(tip_link, pin.FrameType.BODY)].parentJoint
    while j != base_joint and j != 0:
        path.append(j)
        j = model.parents[j]
    if j != base_joint or not path:
        raise KinematicsError(f"tip_link: no movable joint between '{base_link}' and '{tip_link}' in {where}")
    for j in path:
        if model.nqs[j] != 1 or model.nvs[j] != 1:
            raise KinematicsError(f"urdf: joint '{model.names[j]}' in {where} has {model.nqs[j]} position coordinates; "
                                  "only revolute and prismatic joints with limits are supported")
    return sorted(path)


class KinematicChain:
    """The movable joints between `base_link` and `tip_link` of a URDF; every other joint is locked at 0.

    `joint_names`, if given, must name exactly the chain's joints (any order) and fixes the order of
    joint vectors. `lower`/`upper` (rad) narrow the URDF's position limits (e.g. a robot file's)."""

    def __init__(self, urdf: str | Path, base_link: str, tip_link: str, joint_names: list[str] | None = None,
                 lower=None, upper=None):
        import pinocchio as pin

        urdf = Path(urdf)
        full = urdf_model(urdf)
        chain = chain_joints(full, base_link, tip_link, str(urdf))
        locked = [j for j in range(1, full.njoints) if j not in chain]
        self.model = pin.buildReducedModel(full, locked, pin.neutral(full)) if locked else full
        self.data = self.model.createData()
        chain_names = [self.model.names[j] for j in range(1, self.model.njoints)]
        if joint_names is None:
            joint_names = chain_names
        if sorted(joint_names) != sorted(chain_names):
            raise KinematicsError(f"{urdf}: joints {list(joint_names)} are not the chain {base_link} -> {tip_link} "
                                  f"({', '.join(chain_names)})")
        self.urdf, self.base_link, self.tip_link = urdf, base_link, tip_link
        self.joint_names = list(joint_names)
        # index into pinocchio's configuration vector for each entry of `joint_names`
        self._idx = np.array([self.model.idx_qs[self.model.getJointId(n)] for n in self.joint_names])
        self.lower = self.model.lowerPositionLimit[self._idx].copy()
        self.upper = self.model.upperPositionLimit[self._idx].copy()
        if lower is not None:
            self.lower = np.maximum(self.lower, np.asarray(lower, dtype=np.float64))
        if upper is not None:
            self.upper = np.minimum(self.upper, np.asarray(upper, dtype=np.float64))
        self._base = self.model.getFrameId(base_link, pin.FrameType.BODY)
        self._tip = self.model.getFrameId(tip_link, pin.FrameType.BODY)
        self._pin = pin

    @property
    def dof(self) -> int:
        return len(self.joint_names)

    def _to_pin(self, q) -> np.ndarray:
        q_pin = np.zeros(self.model.nq)
        q_pin[self._idx] = np.asarray(q, dtype=np.float64)
        return q_pin

    def _tip_in_base(self, q_pin):
        self._pin.framesForwardKinematics(self.model, self.data, q_pin)
        return self.data.oMf[self._base].actInv(self.data.oMf[self._tip])

    def fk(self, q) -> tuple[np.ndarray, np.ndarray]:
        """Tip pose in the base frame: position (m), quaternion (x, y, z, w)."""
        pose = self._tip_in_base(self._to_pin(q))
        return pose.translation.copy(), Rotation.from_matrix(pose.rotation).as_quat(canonical=True)

    def within_limits(self, q, tol: float = 1e-9) -> bool:
        q = np.asarray(q, dtype=np.float64)
        return bool(np.all(q >= self.lower - tol) and np.all(q <= self.upper + tol))

    def ik(self, position, quaternion=None, q_seed=None, max_iterations: int = 100, tol_position: float = 1e-4,
           tol_orientation: float = 1e-3, damping: float = 1e-4, max_step: float = 0.2) -> IKResult:
        """Joint positions reaching `position` (m) and, unless None, `quaternion` (x, y, z, w) in the base
        frame, starting from `q_seed` (default: mid-range). Damped least squares with damping `damping`
        (added to J J^T), steps of at most `max_step` rad per joint, each iterate clipped to the limits."""
        pin = self._pin
        p_target = np.asarray(position, dtype=np.float64)
        position_only = quaternion is None
        if not position_only:
            norm = float(np.linalg.norm(quaternion))
            if not np.isfinite(norm) or norm < 1e-6:
                return IKResult(np.asarray(q_seed, dtype=np.float64) if q_seed is not None else
                                (self.lower + self.upper) / 2, False, 0, np.inf, np.inf,
                                f"target quaternion {list(quaternion)} has no orientation (norm {norm:.3g})")
            r_target = Rotation.from_quat(quaternion).as_matrix()          # x, y, z, w
        q = np.clip(np.asarray(q_seed if q_seed is not None else (self.lower + self.upper) / 2, dtype=np.float64),
                    self.lower, self.upper)
        q_pin = self._to_pin(q)
        target = pin.SE3(np.eye(3) if position_only else r_target, p_target)
        dim = 3 if position_only else 6
        for it in range(max_iterations + 1):
            pose = self._tip_in_base(q_pin)
            tip_to_target = pose.actInv(target)
            pos_err = float(np.linalg.norm(p_target - pose.translation))
            rot_err = 0.0 if position_only else float(np.linalg.norm(pin.log3(tip_to_target.rotation)))
            if pos_err <= tol_position and rot_err <= tol_orientation:
                return IKResult(q_pin[self._idx].copy(), True, it, pos_err, rot_err)
            if it == max_iterations:
                break
            o_base = self.data.oMf[self._base]
            if position_only:
                err = p_target - pose.translation                                     # base frame
                jac = pin.computeFrameJacobian(self.model, self.data, q_pin, self._tip,
                                               pin.ReferenceFrame.LOCAL_WORLD_ALIGNED)[:3]
                jac = o_base.rotation.T @ jac
            else:
                err = pin.log6(tip_to_target).vector                                  # tip frame
                jac = pin.computeFrameJacobian(self.model, self.data, q_pin, self._tip, pin.ReferenceFrame.LOCAL)
                jac = pin.Jlog6(tip_to_target.inverse()) @ jac
            jac = jac[:, self._idx]
            dq = jac.T @ np.linalg.solve(jac @ jac.T + damping * np.eye(dim), err)
            largest = float(np.max(np.abs(dq)))
            if largest > max_step:
                dq *= max_step / largest
            q_pin[self._idx] = np.clip(q_pin[self._idx] + dq, self.lower, self.upper)
        return IKResult(q_pin[self._idx].copy(), False, max_iterations, pos_err, rot_err,
                        f"IK {self.base_link} -> {self.tip_link} did not converge in {max_iterations} iterations: "
                        f"position error {pos_err * 1e3:.1f} mm, orientation error {np.degrees(rot_err):.2f} deg "
                        f"(target position {np.round(p_target, 4).tolist()} m in {self.base_link})")
