"""Simulate one episode of a twin scene: ``simulate_episode(scene, seed, steps, camera) -> Episode``.

An episode is a pure function of its arguments. All randomness (workpiece and seam pose, payload,
waypoints, speeds, phase lengths, deviation events) comes from one ``numpy.random.Generator``
seeded with ``derive_seed(seed, scene, "episode")`` (:mod:`mmguard.seeding`); MuJoCo runs
single-threaded, so the same arguments give bit-identical arrays on the same machine.

Timing: one recorded step every :data:`FRAME_PERIOD` seconds (25 Hz), :data:`SUBSTEPS` physics
steps of the scene's timestep in between. Per recorded step the tool-tip target of every robot is
read off its :class:`~mmguard.twin.control.Trajectory`, inverse kinematics turns it into a joint
reference (warm-started, a few damped-least-squares iterations), and a computed-torque servo
tracks the reference interpolated linearly over the substeps. Observations (sensors, camera) are
taken at exactly ``t = k · FRAME_PERIOD``.

Scenes (see ``docs/twin.md``):

* ``arm`` — one robot moves between random free-space waypoints (random speeds, dwells) and
  presses on random points of the workpiece (approach / press / retract). Target
  ``seam_distance``: distance of the tool tip from its *planned* path point.
* ``weld`` — two robots weld one seam, robot 0 the first half, robot 1 the second, with
  approach / weld / retract phases stretched to the episode length (a cycle lasts at least
  :data:`MIN_WELD_CYCLE`; shorter episodes end before the retract). Target ``seam_distance``:
  the larger of the two tool tips' distances to their own seam half.

In both, random *deviation events* (smooth offsets of a few millimetres of the commanded path, see
:class:`~mmguard.twin.control.Bump`) make the tool tip leave the plan now and then; ``quality`` is
1 where ``seam_distance`` exceeds :data:`TOLERANCE` (for ``weld`` only during the weld phase).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import mujoco
import numpy as np

from mmguard.errors import DataError, SpecError
from mmguard.seeding import derive_seed
from mmguard.twin import scene as scenes
from mmguard.twin.control import (
    Bump,
    ComputedTorqueServo,
    Curve,
    DampedLeastSquaresIK,
    Line,
    Pose,
    RobotIndex,
    Trajectory,
)
from mmguard.twin.interface import CameraConfig, Episode

GENERATOR_VERSION = "1"
"""Bumped whenever the same arguments would give different arrays."""

FRAME_PERIOD = 0.04
"""Seconds between recorded steps (25 Hz)."""

SUBSTEPS = 20
"""Physics steps per recorded step (timestep 0.002 s)."""

TOLERANCE = 0.005
"""Metres: ``quality`` is 1 where ``seam_distance`` exceeds this."""

IK_ITERATIONS = 3
"""Damped-least-squares iterations per recorded step (warm-started)."""

PHASE_NAMES: dict[str, list[str]] = {
    "arm": ["move", "dwell", "approach", "press", "retract"],
    "weld": ["approach", "weld", "retract"],
}
"""Phase labels of each scene; ``targets["phase"]`` indexes into them."""

MIN_WELD_CYCLE = 1.2
"""Seconds: the weld cycle never runs faster than this; episodes shorter than 31 steps end early."""

DEVIATION_RATE_ARM = 0.25
"""Mean deviation events per second in ``arm`` (Poisson); ``weld`` has 0, 1 or 2 per robot."""

PAYLOAD_RANGE_KG = (0.0, 2.5)
"""Random extra tool mass per robot and episode."""

_HOME = np.array([0.0, 0.2, 0.6, 0.0, 0.77, 0.0])  # elbow up, tool down; joint1 set per target


@dataclass
class Plan:
    """What a scene planner hands to the simulation loop (see :data:`PLANNERS`)."""

    trajectories: list[Trajectory]
    # (robot index, time, tool-tip position) -> distance to the seam / planned path in metres
    distance: Callable[[int, float, np.ndarray], float]
    weld_phase: int | None  # quality counts only in this phase (None: in every phase)
    attrs: dict[str, object] = field(default_factory=dict)


# --------------------------------------------------------------------------- helpers


def _body_id(model: mujoco.MjModel, name: str) -> int:
    return scenes.name_id(model, mujoco.mjtObj.mjOBJ_BODY, name)


def _yaw_quat(yaw: float) -> np.ndarray:
    return np.array([math.cos(yaw / 2.0), 0.0, 0.0, math.sin(yaw / 2.0)])


def _add_payload(model: mujoco.MjModel, prefix: str, rng: np.random.Generator) -> float:
    """Add a random payload to the robot's tool body (mass and inertia scaled together)."""
    payload = float(rng.uniform(*PAYLOAD_RANGE_KG))
    tool = _body_id(model, f"{prefix}/tool")
    mass = float(model.body_mass[tool])
    model.body_inertia[tool] *= (mass + payload) / mass
    model.body_mass[tool] = mass + payload
    return payload


