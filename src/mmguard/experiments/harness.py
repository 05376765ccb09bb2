"""One benchmark harness for every registered guard (``mmguard bench``).

For each seed, every guard is fitted on the **same** splits (raw units; each guard fits its
own standardiser on the training split) and evaluated on the **same** faulty test batches:

* ``clean`` — the clean test split;
* ``mix`` — the trained fault mix (:func:`mmguard.faults.scenarios.training_spec`: 40 % clean,
  48 % one modality, 12 % common cause) on the test split: the headline detection numbers;
* every fault **family** at rate 1 (:func:`~mmguard.faults.scenarios.family_specs`): trained
  and unseen families per modality, and the trained / unseen **common-cause** failures;
* **severity sweeps** (0.25× to 4× the nominal severity) of a trained and an unseen family
  per modality kind;
* any user spec (``--faults SPEC``), labelled ``custom:<scenario name>``.

Faults act on the test split standardised with the training statistics (the units every
protocol in mmguard uses), then go back to raw units for the guards. Each (guard, seed)
is one unit of work (:mod:`mmguard.experiments.units`): its metrics are written atomically to
``units/<guard>/seed<k>.json`` and its fitted guard to ``guards/<guard>/seed<k>/``; a rerun with
the same configuration and data skips finished units (resume after a kill), a different one
in the same directory is refused. The test split is evaluated once per unit, for the report.

Each pending unit is a job (:mod:`mmguard.engine`): the default ``local`` engine runs them here in
order; the ``ray`` engine runs them as Ray tasks. A job depends only on the run's shared inputs
(config, raw splits), its guard and its seed: a remote worker rebuilds the seed's faulty test
batches (and drift streams) deterministically from the seed, receives the seed's downstream
models as checkpoint files, and returns its fitted guard as files, which this process writes to
``guards/<guard>/seed<k>/`` before the unit's JSON (no shared filesystem needed; docs/distributed.md).

Aggregation: mean ± std over seeds of every metric, and **paired per-seed ratios** of the
combined error against the reference guard (``reference``, default the first guard) and
against the input itself ("none": no guard).
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mmguard.adapt.drift import DriftDetector
from mmguard.data.model import MultimodalBatch
from mmguard.data.preprocessing import Standardizer
from mmguard.data.splits import Splits
from mmguard.downstream.model import Downstream, DownstreamConfig
from mmguard.engine import Engine, Job
from mmguard.engine.files import read_tree, write_tree
from mmguard.engine.local import LocalEngine
from mmguard.errors import CheckpointError, SpecError
from mmguard.eval.guard_eval import evaluate_guard, input_errors
from mmguard.eval.stats import mean_std, paired_ratio
from mmguard.experiments.downstream_eval import (
    baseline_rows,
    check_tasks,
    fit_models,
    guard_scores,
    load_models,
    save_models,
    summarise,
)
from mmguard.experiments.drift_eval import (
    DriftSettings,
    Stream,
    baseline_drift_rows,
    build_streams,
    detector_rows,
    guard_drift_rows,
    summarise_drift,
)
from mmguard.experiments.fields import NameList, SeedList
from mmguard.experiments.units import RunUnits, data_fingerprint, fingerprint
from mmguard.faults import apply_faults, load_spec
from mmguard.faults.scenarios import family_specs, sweep_specs, training_spec
from mmguard.guard import create_guard
from mmguard.io.checkpoint import read_json, write_json
from mmguard.seeding import derive_seed

Log = Callable[[str], None]


class BenchConfig(BaseModel):
    """Everything that defines a benchmark run; saved as DIR/config.json."""

    model_config = ConfigDict(extra="forbid")

    data: dict[str, Any] = Field(default_factory=dict, description="how the data were loaded and split")
    guards: NameList
    guard_configs: dict[str, dict[str, Any]] = Field(default_factory=dict)
    seeds: SeedList = Field(default_factory=lambda: [0, 1, 2, 3, 4])
    families: bool = True
    severity_sweep: bool = True
    faults: list[dict[str, Any]] = Field(default_factory=list)
    reference: str | None = None
    downstream: list[str] = Field(default_factory=list, description="downstream tasks (see downstream_eval)")
    downstream_config: dict[str, Any] = Field(default_factory=dict)
    quick: bool = False
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16: autocast forward passes of every "
                                               "guard's training and inference (docs/devices.md)")
    drift: DriftSettings | None = Field(None, description="drift detection and test-time adaptation "
                                        "(experiments/drift_eval.py)")


def guard_config(cfg: BenchConfig, name: str) -> dict[str, Any] | None:
    """A guard's settings; its drift detector takes the run's detector overrides unless set explicitly."""
    own = cfg.guard_configs.get(name)
    if cfg.drift is None or not cfg.drift.detector or (own and "drift" in own):
        return own
    return {**(own or {}), "drift": cfg.drift.detector}


def check_guards(cfg: BenchConfig, splits: Splits) -> None:
    """Fail early (one line) on an unknown guard, a bad guard config or data a guard cannot take."""
    for name in cfg.guards:
        create_guard(name, guard_config(cfg, name), quick=cfg.quick)._check_data(splits.train, "training split")
    unknown = sorted(set(cfg.guard_configs) - set(cfg.guards))
    if unknown:
        raise SpecError(f"guard configs given for guards not in the benchmark: {unknown}")
    if cfg.reference is not None and cfg.reference not in cfg.guards:
        raise SpecError(f"reference guard {cfg.reference!r} is not among {cfg.guards}")


# ---------------------------------------------------------------------------- conditions
def conditions(cfg: BenchConfig, test_std: MultimodalBatch, seed: int) -> dict[str, tuple[str, MultimodalBatch]]:
    """{label: (origin, faulty standardised test batch)} — the same for every guard of a seed."""
    out: dict[str, tuple[str, MultimodalBatch]] = {"clean": ("clean", test_std)}
    out["mix"] = ("mix", apply_faults(test_std, training_spec(test_std), seed=derive_seed(seed, "bench", "mix")))
    if cfg.families:
        for label, (origin, spec) in family_specs(test_std).items():
            kind = "common_cause" if label.startswith("common_cause") else origin
            out[label] = (kind, apply_faults(test_std, spec, seed=derive_seed(seed, "bench", label)))
    if cfg.severity_sweep:
        for family, rows in sweep_specs(test_std).items():
            for value, spec in rows:
                label = f"{family}@{value:g}"
                out[label] = ("sweep", apply_faults(test_std, spec, seed=derive_seed(seed, "bench", label)))
    for i, raw in enumerate(cfg.faults):
        spec = load_spec(raw)
        label = f"custom:{spec.scenario.name or i}"
        out[label] = ("custom", apply_faults(test_std, spec, seed=derive_seed(seed, "bench", label)))
    return out


# ---------------------------------------------------------------------------- one unit
def run_unit(cfg: BenchConfig, name: str, seed: int, splits: Splits, conds: dict[str, tuple[str, MultimodalBatch]],
             st: Standardizer, guard_dir: Path, downstream: dict[str, Any] | None = None,
             streams: dict[str, Stream] | None = None) -> dict[str, Any]:
    """Fit one guard with one seed, save it, and evaluate it on every condition (plain floats)."""
    guard = create_guard(name, guard_config(cfg, name), device=cfg.device, quick=cfg.quick, precision=cfg.precision)
    t0 = time.perf_counter()
    report = guard.fit(splits, seed=seed)
    fit_s = time.perf_counter() - t0
    guard.save(guard_dir)
    clean_test = conds["clean"][1]
    clean_scores = guard.score(st.inverse(clean_test)) if guard.flags else None
    t1 = time.perf_counter()
    results: dict[str, Any] = {}
    for label, (origin, faulty_std) in conds.items():
        res = evaluate_guard(guard, st.inverse(faulty_std), clean_test, st, clean_scores=clean_scores)
        res.pop("scores")
        fixed, pred = res.pop("fixed_std"), res.pop("pred")
        if downstream:
            res["downstream"] = guard_scores(downstream, splits.test, fixed, pred)
        results[label] = {"origin": origin, **res}
    drift = None
    if cfg.drift is not None and streams:
        drift = guard_drift_rows(cfg.drift, guard, downstream, streams, st, splits.test)
    return {
        "drift": drift,
        "guard": name,
        "seed": seed,
        "capabilities": guard.capabilities(),
        "fit_s": fit_s,
        "eval_s": time.perf_counter() - t1,
        "fit": {k: v for k, v in report.items() if k != "calibration"},
        "conditions": results,
    }


def downstream_config(cfg: BenchConfig) -> DownstreamConfig:
    """The downstream model's settings (quick: 8 epochs, no early stopping)."""
    base = {"epochs": 8, "patience": None} if cfg.quick else {}
    try:
        return DownstreamConfig(**{**base, **cfg.downstream_config})
    except ValidationError as exc:
        raise SpecError(f"bad downstream config: {exc.errors()[0]['msg']}") from None


