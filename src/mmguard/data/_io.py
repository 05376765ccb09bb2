"""Small file helpers shared by the dataset loaders: CSV rows, float parsing, atomic writes."""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mmguard.errors import DataError, SpecError
from mmguard.io.atomic import atomic_write

__all__ = ["atomic_write"]  # re-exported for the data loaders


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


def format_from_suffix(path: Path, fmt: str | None, formats: dict[str, tuple[str, ...]], what: str) -> str:
    """The file format: ``fmt`` if given (validated), else looked up from ``path``'s suffix."""
    if fmt is not None:
        if fmt not in formats:
            raise SpecError(f"unknown {what} format {fmt!r}; known: {sorted(formats)}")
        return fmt
    suffix = path.suffix.lower()
    for name, suffixes in formats.items():
        if suffix in suffixes:
            return name
    uses = " or ".join(f"{name}:PATH" for name in formats)
    raise DataError(f"cannot tell the format of {str(path)!r} from its suffix {suffix!r}; use {uses}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    atomic_write(path, write)
