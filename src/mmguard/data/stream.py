"""Datasets larger than memory: rows read from disk in chunks, never loaded whole (issue #13).

A :class:`RowSource` is a dataset that is *not* in memory: it knows its modalities (``specs``),
its number of rows and a few small per-row columns (``meta``: episode, t), and reads any set of
rows on demand as a :class:`~mmguard.data.model.MultimodalBatch` in raw units (float32).
Implementations: :class:`H5Source` (HDF5 files — the twin files of :mod:`mmguard.twin.stream`
and the array files of :mod:`mmguard.data.arrays`) and :class:`TensorSource` (a batch already
in memory, for tests and parity checks). ``subset`` selects rows (a split) without reading.

Two ways to walk a source, both with memory bounded by a number of rows, not by the dataset:

* :func:`iter_chunks` — in storage order, chunks of about ``chunk_rows`` rows ending on group
  (episode) boundaries, so a temporal fault (hold, drift, frozen frame) sees whole episodes;
* :func:`shuffled_minibatches` — a seeded *block shuffle* for training. Decision: HDF5 stores
  the camera in compressed chunks of ~85 frames, so reading rows in a uniformly random order
  would decompress a whole chunk per row. The unit of randomness is therefore a storage
  *block* (``block_rows`` rows, the file's chunk length): every epoch the blocks are permuted,
  taken ``buffer_rows`` at a time into a shuffle buffer, and the rows of the buffer permuted;
  minibatches are cut from the concatenated order (a minibatch may span two buffers: the
  remainder of one is carried into the next), so every row is seen once per epoch and every
  minibatch but the last has ``batch_size`` rows, as in memory. The order is a pure function of
  the generator's seed; it differs from the in-memory loop's ``randperm`` (rows of one block are
  never further apart than one buffer), which is the price of reading each block once.

:class:`StreamSplit` is what a guard trains on: a source plus the standardiser fitted on the
training split (:meth:`~mmguard.data.preprocessing.Standardizer.fit_chunks`, one pass) and the
device; it yields standardised chunks and minibatches on that device.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmguard.data.model import ModalitySpec, MultimodalBatch, concat_batches
from mmguard.data.preprocessing import Standardizer
from mmguard.data.splits import group_masks
from mmguard.errors import DataError, SpecError

#: default shuffle buffer of a training stream, in bytes of float32 rows (``--buffer-mb``)
DEFAULT_BUFFER_BYTES = 256 << 20
#: default size of a sequential chunk (statistics, validation, calibration, evaluation, inference) in
#: bytes of float32 rows: 16 MiB is 340 frames of a 64x64 RGB twin, 1,024 rows of a 4,096-d vector
DEFAULT_CHUNK_BYTES = 16 << 20


class RowSource:
    """A dataset on disk: ``specs``, ``len``, small ``meta`` columns, rows read on demand.

    ``rows`` are the storage rows this source covers (sorted, unique); ``read(local)`` takes
    positions into ``rows``. Subclasses implement :meth:`_read_sorted` (storage rows, ascending)
    and :meth:`_meta_column`."""

    def __init__(self, specs: Sequence[ModalitySpec], rows: np.ndarray, block_rows: int, where: str) -> None:
        self.specs = tuple(specs)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.block_rows = max(1, int(block_rows))
        self.where = where
        if self.rows.ndim != 1 or (len(self.rows) > 1 and bool((np.diff(self.rows) <= 0).any())):
            raise SpecError(f"{where}: source rows must be sorted and unique")

    # ------------------------------------------------------------------ description
    def __len__(self) -> int:
        return int(len(self.rows))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.specs)

    def row_bytes(self) -> int:
        """Bytes of one row of every modality as float32 (what a read allocates per row)."""
        return int(sum(4 * int(np.prod(s.shape)) for s in self.specs))

    def meta_keys(self) -> tuple[str, ...]:
        return ()

    def meta(self, key: str) -> np.ndarray:
        """One small per-row column (e.g. ``episode``) of this source's rows, read without the data."""
        if key not in self.meta_keys():
            raise DataError(f"{self.where}: no meta column {key!r}; has {list(self.meta_keys()) or 'none'}")
        return self._meta_column(key)[self.rows]

    def subset(self, local: np.ndarray | torch.Tensor) -> RowSource:
        """The rows at positions ``local`` (a split), without reading any data."""
        idx = np.asarray(local.cpu() if isinstance(local, torch.Tensor) else local)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        out = self._copy()
        out.rows = np.unique(self.rows[idx.astype(np.int64)])
        return out

    # ------------------------------------------------------------------ reading
    def read(self, local: np.ndarray | slice) -> MultimodalBatch:
        """Rows at positions ``local`` (in that order) as a raw float32 batch with target and meta."""
        storage = self.rows[local]
        if len(storage) == 0:
            raise DataError(f"{self.where}: nothing to read (empty row selection)")
        order = np.argsort(storage, kind="stable")
        ascending = storage[order]
        if len(ascending) > 1 and bool((np.diff(ascending) == 0).any()):
            raise SpecError(f"{self.where}: a row is read twice in one request")
        batch = self._read_sorted(ascending)
        if bool((order != np.arange(len(order))).any()):
            inverse = np.empty_like(order)
            inverse[order] = np.arange(len(order))
            batch = batch.select(torch.from_numpy(inverse))
        return batch

    def _read_sorted(self, rows: np.ndarray) -> MultimodalBatch:
        raise NotImplementedError

    def _meta_column(self, key: str) -> np.ndarray:
        raise NotImplementedError

    def _copy(self) -> RowSource:
        out = object.__new__(type(self))
        out.__dict__.update(self.__dict__)
        return out


