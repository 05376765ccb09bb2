"""--device and --precision on every command that trains or infers (docs/devices.md).

Each command has the options; an unavailable device or an unknown precision is one line
``mmguard: error: ...`` with exit code 2, before any data is read or any output written.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from support import run_cli

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


@pytest.mark.parametrize(("command", "options"), [
    (["fit"], ("--device", "--precision")),
    (["score"], ("--device", "--precision")),
    (["transform"], ("--device", "--precision")),
    (["bench"], ("--device", "--precision")),
    (["emma", "run"], ("--device",)),
    (["mmssl", "run"], ("--device", "--precision")),
    (["eval"], ("--device",)),
    (["serve"], ("--device", "--precision")),
])
def test_commands_have_the_options(command: list[str], options: tuple[str, ...], monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    rc, out, err = run_cli([*command, "--help"])
    assert rc == 0, err
    for o in options:
        assert o in out, (command, o)


def _check_one_line(rc: int, err: str, *words: str) -> None:
    assert rc == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mmguard: error: "), err
    assert "Traceback" not in err
    for w in words:
        assert w.lower() in lines[0].lower(), (w, lines[0])


@NO_CUDA
@pytest.mark.parametrize("args", [
    ["emma", "run", "--dataset", "toy", "--out", "{d}/run", "--quick", "--device", "cuda"],
    ["mmssl", "run", "--data", "{d}/twin.h5", "--out", "{d}/run", "--quick", "--device", "cuda"],
    ["mmssl", "run", "--data", "{d}/twin.h5", "--out", "{d}/run", "--device", "cuda", "--precision", "bf16"],
    ["fit", "--guard", "mmae", "--data", "toy", "--out", "{d}/run", "--device", "cuda", "--precision", "bf16"],
    ["bench", "--data", "toy", "--guards", "mmae", "--out", "{d}/run", "--device", "cuda"],
    ["eval", "--run", "{d}/run", "--faults", "{d}/faults.yaml", "--device", "cuda"],
], ids=["emma", "mmssl", "mmssl-bf16", "fit-bf16", "bench", "eval"])
def test_cuda_without_a_gpu_is_one_line_and_exit_2(args: list[str], tmp_path: Path) -> None:
    rc, _, err = run_cli([a.replace("{d}", str(tmp_path)) for a in args])
    _check_one_line(rc, err, "cuda")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args", [
    ["mmssl", "run", "--data", "{d}/twin.h5", "--out", "{d}/run", "--precision", "fp16"],
    ["fit", "--guard", "mmae", "--data", "toy", "--out", "{d}/run", "--precision", "fp16"],
    ["bench", "--data", "toy", "--guards", "mmae", "--out", "{d}/run", "--precision", "fp16"],
    ["emma", "run", "--dataset", "toy", "--out", "{d}/run", "--device", "tpu"],
    ["eval", "--run", "{d}/run", "--faults", "{d}/faults.yaml", "--device", "tpu"],
], ids=["mmssl", "fit", "bench", "emma-device", "eval-device"])
def test_unknown_precision_or_device_is_one_line_and_exit_2(args: list[str], tmp_path: Path) -> None:
    rc, _, err = run_cli([a.replace("{d}", str(tmp_path)) for a in args])
    _check_one_line(rc, err, "precision" if "--precision" in args else "device")
    assert not (tmp_path / "run").exists()


def test_fit_with_bf16_on_cpu_saves_a_usable_guard(tmp_path: Path) -> None:
    data = ["--data", "toy?n=240"]
    rc, _, err = run_cli(["fit", "--guard", "mmae", *data, "--out", str(tmp_path / "g"), "--quick",
                          "--precision", "bf16", "--device", "cpu"])
    assert rc == 0, err
    rc, out, err = run_cli(["score", str(tmp_path / "g"), *data, "--precision", "bf16", "--json"])
    assert rc == 0, err and '"flagged_fraction"' in out
