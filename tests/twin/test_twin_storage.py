"""Twin dataset generation, storage and loading (issue #4), mostly against a fake simulator.

The fake obeys the contract of :mod:`mmguard.twin.interface` (shapes, dtypes, channel names,
attributes) and is a pure function of its arguments, like the real one. It is a top-level
function so spawned worker processes can import it. Environment variables steer it across
processes: ``TWIN_FAKE_LOG`` (a file each call appends its seed to) and
``TWIN_FAKE_CRASH_SEED`` (a seed for which it raises, to simulate a crash mid-generation).
Workers import this module to find the fake, so it imports torch only inside tests.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from mmguard.errors import DataError, MMGuardError, SpecError
from mmguard.twin.interface import CameraConfig, Episode
from mmguard.twin.storage import episode_seed, generate, parts_dir

PHASES = ["approach", "process", "retract"]
TOLERANCE = 0.002


def fake_simulate(scene: str, seed: int, steps: int, camera: CameraConfig) -> Episode:
    """A deterministic stand-in for ``mmguard.twin.episode.simulate_episode``."""
    log = os.environ.get("TWIN_FAKE_LOG")
    if log:
        with open(log, "a") as fh:
            fh.write(f"{seed}\n")
    if os.environ.get("TWIN_FAKE_CRASH_SEED") == str(seed):
        raise DataError(f"simulated crash at seed {seed}")
    rng = np.random.default_rng(seed)
    t = np.arange(steps)
    frames = rng.integers(0, 256, size=(steps, 3, camera.height, camera.width), dtype=np.uint8)
    joints = np.cumsum(rng.normal(0, 0.05, size=(steps, 7)), axis=0).astype(np.float32)
    joints[:, 6] = 0.0  # a constant channel (e.g. a locked joint)
    modalities = {"camera": frames, "kinematics": joints}
    channels = {"kinematics": [f"q{i}" for i in range(7)]}
    units = {"kinematics": ["rad"] * 6 + ["N·m"]}
    if camera.depth:
        modalities["depth"] = rng.uniform(0.3, 2.0, size=(steps, 1, camera.height, camera.width)).astype(
            np.float32)
    if scene == "weld":
        other = np.cumsum(rng.normal(0, 0.05, size=(steps, 7)), axis=0).astype(np.float32)
        modalities["kinematics_r0"] = joints
        modalities["kinematics_r1"] = other
        modalities["kinematics"] = np.concatenate([joints, other], axis=1)
        channels = {"kinematics": [f"r{r}_q{i}" for r in range(2) for i in range(7)],
                    "kinematics_r0": [f"q{i}" for i in range(7)],
                    "kinematics_r1": [f"q{i}" for i in range(7)]}
        units = {k: ["rad"] * (len(v) - 1) + ["N·m"] for k, v in channels.items()}
    seam = np.abs(np.cumsum(rng.normal(0, 0.001, size=steps))).astype(np.float32)
    return Episode(
        modalities=modalities,
        targets={"seam_distance": seam, "quality": (seam > TOLERANCE).astype(np.int64),
                 "phase": (t * len(PHASES) // steps).astype(np.int64)},
        channels=channels, units=units, phase_names=list(PHASES),
        attrs={"scene": scene, "mjcf_sha256": os.environ.get("TWIN_FAKE_MJCF", "ab" * 32),
               "generator_version": "fake-1", "seed": seed,
               "camera_width": camera.width, "camera_height": camera.height, "tolerance": TOLERANCE,
               "timestep": 0.002, "control_period": 0.02},
    )


def bad_shape_simulate(scene: str, seed: int, steps: int, camera: CameraConfig) -> Episode:
    ep = fake_simulate(scene, seed, steps, camera)
    ep.modalities["camera"] = ep.modalities["camera"][:, :1]
    return ep


def checksums(path: Path) -> dict[str, str]:
    """SHA-256 of every dataset's bytes plus every attribute, by HDF5 path."""
    sums: dict[str, str] = {}

    def visit(name: str, obj) -> None:
        if isinstance(obj, h5py.Dataset):
            x = obj[()]
            data = repr(x.tolist()).encode() if x.dtype.kind == "O" else np.ascontiguousarray(x).tobytes()
            sums[name] = hashlib.sha256(data).hexdigest() + str(obj.dtype)
        for k, v in obj.attrs.items():
            sums[f"{name}@{k}"] = repr(v.tolist() if isinstance(v, np.ndarray) else v)

    with h5py.File(path, "r") as f:
        for k, v in f.attrs.items():
            sums[f"@{k}"] = repr(v.tolist() if isinstance(v, np.ndarray) else v)
        f.visititems(visit)
    return sums