class TensorSource(RowSource):
    """A batch already in memory behind the :class:`RowSource` interface (tests, parity checks)."""

    def __init__(self, batch: MultimodalBatch, block_rows: int = 64, where: str = "batch") -> None:
        super().__init__(batch.specs, np.arange(len(batch)), block_rows, where)
        self.batch = batch

    def meta_keys(self) -> tuple[str, ...]:
        return tuple(self.batch.meta)

    def _meta_column(self, key: str) -> np.ndarray:
        return self.batch.meta[key].cpu().numpy()

    def _read_sorted(self, rows: np.ndarray) -> MultimodalBatch:
        return self.batch.select(torch.from_numpy(rows))


@dataclass(frozen=True)
class H5Column:
    """One modality stored as an HDF5 dataset: its path in the file, its spec and how to decode it
    (``divide``: divide after casting to float32, e.g. 255 for uint8 frames — a division, as the
    in-memory loaders do, so streamed and loaded values are bit-identical)."""

    dataset: str
    spec: ModalitySpec
    divide: float | None = None


class H5Source(RowSource):
    """Rows of an HDF5 file: one dataset per modality (rows on axis 0), an optional target dataset,
    optional per-row meta datasets. The file is opened on the first read in each process (a source
    pickles as its description, so Ray tasks and spawned ranks open their own handle) with a chunk
    cache of a few storage chunks, and stays open; :meth:`close` closes it."""

    def __init__(self, path: str | Path, columns: Sequence[H5Column], *, target: str | None = None,
                 meta: Mapping[str, str] | None = None, rows: np.ndarray | None = None,
                 block_rows: int | None = None, extra_targets: Mapping[str, str] | None = None) -> None:
        import h5py

        self.path = str(Path(path).expanduser())
        self.columns = tuple(columns)
        self.target_dataset = target
        self.meta_datasets = dict(meta or {})
        self.extra_targets = dict(extra_targets or {})  # meta["task:<name>"] columns (downstream tasks)
        self._handle: Any = None
        self._pid = -1
        self._meta_cache: dict[str, np.ndarray] = {}
        try:
            with h5py.File(self.path, "r") as f:
                lengths = {c.dataset: int(f[c.dataset].shape[0]) for c in self.columns}
                # the storage block is the chunk length of the widest modality (the camera): that is the
                # read that costs; narrow modalities' chunks span many blocks and stay in the chunk cache
                widest = max(self.columns, key=lambda c: int(np.prod(f[c.dataset].shape[1:]))
                             * f[c.dataset].dtype.itemsize, default=None)
                chunk = int(f[widest.dataset].chunks[0]) if widest is not None and f[widest.dataset].chunks else 1
                self._chunk_bytes = max(
                    (int(np.prod(f[c.dataset].chunks)) * f[c.dataset].dtype.itemsize
                     for c in self.columns if f[c.dataset].chunks), default=1 << 20)
        except (OSError, KeyError) as exc:
            raise DataError(f"cannot read HDF5 {self.path!r}: {str(exc).splitlines()[0]}") from None
        if len(set(lengths.values())) > 1:
            raise DataError(f"{self.path!r}: modalities have different row counts {lengths}")
        total = next(iter(lengths.values())) if lengths else 0
        self._total = total
        super().__init__([c.spec for c in self.columns], np.arange(total) if rows is None else rows,
                         block_rows or chunk, self.path)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handle"], state["_pid"] = None, -1
        return state

    def _file(self) -> Any:
        import h5py

        if self._handle is None or self._pid != os.getpid():
            try:
                self._handle = h5py.File(self.path, "r", rdcc_nbytes=max(4 << 20, 4 * self._chunk_bytes),
                                         rdcc_nslots=10007)
            except OSError as exc:
                raise DataError(f"cannot read HDF5 {self.path!r}: {str(exc).splitlines()[0]}") from None
            self._pid = os.getpid()
        return self._handle

    def close(self) -> None:
        if self._handle is not None and self._pid == os.getpid():
            self._handle.close()
        self._handle, self._pid = None, -1

    def meta_keys(self) -> tuple[str, ...]:
        return tuple(self.meta_datasets) + tuple(f"task:{k}" for k in self.extra_targets)

    def _storage_rows(self) -> int:
        return self._total

    def _meta_column(self, key: str) -> np.ndarray:
        if key not in self._meta_cache:  # one int per storage row: small next to the data
            path = self.meta_datasets.get(key) or self.extra_targets[key[len("task:"):]]
            col = np.asarray(self._file()[path][()])
            if col.ndim != 1 or col.shape[0] != self._storage_rows() or col.dtype.kind not in "biuf":
                raise DataError(f"{self.path!r}: {path!r} must be a numeric column of one entry per row")
            integral = col.dtype.kind in "biu" or bool(np.all(col == np.round(col)))
            # as the in-memory loaders: meta columns holding integers are int64 (tasks keep float targets)
            self._meta_cache[key] = col.astype(np.int64) if integral and not key.startswith("task:") else col
        return self._meta_cache[key]

    def _read_sorted(self, rows: np.ndarray) -> MultimodalBatch:
        f = self._file()
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        starts = np.concatenate([[0], breaks])
        stops = np.concatenate([breaks, [len(rows)]])
        runs = [(int(rows[a]), int(rows[b - 1]) + 1, int(a), int(b)) for a, b in zip(starts, stops, strict=True)]

        def gather(path: str) -> np.ndarray:
            ds = f[path]
            out = np.empty((len(rows), *ds.shape[1:]), dtype=ds.dtype)
            for lo, hi, a, b in runs:  # one read per contiguous run of rows (blocks), never per row
                ds.read_direct(out, np.s_[lo:hi], np.s_[a:b])
            return out

        tensors = {}
        for c in self.columns:
            x = torch.from_numpy(gather(c.dataset))
            x = x.float() if x.dtype != torch.float32 else x
            tensors[c.spec.name] = x.div_(c.divide) if c.divide is not None else x
        target = None
        if self.target_dataset is not None:
            y = gather(self.target_dataset)
            target = torch.from_numpy(y.astype(np.float32) if y.dtype.kind == "f" else y.astype(np.int64))
        meta = {k: torch.from_numpy(self._meta_column(k)[rows]) for k in self.meta_datasets}
        for k in self.extra_targets:
            col = self._meta_column(f"task:{k}")[rows]
            meta[f"task:{k}"] = torch.from_numpy(col.astype(np.float32) if col.dtype.kind == "f"
                                                 else col.astype(np.int64))
        return MultimodalBatch(modalities=tensors, specs=self.specs, target=target, meta=meta)


