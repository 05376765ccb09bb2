"""Drift and test-time adaptation in the benchmark (``mmguard bench --adapt none,stats,adabn,tent``).

Two kinds of drift (docs/drift.md):

* **real drift between groups** — the test split holds several groups of a meta column
  (``--split-by batch --test-groups 3,4,5,6``) plus an in-distribution part: a held-out fraction of
  the training groups (``--id-test 0.15``). Within a group the samples are shuffled with a seeded
  order (decision: the files list a recording batch sorted by class, not by time);
* **synthetic slow drift with ground truth** — each ``--drift-faults`` spec (e.g. ``slow_drift``
  across episodes, docs/faults.md) applied to the test split in time order (episode, t).

Per seed, with the downstream models of :mod:`mmguard.experiments.downstream_eval`:

1. **detector** — a :class:`~mmguard.adapt.drift.DriftDetector` fitted on the training and
   validation splits (the one every guard carries). Each drifted group and each synthetic stream
   is a fresh stream: *delay* = samples seen at the first alarm (``None``: never). The
   in-distribution part is shuffled ``id_streams`` times: false alarms per test, and the share of
   streams with any alarm;
2. **adaptation** — one continuous stream: the in-distribution part first, then the drifted
   groups in ascending order (the order they were recorded in), fed in chunks of ``chunk``
   samples to :class:`~mmguard.downstream.adaptive.AdaptiveDownstream`, gated by the detector.
   Options: ``none``; ``stats`` (gated) and ``stats_ungated``; ``bn_none``, ``bn_stats``, ``adabn``
   and ``tent`` on the clean model with batch normalisation (trained when adabn/tent are asked for); ``peer``
   (the modality-dropout + fault-mix model, no adaptation). Synthetic streams add ``oracle``
   (the clean model on the same stream without drift);
3. **guards** — the same streams through each guard as trained (``none``) and with its own
   statistics adaptation gated by its own drift monitor (``stats``): flagged fraction, the clean
   downstream model on the guard's ``transform`` (correcting guards), its own prediction
   (predicting guards, task ``target``).

Selection (honest science): the adaptation option reported as ``selected`` is the one with the
best mean metric over the **development** groups (``--dev-groups``) among those losing at most
``id_tolerance`` on the in-distribution part; groups that are neither dev nor in-distribution are
the report groups.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from mmguard.adapt.drift import DriftConfig, DriftDetector
from mmguard.adapt.window import recent
from mmguard.data.model import MultimodalBatch, concat_batches
from mmguard.data.preprocessing import Standardizer
from mmguard.downstream.adaptive import METHODS, AdaptiveDownstream
from mmguard.downstream.model import Downstream, downstream_metric
from mmguard.errors import DataError, SpecError
from mmguard.eval.stats import mean_std
from mmguard.experiments.downstream_eval import task_values
from mmguard.faults import apply_faults, load_spec
from mmguard.seeding import derive_seed


class DriftSettings(BaseModel):
    """The drift part of a benchmark run (saved in config.json)."""

    model_config = ConfigDict(extra="forbid")

    adapt: list[str] = Field(default_factory=lambda: ["none", "stats"])
    group_key: str | None = None
    id_groups: list[float] = Field(default_factory=list, description="training groups (in-distribution part)")
    dev_groups: list[float] = Field(default_factory=list, description="groups that select the adaptation")
    window: int = Field(256, ge=2, description="samples the adaptation statistics are estimated from")
    chunk: int = Field(25, ge=1, description="samples per stream update")
    id_streams: int = Field(100, ge=1, description="shuffles of the in-distribution part for false alarms")
    id_tolerance: float = Field(0.01, ge=0, description="largest in-distribution loss a selected option may have")
    faults: list[dict[str, Any]] = Field(default_factory=list, description="synthetic drift specs")
    detector: dict[str, Any] = Field(default_factory=dict, description="DriftConfig overrides")

    @field_validator("adapt")
    @classmethod
    def _methods(cls, v: list[str]) -> list[str]:
        bad = [m for m in v if m not in METHODS]
        if bad:
            raise ValueError(f"unknown adaptation {bad[0]!r}; choose from {list(METHODS)}")
        return ["none"] + [m for m in dict.fromkeys(v) if m != "none"]

    def detector_config(self) -> DriftConfig:
        try:
            return DriftConfig(**self.detector)
        except Exception as exc:  # pydantic ValidationError → one line
            raise SpecError(f"bad drift detector setting: {str(exc).splitlines()[-1].strip()}") from None

    @property
    def needs_bn(self) -> bool:
        return bool({"adabn", "tent"} & set(self.adapt))


@dataclass(frozen=True)
class Stream:
    """A standardised stream: ``batch`` in stream order, ``parts`` label → rows, ``kinds`` label →
    ``id`` / ``dev`` / ``report`` / ``synthetic``; ``order`` maps stream rows to test-split rows."""

    batch: MultimodalBatch
    parts: dict[str, slice]
    kinds: dict[str, str]
    order: torch.Tensor
    clean: MultimodalBatch | None = None  # synthetic: the same stream without the drift


def _label(key: str, value: float) -> str:
    return f"{key}={value:g}"


def _time_order(batch: MultimodalBatch) -> torch.Tensor:
    keys = [batch.meta[k].double() for k in ("t", "episode") if k in batch.meta]
    order = torch.arange(len(batch))
    for k in keys:  # stable sorts: last key sorted last is the primary key
        order = order[torch.argsort(k[order], stable=True)]
    return order


def build_streams(settings: DriftSettings, test_std: MultimodalBatch, seed: int) -> dict[str, Stream]:
    """{name: Stream}: ``groups`` (real drift, when a group key is set) and one per synthetic spec."""
    out: dict[str, Stream] = {}
    if settings.group_key is not None:
        if settings.group_key not in test_std.meta:
            raise DataError(f"the test split has no meta column {settings.group_key!r} to report drift by")
        g = test_std.meta[settings.group_key].double()
        values = sorted(set(g.tolist()))
        ids = [v for v in values if v in settings.id_groups]
        if not ids:
            raise SpecError("drift evaluation needs in-distribution test samples: hold out a fraction of the "
                            "training groups with --id-test (e.g. 0.15)")
        rows, parts, kinds, start = [], {}, {}, 0
        id_rows = torch.nonzero(torch.isin(g, torch.tensor(ids, dtype=torch.float64))).flatten()
        blocks = [("id", id_rows)] + [(_label(settings.group_key, v), torch.nonzero(g == v).flatten())
                                      for v in values if v not in ids]
        for label, r in blocks:
            perm = torch.randperm(len(r), generator=torch.Generator().manual_seed(derive_seed(seed, "drift", label)))
            rows.append(r[perm])
            parts[label] = slice(start, start + len(r))
            start += len(r)
            value = None if label == "id" else float(label.split("=", 1)[1])
            kinds[label] = "id" if label == "id" else "dev" if value in settings.dev_groups else "report"
        order = torch.cat(rows)
        out["groups"] = Stream(test_std.select(order), parts, kinds, order)
    for i, raw in enumerate(settings.faults):
        spec = load_spec(raw)
        name = f"drift:{spec.scenario.name or i}"
        order = _time_order(test_std)
        clean = test_std.select(order)
        drifted = apply_faults(clean, spec, seed=derive_seed(seed, "drift", name))
        out[name] = Stream(drifted, {name: slice(0, len(order))}, {name: "synthetic"}, order, clean)
    if not out:
        raise SpecError("--adapt needs drift to evaluate: a group split (--split-by with --test-groups and "
                        "--id-test) or --drift-faults")
    return out


# ---------------------------------------------------------------------------- detector
def detector_rows(settings: DriftSettings, det: DriftDetector, streams: dict[str, Stream], seed: int
                  ) -> dict[str, Any]:
    """Delay per drifted part (fresh streams) and false alarms on in-distribution shuffles."""
    out: dict[str, Any] = {"window": det.window, "step": det.config.step, "alpha": det.config.alpha, "parts": {}}
    for stream in streams.values():
        for label, rows in stream.parts.items():
            part = stream.batch.select(rows)
            if stream.kinds[label] == "id":
                tests = alarms = flagged_streams = 0
                for r in range(settings.id_streams):
                    perm = torch.randperm(len(part), generator=torch.Generator().manual_seed(
                        derive_seed(seed, "drift", "id-stream", r)))
                    mon = det.monitor()
                    mon.update(part.select(perm))
                    tests, alarms, flagged_streams = tests + mon.tests, alarms + mon.alarms, flagged_streams + (
                        mon.alarms > 0)
                out["id"] = {"tests": tests, "false_alarm_rate": alarms / tests if tests else None,
                             "streams_with_alarm": flagged_streams / settings.id_streams, "samples": len(part)}
                continue
            mon = det.monitor()
            mon.update(part)
            row = {"delay": mon.first_alarm, "tests": mon.tests,
                   "alarm_share": mon.alarms / mon.tests if mon.tests else None, "samples": len(part)}
            if stream.clean is not None:
                clean_mon = det.monitor()
                clean_mon.update(stream.clean)
                row["clean_alarm_share"] = clean_mon.alarms / clean_mon.tests if clean_mon.tests else None
            out["parts"][label] = row
    return out


# ---------------------------------------------------------------------------- downstream options
def _metrics(pred: torch.Tensor, y: torch.Tensor, stream: Stream, task: str) -> dict[str, dict[str, float]]:
    return {label: downstream_metric(pred[rows], y[rows], task) for label, rows in stream.parts.items()}


def baseline_drift_rows(settings: DriftSettings, models: dict[str, dict[str, Downstream]], det: DriftDetector,
                        streams: dict[str, Stream], test: MultimodalBatch) -> dict[str, Any]:
    """{stream: {task: {option: {part: metrics}}}} for the downstream options without a guard."""
    out: dict[str, Any] = {}
    for sname, stream in streams.items():
        out[sname] = {}
        for task, m in models.items():
            y = task_values(test, task)[stream.order]
            clean = m["clean"]
            kind = clean.task
            rows: dict[str, Any] = {"none": _metrics(clean.predict(stream.batch), y, stream, kind)}
            if "peer" in m:
                rows["peer"] = _metrics(m["peer"].predict(stream.batch), y, stream, kind)
            if stream.clean is not None:
                rows["oracle"] = _metrics(clean.predict(stream.clean), y, stream, kind)
            for method in settings.adapt:
                if method == "none" or (method == "tent" and kind == "regression"):
                    continue
                model = m["clean_bn"] if method in ("adabn", "tent") else clean
                runs = {method: det.monitor()}
                if method == "stats":
                    runs["stats_ungated"] = None
                for label, monitor in runs.items():
                    adaptive = AdaptiveDownstream(model, method, window=settings.window,  # type: ignore[arg-type]
                                                  monitor=monitor)
                    rows[label] = _metrics(adaptive.run(stream.batch, settings.chunk), y, stream, kind)
            if "clean_bn" in m:
                rows["bn_none"] = _metrics(m["clean_bn"].predict(stream.batch), y, stream, kind)
                if "stats" in settings.adapt:
                    adaptive = AdaptiveDownstream(m["clean_bn"], "stats", window=settings.window, monitor=det.monitor())
                    rows["bn_stats"] = _metrics(adaptive.run(stream.batch, settings.chunk), y, stream, kind)
            out[sname][task] = rows
    return out


# ---------------------------------------------------------------------------- guards
def guard_drift_rows(settings: DriftSettings, guard: Any, models: dict[str, dict[str, Downstream]] | None,
                     streams: dict[str, Stream], st: Standardizer, test: MultimodalBatch) -> dict[str, Any]:
    """{stream: {option: {part: {"flagged": share, task: metrics}}}} for one fitted guard."""
    out: dict[str, Any] = {}
    options = ["none"] + (["stats"] if "stats" in settings.adapt else [])
    has_detector = guard.drift_detector is not None
    for sname, stream in streams.items():
        raw = st.inverse(stream.batch)
        out[sname] = {}
        for option in options:
            if option == "stats" and not has_detector:
                continue
            flags, fixed, preds = [], [], []
            monitor = guard.drift_monitor() if option == "stats" else None
            window: MultimodalBatch | None = None
            guard.reset_adaptation()
            for i in range(0, len(raw), settings.chunk):
                chunk = raw.select(slice(i, i + settings.chunk))
                if monitor is not None:
                    monitor.update(chunk)
                    window = recent(window, chunk, settings.window)
                    if monitor.drifted:
                        guard.adapt(window, *_balance(guard, models, st, window))
                if guard.flags:
                    flags.append(guard.flag(chunk))
                if guard.corrects:
                    fixed.append(guard.transform(chunk))
                if guard.predicts:
                    preds.append(guard.predict(chunk))
            guard.reset_adaptation()
            rows: dict[str, dict[str, Any]] = {label: {} for label in stream.parts}
            if flags:
                f = torch.cat(flags)
                for label, r in stream.parts.items():
                    rows[label]["flagged"] = float(f[r].any(1).double().mean())
            for task, m in (models or {}).items():
                y = task_values(test, task)[stream.order]
                pred = None
                if fixed:
                    pred = m["clean"].predict(st.transform(concat_batches(fixed)))
                elif preds and task == "target":
                    pred = torch.cat(preds)
                if pred is not None:
                    for label, r in stream.parts.items():
                        rows[label][task] = downstream_metric(pred[r], y[r], m["clean"].task)
            out[sname][option] = rows
    return out


def _balance(guard: Any, models: dict[str, dict[str, Downstream]] | None, st: Standardizer,
             window: MultimodalBatch) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Class probabilities and prior for a guard that predicts nothing itself: those of the first
    classification model behind it (the pipeline's own model); none for a predicting guard."""
    if guard.predicts:
        return None, None
    for m in (models or {}).values():
        clean = m["clean"]
        if clean.prior is not None:
            return torch.softmax(clean.outputs(st.transform(window)), 1), torch.tensor(clean.prior)
    return None, None


