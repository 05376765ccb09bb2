"""`mmguard guards / fit / score / transform / bench` through the real entry point, in-process.

Data: a small CSV (240 rows) with two vector modalities driven by one 2-d latent ("left": 4
columns around +50, "right": 3 columns around -20), a yes/no class target and a ``batch``
column 1/2/3 (80 rows each) mapped as meta, so an explicit group split can be asked for.
Every bad input must give exit code 2, exactly one stderr line ``mmguard: error: ...`` naming
the problem, and no traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mmguard.cli.main import entrypoint
from mmguard.data import load_dataset
from mmguard.guard import available_guards, load_guard

PNG = b"\x89PNG\r\n\x1a\n"
N = 240
CAPABILITIES = {
    "emma": {"flag": True, "correct": False, "predict": True},
    "mmssl": {"flag": True, "correct": True, "predict": False},
    "mmae": {"flag": True, "correct": True, "predict": False},
    "dae": {"flag": True, "correct": True, "predict": False},
}
BENCH_GUARDS = "mmae,dae,mmssl,emma"


def table_text(n: int = N, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 2))
    left = 5 * (z @ rng.normal(size=(2, 4))) + 0.2 * rng.normal(size=(n, 4)) + 50
    right = 5 * (z @ rng.normal(size=(2, 3))) + 0.2 * rng.normal(size=(n, 3)) - 20
    label = np.where(z[:, 0] + 0.2 * z[:, 1] > 0, "yes", "no")
    batch = np.repeat([1, 2, 3], n // 3)
    rows = ["a0,a1,a2,a3,b0,b1,b2,label,batch"]
    rows += [",".join(f"{v:.5f}" for v in [*left[i], *right[i]]) + f",{label[i]},{batch[i]}" for i in range(n)]
    return "\n".join(rows) + "\n"


MAPPING = "modalities:\n  left: ['a*']\n  right: [b0, b1, b2]\ntarget: label\nmeta: {batch: batch}\n"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cli_guards")
    (d / "data.csv").write_text(table_text())
    (d / "map.yaml").write_text(MAPPING)
    (d / "broken.yaml").write_text("autoencoder: [1, 2\n  - : ::\n")
    (d / "unknown_key.yaml").write_text("wings: 2\n")
    return d


def run(capsys: pytest.CaptureFixture, args: list[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = entrypoint([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def data_args(files: Path) -> list[str]:
    return ["--data", f"csv:{files / 'data.csv'}", "--modalities", str(files / "map.yaml")]


def assert_user_error(rc: int, err: str, *words: str) -> str:
    assert rc == 2, (rc, err)
    assert "Traceback" not in err, err
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("mmguard: error: "), lines[0]
    for w in words:
        assert w.lower() in lines[0].lower(), (w, lines[0])
    return lines[0]


# ============================================================================ guards
def test_guards_json_lists_every_guard_with_capabilities(capsys) -> None:
    rc, out, err = run(capsys, ["guards", "--json"])
    assert rc == 0, err
    listed = json.loads(out)
    assert set(listed) == set(available_guards())
    for name, caps in CAPABILITIES.items():
        assert listed[name]["capabilities"] == caps, name
        assert listed[name]["name"] == name and listed[name]["summary"]
    rc, out, err = run(capsys, ["guards"])
    assert rc == 0, err
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert set(CAPABILITIES) <= set(lines)
    assert "flag,predict" in lines["emma"] and "flag,correct" in lines["mmssl"]


# ============================================================================ fit → score → transform
@pytest.fixture(scope="module")
def mmssl_dir(files: Path, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("fit") / "mmssl"
    import io
    from contextlib import redirect_stderr, redirect_stdout

    so, se = io.StringIO(), io.StringIO()
    with redirect_stdout(so), redirect_stderr(se):
        rc = entrypoint(["fit", "--guard", "mmssl", *data_args(files), "--quick", "--out", str(out), "--json"])
    assert rc == 0, se.getvalue()
    return out, json.loads(so.getvalue())


def test_fit_writes_a_loadable_guard(mmssl_dir) -> None:
    out, summary = mmssl_dir
    assert summary["guard"] == "mmssl"
    assert sum(summary["sizes"].values()) == N
    for f in ("guard.json", "config.json", "weights.safetensors"):
        assert (out / f).is_file(), f
    g = load_guard(out)
    assert g.name == "mmssl" and g.names == ("left", "right")
    # --quick means the class's quick settings
    assert g.config.autoencoder.epochs == type(g).quick_config["autoencoder"]["epochs"]


def test_score_csv_and_npz(mmssl_dir, files: Path, tmp_path: Path, capsys) -> None:
    guard_dir, _ = mmssl_dir
    rc, out, err = run(capsys, ["score", guard_dir, *data_args(files), "--out", tmp_path / "s.npz", "--json"])
    assert rc == 0, err
    summary = json.loads(out)
    with np.load(tmp_path / "s.npz") as z:
        scores, flags, names = z["scores"], z["flags"], z["modalities"]
    assert scores.shape == (N, 2) and scores.dtype == np.float32
    assert flags.shape == (N, 2) and flags.dtype == np.bool_
    assert names.tolist() == ["left", "right"]
    assert np.array_equal(flags, scores > 1.0)
    assert summary["n"] == N
    assert summary["flagged_fraction"] == pytest.approx(float(flags.any(1).mean()))
    # the same numbers as the Python API on the same data
    batch = load_dataset(f"csv:{files / 'data.csv'}", mapping=files / "map.yaml")
    assert np.array_equal(load_guard(guard_dir).score(batch).numpy(), scores)

    rc, out, err = run(capsys, ["score", guard_dir, *data_args(files), "--out", tmp_path / "s.csv"])
    assert rc == 0, err
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert lines[0].split(",") == ["score_left", "score_right", "flag_left", "flag_right"]
    assert len(lines) == N + 1
    table = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    assert table.shape == (N, 4)
    np.testing.assert_allclose(table[:, :2], scores, rtol=1e-5, atol=1e-6)
    assert np.array_equal(table[:, 2:].astype(bool), flags)


@pytest.mark.parametrize("suffix", [".h5", ".npz"])
def test_transform_writes_readable_raw_data(mmssl_dir, files: Path, tmp_path: Path, capsys, suffix: str) -> None:
    guard_dir, _ = mmssl_dir
    target = tmp_path / f"x{suffix}"
    rc, out, err = run(capsys, ["transform", guard_dir, *data_args(files), "--out", target])
    assert rc == 0, err
    back = load_dataset(f"{suffix[1:]}:{target}")
    orig = load_dataset(f"csv:{files / 'data.csv'}", mapping=files / "map.yaml")
    assert back.names == orig.names == ("left", "right")
    for n in orig.names:
        assert back.modalities[n].shape == orig.modalities[n].shape, n
    assert torch.equal(back.target.long(), orig.target.long())
    assert torch.equal(back.meta["batch"], orig.meta["batch"])
    expected = load_guard(guard_dir).transform(orig)
    for n in orig.names:
        assert torch.equal(back.modalities[n], expected.modalities[n]), n
    # raw units: left sits around +50, right around -20
    assert abs(float(back.modalities["left"].mean() - orig.modalities["left"].mean())) < 2.0
    assert abs(float(back.modalities["right"].mean() - orig.modalities["right"].mean())) < 2.0


def test_fit_with_explicit_group_split(files: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "g"
    rc, stdout, err = run(capsys, ["fit", "--guard", "mmae", *data_args(files), "--quick", "--split-by", "batch",
                                   "--train-groups", "1,2", "--test-groups", "3", "--out", out, "--json"])
    assert rc == 0, err
    sizes = json.loads(stdout)["sizes"]
    assert sizes["train"] + sizes["val"] == 160  # batches 1 and 2 (validation drawn from them)
    assert sizes["test"] == 80  # batch 3
    assert sizes["val"] == round(0.15 * 160)
    assert (out / "guard.json").is_file()


# ============================================================================ bench
def bench_args(files: Path, out: Path, guards: str = BENCH_GUARDS, *extra: str) -> list[str]:
    return ["bench", *data_args(files), "--guards", guards, "--seeds", "2", "--quick", "--no-sweep",
            "--out", str(out), *extra]


@pytest.fixture(scope="module")
def bench_dir(files: Path, tmp_path_factory) -> Path:
    import io
    from contextlib import redirect_stderr, redirect_stdout

    out = tmp_path_factory.mktemp("bench") / "run"
    so, se = io.StringIO(), io.StringIO()
    with redirect_stdout(so), redirect_stderr(se):
        rc = entrypoint(bench_args(files, out))
    assert rc == 0, se.getvalue()[-3000:]
    assert "resumed" not in se.getvalue()
    return out


def test_bench_writes_the_run_directory(bench_dir: Path) -> None:
    names = BENCH_GUARDS.split(",")
    for f in ("config.json", "metrics.json", "report.md", "errors.png"):
        assert (bench_dir / f).is_file(), f
    assert (bench_dir / "errors.png").read_bytes()[:8] == PNG
    metrics = json.loads((bench_dir / "metrics.json").read_text())
    assert set(metrics["guards"]) == set(names)
    assert metrics["seeds"] == [0, 1]
    report = (bench_dir / "report.md").read_text()
    for name in names:
        assert name in report, name
        assert metrics["guards"][name]["capabilities"] == CAPABILITIES[name]
        for seed in (0, 1):
            unit = json.loads((bench_dir / "units" / name / f"seed{seed}.json").read_text())
            assert unit["payload"]["guard"] == name and unit["payload"]["seed"] == seed
            meta = json.loads((bench_dir / "guards" / name / f"seed{seed}" / "guard.json").read_text())
            assert meta["kind"] == name
    # the two seeds are two different fits
    a = json.loads((bench_dir / "units" / "mmae" / "seed0.json").read_text())["payload"]["conditions"]["mix"]
    b = json.loads((bench_dir / "units" / "mmae" / "seed1.json").read_text())["payload"]["conditions"]["mix"]
    assert a["errors"] != b["errors"]


def test_bench_rerun_resumes_with_identical_metrics(bench_dir: Path, files: Path, capsys) -> None:
    before = json.loads((bench_dir / "metrics.json").read_text())
    units = {p: p.read_bytes() for p in (bench_dir / "units").rglob("seed*.json")}
    assert len(units) == 8
    rc, _, err = run(capsys, bench_args(files, bench_dir))
    assert rc == 0, err[-3000:]
    assert err.count("resumed") == 8, err
    assert "fitted in" not in err
    after = json.loads((bench_dir / "metrics.json").read_text())
    before.pop("wall_s"), after.pop("wall_s")
    assert after == before
    assert {p: p.read_bytes() for p in units} == units


def test_bench_refuses_other_settings_in_the_same_directory(bench_dir: Path, files: Path, capsys) -> None:
    """Other fault conditions in the same --out are refused, nothing written (more guards or seeds are
    not: a run grows, tests/experiments/test_resume.py)."""
    config = (bench_dir / "config.json").read_bytes()
    metrics = (bench_dir / "metrics.json").read_bytes()
    rc, _, err = run(capsys, bench_args(files, bench_dir, BENCH_GUARDS, "--no-families"))
    assert_user_error(rc, err, "different")
    assert (bench_dir / "config.json").read_bytes() == config
    assert (bench_dir / "metrics.json").read_bytes() == metrics


# ============================================================================ bad inputs
def bad_cases(files: Path, guard_dir: Path, tmp: Path) -> dict[str, tuple[list, tuple[str, ...]]]:
    data = data_args(files)
    fit = ["fit", "--quick", "--out", tmp / "never"]
    existing_dir = tmp / "a_directory.h5"
    existing_dir.mkdir(exist_ok=True)
    return {
        "unknown_guard": ([*fit, "--guard", "nosuchguard", *data], ("nosuchguard",)),
        "unknown_dataset": ([*fit, "--guard", "mmae", "--data", "nosuchdata"], ("nosuchdata",)),
        "missing_mapping": ([*fit, "--guard", "mmae", "--data", f"csv:{files / 'data.csv'}", "--modalities",
                             files / "missing.yaml"], ("missing.yaml",)),
        "malformed_config": ([*fit, "--guard", "mmae", *data, "--config", files / "broken.yaml"], ("broken.yaml",)),
        "config_unknown_key": ([*fit, "--guard", "mmae", *data, "--config", files / "unknown_key.yaml"],
                               ("wings",)),
        "absent_group": ([*fit, "--guard", "mmae", *data, "--split-by", "batch", "--train-groups", "1",
                          "--test-groups", "99"], ("99",)),
        "overlapping_groups": ([*fit, "--guard", "mmae", *data, "--split-by", "batch", "--train-groups", "1,2",
                                "--test-groups", "2"], ("both",)),
        "cuda_without_gpu": ([*fit, "--guard", "mmae", *data, "--device", "cuda"], ("cuda",)),
        "score_missing_guard_dir": (["score", tmp / "no_guard_here", *data], ("no_guard_here",)),
        "score_other_modalities": (["score", guard_dir, "--data", "toy?n=50"], ("modalities",)),
        "score_cuda_without_gpu": (["score", guard_dir, *data, "--device", "cuda"], ("cuda",)),
        "transform_txt": (["transform", guard_dir, *data, "--out", tmp / "x.txt"], (".txt",)),
        "transform_out_is_dir": (["transform", guard_dir, *data, "--out", existing_dir], ("directory",)),
        "bench_zero_seeds": (["bench", *data, "--guards", "mmae", "--seeds", "0", "--out", tmp / "never"],
                             ("--seeds",)),
    }


CASE_NAMES = ["unknown_guard", "unknown_dataset", "missing_mapping", "malformed_config", "config_unknown_key",
              "absent_group", "overlapping_groups", "cuda_without_gpu", "score_missing_guard_dir",
              "score_other_modalities", "score_cuda_without_gpu", "transform_txt", "transform_out_is_dir",
              "bench_zero_seeds"]


@pytest.mark.parametrize("case", CASE_NAMES)
def test_bad_input_is_one_line_exit_2(case: str, files: Path, mmssl_dir, tmp_path: Path, capsys) -> None:
    if "cuda" in case and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    guard_dir, _ = mmssl_dir
    cases = bad_cases(files, guard_dir, tmp_path)
    assert set(cases) == set(CASE_NAMES)
    args, words = cases[case]
    rc, _, err = run(capsys, args)
    assert_user_error(rc, err, *words)
    assert not (tmp_path / "never").exists()  # nothing written
    assert not (tmp_path / "x.txt").exists()
