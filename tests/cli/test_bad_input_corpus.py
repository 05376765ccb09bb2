"""The bad-input corpus: malformed files, configs and arguments through every CLI command.

Each case must give exit code 2, exactly one stderr line ``mmguard: error: ...`` that names the
problem (a keyword of the case), no traceback, and leave no output behind (nothing half-written).
Inputs are built once per module from the table below (malformed CSV / YAML / HDF5 / NPZ /
safetensors / JSON / configs, NaN and Inf, wrong shapes, unknown names, impossible sizes, paths
that are directories or lie under a file). A property-based part (hypothesis) throws arbitrary
text at the file readers.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support import run_cli

GOOD_CSV = "a,b,c,d,y,g\n" + "".join(
    f"{np.sin(i):.4f},{np.cos(i):.4f},{i % 7 / 7:.4f},{(i * 3) % 5 / 5:.4f},{i % 2},{i % 4}\n" for i in range(120)
)
GOOD_MAP = "modalities:\n  m1: [a, b]\n  m2: [c, d]\ntarget: y\nmeta: {g: g}\n"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Every input file the cases refer to, plus one fitted guard to corrupt copies of."""
    d = tmp_path_factory.mktemp("corpus")
    (d / "good.csv").write_text(GOOD_CSV)
    (d / "map.yaml").write_text(GOOD_MAP)
    (d / "ragged.csv").write_text("a,b,c,d,y,g\n1,2,3\n4,5,6,7,0,1\n")
    (d / "nan.csv").write_text(GOOD_CSV.replace("0.0000,", "nan,", 1))
    (d / "inf.csv").write_text(GOOD_CSV.replace("0.0000,", "inf,", 1))
    (d / "text.csv").write_text(GOOD_CSV.replace("0.0000,", "hello,", 1))
    (d / "empty.csv").write_text("")
    (d / "header_only.csv").write_text("a,b,c,d,y,g\n")
    (d / "broken.yaml").write_text("modalities: [a, b\n  - : ::\n")
    (d / "map_unknown_col.yaml").write_text("modalities:\n  m1: [a, zz]\n  m2: [c, d]\ntarget: y\n")
    (d / "map_no_modalities.yaml").write_text("target: y\n")
    (d / "map_list.yaml").write_text("- a\n- b\n")
    (d / "not_h5.h5").write_text("this is not an HDF5 file")
    with h5py.File(d / "ragged.h5", "w") as f:
        f["x"] = np.zeros((10, 3), dtype=np.float32)
        f["z"] = np.zeros((7, 3), dtype=np.float32)
    with h5py.File(d / "nan.h5", "w") as f:
        x = np.ones((10, 3), dtype=np.float32)
        x[2, 1] = np.nan
        f["x"] = x
        f["z"] = np.ones((10, 2), dtype=np.float32)
    (d / "not.npz").write_bytes(b"PK\x03\x04garbage")
    np.savez(d / "inf.npz", x=np.array([[1.0, np.inf]] * 8), z=np.ones((8, 2)))
    np.savez(d / "scalar.npz", x=np.float32(3.0))
    rng = np.random.default_rng(0)
    np.savez(d / "notarget.npz", x=rng.normal(size=(60, 3)), z=rng.normal(size=(60, 2)))
    (d / "spec_bad_type.yaml").write_text("faults:\n  - {modality: m1, type: teleport, rate: 0.5}\n")
    (d / "spec_bad_modality.yaml").write_text("faults:\n  - {modality: nose, type: gaussian_noise, rate: 0.5}\n")
    (d / "spec_bad_rate.yaml").write_text("faults:\n  - {modality: m1, type: gaussian_noise, rate: 1.5}\n")
    (d / "spec_bad_param.yaml").write_text(
        "faults:\n  - {modality: m1, type: gaussian_noise, params: {sigma: -1}, rate: 0.5}\n")
    (d / "spec_broken.json").write_text('{"faults": [')
    (d / "cfg_list.yaml").write_text("- 1\n- 2\n")
    (d / "cfg_unknown.yaml").write_text("wings: 2\n")
    (d / "drift_window.yaml").write_text("detector: {window: 1}\n")
    (d / "cfg_type.yaml").write_text("autoencoder: {epochs: many}\n")
    (d / "cfg_range.json").write_text('{"false_alarm_rate": 2.0}')
    (d / "cfg_broken.json").write_text('{"autoencoder": ')
    (d / "bench_cfg_flat.yaml").write_text("mmae: 3\n")
    (d / "a_dir.csv").mkdir()
    (d / "a_dir.h5").mkdir()
    rc, _, err = run_cli(["fit", "--guard", "mmae", "--data", f"csv:{d / 'good.csv'}", "--modalities",
                          str(d / "map.yaml"), "--quick", "--out", str(d / "guard")])
    assert rc == 0, err
    for name, edit in {
        "g_no_json": lambda g: (g / "guard.json").unlink(),
        "g_bad_weights": lambda g: (g / "weights.safetensors").write_bytes(b"\x00\x01garbage"),
        "g_cfg_unknown": lambda g: (g / "config.json").write_text(
            json.dumps({**json.loads((g / "config.json").read_text()), "wings": 2})),
        "g_kind_unknown": lambda g: (g / "guard.json").write_text(
            json.dumps({**json.loads((g / "guard.json").read_text()), "kind": "unicorn"})),
        "g_json_broken": lambda g: (g / "guard.json").write_text("{not json"),
        "g_format": lambda g: (g / "guard.json").write_text(
            json.dumps({**json.loads((g / "guard.json").read_text()), "format": 99})),
        "g_no_weights": lambda g: (g / "weights.safetensors").unlink(),
    }.items():
        import shutil

        shutil.copytree(d / "guard", d / name)
        edit(d / name)
    return d


