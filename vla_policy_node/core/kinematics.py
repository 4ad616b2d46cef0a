"""Forward and inverse kinematics of one serial chain of a URDF (base_link -> tip_link), with Pinocchio.

Poses are of the tip link's frame expressed in the base link's frame: position (m) and
quaternion (x, y, z, w). Joint vectors (rad, or m for prismatic joints) follow `joint_names`.
IK is damped least squares on the SE(3) log error (or on the position error only), warm-started
from a given configuration (the measured joints), projected onto the joint limits after every
step; it reports failure, with the residual error, when it does not converge.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


class KinematicsError(ValueError):
    """A URDF chain that cannot be built (missing link, unsupported joint, names that do not match)."""


@dataclass
class IKResult:
    q: np.ndarray                 # joint positions in `joint_names` order (the last iterate when not converged)
    success: bool
    iterations: int
    position_error: float         # m, |target - reached|
    orientation_error: float      # rad, angle between target and reached orientation (0 if position only)
    message: str = ""


def quat_to_matrix(quat_xyzw) -> np.ndarray:
    """Unit quaternion (x, y, z, w) -> 3x3 rotation matrix (normalized first)."""
    x, y, z, w = np.asarray(quat_xyzw, dtype=np.float64) / np.linalg.norm(quat_xyzw)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def matrix_to_quat(rotation) -> np.ndarray:
    """3x3 rotation matrix -> unit quaternion (x, y, z, w) with w >= 0."""
    import pinocchio as pin
    q = pin.Quaternion(np.asarray(rotation, dtype=np.float64)).coeffs()   # Eigen order x, y, z, w
    return -q if q[3] < 0 else q.copy()


def rotation_angle(r_a, r_b) -> float:
    """Angle (rad) of the rotation between two rotation matrices."""
    cos = (np.trace(np.asarray(r_a).T @ np.asarray(r_b)) - 1.0) / 2.0
    return float(np.arccos(np.clip(cos, -1.0, 1.0)))


class KinematicChain:
    """The movable joints between `base_link` and `tip_link` of a URDF; every other joint is locked at 0.

    `joint_names`, if given, must name exactly the chain's joints (any order) and fixes the order of
    joint vectors. `lower`/`upper` (rad) narrow the URDF's position limits (e.g. a robot file's)."""

    def __init__(self, urdf: str | Path, base_link: str, tip_link: str, joint_names: list[str] | None = None,
                 lower=None, upper=None):
        import pinocchio as pin

        urdf = Path(urdf)
        if not urdf.is_file():
            raise KinematicsError(f"{urdf}: URDF not found")
        full = pin.buildModelFromUrdf(str(urdf))
        for link in (base_link, tip_link):
            if not full.existFrame(link):
                raise KinematicsError(f"{urdf}: no link '{link}'")
        chain = self._chain_joints(full, full.frames[full.getFrameId(base_link)].parentJoint,
                                   full.frames[full.getFrameId(tip_link)].parentJoint)
        if not chain:
            raise KinematicsError(f"{urdf}: no movable joint between '{base_link}' and '{tip_link}'")
        for j in chain:
            if full.nqs[j] != 1 or full.nvs[j] != 1:
                raise KinematicsError(f"{urdf}: joint '{full.names[j]}' has {full.nqs[j]} position coordinates; "
                                      "only revolute and prismatic joints with limits are supported")
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
        self._base = self.model.getFrameId(base_link)
        self._tip = self.model.getFrameId(tip_link)
        self._pin = pin

    @staticmethod
    def _chain_joints(model, base_joint: int, tip_joint: int) -> list[int]:
        path = []
        j = tip_joint
        while j != base_joint and j != 0:
            path.append(j)
            j = model.parents[j]
        if j != base_joint:
            return []
        return sorted(path)

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
        return pose.translation.copy(), matrix_to_quat(pose.rotation)

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
            r_target = quat_to_matrix(quaternion)
        q = np.clip(np.asarray(q_seed if q_seed is not None else (self.lower + self.upper) / 2, dtype=np.float64),
                    self.lower, self.upper)
        q_pin = self._to_pin(q)
        target = pin.SE3(np.eye(3) if position_only else r_target, p_target)
        dim = 3 if position_only else 6
        for it in range(max_iterations + 1):
            pose = self._tip_in_base(q_pin)
            pos_err = float(np.linalg.norm(p_target - pose.translation))
            rot_err = 0.0 if position_only else rotation_angle(pose.rotation, r_target)
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
                tip_to_target = pose.actInv(target)
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
