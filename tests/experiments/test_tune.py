"""``mmguard tune``: space validation, deterministic trials, resume, best config, test split withheld, Ray Tune.

* a bad space (unknown distribution, bad bounds, a key that is not a config field, a value the guard
  refuses) is a one-line error naming the key (the trial) before any data are read;
* trial k's config is a function of (search seed, k) only;
* the search never reads the test split (it is replaced by an object that fails on any use);
* a search killed after some trials resumes from ``trials.jsonl`` and gives the uninterrupted numbers;
* ``best_config.json`` is a guard config for ``mmguard fit --config``, and the guard fitted with it has
  the best trial's objective;
* Ray Tune on a local 2-CPU cluster gives the local engine's trials and objectives (skipped without
  ``ray.tune``), and its run resumes with the local engine.

Tiny data (``toy?n=300``), ``--quick`` DAE settings, 2-3 trials.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from mmguard.data import load_dataset
from mmguard.data.splits import Splits, make_splits
from mmguard.errors import MMGuardError, SpecError
from mmguard.experiments.tune import TuneConfig, plan_search, run_tune, validation_metrics
from mmguard.experiments.tune_space import asha_rungs, parse_space
from support import one_line

SPACE = {"autoencoder.lr": {"loguniform": [1e-4, 1e-2]}, "autoencoder.latent_dim": {"randint": [8, 64]},
         "autoencoder.batch_size": {"choice": [32, 64]}}
DATA = "toy?n=300"


def cfg(**kw: Any) -> TuneConfig:
    return TuneConfig(**{"guard": "dae", "space": SPACE, "trials": 2, "quick": True, **kw})


class Withheld:
    """Stands in for the test split: any use of it fails the test."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the test split was read ({name})")

    def __len__(self) -> int:
        raise AssertionError("the test split was read (len)")


@pytest.fixture(scope="module")
def splits() -> Splits:
    s = make_splits(load_dataset(DATA, seed=0), seed=0)  # what the CLI loads with --seed 0
    return Splits(train=s.train, val=s.val, test=Withheld())  # type: ignore[arg-type]


def numbers(metrics: dict[str, Any]) -> list[tuple[int, Any, Any, Any]]:
    return [(r["trial"], r["params"], r["objective"], r["metrics"]) for r in metrics["trials"]]


def quiet(msg: str) -> None:
    pass


