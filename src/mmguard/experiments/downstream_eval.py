"""Downstream tasks in the benchmark: does the model behind the guard keep working?

For each downstream task (``--downstream quality,seam_distance,phase`` on a twin, ``target`` for a
dataset's own target, or any numeric meta column) and seed, two downstream models are trained
(:mod:`mmguard.downstream.model`): ``clean`` (clean training data — the model a user has) and
``peer`` (fault mix + modality dropout — robustness without a guard). On every condition of the
benchmark the task metric (F1 of class 1 for binary tasks, macro F1 for multi-class, mean absolute
error for regression) is measured for:

* ``oracle`` — the clean model on the clean input (the ceiling);
* ``none`` — the clean model on the faulty input (no guard);
* ``peer`` — the peer on the faulty input;
* ``<guard>`` — the clean model on each correcting guard's ``transform`` of the faulty input;
* ``<guard>`` (predicting guards, task ``target`` only) — the guard's own prediction.

**Retention** is F1(option) / F1(oracle) — for regression MAE(oracle) / MAE(option) — per seed and
condition; the headline averages it over the trained fault families, the unseen families and the
common-cause failures, and gives paired per-seed differences against ``none`` and ``peer``. A
condition where the oracle itself scores 0 (a model that never finds the rare class) has no
retention and is left out of the average; a group left empty is reported as undefined.
"""

from __future__ import annotations

from typing import Any

import torch

from mmguard.data.model import MultimodalBatch
from mmguard.data.splits import Splits
from mmguard.downstream.model import Downstream, DownstreamConfig, downstream_metric, fit_downstream
from mmguard.errors import CheckpointError, DataError
from mmguard.eval.stats import mean_std
from mmguard.faults.scenarios import training_spec
from mmguard.io.checkpoint import load_checkpoint, save_checkpoint

GROUPS = {"trained": ("trained",), "unseen": ("unseen",), "common_cause": ("common_cause",)}


def task_values(batch: MultimodalBatch, name: str) -> torch.Tensor:
    """The values of downstream task ``name`` for every sample (one-line error naming the choices)."""
    if name == "target":
        if batch.target is None or batch.target.ndim != 1:
            raise DataError("downstream task 'target' needs a (N,) target in the data")
        return batch.target
    for key in (f"task:{name}", name):
        if key in batch.meta:
            return batch.meta[key]
    choices = ["target"] * (batch.target is not None) + [k.removeprefix("task:") for k in batch.meta]
    raise DataError(f"unknown downstream task {name!r}; the data have {choices} "
                    "(a twin: add ?tasks=quality,seam_distance,phase to the data URI)")


def check_tasks(tasks: list[str], splits: Splits) -> None:
    for name in tasks:
        for part in (splits.train, splits.val, splits.test):
            values = task_values(part, name)
            if not torch.isfinite(values.double()).all():
                raise DataError(f"downstream task {name!r} has NaN/Inf values")


def mode_config(cfg: DownstreamConfig, mode: str) -> DownstreamConfig:
    """``clean_bn`` (what AdaBN and TENT adapt) is the clean model with batch normalisation."""
    return cfg.model_copy(update={"norm": "batch"}) if mode == "clean_bn" else cfg


def fit_models(tasks: list[str], cfg: DownstreamConfig, splits: Splits, train_std: MultimodalBatch,
               val_std: MultimodalBatch, seed: int, modes: tuple[str, ...] = ("clean", "peer")
               ) -> tuple[dict[str, dict[str, Downstream]], dict[str, Any]]:
    """``clean`` and ``peer`` models (and ``clean_bn`` when asked) per task for one seed (standardised inputs)."""
    spec = training_spec(train_std)
    models: dict[str, dict[str, Downstream]] = {}
    report: dict[str, Any] = {}
    for name in tasks:
        y_tr, y_va = task_values(splits.train, name), task_values(splits.val, name)
        models[name], report[name] = {}, {}
        for mode in modes:
            model, rep = fit_downstream(train_std, val_std, y_tr, y_va, mode_config(cfg, mode), seed=seed,
                                        mode="peer" if mode == "peer" else "clean",
                                        fault_spec=spec if mode == "peer" else None)
            models[name][mode], report[name][mode] = model, rep
    return models, report


def save_models(models: dict[str, dict[str, Downstream]], directory) -> None:
    for name, modes in models.items():
        for mode, m in modes.items():
            save_checkpoint(directory / f"{name}-{mode}", dict(m.net.state_dict()),
                            {"task": m.task, "classes": m.classes, "y_mean": m.y_mean, "y_std": m.y_std,
                             "prior": m.prior})


