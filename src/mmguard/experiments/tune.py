"""Hyperparameter search for any registered guard, selected on the validation split only (``mmguard tune``).

A search fits one guard per **trial** — a configuration drawn from a search space
(:mod:`mmguard.experiments.tune_space`) — on the training split, with one fixed fit seed, and scores
it on the **validation split**; the best trial's configuration is written as ``best_config.json``
(usable as ``mmguard fit --config``). Decisions (docs/tune.md):

* **The test split is withheld.** :func:`run_tune` replaces it by an empty batch before anything
  else happens (:func:`withhold_test`), so no trial, fingerprint or report can read it; selecting
  on test would make the later benchmark numbers optimistic.
* **One objective per guard kind, available for every guard** (:data:`OBJECTIVES`), computed by
  the benchmark's own evaluation (:func:`mmguard.eval.guard_eval.evaluate_guard`) on one seeded
  faulty draw of the standardised validation split from the training fault mix
  (:func:`mmguard.faults.scenarios.training_mix`, the default 40 % clean / 48 % one modality /
  12 % common-cause mix; the draw's seed derives from the fit seed, so every trial is scored on
  the same batch): correcting guards → ``val_error`` (min), predicting guards → ``val_f1``
  (max), flag-only guards → ``val_auroc`` (max). Every available metric is stored per trial, so
  ``--metric`` can re-rank a finished search without refitting.
* **Trial k is a pure function of (search seed, k)**; its result is a pure function of (guard,
  data, trial config, fit seed): the engine only decides where trials run. ``--engine local``
  runs them here, one after the other (:class:`~mmguard.engine.local.LocalEngine`); ``--engine
  ray`` runs the same pre-sampled list as Ray Tune trials (:mod:`mmguard.experiments.tune_ray`).
* **Resume.** ``trials.jsonl`` gets one record per finished trial (the whole file rewritten
  atomically, so a kill never leaves half a line), keyed by the trial's fingerprint; a rerun
  reuses every record whose fingerprint it needs (also after ``--trials`` grows, or under the
  other engine) and fits only the rest. Two trials that drew the same config are fitted once.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mmguard.data.model import MultimodalBatch
from mmguard.data.preprocessing import Standardizer
from mmguard.data.splits import Splits
from mmguard.engine import Job
from mmguard.engine.local import LocalEngine
from mmguard.errors import CheckpointError, MMGuardError, SpecError
from mmguard.eval.guard_eval import evaluate_guard
from mmguard.experiments.tune_space import (
    SearchSpace,
    asha_rungs,
    check_keys,
    epoch_fields,
    get_key,
    merged,
    nest,
    parse_space,
)
from mmguard.experiments.units import data_fingerprint, fingerprint
from mmguard.faults import apply_faults
from mmguard.faults.scenarios import training_mix
from mmguard.guard import Guard, create_guard, get_guard
from mmguard.io.checkpoint import atomic_write_text, read_json, write_json
from mmguard.io.jsonio import jsonable
from mmguard.seeding import derive_seed

Log = Callable[[str], None]


@dataclass(frozen=True)
class Objective:
    """A validation metric a search can select on."""

    name: str
    mode: Literal["min", "max"]
    needs: Literal["correct", "flag", "predict"]
    description: str


OBJECTIVES: dict[str, Objective] = {o.name: o for o in (
    Objective("val_error", "min", "correct", "combined reconstruction error on the faulty validation draw: MSE "
              "per sample and modality against the clean validation input, in the training split's "
              "standardised units, summed over modalities, averaged over every sample of the draw (faulty and "
              "clean: a guard that damages clean samples pays for it)"),
    Objective("val_error_faulty", "min", "correct", "the combined reconstruction error over the faulty "
              "samples of the validation draw only"),
    Objective("val_auroc", "max", "flag", "AUROC of the sample score (largest normalised modality score), "
              "faulty vs clean samples of the validation draw"),
    Objective("val_f1", "max", "predict", "F1 of the predictions on the faulty validation draw (binary: "
              "class 1; multi-class: macro)"),
    Objective("val_accuracy", "max", "predict", "accuracy of the predictions on the faulty validation draw"),
)}


def default_metric(cls: type[Guard]) -> str:
    """The objective of a guard kind: what the guard is for. Correcting → ``val_error``; predicting
    (and not correcting) → ``val_f1``; flag-only → ``val_auroc``."""
    if cls.corrects:
        return "val_error"
    if cls.predicts:
        return "val_f1"
    if cls.flags:
        return "val_auroc"
    raise SpecError(f"guard {cls.name!r} neither corrects, predicts nor flags: nothing to tune on")


class TuneConfig(BaseModel):
    """Everything that defines a search; saved as DIR/config.json."""

    model_config = ConfigDict(extra="forbid")

    guard: str
    data: dict[str, Any] = Field(default_factory=dict, description="how the data were loaded and split")
    space: dict[str, Any] = Field(description="{dotted config key: {distribution: args}} (tune_space)")
    trials: int = Field(ge=1)
    seed: int = Field(0, description="search seed: trial k's config is a function of (seed, k)")
    fit_seed: int = Field(0, description="every trial's fit seed (and the seed of the validation draw)")
    metric: str | None = Field(None, description="objective (OBJECTIVES); None: the guard kind's default")
    base_config: dict[str, Any] = Field(default_factory=dict, description="guard settings under every trial")
    quick: bool = False
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    precision: Literal["fp32", "bf16"] = "fp32"
    engine: Literal["local", "ray"] = "local"
    address: str | None = None
    scheduler: Literal["none", "asha"] = "none"
    asha_budget: str | None = Field(None, description="epochs field ASHA scales (default: the only one)")


#: settings that may change between a search and its resumption (they do not change any trial's result)
RESUMABLE = {"trials", "metric", "engine", "address", "device", "scheduler", "asha_budget"}


@dataclass(frozen=True)
class Trial:
    """Trial ``k``: its sampled values, the whole validated guard config, and its fingerprint."""

    k: int
    params: dict[str, Any]
    config: dict[str, Any]
    fingerprint: str = ""


@dataclass(frozen=True)
class SearchPlan:
    """A validated search, before any data: the guard class, space, objective and every trial."""

    cls: type[Guard]
    space: SearchSpace
    objective: Objective
    trials: list[Trial]
    budget_key: str | None = None
    rungs: list[int] = field(default_factory=list)


def plan_search(cfg: TuneConfig) -> SearchPlan:
    """Validate the search (guard, space keys, objective, scheduler) and sample every trial's config.

    Each trial's config — quick settings (``--quick``) under the base config under the sampled
    values — goes through :meth:`Guard.validate_config` here, so a value the guard refuses is a
    one-line error naming the trial before anything is fitted.
    """
    cls = get_guard(cfg.guard)
    space = parse_space(cfg.space)
    check_keys(space, cls.config_class, cfg.guard)
    metric = cfg.metric or default_metric(cls)
    if metric not in OBJECTIVES:
        raise SpecError(f"unknown metric {metric!r}; use one of {', '.join(OBJECTIVES)}")
    objective = OBJECTIVES[metric]
    if not cls.capabilities()[objective.needs]:
        raise SpecError(f"metric {metric!r} needs a guard that can {objective.needs}; guard {cfg.guard!r} "
                        f"cannot (its default metric is {default_metric(cls)!r})")
    base = cls.validate_config(cls.quick_config).model_dump(mode="json") if cfg.quick else {}
    base = merged(base, cfg.base_config)
    cls.validate_config(base)
    trials = []
    for k in range(cfg.trials):
        params = space.sample(cfg.seed, k)
        try:
            config = cls.validate_config(merged(base, nest(params))).model_dump(mode="json")
        except MMGuardError as exc:
            shown = ", ".join(f"{key}={_fmt(v)}" for key, v in params.items())
            raise SpecError(f"trial {k} ({shown}): {exc}") from None
        trials.append(Trial(k, params, config))
    budget, rungs = None, []
    if cfg.scheduler == "asha":
        if cfg.engine != "ray":
            raise SpecError("--scheduler asha needs --engine ray (it is Ray Tune's scheduler)")
        budget = _budget_key(cfg, cls)
        if budget in space.params:
            raise SpecError(f"--scheduler asha scales {budget!r}: leave it out of the search space")
        rungs = asha_rungs(int(get_key(trials[0].config, budget)))
    return SearchPlan(cls, space, objective, trials, budget, rungs)


def _budget_key(cfg: TuneConfig, cls: type[Guard]) -> str:
    fields = epoch_fields(cls.config_class)
    if cfg.asha_budget is not None:
        if cfg.asha_budget not in fields:
            raise SpecError(f"--asha-budget {cfg.asha_budget!r} is not an epochs field of guard {cfg.guard!r}'s "
                            f"config; its epochs fields: {fields or 'none'}")
        return cfg.asha_budget
    if len(fields) != 1:
        raise SpecError(f"--scheduler asha needs one epochs field to scale; guard {cfg.guard!r} has "
                        f"{fields or 'none'}: name one with --asha-budget")
    return fields[0]


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else json.dumps(v)


# ---------------------------------------------------------------------------- one trial
def withhold_test(splits: Splits) -> Splits:
    """The training and validation splits, with the test split replaced by an empty batch.

    Built field by field (not ``dataclasses.replace``), so the test split — and ``raw``, which
    could hold it — are never read.
    """
    return Splits(train=splits.train, val=splits.val, test=splits.val.select(slice(0, 0)), name=splits.name)


@dataclass
class TuneWork:
    """What every trial of one search shares; the Ray engine sends it to the workers once."""

    guard: str
    train: MultimodalBatch
    val: MultimodalBatch
    fit_seed: int
    device: str = "cpu"
    precision: str = "fp32"
    token: str = field(default_factory=lambda: uuid.uuid4().hex)


def validation_draw(train: MultimodalBatch, val: MultimodalBatch, fit_seed: int
                    ) -> tuple[Standardizer, MultimodalBatch, MultimodalBatch]:
    """(standardiser of the training split, clean standardised validation split, its faulty draw).

    The faulty draw is the training fault mix applied once to the whole validation split with the
    seed ``derive_seed(fit_seed, "tune", "validation")``: the same batch for every trial.
    """
    st = Standardizer.fit(train)
    val_std = st.transform(val)
    faulty = apply_faults(val_std, training_mix(None, val_std), seed=derive_seed(fit_seed, "tune", "validation"))
    return st, val_std, faulty


def validation_metrics(guard: Guard, train: MultimodalBatch, val: MultimodalBatch, fit_seed: int
                       ) -> dict[str, float | None]:
    """Every objective of :data:`OBJECTIVES` the guard's capabilities allow, on the validation draw."""
    st, val_std, faulty = validation_draw(train, val, fit_seed)
    res = evaluate_guard(guard, st.inverse(faulty), val_std, st)
    out: dict[str, Any] = {}
    if "errors" in res:
        errors = res["errors"]
        out["val_error"] = errors["all"]["combined"]
        out["val_error_faulty"] = (errors["faulty"] or {}).get("combined")
        out["val_error_clean"] = (errors["clean"] or {}).get("combined")
    if "detection" in res:
        out["val_auroc"] = res["detection"]["auroc"]
        out["val_detection_rate"] = res["detection"]["detection_rate"]
        out["val_false_alarm_rate"] = res["detection"]["false_alarm_rate"]
    if "prediction" in res:
        out["val_f1"] = res["prediction"]["f1"]
        out["val_accuracy"] = res["prediction"]["accuracy"]
    return jsonable(out)  # NaN/Inf (a diverged fit) → None: never the best


