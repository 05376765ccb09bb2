"""``mmguard mmssl run``: the whole MMSSL protocol into a run directory.

DIR/config.json              the validated :class:`MmsslRunConfig` plus ``method`` and versions
DIR/metrics.json             every number (schema in docs/mmssl.md), written last
DIR/report.md                tables (paper table 1 layout), targets, families, sweeps, analysis
DIR/*.png                    errors, families, severity sweeps, latent t-SNE
DIR/models/seed<s>/          mmae/, dae/, compute/ (weights.safetensors + config.json each)
DIR/preprocessing/           the standardiser fitted on train (safetensors + JSON)
DIR/faults/                  the training mix and the family specs, as YAML

The seeds run through an engine (``engine``: in this process by default, or Ray tasks;
docs/distributed.md). The engine is not part of the run's fingerprint, like the thread count and the
device: a run started with one engine resumes with another.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

import torch

from mmguard import __version__
from mmguard.engine import Engine
from mmguard.experiments.mmssl.config import MmsslRunConfig
from mmguard.experiments.mmssl.experiment import MmsslExperiment, load_splits, training_spec_of
from mmguard.experiments.mmssl.plots import plot_errors, plot_families, plot_severity
from mmguard.experiments.mmssl.report import render_report
from mmguard.experiments.units import RunUnits, data_fingerprint
from mmguard.faults import scenarios
from mmguard.io.checkpoint import atomic_write_text, save_checkpoint, write_json


def run_mmssl(cfg: MmsslRunConfig, out_dir: str | Path, *, log=print, engine: Engine | None = None) -> dict[str, Any]:
    """Run the protocol and write the run directory; returns the metrics dict.

    ``engine`` runs the seeds (default: in this process, in order; see the module docstring).
    """
    out = Path(out_dir)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    splits = load_splits(cfg)
    # like thread counts, the device and the precision are not part of a run's identity (docs/devices.md)
    identity = {**cfg.model_dump(mode="json", exclude={"threads", "device", "precision"}),
                "content": data_fingerprint(splits)}
    units = RunUnits(out, identity, method="mmssl")
    exp = MmsslExperiment(cfg, splits=splits, log=log, out=out, units=units, engine=engine)
    metrics = exp.run()
    out.mkdir(parents=True, exist_ok=True)
    first = cfg.seeds[0]
    spec = training_spec_of(cfg, splits.train)
    if cfg.analysis:
        from mmguard.experiments.mmssl.diagnostics import run_diagnostics

        metrics["analysis"] = run_diagnostics(cfg, splits, exp.models[first], spec, first, out, log=log)
    write_json(
        out / "config.json",
        {
            "method": "mmssl",
            "mmguard_version": __version__,
            "torch_version": torch.__version__,
            "python": platform.python_version(),
            **cfg.model_dump(mode="json"),
        },
    )
    save_checkpoint(
        out / "preprocessing",
        splits.standardizer.state_tensors(),
        {
            "modalities": [s.to_dict() for s in splits.train.specs],
            "dataset": cfg.data,
            "split_seed": cfg.split_seed,
            "sizes": splits.sizes(),
        },
    )
    fdir = out / "faults"
    fdir.mkdir(exist_ok=True)
    spec.save(fdir / "training_mix.yaml")
    for label, (_origin, fspec) in scenarios.family_specs(splits.test).items():
        fspec.save(fdir / f"family_{label.replace(':', '_')}.yaml")
    plots = [plot_errors(metrics, out).name, plot_families(metrics, out).name]
    sev = plot_severity(metrics, out)
    if sev is not None:
        plots.append(sev.name)
    if "analysis" in metrics and "plot" in metrics["analysis"]["latent_overlap"]:
        plots.append(metrics["analysis"]["latent_overlap"]["plot"])
    metrics["plots"] = plots
    metrics["timing"]["wall_s"] = time.perf_counter() - t0
    atomic_write_text(out / "report.md", render_report(metrics, cfg))
    write_json(out / "metrics.json", metrics)
    return metrics