@pytest.fixture(scope="module")
def arm_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("twin") / "arm.h5"
    return generate("arm", 5, 8, out, seed=3, camera=CameraConfig(16, 12), simulate=fake_simulate)


# ------------------------------------------------------------------------------------ layout
def test_file_layout_and_attributes(arm_file: Path) -> None:
    with h5py.File(arm_file, "r") as f:
        assert list(f) == ["camera", "kinematics", "targets", "episodes", "meta"]
        assert list(f["episodes/seed"][()]) == [episode_seed(3, e) for e in range(5)]
        assert json.loads(f["episodes/attrs_json"][2])["seed"] == episode_seed(3, 2)
        cam, kin = f["camera"], f["kinematics"]
        assert cam.shape == (40, 3, 12, 16) and cam.dtype == np.uint8
        assert kin.shape == (40, 7) and kin.dtype == np.float32
        assert cam.compression == "gzip" and cam.chunks is not None and kin.chunks is not None
        assert cam.attrs["kind"] == "image" and kin.attrs["kind"] == "vector"
        assert list(kin.attrs["channels"]) == [f"q{i}" for i in range(7)]
        assert list(kin.attrs["units"]) == ["rad"] * 6 + ["N·m"]
        assert set(f["targets"]) == {"seam_distance", "quality", "phase"}
        assert list(f["targets/phase"].attrs["names"]) == PHASES
        np.testing.assert_array_equal(f["meta/episode"][()], np.repeat(np.arange(5), 8))
        np.testing.assert_array_equal(f["meta/t"][()], np.tile(np.arange(8), 5))
        a = f.attrs
        assert a["format"] == "mmguard-twin" and a["scene"] == "arm" and a["seed"] == 3
        assert (a["episodes"], a["steps"], a["camera_width"], a["camera_height"]) == (5, 8, 16, 12)
        assert not a["camera_depth"] and a["generator_version"] == "fake-1" and a["mjcf_sha256"] == "ab" * 32
        assert list(a["episode_seeds"]) == [episode_seed(3, e) for e in range(5)]
        assert list(a["phase_names"]) == PHASES and a["tolerance"] == TOLERANCE
        assert "seed" not in json.loads(a["sim_attrs_json"])  # varies per episode: only in episode_seeds
        # episode 2's rows are exactly what the simulator returns for episode 2's seed
        ep = fake_simulate("arm", episode_seed(3, 2), 8, CameraConfig(16, 12))
        np.testing.assert_array_equal(cam[16:24], ep.modalities["camera"])
        np.testing.assert_array_equal(f["targets/seam_distance"][16:24], ep.targets["seam_distance"])
    assert not parts_dir(arm_file).exists()


def test_weld_and_depth(tmp_path: Path) -> None:
    import torch

    from mmguard.twin.dataset import load_twin

    out = generate("weld", 3, 5, tmp_path / "w.h5", camera=CameraConfig(8, 8, depth=True),
                   simulate=fake_simulate)
    batch = load_twin(out, target="phase")
    # by default the per-robot copies stay out: kinematics already holds both robots' sensors
    assert batch.names == ("camera", "kinematics", "depth")
    assert batch.spec("depth").shape == (1, 8, 8) and batch.spec("kinematics").shape == (14,)
    assert batch.target.dtype == torch.int64
    robots = load_twin(out, target="phase", modalities=["camera", "kinematics_r0", "kinematics_r1"])
    assert robots.names == ("camera", "kinematics_r0", "kinematics_r1")
    assert robots.spec("kinematics_r1").channels[0] == "q0"
    assert robots.spec("kinematics_r0").shape[0] + robots.spec("kinematics_r1").shape[0] == 14


# ------------------------------------------------------------------------------------ determinism
def test_same_seed_identical_for_any_worker_count(tmp_path: Path, arm_file: Path) -> None:
    two = generate("arm", 5, 8, tmp_path / "two.h5", seed=3, workers=2, camera=CameraConfig(16, 12),
                   simulate=fake_simulate)
    assert checksums(two) == checksums(arm_file)
    assert two.read_bytes() == arm_file.read_bytes()  # the whole file, byte for byte
    other = generate("arm", 5, 8, tmp_path / "other.h5", seed=4, camera=CameraConfig(16, 12),
                     simulate=fake_simulate)
    assert checksums(other)["camera"] != checksums(arm_file)["camera"]


