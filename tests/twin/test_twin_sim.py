"""The twin simulator: contract, determinism, joint limits, weld tracking, camera, errors."""

from __future__ import annotations

import hashlib
import math

import mujoco
import numpy as np
import pytest

from mmguard.errors import DataError, SpecError
from mmguard.twin import scene as scenes
from mmguard.twin.control import (
    DampedLeastSquaresIK,
    RobotIndex,
    min_jerk,
    smooth_ramp,
    tool_rotation,
)
from mmguard.twin.episode import PHASE_NAMES, TOLERANCE, simulate_episode
from mmguard.twin.interface import CameraConfig


@pytest.fixture(scope="module")
def gl() -> str:
    """The GL backend. `make test` installs libegl1/libgl1/libosmesa6, so a machine without one
    is a broken set-up: the rendering tests fail with the one-line install hint, never skip."""
    try:
        return scenes.select_gl_backend()
    except DataError as err:
        pytest.fail(f"no offscreen GL backend: {err}")


@pytest.fixture(scope="module")
def arm_episode(gl: str):
    return simulate_episode("arm", 3, 40)


@pytest.fixture(scope="module")
def weld_episode(gl: str):
    return simulate_episode("weld", 3, 40)


def _digest(episode) -> str:
    h = hashlib.sha256()
    for group in (episode.modalities, episode.targets):
        for name in sorted(group):
            arr = np.ascontiguousarray(group[name])
            h.update(name.encode() + str(arr.dtype).encode() + str(arr.shape).encode() + arr.tobytes())
    return h.hexdigest()


def _column(episode, name: str) -> np.ndarray:
    return episode.modalities["kinematics"][:, episode.channels["kinematics"].index(name)]


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scene": "nope"}, "unknown twin scene 'nope'"),
        ({"steps": 0}, "steps must be an integer >= 1"),
        ({"steps": -3}, "steps must be an integer >= 1"),
        ({"steps": 2.5}, "steps must be an integer >= 1"),
        ({"steps": True}, "steps must be an integer >= 1"),
        ({"seed": "1"}, "seed must be an integer"),
        ({"camera": CameraConfig(width=0)}, "camera width"),
        ({"camera": (64, 64)}, "camera must be a CameraConfig"),
    ],
)
def test_bad_arguments_raise_one_line_spec_error(kwargs: dict, match: str) -> None:
    args = {"scene": "arm", "seed": 0, "steps": 5, **kwargs}
    with pytest.raises(SpecError, match=match) as info:
        simulate_episode(args.pop("scene"), **args)
    assert "\n" not in str(info.value)


def test_invalid_mujoco_gl_is_a_data_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUJOCO_GL", "vulkan")
    with pytest.raises(DataError, match="MUJOCO_GL='vulkan'"):
        scenes.select_gl_backend()


def test_no_gl_backend_names_the_debian_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.setattr(scenes, "_probe_backend", lambda backend: False)
    with pytest.raises(DataError, match="libegl1 libgl1 libosmesa6") as info:
        scenes.select_gl_backend()
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- scenes and control


def test_scenes_load_with_hash_and_documented_channels() -> None:
    for name in scenes.SCENES:
        files = scenes.scene_files(name)
        assert set(files) == {f"{name}.xml", "robot.xml"}
        digest = scenes.mjcf_hash(name)
        assert len(digest) == 64 and digest == scenes.mjcf_hash(name)
        model = scenes.load_model(name)
        assert model.nu == model.njnt == 6 * len(scenes.SCENE_ROBOTS[name])
        assert np.all(model.jnt_limited == 1) and np.all(model.jnt_range[:, 0] < model.jnt_range[:, 1])
        assert np.all(model.actuator_ctrllimited == 1)
        assert model.vis.quality.shadowsize == 0
        for prefix in scenes.SCENE_ROBOTS[name]:
            channels = scenes.robot_channels(model, prefix)
            assert len(channels) == 31
            assert channels[0].name == f"{prefix}/joint1/position" and channels[0].unit == "rad"
            assert channels[6].unit == "rad/s" and channels[12].unit == "N·m"
            assert [c.name for c in channels[18:21]] == [f"{prefix}/tcp/position/{a}" for a in "xyz"]
            assert channels[-1].name == f"{prefix}/tool/contact_force" and channels[-1].unit == "N"
    assert scenes.mjcf_hash("arm") != scenes.mjcf_hash("weld")


def test_time_laws_and_tool_rotation() -> None:
    for law in (min_jerk, lambda s: smooth_ramp(s, 0.2)):
        values = [law(s) for s in np.linspace(0.0, 1.0, 101)]
        assert values[0] == pytest.approx(0.0, abs=1e-12) and values[-1] == pytest.approx(1.0)
        assert np.all(np.diff(values) >= -1e-12)
    rot = tool_rotation(0.4, 0.2, -0.1)
    np.testing.assert_allclose(rot.T @ rot, np.eye(3), atol=1e-12)
    assert np.linalg.det(rot) == pytest.approx(1.0)
    np.testing.assert_allclose(tool_rotation(0.0)[:, 2], [0.0, 0.0, -1.0])


