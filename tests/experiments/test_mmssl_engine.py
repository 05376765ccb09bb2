"""`mmguard mmssl run` through an engine: every seed is a job (docs/distributed.md, "Protocols").

* on a local 2-CPU Ray cluster the run gives the in-process run's metrics.json numbers and model files
  bit for bit (1 torch thread on both sides), the diagnostics included (they use the first seed's
  models, which the driver loads back from the files a Ray task returned);
* the engine is not in the run's fingerprint: a seed whose unit is deleted is recomputed by the other
  engine, and only that seed;
* `--engine` / `--address` mistakes and a missing Ray are one-line errors (exit 2) before any data is read.

A tiny `arm` twin (12 episodes x 20 steps), two seeds, two epochs per stage, no ablations and no
sweeps: the protocol, not the numbers, is under test. The Ray test is skipped without Ray.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from support import run_cli

TIMING = ("_s", "plots")


def numbers(tree: Any) -> Any:
    """A JSON tree without its timings."""
    if isinstance(tree, dict):
        return {k: numbers(v) for k, v in tree.items() if not any(k.endswith(t) for t in TIMING)}
    if isinstance(tree, list):
        return [numbers(v) for v in tree]
    return tree


@pytest.fixture(scope="module")
def twin_file(tmp_path_factory) -> Path:
    from mmguard.twin.storage import generate

    path = tmp_path_factory.mktemp("twin") / "arm.h5"
    generate("arm", 12, 20, path, seed=3, workers=1)
    return path


@pytest.fixture(scope="module")
def cluster():
    """One local 2-CPU Ray cluster for the module (its workers stay warm from one test to the next)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def keep_threads():
    """``run_mmssl`` sets this process's torch threads (``threads=1``); put them back afterwards."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _cfg(twin: Path):
    from mmguard.experiments.mmssl.config import MmsslRunConfig
    from mmguard.mmssl.config import AutoencoderConfig, ComputeConfig

    return MmsslRunConfig(data=str(twin), seeds=[0, 1], ablations=[], severity_sweep=False, threads=1,
                          autoencoder=AutoencoderConfig(epochs=2, patience=None, image_channels=[8, 16, 16]),
                          compute=ComputeConfig(epochs=3, corruption_draws=1, patience=None), quick=True)


def _metrics(run: Path) -> Any:
    return numbers(json.loads((run / "metrics.json").read_text()))


def _hide_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    for mod in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ModuleNotFoundError


@pytest.mark.parametrize(("extra", "match"), [
    (["--engine", "dask"], "unknown engine 'dask'; use one of local, ray"),
    (["--address", "10.0.0.1:6379"], "--address needs --engine ray"),
    (["--engine", "ray"], "--engine ray needs Ray, which is not installed: pip install 'mmguard[ray]'"),
    (["--engine", "ray", "--threads", "4096"], "each seed task reserves that many CPUs"),
])
def test_cli_engine_errors_are_one_line_before_reading_data(extra: list[str], match: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    if "--threads" in extra:
        pytest.importorskip("ray")
    else:
        _hide_ray(monkeypatch)
    out = tmp_path / "run"
    # the data file does not exist either: the engine options are checked first
    rc, _, err = run_cli(["mmssl", "run", "--data", str(tmp_path / "missing.h5"), "--out", str(out), "--quick",
                          *extra])
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert rc == 2 and len(lines) == 1 and match in lines[0], err
    assert not out.exists()


def test_ray_seeds_match_local_and_resume_across_engines(cluster, twin_file: Path, tmp_path: Path,
                                                          keep_threads) -> None:
    from mmguard.engine.files import read_tree
    from mmguard.engine.ray_engine import RayEngine
    from mmguard.experiments.mmssl.run import run_mmssl

    cfg = _cfg(twin_file)
    local, remote = tmp_path / "local", tmp_path / "ray"
    run_mmssl(cfg, local, log=lambda m: None)
    with RayEngine(threads=1) as engine:
        logs: list[str] = []
        run_mmssl(cfg, remote, log=logs.append, engine=engine)
        assert any(m.startswith("seed 1: MMAE best epoch") for m in logs)  # a task's log lines come back
        reference = _metrics(local)
        assert _metrics(remote) == reference and "analysis" in reference
        for seed in cfg.seeds:
            assert read_tree(remote / "models" / f"seed{seed}") == read_tree(local / "models" / f"seed{seed}")

        # an in-process run loses seed 0's unit; Ray recomputes that seed only (and the diagnostics
        # then use seed 0's models as written from the task's files)
        (local / "units" / "seed0.json").unlink()
        logs.clear()
        run_mmssl(cfg, local, log=logs.append, engine=engine)
        assert "seed 1: already done" in " ".join(logs) and "seed 0: already done" not in " ".join(logs)
        assert _metrics(local) == reference

    # a Ray run loses seed 1's unit; the in-process engine recomputes that seed only
    (remote / "units" / "seed1.json").unlink()
    logs.clear()
    run_mmssl(cfg, remote, log=logs.append)
    assert "seed 0: already done" in " ".join(logs) and "seed 1: already done" not in " ".join(logs)
    assert _metrics(remote) == reference


def test_cli_runs_the_seeds_on_ray(cluster, twin_file: Path, tmp_path: Path, keep_threads) -> None:
    out = tmp_path / "run"
    rc, stdout, err = run_cli(["mmssl", "run", "--data", str(twin_file), "--out", str(out), "--quick", "--seeds", "1",
                               "--no-analysis", "--no-sweep", "--ae-epochs", "1", "--stage2-epochs", "1",
                               "--threads", "1", "--engine", "ray", "--json"])
    assert rc == 0, err
    assert json.loads(stdout)["seeds"] == [0]
    assert (out / "units" / "seed0.json").is_file() and (out / "report.md").is_file()
    for role in ("mmae", "dae", "compute"):
        assert (out / "models" / "seed0" / role / "weights.safetensors").is_file()
