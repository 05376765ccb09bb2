"""Fault injection: named, parameterized, seeded and vectorized sensor/modality faults.

Quick use::

    from mmguard.faults import apply_faults, thesis_schedule
    noisy = apply_faults(batch, thesis_schedule("ip", "dm", sigma=0.5), seed=0)

Modules: :mod:`~mmguard.faults.registry` (fault types), :mod:`~mmguard.faults.vector` and
:mod:`~mmguard.faults.image` (the built-in faults), :mod:`~mmguard.faults.spec` (JSON/YAML specs),
:mod:`~mmguard.faults.builders` (common specs), :mod:`~mmguard.faults.apply` (selection and
application), :mod:`~mmguard.faults.preview` (PNG previews). See docs/faults.md.
"""

from mmguard.faults import image, slow, vector  # noqa: F401  (register the built-in fault types)
from mmguard.faults.apply import apply_faults, corrupt, exact_count, plan_selection, validate_for_batch
from mmguard.faults.builders import (
    common_cause,
    per_modality_rates,
    severity_sweep,
    single_fault_spec,
    thesis_schedule,
)
from mmguard.faults.preview import preview_faults, synthetic_batch
from mmguard.faults.registry import (
    FaultContext,
    FaultParams,
    FaultType,
    fault_catalog,
    fault_names,
    get_fault,
    list_faults,
    register_fault,
)
from mmguard.faults.spec import FaultEntry, FaultSpec, Scenario, load_spec, parse_spec, spec_from_dict

__all__ = [
    "FaultContext",
    "FaultEntry",
    "FaultParams",
    "FaultSpec",
    "FaultType",
    "Scenario",
    "apply_faults",
    "common_cause",
    "corrupt",
    "exact_count",
    "fault_catalog",
    "fault_names",
    "get_fault",
    "list_faults",
    "load_spec",
    "parse_spec",
    "per_modality_rates",
    "plan_selection",
    "preview_faults",
    "register_fault",
    "severity_sweep",
    "single_fault_spec",
    "spec_from_dict",
    "synthetic_batch",
    "thesis_schedule",
    "validate_for_batch",
]
