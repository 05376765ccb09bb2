"""`mmguard mmssl run` and `mmguard eval` on an MMSSL run, through the real entry point.

A tiny `arm` twin (12 episodes x 20 steps) is simulated once per module; the run uses quick
settings with one seed (the protocol, not the numbers, is under test here).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support import run_cli

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def twin_file(tmp_path_factory) -> Path:
    from mmguard.twin.storage import generate

    path = tmp_path_factory.mktemp("twin") / "arm.h5"
    generate("arm", 12, 20, path, seed=3, workers=1)
    return path


@pytest.fixture(scope="module")
def run_dir(twin_file, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("runs") / "mmssl"
    rc, stdout, err = run_cli(["mmssl", "run", "--data", str(twin_file), "--out", str(out), "--quick",
                               "--seeds", "1", "--threads", "1", "--json"])
    assert rc == 0, err
    return out, json.loads(stdout)


def test_run_directory_and_metrics_schema(run_dir):
    out, printed = run_dir
    for name in ("config.json", "metrics.json", "report.md", "errors.png", "families.png", "severity.png",
                 "latent_tsne.png"):
        assert (out / name).is_file(), name
    for name in ("errors.png", "families.png", "severity.png", "latent_tsne.png"):
        assert (out / name).read_bytes()[:8] == PNG
    for role in ("mmae", "dae", "compute"):
        assert (out / "models" / "seed0" / role / "weights.safetensors").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    for model in ("mmssl", "mmae", "dae"):
        for split in ("clean", "faulty"):
            for group in ("camera", "sensor", "combined"):
                mean, std = metrics["errors"][model][split][group]
                assert mean >= 0 and std >= 0
            row = metrics["errors"][model][split]
            assert row["combined"][0] == pytest.approx(row["camera"][0] + row["sensor"][0], rel=1e-6)
    for key in ("auroc", "f1", "false_alarm_rate"):
        mean, _std = metrics["detection"][key]
        assert 0.0 <= mean <= 1.0
    assert {"no_amplification", "no_renormalization", "no_contraction"} <= {
        m.removeprefix("mmssl_") for m in metrics["errors"]}
    assert {f["origin"] for f in metrics["families"].values()} == {"trained", "unseen"}
    assert "common_cause:unseen" in metrics["families"]
    for member, c in metrics["contraction"].items():
        if member != "mmssl_no_contraction":
            assert c["upper_bound"][0] < 1.0 and c["empirical_max"][0] <= c["upper_bound"][0] + 1e-5
    assert printed["errors"]["mmssl"] == metrics["errors"]["mmssl"]
    config = json.loads((out / "config.json").read_text())
    assert config["method"] == "mmssl" and config["seeds"] == [0]


def test_routing_bypasses_unflagged_samples_exactly_and_corrects_flagged_ones(run_dir):
    """Per sample, on the test split of the saved run: every sample below the gate gets the MMAE's
    reconstruction bit for bit; flagged samples get the corrected latent's (different) one; both
    kinds occur on the faulty mix, so neither half of the assertion is vacuous."""

    from mmguard.experiments.mmssl.config import MmsslRunConfig
    from mmguard.experiments.mmssl.experiment import load_splits
    from mmguard.faults import apply_faults
    from mmguard.faults.scenarios import training_spec
    from mmguard.mmssl.pipeline import MmsslModels

    out, _ = run_dir
    cfg = MmsslRunConfig(**{k: v for k, v in json.loads((out / "config.json").read_text()).items()
                            if k in MmsslRunConfig.model_fields})
    test = load_splits(cfg).test
    models = MmsslModels.load(out / "models" / "seed0")
    batch = apply_faults(test, training_spec(test), seed=11)
    outs, det = models.outputs(batch.modalities)
    flagged = det["flagged"][models.full]
    assert 0 < int(flagged.sum()) < len(batch)
    for name in batch.names:
        same = (outs["mmssl"][name] == outs["mmae"][name]).reshape(len(batch), -1).all(1)
        assert bool(same[~flagged].all())
        assert not bool(same[flagged].any())


def test_eval_reuses_the_run(run_dir, tmp_path):
    out, _ = run_dir
    spec = out / "faults" / "family_kinematics_drift.yaml"
    rc, stdout, err = run_cli(["eval", "--run", str(out), "--faults", str(spec), "--json",
                               "--out", str(tmp_path / "res.json")])
    assert rc == 0, err
    res = json.loads(stdout)
    assert res["method"] == "mmssl"
    assert set(res["counts"]) == {"all", "kinematics:drift"}
    assert res["errors"]["mmssl"]["kinematics:drift"]["combined"][0] > 0
    assert 0.0 <= res["detection"]["detection_rate"]["kinematics:drift"][0] <= 1.0
    assert "kinematics:drift" in res["detection"]["auroc"]
    rc, stdout, err = run_cli(["eval", "--run", str(out), "--faults", str(spec)])
    assert rc == 0 and "combined error" in stdout


@pytest.mark.parametrize("args, needle", [
    (["--data", "/nonexistent/twin.h5"], "no such file"),
    (["--modalities", "camera"], "at least 2 distinct modalities"),
    (["--modalities", "camera,sonar"], "unknown modality 'sonar'"),
    (["--optimizer", "rmsprop"], "optimizer"),
    (["--ae-epochs", "0"], "--ae-epochs"),
])
def test_bad_input_is_one_line_exit_2(twin_file, tmp_path, args, needle):
    base = ["mmssl", "run", "--out", str(tmp_path / "r"), "--quick"]
    if "--data" not in args:
        base += ["--data", str(twin_file)]
    rc, _out, err = run_cli(base + args)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mmguard: error:") and needle in lines[0], err
    assert not (tmp_path / "r").exists()


def test_not_a_twin_file_is_rejected(tmp_path):
    bad = tmp_path / "x.h5"
    bad.write_bytes(b"not hdf5")
    rc, _out, err = run_cli(["mmssl", "run", "--data", str(bad), "--out", str(tmp_path / "r"), "--quick"])
    assert rc == 2 and err.startswith("mmguard: error:") and len(err.strip().splitlines()) == 1
