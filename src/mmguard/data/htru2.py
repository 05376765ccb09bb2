"""HTRU2 pulsar candidates: the two-modality benchmark of thesis section 6.1.

17,898 candidates, 1,639 pulsars. Each candidate has two "modes" (modalities), four statistics
each: the integrated profile (``ip``: mean, standard deviation, excess kurtosis, skewness) and
the DM-SNR curve (``dm``: the same four statistics). The target is 1 for a pulsar.

Two file formats are accepted and detected automatically:

* ``pulsar.csv`` — a header row followed by the rows (the copy kept in a shared data folder);
* ``HTRU_2.csv`` — the UCI original: the same rows without a header.

Integrity. The headed ``pulsar.csv`` has md5 :data:`PULSAR_CSV_MD5`; the UCI file's checksum is
not published. Instead of trusting an unknown file checksum, downloads are verified against a
*content digest* — the sha256 of the parsed values as a little-endian float64 (17,898, 9)
array (:data:`HTRU2_CONTENT_SHA256`) — which is the same for both formats because they hold
the same rows, whatever the header or line endings. After a verified download the sha256 of
the file as stored is recorded next to it (``HTRU_2.csv.sha256``) and checked on every later
load, so a corrupted cache is caught.
"""

from __future__ import annotations

import csv
import io
import urllib.error
import urllib.request
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from mmguard.data._io import (
    atomic_write_bytes,
    check_finite_column,
    is_number,
    parse_floats,
    read_csv_rows,
    sha256_bytes,
    sha256_file,
)
from mmguard.data.locate import find_dataset_file, user_cache_dir
from mmguard.data.model import ModalityKind, ModalitySpec, MultimodalBatch
from mmguard.data.splits import Splits, stratified_three_way
from mmguard.errors import DataError

NAME = "htru2"
FILENAMES = ("pulsar.csv", "HTRU_2.csv")
HTRU2_URL = "https://archive.ics.uci.edu/static/public/372/htru2.zip"
PULSAR_CSV_MD5 = "3eb4661ae6134a29d54e71718a100c60"
HTRU2_CONTENT_SHA256 = "bff7e0d962f5762938f833075d6bbfd3ce229cdcfb30091b4ecaa7dca4a81a74"
NUM_ROWS = 17_898
NUM_POSITIVES = 1_639
MAX_DOWNLOAD_BYTES = 64 << 20

#: Column names of the headed file, used as channel names for the headerless UCI original.
CHANNELS = (
    "Mean of the integrated profile",
    "Standard deviation of the integrated profile",
    "Excess kurtosis of the integrated profile",
    "Skewness of the integrated profile",
    "Mean of the DM-SNR curve",
    "Standard deviation of the DM-SNR curve",
    "Excess kurtosis of the DM-SNR curve",
    "Skewness of the DM-SNR curve",
)
TARGET_COLUMN = "target_class"

#: Thesis table 6.1: HTRU2 split sizes and positives (67 % train, rest halved, stratified).
TABLE_6_1: dict[str, dict[str, int]] = {
    "train": {"n": 11_992, "positives": 1_098},
    "val": {"n": 2_953, "positives": 270},
    "test": {"n": 2_953, "positives": 271},
}


def content_digest(values: np.ndarray) -> str:
    """sha256 of an (N, 9) HTRU2 array as little-endian float64 — independent of the file format."""
    return sha256_bytes(np.ascontiguousarray(values, dtype="<f8").tobytes())


