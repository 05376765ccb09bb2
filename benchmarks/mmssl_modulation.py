"""Selective amplification and renormalization at equal step size, under SGD and Adam (issue #11).

The MMSSL protocol's ablations (docs/results/mmssl-twin.md §3) cannot tell the paper's two gradient
operations from a learning-rate change: renormalization multiplies every gradient by a factor below 1.
This benchmark trains, per seed, the protocol's stage 1 (the MMAE, bit-identical to ``mmguard mmssl
run`` for the same data, split and seed) once, then stage 2 twice — with SGD (the protocol's
optimiser, lr 0.05, momentum 0.9) and with Adam (lr 1e-3, the loop's default rate; not tuned) — each
time with four members of one ensemble on the same minibatches:

* ``full`` — amplify the detection group by γ = 4, renormalize to the pre-amplification norm;
* ``no_amplification`` — the plain gradient (γ = 1);
* ``no_renormalization`` — amplified, not renormalized (larger steps);
* ``shrink_only`` — the step-size control: the plain gradient scaled, at every step, by the *full*
  member's renormalization factor of that step (:mod:`mmguard.mmssl.modulation`): the full model's
  step-size schedule without the re-allocation towards detection.

So ``full`` vs ``shrink_only`` is amplification at equal step size, ``shrink_only`` vs
``no_amplification`` is the step-size reduction alone. Reported on the test mix of the protocol (the
same draw, ``derive_seed(seed, "test-mix")``): combined error of each member on faulty and clean
samples, mean ± std over seeds and paired per-seed differences. Each (scene, seed) is saved when done
(``--out DIR/<scene>_seed<k>.json``) and reused on a rerun.

    .venv/bin/python benchmarks/mmssl_modulation.py --data /tmp/twins/arm.h5 --scene arm --seeds 5 \
        --out benchmarks/results/mmssl_modulation
"""

from __future__ import annotations

import json
import time
from typing import Any

import torch

from seed_units import protocol_setup, run_seeds, seed_parser

VARIANTS = ("full", "no_amplification", "no_renormalization", "shrink_only")
PAIRS = (("full", "shrink_only"), ("shrink_only", "no_amplification"), ("full", "no_amplification"),
         ("full", "no_renormalization"))


def run_seed(data: str, seed: int, epochs: int | None, stage2_epochs: int | None = None) -> dict[str, Any]:
    from mmguard.experiments.mmssl.experiment import error_table
    from mmguard.faults import apply_faults
    from mmguard.mmssl.pipeline import MmsslModels, model_name
    from mmguard.mmssl.stages import train_autoencoder, train_compute_block
    from mmguard.seeding import derive_seed

    cfg, splits, spec = protocol_setup(data, epochs, stage2_epochs)
    t0 = time.perf_counter()
    mmae, r1 = train_autoencoder(splits.train, splits.val, cfg.autoencoder, seed=seed)
    out: dict[str, Any] = {"seed": seed, "mmae_best_epoch": int(r1.best_epoch[0]), "mmae_s": time.perf_counter() - t0}
    test = splits.test
    mix = apply_faults(test, spec, seed=derive_seed(seed, "test-mix"))
    faulty = mix.mask_or_clean().any(1)
    for opt, lr in (("sgd", cfg.compute.lr), ("adam", 1e-3)):
        ccfg = cfg.compute.model_copy(update={"optimizer": opt, "lr": lr})
        t0 = time.perf_counter()
        comp = train_compute_block(mmae, splits.train, splits.val, spec, ccfg, seed=seed, variants=VARIANTS)
        models = MmsslModels.from_stages(mmae, None, comp, ccfg)
        faulty_tab, _ = error_table(models, mix, test, faulty)
        clean_tab, _ = error_table(models, mix, test, ~faulty)
        out[opt] = {
            "compute_s": time.perf_counter() - t0,
            "best_epoch": dict(zip(VARIANTS, comp.train.best_epoch.tolist(), strict=True)),
            "faulty": {v: faulty_tab[model_name(v)]["combined"] for v in VARIANTS},
            "clean": {v: clean_tab[model_name(v)]["combined"] for v in VARIANTS},
        }
    return out


def summarise(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    from mmguard.eval.stats import mean_std

    out: dict[str, Any] = {"seeds": [r["seed"] for r in per_seed]}
    for opt in ("sgd", "adam"):
        entry: dict[str, Any] = {}
        for part in ("faulty", "clean"):
            entry[part] = {v: mean_std([r[opt][part][v] for r in per_seed]) for v in VARIANTS}
        entry["paired_faulty_difference"] = {
            f"{a} - {b}": mean_std([r[opt]["faulty"][a] - r[opt]["faulty"][b] for r in per_seed]) for a, b in PAIRS}
        entry["lower_on_seeds"] = {
            f"{a} < {b}": sum(r[opt]["faulty"][a] < r[opt]["faulty"][b] for r in per_seed) for a, b in PAIRS}
        out[opt] = entry
    return out


def main() -> None:
    ap = seed_parser(__doc__)
    ap.add_argument("--ae-epochs", type=int, default=None, help="stage-1 epochs (default: the protocol's 30)")
    ap.add_argument("--stage2-epochs", type=int, default=None, help="stage-2 epochs (default: the protocol's 40)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    per_seed = run_seeds(args.out, args.scene, args.seeds,
                         lambda seed: run_seed(args.data, seed, args.ae_epochs, args.stage2_epochs),
                         lambda seed, res: print(f"{args.scene} seed {seed}: sgd {res['sgd']['faulty']}  "
                                                 f"adam {res['adam']['faulty']}", flush=True))
    summary = {"data": args.data, "scene": args.scene, "threads": args.threads, **summarise(per_seed)}
    (args.out / f"{args.scene}_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    for opt in ("sgd", "adam"):
        print(opt, json.dumps(summary[opt]["faulty"]), json.dumps(summary[opt]["paired_faulty_difference"]))


if __name__ == "__main__":
    main()
