"""The MMSSL protocol (issue #5) over seeds: data, both stages, baselines, evaluation.

Per seed s (the split is fixed by ``split_seed``; seeds vary initialization, minibatch
order and every corruption draw):

1. stage 1: the MMAE on the clean training split (early stopping on clean validation);
2. the DAE baseline: the same architecture on the corrupted training mix (fresh draw per
   epoch), early stopping on a corrupted validation draw;
3. stage 2: the compute block — the full model and the ablations as ensemble members —
   on latents of the frozen MMAE; gates calibrated on clean validation;
4. test (touched once per seed, for the report): clean test; the training mix on test
   (headline "faulty" numbers, detection AUROC/F1); every fault family at rate 1 (trained
   and unseen, single modality and common cause); severity sweeps.

Errors are MSE per sample on standardized data against the *clean* input (paper table 1):
camera = image modalities, sensor = vector modalities, combined = their sum. The "faulty"
error averages over the corrupted samples of the test mix; "clean" over the clean test.

Device and precision (``cfg.device``, ``cfg.precision``; docs/devices.md): every seed trains on the
device (the training and validation splits are moved there once per seed); ``bf16`` autocasts the
forward passes of training only. Evaluation batches are built on the CPU, run through the models
on the device in float32 and the metrics are computed on the CPU.

Engines (docs/distributed.md, "Protocols"): each pending seed is one job (:func:`seed_job`): stage 1,
the DAE, stage 2 and the evaluation of that seed, a pure function of the configuration, the splits
and the seed. The default in-process engine runs the jobs here, in seed order, exactly as the plain
loop did; the ``ray`` engine runs them as Ray tasks, which return the fitted models as files
(safetensors + JSON) that this process writes to ``models/seed<s>/`` before the seed's unit.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mmguard.baselines.dae import DaeConfig, DaeGuard
from mmguard.data.model import MultimodalBatch
from mmguard.data.splits import Splits, split_by_group
from mmguard.devices import resolve_device, use_precision
from mmguard.engine import Engine, Job
from mmguard.engine.files import read_tree, write_tree
from mmguard.engine.local import LocalEngine
from mmguard.errors import DataError
from mmguard.eval.metrics import binary_auroc
from mmguard.eval.reconstruction import group_errors, modality_groups, per_sample_errors
from mmguard.eval.stats import mean_std, paired_ratio
from mmguard.experiments.mmssl.config import MmsslRunConfig
from mmguard.experiments.units import RunUnits
from mmguard.faults import FaultSpec, apply_faults, load_spec, scenarios
from mmguard.mmssl.pipeline import MmsslModels
from mmguard.mmssl.stages import summary, train_autoencoder, train_compute_block
from mmguard.seeding import derive_seed

Log = Callable[[str], None]
PAPER_TABLE1 = {  # MuJoCo, combined testing performance (paper summary, table 1)
    "MMAE": {"camera": 0.145, "sensor": 1.453, "combined": 1.599},
    "MMFR": {"camera": 0.142, "sensor": 1.318, "combined": 1.461},
    "MMCF": {"camera": 0.154, "sensor": 0.894, "combined": 1.048},
    "MMGAN": {"camera": 0.134, "sensor": 0.894, "combined": 0.950},
    "MMUGAN": {"camera": 0.125, "sensor": 0.779, "combined": 0.835},
    "MMSSL": {"camera": 0.118, "sensor": 0.405, "combined": 0.523},
}


def load_splits(cfg: MmsslRunConfig) -> Splits:
    """Twin file → episode-wise 70/15/15 split (no episode leaks) → standardized (train statistics)."""
    from mmguard.twin.dataset import is_twin_file, load_twin, open_twin

    path = cfg.data[len("twin:") :] if cfg.data.startswith("twin:") else cfg.data
    if not is_twin_file(path):
        open_twin(path).close()  # raises the precise one-line DataError
    episodes = None
    if cfg.max_episodes is not None:
        with open_twin(path) as f:
            episodes = range(min(cfg.max_episodes, int(f.attrs["episodes"])))
    batch = load_twin(path, target=None, modalities=cfg.modalities, episodes=episodes)
    batch.check_finite(path)
    splits = split_by_group(batch, "episode", seed=cfg.split_seed)
    for part, b in (("train", splits.train), ("validation", splits.val), ("test", splits.test)):
        if len(b) < 8:
            raise DataError(f"{path!r}: the {part} split has only {len(b)} samples; generate more episodes")
    return splits.standardize()


def _f1(pred: torch.Tensor, y: torch.Tensor) -> float:
    tp = float((pred & y).sum())
    fp = float((pred & ~y).sum())
    fn = float((~pred & y).sum())
    return 2 * tp / max(2 * tp + fp + fn, 1.0)


def error_table(
    models: MmsslModels, batch: MultimodalBatch, clean: MultimodalBatch, subset: torch.Tensor | None = None
) -> tuple[dict[str, dict[str, float]], dict[str, torch.Tensor]]:
    """Mean camera/sensor/combined error per model over ``subset`` (all samples by default)."""
    oracle = batch.mask_or_clean().any(1)
    outs, det = models.outputs(batch.modalities, oracle=oracle)
    groups = modality_groups(batch.specs)
    keep = torch.ones(len(batch), dtype=torch.bool) if subset is None else subset
    table = {}
    for name, recon in outs.items():
        err = group_errors(per_sample_errors(recon, clean.modalities, batch.names), groups)
        table[name] = {k: float(v[keep].mean()) for k, v in err.items()}
    return table, det


def evaluate_seed(models: MmsslModels, splits: Splits, cfg: MmsslRunConfig, seed: int) -> dict[str, Any]:
    """Every test number of one seed (plain floats)."""
    test = splits.test
    train_spec = training_spec_of(cfg, test)
    res: dict[str, Any] = {}
    clean_tab, clean_det = error_table(models, test, test)
    mix = apply_faults(test, train_spec, seed=derive_seed(seed, "test-mix"))
    faulty = mix.mask_or_clean().any(1)
    faulty_tab, mix_det = error_table(models, mix, test, faulty)
    res["errors"] = {m: {"clean": clean_tab[m], "faulty": faulty_tab[m]} for m in clean_tab}
    s = mix_det["sample_score"]
    flagged = mix_det["flagged"][models.full]
    res["detection"] = {
        "auroc": float(binary_auroc(s, faulty)[0]),
        "f1": _f1(flagged, faulty),
        "false_alarm_rate": float(clean_det["flagged"][models.full].float().mean()),
        "detection_rate": float(flagged[faulty].float().mean()),
        "per_modality_auroc": {
            n: float(binary_auroc(mix_det["scores"][:, j], mix.mask_or_clean()[:, j])[0])
            for j, n in enumerate(test.names)
            if 0 < int(mix.mask_or_clean()[:, j].sum()) < len(test)
        },
        "false_alarm_rate_by_model": {
            v: float(clean_det["flagged"][g].float().mean()) for g, v in enumerate(models.variants)
        },
    }
    clean_scores = clean_det["sample_score"]
    thr = models.thresholds[models.full]
    fam = {}
    for label, (origin, spec) in scenarios.family_specs(test).items():
        fb = apply_faults(test, spec, seed=derive_seed(seed, "family", label))
        tab, det = error_table(models, fb, test)
        both = torch.cat([clean_scores, det["sample_score"]])
        y = torch.cat([torch.zeros(len(test), dtype=torch.bool), torch.ones(len(test), dtype=torch.bool)])
        fam[label] = {
            "origin": origin,
            "errors": tab,
            "auroc": float(binary_auroc(both, y)[0]),
            "detection_rate": float((det["sample_score"] > thr).float().mean()),
        }
    res["families"] = fam
    if cfg.severity_sweep:
        sweeps = {}
        for label, rows in scenarios.sweep_specs(test).items():
            entry: dict[str, Any] = {
                "origin": scenarios.sweep_origin(label),
                "values": [],
                "errors": {},
                "detection_rate": [],
                "auroc": [],
            }
            for value, spec in rows:
                fb = apply_faults(test, spec, seed=derive_seed(seed, "sweep", label, value))
                tab, det = error_table(models, fb, test)
                entry["values"].append(value)
                for m, t in tab.items():
                    entry["errors"].setdefault(m, []).append(t["combined"])
                both = torch.cat([clean_scores, det["sample_score"]])
                y = torch.cat(
                    [torch.zeros(len(test), dtype=torch.bool), torch.ones(len(test), dtype=torch.bool)]
                )
                entry["auroc"].append(float(binary_auroc(both, y)[0]))
                entry["detection_rate"].append(float((det["sample_score"] > thr).float().mean()))
            sweeps[label] = entry
        res["severity"] = sweeps
    res["contraction"] = contraction_check(models, test, seed)
    return res


@torch.no_grad()
def contraction_check(
    models: MmsslModels, test: MultimodalBatch, seed: int, pairs: int = 4096
) -> dict[str, Any]:
    """Empirical Lipschitz ratio max ||C(a) − C(b)|| / ||a − b|| of each corrector member.

    Pairs: random Gaussian latents at 3x the latent spread, and pairs of (clean, corrupted)
    test latents; compared with the exact spectral-norm product bound.
    """
    from mmguard.mmssl.pipeline import describe_settings, model_name
    from mmguard.mmssl.stages import encode

    gen = torch.Generator().manual_seed(derive_seed(seed, "contraction"))
    d = models.mmae.latent_dim
    dev = models.device
    a = torch.randn(pairs, d, generator=gen) * 3.0
    b = a + torch.randn(pairs, d, generator=gen) * torch.rand(pairs, 1, generator=gen) * 3.0
    z = models.scale.to_unit(encode(models.mmae, {k: v.to(dev) for k, v in test.modalities.items()}))
    n = z.shape[0]
    idx = torch.randint(0, n, (2, min(pairs, n * 4)), generator=gen).to(dev)
    a = torch.cat([a.to(dev), z[idx[0]]])
    b = torch.cat([b.to(dev), z[idx[1]]])
    g = len(models.variants)
    corr = models.block.corrector
    ca = corr(a.unsqueeze(0).expand(g, -1, -1))
    cb = corr(b.unsqueeze(0).expand(g, -1, -1))
    ratio = ((ca - cb).norm(dim=-1) / (a - b).norm(dim=-1).clamp_min(1e-12)).cpu()
    bounds = describe_settings(models)
    return {
        model_name(v): {"empirical_max": float(ratio[i].max()), "upper_bound": bounds[model_name(v)]}
        for i, v in enumerate(models.variants)
    }


def training_spec_of(cfg: MmsslRunConfig, batch: MultimodalBatch) -> FaultSpec:
    return load_spec(cfg.train_faults) if cfg.train_faults is not None else scenarios.training_spec(batch)


def fit_seed(cfg: MmsslRunConfig, splits: Splits, seed: int, log: Log) -> tuple[MmsslModels, dict[str, Any]]:
    """Stage 1, DAE baseline and stage 2 for one seed, on ``cfg.device`` in ``cfg.precision``."""
    spec = training_spec_of(cfg, splits.train)
    times: dict[str, float] = {}
    device = resolve_device(cfg.device)
    train, val = splits.train.to(device), splits.val.to(device)  # moved once, shared by both stages
    t0 = time.perf_counter()
    with use_precision(cfg.precision):
        mmae, r1 = train_autoencoder(train, val, cfg.autoencoder, seed=seed)
    times["mmae_s"] = time.perf_counter() - t0
    log(
        f"seed {seed}: MMAE best epoch {int(r1.best_epoch[0])}, val {float(r1.best_val[0]):.4f} "
        f"({times['mmae_s']:.0f} s)"
    )
    t0 = time.perf_counter()
    # the DAE baseline is fitted through the guard contract (raw splits in, its own standardiser:
    # the same statistics of the same training split, so the numbers are those of the protocol)
    dae_guard = DaeGuard(DaeConfig(autoencoder=cfg.autoencoder, train_faults=cfg.train_faults),
                         device=str(device)).set_precision(cfg.precision)
    dae_report = dae_guard.fit(splits.raw if splits.raw is not None else splits, seed=seed)
    dae = dae_guard.autoencoder
    r2 = dae_report["autoencoder"]
    times["dae_s"] = time.perf_counter() - t0
    log(
        f"seed {seed}: DAE best epoch {r2['best_epoch'][0]}, val {r2['best_val'][0]:.4f} "
        f"({times['dae_s']:.0f} s)"
    )
    t0 = time.perf_counter()
    variants = ("full", *cfg.ablations)
    with use_precision(cfg.precision):
        comp = train_compute_block(mmae, train, val, spec, cfg.compute, seed=seed, variants=variants)
    times["compute_s"] = time.perf_counter() - t0
    log(
        f"seed {seed}: compute block ({len(variants)} members) best epochs {comp.train.best_epoch.tolist()} "
        f"({times['compute_s']:.0f} s)"
    )
    models = MmsslModels.from_stages(mmae, dae, comp, cfg.compute)
    fit = {
        "mmae": summary(r1),
        "dae": r2,
        "compute": summary(comp.train),
        "timing": times,
        "gate_thresholds": comp.thresholds.tolist(),
    }
    return models, fit


def _collect(per_seed: list[dict[str, Any]]) -> Any:
    """Mean ± std over seeds of identically structured results (floats → [mean, std])."""
    first = per_seed[0]
    if isinstance(first, dict):
        return {k: _collect([p[k] for p in per_seed]) for k in first}
    if isinstance(first, list) and first and isinstance(first[0], (int, float)):
        return [mean_std([p[i] for p in per_seed]) for i in range(len(first))]
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        return mean_std(per_seed)
    return first


def paired_ratios(per_seed: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Per-seed ratios of combined errors (MMSSL / baseline), then mean ± std."""

    def r(split: str, model: str, base: str) -> list[float]:
        return paired_ratio(
            [p["errors"][model][split]["combined"] for p in per_seed],
            [p["errors"][base][split]["combined"] for p in per_seed],
        )

    return {
        "faulty_mmssl_over_mmae": r("faulty", "mmssl", "mmae"),
        "faulty_mmssl_over_dae": r("faulty", "mmssl", "dae"),
        "clean_mmssl_over_mmae": r("clean", "mmssl", "mmae"),
    }