def _base_frame(model: mujoco.MjModel, data: mujoco.MjData, prefix: str) -> tuple[np.ndarray, float]:
    """World position and yaw of the robot's base (after ``mj_kinematics``)."""
    base = _body_id(model, f"{prefix}/base")
    mat = data.xmat[base].reshape(3, 3)
    return data.xpos[base].copy(), math.atan2(mat[1, 0], mat[0, 0])


def _polyline_distance(point: np.ndarray, start: np.ndarray, seg: np.ndarray, seg_sq: np.ndarray) -> float:
    """Distance from ``point`` to the polyline with segment starts ``start`` and vectors ``seg``."""
    rel = point - start
    t = np.clip(np.einsum("ij,ij->i", rel, seg) / seg_sq, 0.0, 1.0)
    return float(np.sqrt(np.min(np.sum((rel - t[:, None] * seg) ** 2, axis=1))))


def _deviation_bumps(
    rng: np.random.Generator,
    t_start: float,
    t_end: float,
    count: int,
    directions: Callable[[float], np.ndarray],
) -> list[Bump]:
    """``count`` smooth deviation events inside [t_start, t_end], 2-14 mm, direction per event."""
    bumps = []
    span = max(t_end - t_start, 1e-6)
    for _ in range(count):
        width = float(rng.uniform(0.1, 0.25)) * span
        t0 = t_start + float(rng.uniform(0.0, max(span - width, 0.0)))
        amplitude = float(rng.uniform(0.002, 0.014))
        bumps.append(Bump(t0, width, amplitude * directions(t0 + width / 2.0)))
    return bumps


# --------------------------------------------------------------------------- scene "arm"