# ------------------------------------------------------------------------------------ robustness
def _logged(log: Path) -> list[int]:
    return [int(s) for s in log.read_text().split()] if log.exists() else []


@pytest.mark.parametrize("workers", [1, 2])
def test_crash_leaves_no_output_and_resume_skips_finished(
    tmp_path: Path, arm_file: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    out, log = tmp_path / "arm.h5", tmp_path / "calls.log"
    seeds = [episode_seed(3, e) for e in range(5)]
    monkeypatch.setenv("TWIN_FAKE_LOG", str(log))
    monkeypatch.setenv("TWIN_FAKE_CRASH_SEED", str(seeds[3]))
    with pytest.raises(DataError, match="simulated crash"):
        generate("arm", 5, 8, out, seed=3, workers=workers, camera=CameraConfig(16, 12),
                 simulate=fake_simulate)
    assert not out.exists() and not list(tmp_path.glob(".arm.h5*"))  # no half-written output
    parts = parts_dir(out)
    done = sorted(int(p.stem.split("_")[1]) for p in parts.glob("episode_*.h5"))
    assert 3 not in done and (workers > 1 or done == [0, 1, 2])
    assert not list(parts.glob(".*.tmp"))

    log.unlink()
    monkeypatch.delenv("TWIN_FAKE_CRASH_SEED")
    seen: list[tuple[int, int]] = []
    generate("arm", 5, 8, out, seed=3, workers=workers, camera=CameraConfig(16, 12), simulate=fake_simulate,
             progress=lambda d, t: seen.append((d, t)))
    assert sorted(_logged(log)) == sorted(seeds[e] for e in range(5) if e not in done)
    assert seen[0] == (len(done), 5) and seen[-1] == (5, 5)
    assert checksums(out) == checksums(arm_file)
    assert not parts.exists()


def test_corrupt_shard_is_simulated_again(tmp_path: Path, arm_file: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "arm.h5"
    monkeypatch.setenv("TWIN_FAKE_CRASH_SEED", str(episode_seed(3, 4)))
    with pytest.raises(DataError):
        generate("arm", 5, 8, out, seed=3, camera=CameraConfig(16, 12), simulate=fake_simulate)
    (parts_dir(out) / "episode_00001.h5").write_bytes(b"not hdf5")  # e.g. a disk error
    monkeypatch.delenv("TWIN_FAKE_CRASH_SEED")
    monkeypatch.setenv("TWIN_FAKE_LOG", str(tmp_path / "calls.log"))
    generate("arm", 5, 8, out, seed=3, camera=CameraConfig(16, 12), simulate=fake_simulate)
    assert sorted(_logged(tmp_path / "calls.log")) == sorted([episode_seed(3, 1), episode_seed(3, 4)])
    assert checksums(out) == checksums(arm_file)


def test_resume_never_mixes_scene_versions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "arm.h5"
    monkeypatch.setenv("TWIN_FAKE_CRASH_SEED", str(episode_seed(0, 1)))
    with pytest.raises(DataError):
        generate("arm", 3, 4, out, camera=CameraConfig(8, 8), simulate=fake_simulate)
    monkeypatch.delenv("TWIN_FAKE_CRASH_SEED")
    monkeypatch.setenv("TWIN_FAKE_MJCF", "cd" * 32)  # the scene file changed between the two runs
    with pytest.raises(DataError, match="episode 1 was simulated with mjcf_sha256 'cdcd.*--force"):
        generate("arm", 3, 4, out, camera=CameraConfig(8, 8), simulate=fake_simulate)
    assert not out.exists()
    generate("arm", 3, 4, out, camera=CameraConfig(8, 8), simulate=fake_simulate, force=True)
    with h5py.File(out, "r") as f:
        assert f.attrs["mjcf_sha256"] == "cd" * 32


def test_resume_with_other_arguments_is_refused_unless_forced(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "arm.h5"
    monkeypatch.setenv("TWIN_FAKE_CRASH_SEED", str(episode_seed(0, 1)))
    with pytest.raises(DataError):
        generate("arm", 3, 4, out, seed=0, camera=CameraConfig(8, 8), simulate=fake_simulate)
    monkeypatch.delenv("TWIN_FAKE_CRASH_SEED")
    with pytest.raises(SpecError, match=r"seed 0 \(now 1\).*--force"):
        generate("arm", 3, 4, out, seed=1, camera=CameraConfig(8, 8), simulate=fake_simulate)
    assert not out.exists()
    generate("arm", 3, 4, out, seed=1, camera=CameraConfig(8, 8), simulate=fake_simulate, force=True)
    with h5py.File(out, "r") as f:
        assert f.attrs["seed"] == 1
    # a finished file is simply regenerated (atomically replaced) by a new run
    generate("arm", 2, 4, out, seed=1, camera=CameraConfig(8, 8), simulate=fake_simulate)
    with h5py.File(out, "r") as f:
        assert f.attrs["episodes"] == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"episodes": 0}, SpecError, "episodes must be a positive integer"),
        ({"steps": -1}, SpecError, "steps must be a positive integer"),
        ({"workers": 0}, SpecError, "workers must be a positive integer"),
        ({"scene": "kitchen"}, SpecError, "unknown scene 'kitchen'"),
        ({"camera": CameraConfig(0, 8)}, SpecError, "camera width"),
        ({"out": "x.npz"}, SpecError, "must end in .h5"),
        ({"out": "adir.h5"}, SpecError, "is a directory"),
        ({"out": "afile/x.h5"}, DataError, "cannot write next to"),
        ({"simulate": bad_shape_simulate}, DataError, r"camera must be uint8 \(4, 3, 8, 8\)"),
    ],
)
def test_bad_arguments_are_one_line_errors(tmp_path: Path, kwargs: dict, error: type, message: str) -> None:
    (tmp_path / "adir.h5").mkdir()
    (tmp_path / "afile").write_text("a file, not a folder")
    args = {"scene": "arm", "episodes": 2, "steps": 4, "out": "ok.h5", "camera": CameraConfig(8, 8),
            "simulate": fake_simulate, **kwargs}
    args["out"] = tmp_path / args["out"]
    with pytest.raises(error, match=message) as info:
        generate(**args)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "ok.h5").exists()


