"""Builders for common fault specs: the EMMA thesis schedule, single faults, per-modality
rates, common-cause groups and severity sweeps. Each returns a validated :class:`FaultSpec`
(or a list of them) and raises one-line :class:`~mmguard.errors.SpecError` on bad input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from mmguard.errors import SpecError
from mmguard.faults.registry import get_fault
from mmguard.faults.spec import FaultEntry, FaultSpec, load_spec, spec_from_dict

Selection = Literal["independent", "exclusive"]


def thesis_schedule(mod_a: str, mod_b: str, sigma: float = 0.5, *, rate: float = 0.25,
                    fault_type: str = "gaussian_noise") -> FaultSpec:
    """EMMA thesis section 6.3.1: 50 % of the samples clean, 25 % corrupted only on ``mod_a``,
    25 % only on ``mod_b``, by additive Gaussian white noise of ``sigma`` = 0.5 on standardized
    data. Exclusive selection makes the counts exact (round(0.25 N) each)."""
    params = {"sigma": sigma} if fault_type == "gaussian_noise" else {}
    return spec_from_dict({
        "scenario": {"name": "emma_thesis_6_3_1", "selection": "exclusive",
                     "description": f"50% clean, {rate:.0%} only {mod_a}, {rate:.0%} only {mod_b}; "
                                    f"{fault_type} sigma={sigma} (EMMA thesis section 6.3.1)"},
        "faults": [
            {"modality": mod_a, "type": fault_type, "params": params, "rate": rate},
            {"modality": mod_b, "type": fault_type, "params": params, "rate": rate},
        ],
    })


def single_fault_spec(modality: str, type: str, params: Mapping[str, Any] | None = None,
                      rate: float = 1.0) -> FaultSpec:
    """One fault on one modality of a fraction ``rate`` of the samples."""
    return spec_from_dict({
        "scenario": {"name": f"{type}_on_{modality}"},
        "faults": [{"modality": modality, "type": type, "params": dict(params or {}), "rate": rate}],
    })


def per_modality_rates(rates: Mapping[str, float], type: str = "gaussian_noise",
                       params: Mapping[str, Any] | None = None, *,
                       selection: Selection = "independent") -> FaultSpec:
    """The same fault on several modalities, each with its own rate (independent by default;
    ``selection='exclusive'`` makes every faulty sample lose exactly one modality)."""
    if not isinstance(rates, Mapping) or not rates:
        raise SpecError(f"per_modality_rates needs a non-empty {{modality: rate}} mapping, got {rates!r}")
    return spec_from_dict({
        "scenario": {"name": f"{type}_per_modality", "selection": selection},
        "faults": [{"modality": m, "type": type, "params": dict(params or {}), "rate": r}
                   for m, r in rates.items()],
    })


def common_cause(modalities: Sequence[str] | Mapping[str, tuple[str, Mapping[str, Any]]],
                 type: str = "gaussian_noise", params: Mapping[str, Any] | None = None,
                 rate: float = 0.25, *, group: str = "common_cause",
                 selection: Selection = "independent") -> FaultSpec:
    """A common-cause failure (MMSSL motivation: heat, vibration or humidity degrade several
    sensors at once): every listed modality is corrupted on the *same* samples.

    ``modalities`` is a list (all get ``type``/``params``) or a mapping
    ``{modality: (type, params)}`` for a different fault per modality.
    """
    if isinstance(modalities, str) or not modalities:
        raise SpecError(f"common_cause needs a non-empty list of modalities, got {modalities!r}")
    if isinstance(modalities, Mapping):
        items = [(m, tp[0], dict(tp[1])) for m, tp in modalities.items()]
    else:
        items = [(m, type, dict(params or {})) for m in modalities]
    return spec_from_dict({
        "scenario": {"name": group, "selection": selection,
                     "description": "common-cause failure: the modalities fail together on the same samples"},
        "faults": [{"modality": m, "type": t, "params": p, "rate": rate, "group": group}
                   for m, t, p in items],
    })


def severity_sweep(spec_or_entry: FaultSpec | FaultEntry | Mapping[str, Any] | str,
                   values: Sequence[float], *, entries: Sequence[int] | None = None) -> list[FaultSpec]:
    """One spec per value, with each fault's *severity* parameter set to that value.

    ``spec_or_entry`` is a spec (object, mapping with ``faults`` or file) or a single entry
    (object or mapping with ``modality``/``type``). ``entries`` restricts the sweep to those
    entry indices; by default every entry whose fault has a severity parameter is swept and
    the others are kept as they are. Alternatives of the severity (``snr_db`` for ``sigma``,
    ``lo``/``hi`` for ``bound``) are reset.
    """
    if isinstance(spec_or_entry, FaultEntry):
        spec = spec_from_dict({"faults": [spec_or_entry.model_dump(mode="json")]})
    elif isinstance(spec_or_entry, Mapping) and "faults" not in spec_or_entry:
        spec = spec_from_dict({"faults": [dict(spec_or_entry)]})
    else:
        spec = load_spec(spec_or_entry)
    values = list(values)
    if not values:
        raise SpecError("severity_sweep needs at least one value, got []")
    if entries is None:
        targets = [i for i, e in enumerate(spec.faults) if get_fault(e.type).severity is not None]
        if not targets:
            raise SpecError(f"no fault in the spec has a severity parameter: {spec.fault_types()}")
    else:
        targets = list(entries)
        for i in targets:
            if not isinstance(i, int) or not 0 <= i < len(spec.faults):
                raise SpecError(f"severity_sweep: entry index {i!r} out of range "
                                f"for {len(spec.faults)} entries")
    params = sorted({get_fault(spec.faults[i].type).severity or "?" for i in targets})
    label = params[0] if len(params) == 1 else "severity"
    out = []
    base = spec.to_dict()
    for v in values:
        doc = {"scenario": dict(base["scenario"]), "faults": [dict(e) for e in base["faults"]]}
        doc["scenario"]["name"] = f"{base['scenario']['name']}[{label}={v}]"
        for i in targets:
            fault = get_fault(doc["faults"][i]["type"])
            try:
                doc["faults"][i]["params"] = fault.with_severity(doc["faults"][i]["params"], v)
            except SpecError as exc:
                raise SpecError(f"fault spec: faults[{i}]: {exc}") from None
        out.append(spec_from_dict(doc))
    return out