def _plan_arm(
    model: mujoco.MjModel, rng: np.random.Generator, duration: float, bases: list[tuple[np.ndarray, float]]
) -> Plan:
    phase = {name: i for i, name in enumerate(PHASE_NAMES["arm"])}
    payload = _add_payload(model, "r0", rng)

    # Workpiece: a block on the table, random position and yaw.
    wp = _body_id(model, "workpiece")
    wp_geom = scenes.name_id(model, mujoco.mjtObj.mjOBJ_GEOM, "workpiece")
    wp_pos = np.array([rng.uniform(0.50, 0.60), rng.uniform(-0.15, 0.15), model.body_pos[wp, 2]])
    wp_yaw = float(rng.uniform(-0.6, 0.6))
    model.body_pos[wp] = wp_pos
    model.body_quat[wp] = _yaw_quat(wp_yaw)
    half = model.geom_size[wp_geom]
    top = float(wp_pos[2] + half[2])
    contact_depth = 0.015  # tool tip below the nozzle mouth: nozzle touches when tip is 15 mm deep
    base, base_yaw = bases[0]

    def azimuth_of(position: np.ndarray) -> float:
        """Angle of ``position`` around the robot base, relative to the base's heading."""
        return math.remainder(math.atan2(position[1] - base[1], position[0] - base[0]) - base_yaw, math.tau)

    def free_waypoint(previous: Pose | None) -> Pose:
        # Reachable with the tool near vertical; azimuth steps <= 0.6 rad keep straight moves away
        # from the base.
        azimuth = float(rng.uniform(-0.8, 0.8))
        if previous is not None:
            azimuth = float(np.clip(azimuth_of(previous.position) + rng.uniform(-0.6, 0.6), -0.8, 0.8))
        radius, world_az = rng.uniform(0.40, 0.62), base_yaw + azimuth
        x, y = base[0] + radius * math.cos(world_az), base[1] + radius * math.sin(world_az)
        heading = world_az + rng.uniform(-0.5, 0.5)
        return Pose.of(
            [x, y, rng.uniform(0.42, 0.60)], heading, rng.uniform(-0.25, 0.25), rng.uniform(-0.25, 0.25)
        )

    def press_point() -> Pose:
        u, v = rng.uniform(-0.7, 0.7) * half[0], rng.uniform(-0.7, 0.7) * half[1]
        c, s = math.cos(wp_yaw), math.sin(wp_yaw)
        x, y = wp_pos[0] + c * u - s * v, wp_pos[1] + s * u + c * v
        heading = base_yaw + azimuth_of(np.array([x, y])) + rng.uniform(-0.4, 0.4)
        return Pose.of([x, y, top - contact_depth], heading)

    def move_time(a: Pose, b: Pose) -> float:
        speed = rng.uniform(0.15, 0.45)  # mean tool-tip speed, m/s
        return max(0.6, float(np.linalg.norm(b.position - a.position)) / speed)

    segments: list[Line] = []
    bumps: list[Bump] = []
    current, t = free_waypoint(None), 0.0
    presses = 0
    while not segments or t < duration:
        if rng.random() < 0.4:
            target = press_point()
            hover = Pose(target.position + [0.0, 0.0, rng.uniform(0.06, 0.10)], target.angles)
            times = [move_time(current, hover), *rng.uniform([0.4, 0.4, 0.4], [0.8, 1.0, 0.8])]
            legs = [
                (current, hover, "move"),
                (hover, target, "approach"),
                (target, target, "press"),
                (target, hover, "retract"),
            ]
            for (a, b, name), dt in zip(legs, times, strict=True):
                segments.append(Line(t, t + dt, a, b, phase[name]))
                if name == "press":  # push 1-2.5 mm into the surface, relative to the planned contact
                    bumps.append(Bump(t, dt, np.array([0.0, 0.0, -rng.uniform(0.001, 0.0025)])))
                t += dt
            current = hover
            presses += 1
        else:
            target = free_waypoint(current)
            dt = move_time(current, target)
            segments.append(Line(t, t + dt, current, target, phase["move"]))
            t += dt
            current = target
            if rng.random() < 0.5:
                dt = rng.uniform(0.2, 0.6)
                segments.append(Line(t, t + dt, current, current, phase["dwell"]))
                t += dt

    def horizontal(_: float) -> np.ndarray:
        angle = rng.uniform(0.0, 2.0 * math.pi)
        return np.array([math.cos(angle), math.sin(angle), 0.0])

    events = _deviation_bumps(rng, 0.0, duration, int(rng.poisson(DEVIATION_RATE_ARM * duration)), horizontal)
    trajectory = Trajectory(segments, bumps + events)

    def distance(_: int, time: float, tip: np.ndarray) -> float:
        return float(np.linalg.norm(tip - trajectory.nominal(time).position))

    attrs = {
        "payload_kg": [payload],
        "workpiece_pos": wp_pos.tolist(),
        "workpiece_yaw": wp_yaw,
        "press_cycles": presses,
        "deviation_events": len(events),
        "seam_distance_definition": "distance of the tool tip from its planned path point",
    }
    return Plan([trajectory], distance, None, attrs)


# --------------------------------------------------------------------------- scene "weld"

_SEAM_SEGMENTS = 16  # capsules seam00..seam15 in weld.xml
_SEAM_SAMPLES = 200  # polyline points per half for distances
_UP = np.array([0.0, 0.0, 1.0])
_Z_TO_X = np.array([math.cos(math.pi / 4), 0.0, math.sin(math.pi / 4), 0.0])


def _arc(length: float, curvature: float, s: np.ndarray) -> np.ndarray:
    """Points (N, 2) of a planar arc of given length and curvature, centred at its midpoint, along +x."""
    ell = (np.asarray(s, dtype=float) - 0.5) * length
    if abs(curvature) < 1e-6:
        return np.stack([ell, 0.5 * curvature * ell**2], axis=-1)
    turn = curvature * ell
    return np.stack([np.sin(turn) / curvature, (1.0 - np.cos(turn)) / curvature], axis=-1)