def test_missing_simulator_module_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from mmguard.twin import storage

    monkeypatch.setitem(sys.modules, "mmguard.twin.episode", None)  # import fails as if absent
    with pytest.raises(MMGuardError, match="simulator"):
        storage.default_simulator()


# ------------------------------------------------------------------------------------ loading
def test_loader_round_trip(arm_file: Path) -> None:
    import torch

    from mmguard.twin.dataset import load_twin

    batch = load_twin(arm_file)
    assert len(batch) == 40 and batch.names == ("camera", "kinematics")
    cam, kin = batch.spec("camera"), batch.spec("kinematics")
    assert (cam.kind.value, cam.shape) == ("image", (3, 12, 16))
    assert (kin.kind.value, kin.shape) == ("vector", (7,))
    assert kin.channels == tuple(f"q{i}" for i in range(7)) and kin.units == ("rad",) * 6 + ("N·m",)
    x = batch.modalities["camera"]
    assert x.dtype == torch.float32 and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    with h5py.File(arm_file, "r") as f:
        raw_cam, raw_q = f["camera"][()], f["targets/quality"][()]
        raw_seam = f["targets/seam_distance"][()]
    assert torch.equal(x, torch.from_numpy(raw_cam).float() / 255)
    assert batch.target.dtype == torch.int64 and torch.equal(batch.target, torch.from_numpy(raw_q))
    assert torch.equal(batch.meta["episode"], torch.arange(5).repeat_interleave(8))
    assert torch.equal(batch.meta["t"], torch.arange(8).repeat(5))

    reg = load_twin(arm_file, target="seam_distance", modalities=["kinematics"], episodes=[3, 1])
    assert reg.names == ("kinematics",) and len(reg) == 16
    assert reg.target.dtype == torch.float32
    assert torch.equal(reg.meta["episode"], torch.tensor([1] * 8 + [3] * 8))
    assert torch.equal(reg.target, torch.from_numpy(np.concatenate([raw_seam[8:16], raw_seam[24:32]])))
    assert load_twin(arm_file, target=None).target is None


