"""Apply a fault spec to a :class:`~mmguard.data.model.MultimodalBatch`.

Selection (which samples each entry hits) and corruption (what happens to them) use separate
seeded streams derived from the user's seed (:mod:`mmguard.faults.rng`):

* ``independent`` — entry i (or group g) draws ``torch.randperm(N)`` from the stream
  ``(seed, "select", "entry", i)`` (``(seed, "select", "group", g)``) and takes the first
  ``round(rate * N)`` samples: the count is exact, never a Bernoulli approximation;
* ``exclusive`` — one permutation from ``(seed, "select", "exclusive")`` is cut into
  consecutive blocks, one per entry/group in first-appearance order, block k ending at
  ``round((rate_1 + ... + rate_k) * N)`` (cumulative rounding keeps the total exact);
* the corruption of entry i draws from ``(seed, "fault", i)``.

Rounding is half-up: ``round(x) = floor(x + 0.5)``. Same seed → bit-identical output; a different
seed gives a different selection (for 0 < count < N).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch

from mmguard.data.model import ModalityKind, MultimodalBatch
from mmguard.errors import DataError, SpecError
from mmguard.faults import rng
from mmguard.faults.registry import FaultContext, FaultParams, as_kind, get_fault
from mmguard.faults.spec import FaultEntry, FaultSpec, load_spec

_NDIM_KIND = {2: ModalityKind.VECTOR, 3: ModalityKind.TIMESERIES, 4: ModalityKind.IMAGE}


def exact_count(rate: float, n: int) -> int:
    """round(rate * n), half-up, within [0, n]."""
    return max(0, min(n, math.floor(rate * n + 0.5)))


def _slots(spec: FaultSpec) -> tuple[list[tuple[str, Any]], list[int]]:
    """Selection slots (one per ungrouped entry, one per group) and each entry's slot index."""
    slots: list[tuple[str, Any]] = []
    slot_of: list[int] = []
    group_slot: dict[str, int] = {}
    for i, e in enumerate(spec.faults):
        if e.group is None:
            slot_of.append(len(slots))
            slots.append(("entry", i))
        else:
            if e.group not in group_slot:
                group_slot[e.group] = len(slots)
                slots.append(("group", e.group))
            slot_of.append(group_slot[e.group])
    return slots, slot_of


def plan_selection(spec: FaultSpec | Mapping[str, Any], n: int, seed: int) -> list[torch.Tensor]:
    """Sorted int64 sample indices hit by each entry of ``spec`` in a batch of ``n`` samples."""
    spec = load_spec(spec)
    slots, slot_of = _slots(spec)
    rates = [spec.faults[slot_of.index(k)].rate for k in range(len(slots))]
    chosen: list[torch.Tensor] = []
    if spec.scenario.selection == "exclusive":
        perm = torch.randperm(n, generator=rng.generator(seed, "select", "exclusive"))
        start, cum = 0, 0.0
        for r in rates:
            cum += r
            end = max(start, exact_count(cum, n))
            chosen.append(torch.sort(perm[start:end]).values)
            start = end
    else:
        for (label, key), r in zip(slots, rates, strict=True):
            perm = torch.randperm(n, generator=rng.generator(seed, "select", label, key))
            chosen.append(torch.sort(perm[:exact_count(r, n)]).values)
    return [chosen[k] for k in slot_of]


def validate_for_batch(spec: FaultSpec, batch: MultimodalBatch) -> None:
    """Every entry names a modality of ``batch`` whose kind its fault supports (one-line SpecError)."""
    for i, e in enumerate(spec.faults):
        if e.modality not in batch.names:
            raise SpecError(f"fault spec: faults[{i}]: unknown modality {e.modality!r}; "
                            f"the batch has {list(batch.names)}")
        kind = batch.spec(e.modality).kind
        fault = get_fault(e.type)
        if not fault.supports(kind):
            raise SpecError(f"fault spec: faults[{i}]: fault {fault.name!r} does not support the "
                            f"{kind.value} modality {e.modality!r} "
                            f"(supports {sorted(k.value for k in fault.kinds)})")
        if not batch.modalities[e.modality].is_floating_point():
            raise DataError(f"modality {e.modality!r} must hold floating-point values to be corrupted, got "
                            f"{batch.modalities[e.modality].dtype}")


