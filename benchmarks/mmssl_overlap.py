"""MMSSL's latent-overlap analysis over every seed, not the first only (issue #11; mmssl-twin.md §6).

``mmguard mmssl run`` computes the overlap of corrected and clean joint latents
(:func:`mmguard.experiments.mmssl.diagnostics.latent_overlap`) on its first seed only. This benchmark
trains, per seed and with the protocol's data, split and settings, stage 1 (the MMAE) and stage 2 (the
full compute block, no ablations; the DAE is not needed), then measures on the faulty test samples of
the protocol's fault draw: MMD² (RBF) and Fréchet distance of the corrupted and of the corrected
latents to the clean latents of the same samples. Mean ± std over seeds, the paired reduction
(corrupted − corrected) and the fraction of the distance that correction removes.

    .venv/bin/python benchmarks/mmssl_overlap.py --data /tmp/twins/arm.h5 --scene arm --seeds 5 \
        --out benchmarks/results/mmssl_overlap
"""

from __future__ import annotations

import json
import time
from typing import Any

import torch

from seed_units import protocol_setup, run_seeds, seed_parser


def run_seed(data: str, seed: int, epochs: int | None = None) -> dict[str, Any]:
    from mmguard.experiments.mmssl.diagnostics import latent_overlap
    from mmguard.mmssl.pipeline import MmsslModels
    from mmguard.mmssl.stages import train_autoencoder, train_compute_block

    cfg, splits, spec = protocol_setup(data, epochs, epochs)  # epochs: a smoke test only
    t0 = time.perf_counter()
    mmae, _ = train_autoencoder(splits.train, splits.val, cfg.autoencoder, seed=seed)
    comp = train_compute_block(mmae, splits.train, splits.val, spec, cfg.compute, seed=seed, variants=("full",))
    models = MmsslModels.from_stages(mmae, None, comp, cfg.compute).to("cpu")
    train_s = time.perf_counter() - t0
    return {"seed": seed, "train_s": train_s, **latent_overlap(models, splits, spec, seed, None)}


def summarise(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    from mmguard.eval.stats import mean_std

    out: dict[str, Any] = {"seeds": [r["seed"] for r in per_seed],
                           "faulty_samples": [r["samples"] for r in per_seed]}
    for measure in ("mmd2", "frechet"):
        before = [r[measure]["corrupted"] for r in per_seed]
        after = [r[measure]["corrected"] for r in per_seed]
        out[measure] = {"corrupted": mean_std(before), "corrected": mean_std(after),
                        "reduction": mean_std([a - b for a, b in zip(before, after, strict=True)]),
                        "fraction_removed": mean_std([1 - b / a for a, b in zip(before, after, strict=True)]),
                        "lower_after_on_seeds": sum(b < a for a, b in zip(before, after, strict=True))}
    return out


def main() -> None:
    ap = seed_parser(__doc__, threads=2)
    ap.add_argument("--epochs", type=int, default=None, help="both stages' epochs (default: the protocol's)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    per_seed = run_seeds(args.out, args.scene, args.seeds, lambda seed: run_seed(args.data, seed, args.epochs),
                         lambda seed, res: print(f"{args.scene} seed {seed} done ({res['train_s']:.0f} s): MMD² "
                                                 f"{res['mmd2']['corrupted']:.4f} → {res['mmd2']['corrected']:.4f}",
                                                 flush=True))
    summary = {"data": args.data, "scene": args.scene, **summarise(per_seed)}
    (args.out / f"{args.scene}_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