def test_ik_reaches_a_target_within_joint_limits() -> None:
    model = scenes.load_model("arm")
    robot = RobotIndex.build(model, "r0")
    ik = DampedLeastSquaresIK(model, [robot])
    target = (np.array([0.5, 0.1, 0.45]), tool_rotation(0.3, 0.1, 0.0))
    (q,) = ik.solve([np.array([0.2, 0.2, 0.6, 0.0, 0.77, 0.0])], [target], iterations=200)
    ((pos, rot),) = ik.tip_pose([q])
    assert np.linalg.norm(pos - target[0]) < 1e-4
    np.testing.assert_allclose(rot, target[1], atol=1e-3)
    assert np.all(q > robot.lower) and np.all(q < robot.upper)


# --------------------------------------------------------------------------- episodes


@pytest.mark.parametrize("scene", ["arm", "weld"])
def test_episode_matches_the_contract(scene: str, request: pytest.FixtureRequest) -> None:
    ep = request.getfixturevalue(f"{scene}_episode")
    steps, robots = 40, scenes.SCENE_ROBOTS[scene]
    assert ep.steps == steps
    expected = {"camera", "kinematics"} | ({f"kinematics_{r}" for r in robots} if len(robots) > 1 else set())
    assert set(ep.modalities) == expected
    assert ep.modalities["camera"].dtype == np.uint8 and ep.modalities["camera"].shape == (steps, 3, 64, 64)
    kin = ep.modalities["kinematics"]
    assert kin.dtype == np.float32 and kin.shape == (steps, 31 * len(robots)) and np.all(np.isfinite(kin))
    for name, arr in ep.modalities.items():
        if arr.ndim == 2:
            assert len(ep.channels[name]) == len(ep.units[name]) == arr.shape[1]
            assert len(set(ep.channels[name])) == arr.shape[1]
    if len(robots) > 1:
        np.testing.assert_array_equal(np.hstack([ep.modalities[f"kinematics_{r}"] for r in robots]), kin)
        assert ep.channels["kinematics_r1"][0] == "r1/joint1/position"
    assert ep.targets["seam_distance"].dtype == np.float32 and ep.targets["seam_distance"].shape == (steps,)
    assert ep.targets["quality"].dtype == np.int64 and ep.targets["phase"].dtype == np.int64
    assert ep.phase_names == PHASE_NAMES[scene]
    assert set(np.unique(ep.targets["phase"])) <= set(range(len(ep.phase_names)))
    assert ep.attrs["scene"] == scene and ep.attrs["mjcf_sha256"] == scenes.mjcf_hash(scene)
    assert ep.attrs["tolerance_m"] == TOLERANCE and ep.attrs["camera_width"] == 64
    for key in ("generator_version", "seed", "timestep", "control_period", "payload_kg"):
        assert key in ep.attrs


def test_same_seed_same_arrays_other_seed_differs(arm_episode, gl: str) -> None:
    again = simulate_episode("arm", 3, 40)
    assert _digest(again) == _digest(arm_episode)
    assert _digest(simulate_episode("arm", 4, 40)) != _digest(arm_episode)
    weld = _digest(simulate_episode("weld", 11, 8))
    assert weld == _digest(simulate_episode("weld", 11, 8))


def test_depth_and_camera_size(gl: str) -> None:
    ep = simulate_episode("weld", 1, 3, CameraConfig(width=40, height=24, depth=True))
    assert ep.modalities["camera"].shape == (3, 3, 24, 40)
    depth = ep.modalities["depth"]
    assert depth.dtype == np.float32 and depth.shape == (3, 1, 24, 40)
    far = 3.0 * 2.0  # zfar × extent of the scene: background pixels read the far plane
    assert np.all(np.isfinite(depth)) and 0.5 < depth.min() and depth.max() <= far + 1e-3
    assert np.mean(depth < far - 0.01) > 0.5  # most pixels see the workcell


@pytest.mark.parametrize("scene", ["arm", "weld"])
def test_joint_limits_respected(scene: str, request: pytest.FixtureRequest) -> None:
    model = scenes.load_model(scene)
    episodes = [request.getfixturevalue(f"{scene}_episode"), simulate_episode(scene, 8, 30)]
    for ep in episodes:
        for prefix in scenes.SCENE_ROBOTS[scene]:
            for j in range(1, 7):
                lo, hi = model.jnt_range[model.joint(f"{prefix}/joint{j}").id]
                q = _column(ep, f"{prefix}/joint{j}/position")
                assert np.all(q >= lo - 1e-4) and np.all(q <= hi + 1e-4), (prefix, j)


