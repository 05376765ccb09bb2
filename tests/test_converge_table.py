"""benchmarks/converge_table.py: pairing is checked, ratios are per seed, origins average families."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "converge_table.py"


@pytest.fixture(scope="module")
def ct() -> Any:
    spec = importlib.util.spec_from_file_location("converge_table", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cond(values: list[float]) -> dict[str, Any]:
    return {"errors": {s: {"combined": {"seeds": values}} for s in ("faulty", "clean")}}


def _metrics(guards: dict[str, dict[str, list[float]]], none: list[float]) -> dict[str, Any]:
    """A metrics.json of two seeds: per guard, per condition, the per-seed combined errors."""
    return {"data": {"content": "abc", "split": {"split_seed": 0}, "source": "twin:x"}, "seeds": [0, 1],
            "condition_origins": {"mix": "mix", "a": "trained", "b": "trained", "c": "unseen", "d": "common_cause"},
            "none": {"mix": _cond(none)},
            "guards": {g: {"capabilities": {"correct": True},
                           "conditions": {label: _cond(v) for label, v in conds.items()}}
                       for g, conds in guards.items()}}


def test_compare_pairs_per_seed_and_averages_the_families_of_an_origin(ct) -> None:
    short = _metrics({"dae": {"mix": [2.0, 4.0], "a": [1.0, 1.0], "b": [3.0, 5.0], "c": [1.0, 1.0],
                              "d": [1.0, 1.0]}}, none=[9.0, 9.0])
    long = _metrics({"dae": {"mix": [1.0, 3.0], "a": [0.0, 2.0], "b": [2.0, 2.0], "c": [1.0, 1.0],
                             "d": [1.0, 1.0]}}, none=[9.0, 9.0])
    ct.check_pairable(long, short)
    row = ct.compare(long, short, "dae")
    assert row["faulty"]["long_over_short"][0] == pytest.approx((0.5 + 0.75) / 2)  # mean of per-seed ratios
    assert row["faulty"]["seeds_lower"] == 2
    assert row["origins"]["trained"]["short"][0] == pytest.approx((2.0 + 3.0) / 2)  # seeds: mean(1,3)=2, mean(1,5)=3
    assert row["origins"]["trained"]["long"][0] == pytest.approx(1.5)


@pytest.mark.parametrize("change", ["none", "seeds", "content"])
def test_runs_that_cannot_be_paired_are_refused(ct, change: str) -> None:
    short = _metrics({"dae": {"mix": [1.0, 1.0]}}, none=[9.0, 9.0])
    long = copy.deepcopy(short)
    if change == "none":
        long["none"]["mix"]["errors"]["faulty"]["combined"]["seeds"] = [9.0, 9.5]
    elif change == "seeds":
        long["seeds"] = [1, 2]
    else:
        long["data"]["content"] = "other"
    with pytest.raises(SystemExit, match="cannot be paired|seeds differ"):
        ct.check_pairable(long, short)


def test_targets_take_rerun_baselines_from_the_long_run_and_the_others_from_table1(ct) -> None:
    short = _metrics({"dae": {"mix": [1.0, 1.0]}, "mmgan": {"mix": [0.5, 0.5]}, "restore": {"mix": [9.0, 9.0]},
                      "mmae": {"mix": [1.0, 1.0]}}, none=[9.0, 9.0])
    long = _metrics({"dae": {"mix": [2.0, 2.0]}, "restore": {"mix": [1.0, 1.0]}, "mmae": {"mix": [4.0, 2.0]}},
                    none=[9.0, 9.0])
    long["guards"]["restore"]["conditions"]["mix"]["detection"] = {
        k: {"mean": 0.5, "std": 0.0} for k in ("auroc", "false_alarm_rate", "detection_rate", "localisation")}
    out = ct.targets(long, short)
    assert out["faulty / dae (long budget)"]["ratio"][0] == pytest.approx(0.5)
    assert out["faulty / mmgan (table-1 budget)"]["ratio"][0] == pytest.approx(2.0)
    assert out["faulty / mmgan (table-1 budget)"]["seeds_lower"] == 0
    assert out["clean / mmae (long budget)"]["ratio"][0] == pytest.approx((0.25 + 0.5) / 2)
