"""Per-seed result files of the multi-seed benchmarks (``mmssl_modulation.py``, ``mmssl_lemmas.py``).

:func:`run_seeds` computes ``fn(seed)`` for seeds 0..S-1, writes each result as
``OUT/<scene>_seed<k>.json`` (atomically: a temporary file renamed) as soon as it is done, and reuses
a file already there, so a killed benchmark resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def run_seeds(out: Path, scene: str, seeds: int, fn: Callable[[int], dict[str, Any]],
              done: Callable[[int, dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Every seed's result, in seed order; ``done(seed, result)`` is called for each new one."""
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for seed in range(seeds):
        path = out / f"{scene}_seed{seed}.json"
        if not path.is_file():
            res = fn(seed)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(res, indent=2) + "\n")
            tmp.replace(path)
            if done is not None:
                done(seed, res)
        results.append(json.loads(path.read_text()))
    return results


def seed_parser(doc: str | None, *, threads: int = 1) -> argparse.ArgumentParser:
    """The options every multi-seed benchmark takes: --data, --scene, --seeds, --threads, --out."""
    ap = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--scene", required=True, help="label of the data in the output file names")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=threads)
    ap.add_argument("--out", type=Path, required=True)
    return ap


def protocol_setup(data: str, ae_epochs: int | None = None, stage2_epochs: int | None = None):
    """The MMSSL protocol's config (no ablations, no sweep, no run analyses; epochs overridable), its
    splits and its training fault spec: ``(cfg, splits, spec)``."""
    from mmguard.experiments.mmssl.config import MmsslRunConfig
    from mmguard.experiments.mmssl.experiment import load_splits, training_spec_of

    cfg = MmsslRunConfig(data=data, ablations=[], severity_sweep=False, analysis=False)
    if ae_epochs is not None:
        cfg = cfg.model_copy(update={"autoencoder": cfg.autoencoder.model_copy(update={"epochs": ae_epochs})})
    if stage2_epochs is not None:
        cfg = cfg.model_copy(update={"compute": cfg.compute.model_copy(update={"epochs": stage2_epochs})})
    splits = load_splits(cfg)
    return cfg, splits, training_spec_of(cfg, splits.train)