def test_weld_tool_tips_track_the_seam(weld_episode, gl: str) -> None:
    weld = PHASE_NAMES["weld"].index("weld")
    fractions = []
    for ep in [weld_episode] + [simulate_episode("weld", seed, 30) for seed in range(4)]:
        phase, dist = ep.targets["phase"], ep.targets["seam_distance"]
        per_robot = np.maximum(ep.targets["seam_distance_r0"], ep.targets["seam_distance_r1"])
        np.testing.assert_array_equal(dist, per_robot)
        expected_quality = ((phase == weld) & (dist > TOLERANCE)).astype(np.int64)
        np.testing.assert_array_equal(ep.targets["quality"], expected_quality)
        assert np.any(phase == weld)
        within = float(np.mean(dist[phase == weld] <= TOLERANCE))
        fractions.append(within)
        if ep.attrs["deviation_events"] == [0, 0]:  # no planned deviation: pure tracking accuracy
            assert within == 1.0
        # Approach starts 8-15 cm above the seam.
        assert dist[0] > 0.05
    assert min(fractions) >= 0.6 and np.mean(fractions) >= 0.8, fractions


def test_arm_follows_its_planned_path(arm_episode, gl: str) -> None:
    dist = arm_episode.targets["seam_distance"]
    assert np.median(dist) < 0.002 and np.mean(dist <= TOLERANCE) >= 0.8
    np.testing.assert_array_equal(arm_episode.targets["quality"], (dist > TOLERANCE).astype(np.int64))


def _robot_mask(frames: np.ndarray) -> np.ndarray:
    """Pixels of the robot's orange paint (N, H, W) bool."""
    r, g, b = (frames[:, c].astype(int) for c in range(3))
    return (r > 140) & (r - b > 90) & (g > 50) & (g < r - 40)


@pytest.mark.parametrize("scene", ["arm", "weld"])
def test_camera_sees_the_robot_move(scene: str, request: pytest.FixtureRequest) -> None:
    ep = request.getfixturevalue(f"{scene}_episode")
    frames = ep.modalities["camera"]
    mask = _robot_mask(frames)
    assert mask.mean(axis=(1, 2)).min() > 0.03  # robot pixels in every frame
    changed = np.abs(frames[-1].astype(int) - frames[0].astype(int)).max(axis=0) > 30
    assert changed.mean() > 0.01  # the picture changes over the episode
    assert (changed & (mask[0] | mask[-1])).sum() >= 0.5 * changed.sum()  # ... where the robot is

    # Replay the last recorded joint positions: hiding the robot's geom group removes the orange.
    model = scenes.load_model(scene)
    data = mujoco.MjData(model)
    for prefix in scenes.SCENE_ROBOTS[scene]:
        for j in range(1, 7):
            adr = model.jnt_qposadr[model.joint(f"{prefix}/joint{j}").id]
            data.qpos[adr] = _column(ep, f"{prefix}/joint{j}/position")[-1]
    mujoco.mj_forward(model, data)
    images = []
    for hidden in ((), (scenes.ROBOT_GEOM_GROUP,)):
        with scenes.OffscreenRenderer(model, 64, 64, hidden_groups=hidden) as renderer:
            images.append(renderer.render(data)[0].transpose(2, 0, 1)[None])
    shown, hidden_robot = _robot_mask(images[0])[0], _robot_mask(images[1])[0]
    assert shown.mean() > 0.03 and hidden_robot.sum() == 0
    assert (shown == mask[-1]).mean() > 0.97  # the recorded frame shows the robot at the same place
    assert not math.isnan(float(images[0].mean()))


# Episode seed 7 of `mmguard twin generate --scene arm --seed 7` (derive_seed(7, "twin", 7)): its first
# plan puts the start pose out of the arm's reach; before the fix the whole run aborted on it.
UNREACHABLE_FIRST_PLAN_SEED = 1030236764942613221


def test_unreachable_start_pose_is_redrawn_deterministically(gl: str) -> None:
    from mmguard.seeding import derive_seed

    assert derive_seed(7, "twin", 7) == UNREACHABLE_FIRST_PLAN_SEED
    a = simulate_episode("arm", UNREACHABLE_FIRST_PLAN_SEED, steps=3)
    b = simulate_episode("arm", UNREACHABLE_FIRST_PLAN_SEED, steps=3)
    assert a.attrs["plan_attempt"] >= 1  # the first plan was refused and redrawn ...
    for name in a.modalities:  # ... from the episode's own seed stream: the same numbers every time
        assert np.array_equal(a.modalities[name], b.modalities[name])


def test_sweep_of_episode_seeds_never_aborts_and_keeps_reachable_plans(gl: str) -> None:
    """The 8 episodes of `twin generate --seed 7` (the run that used to abort) all simulate; the ones
    whose first plan was reachable keep it (attempt 0), so earlier data sets are unchanged."""
    from mmguard.seeding import derive_seed

    attempts = [simulate_episode("arm", derive_seed(7, "twin", e), steps=2).attrs["plan_attempt"] for e in range(8)]
    assert attempts[7] >= 1 and attempts[:7] == [0] * 7
