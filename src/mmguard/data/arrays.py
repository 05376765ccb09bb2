"""Bring-your-own array data: NPZ or HDF5 files with one array per modality.

Layout (the same for both formats):

* one numeric array per modality, shape (N, ...): the per-sample shape decides the kind —
  one trailing dim → ``vector``, two → ``timeseries`` (T, D), three → ``image`` (C, H, W); a
  1-D array (N,) is one scalar feature per sample, i.e. a vector of size 1;
* optional ``target`` (another key via ``target_key``): (N,) labels or (N,)/(N, K) regression
  values, encoded by :func:`mmguard.data.targets.encode_target`;
* optional metadata ``meta/episode``, ``meta/t`` (any ``meta/<name>``), each of shape (N,):
  in NPZ a key literally named ``meta/episode``, in HDF5 a dataset ``episode`` in group ``meta``.

HDF5 datasets may carry an attribute ``kind`` (``vector``/``timeseries``/``image``) that must
agree with the shape, and ``channels`` (a list of names). Modality order is the order of the
file (NPZ: insertion order; HDF5: creation order when the file tracks it, else alphabetical).
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import torch

from mmguard.data._io import atomic_write, format_from_suffix, require_file
from mmguard.data.model import MultimodalBatch, infer_spec
from mmguard.data.stream import H5Column, H5Source
from mmguard.data.targets import encode_target
from mmguard.errors import DataError, SpecError

META_PREFIX = "meta/"
NPZ_SUFFIXES = (".npz",)
H5_SUFFIXES = (".h5", ".hdf5", ".hdf")


def _format_of(path: Path, fmt: str | None) -> str:
    return format_from_suffix(path, fmt, {"npz": NPZ_SUFFIXES, "h5": H5_SUFFIXES}, "array")


def _attr_str(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _read_npz(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str], dict[str, tuple[str, ...]]]:
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read NPZ {str(path)!r}: {str(exc).splitlines()[0]}") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise DataError(f"{str(path)!r} holds a single array, not an NPZ archive of named arrays")
    arrays = {}
    with z:
        for key in z.files:
            try:
                arrays[key] = z[key]
            except ValueError:
                raise DataError(f"{str(path)!r}: array {key!r} holds Python objects, "
                                "which are never loaded") from None
    return arrays, {}, {}


def _read_h5(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str], dict[str, tuple[str, ...]]]:
    import h5py

    arrays: dict[str, np.ndarray] = {}
    kinds: dict[str, str] = {}
    channels: dict[str, tuple[str, ...]] = {}
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"cannot read HDF5 {str(path)!r}: {str(exc).splitlines()[0]}") from None
    with f:
        for key, obj in f.items():
            if isinstance(obj, h5py.Group):
                if key != "meta":
                    raise DataError(f"{str(path)!r}: unexpected group {key!r}; only 'meta' may be a group")
                for mkey, mobj in obj.items():
                    if not isinstance(mobj, h5py.Dataset):
                        raise DataError(f"{str(path)!r}: 'meta/{mkey}' must be a dataset")
                    arrays[META_PREFIX + mkey] = mobj[()]
                continue
            arrays[key] = obj[()]
            if "kind" in obj.attrs:
                kinds[key] = _attr_str(obj.attrs["kind"])
            if "channels" in obj.attrs:
                channels[key] = tuple(_attr_str(c) for c in np.atleast_1d(obj.attrs["channels"]))
    return arrays, kinds, channels


def _first_nonfinite(x: np.ndarray) -> int | None:
    if x.dtype.kind != "f":
        return None
    bad = ~np.isfinite(x.reshape(x.shape[0], -1)).all(axis=1)
    return int(np.flatnonzero(bad)[0]) if bad.any() else None


def arrays_to_batch(
    arrays: Mapping[str, np.ndarray],
    *,
    target_key: str | None = "target",
    kinds: Mapping[str, str] | None = None,
    channels: Mapping[str, tuple[str, ...]] | None = None,
    task: str | None = None,
    where: str = "arrays",
) -> MultimodalBatch:
    """Validate named arrays (layout of the module docstring) and build a batch."""
    arrays = dict(arrays)
    kinds, channels = dict(kinds or {}), dict(channels or {})
    raw_target = None
    if target_key is not None:
        if target_key in arrays:
            raw_target = arrays.pop(target_key)
        elif target_key != "target":
            raise DataError(f"{where}: target array {target_key!r} not found; arrays: {sorted(arrays)}")
    meta_raw = {k[len(META_PREFIX):]: arrays.pop(k) for k in [k for k in arrays if k.startswith(META_PREFIX)]}
    if not arrays:
        raise DataError(f"{where}: no modality arrays found")
    unknown = sorted(set(kinds) - set(arrays))
    if unknown:
        raise DataError(f"{where}: kind given for unknown modality {unknown[0]!r}; arrays: {sorted(arrays)}")

    n = None
    first = None
    tensors: dict[str, torch.Tensor] = {}
    specs = []
    for name, x in arrays.items():
        x = np.asarray(x)
        if x.dtype.kind not in "biuf":
            raise DataError(f"{where}: modality {name!r} must be numeric, got dtype {x.dtype}")
        if x.ndim == 0:
            raise DataError(f"{where}: modality {name!r} is a scalar, expected an (N, ...) array")
        if x.ndim == 1:
            x = x[:, None]
        if n is None:
            n, first = x.shape[0], name
        elif x.shape[0] != n:
            raise DataError(f"{where}: modality {name!r} has {x.shape[0]} samples but {first!r} has {n}")
        bad = _first_nonfinite(x)
        if bad is not None:
            raise DataError(f"{where}: modality {name!r} contains NaN/Inf (first at sample {bad})")
        try:
            spec = infer_spec(name, x, kinds.get(name))
            if name in channels:
                spec = type(spec)(spec.name, spec.kind, spec.shape, channels=channels[name])
        except (SpecError, ValueError) as exc:
            raise DataError(f"{where}: {str(exc).splitlines()[0]}") from None
        tensors[name] = torch.as_tensor(x, dtype=torch.float32)
        specs.append(spec)

    target = None
    if raw_target is not None:
        raw_target = np.asarray(raw_target)
        if raw_target.ndim == 0 or raw_target.shape[0] != n:
            got = "a scalar" if raw_target.ndim == 0 else f"{raw_target.shape[0]} entries"
            raise DataError(f"{where}: target {target_key!r} has {got}, expected {n}")
        target = encode_target(raw_target, task, where=f"{where}: target {target_key!r}").values
    elif task is not None:
        raise DataError(f"{where}: task {task!r} given but there is no target array {target_key!r}")

    meta = {}
    for key, v in meta_raw.items():
        v = np.asarray(v)
        if v.dtype.kind not in "biuf" or v.ndim != 1 or v.shape[0] != n:
            raise DataError(f"{where}: meta {key!r} must be a numeric (N,) array with N={n}, "
                            f"got {v.dtype} {v.shape}")
        if _first_nonfinite(v) is not None:
            raise DataError(f"{where}: meta {key!r} contains NaN/Inf (first at sample {_first_nonfinite(v)})")
        integral = v.dtype.kind != "f" or np.all(v == np.round(v))
        meta[key] = torch.as_tensor(v.astype(np.int64) if integral else v)
    return MultimodalBatch(modalities=tensors, specs=tuple(specs), target=target, meta=meta)


def load_arrays(
    path: str | Path,
    target_key: str | None = "target",
    *,
    kinds: Mapping[str, str] | None = None,
    task: str | None = None,
    fmt: str | None = None,
) -> MultimodalBatch:
    """An NPZ or HDF5 file (format from the suffix unless ``fmt``) as a :class:`MultimodalBatch`.

    ``target_key`` names the target array; a missing ``"target"`` means unlabelled data, a
    missing non-default key is an error, and None ignores targets. ``kinds`` overrides the
    kind inferred from a modality's shape (HDF5 files may also say so in a ``kind`` attribute).
    """
    p = require_file(path, "array file")
    fmt = _format_of(p, fmt)
    arrays, file_kinds, channels = _read_npz(p) if fmt == "npz" else _read_h5(p)
    return arrays_to_batch(arrays, target_key=target_key, kinds={**file_kinds, **dict(kinds or {})},
                           channels=channels, task=task, where=str(p))


def save_arrays(batch: MultimodalBatch, path: str | Path, *, fmt: str | None = None) -> Path:
    """Write a batch's values, target and meta in the layout :func:`load_arrays` reads (atomically).

    Fault annotations are not written: the files hold data, not experiment state. HDF5 files
    record each modality's ``kind`` and ``channels`` as attributes and keep the modality order.
    """
    p = Path(path).expanduser()
    fmt = _format_of(p, fmt)
    for name in batch.names:
        if name == "target" or name.startswith(META_PREFIX) or name == "meta":
            raise DataError(f"modality name {name!r} clashes with the reserved array names")
    arrays = {n: batch.modalities[n].detach().cpu().numpy() for n in batch.names}
    if batch.target is not None:
        arrays["target"] = batch.target.detach().cpu().numpy()
    meta = {k: v.detach().cpu().numpy() for k, v in batch.meta.items()}

    if fmt == "npz":
        def write(tmp: str) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays, **{META_PREFIX + k: v for k, v in meta.items()})
    else:
        import h5py

        def write(tmp: str) -> None:
            with h5py.File(tmp, "w", track_order=True) as f:
                for key, value in arrays.items():
                    ds = f.create_dataset(key, data=value)
                    if key in batch.modalities:
                        spec = batch.spec(key)
                        ds.attrs["kind"] = spec.kind.value
                        if spec.channels:
                            ds.attrs["channels"] = list(spec.channels)
                if meta:
                    g = f.create_group("meta", track_order=True)
                    for k, v in meta.items():
                        g.create_dataset(k, data=v)

    atomic_write(p, write)
    return p


def array_source(path: str | Path) -> H5Source:
    """An HDF5 array file (the layout of this module) as a streamed source
    (:class:`mmguard.data.stream.H5Source`: rows read on demand, datasets larger than memory).

    Modalities, kinds (shape or the ``kind`` attribute), channels and ``meta/<name>`` columns are
    those :func:`load_arrays` finds, values cast to float32. The target is not streamed (streamed
    fitting serves guards without a target; :meth:`mmguard.guard.Guard.fit_stream`). NaN/Inf are
    found chunk by chunk as the data are read, not here."""
    import h5py

    p = require_file(path, "array file")
    if _format_of(p, None) != "h5":
        raise DataError(f"{str(p)!r}: streamed array files are HDF5 (.h5/.hdf5); NPZ archives load whole")
    columns, meta = [], {}
    try:
        f = h5py.File(p, "r")
    except OSError as exc:
        raise DataError(f"cannot read HDF5 {str(p)!r}: {str(exc).splitlines()[0]}") from None
    with f:
        for key, obj in f.items():
            if isinstance(obj, h5py.Group):
                if key != "meta":
                    raise DataError(f"{str(p)!r}: unexpected group {key!r}; only 'meta' may be a group")
                meta = {k: f"meta/{k}" for k, v in obj.items() if isinstance(v, h5py.Dataset)}
                continue
            if key == "target":
                continue
            if obj.dtype.kind not in "biuf" or obj.ndim == 0:
                raise DataError(f"{str(p)!r}: modality {key!r} must be a numeric (N, ...) array, got "
                                f"{obj.dtype} {obj.shape}")
            if obj.ndim == 1:
                raise DataError(f"{str(p)!r}: modality {key!r} is 1-D; streamed files store (N, D) vectors")
            kind = _attr_str(obj.attrs["kind"]) if "kind" in obj.attrs else None
            try:
                spec = infer_spec(key, np.empty((1, *obj.shape[1:]), dtype=np.float32), kind)
            except (SpecError, ValueError) as exc:
                raise DataError(f"{str(p)!r}: {str(exc).splitlines()[0]}") from None
            if "channels" in obj.attrs:
                spec = type(spec)(spec.name, spec.kind, spec.shape,
                                  channels=tuple(_attr_str(c) for c in np.atleast_1d(obj.attrs["channels"])))
            columns.append(H5Column(key, spec))
    if not columns:
        raise DataError(f"{str(p)!r}: no modality arrays found")
    return H5Source(p, columns, meta=meta)


def save_array_chunks(chunks: Iterable[MultimodalBatch], path: str | Path) -> int:
    """Write batches one after another into one HDF5 array file (the layout :func:`save_arrays` writes,
    readable by :func:`load_arrays` and :func:`array_source`), holding one batch in memory at a time;
    returns the number of rows. Atomic: a temporary file renamed at the end, so a failure (or a chunk
    with other modalities or shapes, a one-line error) leaves no half-written file at ``path``."""
    import h5py

    p = Path(path).expanduser()
    if _format_of(p, None) != "h5":
        raise DataError(f"{str(p)!r}: chunked output is written as HDF5 (.h5/.hdf5)")
    written = 0

    def write(tmp: str) -> None:
        nonlocal written
        with h5py.File(tmp, "w", track_order=True) as f:
            first: MultimodalBatch | None = None
            for batch in chunks:
                if first is None:
                    first = batch
                    for n in batch.names:
                        if n == "target" or n == "meta" or n.startswith(META_PREFIX):
                            raise DataError(f"modality name {n!r} clashes with the reserved array names")
                        x = batch.modalities[n]
                        ds = f.create_dataset(n, shape=(0, *x.shape[1:]), maxshape=(None, *x.shape[1:]),
                                              dtype=np.float32, chunks=(max(1, min(len(batch), 256)), *x.shape[1:]))
                        ds.attrs["kind"] = batch.spec(n).kind.value
                        if batch.spec(n).channels:
                            ds.attrs["channels"] = list(batch.spec(n).channels)
                    if batch.target is not None:
                        f.create_dataset("target", shape=(0, *batch.target.shape[1:]),
                                         maxshape=(None, *batch.target.shape[1:]),
                                         dtype=batch.target.numpy().dtype)
                    if batch.meta:
                        g = f.create_group("meta", track_order=True)
                        for k, v in batch.meta.items():
                            g.create_dataset(k, shape=(0,), maxshape=(None,), dtype=v.numpy().dtype)
                elif batch.specs != first.specs or set(batch.meta) != set(first.meta) or \
                        (batch.target is None) != (first.target is None):
                    raise DataError("chunked output: every chunk must have the same modalities, target and meta")
                arrays = {n: batch.modalities[n].detach().cpu().float().numpy() for n in batch.names}
                if batch.target is not None:
                    arrays["target"] = batch.target.detach().cpu().numpy()
                arrays.update({f"meta/{k}": v.detach().cpu().numpy() for k, v in batch.meta.items()})
                for key, value in arrays.items():
                    ds = f[key]
                    ds.resize(written + len(value), axis=0)
                    ds[written:] = value
                written += len(batch)
            if first is None:
                raise DataError("chunked output: no data to write")

    atomic_write(p, write)
    return written