# ---------------------------------------------------------------------------- aggregation
def summarise_drift(settings: DriftSettings, seeds: list[int], per_seed: dict[int, dict[str, Any]],
                    guards: dict[str, dict[int, Any]]) -> dict[str, Any]:
    """Mean ± std over seeds per option and part, the drifted-part mean, the in-distribution loss,
    paired differences against ``none``, and the dev-selected option.

    ``per_seed[s]`` = {"rows": :func:`baseline_drift_rows`, "kinds": {stream: kinds}, "detector":
    :func:`detector_rows`}; ``guards[g][s]`` = :func:`guard_drift_rows`.
    """
    out: dict[str, Any] = {"detector": _detector_summary(seeds, {s: per_seed[s]["detector"] for s in seeds}),
                           "streams": {}}
    first = per_seed[seeds[0]]
    for sname, tasks in first["rows"].items():
        kinds = first["kinds"][sname]
        out["streams"][sname] = {"tasks": {}, "flagged": {}}
        for task, options in tasks.items():
            scores: dict[str, dict[int, dict[str, float]]] = {
                o: {s: {lbl: per_seed[s]["rows"][sname][task][o][lbl]["score"] for lbl in options[o]} for s in seeds}
                for o in options}
            for g, units in guards.items():
                for option in ("none", "stats"):
                    rows = {s: units[s].get(sname, {}).get(option) for s in seeds}
                    if all(r is not None and all(task in p for p in r.values()) for r in rows.values()):
                        scores[f"{g}:{option}"] = {s: {lbl: rows[s][lbl][task]["score"] for lbl in rows[s]}  # type: ignore
                                                   for s in seeds}
            metric = "mae" if "r2" in options["none"][next(iter(options["none"]))] else "f1"
            table = _option_table(settings, seeds, scores, kinds, 1.0 if metric == "f1" else -1.0)
            out["streams"][sname]["tasks"][task] = {"metric": metric, **table}
        for g, units in guards.items():
            for option in ("none", "stats"):
                rows = {s: units[s].get(sname, {}).get(option) for s in seeds}
                if all(r is not None and all("flagged" in p for p in r.values()) for r in rows.values()):
                    out["streams"][sname]["flagged"][f"{g}:{option}"] = {
                        lbl: mean_std([rows[s][lbl]["flagged"] for s in seeds]) for lbl in rows[seeds[0]]}  # type: ignore
    return out