def targets(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The issue's targets on the ``arm`` twin, checked against the measured means."""
    ratios, det = metrics["ratios"], metrics["detection"]
    trained = [v["auroc"][0] for v in metrics["families"].values() if v["origin"] == "trained"]
    return {
        "faulty_vs_mmae": {
            "value": 1 - ratios["faulty_mmssl_over_mmae"][0],
            "target": ">= 0.30 reduction",
            "met": 1 - ratios["faulty_mmssl_over_mmae"][0] >= 0.30,
        },
        "faulty_vs_dae": {
            "value": 1 - ratios["faulty_mmssl_over_dae"][0],
            "target": "> 0 reduction",
            "met": ratios["faulty_mmssl_over_dae"][0] < 1.0,
        },
        "clean_vs_mmae": {
            "value": ratios["clean_mmssl_over_mmae"][0] - 1,
            "target": "<= 0.05 increase",
            "met": ratios["clean_mmssl_over_mmae"][0] <= 1.05,
        },
        "auroc_trained_mix": {"value": det["auroc"][0], "target": ">= 0.95", "met": det["auroc"][0] >= 0.95},
        "auroc_trained_families_min": {
            "value": min(trained) if trained else None,
            "target": ">= 0.95",
            "met": bool(trained) and min(trained) >= 0.95,
        },
    }


@dataclass
class SeedWork:
    """What every seed job of one run shares (an engine sends it to remote workers once).

    ``in_process``: the job runs in the driver, so it hands back its models as objects and logs
    directly; a remote job returns the models' files and its log lines instead.
    """

    cfg: MmsslRunConfig
    splits: Splits
    in_process: bool = True


def seed_job(work: SeedWork, seed: int, log: Log | None = None) -> dict[str, Any]:
    """One seed: :func:`fit_seed` and :func:`evaluate_seed` → ``{"fit", "result"}`` plus the models.

    In process: ``"models"`` (the :class:`MmsslModels`), and ``log`` receives the progress lines as
    they come. Remote: ``"model_files"`` — the models saved to a temporary directory, as
    :func:`~mmguard.engine.files.read_tree` bytes (no torch object is pickled) — and ``"log"``, the
    lines to show when the result arrives. Everything depends on (config, splits, seed) only.
    """
    lines: list[str] = []
    models, fit = fit_seed(work.cfg, work.splits, seed, log if log is not None else lines.append)
    t0 = time.perf_counter()
    res = evaluate_seed(models, work.splits, work.cfg, seed)
    fit["timing"]["evaluate_s"] = time.perf_counter() - t0
    if work.in_process:
        return {"fit": fit, "result": res, "models": models}
    with tempfile.TemporaryDirectory(prefix="mmguard-mmssl-") as tmp:
        models.save(tmp, work.splits.train.specs)
        return {"fit": fit, "result": res, "model_files": read_tree(tmp), "log": lines}


class MmsslExperiment:
    """Runs :func:`fit_seed` + :func:`evaluate_seed` over ``cfg.seeds`` (one :func:`seed_job` per
    seed, through ``engine``) and aggregates."""

    def __init__(self, cfg: MmsslRunConfig, splits: Splits | None = None, log: Log = print,
                 out: Path | None = None, units: RunUnits | None = None, engine: Engine | None = None) -> None:
        """``out`` + ``units``: save each finished seed (models and results) and resume from them.

        ``engine``: runs the seed jobs (default: in this process, in seed order). With a remote engine
        :attr:`models` holds only the first seed's models (loaded back from their files: what the
        diagnostics need), not every seed's.
        """
        self.cfg = cfg
        self.splits = splits if splits is not None else load_splits(cfg)
        self.log = log
        self.out = out
        self.units = units
        self.engine = engine
        self.models: dict[int, MmsslModels] = {}
        self.fits: dict[int, dict[str, Any]] = {}
        self.per_seed: list[dict[str, Any]] = []
        self._results: dict[int, dict[str, Any]] = {}  # by seed, in the order they finish

    def _run_dir(self) -> Path | None:
        """Where finished seeds are saved (None: nothing is saved or resumed)."""
        return self.out if self.units is not None and self.out is not None else None

    def _finish(self, seed: int, fit: dict[str, Any], res: dict[str, Any]) -> None:
        """Keep a finished seed's fit report and results, and log its headline."""
        self.fits[seed], self._results[seed] = fit, res
        e = res["errors"]
        self.log(
            f"seed {seed}: faulty combined mmssl {e['mmssl']['faulty']['combined']:.4f} "
            f"mmae {e['mmae']['faulty']['combined']:.4f} dae {e['dae']['faulty']['combined']:.4f}; "
            f"AUROC {res['detection']['auroc']:.4f}"
        )

    def _keep_files(self, seed: int, files: dict[str, bytes]) -> None:
        """A remote seed's model files: written to ``models/seed<s>/`` (configs last; the unit, written
        after, marks the seed finished), and the first seed's loaded back for the diagnostics."""
        run_dir, first = self._run_dir(), seed == self.cfg.seeds[0]
        if run_dir is not None:
            write_tree(run_dir / "models" / f"seed{seed}", files, last="config.json")
            if first:
                self.models[seed] = MmsslModels.load(run_dir / "models" / f"seed{seed}")
        elif first:
            with tempfile.TemporaryDirectory(prefix="mmguard-mmssl-") as tmp:
                write_tree(tmp, files, last="config.json")
                self.models[seed] = MmsslModels.load(tmp)
        if first:
            self.models[seed] = self.models[seed].to(resolve_device(self.cfg.device))

    def run(self) -> dict[str, Any]:
        """Every seed (reused from disk when finished, else a job), then the aggregate over seeds."""
        t_start = time.perf_counter()
        sp = self.splits
        self.log(
            f"data: {sp.sizes()} samples (train/val/test), modalities "
            + ", ".join(f"{s.name}{tuple(s.shape)}" for s in sp.train.specs)
        )
        engine = self.engine or LocalEngine()
        shared = engine.share(SeedWork(self.cfg, sp, in_process=engine.in_process))
        run_dir = self._run_dir()

        def jobs() -> Iterator[Job]:
            """Seed by seed (lazily: in process, a seed is reported before the next one starts): a
            finished seed is reused from disk, any other becomes a job."""
            for seed in self.cfg.seeds:
                done = self.units.load(f"seed{seed}") if self.units is not None else None
                if done is not None and self.out is not None:
                    if engine.in_process or seed == self.cfg.seeds[0]:
                        path = self.out / "models" / f"seed{seed}"
                        self.models[seed] = MmsslModels.load(path).to(resolve_device(self.cfg.device))
                    self.log(f"seed {seed}: already done (resumed from {self.out / 'units'})")
                    self._finish(seed, done["fit"], done["result"])
                else:
                    yield Job(seed, (shared, seed, self.log if engine.in_process else None))

        for seed, got in engine.map(seed_job, jobs()):
            fit, res = got["fit"], got["result"]
            for line in got.get("log", ()):
                self.log(line)
            if "models" in got:
                self.models[seed] = got["models"]
                if run_dir is not None:
                    got["models"].save(run_dir / "models" / f"seed{seed}", sp.train.specs)
            else:
                self._keep_files(seed, got["model_files"])
            if self.units is not None and run_dir is not None:
                self.units.save(f"seed{seed}", {"fit": fit, "result": res})
            self._finish(seed, fit, res)
        # results arrive in completion order with a remote engine: aggregate in seed order, as before
        self.per_seed = [self._results[s] for s in self.cfg.seeds]
        self.fits = {s: self.fits[s] for s in self.cfg.seeds}
        self.models = {s: self.models[s] for s in self.cfg.seeds if s in self.models}
        metrics: dict[str, Any] = _collect(self.per_seed)
        metrics["ratios"] = paired_ratios(self.per_seed)
        metrics["targets"] = targets(metrics)
        metrics["seeds"] = list(self.cfg.seeds)
        metrics["sizes"] = sp.sizes()
        metrics["modalities"] = [s.to_dict() for s in sp.train.specs]
        metrics["paper_table1"] = PAPER_TABLE1
        metrics["fit"] = {str(s): f for s, f in self.fits.items()}
        metrics["per_seed"] = self.per_seed
        metrics["timing"] = {"wall_s": time.perf_counter() - t_start}
        return metrics
