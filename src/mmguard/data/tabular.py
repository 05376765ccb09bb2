"""Bring-your-own tabular data: a CSV or Parquet table plus a small YAML mapping.

The mapping says which columns form which modality, which column is the target, and
optionally the task and per-sample metadata (for episode-wise splits and temporal faults)::

    modalities:
      ip: [ip_mean, ip_std, ip_kurt, ip_skew]     # a list of columns -> a vector modality
      dm:
        columns: ["dm_*"]                         # glob patterns expand in table order
        kind: vector                              # vector (default), timeseries or image
      # timeseries/image: give the per-sample shape; columns fill it in row-major order
      # spec: {columns: ["s_*"], kind: timeseries, shape: [10, 3], channels: [x, y, z]}
    target: label          # required key; `target: null` for unlabelled data
    task: binary           # optional: binary | multiclass | regression (inferred otherwise)
    meta: {episode: run_id, t: step}   # optional

Every problem (unknown mapping key, column not in the table, NaN cell, ragged row, missing
target) is one line naming the offending value. See docs/data.md for a worked example.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from mmguard.data._io import (
    check_finite_column,
    format_from_suffix,
    parse_floats,
    read_csv_rows,
    require_file,
)
from mmguard.data.model import ModalityKind, ModalitySpec, MultimodalBatch
from mmguard.data.targets import TASKS, encode_target
from mmguard.errors import DataError, SpecError

_TOP_KEYS = {"modalities", "target", "task", "meta"}
_MODALITY_KEYS = {"columns", "kind", "shape", "channels"}
_GLOB_CHARS = "*?["
CSV_SUFFIXES = (".csv", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")


# ---------------------------------------------------------------------------- mapping
@dataclass(frozen=True)
class ModalityMapping:
    """Columns (names or glob patterns) forming one modality, with its kind and optional shape."""

    name: str
    columns: tuple[str, ...]
    kind: ModalityKind = ModalityKind.VECTOR
    shape: tuple[int, ...] | None = None
    channels: tuple[str, ...] = ()


@dataclass(frozen=True)
class TabularMapping:
    """The parsed YAML mapping (see the module docstring)."""

    modalities: tuple[ModalityMapping, ...]
    target: str | None
    task: str | None = None
    meta: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: object, where: str = "mapping") -> TabularMapping:
        if not isinstance(d, Mapping):
            raise SpecError(f"{where}: a mapping must be a YAML mapping, got {type(d).__name__}")
        unknown = sorted(set(d) - _TOP_KEYS)
        if unknown:
            raise SpecError(f"{where}: unknown key {unknown[0]!r}; allowed: {sorted(_TOP_KEYS)}")
        mods = d.get("modalities")
        if not isinstance(mods, Mapping) or not mods:
            raise SpecError(f"{where}: 'modalities' must map modality names to columns, got {mods!r}")
        if "target" not in d:
            raise SpecError(f"{where}: no 'target' column given (write `target: null` for unlabelled data)")
        target = d["target"]
        if target is not None and not isinstance(target, str):
            raise SpecError(f"{where}: 'target' must be a column name, got {target!r}")
        task = d.get("task")
        if task is not None and task not in TASKS:
            raise SpecError(f"{where}: unknown task {task!r}; known: {list(TASKS)}")
        if task is not None and target is None:
            raise SpecError(f"{where}: task {task!r} given but target is null")
        meta = d.get("meta") or {}
        if not isinstance(meta, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                     for k, v in meta.items()):
            raise SpecError(f"{where}: 'meta' must map field names to column names, got {meta!r}")
        return cls(
            modalities=tuple(_modality_mapping(str(name), spec, where) for name, spec in mods.items()),
            target=target,
            task=task,
            meta=dict(meta),
        )


def _str_list(value: object, what: str, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
        raise SpecError(f"{where}: {what} must be a non-empty list of column names, got {value!r}")
    return tuple(value)


def _modality_mapping(name: str, spec: object, where: str) -> ModalityMapping:
    if not isinstance(spec, Mapping):
        return ModalityMapping(name, _str_list(spec, f"modality {name!r}", where))
    unknown = sorted(set(spec) - _MODALITY_KEYS)
    if unknown:
        raise SpecError(f"{where}: modality {name!r} has unknown key {unknown[0]!r}; "
                        f"allowed: {sorted(_MODALITY_KEYS)}")
    columns = _str_list(spec.get("columns"), f"modality {name!r} columns", where)
    kind_value = spec.get("kind", "vector")
    try:
        kind = ModalityKind(kind_value)
    except ValueError:
        raise SpecError(f"{where}: modality {name!r} has unknown kind {kind_value!r}; "
                        f"known: {[k.value for k in ModalityKind]}") from None
    shape = spec.get("shape")
    if shape is not None:
        if not isinstance(shape, (list, tuple)) or not all(isinstance(s, int) and s > 0 for s in shape):
            raise SpecError(f"{where}: modality {name!r} shape must be a list of positive integers, "
                            f"got {shape!r}")
        shape = tuple(shape)
    elif kind is not ModalityKind.VECTOR:
        raise SpecError(f"{where}: modality {name!r} of kind {kind.value} needs a 'shape'")
    channels = spec.get("channels")
    channels = () if channels is None else _str_list(channels, f"modality {name!r} channels", where)
    return ModalityMapping(name, columns, kind, shape, channels)


def read_mapping(mapping: str | Path | Mapping) -> TabularMapping:
    """A :class:`TabularMapping` from a YAML file path or an already loaded dict."""
    if isinstance(mapping, Mapping):
        return TabularMapping.from_dict(mapping)
    path = require_file(mapping, "mapping file")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SpecError(f"{str(path)!r} is not valid YAML: {str(exc).splitlines()[0]}") from None
    return TabularMapping.from_dict(loaded, str(path))


# ---------------------------------------------------------------------------- tables
class _Table:
    """Column access for CSV (strings) and Parquet (arrow columns) with row-located errors."""

    def __init__(self, path: Path, fmt: str) -> None:
        self.path, self.where = path, str(path)
        if fmt == "csv":
            rows = read_csv_rows(path)
            if not rows:
                raise DataError(f"{self.where}: file is empty")
            self.columns = [c.strip() for c in rows[0]]
            self._rows = rows[1:]
            self.line_offset: int | None = 2
            for i, row in enumerate(self._rows):
                if len(row) != len(self.columns):
                    raise DataError(f"{self.where}: row {i} (line {i + 2}) has {len(row)} fields, "
                                    f"the header has {len(self.columns)}")
            self.n = len(self._rows)
            self._arrow = None
        else:
            try:
                import pyarrow.parquet as pq
            except ImportError:
                raise DataError("reading Parquet needs pyarrow: pip install 'mmguard[parquet]'") from None
            try:
                self._arrow = pq.read_table(path)
            except Exception as exc:  # pyarrow raises several unrelated types
                raise DataError(f"cannot read Parquet {self.where}: {str(exc).splitlines()[0]}") from None
            self.columns = list(self._arrow.column_names)
            self.n = self._arrow.num_rows
            self.line_offset = None
        dupes = sorted({c for c in self.columns if self.columns.count(c) > 1})
        if dupes:
            raise DataError(f"{self.where}: duplicate column name {dupes[0]!r}")
        if self.n == 0:
            raise DataError(f"{self.where}: no data rows")

    def expand(self, patterns: tuple[str, ...], owner: str) -> list[str]:
        out: list[str] = []
        for pat in patterns:
            if any(ch in pat for ch in _GLOB_CHARS):
                hits = fnmatch.filter(self.columns, pat)
                if not hits:
                    raise DataError(f"{self.where}: pattern {pat!r} ({owner}) matches no column")
                out.extend(hits)
            elif pat in self.columns:
                out.append(pat)
            else:
                shown = self.columns[:20] + (["..."] if len(self.columns) > 20 else [])
                raise DataError(f"{self.where}: column {pat!r} ({owner}) not found; columns: {shown}")
        return out

    def raw(self, column: str) -> np.ndarray:
        """Column values as they are stored: strings for CSV, numbers/strings/objects for Parquet."""
        if self._arrow is None:
            j = self.columns.index(column)
            return np.array([row[j].strip() for row in self._rows], dtype=object)
        col = self._arrow.column(column)
        import pyarrow.types as pat

        if not (pat.is_integer(col.type) or pat.is_floating(col.type) or pat.is_boolean(col.type)
                or pat.is_string(col.type) or pat.is_large_string(col.type)):
            raise DataError(f"{self.where}: column {column!r} has unsupported type {col.type}")
        if col.null_count:
            i = int(np.flatnonzero(np.asarray(col.is_null()))[0])
            raise DataError(f"{self.where}: column {column!r} row {i} is empty (null)")
        return col.to_numpy(zero_copy_only=False)

    def floats(self, column: str) -> np.ndarray:
        raw = self.raw(column)
        if raw.dtype == object:
            values = parse_floats(list(raw), column=column, where=self.where, line_offset=self.line_offset)
        else:
            values = raw.astype(np.float64)
        check_finite_column(values, column=column, where=self.where, line_offset=self.line_offset)
        return values


def _format_of(path: Path, fmt: str | None) -> str:
    return format_from_suffix(path, fmt, {"csv": CSV_SUFFIXES, "parquet": PARQUET_SUFFIXES}, "table")


def _meta_values(table: _Table, column: str) -> torch.Tensor:
    raw = table.raw(column)
    if raw.dtype == object:
        try:
            values = np.array([float(v) for v in raw])
        except ValueError:  # string ids (e.g. episode names) become category codes
            return torch.as_tensor(np.unique(raw.astype(str), return_inverse=True)[1].astype(np.int64))
    else:
        values = raw.astype(np.float64)
    check_finite_column(values, column=column, where=table.where, line_offset=table.line_offset)
    if np.all(values == np.round(values)):
        return torch.as_tensor(values.astype(np.int64))
    return torch.as_tensor(values)


# ---------------------------------------------------------------------------- loading
@dataclass(frozen=True)
class TabularData:
    """A loaded table: the batch, the task of its target and the original class labels."""

    batch: MultimodalBatch
    task: str | None
    classes: tuple = ()


def read_tabular(table_path: str | Path, mapping: str | Path | Mapping, *,
                 fmt: str | None = None) -> TabularData:
    """Load a table with its mapping; keeps the task and original class labels."""
    path = require_file(table_path, "table")
    table = _Table(path, _format_of(path, fmt))
    m = read_mapping(mapping)

    used: dict[str, str] = {}

    def claim(col: str, owner: str) -> None:
        if col in used:
            raise DataError(f"{table.where}: column {col!r} is used by both {used[col]} and {owner}")
        used[col] = owner

    target = None
    if m.target is not None:
        if m.target not in table.columns:
            raise DataError(f"{table.where}: target column {m.target!r} not found; "
                            f"columns: {table.columns[:20]}")
        claim(m.target, "the target")

    tensors: dict[str, torch.Tensor] = {}
    specs = []
    for mod in m.modalities:
        owner = f"modality {mod.name!r}"
        cols = table.expand(mod.columns, owner)
        for c in cols:
            claim(c, owner)
        x = np.stack([table.floats(c) for c in cols], axis=1)
        shape = mod.shape or (len(cols),)
        if int(np.prod(shape)) != len(cols):
            raise DataError(f"{table.where}: {owner} has {len(cols)} columns, which cannot fill shape "
                            f"{list(shape)}")
        channels = mod.channels or (tuple(cols) if mod.kind is ModalityKind.VECTOR else ())
        try:
            spec = ModalitySpec(mod.name, mod.kind, shape, channels=channels)
        except SpecError as exc:
            raise SpecError(f"{table.where}: {exc}") from None
        tensors[mod.name] = torch.as_tensor(x.reshape(x.shape[0], *shape), dtype=torch.float32)
        specs.append(spec)

    task, classes = None, ()
    if m.target is not None:
        enc = encode_target(table.raw(m.target), m.task, where=f"{table.where}: target {m.target!r}")
        target, task, classes = enc.values, enc.task, enc.classes
    meta = {}
    for key, col in m.meta.items():
        if col not in table.columns:
            raise DataError(f"{table.where}: meta column {col!r} ({key!r}) not found")
        meta[key] = _meta_values(table, col)
    batch = MultimodalBatch(modalities=tensors, specs=tuple(specs), target=target, meta=meta)
    return TabularData(batch, task, classes)


def load_tabular(table_path: str | Path, mapping_path: str | Path | Mapping, *,
                 fmt: str | None = None) -> MultimodalBatch:
    """A CSV or Parquet table (format from the suffix unless ``fmt``) as a :class:`MultimodalBatch`.

    ``mapping_path`` is the YAML mapping file (or the same structure as a dict); see the module
    docstring and docs/data.md. Class labels are encoded 0..K-1 in sorted order.
    """
    return read_tabular(table_path, mapping_path, fmt=fmt).batch