def load_models(tasks: list[str], specs, cfg: DownstreamConfig, directory,
                modes: tuple[str, ...] = ("clean", "peer")) -> dict[str, dict[str, Downstream]]:
    from mmguard.downstream.model import MultimodalPredictor

    models: dict[str, dict[str, Downstream]] = {}
    for name in tasks:
        models[name] = {}
        for mode in modes:
            tensors, meta = load_checkpoint(directory / f"{name}-{mode}")
            try:
                outputs = 1 if meta["task"] == "regression" else int(meta["classes"])
                net = MultimodalPredictor(specs, outputs, mode_config(cfg, mode))
                net.load_state_dict(tensors, strict=True)
            except (KeyError, RuntimeError) as exc:
                raise CheckpointError(f"downstream model {name}-{mode} does not match ({exc})") from None
            models[name][mode] = Downstream(net, meta["task"], int(meta["classes"]), float(meta["y_mean"]),
                                            float(meta["y_std"]), meta.get("prior"))
    return models


def baseline_rows(models: dict[str, dict[str, Downstream]], conds: dict[str, tuple[str, MultimodalBatch]],
                  test: MultimodalBatch) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """{label: {task: {"oracle", "none", "peer": metrics}}} for one seed."""
    clean = conds["clean"][1]
    out: dict[str, dict[str, dict[str, float]]] = {}
    for label, (_origin, faulty) in conds.items():
        out[label] = {}
        for name, m in models.items():
            y = task_values(test, name)
            task = m["clean"].task
            out[label][name] = {
                "oracle": downstream_metric(m["clean"].predict(clean), y, task),
                "none": downstream_metric(m["clean"].predict(faulty), y, task),
                "peer": downstream_metric(m["peer"].predict(faulty), y, task),
            }
    return out


def guard_scores(models: dict[str, dict[str, Downstream]], test: MultimodalBatch,
                 fixed_std: MultimodalBatch | None, prediction: torch.Tensor | None) -> dict[str, dict[str, float]]:
    """{task: metrics} of one guard on one condition (tasks it has nothing for are left out)."""
    out: dict[str, dict[str, float]] = {}
    for name, m in models.items():
        y = task_values(test, name)
        if fixed_std is not None:
            out[name] = downstream_metric(m["clean"].predict(fixed_std), y, m["clean"].task)
        elif prediction is not None and name == "target":
            out[name] = downstream_metric(prediction, y, m["clean"].task)
    return out


def summarise(tasks: list[str], seeds: list[int], origins: dict[str, str], base: dict[int, Any],
              guards: dict[str, dict[int, dict[str, Any]]]) -> dict[str, Any]:
    """Scores per option and condition, and retention averaged per fault group with paired differences."""
    options = ["oracle", "none", "peer"]
    per_seed: dict[str, dict[str, dict[int, dict[str, float]]]] = {}  # task -> option -> seed -> label -> score
    for name in tasks:
        per_seed[name] = {o: {s: {lbl: base[s][lbl][name][o] for lbl in base[s]} for s in seeds} for o in options}
        for g, units in guards.items():
            rows = {s: {lbl: c["downstream"][name] for lbl, c in units[s]["conditions"].items()
                        if name in c.get("downstream", {})} for s in seeds}
            if all(rows[s] for s in seeds):
                per_seed[name][g] = rows
    out: dict[str, Any] = {}
    for name, by_option in per_seed.items():
        oracle = by_option["oracle"]
        scores = {o: {lbl: mean_std([by_seed[s][lbl]["score"] for s in seeds]) for lbl in by_seed[seeds[0]]}
                  for o, by_seed in by_option.items()}
        retention: dict[str, Any] = {}
        for group, kinds in GROUPS.items():
            labels = [lbl for lbl, o in origins.items() if o in kinds]
            ret = {o: [_mean_retention(by_seed[s], oracle[s], labels) for s in seeds]
                   for o, by_seed in by_option.items()}
            if not labels or any(v is None for v in ret["oracle"]):
                continue
            retention[group] = {
                o: {"retention": mean_std(v),
                    "minus_none": mean_std([a - b for a, b in zip(v, ret["none"], strict=True)]),
                    "minus_peer": mean_std([a - b for a, b in zip(v, ret["peer"], strict=True)])}
                for o, v in ret.items()}
        task = base[seeds[0]]["clean"][name]["oracle"]
        out[name] = {"metric": "mae" if "r2" in task else "f1", "scores": scores, "retention": retention}
    return out


def _mean_retention(rows: dict[str, dict[str, float]], oracle: dict[str, dict[str, float]],
                    labels: list[str]) -> float | None:
    """Mean over ``labels`` of quality / oracle quality; labels with an oracle quality of 0 are left out."""
    ratios = [rows[lbl]["quality"] / oracle[lbl]["quality"] for lbl in labels if oracle[lbl]["quality"] > 0]
    return sum(ratios) / len(ratios) if ratios else None
