"""Task-space motion for the twin robots: smooth trajectories, inverse kinematics, joint servo.

The pieces, from task to torque:

* :class:`Trajectory` — a piecewise path of the tool tip: straight :class:`Line` segments with a
  minimum-jerk time law and :class:`Curve` segments (a weld seam) with a smooth-ramp law. A pose
  is a position and three angles (:func:`tool_rotation`): heading of the tool x axis, then pitch
  and roll of a tool pointing straight down. Each segment carries a phase index.
* :class:`Bump` — a smooth, temporary offset of the commanded position (a seam-tracking or
  calibration error): the robot deviates from its *nominal* path although it tracks the
  *commanded* one.
* :class:`DampedLeastSquaresIK` — differential inverse kinematics on the site Jacobian
  (``mj_jacSite``), warm-started from the previous solution, clamped to the joint limits.
* :class:`ComputedTorqueServo` — joint-space computed-torque control (``M(q)·(kp·e + kd·ė) +
  bias``) evaluated between ``mj_step1`` and ``mj_step2`` on every physics step; the torques
  go to the motor actuators and are clipped to their ``ctrlrange``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import mujoco
import numpy as np

from mmguard.errors import DataError

# --------------------------------------------------------------------------- time laws


def min_jerk(tau: float) -> float:
    """Minimum-jerk time law: 0 -> 0, 1 -> 1, zero velocity and acceleration at both ends."""
    tau = min(max(tau, 0.0), 1.0)
    return tau * tau * tau * (10.0 + tau * (-15.0 + 6.0 * tau))


def smooth_ramp(tau: float, ramp: float = 0.15) -> float:
    """Constant-speed time law with cosine velocity ramps over the first/last ``ramp`` fraction."""
    tau = min(max(tau, 0.0), 1.0)
    if ramp <= 0.0:
        return tau
    ramp = min(ramp, 0.5)
    vmax = 1.0 / (1.0 - ramp)
    if tau > 1.0 - ramp:
        return 1.0 - smooth_ramp(1.0 - tau, ramp)
    if tau < ramp:
        return vmax * (0.5 * tau - ramp / (2.0 * math.pi) * math.sin(math.pi * tau / ramp))
    return vmax * (0.5 * ramp + (tau - ramp))


# --------------------------------------------------------------------------- orientation


def tool_rotation(heading: float, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """World rotation (3x3, columns = tool axes) of a tool pointing down, then tilted.

    With zero pitch and roll the tool z axis points straight down and its x axis is horizontal at
    angle ``heading`` from world x. ``pitch`` then rotates about the tool y axis (tilting the tip
    along the x axis: a travel angle), ``roll`` about the tool x axis (a work angle).
    """
    ch, sh = math.cos(heading), math.sin(heading)
    down = np.array([[ch, sh, 0.0], [sh, -ch, 0.0], [0.0, 0.0, -1.0]])
    cp, sp = math.cos(pitch), math.sin(pitch)
    cr, sr = math.cos(roll), math.sin(roll)
    rot_y = np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]])
    rot_x = np.array([[1.0, 0.0, 0.0], [0.0, cr, -sr], [0.0, sr, cr]])
    return down @ rot_y @ rot_x


def rotation_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Rotation vector (world frame, rad) that turns ``current`` into ``target`` (both 3x3)."""
    err = target @ current.T
    quat = np.empty(4)
    mujoco.mju_mat2Quat(quat, err.reshape(-1))
    vel = np.empty(3)
    mujoco.mju_quat2Vel(vel, quat, 1.0)
    return vel


# --------------------------------------------------------------------------- trajectories


@dataclass(frozen=True)
class Pose:
    """A tool-tip target: position (m, world) and angles (heading, pitch, roll in rad)."""

    position: np.ndarray
    angles: np.ndarray

    @staticmethod
    def of(position: Sequence[float], heading: float, pitch: float = 0.0, roll: float = 0.0) -> Pose:
        return Pose(np.asarray(position, dtype=float), np.array([heading, pitch, roll], dtype=float))

    def rotation(self) -> np.ndarray:
        return tool_rotation(*self.angles)


@dataclass(frozen=True)
class Line:
    """Straight move from ``start`` to ``end`` over [t0, t1] with a minimum-jerk time law."""

    t0: float
    t1: float
    start: Pose
    end: Pose
    phase: int

    def pose(self, t: float) -> Pose:
        s = min_jerk((t - self.t0) / max(self.t1 - self.t0, 1e-9))
        return Pose(
            self.start.position + s * (self.end.position - self.start.position),
            self.start.angles + s * (self.end.angles - self.start.angles),
        )


