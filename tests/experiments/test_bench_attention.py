"""The bench reports where an attending guard (EMMA) puts its weight when a modality fails (issue 12)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def test_bench_reports_the_attention_drop_on_the_failed_modality(tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "mmguard.cli.main", "bench", "--data", "toy?n=600", "--guards",
                          "emma", "--seeds", "2", "--quick", "--no-sweep", "--out", str(out)],
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    rows = metrics["attention"]["emma"]
    units = {s: json.loads((out / "units" / "emma" / f"seed{s}.json").read_text())["payload"] for s in (0, 1)}
    names = list(units[0]["conditions"]["clean"]["attention"])
    # every single-modality family is a row, and nothing else is
    singles = {label for label in units[0]["conditions"] if label.split(":")[0] in names}
    assert set(rows) == singles and len(rows) >= 2 * len(names)
    for label, row in rows.items():
        mod = row["modality"]
        assert label.startswith(f"{mod}:") and row["origin"] in ("trained", "unseen")
        under = [units[s]["conditions"][label]["attention"][mod]["failed"] for s in (0, 1)]
        clean = [units[s]["conditions"]["clean"]["attention"][mod]["all"] for s in (0, 1)]
        assert all(0.0 <= v <= 1.0 for v in under + clean)
        assert row["failed"][0] == pytest.approx(sum(under) / 2) and row["clean"][0] == pytest.approx(sum(clean) / 2)
        assert row["ratio"][0] == pytest.approx(sum(u / c for u, c in zip(under, clean, strict=True)) / 2)
        # the other modality is healthy in every sample of a single-modality family
        other = [n for n in names if n != mod]
        for n in other:
            assert units[0]["conditions"][label]["attention"][n]["failed"] is None
    report = (out / "report.md").read_text()
    assert "## Attention of `emma` on the failed modality" in report


def test_a_seed_that_switched_the_modality_off_is_left_out_of_the_ratio() -> None:
    """The ratio is paired over the seeds where the failed modality is attended on clean input; a seed
    with clean weight below ATTENDED (EMMA switched the camera off) is counted, not divided by."""
    from mmguard.experiments.harness import ATTENDED, _attention_drop

    def unit(clean_cam: float, under_cam: float) -> dict:
        att = {"camera": {"all": clean_cam, "failed": None, "healthy": None},
               "kinematics": {"all": 0.8, "failed": None, "healthy": None}}
        fault = {"camera": {"all": under_cam, "failed": under_cam, "healthy": None},
                 "kinematics": {"all": 0.8, "failed": None, "healthy": 0.8}}
        return {"conditions": {"clean": {"origin": "clean", "attention": att},
                               "camera:missing": {"origin": "trained", "attention": fault,
                                                  "detection": {"detection_rate": 1.0}}}}

    per_seed = {0: unit(0.4, 0.1), 1: unit(ATTENDED / 10, 0.0), 2: unit(0.5, 0.05)}
    row = _attention_drop(per_seed, [0, 1, 2])["camera:missing"]
    assert row["attended_seeds"] == 2
    assert row["ratio"][0] == pytest.approx((0.1 / 0.4 + 0.05 / 0.5) / 2)
    none = _attention_drop({0: unit(0.0, 0.0)}, [0])["camera:missing"]
    assert none["ratio"] is None and none["attended_seeds"] == 0
