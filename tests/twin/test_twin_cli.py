"""The `mmguard twin` CLI: generate / info / preview, JSON output, one-line errors with exit code 2.

The simulator is replaced by the fake of ``test_twin_storage`` (``--workers 1`` runs in-process,
so monkeypatching :func:`mmguard.twin.storage.default_simulator` reaches it).
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from test_twin_storage import fake_simulate

from mmguard.errors import SpecError


def _mounted() -> None:
    """Mount `twin` on the root app if main.py does not (yet); a no-op once it does."""
    from mmguard.cli import main, twin_cmd

    if not any(g.name == "twin" for g in main.app.registered_groups):
        main.app.add_typer(twin_cmd.app, name="twin", help="Generate and inspect digital-twin datasets.")


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    from mmguard.cli.main import entrypoint

    _mounted()
    code = entrypoint(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def fake_sim(monkeypatch: pytest.MonkeyPatch) -> None:
    from mmguard.twin import storage

    monkeypatch.setattr(storage, "default_simulator", lambda: fake_simulate)


@pytest.fixture
def twin_file(tmp_path: Path, capsys: pytest.CaptureFixture, fake_sim: None) -> Path:
    out = tmp_path / "arm.h5"
    code, _, err = run_cli(capsys, "twin", "generate", "--scene", "arm", "--episodes", "4", "--steps", "6",
                           "--out", str(out), "--seed", "2", "--width", "16", "--height", "16")
    assert code == 0, err
    return out


def test_generate_info_preview(tmp_path: Path, capsys: pytest.CaptureFixture, fake_sim: None) -> None:
    out = tmp_path / "weld.h5"
    code, stdout, err = run_cli(capsys, "twin", "generate", "--scene", "weld", "--episodes", "3", "--steps",
                                "5", "--out", str(out), "--seed", "1", "--width", "8", "--height", "8",
                                "--depth", "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["n_samples"] == 15 and summary["reused_episodes"] == 0 and summary["out"] == str(out)
    with h5py.File(out, "r") as f:
        assert f.attrs["scene"] == "weld" and f.attrs["camera_depth"] and "depth" in f

    code, stdout, err = run_cli(capsys, "twin", "info", str(out), "--seed", "3")
    assert code == 0, err
    assert "scene weld, 3 episodes x 5 steps (15 samples)" in stdout
    assert "kinematics_r0" in stdout and "q0 [rad]" in stdout and "approach:" in stdout

    code, stdout, err = run_cli(capsys, "twin", "info", str(out), "--json")
    assert code == 0, err
    info = json.loads(stdout)
    assert info["episodes"] == 3 and info["attrs"]["phase_names"] == ["approach", "process", "retract"]

    png = tmp_path / "p.png"
    code, stdout, err = run_cli(capsys, "twin", "preview", str(out), "--out", str(png), "--episode", "2",
                                "--channels", "r0_q0,r1_q3")
    assert code == 0, err
    assert stdout.strip() == str(png) and png.read_bytes()[:4] == b"\x89PNG"


def test_generate_text_and_data_info(twin_file: Path, capsys: pytest.CaptureFixture) -> None:
    code, stdout, err = run_cli(capsys, "data", "info", f"twin:{twin_file}")
    assert code == 0, err
    assert "24 samples" in stdout and "camera" in stdout and "image (3x16x16)" in stdout


def test_generate_prints_summary(tmp_path: Path, capsys: pytest.CaptureFixture, fake_sim: None) -> None:
    out = tmp_path / "a.h5"
    code, stdout, err = run_cli(capsys, "twin", "generate", "--episodes", "2", "--steps", "3",
                                "--out", str(out), "--width", "8", "--height", "8")
    assert code == 0, err
    assert stdout.startswith(f"wrote {out}: scene arm, 2 episodes x 3 steps (6 samples)")


def test_simulator_error_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from mmguard.twin import storage

    def no_gl() -> None:
        raise SpecError("no OpenGL backend for offscreen rendering; install libegl1 or libosmesa6")

    monkeypatch.setattr(storage, "default_simulator", no_gl)
    code, _, err = run_cli(capsys, "twin", "generate", "--out", str(tmp_path / "a.h5"))
    assert code == 2 and err == ("mmguard: error: no OpenGL backend for offscreen rendering; "
                                 "install libegl1 or libosmesa6\n")


def test_resume_mismatch_names_force(tmp_path: Path, capsys: pytest.CaptureFixture, fake_sim: None,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from mmguard.twin.storage import episode_seed

    out = tmp_path / "a.h5"
    base = ["twin", "generate", "--episodes", "3", "--steps", "2", "--out", str(out), "--width", "8",
            "--height", "8"]
    monkeypatch.setenv("TWIN_FAKE_CRASH_SEED", str(episode_seed(0, 2)))
    code, _, err = run_cli(capsys, *base)
    assert code == 2 and "simulated crash" in err and not out.exists()
    monkeypatch.delenv("TWIN_FAKE_CRASH_SEED")
    code, _, err = run_cli(capsys, *base, "--seed", "5")
    assert code == 2 and "--force" in err and err.count("\n") == 1
    code, stdout, err = run_cli(capsys, *base, "--json")
    assert code == 0, err
    assert json.loads(stdout)["reused_episodes"] == 2


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["generate", "--episodes", "0", "--out", "{tmp}/a.h5"], "episodes must be a positive integer"),
        (["generate", "--episodes", "abc", "--out", "{tmp}/a.h5"], "--episodes"),
        (["generate", "--scene", "kitchen", "--out", "{tmp}/a.h5"],
         "unknown scene 'kitchen'; known: arm, weld"),
        (["generate", "--workers", "0", "--out", "{tmp}/a.h5"], "workers must be a positive integer"),
        (["generate", "--out", "{tmp}/a.csv"], "must end in .h5"),
        (["generate", "--out", "{tmp}/file/a.h5"], "cannot write next to"),
        (["generate", "--episodes", "2"], "--out"),
        (["info", "{tmp}/missing.h5"], "twin dataset not found"),
        (["info", "{tmp}/junk.h5"], "cannot read HDF5"),
        (["info", "{tmp}/plain.h5"], "is not a twin dataset"),
        (["preview", "{tmp}/missing.h5", "--out", "{tmp}/p.png"], "twin dataset not found"),
        (["preview", "{twin}", "--out", "{tmp}/p.png", "--episode", "9"], "episode 9 out of range"),
        (["preview", "{twin}", "--out", "{tmp}/p.jpg"], "must end in .png"),
    ],
)
def test_bad_input_is_one_line_exit_2(argv: list[str], expected: str, tmp_path: Path, twin_file: Path,
                                      capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "junk.h5").write_bytes(b"garbage" * 10)
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["x"] = np.zeros((3, 2))
    args = [a.format(tmp=tmp_path, twin=twin_file) for a in argv]
    code, _, err = run_cli(capsys, "twin", *args)
    assert code == 2, err
    assert err.startswith("mmguard: error: ") and expected in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "a.h5").exists()
