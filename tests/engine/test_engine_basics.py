"""Engines without a cluster: the local engine, option checks, and the error when Ray is missing.

These run whether or not Ray is installed (the missing-Ray path hides it with ``sys.modules``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mmguard.engine import Engine, Job, check_engine, make_engine
from mmguard.engine.files import read_tree, write_tree
from mmguard.engine.local import LocalEngine
from mmguard.errors import CheckpointError, EngineError, SpecError
from support import run_cli


def test_local_engine_runs_in_order_in_process() -> None:
    seen: list[int] = []

    def job(x: int) -> int:
        seen.append(x)
        return x * x

    engine = make_engine("local")
    assert isinstance(engine, Engine) and engine.in_process
    with engine:
        out = list(engine.map(job, (Job(i, (i,)) for i in range(5))))
    assert out == [(i, i * i) for i in range(5)] and seen == list(range(5))
    shared = object()
    assert LocalEngine().share(shared) is shared


@pytest.mark.parametrize(("name", "address", "match"), [
    ("spark", None, "unknown engine 'spark'; use one of local, ray"),
    ("local", "10.0.0.1:6379", "--address needs --engine ray"),
])
def test_bad_engine_options_are_one_line(name: str, address: str | None, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        check_engine(name, address)


def _hide_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    for mod in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ModuleNotFoundError


def test_missing_ray_is_one_line_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide_ray(monkeypatch)
    with pytest.raises(EngineError, match=r"pip install 'mmguard\[ray\]'"):
        make_engine("ray")


@pytest.mark.parametrize("argv", [
    ["bench", "--data", "toy?n=200", "--guards", "mmae", "--seeds", "1", "--quick", "--engine", "ray"],
    ["twin", "generate", "--episodes", "2", "--steps", "4", "--engine", "ray"],
])
def test_cli_without_ray_exits_2_before_writing(argv: list[str], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    _hide_ray(monkeypatch)
    out = tmp_path / ("run" if argv[0] == "bench" else "t.h5")
    rc, _, err = run_cli([*argv, "--out", str(out)])
    assert rc == 2
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1 and "mmguard[ray]" in lines[0], err
    assert not out.exists()


def test_cli_unknown_engine_exits_2(tmp_path: Path) -> None:
    rc, _, err = run_cli(["bench", "--data", "toy?n=200", "--guards", "mmae", "--engine", "dask",
                          "--out", str(tmp_path / "run")])
    assert rc == 2 and "unknown engine 'dask'" in err


def test_tree_round_trip_writes_the_marker_last(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "guard.json").write_text("{}")
    (src / "weights.safetensors").write_bytes(b"\x00\x01")
    (src / "sub" / "x.json").write_text("[1]")
    files = read_tree(src)
    assert list(files) == ["guard.json", "sub/x.json", "weights.safetensors"]
    write_tree(tmp_path / "dst", files, last="guard.json")
    assert read_tree(tmp_path / "dst") == files
    with pytest.raises(CheckpointError, match="outside"):
        write_tree(tmp_path / "dst", {"../evil": b""})