def downstream_modes(cfg: BenchConfig) -> tuple[str, ...]:
    """The downstream models trained per seed (``clean_bn`` only for adaptation that needs it)."""
    return ("clean", "peer") + (("clean_bn",) if cfg.drift is not None and cfg.drift.needs_bn else ())


def downstream_unit(cfg: BenchConfig, ds_cfg: DownstreamConfig, seed: int, splits: Splits, st: Standardizer,
                    conds: dict[str, tuple[str, MultimodalBatch]], store: RunUnits, out: Path, log: Log,
                    streams: dict[str, Stream] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Downstream models of one seed (trained once, saved, reused on resume) and their baseline rows
    (with ``streams``: also the drift rows and the drift detector's delays and false alarms)."""
    key, directory = f"downstream/seed{seed}", out / "downstream" / f"seed{seed}"
    modes = downstream_modes(cfg)
    done = store.load(key)
    if done is not None:
        log(f"seed {seed}: downstream models already done (resumed)")
        return load_models(cfg.downstream, splits.train.specs, ds_cfg, directory, modes), done["base"]
    t0 = time.perf_counter()
    models, report = fit_models(cfg.downstream, ds_cfg, splits, st.transform(splits.train),
                                st.transform(splits.val), seed, modes)
    save_models(models, directory)
    base = baseline_rows(models, conds, splits.test)
    if cfg.drift is not None and streams:
        t1 = time.perf_counter()
        det = DriftDetector.fit(st.transform(splits.train), st.transform(splits.val), cfg.drift.detector_config(),
                                seed=derive_seed(seed, "bench", "drift"))
        base["_drift"] = {"rows": baseline_drift_rows(cfg.drift, models, det, streams, splits.test),
                          "kinds": {n: s.kinds for n, s in streams.items()},
                          "detector": detector_rows(cfg.drift, det, streams, seed)}
        log(f"seed {seed}: drift streams evaluated in {time.perf_counter() - t1:.1f} s")
    store.save(key, {"fit": report, "base": base})
    log(f"seed {seed}: downstream models ({', '.join(cfg.downstream)}; clean and peer) in "
        f"{time.perf_counter() - t0:.1f} s; clean-input score "
        + ", ".join(f"{t} {base['clean'][t]['oracle']['score']:.3f}" for t in cfg.downstream))
    return models, base


def baseline_unit(conds: dict[str, tuple[str, MultimodalBatch]]) -> dict[str, Any]:
    """The "none" row: errors of the faulty input itself (no guard)."""
    clean = conds["clean"][1]
    return {label: {"origin": origin, "errors": input_errors(b, clean)} for label, (origin, b) in conds.items()}


# ---------------------------------------------------------------------------- jobs (engines)
@dataclass
class BenchWork:
    """What every (guard, seed) job of one run shares; an engine sends it to remote workers once."""

    cfg: BenchConfig
    splits: Splits
    ds_cfg: DownstreamConfig
    out: Path | None = None  # in-process jobs save their guard here; remote ones return its files
    token: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass
class SeedInputs:
    """One seed's inputs, the same for every guard: standardiser, faulty batches, streams, models."""

    st: Standardizer
    conds: dict[str, tuple[str, MultimodalBatch]]
    streams: dict[str, Stream] | None
    models: dict[str, dict[str, Downstream]] | None


_SEED_INPUTS: dict[tuple[str, int], SeedInputs] = {}  # this process's last seed (one entry: bounded memory)


def _remember(work: BenchWork, seed: int, inputs: SeedInputs | None) -> None:
    _SEED_INPUTS.clear()
    if inputs is not None:
        _SEED_INPUTS[(work.token, seed)] = inputs


def seed_inputs(work: BenchWork, seed: int, ds_files: dict[str, bytes] | None = None) -> SeedInputs:
    """The inputs of ``seed``: the ones this process made last, else rebuilt from the seed alone
    (``ds_files``: the seed's downstream checkpoints, from :func:`~mmguard.engine.files.read_tree`)."""
    hit = _SEED_INPUTS.get((work.token, seed))
    if hit is not None:
        return hit
    cfg = work.cfg
    st = Standardizer.fit(work.splits.train)
    test_std = st.transform(work.splits.test)
    streams = build_streams(cfg.drift, test_std, seed) if cfg.drift is not None else None
    models = None
    if cfg.downstream:
        if ds_files is None:
            raise SpecError(f"seed {seed}: the downstream models were not handed to the job")
        with tempfile.TemporaryDirectory(prefix="mmguard-downstream-") as tmp:
            write_tree(tmp, ds_files)
            models = load_models(cfg.downstream, work.splits.train.specs, work.ds_cfg, Path(tmp),
                                 downstream_modes(cfg))
    inputs = SeedInputs(st, conditions(cfg, test_std, seed), streams, models)
    _remember(work, seed, inputs)
    return inputs


def bench_job(work: BenchWork, name: str, seed: int, ds_files: dict[str, bytes] | None = None) -> dict[str, Any]:
    """One (guard, seed) job: ``{"unit": metrics}``, plus ``"guard_files"`` (the fitted guard's
    files) when the job runs away from the run directory (``work.out`` is None)."""
    inp = seed_inputs(work, seed, ds_files)

    def fit(guard_dir: Path) -> dict[str, Any]:
        return run_unit(work.cfg, name, seed, work.splits, inp.conds, inp.st, guard_dir, inp.models, inp.streams)

    if work.out is not None:
        return {"unit": fit(work.out / "guards" / name / f"seed{seed}")}
    with tempfile.TemporaryDirectory(prefix="mmguard-guard-") as tmp:
        unit = fit(Path(tmp) / "guard")
        return {"unit": unit, "guard_files": read_tree(Path(tmp) / "guard")}


# ---------------------------------------------------------------------------- the run
def run_bench(cfg: BenchConfig, splits: Splits, out_dir: str | Path, *, log: Log = print,
              engine: Engine | None = None) -> dict[str, Any]:
    """Run (or resume) the benchmark into ``out_dir``; returns the aggregated metrics.

    ``engine`` runs the (guard, seed) jobs (default: in this process, in order); it does not enter
    the run's fingerprint, so a run started with one engine resumes with another.
    """
    from mmguard.experiments.bench_report import render_report, write_plots

    out = Path(out_dir)
    if splits.standardized:
        raise SpecError("run_bench takes raw splits")
    check_guards(cfg, splits)
    check_tasks(cfg.downstream, splits)
    if cfg.drift is not None:
        if not cfg.downstream:
            raise SpecError("--adapt adapts the downstream model: name its task with --downstream")
        cfg.drift.detector_config()
        build_streams(cfg.drift, splits.test, seed=0)  # drift to evaluate, specs that fit: fail before writing
    ds_cfg = downstream_config(cfg)
    st = Standardizer.fit(splits.train)
    for raw in cfg.faults:  # a user spec naming an unknown modality fails before anything is written
        apply_faults(splits.test.select(slice(0, 2)), load_spec(raw), seed=0)
    cfg = cfg.model_copy(update={"data": {**cfg.data, "content": data_fingerprint(splits, st)}})
    store = RunUnits(out, cfg.model_dump(mode="json", exclude=RUN_SCOPE), method="bench",
                     migrate=lambda found: _older_bench_run(out, cfg, found))
    for name in cfg.guards:  # a unit's own settings: the run grows by guards and seeds
        for seed in cfg.seeds:
            store.salt(f"{name}/seed{seed}", {"guard": name, "config": guard_config(cfg, name)})
    store.finish_migration("bench")
    write_json(out / "config.json", {"method": "bench", **cfg.model_dump(mode="json")})
    test_std = st.transform(splits.test)
    log(f"data: {splits.sizes()} samples (train/val/test); modalities "
        + ", ".join(f"{s.name}{tuple(s.shape)}" for s in splits.train.specs))
    t0 = time.perf_counter()
    units: dict[str, dict[int, dict[str, Any]]] = {g: {} for g in cfg.guards}
    inputs: dict[int, dict[str, Any]] = {}
    ds_base: dict[int, Any] = {}
    engine = engine or LocalEngine()
    work = BenchWork(cfg, splits, ds_cfg, out=out if engine.in_process else None)
    shared = engine.share(work)

    def jobs() -> Iterator[Job]:
        """Per seed (lazily, so the local engine keeps one seed in memory): the inputs, the downstream
        models, then a job for every guard not finished yet."""
        for seed in cfg.seeds:
            conds = conditions(cfg, test_std, seed)
            inputs[seed] = baseline_unit(conds)
            models, ds_files = None, None
            streams = build_streams(cfg.drift, test_std, seed) if cfg.drift is not None else None
            if cfg.downstream:
                models, ds_base[seed] = downstream_unit(cfg, ds_cfg, seed, splits, st, conds, store, out, log,
                                                        streams)
            todo = [g for g in cfg.guards if not _resumed(store, units, g, seed, log)]
            if engine.in_process:
                _remember(work, seed, SeedInputs(st, conds, streams, models))
            elif cfg.downstream and todo:
                ds_files = engine.share(read_tree(out / "downstream" / f"seed{seed}"))
            del conds, models, streams
            for name in todo:
                yield Job((name, seed), (shared, name, seed, ds_files))

    try:
        for (name, seed), result in engine.map(bench_job, jobs()):
            if "guard_files" in result:  # a remote job: this process writes its guard, then the unit
                write_tree(out / "guards" / name / f"seed{seed}", result["guard_files"], last="guard.json")
            unit = result["unit"]
            store.save(f"{name}/seed{seed}", unit)
            units[name][seed] = unit
            log(f"seed {seed}: {name} fitted in {unit['fit_s']:.1f} s, evaluated on {len(unit['conditions'])} "
                f"conditions in {unit['eval_s']:.1f} s; " + _headline(unit))
    finally:
        _remember(work, 0, None)
    metrics = aggregate(cfg, units, inputs)
    if cfg.downstream:
        drift_base = {s: ds_base[s].pop("_drift", None) for s in cfg.seeds}
        metrics["downstream"] = summarise(cfg.downstream, cfg.seeds, metrics["condition_origins"], ds_base, units)
        if cfg.drift is not None:
            metrics["drift"] = summarise_drift(cfg.drift, cfg.seeds, drift_base,  # type: ignore[arg-type]
                                               {g: {s: units[g][s]["drift"] for s in cfg.seeds} for g in cfg.guards})
    metrics["data"] = {**cfg.data, "sizes": splits.sizes(),
                       "modalities": [s.to_dict() for s in splits.train.specs]}
    metrics["wall_s"] = time.perf_counter() - t0
    write_json(out / "metrics.json", metrics)
    metrics["plots"] = [str(p.name) for p in write_plots(metrics, out)]
    write_json(out / "metrics.json", metrics)
    from mmguard.io.checkpoint import atomic_write_text

    atomic_write_text(out / "report.md", render_report(metrics))
    return metrics


#: what a bench run's fingerprint leaves out: where it runs, and the guards, their configs, the seeds
#: and the reference guard (each unit's fingerprint has its guard's config; the report is recomputed)
RUN_SCOPE = {"device", "precision", "guards", "guard_configs", "seeds", "reference"}


def _older_bench_run(out: Path, cfg: BenchConfig, found: str) -> Callable[[str], str | None] | None:
    """A run directory written when the fingerprint covered the guards and seeds (before they were
    left out of it): if its config.json is this run's but for ``RUN_SCOPE`` and its fingerprint is
    ``found``, the older fingerprint of each unit whose guard has the same config here (None for a
    guard whose config changed: refitted)."""
    path = out / "config.json"
    if not path.is_file():
        return None
    try:
        prev = BenchConfig.model_validate({k: v for k, v in read_json(path).items() if k != "method"})
    except (ValueError, TypeError, AttributeError, CheckpointError):
        return None
    if prev.model_dump(mode="json", exclude=RUN_SCOPE) != cfg.model_dump(mode="json", exclude=RUN_SCOPE):
        return None
    old = fingerprint({"method": "bench", **prev.model_dump(mode="json", exclude={"device", "precision"})})
    if old != found:
        return None
    same = {g for g in prev.guards if g in cfg.guards and guard_config(prev, g) == guard_config(cfg, g)}
    return lambda key: old if key.startswith("downstream/") or key.split("/")[0] in same else None


def _resumed(store: RunUnits, units: dict[str, dict[int, dict[str, Any]]], name: str, seed: int,
             log: Log) -> bool:
    """True (and the unit kept) when (``name``, ``seed``) was finished by an earlier run."""
    unit = store.load(f"{name}/seed{seed}")
    if unit is None:
        return False
    units[name][seed] = unit
    log(f"seed {seed}: {name} already done (resumed)")
    return True


def _headline(unit: dict[str, Any]) -> str:
    mix = unit["conditions"]["mix"]
    parts = []
    if "errors" in mix and mix["errors"]["faulty"]:
        parts.append(f"faulty combined error {mix['errors']['faulty']['combined']:.4f}")
    if "detection" in mix and mix["detection"]["auroc"] is not None:
        parts.append(f"AUROC {mix['detection']['auroc']:.3f}")
    if "prediction" in mix:
        parts.append(f"F1 {mix['prediction']['f1']:.3f}")
    return ", ".join(parts) or "done"


# ---------------------------------------------------------------------------- aggregation
def _walk(values: list[Any]) -> Any:
    """Aggregate a list of per-seed JSON trees of identical shape: numbers → {mean, std, seeds}."""
    first = values[0]
    if isinstance(first, dict):
        return {k: _walk([v[k] for v in values]) for k in first}
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        if any(v is None for v in values):
            return None
        ms = mean_std(values)
        return {"mean": ms[0], "std": ms[1], "seeds": [float(v) for v in values]}
    if first is None:
        defined = [v for v in values if v is not None]
        return _walk(defined) if defined and len(defined) == len(values) else None
    if isinstance(first, list) and first and isinstance(first[0], (int, float)):
        return [mean_std([v[i] for v in values]) for i in range(len(first))]
    return first


def aggregate(cfg: BenchConfig, units: dict[str, dict[int, dict[str, Any]]],
              inputs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    seeds = cfg.seeds
    guards: dict[str, Any] = {}
    for name in cfg.guards:
        per_seed = [units[name][s] for s in seeds]
        guards[name] = {
            "capabilities": per_seed[0]["capabilities"],
            "fit_s": mean_std([u["fit_s"] for u in per_seed]),
            "eval_s": mean_std([u["eval_s"] for u in per_seed]),
            "conditions": {label: _walk([u["conditions"][label] for u in per_seed])
                           for label in per_seed[0]["conditions"]},
        }
    none = {label: _walk([inputs[s][label] for s in seeds]) for label in inputs[seeds[0]]}
    reference = cfg.reference or next((g for g in cfg.guards if guards[g]["capabilities"]["correct"]), None)
    ratios: dict[str, Any] = {}
    correcting = [g for g in cfg.guards if guards[g]["capabilities"]["correct"]]
    for name in correcting:
        ratios[name] = {}
        for label in guards[name]["conditions"]:
            subset = "clean" if label == "clean" else "faulty"
            row: dict[str, Any] = {}
            mine = [_combined(units[name][s], label, subset) for s in seeds]
            if reference is not None and reference != name:
                ref = [_combined(units[reference][s], label, subset) for s in seeds]
                row[f"vs_{reference}"] = _ratio(mine, ref)
            if subset == "faulty":
                row["vs_none"] = _ratio(mine, [_input_combined(inputs[s], label) for s in seeds])
            ratios[name][label] = row
    return {
        "seeds": seeds,
        "guards": guards,
        "none": none,
        "reference": reference,
        "paired_ratios": ratios,
        "attention": {name: _attention_drop(units[name], seeds) for name in cfg.guards
                      if "attention" in units[name][seeds[0]]["conditions"]["clean"]},
        "condition_origins": {label: c["origin"] for label, c in inputs[seeds[0]].items()},
    }


#: a modality whose mean attention weight on clean input is below this has been switched off by the guard
#: on that seed; its ratio under a fault would be a quotient of near-zero weights and is left out
ATTENDED = 0.01


def _attention_drop(per_seed: dict[int, dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    """For each condition that fails exactly one modality in every sample (a single-modality family):
    the attention weight on that modality under the fault, on clean input, and their paired ratio
    (per seed: failed / clean; below 0.5 = the weight fell by at least half), over the seeds where the
    modality is attended on clean input (weight ≥ :data:`ATTENDED`; their number is ``attended_seeds``)."""
    out: dict[str, Any] = {}
    for label, first in per_seed[seeds[0]]["conditions"].items():
        failed = [m for m, a in first.get("attention", {}).items() if a["failed"] is not None and a["healthy"] is None]
        if len(failed) != 1 or label in ("clean", "mix"):
            continue
        mod = failed[0]
        under = [per_seed[s]["conditions"][label]["attention"][mod]["failed"] for s in seeds]
        clean = [per_seed[s]["conditions"]["clean"]["attention"][mod]["all"] for s in seeds]
        det = [((per_seed[s]["conditions"][label].get("detection") or {}).get("detection_rate")) for s in seeds]
        attended = [i for i, c in enumerate(clean) if c is not None and c >= ATTENDED]
        out[label] = {"modality": mod, "origin": first["origin"], "failed": mean_std(under),
                      "clean": mean_std(clean),
                      "ratio": _ratio([under[i] for i in attended], [clean[i] for i in attended]) if attended else None,
                      "attended_seeds": len(attended),
                      "detection_rate": None if any(d is None for d in det) else mean_std(det)}
    return out


def _combined(unit: dict[str, Any], label: str, subset: str) -> float | None:
    errs = unit["conditions"][label].get("errors", {})
    part = errs.get(subset) or errs.get("all")
    return None if part is None else part["combined"]


def _input_combined(inp: dict[str, Any], label: str) -> float | None:
    part = inp[label]["errors"].get("faulty")
    return None if part is None else part["combined"]


def _ratio(a: list[float | None], b: list[float | None]) -> list[float] | None:
    if any(x is None for x in a) or any(y is None or y == 0 for y in b):
        return None
    return paired_ratio(a, b)  # type: ignore[arg-type]
