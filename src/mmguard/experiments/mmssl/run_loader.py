"""Load an MMSSL run directory for ``mmguard eval`` (registers method "mmssl" in :mod:`mmguard.experiments.runs`).

``mmguard eval --run DIR --faults SPEC`` then reports, per condition (``clean``, each fault
pattern, ``all``) and per model, camera / sensor / combined errors against the clean test
input, and for the detector the detection rate at the saved gate and the AUROC of the
condition's samples against the clean test split — mean ± std over the run's seeds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmguard.data.model import MultimodalBatch
from mmguard.errors import CheckpointError
from mmguard.eval.evaluate import LoadedRun, check_preprocessing, run_config
from mmguard.eval.metrics import binary_auroc
from mmguard.eval.reconstruction import group_errors, modality_groups, per_sample_errors
from mmguard.eval.stats import mean_std
from mmguard.experiments.mmssl.config import MmsslRunConfig
from mmguard.experiments.mmssl.experiment import load_splits
from mmguard.experiments.runs import register_run_loader
from mmguard.mmssl.pipeline import MmsslModels


def make_evaluator(seeds: dict[int, MmsslModels]):
    def evaluate(faulty: MultimodalBatch, clean: MultimodalBatch, labels: list[str]) -> dict[str, Any]:
        lab = np.asarray(labels)
        conds = ["all"] + sorted(set(labels), key=lambda s: (s != "clean", s))
        groups = modality_groups(clean.specs)
        errors: dict[str, dict[str, dict[str, list[float]]]] = {}
        det: dict[str, dict[str, list[float]]] = {"detection_rate": {}, "auroc": {}}
        per_seed_err: dict[str, dict[str, dict[str, list[float]]]] = {}
        per_seed_det: dict[str, dict[str, list[float]]] = {"detection_rate": {}, "auroc": {}}
        for models in seeds.values():
            outs, d = models.outputs(faulty.modalities, oracle=faulty.mask_or_clean().any(1))
            _, clean_scores, _ = models.detect(clean.modalities)
            ref = clean_scores[models.full].amax(-1)
            thr = models.thresholds[models.full]
            for name, recon in outs.items():
                err = group_errors(per_sample_errors(recon, clean.modalities, clean.names), groups)
                for c in conds:
                    keep = (
                        torch.ones(len(lab), dtype=torch.bool) if c == "all" else torch.from_numpy(lab == c)
                    )
                    row = per_seed_err.setdefault(name, {}).setdefault(c, {})
                    for k, v in err.items():
                        row.setdefault(k, []).append(float(v[keep].mean()))
            for c in conds:
                keep = torch.ones(len(lab), dtype=torch.bool) if c == "all" else torch.from_numpy(lab == c)
                s = d["sample_score"][keep]
                per_seed_det["detection_rate"].setdefault(c, []).append(float((s > thr).float().mean()))
                if c not in ("clean", "all"):
                    y = torch.cat(
                        [torch.zeros(len(ref), dtype=torch.bool), torch.ones(len(s), dtype=torch.bool)]
                    )
                    per_seed_det["auroc"].setdefault(c, []).append(
                        float(binary_auroc(torch.cat([ref, s]), y)[0])
                    )
        for name, rows in per_seed_err.items():
            errors[name] = {c: {k: mean_std(v) for k, v in r.items()} for c, r in rows.items()}
        for key, rows in per_seed_det.items():
            det[key] = {c: mean_std(v) for c, v in rows.items()}
        return {"errors": errors, "detection": det}

    return evaluate


@register_run_loader("mmssl")
def load_mmssl_run(run_dir: Path, config: dict[str, Any], data_dir: str | None,
                   device: torch.device = torch.device("cpu")) -> LoadedRun:
    overrides = None
    if data_dir is not None and "data" in config:
        overrides = {"data": str(Path(data_dir) / Path(str(config["data"]).removeprefix("twin:")).name)}
    cfg = run_config(run_dir, config, MmsslRunConfig, overrides)
    splits = load_splits(cfg)
    check_preprocessing(run_dir, splits, cfg.data)
    seeds = {}
    for seed in cfg.seeds:
        d = run_dir / "models" / f"seed{seed}"
        if not d.is_dir():
            raise CheckpointError(f"{str(run_dir)!r} lacks the models of seed {seed} ({str(d)!r})")
        seeds[seed] = MmsslModels.load(d).to(device)  # inputs follow the models; outputs come back on CPU
    return LoadedRun(
        method="mmssl",
        config=config,
        test=splits.test,
        models={},
        thresholds={},
        num_classes=0,
        evaluator=make_evaluator(seeds),
    )
