"""Helpers shared by the export tests (tests/export): fitted, saved and exported guards, and the
parity check of an :class:`~mmguard.export.runtime.OnnxGuard` against the torch guard.

Guards are fitted with the contract's helpers and overrides (tests/contract/test_guard_contract.py:
raw data at offsets 50 to 150, spread ~10; ``false_alarm_rate`` 0.1; a two-block image encoder) in
``--quick`` mode, once per (guard, data kind) and process.

Tolerances (docs/export.md): ONNX Runtime and torch run the same float32 graph with other kernels
(other summation orders, fused multiply-adds), so outputs agree to float32 rounding, not bit for bit:

* ``scores`` (normalised, 1.0 = threshold): abs difference <= ``SCORE_TOL`` x max(1, |score|) — 1e-4
  absolute up to the threshold, relative beyond (a faulty modality's score can be in the hundreds,
  where float32 itself resolves only ~1e-5);
* ``flags``: equal wherever the torch score is farther than ``SCORE_TOL`` from the threshold;
* ``fixed:<modality>`` (raw units): max abs difference <= ``FIX_TOL`` x the modality's training
  standard deviation (per feature / channel), i.e. 1e-4 in standardised units — a fixed absolute
  tolerance in raw units would depend on the data's units. Samples whose routing could differ
  (a guard that flags and corrects, with some score within ``SCORE_TOL`` of the threshold) are
  excluded, since the corrector's gate then legitimately goes either way;
* ``prediction``: equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from contract.test_guard_contract import GUARDS, NAMES, data_for, make_guard
from mmguard.data.model import MultimodalBatch
from mmguard.data.splits import Splits, make_splits
from mmguard.export.onnx import export_onnx
from mmguard.export.runtime import OnnxGuard
from mmguard.faults import apply_faults
from mmguard.faults.scenarios import training_spec
from mmguard.guard import Guard

SCORE_TOL = 1e-4
FIX_TOL = 1e-4


@dataclass
class Exported:
    name: str
    kind: str
    guard: Guard
    splits: Splits
    directory: Path
    onnx_path: Path
    onnx: OnnxGuard


def cases() -> list[tuple[str, str]]:
    """Every registered guard on every data kind it accepts (as the contract test)."""
    return [(n, k) for n in NAMES for k in ("vector", "image", "timeseries") if k in GUARDS[n].modality_kinds]


_CACHE: dict[tuple[str, str], Exported] = {}


def exported(name: str, kind: str, root: Path) -> Exported:
    key = (name, kind)
    if key not in _CACHE:
        splits = make_splits(data_for(kind, GUARDS[name]), seed=0)
        guard = make_guard(name, kind)
        guard.fit(splits, seed=0)
        directory = guard.save(root / f"{name}-{kind}" / "guard")
        path = export_onnx(guard, root / f"{name}-{kind}" / "model.onnx")
        _CACHE[key] = Exported(name, kind, guard, splits, directory, path, OnnxGuard(path))
    return _CACHE[key]


def faulty(batch: MultimodalBatch, seed: int = 1) -> MultimodalBatch:
    """The batch under the training fault mix (40 % clean, single-modality and common-cause faults)."""
    return apply_faults(batch, training_spec(batch), seed=seed)


def parity(guard: Guard, og: OnnxGuard, batch: MultimodalBatch) -> dict[str, Any]:
    """Compare every output; assert the tolerances of the module docstring; return the max abs diffs."""
    report: dict[str, Any] = {}
    near = torch.zeros(len(batch), dtype=torch.bool)
    if guard.flags:
        s_t, s_o = guard.score(batch), og.score(batch)
        assert s_o.dtype == torch.float32 and s_o.shape == s_t.shape
        diff = (s_t - s_o).abs()
        scaled = float((diff / s_t.abs().clamp_min(1.0)).max())
        report["scores"], report["scores/scale"] = float(diff.max()), scaled
        assert scaled <= SCORE_TOL, ("scores", float(diff.max()), scaled)
        f_t, f_o = guard.flag(batch), og.flag(batch)
        assert f_o.dtype == torch.bool and f_o.shape == f_t.shape
        close = (s_t - 1.0).abs() <= SCORE_TOL
        assert torch.equal(f_t[~close], f_o[~close]), "flags differ away from the threshold"
        report["flags_differing"] = int((f_t != f_o).sum())
        near = close.any(1)
    if guard.corrects:
        x_t, x_o = guard.transform(batch), og.transform(batch)
        assert x_o.names == x_t.names
        keep = ~near if guard.flags else torch.ones(len(batch), dtype=torch.bool)
        for n in guard.names:
            a, b = x_t.modalities[n], x_o.modalities[n]
            assert b.shape == a.shape and b.dtype == a.dtype, n
            diff = (a - b).abs()[keep]
            raw = float(diff.max()) if diff.numel() else 0.0
            std = guard.standardizer.std[n]  # type: ignore[union-attr]
            rel = float((diff / std).max()) if diff.numel() else 0.0
            report[f"fixed:{n}"] = raw
            report[f"fixed:{n}/std"] = rel
            assert rel <= FIX_TOL, (n, raw, rel)
        report["routing_excluded"] = int((~keep).sum())
    if guard.predicts:
        p_t, p_o = guard.predict(batch), og.predict(batch)
        assert p_o.dtype == p_t.dtype and torch.equal(p_t, p_o), "predictions differ"
        report["prediction_mismatches"] = int((p_t != p_o).sum())
    return report
