"""Load an EMMA run directory for ``mmguard eval`` (registers method "emma" in :mod:`mmguard.experiments.runs`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mmguard.data.model import MultimodalBatch
from mmguard.emma.data import num_classes_of
from mmguard.emma.persist import load_model
from mmguard.errors import CheckpointError
from mmguard.eval.evaluate import LoadedRun, check_preprocessing, run_config
from mmguard.experiments.emma.config import EmmaRunConfig
from mmguard.experiments.emma.experiment import load_splits
from mmguard.experiments.runs import register_run_loader


def _predictor(model: torch.nn.Module, names: tuple[str, ...], device: torch.device):
    """Logits (S, N, K) on the CPU of a standardised batch, computed on ``device`` (EMMA stays fp32)."""
    model = model.to(device)

    @torch.no_grad()
    def predict(batch: MultimodalBatch) -> torch.Tensor:
        members = next(p for p in model.parameters()).shape[0]
        xs = [batch.modalities[n].to(device).unsqueeze(0).expand(members, *batch.modalities[n].shape)
              for n in names]
        res = model(xs)
        return (res[0] if isinstance(res, tuple) else res).cpu()

    return predict


@register_run_loader("emma")
def load_emma_run(run_dir: Path, config: dict[str, Any], data_dir: str | None,
                  device: torch.device = torch.device("cpu")) -> LoadedRun:
    cfg = run_config(run_dir, config, EmmaRunConfig, {"data_dir": data_dir} if data_dir is not None else None)
    splits = load_splits(cfg)
    check_preprocessing(run_dir, splits, cfg.dataset)
    names = splits.train.names
    models, thresholds = {}, {}
    rule = cfg.selection_rule
    for role in ("base", "without", "with", "with_annealed"):
        d = run_dir / "models" / role
        if not d.is_dir():
            continue
        model, mcfg, _ = load_model(d)
        models[role] = _predictor(model, names, device)
        thr = mcfg.get("thresholds", {}).get(rule)
        thresholds[role] = torch.tensor(thr) if thr is not None else None
    if not models:
        raise CheckpointError(f"{str(run_dir)!r} holds no models")
    k = num_classes_of(splits.train)
    if k == 2 and any(t is None for t in thresholds.values()):
        thresholds = {r: t for r, t in thresholds.items() if t is not None}
        models = {r: m for r, m in models.items() if r in thresholds}
    return LoadedRun(
        method="emma", config=config, test=splits.test, models=models, thresholds=thresholds, num_classes=k
    )
