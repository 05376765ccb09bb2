"""Small file helpers shared by the dataset loaders: CSV rows, float parsing, atomic writes."""

from __future__ import annotations

import csv
import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from mmguard.errors import DataError


def require_file(path: str | Path, what: str = "data file") -> Path:
    """``path`` as a :class:`Path`, or a one-line DataError when it is not a readable file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"{what} not found: {str(p)!r}")
    return p


def read_csv_rows(path: Path) -> list[list[str]]:
    """All rows of a comma-separated file as lists of strings (blank lines dropped)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return [row for row in csv.reader(fh) if row and any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read CSV {str(path)!r}: {exc}") from None


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_floats(values: Sequence[str], *, column: str, where: str,
                 line_offset: int | None = None) -> np.ndarray:
    """Parse strings to float64, naming the first unparsable cell (column, row, value) on failure.

    ``line_offset`` converts a 0-based row index into a 1-based line number of the file
    (for CSV: 2 with a header row, 1 without); it is only used in the error message.
    """
    try:
        return np.array(values, dtype=np.float64)
    except ValueError:
        for i, v in enumerate(values):
            if not is_number(v):
                line = "" if line_offset is None else f" (line {i + line_offset})"
                raise DataError(f"{where}: column {column!r} row {i}{line} is not a number: {v!r}") from None
        raise  # pragma: no cover - np.array failed for a reason float() accepts


def check_finite_column(values: np.ndarray, *, column: str, where: str,
                        line_offset: int | None = None) -> None:
    """Raise a one-line DataError naming the first NaN/Inf cell of a numeric column."""
    bad = ~np.isfinite(values.reshape(values.shape[0], -1)).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        line = "" if line_offset is None else f" (line {i + line_offset})"
        raise DataError(f"{where}: column {column!r} row {i}{line} is not finite: {values[i].tolist()!r}")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` on a temporary file next to ``path`` and rename it into place.

    A crash or error never leaves a half-written ``path`` behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    atomic_write(path, write)
