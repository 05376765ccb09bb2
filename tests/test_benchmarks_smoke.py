"""benchmarks/gpu_check.py runs on a machine without a GPU (CPU columns only, GPU columns "n/a").

It runs in ``--quick`` mode in a subprocess, as CI would: exit code 0, a JSON with every section,
and the CPU bf16 parity within its stated tolerance.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_quick_runs_without_a_gpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--quick", "--out", str(out),
                          "--threads", "1"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["errors"] == [] and data["skipped"] == []
    assert data["env"]["quick"] and data["env"]["threads"] == 1
    training = {(r["what"], r["device"], r["precision"]): r for r in data["training"]}
    for what in ("encoder_step", "train_autoencoder"):
        assert training[(what, "cpu", "fp32")]["samples_per_s"] > 0
    guards = set(data["fits"])
    assert {"mmssl", "mmae", "dae", "emma"} <= guards
    ops = {(r["guard"], r["op"]) for r in data["inference"] if r["device"] == "cpu"}
    assert {("mmssl", "score"), ("mmssl", "transform"), ("emma", "predict")} <= ops
    for r in data["inference"]:
        assert r["p50_ms"] > 0 and r["p99_ms"] >= r["p50_ms"] and r["samples_per_s"] > 0
    cpu_bf16 = {r["guard"]: r for r in data["parity"] if r["label"] == "bf16-cpu"}
    assert set(cpu_bf16) == guards and all(r["within"] for r in cpu_bf16.values())
    assert cpu_bf16["emma"]["precision"] == "fp32"  # EMMA keeps fp32 (docs/devices.md)
    assert "(c) parity" in res.stdout and "[gpu_check" in res.stderr
    if not torch.cuda.is_available():
        assert not any(r["device"] == "cuda" for r in data["training"] + data["inference"] + data["parity"])
        assert "| n/a |" in res.stdout


def test_stage1_flops_quick_runs_and_reports_the_peak_fraction(tmp_path: Path) -> None:
    out = tmp_path / "s1.json"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "stage1_flops.py"
    proc = subprocess.run([sys.executable, str(script), "--steps", "1", "--repeats", "1", "--epochs", "1",
                           "--matmul", "256", "--loop-samples", "128", "--no-compile", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert 60e6 < result["flops_per_training_sample"] < 63e6  # the 61.5 MFLOP, counted
    variants = {row["variant"] for row in result["steps"]}
    assert {"eager", "nchw_decoder", "channels_last", "fused_adam"} <= variants
    assert all(0 < row["peak_fraction"] for row in result["steps"])
    assert result["training_loop"]["train_samples"] == 128


def test_design_experiments_run_on_validation_and_accumulate_variants(tmp_path: Path) -> None:
    """emma_design.py and restore_design.py (their shared validation setup, design_common.py) run in
    --quick mode; a second call adds its variants to the same JSON."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "emma.json"

    def emma(variants: str) -> dict:
        res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "emma_design.py"), "--data", "toy?n=400",
                              "--quick", "--variants", variants, "--out", str(out)], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
        return json.loads(out.read_text())

    emma("thesis")
    data = emma("normalised-rho1")
    assert set(data["variants"]) == {"thesis", "normalised-rho1"} and data["split"] == "validation"
    assert data["chosen"] in data["variants"]
    for v in data["variants"].values():
        assert 0.0 <= v["macro_f1"]["mix"] <= 1.0 and v["attention_ratio"]
        assert set(v["conditions"]) >= {"clean", "mix"}
    scales = data["variants"]["normalised-rho1"]["fit"]["potentials"]
    assert all(p["psi_scale"] != [1.0] for p in scales.values())  # the normalised potential was calibrated
    rout = tmp_path / "restore.json"
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "restore_design.py"), "--data", "toy?n=400",
                          "--quick", "--variants", "dae", "--out", str(rout)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = json.loads(rout.read_text())["variants"]["dae"]["conditions"]
    assert rows["mix"]["errors"]["faulty"]["combined"] > 0