# ---------------------------------------------------------------------------- the space
@pytest.mark.parametrize(("space", "words"), [
    ({"autoencoder.lr": {"normal": [0, 1]}}, ["autoencoder.lr", "unknown distribution 'normal'"]),
    ({"autoencoder.lr": {"loguniform": [0, 1e-2]}}, ["autoencoder.lr", "0 < low"]),
    ({"autoencoder.lr": {"uniform": [0.1, 0.01]}}, ["autoencoder.lr", "low < high"]),
    ({"autoencoder.latent_dim": {"randint": [8.5, 64]}}, ["autoencoder.latent_dim", "integers"]),
    ({"autoencoder.lr": {"uniform": [0.1]}}, ["autoencoder.lr", "[low, high]"]),
    ({"autoencoder.lr": {"uniform": [0.1, 1], "choice": [1]}}, ["autoencoder.lr", "exactly one"]),
    ({"autoencoder.latent": {"randint": [8, 64]}}, ["'autoencoder.latent'", "not a field", "latent_dim"]),
    ({"encoder.lr": {"uniform": [0.1, 1]}}, ["'encoder.lr'", "not a field", "guard 'dae'"]),
    ({"autoencoder.lr.x": {"uniform": [0.1, 1]}}, ["'autoencoder.lr.x'", "not a field"]),
    ({"autoencoder.batch_size": {"choice": [0]}}, ["trial 0", "autoencoder.batch_size=0", "batch_size"]),
    ({"autoencoder": {"choice": [{}]}, "autoencoder.lr": {"uniform": [0.1, 1]}}, ["overlaps"]),
    ({}, ["non-empty mapping"]),
])
def test_a_bad_space_is_one_line_naming_the_key(space: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(SpecError) as exc:
        plan_search(cfg(space=space))
    one_line(exc.value, *words)


def test_a_bad_space_file_or_option_exits_2_before_reading_data(tmp_path: Path, capsys) -> None:
    from mmguard.cli.main import entrypoint

    bad = tmp_path / "space.yaml"
    bad.write_text("autoencoder.lr: {normal: [0, 1]}\n")
    good = tmp_path / "good.json"
    good.write_text(json.dumps(SPACE))
    base = ["tune", "--guard", "dae", "--data", "csv:/nonexistent.csv", "--trials", "2", "--quick"]
    cases = [(["--space", str(bad)], "unknown distribution"),
             (["--space", str(good), "--metric", "val_f1"], "needs a guard that can predict"),
             (["--space", str(good), "--scheduler", "asha"], "needs --engine ray"),
             (["--space", str(good), "--address", "127.0.0.1:1"], "--address needs --engine ray")]
    for extra, words in cases:
        assert entrypoint([*base, *extra, "--out", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], err
    assert not (tmp_path / "run").exists()


def test_cli_without_ray_exits_2_before_reading_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys) -> None:
    from mmguard.cli.main import entrypoint

    for mod in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "ray", None)
    space = tmp_path / "s.json"
    space.write_text(json.dumps(SPACE))
    rc = entrypoint(["tune", "--guard", "dae", "--data", "csv:/nonexistent.csv", "--space", str(space),
                     "--trials", "2", "--engine", "ray", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "mmguard[ray]" in err[0], err
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------- determinism
def test_trial_k_depends_on_the_search_seed_and_k_only() -> None:
    a = plan_search(cfg(trials=4, seed=3)).trials
    b = plan_search(cfg(trials=2, seed=3)).trials
    assert [t.config for t in a[:2]] == [t.config for t in b]  # more trials: the first ones unchanged
    assert a[0].params != plan_search(cfg(trials=1, seed=4)).trials[0].params
    one = parse_space({"autoencoder.lr": SPACE["autoencoder.lr"]})
    assert one.sample(3, 1)["autoencoder.lr"] == a[1].params["autoencoder.lr"]  # keys draw independently
    for t in a:
        p = t.params
        assert 1e-4 <= p["autoencoder.lr"] <= 1e-2 and p["autoencoder.batch_size"] in (32, 64)
        assert isinstance(p["autoencoder.latent_dim"], int) and 8 <= p["autoencoder.latent_dim"] <= 64
        assert t.config["autoencoder"]["epochs"] == 8  # --quick under the sampled values
        assert t.config["autoencoder"]["latent_dim"] == p["autoencoder.latent_dim"]
    ints = parse_space({"k": {"randint": [1, 3]}, "j": {"lograndint": [1, 4]}})
    drawn = [ints.sample(0, k) for k in range(200)]
    assert {d["k"] for d in drawn} == {1, 2, 3} and {d["j"] for d in drawn} == {1, 2, 3, 4}  # inclusive
    assert asha_rungs(8) == [1, 3, 8] and asha_rungs(30) == [4, 12, 30] and asha_rungs(2) == [1, 2]


def test_asha_scales_the_one_epochs_field_out_of_the_space() -> None:
    plan = plan_search(cfg(engine="ray", scheduler="asha"))
    assert plan.budget_key == "autoencoder.epochs" and plan.rungs == [1, 3, 8]  # --quick: 8 epochs
    with pytest.raises(SpecError, match="leave it out of the search space"):
        plan_search(cfg(engine="ray", scheduler="asha", space={"autoencoder.epochs": {"randint": [2, 9]}}))
    mmssl = {"compute.lr": {"loguniform": [1e-3, 1e-1]}}
    with pytest.raises(SpecError, match="--asha-budget"):
        plan_search(cfg(guard="mmssl", space=mmssl, engine="ray", scheduler="asha"))
    chosen = plan_search(cfg(guard="mmssl", space=mmssl, engine="ray", scheduler="asha", asha_budget="compute.epochs"))
    assert chosen.budget_key == "compute.epochs"


# ---------------------------------------------------------------------------- a local search
def test_search_resumes_from_a_partial_log_and_never_reads_test(splits: Splits, tmp_path: Path) -> None:
    ref = run_tune(cfg(trials=3), splits, tmp_path / "ref", log=quiet)
    assert ref["fitted"] == 3 and ref["reused"] == 0
    assert ref["best"]["objective"] == min(r["objective"] for r in ref["trials"])
    for name in ("config.json", "trials.jsonl", "metrics.json", "best_config.json", "report.md", "objective.png"):
        assert (tmp_path / "ref" / name).is_file(), name
    report = (tmp_path / "ref" / "report.md").read_text()
    assert "The test split was not read" in report and "| 1 | " in report
    assert ref["data"]["sizes"] == {"train": len(splits.train), "val": len(splits.val)}
    # a search killed after its first trial: trials.jsonl holds one record (and the config)
    run = tmp_path / "run"
    run_tune(cfg(trials=1), splits, run, log=quiet)
    lines = (run / "trials.jsonl").read_text().splitlines()
    assert len(lines) == 1
    (run / "metrics.json").unlink()
    logs: list[str] = []
    again = run_tune(cfg(trials=3), splits, run, log=logs.append)
    assert again["reused"] == 1 and again["fitted"] == 2 and "1 already done, 2 to fit" in logs[0]
    assert numbers(again) == numbers(ref)
    assert len((run / "trials.jsonl").read_text().splitlines()) == 3
    # another metric re-ranks the finished search without fitting anything
    other = run_tune(cfg(trials=3, metric="val_auroc"), splits, run, log=quiet)
    assert other["fitted"] == 0 and other["objective"]["mode"] == "max"
    assert other["best"]["objective"] == max(r["metrics"]["val_auroc"] for r in other["trials"])
    with pytest.raises(MMGuardError, match="different guard, data, space"):
        run_tune(cfg(trials=3, seed=1), splits, run, log=quiet)


def test_best_config_fits_with_mmguard_fit_to_the_best_objective(tmp_path: Path, capsys,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from mmguard.cli import dataopts
    from mmguard.cli.main import entrypoint
    from mmguard.guard import load_guard

    real_split = dataopts.split_data

    def split_without_test(*args: Any, **kw: Any) -> Splits:  # the CLI path must not read test either
        s = real_split(*args, **kw)
        return Splits(train=s.train, val=s.val, test=Withheld())  # type: ignore[arg-type]

    space = tmp_path / "space.yaml"
    space.write_text("autoencoder.lr: {loguniform: [1.0e-3, 1.0e-2]}\nautoencoder.latent_dim: {randint: [8, 32]}\n")
    with monkeypatch.context() as m:
        m.setattr(dataopts, "split_data", split_without_test)
        rc = entrypoint(["tune", "--guard", "dae", "--data", DATA, "--space", str(space), "--trials", "2",
                         "--quick", "--seed", "0", "--out", str(tmp_path / "run"), "--json"])
    out = capsys.readouterr().out
    assert rc == 0, out
    metrics = json.loads(out)
    best = metrics["best"]
    assert json.loads((tmp_path / "run" / "best_config.json").read_text()) == best["config"]
    assert entrypoint(["fit", "--guard", "dae", "--data", DATA, "--config", str(tmp_path / "run" / "best_config.json"),
                       "--seed", "0", "--out", str(tmp_path / "g")]) == 0
    guard = load_guard(tmp_path / "g")
    assert guard.config.model_dump(mode="json") == best["config"]
    s = make_splits(load_dataset(DATA, seed=0), seed=0)
    assert validation_metrics(guard, s.train, s.val, 0)["val_error"] == best["objective"]


# ---------------------------------------------------------------------------- Ray Tune
@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("ray.tune")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning", log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_tune_gives_the_local_trials_and_objectives(cluster, splits: Splits, tmp_path: Path, capsys) -> None:
    from mmguard.cli.main import entrypoint

    local = run_tune(cfg(trials=3), splits, tmp_path / "local", log=quiet)
    space = tmp_path / "space.json"
    space.write_text(json.dumps(SPACE))
    argv = ["tune", "--guard", "dae", "--data", DATA, "--space", str(space), "--trials", "3", "--quick",
            "--out", str(tmp_path / "ray"), "--json"]
    assert entrypoint([*argv, "--engine", "ray"]) == 0
    summary = json.loads(capsys.readouterr().out)  # stdout holds the summary only (Tune's tables kept off it)
    assert summary["engine"] == "ray" and summary["fitted"] == 3
    remote = json.loads((tmp_path / "ray" / "metrics.json").read_text())
    assert numbers(remote) == numbers(local)
    assert remote["best"] == local["best"]
    best = [(tmp_path / d / "best_config.json").read_bytes() for d in ("local", "ray")]
    assert best[0] == best[1]
    assert entrypoint([*argv, "--engine", "local"]) == 0  # the local engine resumes the Ray run
    resumed = json.loads(capsys.readouterr().out)
    assert resumed["fitted"] == 0 and resumed["reused"] == 3
    # an error of the trial itself (a DataError raised inside the fit) surfaces once, as itself, in both engines
    bad = {"calibrate_over": {"choice": ["groups"]}}
    for engine in ("local", "ray"):
        with pytest.raises(MMGuardError) as exc:
            run_tune(cfg(trials=1, space=bad, engine=engine), splits, tmp_path / f"bad-{engine}", log=quiet)
        one_line(exc.value, "calibrate_over='groups'", "episode")
