"""Fixtures for the data tests: the shared HTRU2 folder and an isolated cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mmguard.data import MultimodalBatch, find_dataset_file, load_htru2
from mmguard.data.htru2 import FILENAMES

# The repository sits next to ../shared/data (see the Makefile's `make test`).
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def shared_data_dir() -> Path:
    """$MMGUARD_DATA_DIR, else ../shared/data next to the repository; fail loudly when absent."""
    value = os.environ.get("MMGUARD_DATA_DIR", "").strip()
    root = Path(value) if value else DEFAULT_DATA_DIR
    if not any((root / "htru2" / f).is_file() for f in ("pulsar.csv", "HTRU_2.csv")):
        pytest.fail(
            f"HTRU2 data missing: expected {root}/htru2/pulsar.csv (or HTRU_2.csv); set MMGUARD_DATA_DIR "
            "to a folder holding htru2/pulsar.csv — these tests must run against the real file",
            pytrace=False,
        )
    return root


@pytest.fixture(scope="session")
def data_root() -> Path:
    return shared_data_dir()


@pytest.fixture
def data_env(data_root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """MMGUARD_DATA_DIR pointing at the shared data; the user cache redirected to tmp_path."""
    monkeypatch.setenv("MMGUARD_DATA_DIR", str(data_root))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return data_root


@pytest.fixture
def no_data_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No MMGUARD_DATA_DIR and an empty cache under tmp_path (returned)."""
    monkeypatch.delenv("MMGUARD_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "mmguard"


@pytest.fixture(scope="session")
def htru2_csv(data_root: Path) -> Path:
    return find_dataset_file("htru2", FILENAMES, path=data_root / "htru2")


@pytest.fixture(scope="session")
def htru2_batch(htru2_csv: Path) -> MultimodalBatch:
    return load_htru2(htru2_csv)
