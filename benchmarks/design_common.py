"""What the validation-only design experiments share (``restore_design.py``, ``emma_design.py``).

:func:`validation_setup` loads a dataset, splits it exactly as ``mmguard bench`` does for the same
seed, and corrupts the **validation** split with the training fault mix (one fixed draw, seed
12345) and with every fault family of the bench (seeds 12346, 12347, ...), the same batches for
every variant. The test split is never corrupted or scored. :func:`write_variants` accumulates
variants over calls in one JSON file per scene.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mmguard.data.model import MultimodalBatch
from mmguard.data.preprocessing import Standardizer
from mmguard.data.registry import load_dataset
from mmguard.data.splits import Splits, make_splits
from mmguard.faults import apply_faults
from mmguard.faults.scenarios import family_specs, training_spec

RESULTS = Path(__file__).parent / "results"


def design_args(doc: str | None, variants: dict[str, Any]) -> argparse.Namespace:
    """The command line every design experiment takes: --data, --seed, --variants, --out, --quick."""
    ap = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", default=",".join(variants))
    ap.add_argument("--out", default=None)
    ap.add_argument("--quick", action="store_true", help="CI-sized guard settings (a smoke test)")
    return ap.parse_args()


def validation_setup(data: str, seed: int) -> tuple[Splits, Standardizer, MultimodalBatch,
                                                     dict[str, tuple[str, MultimodalBatch]]]:
    """(splits, standardizer, standardised clean validation, {label: (origin, faulty validation)})."""
    splits = make_splits(load_dataset(data), seed=seed)
    st = Standardizer.fit(splits.train)
    val_std = st.transform(splits.val)
    conds = {"mix": ("mix", apply_faults(val_std, training_spec(val_std), seed=12345))}
    for i, (label, (origin, spec)) in enumerate(family_specs(val_std).items()):
        conds[label] = (origin, apply_faults(val_std, spec, seed=12346 + i))
    return splits, st, val_std, conds


def write_variants(data: str, experiment: str, out: str | None, header: dict[str, Any],
                   results: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """Merge ``results`` into ``out`` (default ``results/<experiment>_<scene>.json``): a later call adds
    or replaces its variants. Returns the path and every variant now in the file."""
    scene = Path(data.split(":", 1)[-1].split("?")[0]).stem
    path = Path(out or RESULTS / f"{experiment}_{scene}.json")
    if path.is_file():
        results = {**json.loads(path.read_text())["variants"], **results}
    path.write_text(json.dumps({"data": data, **header, "variants": results}, indent=1))
    return path, results