def run_trial(work: TuneWork, config: dict[str, Any]) -> dict[str, Any]:
    """Fit the guard with ``config`` on the training split (fixed fit seed) and score it on validation."""
    guard = create_guard(work.guard, config, device=work.device, precision=work.precision)
    splits = Splits(train=work.train, val=work.val, test=work.val.select(slice(0, 0)))
    t0 = time.perf_counter()
    guard.fit(splits, seed=work.fit_seed)
    t1 = time.perf_counter()
    metrics = validation_metrics(guard, work.train, work.val, work.fit_seed)
    return {"metrics": metrics, "fit_s": t1 - t0, "eval_s": time.perf_counter() - t1}


def trial_job(work: TuneWork, trial: Trial) -> dict[str, Any]:
    """One trial as an engine job: its record for ``trials.jsonl``."""
    return make_record(trial, run_trial(work, trial.config))


def make_record(trial: Trial, result: dict[str, Any], status: str = "complete",
                epochs: int | None = None) -> dict[str, Any]:
    """A ``trials.jsonl`` line: the trial, its config and fingerprint, its metrics and timings."""
    rec = {"trial": trial.k, "fingerprint": trial.fingerprint, "params": trial.params, "config": trial.config,
           "status": status, **result}
    if epochs is not None:
        rec["epochs"] = epochs
    return rec


