"""The Ray engine on a local 2-CPU cluster: same results as in-process, retries after a worker dies.

* ``engine.map`` gives every job's result; an error raised by a job surfaces once, as itself;
* a worker killed mid-job (``os._exit`` the first time, remembered by a marker file) is replaced,
  its job retried, and the run is complete and identical — for the plain map, for
  ``twin generate`` (byte-identical file) and for ``bench`` (identical units and guards);
* the bench jobs get the downstream models as checkpoint files and return their guards as files;
* a bench run made with Ray resumes with the local engine (the engine is not in the fingerprint).

The job functions below are sent to the workers by value (``register_pickle_by_value``), since
the workers cannot import this test module. Skipped when Ray is not installed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from mmguard.engine import Job  # noqa: E402
from mmguard.engine.ray_engine import RayEngine, check_address  # noqa: E402
from mmguard.errors import EngineError, SpecError  # noqa: E402
from mmguard.twin.interface import CameraConfig, Episode  # noqa: E402

CRASH_MARKER: str | None = None  # set per test: the first job to run creates it and kills its worker


@pytest.fixture(scope="module")
def cluster():
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def marker(tmp_path: Path):
    global CRASH_MARKER
    CRASH_MARKER = str(tmp_path / "crashed")
    yield Path(CRASH_MARKER)
    CRASH_MARKER = None


def crash_once() -> None:
    """Kill this worker process the first time any job calls it (while a marker is set)."""
    if CRASH_MARKER is not None and not os.path.exists(CRASH_MARKER):
        Path(CRASH_MARKER).write_text(str(os.getpid()))
        os._exit(1)


def square(x: int) -> int:
    if x == 2:
        crash_once()
    return x * x


def bad_job(x: int) -> int:
    if x == 1:
        raise SpecError(f"bad setting {x}")
    return x


def test_map_retries_a_dead_worker_and_surfaces_job_errors_once(cluster, marker: Path) -> None:
    engine = RayEngine()
    assert dict(engine.map(square, [Job(i, (i,)) for i in range(6)])) == {i: i * i for i in range(6)}
    assert marker.exists()  # a worker really died
    with pytest.raises(SpecError, match="^bad setting 1$"):
        dict(engine.map(bad_job, [Job(i, (i,)) for i in range(3)]))
    engine.close()
    assert ray.is_initialized()  # the engine did not start the cluster, so it leaves it running


def test_unreachable_address_is_one_line_and_fast() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(EngineError, match="cannot reach a Ray cluster"):
        check_address(f"127.0.0.1:{port}")
    with pytest.raises(SpecError, match="bad Ray address"):
        check_address("nowhere")


# ---------------------------------------------------------------------------- twin generate
def crashing_simulate(scene: str, seed: int, steps: int, camera: CameraConfig) -> Episode:
    """A small deterministic stand-in for the simulator whose first call kills its worker."""
    crash_once()
    rng = np.random.default_rng(seed)
    seam = np.abs(rng.normal(0, 0.002, size=steps)).astype(np.float32)
    return Episode(
        modalities={"camera": rng.integers(0, 256, (steps, 3, camera.height, camera.width), dtype=np.uint8),
                    "kinematics": rng.normal(size=(steps, 3)).astype(np.float32)},
        targets={"seam_distance": seam, "quality": (seam > 0.002).astype(np.int64),
                 "phase": (np.arange(steps) * 2 // steps).astype(np.int64)},
        channels={"kinematics": ["q0", "q1", "q2"]}, units={"kinematics": ["rad"] * 3},
        phase_names=["a", "b"], attrs={"scene": scene, "seed": seed, "generator_version": "fake-ray"})


def test_twin_generate_with_ray_is_byte_identical_after_a_worker_dies(cluster, marker: Path,
                                                                      tmp_path: Path) -> None:
    from mmguard.twin.storage import generate

    kw: dict[str, Any] = {"seed": 4, "camera": CameraConfig(8, 6), "simulate": crashing_simulate}
    remote = generate("arm", 6, 5, tmp_path / "ray.h5", engine=RayEngine(), **kw)
    assert marker.exists()
    local = generate("arm", 6, 5, tmp_path / "local.h5", **kw)
    assert remote.read_bytes() == local.read_bytes()


# ---------------------------------------------------------------------------- bench
TIMING = ("wall_s", "fit_s", "eval_s", "plots")


def numbers(tree: Any) -> Any:
    """A JSON tree without its timings."""
    if isinstance(tree, dict):
        return {k: numbers(v) for k, v in tree.items() if not any(k.endswith(t) for t in TIMING)}
    if isinstance(tree, list):
        return [numbers(v) for v in tree]
    return tree


def crashing_bench_job(*args: Any) -> dict[str, Any]:
    """The real bench job, whose first run dies after the work is done but before it is returned."""
    from mmguard.experiments.harness import bench_job

    result = bench_job(*args)
    crash_once()
    return result


class CrashOnceRay(RayEngine):
    def map(self, fn, jobs):
        return super().map(crashing_bench_job, jobs)


def test_bench_with_ray_matches_local_after_a_worker_dies_and_resumes_locally(cluster, marker: Path,
                                                                              tmp_path: Path) -> None:
    from mmguard.data import load_dataset
    from mmguard.data.splits import make_splits
    from mmguard.engine.files import read_tree
    from mmguard.experiments.harness import BenchConfig, run_bench

    splits = make_splits(load_dataset("toy?n=300"), seed=0)
    cfg = BenchConfig(guards=["mmae", "dae"], seeds=[0, 1], quick=True, severity_sweep=False, downstream=["target"])
    local = run_bench(cfg, splits, tmp_path / "local", log=lambda m: None)
    remote = run_bench(cfg, splits, tmp_path / "ray", log=lambda m: None, engine=CrashOnceRay())
    assert marker.exists()
    assert numbers(remote) == numbers(local)
    for g in cfg.guards:
        for s in cfg.seeds:
            a, b = (json.loads((tmp_path / d / "units" / g / f"seed{s}.json").read_text()) for d in ("local", "ray"))
            assert numbers(a) == numbers(b)
            ga, gb = (read_tree(tmp_path / d / "guards" / g / f"seed{s}") for d in ("local", "ray"))
            assert ga.keys() == gb.keys() and ga["weights.safetensors"] == gb["weights.safetensors"]
    logs: list[str] = []
    again = run_bench(cfg, splits, tmp_path / "ray", log=logs.append)  # local engine, same fingerprint
    resumed = [m for m in logs if "already done (resumed)" in m]
    assert len(resumed) == 6 and sum("downstream" in m for m in resumed) == 2  # 4 units + 2 seeds' models
    assert numbers(again) == numbers(local)


def test_bench_cli_with_ray_engine(cluster, tmp_path: Path) -> None:
    import contextlib
    import io

    from mmguard.cli.main import entrypoint

    argv = ["bench", "--data", "toy?n=200", "--guards", "dae", "--seeds", "1", "--quick", "--no-families",
            "--no-sweep", "--json"]
    for engine in ("local", "ray"):
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            assert entrypoint([*argv, "--out", str(tmp_path / engine), "--engine", engine]) == 0
    a, b = (json.loads((tmp_path / e / "units" / "dae" / "seed0.json").read_text()) for e in ("local", "ray"))
    assert numbers(a) == numbers(b)
    assert (tmp_path / "ray" / "guards" / "dae" / "seed0" / "guard.json").is_file()
    assert (tmp_path / "ray" / "report.md").is_file()