def _fit(data: str, *extra: str) -> list[str]:
    return ["fit", "--guard", "mmae", "--quick", "--data", data, "--out", "{d}/out_guard", *extra]


def _csv(name: str, mapping: str = "map.yaml") -> tuple[str, str]:
    return f"csv:{{d}}/{name}", f"{{d}}/{mapping}"


M = ["--modalities", "{d}/map.yaml"]
G = ["--split-by", "g", "--train-groups", "0,1", "--test-groups", "2,3"]
GOOD = "csv:{d}/good.csv"

# (id, argv, keyword expected in the error line (lower case), paths that must not exist afterwards)
CASES: list[tuple[str, list[str], str, list[str]]] = [
    # --- data files through `fit`
    ("csv-ragged", _fit("csv:{d}/ragged.csv", *M), "ragged", ["out_guard"]),
    ("csv-nan", _fit("csv:{d}/nan.csv", *M), "nan", ["out_guard"]),
    ("csv-inf", _fit("csv:{d}/inf.csv", *M), "inf", ["out_guard"]),
    ("csv-text", _fit("csv:{d}/text.csv", *M), "hello", ["out_guard"]),
    ("csv-empty", _fit("csv:{d}/empty.csv", *M), "empty", ["out_guard"]),
    ("csv-header-only", _fit("csv:{d}/header_only.csv", *M), "rows", ["out_guard"]),
    ("csv-missing", _fit("csv:{d}/absent.csv", *M), "absent.csv", ["out_guard"]),
    ("csv-is-dir", _fit("csv:{d}/a_dir.csv", *M), "a_dir.csv", ["out_guard"]),
    ("csv-no-mapping", _fit(GOOD), "mapping", ["out_guard"]),
    ("map-broken", _fit(GOOD, "--modalities", "{d}/broken.yaml"), "yaml", ["out_guard"]),
    ("map-unknown-col", _fit(GOOD, "--modalities", "{d}/map_unknown_col.yaml"), "zz", ["out_guard"]),
    ("map-no-modalities", _fit(GOOD, "--modalities", "{d}/map_no_modalities.yaml"), "modalities", ["out_guard"]),
    ("map-list", _fit(GOOD, "--modalities", "{d}/map_list.yaml"), "mapping", ["out_guard"]),
    ("map-missing", _fit(GOOD, "--modalities", "{d}/nope.yaml"), "nope.yaml", ["out_guard"]),
    ("h5-not-h5", _fit("h5:{d}/not_h5.h5"), "not_h5.h5", ["out_guard"]),
    ("h5-ragged", _fit("h5:{d}/ragged.h5"), "samples", ["out_guard"]),
    ("h5-nan", _fit("h5:{d}/nan.h5"), "nan", ["out_guard"]),
    ("h5-is-dir", _fit("h5:{d}/a_dir.h5"), "a_dir.h5", ["out_guard"]),
    ("npz-not-npz", _fit("npz:{d}/not.npz"), "not.npz", ["out_guard"]),
    ("npz-inf", _fit("npz:{d}/inf.npz"), "inf", ["out_guard"]),
    ("npz-scalar", _fit("npz:{d}/scalar.npz"), "scalar", ["out_guard"]),
    ("dataset-unknown", _fit("plutonium"), "unknown dataset", ["out_guard"]),
    ("dataset-bad-query", _fit("toy?n=abc"), "n", ["out_guard"]),
    ("toy-too-small", _fit("toy?n=3"), "split", ["out_guard"]),
    # --- guards and their configs
    ("guard-unknown", ["fit", "--guard", "unicorn", "--data", "toy", "--out", "{d}/out_guard"], "unicorn",
     ["out_guard"]),
    ("cfg-list", _fit("toy", "--config", "{d}/cfg_list.yaml"), "mapping", ["out_guard"]),
    ("cfg-unknown", _fit("toy", "--config", "{d}/cfg_unknown.yaml"), "wings", ["out_guard"]),
    ("cfg-type", _fit("toy", "--config", "{d}/cfg_type.yaml"), "epochs", ["out_guard"]),
    ("cfg-range", _fit("toy", "--config", "{d}/cfg_range.json"), "false_alarm_rate", ["out_guard"]),
    ("cfg-broken", _fit("toy", "--config", "{d}/cfg_broken.json"), "malformed", ["out_guard"]),
    ("cfg-missing", _fit("toy", "--config", "{d}/none.yaml"), "none.yaml", ["out_guard"]),
    ("emma-no-target", ["fit", "--guard", "emma", "--data", "npz:{d}/notarget.npz", "--out", "{d}/out_guard"], "target",
     ["out_guard"]),
    ("emma-one-modality", ["fit", "--guard", "emma", "--data", "wave", "--out", "{d}/out_guard"], "modalities",
     ["out_guard"]),
    ("fit-out-is-file", _fit("toy") [:-2] + ["--out", "{d}/good.csv"], "file", []),
    ("fit-device-cuda", _fit("toy", "--device", "cuda"), "cuda", ["out_guard"]),
    ("fit-device-bogus", _fit("toy", "--device", "tpu"), "device", ["out_guard"]),
    # --- splits
    ("split-absent-group", _fit(GOOD, *M, "--split-by", "g", "--train-groups", "0,1", "--test-groups", "99"), "99",
     ["out_guard"]),
    ("split-overlap", _fit(GOOD, *M, "--split-by", "g", "--train-groups", "0,1", "--test-groups", "1"), "both",
     ["out_guard"]),
    ("split-not-numbers", _fit(GOOD, *M, "--split-by", "g", "--train-groups", "a,b", "--test-groups", "1"),
     "train-groups", ["out_guard"]),
    ("split-unknown-column", _fit(GOOD, *M, "--split-by", "colour"), "colour", ["out_guard"]),
    ("split-no-train", _fit(GOOD, *M, "--split-by", "g", "--test-groups", "1"), "train", ["out_guard"]),
    # --- score / transform on guard directories
    ("score-no-dir", ["score", "{d}/nowhere", "--data", GOOD, *M], "nowhere", []),
    ("score-no-guard-json", ["score", "{d}/g_no_json", "--data", GOOD, *M], "guard.json", []),
    ("score-bad-weights", ["score", "{d}/g_bad_weights", "--data", GOOD, *M], "safetensors", []),
    ("score-no-weights", ["score", "{d}/g_no_weights", "--data", GOOD, *M], "weights", []),
    ("score-cfg-unknown", ["score", "{d}/g_cfg_unknown", "--data", GOOD, *M], "wings", []),
    ("score-kind-unknown", ["score", "{d}/g_kind_unknown", "--data", GOOD, *M], "unicorn", []),
    ("score-json-broken", ["score", "{d}/g_json_broken", "--data", GOOD, *M], "json", []),
    ("score-format", ["score", "{d}/g_format", "--data", GOOD, *M], "format", []),
    ("score-other-modalities", ["score", "{d}/guard", "--data", "toy"], "modalities", []),
    ("score-bad-out", ["score", "{d}/guard", "--data", GOOD, *M, "--out", "{d}/s.txt"], ".csv", ["s.txt"]),
    ("score-nan-data", ["score", "{d}/guard", "--data", "csv:{d}/nan.csv", *M], "nan", []),
    ("transform-bad-suffix", ["transform", "{d}/guard", "--data", GOOD, *M, "--out", "{d}/t.txt"], ".h5",
     ["t.txt"]),
    ("transform-out-dir", ["transform", "{d}/guard", "--data", GOOD, *M, "--out", "{d}/a_dir.h5"], "directory", []),
    ("transform-under-file", ["transform", "{d}/guard", "--data", GOOD, *M, "--out", "{d}/good.csv/x.h5"],
     "good.csv", []),
    # --- bench
    ("bench-unknown-guard", ["bench", "--data", "toy", "--guards", "mmae,unicorn", "--out", "{d}/b"], "unicorn",
     ["b"]),
    ("bench-dup-guard", ["bench", "--data", "toy", "--guards", "mmae,mmae", "--out", "{d}/b"], "distinct", ["b"]),
    ("bench-seeds-0", ["bench", "--data", "toy", "--guards", "mmae", "--seeds", "0", "--out", "{d}/b"], "seeds",
     ["b"]),
    ("bench-bad-spec", ["bench", "--data", GOOD, *M, "--guards", "mmae", "--faults", "{d}/spec_bad_type.yaml",
                        "--out", "{d}/b"], "teleport", ["b"]),
    ("bench-spec-modality", ["bench", "--data", GOOD, *M, "--guards", "mmae", "--faults",
                             "{d}/spec_bad_modality.yaml", "--out", "{d}/b"], "nose", ["b"]),
    ("bench-cfg-flat", ["bench", "--data", "toy", "--guards", "mmae", "--config", "{d}/bench_cfg_flat.yaml",
                        "--out", "{d}/b"], "config", ["b"]),
    ("bench-cfg-other-guard", ["bench", "--data", "toy", "--guards", "mmae", "--config", "{d}/cfg_nested.yaml",
                               "--out", "{d}/b"], "dae", ["b"]),
    ("bench-reference", ["bench", "--data", "toy", "--guards", "mmae", "--reference", "dae", "--out", "{d}/b"],
     "reference", ["b"]),
    ("bench-unknown-task", ["bench", "--data", "toy", "--guards", "mmae", "--downstream", "colour", "--out", "{d}/b"],
     "colour", ["b"]),
    ("bench-downstream-config", ["bench", "--data", "toy", "--guards", "mmae", "--downstream", "target",
                                "--downstream-config", "{d}/cfg_type.yaml", "--out", "{d}/b"], "downstream", ["b"]),
    # --- drift (bench --adapt)
    ("bench-adapt-unknown", ["bench", "--data", GOOD, *M, *G, "--id-test", "0.2", "--guards", "mmae", "--downstream",
                             "target", "--adapt", "none,warp", "--out", "{d}/b"], "warp", ["b"]),
    ("bench-adapt-no-task", ["bench", "--data", GOOD, *M, *G, "--id-test", "0.2", "--guards", "mmae", "--adapt",
                             "stats", "--out", "{d}/b"], "--downstream", ["b"]),
    ("bench-adapt-no-drift", ["bench", "--data", "toy", "--guards", "mmae", "--downstream", "target", "--adapt",
                              "stats", "--out", "{d}/b"], "drift", ["b"]),
    ("bench-adapt-no-id", ["bench", "--data", GOOD, *M, *G, "--guards", "mmae", "--downstream", "target",
                           "--adapt", "stats", "--out", "{d}/b"], "--id-test", ["b"]),
    ("bench-id-test-no-groups", ["bench", "--data", "toy", "--guards", "mmae", "--id-test", "0.2", "--out", "{d}/b"],
     "explicit group", ["b"]),
    ("bench-id-test-range", ["bench", "--data", GOOD, *M, *G, "--id-test", "0.9", "--guards", "mmae", "--out",
                             "{d}/b"], "fraction", ["b"]),
    ("bench-drift-config-key", ["bench", "--data", GOOD, *M, *G, "--id-test", "0.2", "--guards", "mmae",
                                "--downstream", "target", "--adapt", "stats", "--drift-config", "{d}/cfg_unknown.yaml",
                                "--out", "{d}/b"], "wings", ["b"]),
    ("bench-drift-detector", ["bench", "--data", GOOD, *M, *G, "--id-test", "0.2", "--guards", "mmae",
                              "--downstream", "target", "--adapt", "stats", "--drift-config",
                              "{d}/drift_window.yaml", "--out", "{d}/b"], "window", ["b"]),
    ("bench-drift-faults-missing", ["bench", "--data", GOOD, *M, "--guards", "mmae", "--downstream", "target",
                                    "--drift-faults", "{d}/gone.yaml", "--out", "{d}/b"], "gone.yaml", ["b"]),
    # --- fault specs
    ("faults-validate-type", ["faults", "validate", "{d}/spec_bad_type.yaml"], "teleport", []),
    ("faults-validate-rate", ["faults", "validate", "{d}/spec_bad_rate.yaml"], "rate", []),
    ("faults-validate-param", ["faults", "validate", "{d}/spec_bad_param.yaml"], "sigma", []),
    ("faults-validate-json", ["faults", "validate", "{d}/spec_broken.json"], "json", []),
    ("faults-validate-missing", ["faults", "validate", "{d}/gone.yaml"], "gone.yaml", []),
    ("faults-preview-kind", ["faults", "preview", "--out", "{d}/p.png", "--modality-kind", "smell"], "smell",
     ["p.png"]),
    ("faults-preview-fault", ["faults", "preview", "--out", "{d}/p.png", "--faults", "teleport"], "teleport",
     ["p.png"]),
    # --- data
    ("data-info-unknown", ["data", "info", "plutonium"], "unknown dataset", []),
    ("data-info-nan-npz", ["data", "info", "npz:{d}/inf.npz"], "inf", []),
    # --- twin
    ("twin-episodes-0", ["twin", "generate", "--episodes", "0", "--out", "{d}/tw.h5"], "episodes", ["tw.h5"]),
    ("twin-steps-neg", ["twin", "generate", "--steps", "-1", "--out", "{d}/tw.h5"], "steps", ["tw.h5"]),
    ("twin-width-0", ["twin", "generate", "--width", "0", "--out", "{d}/tw.h5"], "width", ["tw.h5"]),
    ("twin-scene", ["twin", "generate", "--scene", "kitchen", "--out", "{d}/tw.h5"], "kitchen", ["tw.h5"]),
    ("twin-info-not-twin", ["twin", "info", "{d}/not_h5.h5"], "not_h5.h5", []),
    ("twin-info-arrays", ["twin", "info", "{d}/nan.h5"], "twin", []),
    # --- protocols and eval
    ("mmssl-not-twin", ["mmssl", "run", "--data", "{d}/nan.h5", "--out", "{d}/r", "--quick"], "twin", ["r"]),
    ("mmssl-episodes", ["mmssl", "run", "--data", "{d}/nan.h5", "--out", "{d}/r", "--episodes", "1"], "episodes",
     ["r"]),
    ("emma-bad-grid", ["emma", "run", "--dataset", "toy", "--out", "{d}/r", "--grid", "huge"], "grid", ["r"]),
    ("emma-bad-sigma", ["emma", "run", "--dataset", "toy", "--out", "{d}/r", "--sigma-range", "1"], "sigma", ["r"]),
    ("eval-no-run", ["eval", "--run", "{d}/norun", "--faults", "{d}/spec_bad_type.yaml"], "norun", []),
    ("eval-guard-dir", ["eval", "--run", "{d}/guard", "--faults", "{d}/spec_bad_type.yaml"], "metrics", []),
]


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 60
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize(("case", "argv", "keyword", "absent"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_line_and_exit_2(corpus: Path, case: str, argv: list[str], keyword: str,
                                            absent: list[str]) -> None:
    (corpus / "cfg_nested.yaml").write_text("dae: {autoencoder: {epochs: 1}}\n")
    args = [a.replace("{d}", str(corpus)) for a in argv]
    rc, out, err = run_cli(args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, f"{case}: exit {rc}\nstderr: {err}\nstdout: {out[-500:]}"
    assert len(lines) == 1 and lines[0].startswith("mmguard: error: "), f"{case}: {err!r}"
    assert "Traceback" not in err + out
    assert keyword.lower() in lines[0].lower(), f"{case}: {keyword!r} not in {lines[0]!r}"
    for rel in absent:
        assert not (corpus / rel).exists(), f"{case}: left {rel} behind"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200), suffix=st.sampled_from(["csv", "yaml"]))
def test_arbitrary_text_never_crashes_the_readers(corpus: Path, text: str, suffix: str) -> None:
    """Whatever text a CSV or mapping holds: success, or one error line with exit 2 — never a traceback."""
    path = corpus / f"fuzz.{suffix}"
    path.write_text(text, encoding="utf-8", errors="replace")
    if suffix == "csv":
        args = ["data", "info", f"csv:{path}", "--modalities", str(corpus / "map.yaml"), "--json"]
    else:
        args = ["data", "info", f"csv:{corpus / 'good.csv'}", "--modalities", str(path), "--json"]
    rc, out, err = run_cli(args)
    assert rc in (0, 2)
    assert "Traceback" not in err
    if rc == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("mmguard: error: ")
    else:
        json.loads(out)