def _plan_weld(
    model: mujoco.MjModel, rng: np.random.Generator, duration: float, bases: list[tuple[np.ndarray, float]]
) -> Plan:
    phase = {name: i for i, name in enumerate(PHASE_NAMES["weld"])}
    payloads = [_add_payload(model, prefix, rng) for prefix in scenes.SCENE_ROBOTS["weld"]]

    # Plate pose, then the seam in plate coordinates: centre, direction, length, curvature.
    wp = _body_id(model, "workpiece")
    wp_geom = scenes.name_id(model, mujoco.mjtObj.mjOBJ_GEOM, "workpiece")
    plate_pos = np.array([rng.uniform(-0.02, 0.02), rng.uniform(-0.05, 0.05), model.body_pos[wp, 2]])
    plate_yaw = float(rng.uniform(-0.25, 0.25))
    model.body_pos[wp] = plate_pos
    model.body_quat[wp] = _yaw_quat(plate_yaw)
    surface = float(model.geom_size[wp_geom, 2])  # plate top in plate coordinates
    center = np.array([rng.uniform(-0.02, 0.02), rng.uniform(-0.04, 0.04)])
    angle = float(rng.uniform(-0.2, 0.2))
    length = float(rng.uniform(0.24, 0.34))
    curvature = float(rng.uniform(-3.0, 3.0))
    ca, sa = math.cos(angle), math.sin(angle)
    cp, sp = math.cos(plate_yaw), math.sin(plate_yaw)

    def local(s: np.ndarray) -> np.ndarray:
        x, y = np.moveaxis(_arc(length, curvature, s), -1, 0)
        return np.stack([center[0] + ca * x - sa * y, center[1] + sa * x + ca * y], -1)

    def world(s: np.ndarray) -> np.ndarray:
        uv = local(s)
        x = plate_pos[0] + cp * uv[..., 0] - sp * uv[..., 1]
        y = plate_pos[1] + sp * uv[..., 0] + cp * uv[..., 1]
        return np.stack([x, y, np.full_like(x, plate_pos[2] + surface)], -1)

    # Draw the seam: capsule k spans s in [k/16, (k+1)/16] (axis along the chord).
    knots = local(np.linspace(0.0, 1.0, _SEAM_SEGMENTS + 1))
    for k in range(_SEAM_SEGMENTS):
        gid = scenes.name_id(model, mujoco.mjtObj.mjOBJ_GEOM, f"seam{k:02d}")
        a, b = knots[k], knots[k + 1]
        chord = b - a
        heading = math.atan2(chord[1], chord[0])
        model.geom_pos[gid] = [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2, surface]
        quat = np.empty(4)  # capsule axis: z -> x (90° about y), then yaw to the chord heading
        mujoco.mju_mulQuat(quat, _yaw_quat(heading), _Z_TO_X)
        model.geom_quat[gid] = quat
        model.geom_size[gid, 1] = float(np.linalg.norm(chord)) / 2

    # Phases stretched to the episode (to at least MIN_WELD_CYCLE: shorter episodes end early).
    cycle = max(duration, MIN_WELD_CYCLE)
    t_approach = float(rng.uniform(0.15, 0.25)) * cycle
    t_retract = float(rng.uniform(0.12, 0.20)) * cycle
    t_weld_end = cycle - t_retract
    halves = [(0.0, 0.5), (0.5, 1.0)]
    trajectories, polylines, headings = [], [], []
    for (s0, s1), (base_pos, _) in zip(halves, bases, strict=True):
        mid = world(np.array((s0 + s1) / 2))
        heading = math.atan2(mid[1] - base_pos[1], mid[0] - base_pos[0]) + float(rng.uniform(-0.3, 0.3))
        angles = np.array([heading, rng.uniform(-0.2, 0.2), rng.uniform(-0.1, 0.1)])
        start, end = world(np.array(s0)), world(np.array(s1))

        def offset_pose(p: np.ndarray, base_angles: np.ndarray = angles) -> Pose:
            lift = [rng.uniform(-0.03, 0.03), rng.uniform(-0.03, 0.03), rng.uniform(0.08, 0.15)]
            return Pose(p + np.array(lift), base_angles + rng.uniform(-0.15, 0.15, size=3))

        pre, post = offset_pose(start), offset_pose(end)

        def path(s: float, s0: float = s0, s1: float = s1) -> np.ndarray:
            return world(np.array(s0 + (s1 - s0) * s))

        segments = [
            Line(0.0, t_approach, pre, Pose(start, angles), phase["approach"]),
            Curve(t_approach, t_weld_end, path, angles, phase["weld"]),
            Line(t_weld_end, cycle, Pose(end, angles), post, phase["retract"]),
        ]

        def lateral(t: float, path: Callable[[float], np.ndarray] = path) -> np.ndarray:
            s = (t - t_approach) / max(t_weld_end - t_approach, 1e-9)
            tangent = path(min(s + 0.01, 1.0)) - path(max(s - 0.01, 0.0))
            side = np.array([-tangent[1], tangent[0], 0.0]) / max(float(np.linalg.norm(tangent[:2])), 1e-9)
            tilt = rng.uniform(0.0, 0.8)  # lateral with some upward component
            return math.cos(tilt) * rng.choice([-1.0, 1.0]) * side + math.sin(tilt) * _UP

        count = int(rng.choice([0, 1, 2], p=[0.35, 0.4, 0.25]))
        bumps = _deviation_bumps(rng, t_approach, t_weld_end, count, lateral)
        trajectories.append(Trajectory(segments, bumps))
        points = world(np.linspace(s0, s1, _SEAM_SAMPLES))
        seg = np.diff(points, axis=0)
        polylines.append((points[:-1], seg, np.maximum(np.sum(seg**2, axis=1), 1e-18)))
        headings.append(heading)

    def distance(r: int, _: float, tip: np.ndarray) -> float:
        return _polyline_distance(tip, *polylines[r])

    weld_time = max(t_weld_end - t_approach, 1e-9)
    attrs = {
        "payload_kg": payloads,
        "plate_pos": plate_pos.tolist(),
        "plate_yaw": plate_yaw,
        "seam_center_plate": center.tolist(),
        "seam_angle_plate": angle,
        "seam_length_m": length,
        "seam_curvature_per_m": curvature,
        "seam_start": world(np.array(0.0)).tolist(),
        "seam_end": world(np.array(1.0)).tolist(),
        "phase_times_s": [0.0, t_approach, t_weld_end, cycle],
        "weld_speed_mps": length / 2 / weld_time,
        "tool_heading": headings,
        "deviation_events": [len(tr.bumps) for tr in trajectories],
        "seam_distance_definition": "max over robots of the tool tip's distance to its own seam half",
    }
    return Plan(trajectories, distance, phase["weld"], attrs)