def test_split_by_episode_does_not_leak(arm_file: Path) -> None:
    from mmguard.data.splits import split_by_group
    from mmguard.twin.dataset import load_twin

    splits = split_by_group(load_twin(arm_file), "episode", seed=0)
    groups = [set(s.meta["episode"].tolist()) for s in (splits.train, splits.val, splits.test)]
    assert all(groups) and not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    assert sum(len(s) for s in (splits.train, splits.val, splits.test)) == 40
    for s in (splits.train, splits.val, splits.test):  # whole episodes, time order kept
        for e in set(s.meta["episode"].tolist()):
            assert s.meta["t"][s.meta["episode"] == e].tolist() == list(range(8))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target": "speed"}, "unknown target 'speed'"),
        ({"modalities": ["lidar"]}, "unknown modality 'lidar'"),
        ({"episodes": [5]}, "episode 5 out of range"),
        ({"episodes": []}, "selection is empty"),
    ],
)
def test_loader_bad_selection(arm_file: Path, kwargs: dict, message: str) -> None:
    from mmguard.twin.dataset import load_twin

    with pytest.raises(MMGuardError, match=message):
        load_twin(arm_file, **kwargs)


def test_loader_bad_files(tmp_path: Path) -> None:
    from mmguard.twin.dataset import load_twin, twin_info

    (tmp_path / "junk.h5").write_bytes(b"\x00" * 64)
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["x"] = np.zeros((4, 2))
    for name, message in (("none.h5", "not found"), ("junk.h5", "cannot read HDF5"),
                          ("plain.h5", "not a twin dataset")):
        for fn in (load_twin, twin_info):
            with pytest.raises(DataError, match=message):
                fn(tmp_path / name)


def test_registry_loads_twin_files(arm_file: Path) -> None:
    import torch

    from mmguard.data.registry import dataset_info, load_dataset

    batch = load_dataset(f"twin:{arm_file}?target=seam_distance&episodes=0-1,4&modalities=kinematics")
    assert batch.names == ("kinematics",) and len(batch) == 24 and batch.target.dtype == torch.float32
    assert sorted(set(batch.meta["episode"].tolist())) == [0, 1, 4]
    plain = load_dataset(str(arm_file))  # a bare .h5 path that is a twin file
    assert plain.names == ("camera", "kinematics") and plain.spec("kinematics").units[-1] == "N·m"
    assert dataset_info(plain)["task"] == "binary"
    with pytest.raises(SpecError, match="unknown parameter"):
        load_dataset(f"twin:{arm_file}?color=red")


def test_info_summary(arm_file: Path) -> None:
    from mmguard.twin.dataset import twin_info

    info = twin_info(arm_file)
    assert (info["scene"], info["episodes"], info["steps"], info["n_samples"]) == ("arm", 5, 8, 40)
    assert info["camera"] == {"width": 16, "height": 12, "depth": False}
    mods = {m["name"]: m for m in info["modalities"]}
    assert mods["camera"]["shape"] == [3, 12, 16] and mods["kinematics"]["channels"][0] == "q0"
    q = info["targets"]["quality"]["counts"]
    assert sum(q.values()) == 40 and set(q) <= {"0", "1"}
    assert set(info["targets"]["phase"]["counts"]) == set(PHASES)
    assert info["attrs"]["sim_attrs"]["tolerance"] == TOLERANCE
    json.dumps(info)  # JSON-ready


def test_preview_png(arm_file: Path, tmp_path: Path) -> None:
    from mmguard.twin.preview import preview

    png = preview(arm_file, tmp_path / "p.png", episode=4)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    with pytest.raises(DataError, match="episode 5 out of range"):
        preview(arm_file, tmp_path / "q.png", episode=5)
    with pytest.raises(SpecError, match="unknown kinematics channel"):
        preview(arm_file, tmp_path / "q.png", channels=["elbow"])


# ------------------------------------------------------------------------------------ real simulator
def test_end_to_end_with_the_real_simulator(tmp_path: Path) -> None:
    """Two tiny episodes from MuJoCo: identical for 1 and 2 workers, loadable, contract-conform."""
    import mmguard.twin.episode as episode_mod
    from mmguard.twin.dataset import load_twin

    cam = CameraConfig(32, 24)
    one = generate("arm", 2, 10, tmp_path / "one.h5", seed=1, camera=cam)
    two = generate("arm", 2, 10, tmp_path / "two.h5", seed=1, camera=cam, workers=2)
    assert checksums(one) == checksums(two)
    batch = load_twin(one)
    assert len(batch) == 20 and batch.spec("camera").shape == (3, 24, 32)
    assert batch.spec("kinematics").channels and len(batch.spec("kinematics").units) == batch.spec(
        "kinematics").shape[0]
    with h5py.File(one, "r") as f:
        assert f.attrs["mjcf_sha256"] and f.attrs["generator_version"] != "unknown"
        assert int(f["camera"][()].std() > 0)  # something was rendered
    assert episode_mod.simulate_episode is not None
