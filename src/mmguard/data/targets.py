"""Turning a raw target column into a tensor and deciding the task it defines.

Rules (shared by the CSV/Parquet and NPZ/HDF5 loaders):

* ``binary``: exactly two distinct values, encoded 0/1 in sorted order (``{0, 1}`` and
  ``{False, True}`` stay as they are, ``{"no", "yes"}`` becomes 0/1, ``{1, 2}`` becomes 0/1);
* ``multiclass``: two or more distinct values, encoded ``0..K-1`` in sorted order (labels
  that already are ``0..K-1`` are unchanged);
* ``regression``: numbers, kept as float32; a 2-D (N, K) numeric target is multi-output
  regression.

Inference when no task is given: non-numeric labels, integer or boolean arrays → classification;
floating-point numbers (CSV cells are parsed as such) that are all integral with at most
:data:`MAX_INFERRED_CLASSES` distinct values → classification; anything else → regression.
Classification with two distinct values is ``binary``. Pass the task explicitly to override.
Classification targets are int64, as the rest of mmguard expects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mmguard.errors import DataError, SpecError

TASKS = ("binary", "multiclass", "regression")
MAX_INFERRED_CLASSES = 20


@dataclass(frozen=True)
class EncodedTarget:
    """A target tensor, its task and the original label of each class index (classification only)."""

    values: torch.Tensor
    task: str
    classes: tuple = ()


def _numeric(values: Sequence | np.ndarray) -> np.ndarray | None:
    arr = np.asarray(values)
    if arr.dtype.kind in "biuf":
        return arr
    if arr.dtype.kind in "OUS":
        try:
            return np.array([float(v) for v in arr.reshape(-1)], dtype=np.float64).reshape(arr.shape)
        except (TypeError, ValueError):
            return None
    return None


def encode_target(values: Sequence | np.ndarray, task: str | None = None, *, where: str) -> EncodedTarget:
    """Encode ``values`` for ``task`` (inferred when None); ``where`` prefixes error messages."""
    if task is not None and task not in TASKS:
        raise SpecError(f"{where}: unknown task {task!r}; known: {list(TASKS)}")
    raw = np.asarray(values)
    if raw.ndim == 0 or raw.shape[0] == 0:
        raise DataError(f"{where}: target is empty")
    num = _numeric(raw)
    if num is not None and num.dtype.kind == "f" and not np.isfinite(num).all():
        i = int(np.flatnonzero(~np.isfinite(num.reshape(num.shape[0], -1)).all(axis=1))[0])
        raise DataError(f"{where}: target row {i} is not finite: {num[i].tolist()!r}")
    if raw.dtype.kind in "OUS" and num is None:
        empty = [i for i, v in enumerate(raw.reshape(-1)) if str(v).strip() == ""]
        if empty:
            raise DataError(f"{where}: target row {empty[0]} is empty")

    if task is None:
        if num is None:
            task = "multiclass"
        elif num.ndim == 1 and num.dtype.kind in "biu":
            task = "multiclass"
        elif num.ndim == 1 and np.all(num == np.round(num)):
            task = "multiclass" if len(np.unique(num)) <= MAX_INFERRED_CLASSES else "regression"
        else:
            task = "regression"
        if task == "multiclass" and len(np.unique(raw if num is None else num)) == 2:
            task = "binary"

    if task == "regression":
        if num is None:
            raise DataError(f"{where}: a regression target must be numeric, got {raw.reshape(-1)[0]!r}")
        if num.ndim > 2:
            raise DataError(f"{where}: target must be (N,) or (N, K), got shape {num.shape}")
        return EncodedTarget(torch.as_tensor(num.astype(np.float32)), "regression")

    labels = raw if num is None else num
    if labels.ndim != 1:
        raise DataError(f"{where}: a {task} target must be one label per sample, got shape {labels.shape}")
    if num is not None and num.dtype.kind == "f" and not np.all(num == np.round(num)):
        bad = num[num != np.round(num)][0]
        raise DataError(f"{where}: {task} labels must be integers, got {bad.item()!r}")
    classes, codes = np.unique(labels, return_inverse=True)
    shown = [_plain(c) for c in classes[:10]]
    if task == "binary" and len(classes) != 2:
        raise DataError(f"{where}: a binary target needs exactly 2 classes, got {len(classes)}: {shown}")
    if len(classes) < 2:
        raise DataError(f"{where}: a {task} target needs at least 2 classes, got only {shown}")
    if num is not None and np.array_equal(classes, np.arange(len(classes))):
        codes = num.astype(np.int64)
    return EncodedTarget(torch.as_tensor(np.asarray(codes, dtype=np.int64)), task,
                         tuple(_plain(c) for c in classes))


def _plain(value: object) -> object:
    """A NumPy scalar as a plain Python value; integral floats (CSV labels) as int."""
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def task_of(target: torch.Tensor | None) -> str | None:
    """``binary``/``multiclass`` for an integer (N,) target, ``regression`` for floats, None without one."""
    if target is None:
        return None
    if target.is_floating_point() or target.ndim != 1:
        return "regression"
    return "binary" if len(torch.unique(target)) <= 2 and bool(((target == 0) | (target == 1)).all()) \
        else "multiclass"