# ====================================================================== walking a source
def chunk_bounds(source: RowSource, chunk_rows: int = 1024, group_key: str = "episode"
                 ) -> list[tuple[int, int]]:
    """(start, stop) positions of sequential chunks of about ``chunk_rows`` rows; when the source has
    ``group_key``, chunks end on group boundaries (a group longer than ``chunk_rows`` is one chunk)."""
    n = len(source)
    if n == 0:
        return []
    chunk_rows = max(1, int(chunk_rows))
    if group_key not in source.meta_keys():
        return [(a, min(a + chunk_rows, n)) for a in range(0, n, chunk_rows)]
    groups = source.meta(group_key)
    edges = np.flatnonzero(groups[1:] != groups[:-1]) + 1
    bounds, start, prev = [], 0, 0
    for e in [*edges.tolist(), n]:  # one step per group, not per row
        if e - start > chunk_rows and prev > start:  # this group would overfill the chunk: close before it
            bounds.append((start, prev))
            start = prev
        prev = e
    bounds.append((start, n))
    return bounds


def iter_chunks(source: RowSource, chunk_rows: int = 1024, group_key: str = "episode"
                ) -> Iterator[MultimodalBatch]:
    """Raw chunks of ``source`` in storage order (see :func:`chunk_bounds`)."""
    for a, b in chunk_bounds(source, chunk_rows, group_key):
        yield source.read(slice(a, b))