@dataclass(frozen=True)
class Curve:
    """Move along ``path(s)`` (s in [0, 1]) over [t0, t1] at constant speed with smooth ramps."""

    t0: float
    t1: float
    path: Callable[[float], np.ndarray]
    angles: np.ndarray
    phase: int
    ramp: float = 0.12

    def pose(self, t: float) -> Pose:
        s = smooth_ramp((t - self.t0) / max(self.t1 - self.t0, 1e-9), self.ramp)
        return Pose(np.asarray(self.path(s), dtype=float), self.angles)


@dataclass(frozen=True)
class Bump:
    """Smooth offset ``vector * sin²(π (t - t0) / width)`` of the commanded position on [t0, t0+width]."""

    t0: float
    width: float
    vector: np.ndarray

    def offset(self, t: float) -> np.ndarray | None:
        u = (t - self.t0) / self.width
        if u <= 0.0 or u >= 1.0:
            return None
        return self.vector * math.sin(math.pi * u) ** 2


class Trajectory:
    """Contiguous segments (each ends where the next starts); the last pose holds after the end."""

    def __init__(self, segments: Sequence[Line | Curve], bumps: Sequence[Bump] = ()) -> None:
        if not segments:
            raise DataError("a trajectory needs at least one segment")
        self.segments = list(segments)
        self.bumps = list(bumps)
        self._ends = np.array([seg.t1 for seg in self.segments])

    @property
    def duration(self) -> float:
        return float(self._ends[-1])

    def _segment(self, t: float) -> Line | Curve:
        i = int(np.searchsorted(self._ends, t, side="left"))
        return self.segments[min(i, len(self.segments) - 1)]

    def nominal(self, t: float) -> Pose:
        """The planned pose at time ``t`` (no bumps)."""
        seg = self._segment(t)
        return seg.pose(min(t, seg.t1))

    def phase(self, t: float) -> int:
        return self._segment(t).phase

    def commanded(self, t: float) -> Pose:
        """The pose sent to inverse kinematics: nominal plus the active bumps."""
        pose = self.nominal(t)
        offsets = [off for off in (b.offset(t) for b in self.bumps) if off is not None]
        if not offsets:
            return pose
        return Pose(pose.position + np.sum(offsets, axis=0), pose.angles)


# --------------------------------------------------------------------------- robot bookkeeping


@dataclass(frozen=True)
class RobotIndex:
    """Addresses of one robot's joints, actuators and tool-tip site in a scene model."""

    prefix: str
    qpos: np.ndarray  # (6,) qpos addresses
    dof: np.ndarray  # (6,) dof addresses
    actuators: np.ndarray  # (6,) actuator ids driving those joints, same order
    lower: np.ndarray  # joint range
    upper: np.ndarray
    tcp_site: int

    @staticmethod
    def build(model: mujoco.MjModel, prefix: str, joints: int = 6) -> RobotIndex:
        jids = []
        for k in range(1, joints + 1):
            jid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, f"{prefix}/joint{k}")
            if jid < 0:
                raise DataError(f"the scene has no joint {prefix}/joint{k}")
            jids.append(jid)
        jids_arr = np.array(jids)
        acts = []
        for jid in jids:
            match = np.flatnonzero(
                (model.actuator_trntype == mujoco.mjtTrn.mjTRN_JOINT) & (model.actuator_trnid[:, 0] == jid)
            )
            if match.size != 1:
                raise DataError(f"joint {model.joint(jid).name!r} needs exactly one actuator")
            acts.append(int(match[0]))
        site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, f"{prefix}/tcp")
        if site < 0:
            raise DataError(f"the scene has no site {prefix}/tcp")
        return RobotIndex(
            prefix=prefix,
            qpos=model.jnt_qposadr[jids_arr].copy(),
            dof=model.jnt_dofadr[jids_arr].copy(),
            actuators=np.array(acts),
            lower=model.jnt_range[jids_arr, 0].copy(),
            upper=model.jnt_range[jids_arr, 1].copy(),
            tcp_site=int(site),
        )


# --------------------------------------------------------------------------- inverse kinematics


