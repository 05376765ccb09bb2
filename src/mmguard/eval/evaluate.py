"""Re-evaluate a trained run under any fault spec (``mmguard eval``).

This is how robustness to faults never seen in training is measured: the run's models
are rebuilt from their safetensors, the run's test split is rebuilt from the dataset and
the *saved* preprocessing statistics, the spec is applied to the (standardised) test
split with the given seed, and every model is scored per *condition*: ``clean``, each
distinct fault pattern (e.g. ``ip:gaussian_noise`` or ``ip:stuck_at+dm:drift`` for a
common-cause failure), and ``all``.

Run loaders (one per protocol) live in :mod:`mmguard.experiments.runs`; this module is
generic and never names a method: a loader returns a :class:`LoadedRun` and reuses the rest. Classifier runs (EMMA)
are scored by F1 per condition; a run whose models do something else (MMSSL reconstructs
and detects) supplies an ``evaluator`` that receives the faulty test batch, the clean
test batch and the per-sample condition labels, and returns its metrics per condition.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmguard.data.model import MultimodalBatch
from mmguard.errors import CheckpointError
from mmguard.eval.metrics import binary_f1, macro_f1
from mmguard.eval.stats import mean_std
from mmguard.faults import apply_faults, load_spec

Predictor = Callable[[MultimodalBatch], torch.Tensor]  # standardised batch -> logits (S, N, K)


@dataclass
class LoadedRun:
    """What evaluation needs from a run directory, independent of the method."""

    method: str
    config: dict[str, Any]
    test: MultimodalBatch  # standardised, clean
    models: dict[str, Predictor]
    thresholds: dict[str, torch.Tensor | None]  # per model: (S,) or None (multi-class)
    num_classes: int
    evaluator: Callable[[MultimodalBatch, MultimodalBatch, list[str]], dict[str, Any]] | None = None


def run_config(
    run_dir: Path, config: dict[str, Any], model: Any, overrides: dict[str, Any] | None = None
) -> Any:
    """The run's saved config validated as pydantic ``model`` (unknown keys such as versions are
    dropped; ``overrides`` replace fields), or a one-line CheckpointError."""
    from pydantic import ValidationError

    fields = {k: v for k, v in config.items() if k in model.model_fields}
    fields.update(overrides or {})
    try:
        return model(**fields)
    except ValidationError as exc:
        raise CheckpointError(f"{str(run_dir)!r}: malformed run config: {exc.errors()[0]['msg']}") from None


def check_preprocessing(run_dir: Path, splits, dataset: str) -> None:
    """Raise a one-line DataError unless the run's saved standardiser matches the rebuilt splits'.

    Guards ``mmguard eval`` against re-evaluating a run on data other than its own.
    """
    from mmguard.data.preprocessing import Standardizer
    from mmguard.errors import DataError
    from mmguard.io.checkpoint import load_checkpoint

    tensors, _ = load_checkpoint(run_dir / "preprocessing")
    saved = Standardizer.from_state_tensors(tensors, list(splits.train.names))
    for n in splits.train.names:
        if not (
            torch.allclose(saved.mean[n], splits.standardizer.mean[n], atol=1e-5)
            and torch.allclose(saved.std[n], splits.standardizer.std[n], atol=1e-5)
        ):
            raise DataError(
                f"the data of {dataset!r} differ from those the run was trained on "
                f"(preprocessing statistics of modality {n!r} do not match)"
            )


def condition_labels(batch: MultimodalBatch) -> list[str]:
    """Per-sample condition: 'clean' or 'mod:type[+mod:type...]' in modality order."""
    mask = batch.mask_or_clean().numpy()
    codes = batch.codes_or_clean().numpy()
    names = batch.names
    labels = []
    for row_m, row_c in zip(
        mask, codes, strict=True
    ):  # string building per sample, once per evaluation (not a hot path)
        parts = [f"{names[j]}:{batch.fault_vocab[row_c[j]]}" for j in np.flatnonzero(row_m)]
        labels.append("+".join(parts) if parts else "clean")
    return labels


def _score(
    logits: torch.Tensor, y: torch.Tensor, k: int, thr: torch.Tensor | None, subset: torch.Tensor
) -> torch.Tensor:
    if k == 2:
        return binary_f1(logits.squeeze(-1), y, thr, subset=subset)
    return macro_f1(logits, y, k, subset=subset)


def evaluate_run(run: LoadedRun, spec_source: Any, *, seed: int = 0) -> dict[str, Any]:
    """Metrics (mean ± std over the run's seeds) per model and condition under ``spec_source``:
    F1 for classifier runs, the run's own ``evaluator`` otherwise."""
    spec = load_spec(spec_source)
    faulty = apply_faults(run.test, spec, seed=seed)
    labels = condition_labels(faulty)
    uniq = ["all"] + sorted(set(labels), key=lambda s: (s != "clean", s))
    lab = np.asarray(labels)
    out: dict[str, Any] = {
        "method": run.method,
        "spec": spec.to_dict(),
        "seed": seed,
        "counts": {u: int(len(lab) if u == "all" else (lab == u).sum()) for u in uniq},
    }
    if run.evaluator is not None:
        out.update(run.evaluator(faulty, run.test, labels))
        return out
    out["f1"] = {}
    y = faulty.target.long()
    for name, predict in run.models.items():
        logits = predict(faulty)
        row = {}
        for u in uniq:
            subset = torch.ones(len(lab), dtype=torch.bool) if u == "all" else torch.from_numpy(lab == u)
            if int(subset.sum()) == 0:
                continue
            row[u] = mean_std(_score(logits, y, run.num_classes, run.thresholds.get(name), subset))
        out["f1"][name] = row
    return out
