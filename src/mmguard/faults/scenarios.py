"""Fault scenarios built from a batch's modality kinds (the MMSSL protocol and `mmguard bench`).

Decisions (docs/mmssl.md, "Fault protocol"):

* **Trained families** (the corrupted mix of stage 2 and of the DAE baseline) — camera:
  sensor noise, an occluding object, a lost frame; kinematics: noise, a calibration offset,
  half the channels lost; plus a common-cause failure hitting every modality with noise.
  Exclusive selection: 40 % clean, 48 % one modality (split evenly over modalities and
  families), 12 % common cause. Values are in standardized units (faults act on the
  standardized data, as in EMMA's protocol).
* **Unseen families** (never used in training) — camera: defocus blur, salt-and-pepper,
  exposure shift, dead sensor lines, a frozen stream; kinematics: drift, gain error,
  stuck-at (hold), spikes, coarse quantization, saturation; and common-cause failures made
  of unseen families.
* **Severity sweeps** over multiples of the nominal severity, for a trained and an unseen
  family of each modality kind.

Time-series modalities get the vector families (each of them is defined on (N, T, D) tensors:
noise, offset, gain, spikes, quantization and saturation per element; ``missing`` loses whole
time steps; drift ramps and stuck-at holds along T within each sample).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mmguard.data.model import ModalityKind, MultimodalBatch
from mmguard.faults import FaultSpec, load_spec
from mmguard.faults.registry import get_fault

CLEAN_FRACTION = 0.40
COMMON_CAUSE_FRACTION = 0.12

TRAINED: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "image": [
        ("image_gaussian_noise", {"sigma": 1.0}),
        ("occlusion", {"size": 24, "count": 1, "fill": 0.0}),
        ("missing", {"fraction": 1.0}),
    ],
    "vector": [
        ("gaussian_noise", {"sigma": 1.0}),
        ("offset", {"value": 2.0}),
        ("missing", {"fraction": 0.5}),
    ],
}
COMMON_CAUSE_TRAINED = {
    "image": ("image_gaussian_noise", {"sigma": 1.0}),
    "vector": ("gaussian_noise", {"sigma": 1.0}),
}

UNSEEN: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "image": [
        ("blur", {"sigma": 2.0}),
        ("salt_and_pepper", {"amount": 0.1, "low": -2.0, "high": 2.0}),
        ("brightness_contrast", {"brightness": 1.5}),
        ("dead_lines", {"count": 8, "shared": False}),
        ("frozen_frame", {}),
    ],
    "vector": [
        ("drift", {"slope": 0.1}),
        ("gain", {"factor": 3.0}),
        ("stuck_at", {"mode": "hold"}),
        ("spikes", {"prob": 0.1, "amplitude": 5.0}),
        ("quantization", {"step": 1.0}),
        ("saturation", {"bound": 0.5}),
    ],
}
COMMON_CAUSE_UNSEEN = {"image": ("blur", {"sigma": 2.0}), "vector": ("drift", {"slope": 0.1})}

SWEEP_FAMILIES = {
    "image": [("image_gaussian_noise", {"sigma": 1.0}, "trained"), ("blur", {"sigma": 2.0}, "unseen")],
    "vector": [("gaussian_noise", {"sigma": 1.0}, "trained"), ("gain", {"factor": 3.0}, "unseen")],
}
SWEEP_MULTIPLIERS = (0.25, 0.5, 1.0, 2.0, 4.0)


def _kind(batch: MultimodalBatch, name: str) -> str:
    """The scenario table of a modality: ``image``, or ``vector`` for vector and time-series
    modalities (every vector family also acts on (N, T, D) time series, see faults/vector.py)."""
    return "image" if batch.spec(name).kind == ModalityKind.IMAGE else "vector"


def training_spec(batch: MultimodalBatch) -> FaultSpec:
    """The corrupted mix of stage 2 / the DAE: 40 % clean, 48 % single modality, 12 % common cause."""
    names = list(batch.names)
    faults = []
    per_mod = (1.0 - CLEAN_FRACTION - COMMON_CAUSE_FRACTION) / len(names)
    for name in names:
        fams = TRAINED[_kind(batch, name)]
        faults += [{"modality": name, "type": t, "params": p, "rate": per_mod / len(fams)} for t, p in fams]
    for name in names:
        t, p = COMMON_CAUSE_TRAINED[_kind(batch, name)]
        faults.append(
            {"modality": name, "type": t, "params": p, "rate": COMMON_CAUSE_FRACTION, "group": "common_cause"}
        )
    return load_spec(
        {
            "scenario": {
                "name": "mmssl_training_mix",
                "selection": "exclusive",
                "description": "MMSSL trained fault families (docs/mmssl.md)",
            },
            "faults": faults,
        }
    )


def family_specs(batch: MultimodalBatch) -> dict[str, tuple[str, FaultSpec]]:
    """One spec per family hitting every test sample: {label: (trained|unseen, spec)}.

    Labels are ``modality:type`` and ``common_cause:trained`` / ``common_cause:unseen``.
    """
    out: dict[str, tuple[str, FaultSpec]] = {}
    for origin, table in (("trained", TRAINED), ("unseen", UNSEEN)):
        for name in batch.names:
            for t, p in table[_kind(batch, name)]:
                out[f"{name}:{t}"] = (
                    origin,
                    load_spec(
                        {
                            "scenario": {"name": f"{name}:{t}"},
                            "faults": [{"modality": name, "type": t, "params": p, "rate": 1.0}],
                        }
                    ),
                )
    for origin, table in (("trained", COMMON_CAUSE_TRAINED), ("unseen", COMMON_CAUSE_UNSEEN)):
        faults = []
        for name in batch.names:
            t, p = table[_kind(batch, name)]
            faults.append({"modality": name, "type": t, "params": p, "rate": 1.0, "group": "cc"})
        out[f"common_cause:{origin}"] = (
            origin,
            load_spec({"scenario": {"name": f"common_cause:{origin}"}, "faults": faults}),
        )
    return out


def sweep_specs(
    batch: MultimodalBatch, multipliers: Sequence[float] = SWEEP_MULTIPLIERS
) -> dict[str, list[tuple[float, FaultSpec]]]:
    """Severity sweeps: {``modality:type``: [(severity value, spec), ...]} at multiples of nominal."""
    out: dict[str, list[tuple[float, FaultSpec]]] = {}
    for name in batch.names:
        for t, p, _origin in SWEEP_FAMILIES[_kind(batch, name)]:
            fault = get_fault(t)
            nominal = float(p[fault.severity])
            rows = []
            for m in multipliers:
                value = nominal * m
                params = fault.with_severity(dict(p), value)
                rows.append(
                    (
                        value,
                        load_spec(
                            {
                                "scenario": {"name": f"{name}:{t}@{value:g}"},
                                "faults": [{"modality": name, "type": t, "params": params, "rate": 1.0}],
                            }
                        ),
                    )
                )
            out[f"{name}:{t}"] = rows
    return out


def sweep_origin(label: str) -> str:
    """'trained' or 'unseen' for a sweep label ``modality:type``."""
    t = label.split(":", 1)[1]
    return "trained" if any(t == f for fams in TRAINED.values() for f, _ in fams) else "unseen"


def training_mix(faults: Mapping[str, Any] | None, batch: MultimodalBatch) -> FaultSpec:
    """The fault mix a guard trains on: a user's fault-spec dict, or (None) :func:`training_spec`."""
    return load_spec(faults) if faults is not None else training_spec(batch)
