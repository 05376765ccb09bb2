"""docs/write-a-guard.md holds: the one-file example guard registers through $MMGUARD_PLUGINS,
is listed, fits, saves/loads, restores a broken modality better than leaving it, and runs in
`mmguard bench` — without any edit to mmguard itself. Runs in subprocesses so the plugin does
not leak into this test session's registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "linear_restore.py"


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MMGUARD_PLUGINS": str(EXAMPLE), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "mmguard.cli.main", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)


def test_listed_with_capabilities(tmp_path: Path) -> None:
    res = _run(["guards", "--json"], tmp_path)
    assert res.returncode == 0, res.stderr
    guards = json.loads(res.stdout)
    assert guards["linear_restore"]["capabilities"] == {"flag": True, "correct": True, "predict": False}


def test_restores_a_stuck_modality_and_round_trips(tmp_path: Path) -> None:
    code = f"""
import torch
from mmguard.data import load_dataset
from mmguard.data.splits import make_splits
from mmguard.faults import apply_faults, single_fault_spec
from mmguard.guard import load_guard, load_plugin, create_guard
load_plugin({str(EXAMPLE)!r})
splits = make_splits(load_dataset("toy?n=600&redundancy=0.9"), seed=0)
g = create_guard("linear_restore")
g.fit(splits, seed=0)
g.save("g")
h = load_guard("g")
spec = single_fault_spec("m0", "stuck_at", {{"value": 8.0}})
bad = apply_faults(splits.test, spec, seed=1)
assert torch.equal(h.score(bad), g.score(bad))
flag = g.flag(bad)
fixed = g.transform(bad)
err_fixed = (fixed.modalities["m0"] - splits.test.modalities["m0"]).pow(2).mean()
err_bad = (bad.modalities["m0"] - splits.test.modalities["m0"]).pow(2).mean()
clean_flag = g.flag(splits.test).any(1).float().mean()
print(float(flag[:, 0].float().mean()), float(err_fixed / err_bad), float(clean_flag))
"""
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    detected, ratio, clean_flagged = (float(v) for v in res.stdout.split())
    assert detected > 0.9  # the stuck modality is flagged
    assert ratio < 0.2  # and restored from the others far better than leaving it
    assert clean_flagged < 0.1  # clean test samples are rarely flagged (calibrated to 1 % on validation)


def test_runs_in_bench_without_editing_mmguard(tmp_path: Path) -> None:
    res = _run(["bench", "--data", "toy?n=300", "--guards", "linear_restore,mmae", "--seeds", "2", "--quick",
                "--no-sweep", "--out", "b"], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert set(metrics["guards"]) == {"linear_restore", "mmae"}
    assert (tmp_path / "b" / "units" / "linear_restore" / "seed1.json").is_file()
    assert "linear_restore" in (tmp_path / "b" / "report.md").read_text()
