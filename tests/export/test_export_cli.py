"""``mmguard export`` through the real entry point, in-process: a good call writes one ONNX file that
OnnxGuard loads; a bad guard directory, an unknown format, an output path that is a directory or
lies under a file are one line ``mmguard: error: ...``, exit code 2, no traceback, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mmguard.export.runtime import OnnxGuard
from support import run_cli


def test_export_writes_a_model_the_runtime_loads(get_exported, tmp_path: Path) -> None:
    e = get_exported("mmae", "vector")
    out = tmp_path / "models" / "model.onnx"
    rc, stdout, err = run_cli(["export", str(e.directory), "--format", "onnx", "--out", str(out), "--json"])
    assert rc == 0 and err == "", err
    summary = json.loads(stdout)
    assert summary["guard"] == "mmae" and summary["out"] == str(out) and summary["inputs"] == ["v0", "v1", "v2"]
    assert summary["outputs"] == ["scores", "flags", "fixed:v0", "fixed:v1", "fixed:v2"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.onnx"]  # no temporary or external-data files
    og = OnnxGuard(out)
    batch = e.splits.test
    assert float((og.score(batch) - e.guard.score(batch)).abs().max()) <= 1e-4
    rc, stdout, err = run_cli(["export", str(e.directory), "--out", str(out)])  # --format defaults to onnx
    assert rc == 0 and stdout.startswith("exported mmae guard to") and err == ""
    assert torch.equal(OnnxGuard(out).score(batch), og.score(batch))


def test_bad_input_is_one_line_and_exit_2(get_exported, tmp_path: Path) -> None:
    e = get_exported("mmae", "vector")
    (tmp_path / "empty").mkdir()
    (tmp_path / "a_file").write_text("x")
    target = tmp_path / "out"
    target.mkdir()
    cases = [
        ([str(tmp_path / "nowhere"), "--out", str(target / "m.onnx")], "does not exist"),
        ([str(tmp_path / "empty"), "--out", str(target / "m.onnx")], "guard.json"),
        ([str(tmp_path / "a_file"), "--out", str(target / "m.onnx")], "does not exist"),
        ([str(e.directory), "--format", "tflite", "--out", str(target / "m.onnx")], "unknown export format"),
        ([str(e.directory), "--out", str(target)], "is a directory"),
        ([str(e.directory), "--out", str(tmp_path / "a_file" / "m.onnx")], "a_file"),
        ([str(e.directory)], "--out"),
    ]
    for args, word in cases:
        rc, out, err = run_cli(["export", *args])
        lines = err.strip().splitlines()
        assert rc == 2, (args, rc, err)
        assert len(lines) == 1 and lines[0].startswith("mmguard: error: "), (args, err)
        assert word.lower() in lines[0].lower(), (args, word, lines[0])
        assert "Traceback" not in err and out == ""
    assert list(target.iterdir()) == []  # nothing written
