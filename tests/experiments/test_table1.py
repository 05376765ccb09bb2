"""The table-1 report of a bench run (``mmguard mmssl table1``): paired ratios, orderings, errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from mmguard.cli.main import entrypoint
from mmguard.errors import CheckpointError
from mmguard.experiments.mmssl.table1 import PAPER_TABLE1, load_units, render_table1, table1_summary

# faulty combined error per (guard, seed): mmgan beats mmssl on seed 0 only ("mixed")
FAULTY = {"mmae": (1.0, 2.0), "mmssl": (0.5, 0.4), "mmgan": (0.4, 0.8), "dae": (0.2, 0.3)}


def _unit(guard: str, seed: int) -> dict:
    faulty = FAULTY[guard][seed]
    errs = {"clean": {"camera": 0.01, "kin": 0.02 * (seed + 1), "combined": 0.01 + 0.02 * (seed + 1)},
            "faulty": {"camera": faulty / 4, "kin": 3 * faulty / 4, "combined": faulty}}
    conds = {"mix": {"origin": "mix", "errors": errs,
                     "detection": {"auroc": 0.9 + 0.01 * seed, "false_alarm_rate": 0.01, "detection_rate": 0.8,
                                   "localisation": None if guard == "mmgan" else 0.95}},
             "camera:blur": {"origin": "unseen", "errors": {"faulty": {"combined": 2 * faulty}}},
             "camera:missing": {"origin": "trained", "errors": {"faulty": {"combined": faulty}}}}
    return {"guard": guard, "seed": seed, "capabilities": {"flag": guard != "dae", "correct": True},
            "fit_s": 10.0 + seed, "eval_s": 2.0, "conditions": conds,
            "fit": {"train": {"best_epoch": [28 + seed], "epochs_run": 30}}}


@pytest.fixture
def run(tmp_path: Path) -> Path:
    d = tmp_path / "run"
    (d / "units").mkdir(parents=True)
    guards = list(FAULTY)
    (d / "config.json").write_text(json.dumps({"method": "bench", "guards": guards, "seeds": [0, 1],
                                               "data": {"source": "twin:arm.h5"}}))
    for g in guards:
        (d / "units" / g).mkdir()
        for s in (0, 1):
            (d / "units" / g / f"seed{s}.json").write_text(json.dumps({"fingerprint": "x", "payload": _unit(g, s)}))
    return d


def test_ratios_are_paired_per_seed_and_orderings_judged_on_every_seed(run: Path) -> None:
    s = table1_summary(*load_units(run))
    # paired: mean of (0.5/1.0, 0.4/2.0) = 0.35, not 0.45/1.5 = 0.3
    assert s["ratios"]["mmssl"]["faulty_vs_mmae"][0] == pytest.approx(0.35)
    assert s["ratios"]["mmgan"]["faulty_vs_mmssl"][0] == pytest.approx((0.4 / 0.5 + 0.8 / 0.4) / 2)
    assert s["ratios"]["mmssl"]["paper_vs_mmae"] == pytest.approx(PAPER_TABLE1["mmssl"] / PAPER_TABLE1["mmae"])
    verdicts = {(p["better_in_paper"], p["worse_in_paper"]): p["verdict"] for p in s["pairs"]}
    assert verdicts == {("mmgan", "mmae"): "reproduces", ("mmssl", "mmae"): "reproduces",
                        ("mmssl", "mmgan"): "mixed"}
    assert s["by_origin"]["unseen"]["mmae"][0] == pytest.approx(3.0)  # mean of 2.0 and 4.0
    assert "dae" not in s["detection"]  # it does not flag
    assert s["detection"]["mmssl"]["auroc"][0] == pytest.approx(0.905)
    assert math.isnan(s["detection"]["mmgan"]["localisation"][0])  # undefined on every seed: not a 0
    assert s["convergence"]["mmae"]["train"]["best_epoch"][0] == pytest.approx(28.5)
    assert s["unit_seconds_total"] == pytest.approx(4 * (10 + 11 + 2 * 2))


def test_report_renders_every_section(run: Path) -> None:
    text = render_table1(table1_summary(*load_units(run)))
    for heading in ("Table-1 layout", "paper's ratios", "Pairwise orderings", "by fault origin", "per family",
                    "Detection", "Convergence", "Compute"):
        assert heading in text
    assert "2 of 3 pairwise orderings reproduce" in text


def test_unfinished_or_foreign_runs_are_refused(run: Path, tmp_path: Path) -> None:
    (run / "units" / "mmgan" / "seed1.json").unlink()
    with pytest.raises(CheckpointError, match="mmgan/seed1"):
        load_units(run)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"method": "mmssl"}))
    with pytest.raises(CheckpointError, match="not a bench run"):
        load_units(tmp_path / "other")


def test_cli_writes_markdown_and_json(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t1.md"
    assert entrypoint(["mmssl", "table1", str(run), "--out", str(out)]) == 0
    assert "Table-1 layout" in out.read_text()
    assert json.loads(out.with_suffix(".json").read_text())["seeds"] == [0, 1]
    assert entrypoint(["mmssl", "table1", str(tmp_path / "nowhere")]) == 2
    assert "not a bench run directory" in capsys.readouterr().err
