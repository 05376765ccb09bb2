"""`mmguard faults list|validate|preview` through the real entry point."""

from __future__ import annotations

import json

import pytest


def cli(argv: list[str]) -> int:
    from mmguard.cli.main import entrypoint

    return entrypoint(["faults", *argv])


def _error(capsys, argv, *needles):
    assert cli(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mmguard: error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_list_json(capsys):
    assert cli(["list", "--json"]) == 0
    catalog = json.loads(capsys.readouterr().out)
    assert len(catalog) >= 15
    for entry in catalog:
        assert {"name", "kinds", "severity", "params"} <= set(entry)
        for p in entry["params"]:
            assert {"name", "type", "default", "description"} <= set(p)
    assert cli(["list", "--kind", "image", "--seed", "3"]) == 0
    text = capsys.readouterr().out
    names = {line.split()[0] for line in text.splitlines() if line and not line[0].isspace()}
    assert "frozen_frame" in names and "drift" not in names  # (slow_drift supports images)


@pytest.mark.parametrize("kind", ["image", "timeseries", "vector"])
def test_preview_writes_png(tmp_path, capsys, kind):
    out = tmp_path / f"{kind}.png"
    assert cli(["preview", "--modality-kind", kind, "--out", str(out), "--seed", "1", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary["kind"] == kind and len(summary["faults"]) >= 9


def test_preview_default_and_fault_subset(tmp_path, capsys):
    out = tmp_path / "sub" / "x.png"
    assert cli(["preview", "--out", str(out), "--faults", "blur,frozen_frame"]) == 0
    assert out.is_file() and "2 faults" in capsys.readouterr().out


def test_preview_bad_input(tmp_path, capsys):
    png = str(tmp_path / "x.png")
    _error(capsys, ["preview", "--out", png, "--faults", "blur,warp"], "'warp'")
    _error(capsys, ["preview", "--out", png, "--modality-kind", "audio"], "'audio'")
    _error(capsys, ["preview", "--out", png, "--modality-kind", "vector", "--faults", "blur"], "'blur'")
    _error(capsys, ["preview", "--out", str(tmp_path / "x.jpg")], "x.jpg")
    _error(capsys, ["preview", "--out", png, "--sample", "999"], "999")
    _error(capsys, ["preview", "--out", png, "--bogus"], "--bogus")


def test_validate_spec(tmp_path, capsys):
    from mmguard.faults import thesis_schedule

    path = thesis_schedule("ip", "dm").save(tmp_path / "thesis.yaml")
    assert cli(["validate", str(path), "--n", "100", "--seed", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["selection"]["counts"] == [25, 25]
    assert out["spec"]["scenario"]["selection"] == "exclusive"
    bad = tmp_path / "bad.yaml"
    bad.write_text("faults:\n  - {modality: ip, type: gaussian_noise, rate: 2}\n")
    _error(capsys, ["validate", str(bad)], "rate", "2")
    broken = tmp_path / "broken.yaml"
    broken.write_text("faults: [\n")
    _error(capsys, ["validate", str(broken)], "malformed YAML")
    _error(capsys, ["validate", str(tmp_path / "missing.json")], "missing.json")