def objective_of(metrics: dict[str, Any], metric: str) -> float | None:
    value = metrics.get(metric)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


# ---------------------------------------------------------------------------- trials.jsonl
class TrialLog:
    """``trials.jsonl``: one JSON record per finished trial, rewritten atomically on every addition."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a hand-edited line: that trial runs again
                if isinstance(rec, dict) and isinstance(rec.get("fingerprint"), str):
                    self.records.append(rec)

    def find(self, fp: str, *, stopped: bool = False) -> dict[str, Any] | None:
        """The latest record of fingerprint ``fp`` (stopped trials only when ``stopped``)."""
        for rec in reversed(self.records):
            if rec["fingerprint"] == fp and (rec.get("status") == "complete" or stopped):
                return rec
        return None

    def add(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        text = "".join(json.dumps(jsonable(r), allow_nan=False) + "\n" for r in self.records)
        atomic_write_text(self.path, text)


# ---------------------------------------------------------------------------- the search
def check_run_dir(out: Path, cfg: TuneConfig) -> None:
    """Refuse a directory that holds a different search (other guard, data, space, seeds, base config)."""
    path = out / "config.json"
    if not path.is_file():
        return
    try:
        prev = read_json(path)
        prev = TuneConfig.model_validate({k: v for k, v in prev.items() if k not in ("method", "objective")})
    except (CheckpointError, ValidationError, AttributeError, TypeError):
        raise CheckpointError(f"{str(out)!r} holds something other than a tune run; use another --out") from None
    if prev.model_dump(mode="json", exclude=RESUMABLE) != cfg.model_dump(mode="json", exclude=RESUMABLE):
        raise CheckpointError(f"{str(out)!r} holds a tune run with a different guard, data, space, seed or base "
                              "config; use another --out (or delete it)")


def run_tune(cfg: TuneConfig, splits: Splits, out_dir: str | Path, *, log: Log = print) -> dict[str, Any]:
    """Run (or resume) a search into ``out_dir``; returns ``metrics.json``'s content.

    ``splits`` are raw; their test split is withheld at once (:func:`withhold_test`).
    """
    from mmguard.experiments.tune_report import write_outputs

    out = Path(out_dir)
    if splits.standardized:
        raise SpecError("run_tune takes raw splits")
    splits = withhold_test(splits)
    plan = plan_search(cfg)
    probe = create_guard(cfg.guard, plan.trials[0].config)
    probe._check_data(splits.train, "training split")
    probe._check_data(splits.val, "validation split")
    if plan.objective.needs == "predict" and splits.val.target is None:
        raise SpecError(f"metric {plan.objective.name!r} needs a target in the validation split")
    content = data_fingerprint(splits)
    cfg = cfg.model_copy(update={"data": {**cfg.data, "content": content}})
    check_run_dir(out, cfg)
    write_json(out / "config.json", {"method": "tune", **cfg.model_dump(mode="json"),
                                     "objective": {"metric": plan.objective.name, "mode": plan.objective.mode,
                                                   "description": plan.objective.description}})
    trials = [Trial(t.k, t.params, t.config, fingerprint({"guard": cfg.guard, "config": t.config, "data": content,
                                                          "fit_seed": cfg.fit_seed, "precision": cfg.precision}))
              for t in plan.trials]
    store = TrialLog(out / "trials.jsonl")
    done: dict[str, dict[str, Any]] = {}
    for t in trials:
        rec = store.find(t.fingerprint, stopped=cfg.scheduler == "asha")
        if rec is not None:
            done[t.fingerprint] = rec
    reused = set(done)
    pending = list({t.fingerprint: t for t in reversed(trials) if t.fingerprint not in done}.values())[::-1]
    log(f"data: {splits.sizes()['train']} training and {splits.sizes()['val']} validation samples (test split "
        f"withheld); {len(trials)} trials, {len(trials) - len(pending)} already done, {len(pending)} to fit on "
        f"{cfg.engine}; objective {plan.objective.name} ({plan.objective.mode})")
    work = TuneWork(cfg.guard, splits.train, splits.val, cfg.fit_seed, cfg.device, cfg.precision)

    def finished(rec: dict[str, Any]) -> None:
        store.add(rec)
        done[rec["fingerprint"]] = rec
        value = objective_of(rec["metrics"], plan.objective.name)
        shown = ", ".join(f"{key}={_fmt(v)}" for key, v in rec["params"].items())
        extra = f" (stopped by ASHA at {rec['epochs']} epochs)" if rec["status"] == "stopped" else ""
        log(f"trial {rec['trial']}: {shown} → {plan.objective.name} "
            f"{'n/a' if value is None else f'{value:.6g}'}{extra}; fit {rec['fit_s']:.1f} s")

    t0 = time.perf_counter()
    if pending and cfg.engine == "ray":
        from mmguard.experiments.tune_ray import run_ray_trials

        run_ray_trials(cfg, plan, work, pending, finished)
    elif pending:
        def jobs() -> Iterator[Job]:
            for t in pending:
                yield Job(t.k, (work, t))

        for _, rec in LocalEngine().map(trial_job, jobs()):
            finished(rec)
    metrics = summarise(cfg, plan, trials, done, reused, splits, time.perf_counter() - t0)
    write_outputs(metrics, out)
    return metrics


def summarise(cfg: TuneConfig, plan: SearchPlan, trials: list[Trial], done: dict[str, dict[str, Any]],
              reused: set[str], splits: Splits, wall_s: float) -> dict[str, Any]:
    """``metrics.json``: every trial's values, status, metrics and objective, and the best trial."""
    first: dict[str, int] = {}
    rows = []
    for t in trials:
        rec = done[t.fingerprint]
        row = {"trial": t.k, "params": t.params, "objective": objective_of(rec["metrics"], plan.objective.name),
               "status": rec["status"], "metrics": rec["metrics"], "fit_s": rec["fit_s"], "eval_s": rec["eval_s"],
               "reused": t.fingerprint in reused, "fingerprint": t.fingerprint}
        if t.fingerprint in first:
            row["same_as"] = first[t.fingerprint]
        first.setdefault(t.fingerprint, t.k)
        if "epochs" in rec:
            row["epochs"] = rec["epochs"]
        rows.append(row)
    sign = 1.0 if plan.objective.mode == "min" else -1.0
    ranked = sorted((r for r in rows if r["status"] == "complete" and r["objective"] is not None),
                    key=lambda r: (sign * r["objective"], r["trial"]))
    best = None
    if ranked:
        b = ranked[0]
        best = {"trial": b["trial"], "params": b["params"], "objective": b["objective"],
                "config": next(t.config for t in trials if t.k == b["trial"])}
    return {
        "method": "tune",
        "guard": cfg.guard,
        "data": {**cfg.data, "sizes": {"train": len(splits.train), "val": len(splits.val)},
                 "test": "withheld: the search never reads the test split"},
        "space": plan.space.to_dict(),
        "objective": {"metric": plan.objective.name, "mode": plan.objective.mode,
                      "description": plan.objective.description},
        "seed": cfg.seed,
        "fit_seed": cfg.fit_seed,
        "quick": cfg.quick,
        "engine": cfg.engine,
        "scheduler": cfg.scheduler,
        "asha": {"budget": plan.budget_key, "rungs": plan.rungs} if cfg.scheduler == "asha" else None,
        "trials": rows,
        "best": best,
        "fitted": len([f for f in {t.fingerprint for t in trials} if f not in reused]),
        "reused": len([r for r in rows if r["reused"]]),
        "wall_s": wall_s,
    }
