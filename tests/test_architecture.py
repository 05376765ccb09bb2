"""The layer contracts of pyproject.toml ([tool.importlinter]) hold: dependencies point down."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_are_kept() -> None:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe is not None, "import-linter is a dev dependency (pip install -e .[dev])"
    res = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "0 broken" in res.stdout


def test_eval_never_imports_a_method() -> None:
    code = ("import sys, mmguard.eval.evaluate, mmguard.eval.guard_eval; "
            "bad = [m for m in sys.modules if m.split('.')[:2] in "
            "(['mmguard','emma'], ['mmguard','mmssl'], ['mmguard','baselines'], ['mmguard','experiments'])]; "
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
