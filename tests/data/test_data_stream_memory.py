"""Issue #13's target: a dataset 3x larger than the memory budget set for the test trains and evaluates with
bounded memory (peak RSS reported), measured by ``benchmarks/stream_memory.py`` in child processes.

The budget bounds the growth of the peak resident set over the process ready to work (torch and mmguard
imported, guard built, data opened): 384 MiB, for a twin file whose rows take 3.05x that as float32 (25,000
64x64 frames, 1,172 MiB). Measured on the 2-core VM with 210 episodes: growth 309 MiB for the whole file, 325
MiB for a third of it (the fixed part varies by ~20 MiB from run to run). The growth is mostly fixed (torch's
kernels, the model, the drift detector's bounded sample): a third of the file must not grow less than the
whole file, up to 48 MiB — so the bound holds because memory does not scale with the dataset, not because the
dataset is small.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUDGET_MB = 384

pytestmark = pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")


def _run(data: str, out: Path) -> dict:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "stream_memory.py"), "--data", data, "--modes", "stream",
           "--epochs", "1", "--buffer-mb", "16", "--chunk-mb", "4", "--drift-pool", "200", "--threads", "1",
           "--budget-mb", str(BUDGET_MB), "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(out.read_text())


def test_dataset_three_times_the_budget_trains_and_evaluates_in_bounded_memory(tmp_path: Path) -> None:
    from test_data_stream import smooth_simulate

    from mmguard.twin.interface import CameraConfig
    from mmguard.twin.storage import generate

    episodes = 250
    path = generate("arm", episodes, 100, tmp_path / "big.h5", seed=2, camera=CameraConfig(64, 64),
                    simulate=smooth_simulate)
    whole = _run(str(path), tmp_path / "whole.json")
    run = whole["runs"][0]
    assert whole["dataset_over_budget"] >= 3.0, whole
    assert run["growth_mb"] <= BUDGET_MB, run  # fit and evaluation peaks
    assert run["splits"] == [17_500, 3_800, 3_700]  # every row of the file was used (250 episodes, 70/15/15)
    assert run["val_history"][0][0] > 0 and run["faulty_error"] > 0 and run["auroc"] is not None
    third = _run(f"{path}?episodes=0-{episodes // 3 - 1}", tmp_path / "third.json")["runs"][0]
    assert third["dataset_mb"] < run["dataset_mb"] / 2.5
    assert run["growth_mb"] <= third["growth_mb"] + 48, (run["growth_mb"], third["growth_mb"])