def block_order(source: RowSource, buffer_rows: int, generator: torch.Generator) -> list[np.ndarray]:
    """One epoch's shuffle buffers: lists of positions (module docstring). Blocks are storage blocks
    (``rows // block_rows``) permuted by ``generator``; each buffer holds whole blocks, about
    ``buffer_rows`` rows, its rows permuted by ``generator``. Their concatenation is a permutation of
    ``range(len(source))``."""
    n = len(source)
    block = source.rows // source.block_rows
    ids, first = np.unique(block, return_index=True)  # positions are sorted by storage row: blocks are runs
    ends = np.concatenate([first[1:], [n]])
    perm = torch.randperm(len(ids), generator=generator).numpy()
    per_buffer = max(1, int(buffer_rows) // source.block_rows)
    buffers = []
    for i in range(0, len(perm), per_buffer):
        chosen = perm[i : i + per_buffer]
        pos = np.concatenate([np.arange(first[j], ends[j]) for j in chosen])  # one range per block
        buffers.append(pos[torch.randperm(len(pos), generator=generator).numpy()])
    return buffers


def shuffled_minibatches(source: RowSource, batch_size: int, generator: torch.Generator,
                         buffer_rows: int) -> Iterator[MultimodalBatch]:
    """Raw minibatches of one epoch in the block-shuffled order of :func:`block_order`; memory holds
    one buffer plus fewer than ``batch_size`` carried rows."""
    carry: MultimodalBatch | None = None
    for pos in block_order(source, buffer_rows, generator):
        data = source.read(np.sort(pos))
        rank = np.argsort(np.argsort(pos, kind="stable"), kind="stable")  # where each pos sits in the sorted read
        order = torch.from_numpy(rank)
        start = 0
        if carry is not None:
            need = batch_size - len(carry)
            head = data.select(order[:need])
            carry = concat_batches([carry, head])
            start = len(head)
            if len(carry) < batch_size:
                continue
            yield carry
            carry = None
        full_end = start + (len(order) - start) // batch_size * batch_size
        for a in range(start, full_end, batch_size):
            yield data.select(order[a : a + batch_size])
        if full_end < len(order):
            carry = data.select(order[full_end:])
    if carry is not None:
        yield carry


# ====================================================================== what a guard trains on
@dataclass
class StreamSplit:
    """A split of a :class:`RowSource` as a guard sees it: standardised, on ``device``, in bounded memory.

    ``buffer_rows``: rows of the training shuffle buffer; ``chunk_rows``: rows per sequential chunk."""

    source: RowSource
    standardizer: Standardizer
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    buffer_rows: int = 4096
    chunk_rows: int = 1024
    group_key: str = "episode"

    def __len__(self) -> int:
        return len(self.source)

    @property
    def specs(self) -> tuple[ModalitySpec, ...]:
        return self.source.specs

    @property
    def names(self) -> tuple[str, ...]:
        return self.source.names

    def _prepared(self, raw: MultimodalBatch) -> MultimodalBatch:
        return self.standardizer.transform(raw).to(self.device)

    def chunks(self) -> Iterator[MultimodalBatch]:
        """Standardised sequential chunks (fixed order: validation, calibration)."""
        for raw in iter_chunks(self.source, self.chunk_rows, self.group_key):
            yield self._prepared(raw)

    def minibatches(self, batch_size: int, generator: torch.Generator) -> Iterator[MultimodalBatch]:
        """Standardised minibatches of one epoch, block-shuffled by ``generator``."""
        for raw in shuffled_minibatches(self.source, batch_size, generator, self.buffer_rows):
            yield self._prepared(raw)


#: glibc's mmap threshold for streamed runs (:func:`return_freed_memory`)
MMAP_THRESHOLD = 8 << 20


def return_freed_memory() -> bool:
    """Make freed buffer-sized blocks go back to the OS at once (glibc; a no-op returning False elsewhere).

    glibc serves an allocation above its mmap threshold with a mapping of its own, returned on free,
    but raises that threshold (up to 32 MiB) each time such a block is freed — after which the
    shuffle buffers and chunks of a stream come from the heap, where freed memory is kept. Fixing the
    threshold at :data:`MMAP_THRESHOLD` (``mallopt(M_MMAP_THRESHOLD)``, what
    ``MALLOC_MMAP_THRESHOLD_`` does) keeps blocks of 8 MiB and more (buffers, chunk reads, big
    activations) mappings of their own, while a training step's smaller tensors are still reused from
    the heap. Measured on a 846 MB twin, 1 epoch, 64 MiB buffer (docs/distributed.md): peak growth
    397 MB at 8 MiB against 480 MB with glibc's dynamic threshold and 318 MB at 1 MiB, training time
    25.3 s against 22.7 s and 41.0 s (at 1 MiB every activation is a fresh mapping, zeroed page by page).
    Called by the streamed paths (:meth:`mmguard.guard.Guard.fit_stream`,
    :func:`mmguard.eval.stream_eval.evaluate_stream`, ``--stream`` commands); process-wide, idempotent."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(-3, MMAP_THRESHOLD))  # M_MMAP_THRESHOLD = -3
    except (OSError, AttributeError):
        return False


def buffer_rows_for(source: RowSource, buffer_bytes: int = DEFAULT_BUFFER_BYTES) -> int:
    """Rows of float32 data that fit in ``buffer_bytes`` (at least one storage block)."""
    return max(source.block_rows, int(buffer_bytes) // max(1, source.row_bytes()))


def chunk_rows_for(source: RowSource, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Rows of float32 data that fit in ``chunk_bytes`` (at least one)."""
    return max(1, int(chunk_bytes) // max(1, source.row_bytes()))


# ====================================================================== splits without reading the data
def stream_splits(source: RowSource, *, split_by: str | None = "auto", train_groups: list[float] | None = None,
                  val_groups: list[float] | None = None, test_groups: list[float] | None = None,
                  seed: int = 0) -> tuple[RowSource, RowSource, RowSource]:
    """Train / validation / test sources of ``source``, decided from its group column alone.

    The same rows as :func:`mmguard.data.splits.make_splits` on the loaded data for a group split
    (``split_by`` = a meta key, or ``auto`` = ``episode``: :func:`~mmguard.data.splits.group_masks`)
    and for an explicit split that names all three group lists. Decision: streamed data are split by
    whole groups only — a random row split of a dataset larger than memory would leak correlated
    neighbouring rows (frames of one episode) across splits, and an explicit split without
    validation groups would need the class labels of every row for its stratified hold-out."""
    explicit = train_groups is not None or val_groups is not None or test_groups is not None
    key = split_by if split_by not in (None, "auto", "random") else "episode"
    if split_by == "random":
        raise SpecError("streamed data are split by whole groups (e.g. --split-by episode), not at random")
    if key not in source.meta_keys():
        raise DataError(f"{source.where}: streamed data are split by groups; no meta column {key!r} "
                        f"(has {list(source.meta_keys()) or 'none'})")
    groups = source.meta(key)
    if explicit:
        if not (train_groups and val_groups and test_groups):
            raise SpecError("a streamed explicit split names all three: --train-groups, --val-groups, --test-groups")
        lists = {"train": train_groups, "val": val_groups, "test": test_groups}
        present = set(np.unique(groups).tolist())
        seen: dict[float, str] = {}
        for part, values in lists.items():
            for v in values:
                if v not in present:
                    raise DataError(f"{key} {v:g} ({part}) does not occur in the data; present: {sorted(present)}")
                if v in seen:
                    raise DataError(f"{key} {v:g} is in both the {seen[v]} and the {part} groups")
                seen[v] = part
        masks = [np.isin(groups, lists[p]) for p in ("train", "val", "test")]
    else:
        masks = group_masks(groups, key, seed=seed)
    train, val, test = (source.subset(m) for m in masks)
    return train, val, test