class DampedLeastSquaresIK:
    """Differential IK for several robots of one model, on a private kinematics-only ``MjData``.

    Each iteration runs forward kinematics once for the whole model, then for every robot
    ``dq = Jᵀ (J Jᵀ + λ² I)⁻¹ e`` with ``e`` the position error (m) stacked with the weighted
    rotation error (rad × ``rot_weight`` m), the step capped at ``max_step`` rad and the result
    clamped to the joint range shrunk by ``margin``.
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        robots: Sequence[RobotIndex],
        damping: float = 0.02,
        rot_weight: float = 0.25,
        margin: float = 0.05,
        max_step: float = 0.25,
    ) -> None:
        self.model = model
        self.data = mujoco.MjData(model)
        self.robots = list(robots)
        self.damping = damping
        self.rot_weight = rot_weight
        self.max_step = max_step
        self._lo = [r.lower + margin for r in self.robots]
        self._hi = [r.upper - margin for r in self.robots]
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

    def tip_pose(self, q: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Forward kinematics: (position, rotation) of every robot's tool tip for joint vectors ``q``."""
        self._set(q)
        mujoco.mj_kinematics(self.model, self.data)
        return [
            (self.data.site_xpos[r.tcp_site].copy(), self.data.site_xmat[r.tcp_site].reshape(3, 3).copy())
            for r in self.robots
        ]

    def _set(self, q: Sequence[np.ndarray]) -> None:
        for robot, qr in zip(self.robots, q, strict=True):
            self.data.qpos[robot.qpos] = qr

    def solve(
        self, q: Sequence[np.ndarray], targets: Sequence[tuple[np.ndarray, np.ndarray]], iterations: int = 3
    ) -> list[np.ndarray]:
        """Joint vectors moving every robot's tool tip towards its (position, rotation) target."""
        out = [np.array(qr, dtype=float) for qr in q]
        eye = np.eye(6) * self.damping**2
        for _ in range(iterations):
            self._set(out)
            mujoco.mj_kinematics(self.model, self.data)
            mujoco.mj_comPos(self.model, self.data)
            for k, (robot, (pos, rot)) in enumerate(zip(self.robots, targets, strict=True)):
                site = robot.tcp_site
                err = np.empty(6)
                err[:3] = pos - self.data.site_xpos[site]
                err[3:] = self.rot_weight * rotation_error(rot, self.data.site_xmat[site].reshape(3, 3))
                mujoco.mj_jacSite(self.model, self.data, self._jacp, self._jacr, site)
                jac = np.vstack([self._jacp[:, robot.dof], self.rot_weight * self._jacr[:, robot.dof]])
                dq = jac.T @ np.linalg.solve(jac @ jac.T + eye, err)
                peak = float(np.max(np.abs(dq)))
                if peak > self.max_step:
                    dq *= self.max_step / peak
                out[k] = np.clip(out[k] + dq, self._lo[k], self._hi[k])
        return out


# --------------------------------------------------------------------------- joint servo


class ComputedTorqueServo:
    """Joint-space computed-torque control of all listed robots.

    Call :meth:`apply` between ``mj_step1`` and ``mj_step2``: it reads the mass matrix and bias
    forces of the current state and writes ``tau = M(q)·(a_ref + kp·(q_ref - q) + kd·(v_ref - v))
    + qfrc_bias - qfrc_passive`` to the actuators (clipped to their ``ctrlrange``). With
    ``kp = ω²`` and ``kd = 2ζω`` every joint behaves like a critically damped second-order system
    of natural frequency ω around the reference.
    """

    def __init__(
        self, model: mujoco.MjModel, robots: Sequence[RobotIndex], omega: float = 60.0, zeta: float = 1.0
    ) -> None:
        self.model = model
        self.qpos = np.concatenate([r.qpos for r in robots])
        self.dof = np.concatenate([r.dof for r in robots])
        self.act = np.concatenate([r.actuators for r in robots])
        self.kp = omega * omega
        self.kd = 2.0 * zeta * omega
        limited = model.actuator_ctrllimited[self.act].astype(bool)
        rng = model.actuator_ctrlrange[self.act]
        self.lo = np.where(limited, rng[:, 0], -np.inf)
        self.hi = np.where(limited, rng[:, 1], np.inf)
        self._acc = np.zeros(model.nv)
        self._force = np.zeros(model.nv)

    def apply(self, data: mujoco.MjData, q_ref: np.ndarray, v_ref: np.ndarray) -> None:
        """Write the actuator torques for joint reference ``q_ref`` / ``v_ref`` (stacked robots)."""
        self._acc[:] = 0.0
        error, rate = q_ref - data.qpos[self.qpos], v_ref - data.qvel[self.dof]
        self._acc[self.dof] = self.kp * error + self.kd * rate
        mujoco.mj_mulM(self.model, data, self._force, self._acc)
        tau = self._force[self.dof] + data.qfrc_bias[self.dof] - data.qfrc_passive[self.dof]
        data.ctrl[self.act] = np.clip(tau, self.lo, self.hi)
