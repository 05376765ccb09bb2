"""`mmguard emma run`, `mmguard eval` and `mmguard demo` through the real entry point.

Includes the CI check that ``emma run --quick`` on the real HTRU2 file finishes well within
three minutes.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import time
from pathlib import Path

import pytest
import yaml

from mmguard.cli.main import entrypoint

PNG = b"\x89PNG\r\n\x1a\n"
TOY = "toy?n=600"
MODELS = {"base", "without", "with"}
# The repository sits next to ../shared/data (as in tests/data/conftest.py).
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"

UNSEEN = {
    "scenario": {"name": "unseen", "selection": "exclusive"},
    "faults": [
        {"modality": "m0", "type": "stuck_at", "params": {"value": 2.0}, "rate": 0.2},
        {"modality": "m2", "type": "spikes", "params": {}, "rate": 0.2},
        {"modality": "m1", "type": "gain", "params": {"factor": 3.0}, "rate": 0.2, "group": "heat"},
        {"modality": "m2", "type": "offset", "params": {"value": 3.0}, "rate": 0.2, "group": "heat"},
    ],
}


def data_dir() -> Path:
    value = os.environ.get("MMGUARD_DATA_DIR", "").strip()
    root = Path(value) if value else DEFAULT_DATA_DIR
    if not any((root / "htru2" / f).is_file() for f in ("pulsar.csv", "HTRU_2.csv")):
        pytest.fail(f"HTRU2 data missing under {root}/htru2; set MMGUARD_DATA_DIR", pytrace=False)
    return root


def quiet(argv: list[str]) -> tuple[int, str, str]:
    """Run the CLI outside capsys (module fixtures), capturing stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = entrypoint(argv)
    return rc, out.getvalue(), err.getvalue()


def assert_user_error(capsys, argv: list[str], *needles: str) -> str:
    rc = entrypoint(argv)
    captured = capsys.readouterr()
    assert rc == 2, (argv, captured.out, captured.err)
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("mmguard: error:"), lines[0]
    assert "Traceback" not in captured.err + captured.out
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "toy_run"
    rc, stdout, stderr = quiet(["emma", "run", "--quick", "--dataset", TOY, "--out", str(out),
                                "--no-chapter4", "--json", "--epochs", "3"])
    assert rc == 0, stderr
    return out, json.loads(stdout)


# ---------------------------------------------------------------------------- emma run
def test_emma_run_toy_json_and_files(toy_run) -> None:
    out, summary = toy_run
    assert set(summary) == {"f1", "selected", "seeds", "timing"}
    assert summary["seeds"] == [0, 1]
    assert set(summary["f1"]) == MODELS
    for row in summary["f1"].values():
        assert list(row) == ["clean", "m0_noisy", "m1_noisy", "m2_noisy"]
        assert all(0.0 <= v[0] <= 1.0 and v[1] >= 0.0 for v in row.values())
    for name in ("config.json", "metrics.json", "report.md", "robustness_sweep.png", "total_energy.png",
                 "grid_with.png"):
        assert (out / name).is_file(), name
    assert (out / "robustness_sweep.png").read_bytes()[:8] == PNG
    for role in MODELS:
        assert (out / "models" / role / "weights.safetensors").is_file()
        assert (out / "models" / role / "config.json").is_file()
    assert (out / "preprocessing" / "weights.safetensors").is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["method"] == "emma" and config["quick"] and config["epochs"] == 3
    assert config["seeds"] == [0, 1] and config["dataset"] == TOY
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["f1"] == summary["f1"] and "chapter4" not in metrics