def _option_table(settings: DriftSettings, seeds: list[int], per_option: dict[str, dict[int, dict[str, float]]],
                  kinds: dict[str, str], sign: float) -> dict[str, Any]:
    """``sign`` = +1 when higher is better (F1), −1 when lower is better (MAE)."""
    drifted = [lbl for lbl, k in kinds.items() if k != "id"]
    dev = [lbl for lbl, k in kinds.items() if k == "dev"]
    report = [lbl for lbl, k in kinds.items() if k in ("report", "synthetic")]
    has_id = "id" in kinds

    def mean_over(option: str, labels: list[str], s: int) -> float | None:
        vals = [per_option[option][s][lbl] for lbl in labels if lbl in per_option[option][s]]
        return sum(vals) / len(vals) if vals and len(vals) == len(labels) else None

    table: dict[str, Any] = {}
    for option, by_seed in per_option.items():
        row: dict[str, Any] = {"parts": {lbl: mean_std([by_seed[s][lbl] for s in seeds]) for lbl in by_seed[seeds[0]]}}
        for name, labels in (("drifted", drifted), ("dev", dev), ("report", report)):
            vals = [mean_over(option, labels, s) for s in seeds] if labels else []
            if vals and all(v is not None for v in vals):
                row[name] = mean_std(vals)  # type: ignore[arg-type]
                none_vals = [mean_over("none", labels, s) for s in seeds]
                row[f"{name}_minus_none"] = mean_std([a - b for a, b in zip(vals, none_vals, strict=True)])  # type: ignore
        if has_id and "id" in by_seed[seeds[0]]:
            row["id_loss"] = mean_std([sign * (per_option["none"][s]["id"] - by_seed[s]["id"]) for s in seeds])
        table[option] = row
    candidates = [o for o in table if o not in ("oracle",) and "dev" in table[o]
                  and (not has_id or "id_loss" not in table[o] or table[o]["id_loss"][0] <= settings.id_tolerance)]
    selected = max(candidates, key=lambda o: sign * table[o]["dev"][0]) if candidates else None
    return {"options": table, "selected": selected, "kinds": kinds}


def _detector_summary(seeds: list[int], detectors: dict[int, Any]) -> dict[str, Any]:
    first = detectors[seeds[0]]
    out: dict[str, Any] = {"window": first["window"], "step": first["step"], "alpha": first["alpha"], "parts": {}}
    if "id" in first:
        out["id"] = {k: mean_std([detectors[s]["id"][k] for s in seeds])
                     for k in ("false_alarm_rate", "streams_with_alarm") if first["id"][k] is not None}
        out["id"]["samples"] = first["id"]["samples"]
    for label in first["parts"]:
        delays = [detectors[s]["parts"][label]["delay"] for s in seeds]
        row: dict[str, Any] = {"detected": sum(d is not None for d in delays), "seeds": len(seeds),
                               "samples": first["parts"][label]["samples"]}
        if all(d is not None for d in delays):
            row["delay"] = mean_std([float(d) for d in delays])
            row["max_delay"] = max(delays)
        for key in ("alarm_share", "clean_alarm_share"):
            vals = [detectors[s]["parts"][label].get(key) for s in seeds]
            if all(v is not None for v in vals):
                row[key] = mean_std(vals)
        out["parts"][label] = row
    return out
