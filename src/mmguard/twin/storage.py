"""Generate a digital-twin dataset: simulate episodes (optionally in worker processes), then write HDF5.

:func:`generate` is the whole pipeline. Episode ``e`` is simulated with the seed
``derive_seed(seed, "twin", e)``, so each episode depends only on the user's seed and its
index — never on which process ran it or in which order — and the merged file is the same
whatever the number of workers.

Robustness:

* every finished episode is written as its own *shard* ``<out>.parts/episode_00007.h5``
  (to a temporary name, then renamed, so a shard on disk is always complete);
* ``<out>.parts/manifest.json`` records the generation arguments; rerunning the same command
  after an interruption reuses the shards already written and simulates only the missing
  episodes; rerunning with different arguments is refused unless ``force`` starts over;
* with a remote engine (``engine``, e.g. Ray: :mod:`mmguard.engine`) each episode is one job that
  returns the simulated (and validated) arrays; this process writes the shard, so the workers need
  no shared filesystem, and the file is the same as the in-process one;
* the shards are merged in episode order into a temporary file beside ``out``, which is
  then renamed onto ``out`` — a crash never leaves a half-written ``out`` — and the parts
  folder is removed.

The file layout is described in ``docs/twin_data.md`` and read by :mod:`mmguard.twin.dataset`.
This module imports neither torch nor MuJoCo at import time, so spawned workers start quickly.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmguard.errors import DataError, SpecError
from mmguard.io.atomic import atomic_write
from mmguard.io.jsonio import jsonable
from mmguard.seeding import derive_seed
from mmguard.twin.interface import SCENES, CameraConfig, Episode

if TYPE_CHECKING:
    from mmguard.engine import Engine

FORMAT = "mmguard-twin"
FORMAT_VERSION = 1
H5_SUFFIXES = (".h5", ".hdf5")
PARTS_SUFFIX = ".parts"
MANIFEST = "manifest.json"
TARGETS_GROUP = "targets"
META_GROUP = "meta"
EPISODES_GROUP = "episodes"
IMAGE_MODALITIES = ("camera", "depth")
TARGET_UNITS = {"seam_distance": "m", "quality": "", "phase": ""}
TARGET_DESCRIPTIONS = {
    "seam_distance": "distance of the tool from the seam (metres)",
    "quality": "1 where the deviation from the seam exceeds the tolerance, else 0",
    "phase": "index into the file attribute phase_names",
}
PROVENANCE_KEYS = ("generator_version", "mjcf_sha256")  # simulator attrs every episode must share
MAX_SIDE = 4096
CHUNK_BYTES = 1 << 20  # aim for ~1 MiB chunks (HDF5's sweet spot)
GZIP_LEVEL = 4

#: ``progress(done, total)``: called once before simulating (``done`` = shards reused) and after each episode.
ProgressFn = Callable[[int, int], None]
SimulateFn = Callable[[str, int, int, CameraConfig], Episode]


# ---------------------------------------------------------------------------------------- small helpers
def parts_dir(out: str | Path) -> Path:
    """The folder holding the per-episode shards of an unfinished generation of ``out``."""
    p = Path(out)
    return p.with_name(p.name + PARTS_SUFFIX)


def shard_path(parts: Path, episode: int) -> Path:
    return parts / f"episode_{episode:05d}.h5"


def episode_seed(seed: int, episode: int) -> int:
    """The simulator seed of episode ``episode`` under the user's ``seed`` (a 63-bit integer)."""
    return derive_seed(int(seed), "twin", int(episode))


