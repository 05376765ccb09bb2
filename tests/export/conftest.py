"""Fixtures of the export tests: :func:`export_testutil.exported` with a session temp directory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from export_testutil import Exported, exported


@pytest.fixture(scope="session")
def export_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="session")
def get_exported(export_root: Path) -> Callable[[str, str], Exported]:
    return lambda name, kind: exported(name, kind, export_root)