def _run_fault(entry: FaultEntry, x: torch.Tensor, idx: torch.Tensor, kind: ModalityKind,
               gen: torch.Generator, meta: Mapping[str, torch.Tensor]) -> torch.Tensor:
    fault = get_fault(entry.type)
    params = fault.validate_params(entry.params)
    ctx = FaultContext(
        kind=kind, generator=gen, index=idx,
        t=meta["t"].to(idx.device)[idx] if "t" in meta else None,
        episode=meta["episode"].to(idx.device)[idx] if "episode" in meta else None,
    )
    y = fault.fn(x[idx], params, ctx)
    if tuple(y.shape) != (idx.numel(), *x.shape[1:]):
        raise DataError(f"fault {fault.name!r} returned shape {tuple(y.shape)}, expected "
                        f"{(idx.numel(), *x.shape[1:])}")
    return y.to(x.dtype)


def apply_faults(
    batch: MultimodalBatch,
    spec: FaultSpec | Mapping[str, Any] | str,
    seed: int | None = None,
) -> MultimodalBatch:
    """A new batch with ``spec``'s faults applied; the input batch and its tensors are untouched.

    * unselected samples keep bit-identical values;
    * ``fault_mask``/``fault_codes`` are merged with any existing annotation: an entry sets
      ``mask[selected, m] = True`` and ``codes[selected, m]`` to its fault type's index in
      ``fault_vocab`` (existing names first, new names appended in first-use order);
    * entries hitting the same (sample, modality) compose in list order; the code records the
      last one;
    * ``seed=None`` uses ``spec.scenario.seed``, else 0.
    """
    spec = load_spec(spec)
    if seed is None:
        seed = spec.scenario.seed if spec.scenario.seed is not None else 0
    validate_for_batch(spec, batch)
    n = len(batch)
    selections = plan_selection(spec, n, seed)
    vocab = list(batch.fault_vocab)
    for name in spec.fault_types():
        if name not in vocab:
            vocab.append(name)
    mask = batch.mask_or_clean().clone()
    codes = batch.codes_or_clean().clone()
    values = dict(batch.modalities)
    owned: set[str] = set()
    for i, (entry, idx) in enumerate(zip(spec.faults, selections, strict=True)):
        if idx.numel() == 0:
            continue
        x = values[entry.modality]
        dev_idx = idx.to(x.device)
        y = _run_fault(entry, x, dev_idx, batch.spec(entry.modality).kind,
                       rng.generator(seed, "fault", i), batch.meta)
        if entry.modality not in owned:
            x = x.clone()  # our own copy: the caller's tensor is never written
            owned.add(entry.modality)
        x[dev_idx] = y
        values[entry.modality] = x
        m = batch.index_of(entry.modality)
        mask[idx.to(mask.device), m] = True
        codes[idx.to(codes.device), m] = vocab.index(entry.type)
    return replace(batch, modalities=values, fault_mask=mask, fault_codes=codes, fault_vocab=tuple(vocab))


def corrupt(
    values: torch.Tensor,
    fault_type: str,
    params: Mapping[str, Any] | FaultParams | None = None,
    *,
    kind: ModalityKind | str | None = None,
    seed: int = 0,
    t: torch.Tensor | None = None,
    episode: torch.Tensor | None = None,
) -> torch.Tensor:
    """Apply one fault to *every* sample of a raw ``(N, *shape)`` tensor and return the result.

    The kind is inferred from ``values.ndim`` (2 vector, 3 timeseries, 4 image) unless given;
    ``t``/``episode`` play the role of the batch meta for temporal faults.
    """
    if not isinstance(values, torch.Tensor) or not values.is_floating_point():
        got = getattr(values, "dtype", type(values).__name__)
        raise DataError(f"corrupt needs a floating-point torch.Tensor, got {got}")
    if kind is None:
        if values.ndim not in _NDIM_KIND:
            raise DataError(f"cannot infer a modality kind from shape {tuple(values.shape)}")
        kind = _NDIM_KIND[values.ndim]
    kind = as_kind(kind)
    fault = get_fault(fault_type)
    if not fault.supports(kind):
        raise SpecError(f"fault {fault.name!r} does not support {kind.value} data "
                        f"(supports {sorted(k.value for k in fault.kinds)})")
    entry = FaultEntry(modality="x", type=fault.name, params=fault.normalize_params(params))
    meta = {k: v for k, v in (("t", t), ("episode", episode)) if v is not None}
    idx = torch.arange(values.shape[0], device=values.device)
    return _run_fault(entry, values, idx, kind, rng.generator(seed, "fault", 0), meta)