def replace_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` to a temporary file beside ``path``, then rename it onto ``path``.

    A ``Path``-taking adapter over :func:`mmguard.io.checkpoint.atomic_write`.
    """
    atomic_write(path, lambda tmp: write(Path(tmp)))


def _write_json(path: Path, obj: Any) -> None:
    text = json.dumps(jsonable(obj), indent=2, default=str) + "\n"
    replace_atomically(path, lambda tmp: tmp.write_text(text))


def _simulator_name(fn: Callable) -> str:
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"


def default_simulator() -> SimulateFn:
    """:func:`mmguard.twin.episode.simulate_episode`, or a one-line error naming what is missing."""
    try:
        from mmguard.twin.episode import simulate_episode
    except ModuleNotFoundError as exc:
        if exc.name in ("mmguard.twin.episode", "mmguard.twin"):
            raise SpecError("the twin simulator (mmguard.twin.episode) is not available in this "
                            "installation") from None
        raise SpecError(f"the twin simulator needs the Python package {exc.name!r}; "
                        f"install it with: pip install {exc.name}") from None
    # Pick the offscreen GL backend here, in the parent: a machine without one gets a one-line
    # error before anything is written, and spawned workers inherit the choice (MUJOCO_GL).
    select = getattr(sys.modules.get("mmguard.twin.scene"), "select_gl_backend", None)
    if callable(select):
        select()
    return simulate_episode


def _generator_version(simulate: Callable) -> str | None:
    module = sys.modules.get(getattr(simulate, "__module__", ""), None)
    version = getattr(module, "GENERATOR_VERSION", None)
    return None if version is None else str(version)


# ---------------------------------------------------------------------------------------- validation
def check_arguments(scene: str, episodes: int, steps: int, workers: int, camera: CameraConfig,
                    out: Path) -> None:
    """Raise a one-line :class:`SpecError` for an argument :func:`generate` cannot use."""
    if scene not in SCENES:
        raise SpecError(f"unknown scene {scene!r}; known: {', '.join(SCENES)}")
    for name, value in (("episodes", episodes), ("steps", steps), ("workers", workers)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise SpecError(f"{name} must be a positive integer, got {value!r}")
    for name, value in (("width", camera.width), ("height", camera.height)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= MAX_SIDE:
            raise SpecError(f"camera {name} must be an integer in [1, {MAX_SIDE}], got {value!r}")
    if out.suffix.lower() not in H5_SUFFIXES:
        raise SpecError(f"output {str(out)!r} must end in {' or '.join(H5_SUFFIXES)}")
    if out.is_dir():
        raise SpecError(f"output {str(out)!r} is a directory, expected an HDF5 file name")


def validate_episode(ep: Episode, scene: str, steps: int, camera: CameraConfig, where: str) -> None:
    """Check a simulated episode against the contract of :mod:`mmguard.twin.interface`."""
    if not isinstance(ep, Episode):
        raise DataError(f"{where}: the simulator returned {type(ep).__name__}, expected an Episode")
    mods, tgts = ep.modalities, ep.targets
    if "camera" not in mods or "kinematics" not in mods:
        raise DataError(f"{where}: an episode needs 'camera' and 'kinematics', got {sorted(mods)}")
    if scene == "weld" and not {"kinematics_r0", "kinematics_r1"} <= set(mods):
        raise DataError(f"{where}: a weld episode needs kinematics_r0 and kinematics_r1, got {sorted(mods)}")
    if camera.depth != ("depth" in mods):
        raise DataError(f"{where}: depth requested={camera.depth} but the episode "
                        f"{'has' if 'depth' in mods else 'lacks'} a depth image")
    expected_images = {"camera": ((steps, 3, camera.height, camera.width), np.uint8),
                       "depth": ((steps, 1, camera.height, camera.width), np.float32)}
    for name, x in mods.items():
        x = np.asarray(x)
        if name in expected_images:
            shape, dtype = expected_images[name]
            if x.shape != shape or x.dtype != dtype:
                raise DataError(f"{where}: {name} must be {np.dtype(dtype)} {shape}, got {x.dtype} {x.shape}")
        else:
            if x.ndim != 2 or x.shape[0] != steps or x.dtype.kind != "f":
                raise DataError(f"{where}: {name} must be a float (steps={steps}, D) array, "
                                f"got {x.dtype} {x.shape}")
            names, units = ep.channels.get(name, []), ep.units.get(name, [])
            if len(names) != x.shape[1] or len(units) != x.shape[1]:
                raise DataError(f"{where}: {name} has {x.shape[1]} columns but {len(names)} channel names "
                                f"and {len(units)} units")
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise DataError(f"{where}: {name} contains NaN/Inf")
    missing = sorted(set(TARGET_UNITS) - set(tgts))
    if missing:
        raise DataError(f"{where}: missing targets {missing}; got {sorted(tgts)}")
    for name, y in tgts.items():
        y = np.asarray(y)
        if y.shape != (steps,) or y.dtype.kind not in "biuf":
            raise DataError(f"{where}: target {name} must be a numeric ({steps},) array, "
                            f"got {y.dtype} {y.shape}")
        if y.dtype.kind == "f" and not np.isfinite(y).all():
            raise DataError(f"{where}: target {name} contains NaN/Inf")


# ---------------------------------------------------------------------------------------- shards
@dataclass(frozen=True)
class _Task:
    """One episode to simulate and write (picklable: sent to spawned workers)."""

    simulate: SimulateFn
    scene: str
    episode: int
    seed: int
    steps: int
    camera: CameraConfig
    path: Path


def write_shard(path: Path, ep: Episode, *, episode: int, seed: int) -> None:
    """Write one episode to ``path`` atomically (lzf-compressed; the merge recompresses)."""
    import h5py

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w", track_order=True) as f:
            for name, x in ep.modalities.items():
                f.create_dataset(name, data=np.asarray(x), compression="lzf", track_times=False)
            g = f.create_group(TARGETS_GROUP, track_order=True)
            for name, y in ep.targets.items():
                g.create_dataset(name, data=np.asarray(y), track_times=False)
            f.attrs["episode"] = int(episode)
            f.attrs["seed"] = int(seed)
            f.attrs["steps"] = int(ep.steps)
            f.attrs["channels_json"] = json.dumps(jsonable(ep.channels), default=str)
            f.attrs["units_json"] = json.dumps(jsonable(ep.units), default=str)
            f.attrs["phase_names_json"] = json.dumps(jsonable(list(ep.phase_names)), default=str)
            f.attrs["attrs_json"] = json.dumps(jsonable(ep.attrs), sort_keys=True, default=str)

    replace_atomically(path, write)


def _ignore_sigint() -> None:
    """Pool initializer: Ctrl-C is the parent's to handle (it terminates the pool), not each worker's."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_task(task: _Task) -> int:
    """Simulate one episode and write its shard; returns the episode index (runs in workers)."""
    where = f"episode {task.episode} (seed {task.seed})"
    ep = task.simulate(task.scene, task.seed, task.steps, task.camera)
    validate_episode(ep, task.scene, task.steps, task.camera, where)
    try:
        write_shard(task.path, ep, episode=task.episode, seed=task.seed)
    except OSError as exc:  # e.g. disk full: one line, and the shard is absent, not half-written
        raise DataError(f"cannot write {str(task.path)!r}: {exc.strerror or exc}") from None
    return task.episode


def simulate_job(simulate: SimulateFn, scene: str, episode: int, seed: int, steps: int,
                 camera: CameraConfig) -> Episode:
    """One episode as an engine job: simulated and validated where the job runs, returned to be written."""
    ep = simulate(scene, seed, steps, camera)
    validate_episode(ep, scene, steps, camera, f"episode {episode} (seed {seed})")
    return ep


def _run_remote(engine: Engine, todo: list[_Task], advance: Callable[[], None]) -> None:
    """Simulate ``todo`` as jobs of ``engine``; write each shard here as its episode arrives."""
    from mmguard.engine import Job

    tasks = {t.episode: t for t in todo}
    jobs = (Job(t.episode, (t.simulate, t.scene, t.episode, t.seed, t.steps, t.camera)) for t in todo)
    for episode, ep in engine.map(simulate_job, jobs):
        task = tasks[episode]
        try:
            write_shard(task.path, ep, episode=task.episode, seed=task.seed)
        except OSError as exc:
            raise DataError(f"cannot write {str(task.path)!r}: {exc.strerror or exc}") from None
        advance()


def shard_is_complete(path: Path, *, episode: int, seed: int, steps: int) -> bool:
    """True when ``path`` opens and holds episode ``episode`` with ``seed`` and ``steps`` steps."""
    import h5py

    if not path.is_file():
        return False
    try:
        with h5py.File(path, "r") as f:
            return (int(f.attrs["episode"]) == episode and int(f.attrs["seed"]) == seed
                    and int(f.attrs["steps"]) == steps and "camera" in f
                    and f["camera"].shape[0] == steps and TARGETS_GROUP in f)
    except (OSError, KeyError, ValueError, TypeError):
        return False


# ---------------------------------------------------------------------------------------- merge
def _chunk_rows(row_bytes: int, n: int) -> int:
    return max(1, min(n, CHUNK_BYTES // max(1, row_bytes)))


def _dataset_options(shape: tuple[int, ...], dtype: np.dtype) -> dict[str, Any]:
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    return {"chunks": (_chunk_rows(row_bytes, shape[0]), *shape[1:]), "compression": "gzip",
            "compression_opts": GZIP_LEVEL, "shuffle": dtype.itemsize > 1, "track_times": False}


def _find_attr(attrs: Mapping[str, Any], *keys: str) -> Any:
    for k in keys:
        if k in attrs:
            return attrs[k]
    return None


def _check_provenance(episode: int, attrs: Mapping[str, Any], first: Mapping[str, Any]) -> None:
    """A resumed run must not mix scenes (MJCF hash) or simulator versions in one file."""
    for key in PROVENANCE_KEYS:
        if key in first and attrs.get(key) != first[key]:
            raise DataError(f"episode {episode} was simulated with {key} {attrs.get(key)!r} but episode 0 "
                            f"with {first[key]!r}; pass --force to start over")


def _merge(parts: Path, out: Path, *, scene: str, seed: int, steps: int, episodes: int,
           seeds: Sequence[int], camera: CameraConfig, simulator: str, version: str | None) -> None:
    """Merge the shards of ``parts`` in episode order into ``out`` (written to a temp name, then renamed)."""
    import h5py

    first = shard_path(parts, 0)
    with h5py.File(first, "r") as f0:
        layout = {name: (ds.shape[1:], ds.dtype) for name, ds in f0.items() if isinstance(ds, h5py.Dataset)}
        target_layout = {name: ds.dtype for name, ds in f0[TARGETS_GROUP].items()}
        channels = json.loads(f0.attrs["channels_json"])
        units = json.loads(f0.attrs["units_json"])
        phase_names = json.loads(f0.attrs["phase_names_json"])
    n = episodes * steps
    common: dict[str, Any] | None = None
    per_episode: list[str] = []

    def write(tmp: Path) -> None:
        nonlocal common
        # A cache of several chunks per dataset: episodes rarely end on chunk boundaries, and a
        # partly written chunk must stay in the cache instead of being recompressed repeatedly.
        with h5py.File(tmp, "w", track_order=True, rdcc_nbytes=64 * CHUNK_BYTES) as f:
            dsets = {}
            for name, (shape, dtype) in layout.items():
                full = (n, *shape)
                dsets[name] = f.create_dataset(name, shape=full, dtype=dtype, **_dataset_options(full, dtype))
            tg = f.create_group(TARGETS_GROUP, track_order=True)
            tsets = {name: tg.create_dataset(name, shape=(n,), dtype=dtype,
                                             **_dataset_options((n,), dtype))
                     for name, dtype in target_layout.items()}
            for e in range(episodes):
                with h5py.File(shard_path(parts, e), "r") as s:
                    here = {name: (ds.shape[1:], ds.dtype) for name, ds in s.items()
                            if isinstance(ds, h5py.Dataset)}
                    if (here != layout or {k: d.dtype for k, d in s[TARGETS_GROUP].items()} != target_layout
                            or json.loads(s.attrs["channels_json"]) != channels
                            or json.loads(s.attrs["units_json"]) != units):
                        raise DataError(f"episode {e} has a different layout than episode 0 "
                                        f"(modalities {sorted(here)} vs {sorted(layout)}); "
                                        f"delete {str(parts)!r} and generate again")
                    rows = slice(e * steps, (e + 1) * steps)
                    for name, ds in dsets.items():
                        ds[rows] = s[name][()]
                    for name, ds in tsets.items():
                        ds[rows] = s[TARGETS_GROUP][name][()]
                    attrs = json.loads(s.attrs["attrs_json"])
                    per_episode.append(s.attrs["attrs_json"])
                    if common is None:
                        common = dict(attrs)
                    else:
                        _check_provenance(e, attrs, common)
                        common = {k: v for k, v in common.items() if k in attrs and attrs[k] == v}
            eg = f.create_group(EPISODES_GROUP, track_order=True)  # one entry per episode, not per sample
            eg.create_dataset("seed", data=np.asarray(seeds, dtype=np.int64), track_times=False)
            eg.create_dataset("attrs_json", data=per_episode, dtype=h5py.string_dtype(), track_times=False)
            mg = f.create_group(META_GROUP, track_order=True)
            mg.create_dataset("episode", data=np.repeat(np.arange(episodes, dtype=np.int64), steps),
                              **_dataset_options((n,), np.dtype(np.int64)))
            mg.create_dataset("t", data=np.tile(np.arange(steps, dtype=np.int64), episodes),
                              **_dataset_options((n,), np.dtype(np.int64)))

            for name, ds in dsets.items():
                if name in IMAGE_MODALITIES:
                    ds.attrs["kind"] = "image"
                    ds.attrs["units"] = "m" if name == "depth" else "uint8 RGB (0-255)"
                else:
                    ds.attrs["kind"] = "vector"
                    ds.attrs["channels"] = list(channels.get(name, []))
                    ds.attrs["units"] = list(units.get(name, []))
            for name, ds in tsets.items():
                ds.attrs["units"] = "m" if name.startswith("seam_distance") else TARGET_UNITS.get(name, "")
                ds.attrs["description"] = TARGET_DESCRIPTIONS.get(name, "")
                if name == "phase":
                    ds.attrs["names"] = list(phase_names)

            sim = {k: v for k, v in (common or {}).items() if k != "seed"}  # seeds: episode_seeds
            a = f.attrs
            a["format"] = FORMAT
            a["format_version"] = FORMAT_VERSION
            a["scene"] = scene
            a["seed"] = int(seed)
            a["steps"] = int(steps)
            a["episodes"] = int(episodes)
            a["n_samples"] = int(n)
            gen = _find_attr(sim, "generator_version") or version
            a["generator_version"] = "unknown" if gen is None else str(gen)
            a["mjcf_sha256"] = str(_find_attr(sim, "mjcf_sha256", "mjcf_hash", "mjcf_sha") or "")
            a["simulator"] = simulator
            a["camera_width"] = int(camera.width)
            a["camera_height"] = int(camera.height)
            a["camera_depth"] = bool(camera.depth)
            a["episode_seeds"] = np.asarray(seeds, dtype=np.int64)
            a["episode_seed_rule"] = 'derive_seed(seed, "twin", episode) (mmguard.faults.rng)'
            a["phase_names"] = list(phase_names)
            a["channels_json"] = json.dumps(channels)
            a["units_json"] = json.dumps(units)
            a["sim_attrs_json"] = json.dumps(sim, sort_keys=True)
            for key, value in sorted(sim.items()):  # the simulator's own constants, readable by h5dump
                if key not in a and isinstance(value, (str, int, float, bool)):
                    a[key] = value

    out.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(out, write)


# ---------------------------------------------------------------------------------------- generate
def _manifest(scene: str, seed: int, steps: int, camera: CameraConfig, simulator: str,
              version: str | None) -> dict[str, Any]:
    return {"format": FORMAT + "-parts", "format_version": FORMAT_VERSION, "scene": scene, "seed": int(seed),
            "steps": int(steps), "camera": asdict(camera), "simulator": simulator,
            "generator_version": version}


def _prepare_parts(parts: Path, manifest: dict[str, Any], out: Path, force: bool) -> None:
    """Create ``parts`` with its manifest, or check that an existing one belongs to the same arguments."""
    mpath = parts / MANIFEST
    if parts.exists() and force:
        shutil.rmtree(parts)
    if parts.exists():
        try:
            old = json.loads(mpath.read_text())
        except (OSError, ValueError):
            old = None
        if old != manifest:
            if isinstance(old, dict):
                diff = [f"{k} {old.get(k)!r} (now {v!r})" for k, v in manifest.items() if old.get(k) != v]
                what = "an unfinished generation with " + ", ".join(diff)
            else:
                what = "no readable manifest"
            raise SpecError(f"{str(parts)!r} holds {what}; rerun with the same arguments to resume, "
                            f"or pass --force (force=True) to start over")
        return
    try:
        parts.mkdir(parents=True)
        _write_json(mpath, manifest)
    except OSError as exc:
        raise DataError(f"cannot write next to {str(out)!r}: {exc.strerror or exc}") from None


def generate(
    scene: str,
    episodes: int,
    steps: int,
    out: str | Path,
    seed: int = 0,
    workers: int = 1,
    camera: CameraConfig | None = None,
    progress: ProgressFn | None = None,
    simulate: SimulateFn | None = None,
    *,
    force: bool = False,
    engine: Engine | None = None,
) -> Path:
    """Simulate ``episodes`` episodes of ``steps`` steps of ``scene`` and write them to the HDF5 file ``out``.

    ``workers`` > 1 simulates in that many spawned processes; the file is the same for any
    value. An interrupted run leaves ``<out>.parts/``; the same call again resumes from it.
    ``force`` discards a ``<out>.parts/`` left by a run with different arguments. ``simulate``
    replaces :func:`mmguard.twin.episode.simulate_episode` (a top-level function, so workers can
    import it). ``engine`` (:mod:`mmguard.engine`): a remote engine such as Ray simulates the
    episodes as its jobs instead (``workers`` is then unused); the file is the same. Returns the
    path written.
    """
    out = Path(out).expanduser()
    camera = CameraConfig() if camera is None else camera
    check_arguments(scene, episodes, steps, workers, camera, out)
    simulate = default_simulator() if simulate is None else simulate
    simulator, version = _simulator_name(simulate), _generator_version(simulate)
    parts = parts_dir(out)
    _prepare_parts(parts, _manifest(scene, seed, steps, camera, simulator, version), out, force)
    for stale in parts.glob(".*.tmp"):  # a shard being written when a previous run was killed
        stale.unlink(missing_ok=True)

    seeds = [episode_seed(seed, e) for e in range(episodes)]
    todo = []
    for e, s in enumerate(seeds):
        path = shard_path(parts, e)
        if not shard_is_complete(path, episode=e, seed=s, steps=steps):
            path.unlink(missing_ok=True)
            todo.append(_Task(simulate, scene, e, s, steps, camera, path))
    done = episodes - len(todo)
    if progress is not None:
        progress(done, episodes)

    def advance() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, episodes)

    try:
        if engine is not None and not engine.in_process:
            _run_remote(engine, todo, advance)
        elif workers == 1 or len(todo) <= 1:
            for task in todo:
                _run_task(task)
                advance()
        else:
            import multiprocessing

            ctx = multiprocessing.get_context("spawn")  # MuJoCo / GL contexts do not survive fork()
            # On an error or Ctrl-C, leaving the block terminates and joins the workers.
            with ctx.Pool(processes=min(workers, len(todo)), initializer=_ignore_sigint) as pool:
                for _ in pool.imap_unordered(_run_task, todo):
                    advance()
    finally:
        for stale in parts.glob(".*.tmp"):  # shards cut short by a failure elsewhere; finished ones stay
            stale.unlink(missing_ok=True)

    try:
        _merge(parts, out, scene=scene, seed=seed, steps=steps, episodes=episodes, seeds=seeds, camera=camera,
               simulator=simulator, version=version)
    except OSError as exc:  # e.g. disk full; the shards stay, so rerunning only redoes the merge
        raise DataError(f"cannot write {str(out)!r}: {exc.strerror or exc}") from None
    shutil.rmtree(parts, ignore_errors=True)
    return out