def test_emma_run_text_output(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    argv = ["emma", "run", "--quick", "--dataset", "toy?n=400&modality_dims=3,5", "--out", str(out),
            "--seeds", "1", "--seed", "7", "--epochs", "1", "--grid", "thesis-top", "--threads", "1"]
    assert entrypoint(argv) == 0
    text = capsys.readouterr().out
    assert "over 1 seeds" in text and "m1_noisy" in text and "with" in text
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["seeds"] == [7] and len(metrics["grid"]["with"]) == 1
    assert metrics["selected"]["with"]["rho"] == 1e-4
    assert metrics["conditions"] == ["clean", "m0_noisy", "m1_noisy"]


def test_emma_run_quick_htru2_under_three_minutes(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("MMGUARD_DATA_DIR", str(data_dir()))
    out = tmp_path / "htru2"
    t0 = time.perf_counter()
    rc = entrypoint(["emma", "run", "--quick", "--out", str(out)])
    wall = time.perf_counter() - t0
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert wall < 180.0, f"emma run --quick on HTRU2 took {wall:.0f} s"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["sizes"] == {"train": 11992, "val": 2953, "test": 2953}  # thesis table 6.1
    assert metrics["data"]["positives"] == {"train": 1098, "val": 270, "test": 271}
    assert metrics["conditions"] == ["clean", "ip_noisy", "dm_noisy"]
    assert set(metrics["f1"]) == MODELS
    # even a quick run learns the task (the thesis reports F1 ~ 0.88 clean)
    assert all(metrics["f1"][m]["clean"][0] > 0.6 for m in MODELS), metrics["f1"]
    assert "ip_noisy" in captured.out and "base" in captured.out
    assert "thesis table 6.2" in (out / "report.md").read_text()
    assert "chapter4" not in metrics  # quick runs skip chapter 4 by default
    # the run re-evaluates under a common-cause failure of both modalities
    spec = tmp_path / "cc.yaml"
    spec.write_text(yaml.safe_dump({"faults": [
        {"modality": "ip", "type": "gaussian_noise", "params": {"sigma": 1.0}, "rate": 0.3, "group": "g"},
        {"modality": "dm", "type": "gaussian_noise", "params": {"sigma": 1.0}, "rate": 0.3, "group": "g"}]}))
    assert entrypoint(["eval", "--run", str(out), "--faults", str(spec), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["counts"] == {"all": 2953, "clean": 2067, "ip:gaussian_noise+dm:gaussian_noise": 886}


# ---------------------------------------------------------------------------- eval
def test_eval_unseen_faults_with_common_cause(toy_run, tmp_path: Path, capsys) -> None:
    run_dir, _ = toy_run
    spec = tmp_path / "unseen.yaml"
    spec.write_text(yaml.safe_dump(UNSEEN))
    result_path = tmp_path / "res" / "f.json"
    assert entrypoint(["eval", "--run", str(run_dir), "--faults", str(spec), "--out", str(result_path)]) == 0
    text = capsys.readouterr().out
    assert "m1:gain+m2:offset" in text and "written to" in text
    res = json.loads(result_path.read_text())
    counts = res["counts"]
    n = json.loads((run_dir / "metrics.json").read_text())["data"]["sizes"]["test"]
    assert counts["all"] == n
    assert set(counts) == {"all", "clean", "m0:stuck_at", "m2:spikes", "m1:gain+m2:offset"}
    assert sum(v for k, v in counts.items() if k != "all") == n
    assert set(res["f1"]) == MODELS
    for row in res["f1"].values():
        assert set(row) == set(counts)
        assert all(len(v) == 2 and 0.0 <= v[0] <= 1.0 and v[1] >= 0.0 for v in row.values())
    assert res["method"] == "emma" and res["run"] == str(run_dir) and res["seed"] == 0
    assert res["spec"]["scenario"]["selection"] == "exclusive"
    # --json prints the same numbers; the seed moves the selection but not the counts
    assert entrypoint(["eval", "--run", str(run_dir), "--faults", str(spec), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["f1"] == res["f1"]
    assert entrypoint(["eval", "--run", str(run_dir), "--faults", str(spec), "--json", "--seed", "4"]) == 0
    other = json.loads(capsys.readouterr().out)
    assert other["counts"] == counts and other["f1"] != res["f1"]


def test_eval_json_spec(toy_run, tmp_path: Path, capsys) -> None:
    run_dir, _ = toy_run
    spec = tmp_path / "s.json"
    spec.write_text(json.dumps({"faults": [{"modality": "m1", "type": "missing", "rate": 1.0}]}))
    assert entrypoint(["eval", "--run", str(run_dir), "--faults", str(spec), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res["counts"]) == {"all", "m1:missing"}


def test_eval_detects_different_data(toy_run, tmp_path: Path, capsys) -> None:
    run_dir, _ = toy_run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    config["dataset"] = "toy?n=601"
    (copy / "config.json").write_text(json.dumps(config))
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"faults": []}))
    assert_user_error(capsys, ["eval", "--run", str(copy), "--faults", str(spec)], "differ")


# ---------------------------------------------------------------------------- user errors
def test_eval_errors(toy_run, tmp_path: Path, capsys) -> None:
    run_dir, _ = toy_run
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(UNSEEN))
    malformed = tmp_path / "bad.yaml"
    malformed.write_text("faults: [\n  - {modality: m0\n")
    unknown_mod = tmp_path / "mod.yaml"
    unknown_mod.write_text(yaml.safe_dump({"faults": [{"modality": "ip", "type": "offset", "rate": 0.5}]}))
    unknown_type = tmp_path / "type.yaml"
    unknown_type.write_text(yaml.safe_dump({"faults": [{"modality": "m0", "type": "warp_drive"}]}))
    bad_rate = tmp_path / "rate.yaml"
    bad_rate.write_text(yaml.safe_dump({"faults": [{"modality": "m0", "type": "offset", "rate": 1.5}]}))
    assert_user_error(capsys, ["eval", "--run", str(tmp_path / "nope"), "--faults", str(good)], "nope")
    assert_user_error(capsys, ["eval", "--run", str(tmp_path), "--faults", str(good)], "metrics.json")
    assert_user_error(capsys, ["eval", "--run", str(run_dir), "--faults", str(malformed)], "malformed YAML")
    assert_user_error(capsys, ["eval", "--run", str(run_dir), "--faults", str(unknown_mod)], "'ip'")
    assert_user_error(capsys, ["eval", "--run", str(run_dir), "--faults", str(unknown_type)], "'warp_drive'")
    assert_user_error(capsys, ["eval", "--run", str(run_dir), "--faults", str(bad_rate)], "rate")
    assert_user_error(capsys, ["eval", "--run", str(run_dir), "--faults", str(tmp_path / "absent.yaml")],
                      "absent.yaml")
    assert_user_error(capsys, ["eval", "--run", str(run_dir)], "--faults")


@pytest.mark.parametrize("argv, needle", [
    (["--grid", "bogus"], "bogus"),
    (["--dataset", "nosuch"], "nosuch"),
    (["--seeds", "0"], "--seeds"),
    (["--epochs", "0"], "--epochs"),
    (["--anneal", "sometimes"], "anneal"),
    (["--dataset", "toy?n=600&bogus=1"], "bogus"),
    (["--dataset", "wave"], "2 modalities"),
    (["--dataset", "toy?n=600&num_classes=1"], "num_classes"),
])
def test_emma_run_errors(tmp_path: Path, capsys, argv: list[str], needle: str) -> None:
    out = tmp_path / "run"
    assert_user_error(capsys, ["emma", "run", "--quick", "--out", str(out), *argv], needle)
    assert not out.exists()  # the run directory is created only once training succeeded


def test_emma_run_out_is_a_file(tmp_path: Path, capsys) -> None:
    f = tmp_path / "file.txt"
    f.write_text("x")
    argv = ["emma", "run", "--quick", "--dataset", TOY, "--out", str(f)]
    assert_user_error(capsys, argv, "not a directory")
    assert_user_error(capsys, ["emma", "run", "--quick"], "--out")


# ---------------------------------------------------------------------------- demo
def test_demo(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    assert entrypoint(["demo", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "# mmguard demo" in captured.out and "Traceback" not in captured.err
    for name in ("summary.json", "summary.md", "faults/preview.png", "emma/metrics.json", "emma/report.md",
                 "emma_unseen_faults.json", "faults/unseen.yaml", "faults/training_schedule.yaml",
                 "faults/corruption_stats.json"):
        assert (out / name).is_file(), name
    assert (out / "faults" / "preview.png").read_bytes()[:8] == PNG
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == "toy?n=4000" and summary["seed"] == 0
    assert set(summary["emma_test_f1"]) == MODELS and set(summary["unseen_faults_f1"]) == MODELS
    counts = summary["unseen_counts"]
    assert "m0:offset+m1:gain" in counts  # the common-cause group
    assert sum(v for k, v in counts.items() if k != "all") == counts["all"]
    for stats in summary["corruption"]["training_schedule"].values():
        assert stats["corrupted_fraction"] == pytest.approx(0.5 / 3, abs=1e-3)
    assert "emma/metrics.json" in summary["outputs"]
    # the story comes first: how much of a downstream model's clean performance survives each fault
    assert captured.out.index("Does the downstream model keep working") < captured.out.index("## EMMA")
    story = summary["downstream"]
    assert set(story["retention"]) == {"trained", "unseen", "common_cause"}
    for rows in story["retention"].values():
        assert set(rows) == {"oracle", "none", "peer", "dae", "mmssl"} and rows["oracle"] == 1.0
    assert (out / "downstream" / "downstream.png").read_bytes()[:8] == PNG
    assert "Downstream task `phase`" in (out / "downstream" / "report.md").read_text()
    md = (out / "summary.md").read_text()
    assert "faults never seen in training" in md and "m0:offset+m1:gain" in md