Planner = Callable[[mujoco.MjModel, np.random.Generator, float, list[tuple[np.ndarray, float]]], Plan]
"""``planner(model, rng, duration, bases) -> Plan``: randomize ``model`` (the episode's own copy:
workpiece pose, payload, ...) and plan every robot's trajectory over ``duration`` seconds;
``bases`` holds each robot's base position and yaw, in the order of ``SCENE_ROBOTS``."""

PLANNERS: dict[str, Planner] = {"arm": _plan_arm, "weld": _plan_weld}
"""Task planner of each scene."""


# --------------------------------------------------------------------------- simulation


def _check_arguments(scene: str, seed: int, steps: int, camera: CameraConfig) -> None:
    if not isinstance(scene, str):
        raise SpecError(f"scene must be a string, got {type(scene).__name__}")
    scenes.check_scene(scene)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise SpecError(f"seed must be an integer, got {seed!r}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise SpecError(f"steps must be an integer >= 1, got {steps!r}")
    if not isinstance(camera, CameraConfig):
        raise SpecError(f"camera must be a CameraConfig, got {type(camera).__name__}")
    for name in ("width", "height"):
        value = getattr(camera, name)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= 4096:
            raise SpecError(f"camera {name} must be an integer in [1, 4096], got {value!r}")


MAX_PLAN_ATTEMPTS = 20


def _targets(plan: Any, t: float) -> list[tuple[np.ndarray, np.ndarray]]:
    poses = [tr.commanded(t) for tr in plan.trajectories]
    return [(p.position, p.rotation()) for p in poses]


def _start_pose(ik: Any, bases: list[Any], plan: Any) -> list[np.ndarray] | None:
    """Joint angles at rest on the plan's first targets (elbow up), or None if IK cannot reach them."""
    q = []
    for (base_pos, base_yaw), tr in zip(bases, plan.trajectories, strict=True):
        first = tr.commanded(0.0).position - base_pos
        home = _HOME.copy()
        home[0] = math.remainder(math.atan2(first[1], first[0]) - base_yaw, 2.0 * math.pi)
        q.append(home)
    q = ik.solve(q, _targets(plan, 0.0), iterations=200)
    for (pos, _), (tip, _) in zip(_targets(plan, 0.0), ik.tip_pose(q), strict=True):
        if np.linalg.norm(pos - tip) > 1e-3:
            return None
    return q


def simulate_episode(scene: str, seed: int, steps: int, camera: CameraConfig = CameraConfig()) -> Episode:
    """Simulate ``steps`` recorded steps of ``scene`` ("arm" or "weld") with random draws from ``seed``.

    Returns an :class:`~mmguard.twin.interface.Episode` with modalities ``camera`` (T, 3, H, W)
    uint8, optional ``depth`` (T, 1, H, W) float32 metres, ``kinematics`` (T, D) float32 (for
    ``weld`` also ``kinematics_r0`` / ``kinematics_r1``), targets ``seam_distance`` (T,) float32
    metres, ``quality`` and ``phase`` (T,) int64 (for ``weld`` also per-robot
    ``seam_distance_r0`` / ``seam_distance_r1``). Raises :class:`SpecError` for an unknown scene,
    ``steps < 1`` or a bad camera, :class:`DataError` when no GL backend can render.
    """
    _check_arguments(scene, seed, steps, camera)
    seed, steps = int(seed), int(steps)
    model = scenes.load_model(scene)
    prefixes = scenes.SCENE_ROBOTS[scene]
    duration = (steps - 1) * FRAME_PERIOD

    data = mujoco.MjData(model)
    mujoco.mj_kinematics(model, data)
    bases = [_base_frame(model, data, p) for p in prefixes]

    # Plan, then start at rest on the first target, elbow up. A plan whose start pose inverse
    # kinematics cannot reach is redrawn from the episode's own seed stream (attempt k uses the
    # sub-stream (seed, scene, "episode", k); attempt 0 is the original stream, so reachable
    # episodes are unchanged). The attempt used is recorded as ``plan_attempt``.
    for attempt in range(MAX_PLAN_ATTEMPTS):
        labels = ("episode",) if attempt == 0 else ("episode", attempt)
        plan = PLANNERS[scene](model, np.random.default_rng(derive_seed(seed, scene, *labels)), duration, bases)
        mujoco.mj_setConst(model, data)
        robots = [RobotIndex.build(model, p) for p in prefixes]
        ik = DampedLeastSquaresIK(model, robots)
        servo = ComputedTorqueServo(model, robots)
        substeps = SUBSTEPS
        model.opt.timestep = FRAME_PERIOD / substeps
        q = _start_pose(ik, bases, plan)
        if q is not None:
            break
    else:
        raise DataError(f"{scene}: inverse kinematics cannot reach the start pose in {MAX_PLAN_ATTEMPTS} "
                        f"planning attempts (seed {seed})")

    def targets(t: float) -> list[tuple[np.ndarray, np.ndarray]]:
        return _targets(plan, t)

    q_ref = np.concatenate(q)
    data.qpos[servo.qpos] = q_ref
    data.qvel[:] = 0.0
    mujoco.mj_forward(model, data)
    servo.apply(data, q_ref, np.zeros_like(q_ref))
    mujoco.mj_forward(model, data)

    channels = [scenes.robot_channels(model, p) for p in prefixes]
    addresses = [np.array([c.address for c in chans]) for chans in channels]
    dims = [len(chans) for chans in channels]
    kin = np.empty((steps, sum(dims)), dtype=np.float32)
    rgb = np.empty((steps, 3, camera.height, camera.width), dtype=np.uint8)
    depth = np.empty((steps, 1, camera.height, camera.width), dtype=np.float32) if camera.depth else None
    dist = np.empty((steps, len(prefixes)), dtype=np.float64)
    phase = np.empty(steps, dtype=np.int64)
    tcp_adr = [
        next(ch.address for ch in chans if ch.name == f"{p}/tcp/position/x")
        for chans, p in zip(channels, prefixes, strict=True)
    ]
    all_adr = np.concatenate(addresses)

    renderer = scenes.OffscreenRenderer(model, camera.width, camera.height, depth=camera.depth)
    try:
        for k in range(steps):
            t = k * FRAME_PERIOD
            if k > 0:
                q_next = np.concatenate(ik.solve(q, targets(t), iterations=IK_ITERATIONS))
                velocity = (q_next - q_ref) / FRAME_PERIOD
                for j in range(1, substeps + 1):
                    mujoco.mj_step1(model, data)
                    servo.apply(data, q_ref + (j / substeps) * (q_next - q_ref), velocity)
                    mujoco.mj_step2(model, data)
                mujoco.mj_forward(model, data)  # observe exactly at t
                q_ref = q_next
                q = np.split(q_ref, len(prefixes))
            kin[k] = data.sensordata[all_adr]
            for r, adr in enumerate(tcp_adr):
                dist[k, r] = plan.distance(r, t, data.sensordata[adr : adr + 3])
            phase[k] = plan.trajectories[0].phase(t)
            image, zmap = renderer.render(data)
            rgb[k] = image.transpose(2, 0, 1)
            if depth is not None:
                depth[k, 0] = zmap
    finally:
        renderer.close()

    if not np.all(np.isfinite(kin)):
        raise DataError(f"{scene}: the simulation diverged (seed {seed})")
    seam_distance = dist.max(axis=1).astype(np.float32)
    beyond = seam_distance > TOLERANCE
    if plan.weld_phase is not None:
        beyond &= phase == plan.weld_phase
    modalities: dict[str, np.ndarray] = {"camera": rgb}
    if depth is not None:
        modalities["depth"] = depth
    modalities["kinematics"] = kin
    names = [c.name for chans in channels for c in chans]
    units = [c.unit for chans in channels for c in chans]
    channel_map = {"kinematics": names}
    unit_map = {"kinematics": units}
    target_map = {"seam_distance": seam_distance, "quality": beyond.astype(np.int64), "phase": phase}
    if len(prefixes) > 1:
        start = 0
        for r, (prefix, dim) in enumerate(zip(prefixes, dims, strict=True)):
            key = f"kinematics_{prefix}"
            modalities[key] = kin[:, start : start + dim].copy()
            channel_map[key] = names[start : start + dim]
            unit_map[key] = units[start : start + dim]
            target_map[f"seam_distance_{prefix}"] = dist[:, r].astype(np.float32)
            start += dim

    cam_id = scenes.name_id(model, mujoco.mjtObj.mjOBJ_CAMERA, scenes.CAMERA_NAME)
    attrs: dict[str, object] = {
        "scene": scene,
        "mjcf_sha256": scenes.mjcf_hash(scene),
        "generator_version": GENERATOR_VERSION,
        "mujoco_version": mujoco.__version__,
        "seed": seed,
        "steps": steps,
        "robots": list(prefixes),
        "camera_name": scenes.CAMERA_NAME,
        "camera_width": int(camera.width),
        "camera_height": int(camera.height),
        "camera_depth": bool(camera.depth),
        "camera_fovy_deg": float(model.cam_fovy[cam_id]),
        "camera_pos": model.cam_pos[cam_id].tolist(),
        "gl_backend": scenes.select_gl_backend(),
        "timestep": float(model.opt.timestep),
        "substeps": substeps,
        "control_period": FRAME_PERIOD,
        "ik_iterations": IK_ITERATIONS,
        "tolerance_m": TOLERANCE,
        "quality_definition": "seam_distance > tolerance_m"
        + (" during the weld phase" if plan.weld_phase is not None else ""),
    }
    attrs.update(plan.attrs)
    attrs["plan_attempt"] = attempt
    return Episode(
        modalities=modalities,
        targets=target_map,
        channels=channel_map,
        units=unit_map,
        phase_names=list(PHASE_NAMES[scene]),
        attrs=attrs,
    )
