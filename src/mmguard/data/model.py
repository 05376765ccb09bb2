"""The multimodal data model shared by every part of mmguard.

A :class:`MultimodalBatch` holds N samples of M named modalities. Each modality declares
its :class:`ModalitySpec` (kind and per-sample shape). A batch optionally carries

* ``target`` — shape (N,) for class labels / scalar regression, or (N, K);
* ``fault_mask`` — bool (N, M), ``True`` where modality m of sample n was corrupted;
* ``fault_codes`` — int64 (N, M), index into ``fault_vocab`` of the fault applied at each
  corrupted entry, ``-1`` where clean. Invariant: ``fault_codes >= 0  <=>  fault_mask``;
* ``meta`` — named (N,) tensors such as ``episode`` and ``t`` (time index within an episode),
  used by temporal faults (drift, stuck-at hold, frozen frame) and by episode-wise splits.

Column m of the mask/code matrices refers to the m-th modality in ``specs`` order; the order
is part of the batch's identity and is preserved by every operation.

Design decision: a batch is immutable in spirit — operations return new batches and never
modify tensors in place, so "unselected samples stay bit-identical" holds by construction.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum

import numpy as np
import torch

from mmguard.errors import DataError, SpecError


class ModalityKind(str, Enum):
    """What a modality's per-sample tensor represents.

    * ``vector``: shape (D,) — a feature vector (e.g. HTRU2's four IP statistics).
    * ``image``: shape (C, H, W) — channels first, values nominally in [0, 1] before standardization.
    * ``timeseries``: shape (T, D) — T time steps of D channels within one sample.
    """

    VECTOR = "vector"
    IMAGE = "image"
    TIMESERIES = "timeseries"


_KIND_NDIM = {ModalityKind.VECTOR: 1, ModalityKind.IMAGE: 3, ModalityKind.TIMESERIES: 2}


@dataclass(frozen=True)
class ModalitySpec:
    """Name, kind and per-sample shape of one modality (plus optional channel names/units)."""

    name: str
    kind: ModalityKind
    shape: tuple[int, ...]
    channels: tuple[str, ...] = ()
    units: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise SpecError(f"modality name must be a non-empty string, got {self.name!r}")
        try:
            kind = ModalityKind(self.kind)
        except ValueError:
            raise SpecError(f"modality {self.name!r}: unknown kind {self.kind!r}; "
                            f"known: {[k.value for k in ModalityKind]}") from None
        object.__setattr__(self, "kind", kind)
        shape = tuple(int(s) for s in self.shape)
        object.__setattr__(self, "shape", shape)
        if len(shape) != _KIND_NDIM[kind] or any(s <= 0 for s in shape):
            raise SpecError(
                f"modality {self.name!r}: a {kind.value} needs {_KIND_NDIM[kind]} positive dims, "
                f"got shape {shape}"
            )

    @property
    def size(self) -> int:
        """Number of scalar features per sample."""
        return int(np.prod(self.shape))

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind.value,
            "shape": list(self.shape),
            "channels": list(self.channels),
            "units": list(self.units),
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> ModalitySpec:
        try:
            return cls(
                name=d["name"],
                kind=ModalityKind(d["kind"]),
                shape=tuple(d["shape"]),
                channels=tuple(d.get("channels", ())),
                units=tuple(d.get("units", ())),
            )
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            if isinstance(exc, SpecError):
                raise
            raise SpecError(f"malformed modality spec {d!r}: {exc}") from None


def infer_spec(name: str, values: torch.Tensor | np.ndarray, kind: str | None = None) -> ModalitySpec:
    """Spec from an (N, *shape) array: 1 trailing dim → vector, 2 → timeseries, 3 → image."""
    per_sample = tuple(values.shape[1:])
    if kind is None:
        kind = {1: "vector", 2: "timeseries", 3: "image"}.get(len(per_sample))
        if kind is None:
            raise DataError(f"modality {name!r}: cannot infer a kind from per-sample shape {per_sample}")
    return ModalitySpec(name=name, kind=kind, shape=per_sample)


@dataclass(frozen=True)
class MultimodalBatch:
    """N samples × M named modalities, with optional target, fault annotations and metadata."""

    modalities: dict[str, torch.Tensor]
    specs: tuple[ModalitySpec, ...]
    target: torch.Tensor | None = None
    fault_mask: torch.Tensor | None = None
    fault_codes: torch.Tensor | None = None
    fault_vocab: tuple[str, ...] = ()
    meta: dict[str, torch.Tensor] = field(default_factory=dict)

    # ------------------------------------------------------------------ construction
    def __post_init__(self) -> None:
        names = [s.name for s in self.specs]
        if len(set(names)) != len(names):
            raise SpecError(f"duplicate modality names: {names}")
        if set(names) != set(self.modalities):
            raise SpecError(f"modalities {sorted(self.modalities)} do not match specs {names}")
        if len(names) == 0:
            raise DataError("a batch needs at least one modality")
        n = None
        for spec in self.specs:
            x = self.modalities[spec.name]
            if not isinstance(x, torch.Tensor):
                raise DataError(f"modality {spec.name!r} must be a torch.Tensor, got {type(x).__name__}")
            if tuple(x.shape[1:]) != spec.shape:
                raise DataError(
                    f"modality {spec.name!r}: expected per-sample shape {spec.shape}, "
                    f"got {tuple(x.shape[1:])}"
                )
            if n is None:
                n = x.shape[0]
            elif x.shape[0] != n:
                raise DataError(f"modality {spec.name!r} has {x.shape[0]} samples, expected {n}")
        m = len(names)
        if self.target is not None and (self.target.ndim == 0 or self.target.shape[0] != n):
            got = "a scalar" if self.target.ndim == 0 else f"{self.target.shape[0]} samples"
            raise DataError(f"target has {got}, expected {n} samples")
        if self.fault_mask is None and self.fault_codes is not None:
            raise DataError("fault_codes given without fault_mask")
        if self.fault_mask is not None:
            if self.fault_mask.dtype != torch.bool or tuple(self.fault_mask.shape) != (n, m):
                raise DataError(f"fault_mask must be bool of shape {(n, m)}, got {self.fault_mask.dtype} "
                                f"{tuple(self.fault_mask.shape)}")
            if self.fault_codes is None or tuple(self.fault_codes.shape) != (n, m):
                raise DataError("fault_codes of shape (N, M) must accompany fault_mask")
            if self.fault_codes.is_floating_point() or self.fault_codes.dtype == torch.bool:
                raise DataError(f"fault_codes must be an integer tensor, got {self.fault_codes.dtype}")
            if not bool(((self.fault_codes >= 0) == self.fault_mask).all()):
                raise DataError("fault_codes must be >= 0 exactly where fault_mask is True")
            if self.fault_codes.numel() and int(self.fault_codes.max()) >= len(self.fault_vocab):
                raise DataError(f"fault code {int(self.fault_codes.max())} is outside fault_vocab "
                                f"{list(self.fault_vocab)}")
        for key, v in self.meta.items():
            if v.shape[0] != n:
                raise DataError(f"meta {key!r} has {v.shape[0]} entries, expected {n}")

    @classmethod
    def from_arrays(
        cls,
        modalities: Mapping[str, np.ndarray | torch.Tensor],
        target: np.ndarray | torch.Tensor | None = None,
        *,
        kinds: Mapping[str, str] | None = None,
        meta: Mapping[str, np.ndarray | torch.Tensor] | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> MultimodalBatch:
        """Build a clean batch from arrays; kinds are inferred from ndim unless given."""
        kinds = dict(kinds or {})
        tensors: dict[str, torch.Tensor] = {}
        specs = []
        for name, arr in modalities.items():
            t = torch.as_tensor(np.asarray(arr) if not isinstance(arr, torch.Tensor) else arr).to(dtype)
            if t.ndim < 2:
                raise DataError(f"modality {name!r}: expected an (N, ...) array, got shape {tuple(t.shape)}")
            tensors[name] = t
            specs.append(infer_spec(name, t, kinds.get(name)))
        tgt = None
        if target is not None:
            tgt = target if isinstance(target, torch.Tensor) else torch.as_tensor(np.asarray(target))
        meta_t = {k: torch.as_tensor(np.asarray(v)) for k, v in (meta or {}).items()}
        return cls(modalities=tensors, specs=tuple(specs), target=tgt, meta=meta_t)

    # ------------------------------------------------------------------ properties
    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.specs)

    @property
    def num_modalities(self) -> int:
        return len(self.specs)

    def __len__(self) -> int:
        return int(next(iter(self.modalities.values())).shape[0])

    def spec(self, name: str) -> ModalitySpec:
        for s in self.specs:
            if s.name == name:
                return s
        raise SpecError(f"unknown modality {name!r}; known: {list(self.names)}")

    def index_of(self, name: str) -> int:
        return self.names.index(self.spec(name).name)

    def mask_or_clean(self) -> torch.Tensor:
        """The fault mask, or an all-False mask (on the batch's device) for a clean batch."""
        if self.fault_mask is None:
            return torch.zeros(len(self), self.num_modalities, dtype=torch.bool, device=self._device())
        return self.fault_mask

    def codes_or_clean(self) -> torch.Tensor:
        if self.fault_codes is None:
            return torch.full((len(self), self.num_modalities), -1, dtype=torch.long, device=self._device())
        return self.fault_codes

    def _device(self) -> torch.device:
        return next(iter(self.modalities.values())).device

    def fault_type_of(self, sample: int, modality: str) -> str | None:
        """Name of the fault applied to (sample, modality), or None if clean."""
        code = int(self.codes_or_clean()[sample, self.index_of(modality)])
        return None if code < 0 else self.fault_vocab[code]

    # ------------------------------------------------------------------ operations
    def select(self, index: torch.Tensor | np.ndarray | slice | Sequence[int]) -> MultimodalBatch:
        """Sub-batch by sample index (boolean mask, integer index or slice)."""
        if isinstance(index, np.ndarray):
            index = torch.from_numpy(index)
        elif not isinstance(index, (torch.Tensor, slice)):
            index = torch.as_tensor(index)
            if index.dtype != torch.bool:  # a list of bools stays a mask; [] becomes an empty index
                index = index.long()

        def take(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[index]

        return replace(
            self,
            modalities={k: v[index] for k, v in self.modalities.items()},
            target=take(self.target),
            fault_mask=take(self.fault_mask),
            fault_codes=take(self.fault_codes),
            meta={k: v[index] for k, v in self.meta.items()},
        )

    def __getitem__(self, index) -> MultimodalBatch:
        if isinstance(index, (int, np.integer)):
            n = len(self)
            i = int(index) + n if index < 0 else int(index)
            if not 0 <= i < n:
                raise IndexError(f"sample index {int(index)} out of range for a batch of {n}")
            index = slice(i, i + 1)
        return self.select(index)

    def with_modalities(self, values: Mapping[str, torch.Tensor]) -> MultimodalBatch:
        """Replace some modality tensors (same shapes), keeping everything else."""
        for k in values:
            self.spec(k)
        return replace(self, modalities={**self.modalities, **dict(values)})

    def with_faults(self, mask: torch.Tensor, codes: torch.Tensor, vocab: tuple[str, ...]) -> MultimodalBatch:
        return replace(self, fault_mask=mask, fault_codes=codes, fault_vocab=tuple(vocab))

    def clean_view(self) -> MultimodalBatch:
        """Same values with the fault annotations removed (used for clean references)."""
        return replace(self, fault_mask=None, fault_codes=None, fault_vocab=())

    def to(self, device: torch.device | str) -> MultimodalBatch:
        def mv(t):
            return None if t is None else t.to(device)

        return replace(
            self,
            modalities={k: v.to(device) for k, v in self.modalities.items()},
            target=mv(self.target),
            fault_mask=mv(self.fault_mask),
            fault_codes=mv(self.fault_codes),
            meta={k: v.to(device) for k, v in self.meta.items()},
        )

    def flat(self, name: str) -> torch.Tensor:
        """Modality ``name`` reshaped to (N, D)."""
        x = self.modalities[self.spec(name).name]
        return x.reshape(x.shape[0], -1)

    def concat_flat(self) -> torch.Tensor:
        """All modalities flattened and concatenated in spec order: (N, sum D_m)."""
        return torch.cat([self.flat(n) for n in self.names], dim=1)

    def check_finite(self, where: str = "input") -> None:
        """Raise a one-line DataError naming the first modality holding NaN/Inf."""
        for name, x in self.modalities.items():
            if x.is_floating_point() and not bool(torch.isfinite(x).all()):
                bad = int((~torch.isfinite(x)).reshape(x.shape[0], -1).any(1).nonzero()[0, 0])
                raise DataError(f"{where}: modality {name!r} contains NaN/Inf (first at sample {bad})")

    def iter_minibatches(self, batch_size: int, *, shuffle: bool = False,
                         generator: torch.Generator | None = None) -> Iterator[MultimodalBatch]:
        if batch_size < 1:
            raise DataError(f"batch_size must be positive, got {batch_size}")
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for start in range(0, n, batch_size):
            yield self.select(order[start:start + batch_size])


def concat_batches(batches: Sequence[MultimodalBatch]) -> MultimodalBatch:
    """Concatenate batches with identical specs along the sample axis (fault vocabularies merged)."""
    if not batches:
        raise DataError("cannot concatenate an empty list of batches")
    first = batches[0]
    for b in batches[1:]:
        if b.specs != first.specs:
            raise DataError(f"cannot concatenate batches with different modalities: "
                            f"{first.names} vs {b.names}")
    vocab: list[str] = []
    for b in batches:
        for v in b.fault_vocab:
            if v not in vocab:
                vocab.append(v)
    any_faults = any(b.fault_mask is not None for b in batches)
    masks, codes = [], []
    for b in batches:
        masks.append(b.mask_or_clean())
        c = b.codes_or_clean().clone()
        if b.fault_vocab:
            remap = torch.tensor([vocab.index(v) for v in b.fault_vocab], dtype=torch.long)
            c[c >= 0] = remap[c[c >= 0]]
        codes.append(c)
    targets = [b.target for b in batches]
    if any(t is None for t in targets) and not all(t is None for t in targets):
        raise DataError("cannot concatenate batches where only some carry a target")
    meta_keys = set(first.meta)
    for b in batches:
        if set(b.meta) != meta_keys:
            raise DataError("cannot concatenate batches with different meta fields")
    return MultimodalBatch(
        modalities={n: torch.cat([b.modalities[n] for b in batches]) for n in first.names},
        specs=first.specs,
        target=None if targets[0] is None else torch.cat(targets),
        fault_mask=torch.cat(masks) if any_faults else None,
        fault_codes=torch.cat(codes) if any_faults else None,
        fault_vocab=tuple(vocab) if any_faults else (),
        meta={k: torch.cat([b.meta[k] for b in batches]) for k in meta_keys},
    )


class MultimodalDataset(torch.utils.data.Dataset):
    """``torch.utils.data.Dataset`` view of a batch; use :func:`collate` as ``collate_fn``.

    Items are single-sample :class:`MultimodalBatch` objects, so a DataLoader yields
    ordinary batches. For speed on small tabular data prefer
    :meth:`MultimodalBatch.iter_minibatches`, which slices without per-sample Python work.
    """

    def __init__(self, batch: MultimodalBatch) -> None:
        self.batch = batch

    def __len__(self) -> int:
        return len(self.batch)

    def __getitem__(self, i: int) -> MultimodalBatch:
        return self.batch[int(i)]


def collate(items: Sequence[MultimodalBatch]) -> MultimodalBatch:
    """DataLoader ``collate_fn``: concatenate single-sample (or small) batches."""
    return concat_batches(list(items))