def parse_htru2_rows(rows: list[list[str]], where: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Validate HTRU2 rows (with or without a header) → (N, 9) float64 array and the 9 column names."""
    if not rows:
        raise DataError(f"{where}: file is empty")
    has_header = not all(is_number(cell) for cell in rows[0])
    names = tuple(c.strip() for c in rows[0]) if has_header else (*CHANNELS, TARGET_COLUMN)
    data = rows[1:] if has_header else rows
    offset = 2 if has_header else 1
    if len(names) != 9:
        raise DataError(f"{where}: expected 9 columns (4 IP, 4 DM, target), header has {len(names)}")
    if not data:
        raise DataError(f"{where}: no data rows")
    for i, row in enumerate(data):
        if len(row) != 9:
            raise DataError(f"{where}: row {i} (line {i + offset}) has {len(row)} columns, expected 9")
    cols = []
    for j, name in enumerate(names):
        col = parse_floats([r[j] for r in data], column=name, where=where, line_offset=offset)
        check_finite_column(col, column=name, where=where, line_offset=offset)
        cols.append(col)
    values = np.stack(cols, axis=1)
    target = values[:, 8]
    bad = (target != 0) & (target != 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{where}: target {names[8]!r} must be 0 or 1, row {i} (line {i + offset}) "
                        f"is {target[i].item()!r}")
    return values, names


def read_htru2_csv(path: str | Path) -> tuple[np.ndarray, tuple[str, ...]]:
    """Read and validate one HTRU2 CSV file (headed or headerless)."""
    path = Path(path)
    return parse_htru2_rows(read_csv_rows(path), str(path))


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _check_sidecar(path: Path) -> None:
    side = _sidecar(path)
    if not side.is_file():
        return
    fields = side.read_text(encoding="utf-8").split()
    expected = fields[0] if fields else ""
    actual = sha256_file(path)
    if expected != actual:
        raise DataError(f"{str(path)!r} does not match its recorded sha256 {expected!r} (got {actual!r}); "
                        "re-run `mmguard data download htru2 --force`")


def _batch(values: np.ndarray, names: tuple[str, ...]) -> MultimodalBatch:
    specs = (
        ModalitySpec("ip", ModalityKind.VECTOR, (4,), channels=names[0:4]),
        ModalitySpec("dm", ModalityKind.VECTOR, (4,), channels=names[4:8]),
    )
    x = torch.as_tensor(values[:, :8], dtype=torch.float32)
    return MultimodalBatch(
        modalities={"ip": x[:, 0:4].contiguous(), "dm": x[:, 4:8].contiguous()},
        specs=specs,
        target=torch.as_tensor(values[:, 8].astype(np.int64)),
    )


def load_htru2(path: str | Path | None = None, *, data_dir: str | Path | None = None,
               verify: bool = False) -> MultimodalBatch:
    """Load HTRU2 as a batch with vector modalities ``ip`` (4) and ``dm`` (4) and an int64 target.

    ``path`` is the CSV file or a folder holding it; otherwise the file is located as described
    in :mod:`mmguard.data.locate` (``data_dir``, ``$MMGUARD_DATA_DIR/htru2``, the user cache).
    Channel names come from the header (or :data:`CHANNELS` for the headerless UCI file).
    ``verify=True`` also requires the content digest of the canonical 17,898-row data set.
    """
    f = find_dataset_file(NAME, FILENAMES, path=path, data_dir=data_dir)
    _check_sidecar(f)
    values, names = read_htru2_csv(f)
    if verify and content_digest(values) != HTRU2_CONTENT_SHA256:
        raise DataError(f"{str(f)!r} is not the canonical HTRU2 data (content digest "
                        f"{content_digest(values)!r}, expected {HTRU2_CONTENT_SHA256!r})")
    return _batch(values, names)


def htru2_splits(path: str | Path | None = None, seed: int = 0, *,
                 data_dir: str | Path | None = None) -> Splits:
    """The thesis split of HTRU2 (section 6.1, table 6.1): 67 % train, rest halved, stratified.

    Gives 11,992 / 2,953 / 2,953 samples with 1,098 / 270 / 271 pulsars. Not standardized:
    call :meth:`Splits.standardize` to fit the statistics on train only.
    """
    splits = stratified_three_way(load_htru2(path, data_dir=data_dir), train_fraction=0.67, seed=seed)
    return replace(splits, name=NAME)


def split_summary(splits: Splits) -> dict[str, dict[str, int]]:
    """``{split: {"n": size, "positives": count}}`` for a binary-target split."""
    out = {}
    for part in ("train", "val", "test"):
        b = getattr(splits, part)
        out[part] = {"n": len(b), "positives": int((b.target == 1).sum()) if b.target is not None else 0}
    return out


# ---------------------------------------------------------------------------- download
def _fetch(url: str, timeout: float = 60.0) -> bytes:
    """GET ``url`` (the only network access in mmguard.data; tests replace it)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - fixed https URL
            data = resp.read(MAX_DOWNLOAD_BYTES + 1)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(f"cannot download {url}: {reason}") from None
    if len(data) > MAX_DOWNLOAD_BYTES:
        raise DataError(f"download from {url} exceeds {MAX_DOWNLOAD_BYTES} bytes")
    return data


def _extract_csv(archive: bytes, url: str) -> tuple[str, bytes]:
    try:
        zf = zipfile.ZipFile(io.BytesIO(archive))
    except zipfile.BadZipFile:
        raise DataError(f"download from {url} is not a zip archive") from None
    with zf:
        members = [m for m in zf.infolist() if m.filename.lower().endswith(".csv") and not m.is_dir()]
        if not members:
            raise DataError(f"zip from {url} holds no CSV file; has {[m.filename for m in zf.infolist()]}")
        members.sort(key=lambda m: Path(m.filename).name not in FILENAMES)
        member = members[0]
        if member.file_size > MAX_DOWNLOAD_BYTES:
            raise DataError(f"{member.filename!r} in {url} is too large ({member.file_size} bytes)")
        return member.filename, zf.read(member)


def _verify_download(raw: bytes, where: str) -> np.ndarray:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{where}: not UTF-8 text") from None
    rows = [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
    values, _ = parse_htru2_rows(rows, where)
    if values.shape[0] != NUM_ROWS:
        raise DataError(f"{where}: expected {NUM_ROWS} rows, got {values.shape[0]}")
    positives = int(values[:, 8].sum())
    if positives != NUM_POSITIVES:
        raise DataError(f"{where}: expected {NUM_POSITIVES} pulsars, got {positives}")
    digest = content_digest(values)
    if digest != HTRU2_CONTENT_SHA256:
        raise DataError(f"{where}: content digest {digest!r} differs from the expected "
                        f"{HTRU2_CONTENT_SHA256!r}")
    return values


def download_htru2(cache_dir: str | Path | None = None, *, url: str = HTRU2_URL, force: bool = False) -> Path:
    """Download the UCI HTRU2 zip, verify it and store ``<cache>/htru2/HTRU_2.csv`` atomically.

    ``cache_dir`` defaults to :func:`mmguard.data.locate.user_cache_dir`, where
    :func:`load_htru2` finds it without further configuration. An already cached file that
    still verifies is reused unless ``force``. Verification: 17,898 rows × 9 columns, 1,639
    positives and the content digest :data:`HTRU2_CONTENT_SHA256`; the file's own sha256 is
    then written to ``HTRU_2.csv.sha256``. Returns the path of the cached CSV.
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else user_cache_dir()
    dest = root / NAME / "HTRU_2.csv"
    if dest.is_file() and not force:
        try:
            _check_sidecar(dest)
            _verify_download(dest.read_bytes(), str(dest))
            return dest
        except DataError:
            pass  # corrupted or foreign cache entry: fetch a fresh copy
    member, raw = _extract_csv(_fetch(url), url)
    _verify_download(raw, f"{url}!{member}")
    atomic_write_bytes(dest, raw)
    atomic_write_bytes(_sidecar(dest), f"{sha256_bytes(raw)}  {dest.name}\n".encode())
    return dest
