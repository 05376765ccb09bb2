"""Long runs resume after a kill and give the numbers of an uninterrupted run.

* ``mmguard bench``: a real SIGKILL of the process once its first (guard, seed) unit is on disk,
  then a rerun: the finished unit is reused, the result equals an uninterrupted run's;
* ``mmguard mmssl run``: a crash after seed 0 (simulated), then a rerun;
* ``mmguard emma run``: a second run into the same directory reuses Experiment II;
* a different configuration in the same directory is refused with one line; a bench run grows by
  guards and seeds, and a directory of the older fingerprint rule is migrated.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mmguard.errors import CheckpointError

TIMING = ("wall_s", "fit_s", "eval_s", "_s", "plots")


def numbers(tree: Any, path: str = "") -> dict[str, Any]:
    """Every leaf of a JSON tree except timings, keyed by its path."""
    out: dict[str, Any] = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            if not any(k == t or k.endswith(t) for t in TIMING):
                out.update(numbers(v, f"{path}/{k}"))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out.update(numbers(v, f"{path}[{i}]"))
    else:
        out[path] = tree
    return out


BENCH = ["bench", "--data", "toy?n=1200", "--guards", "mmae,dae", "--seeds", "2", "--quick", "--no-sweep"]


def _bench(out: Path, **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "mmguard.cli.main", *BENCH, "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kw)


def test_bench_killed_midway_resumes_to_identical_numbers(tmp_path: Path) -> None:
    ref = _bench(tmp_path / "ref")
    assert ref.wait(timeout=600) == 0, ref.stderr.read()
    proc = _bench(tmp_path / "run")
    first = tmp_path / "run" / "units" / "mmae" / "seed0.json"
    deadline = time.time() + 300
    while not first.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert first.exists(), "the first unit never appeared"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (tmp_path / "run" / "metrics.json").exists()  # killed before the end
    again = _bench(tmp_path / "run")
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    assert "mmae already done (resumed)" in err
    a = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    b = json.loads((tmp_path / "run" / "metrics.json").read_text())
    na, nb = numbers(a), numbers(b)
    assert na.keys() == nb.keys() and len(na) > 100
    assert na == nb


def test_bench_refuses_a_different_configuration_in_the_same_directory(tmp_path: Path) -> None:
    from mmguard.data import load_dataset
    from mmguard.data.splits import make_splits
    from mmguard.experiments.harness import BenchConfig, run_bench

    splits = make_splits(load_dataset("toy?n=200"), seed=0)
    cfg = BenchConfig(guards=["mmae"], seeds=[0], quick=True, families=False, severity_sweep=False)
    run_bench(cfg, splits, tmp_path, log=lambda m: None)
    with pytest.raises(CheckpointError, match="different configuration"):
        run_bench(cfg.model_copy(update={"families": True}), splits, tmp_path, log=lambda m: None)
    other = make_splits(load_dataset("toy?n=200", seed=5), seed=0)  # other data, same settings
    with pytest.raises(CheckpointError, match="different configuration or data"):
        run_bench(cfg, other, tmp_path, log=lambda m: None)


def _grow_setup():
    from mmguard.data import load_dataset
    from mmguard.data.splits import make_splits
    from mmguard.experiments.harness import BenchConfig

    splits = make_splits(load_dataset("toy?n=300"), seed=0)
    small = BenchConfig(guards=["mmae"], seeds=[0], quick=True, families=False, severity_sweep=False)
    big = small.model_copy(update={"guards": ["mmae", "dae"], "seeds": [0, 1]})
    return splits, small, big


def test_bench_grows_by_guards_and_seeds_and_refits_only_what_changed(tmp_path: Path) -> None:
    """A run directory takes more guards and seeds later: finished units are reused, the result is the
    one a fresh run of the larger benchmark gives; a guard whose config changed is refitted."""
    from mmguard.experiments.harness import run_bench

    splits, small, big = _grow_setup()
    run_bench(small, splits, tmp_path / "run", log=lambda m: None)
    logs: list[str] = []
    grown = run_bench(big, splits, tmp_path / "run", log=logs.append)
    assert "seed 0: mmae already done (resumed)" in logs
    assert not any("dae already done" in m or "seed 1: mmae already" in m for m in logs)
    fresh = run_bench(big, splits, tmp_path / "fresh", log=lambda m: None)
    assert numbers(grown) == numbers(fresh)
    changed = big.model_copy(update={"guard_configs": {"dae": {"false_alarm_rate": 0.05}}})
    logs.clear()
    run_bench(changed, splits, tmp_path / "run", log=logs.append)
    assert "seed 1: mmae already done (resumed)" in logs
    assert not any("dae already done" in m for m in logs)


def test_bench_run_of_the_older_fingerprint_rule_is_migrated(tmp_path: Path) -> None:
    """A directory written when the run fingerprint covered guards and seeds (every unit stamped with
    it) resumes under the current rule, and can grow."""
    from mmguard.experiments.harness import run_bench
    from mmguard.experiments.units import fingerprint

    splits, small, big = _grow_setup()
    out = tmp_path / "run"
    run_bench(small, splits, out, log=lambda m: None)
    saved = json.loads((out / "config.json").read_text())
    saved.pop("method")
    old = fingerprint({"method": "bench", **{k: v for k, v in saved.items() if k not in ("device", "precision")}})
    for path in (out / "units").rglob("*.json"):  # restamp as the older code wrote it
        unit = json.loads(path.read_text())
        path.write_text(json.dumps({"method": "bench", "fingerprint": old} if path.name == "run.json"
                                   else {"fingerprint": old, "payload": unit["payload"]}))
    logs: list[str] = []
    run_bench(big, splits, out, log=logs.append)
    assert "seed 0: mmae already done (resumed)" in logs
    assert json.loads((out / "units" / "run.json").read_text())["fingerprint"] != old


@pytest.fixture(scope="module")
def twin_file(tmp_path_factory) -> Path:
    from mmguard.twin.storage import generate

    path = tmp_path_factory.mktemp("twin") / "arm.h5"
    generate("arm", 12, 20, path, seed=3, workers=1)
    return path


def _mmssl_cfg(twin: Path):
    from mmguard.experiments.mmssl.config import MmsslRunConfig
    from mmguard.mmssl.config import AutoencoderConfig, ComputeConfig

    return MmsslRunConfig(data=str(twin), seeds=[0, 1], ablations=[], severity_sweep=False, analysis=False,
                          autoencoder=AutoencoderConfig(epochs=2, patience=None, image_channels=[8, 16, 16]),
                          compute=ComputeConfig(epochs=3, corruption_draws=1, patience=None), quick=True)


def test_mmssl_protocol_resumes_after_a_crash(twin_file: Path, tmp_path: Path, monkeypatch) -> None:
    from mmguard.experiments.mmssl import experiment
    from mmguard.experiments.mmssl.run import run_mmssl

    cfg = _mmssl_cfg(twin_file)
    ref = run_mmssl(cfg, tmp_path / "ref", log=lambda m: None)
    real = experiment.evaluate_seed

    def crash_on_seed_1(models, splits, cfg_, seed):
        if seed == 1:
            raise KeyboardInterrupt("killed")
        return real(models, splits, cfg_, seed)

    monkeypatch.setattr(experiment, "evaluate_seed", crash_on_seed_1)
    with pytest.raises(KeyboardInterrupt):
        run_mmssl(cfg, tmp_path / "run", log=lambda m: None)
    assert (tmp_path / "run" / "units" / "seed0.json").is_file()
    assert not (tmp_path / "run" / "units" / "seed1.json").exists()
    monkeypatch.setattr(experiment, "evaluate_seed", real)
    logs: list[str] = []
    res = run_mmssl(cfg, tmp_path / "run", log=logs.append)
    assert any("seed 0: already done" in m for m in logs)
    assert not any("seed 1: already done" in m for m in logs)
    assert numbers(res) == numbers(ref)
    with pytest.raises(CheckpointError, match="different configuration"):
        run_mmssl(cfg.model_copy(update={"seeds": [0]}), tmp_path / "run", log=lambda m: None)


def test_emma_protocol_reuses_experiment_2_and_refuses_other_settings(tmp_path: Path) -> None:
    from mmguard.experiments.emma.config import EmmaRunConfig
    from mmguard.experiments.emma.run import run_emma

    cfg = EmmaRunConfig.quick_config(dataset="toy?n=600", seeds=[0, 1], epochs=3)
    first = run_emma(cfg, tmp_path / "run", log=lambda m: None, chapter4=False)
    logs: list[str] = []
    again = run_emma(cfg, tmp_path / "run", log=logs.append, chapter4=False)
    assert any("already done" in m for m in logs)
    assert numbers(again) == numbers(first)
    with pytest.raises(CheckpointError, match="different configuration"):
        run_emma(cfg.model_copy(update={"seeds": [0]}), tmp_path / "run", log=lambda m: None, chapter4=False)


def test_data_fingerprint_does_not_depend_on_the_thread_count() -> None:
    """A run started with one thread resumes with two (regression: the weld-twin table-1 bench was
    refused because multi-threaded float reductions changed the last bits of the hashed sums)."""
    import torch

    from mmguard.data.model import MultimodalBatch
    from mmguard.data.preprocessing import Standardizer
    from mmguard.data.splits import make_splits
    from mmguard.experiments.units import data_fingerprint

    g = torch.Generator().manual_seed(0)
    n = 1500
    batch = MultimodalBatch.from_arrays(
        {"camera": (torch.rand(n, 3, 32, 32, generator=g) * 7.3 + 0.1).numpy(),
         # wide dynamic range: float64 sums of these float32 values round, so their order matters
         "kin": torch.exp(torch.randn(n, 200, generator=g) * 6.0).numpy()},
        kinds={"camera": "image", "kin": "vector"}, meta={"episode": torch.arange(n).numpy() // 25})
    splits = make_splits(batch, seed=0)
    before = torch.get_num_threads()
    try:
        seen, stats = set(), set()
        for threads in (1, 2, 4):
            torch.set_num_threads(threads)
            st = Standardizer.fit(splits.train)
            stats.add(st.mean["camera"].double().numpy().tobytes() + st.std["kin"].double().numpy().tobytes()
                      + splits.test.modalities["kin"].double().sum().numpy().tobytes())
            seen.add(data_fingerprint(splits, st))
    finally:
        torch.set_num_threads(before)
    assert len(seen) == 1, seen
    if len(stats) == 1:
        pytest.skip("this machine's reductions agree across thread counts; the fingerprint is trivially stable")
