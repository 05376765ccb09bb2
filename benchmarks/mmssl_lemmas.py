"""The MMSSL protocol's lemma analyses over every seed, not the first only (issue #11).

``mmguard mmssl run`` runs its analyses (:mod:`mmguard.experiments.mmssl.diagnostics`) on the first
seed's models; docs/results/mmssl-twin.md §4–5 quoted them. This benchmark repeats them for seeds
0..S-1 with the protocol's data, split, probe samples and settings: per seed it trains the MMAE
(stage 1), the DAE (the training mix, a fresh draw every epoch) and the alternative encoders (dense
camera, conv1d kinematics), then reports

* the local Lipschitz constant of each modality encoder at clean probe inputs (lemma 3.7: stage 1
  preserves sensitivity) for the MMAE and the DAE, and their paired ratio;
* the fault entropy of a localized perturbation (lemmas 3.1/3.2) at the first layer and at the code,
  default encoders (the MMAE) against the alternatives: normalised entropy and top-5 energy share,
  each the mean over the 64 probe samples of the seed;

then mean ± std over seeds of each, and paired per-seed differences. One JSON per (scene, seed) in
``--out``, reused on a rerun.

    .venv/bin/python benchmarks/mmssl_lemmas.py --data /tmp/twins/arm.h5 --scene arm --seeds 5 \
        --out benchmarks/results/mmssl_lemmas
"""

from __future__ import annotations

import json
import time
from typing import Any

import torch

from seed_units import protocol_setup, run_seeds, seed_parser


def run_seed(data: str, seed: int, epochs: int | None) -> dict[str, Any]:
    from mmguard.experiments.mmssl.diagnostics import PROBE, entropy_report, jacobian_report
    from mmguard.mmssl.stages import train_autoencoder
    from mmguard.seeding import derive_seed

    cfg, splits, spec = protocol_setup(data, epochs)
    t0 = time.perf_counter()
    mmae, _ = train_autoencoder(splits.train, splits.val, cfg.autoencoder, seed=seed)
    dae, _ = train_autoencoder(splits.train, splits.val, cfg.autoencoder, seed=seed, denoise_spec=spec)
    alt_cfg = cfg.autoencoder.model_copy(update={"image_encoder": "dense", "sensor_encoder": "conv1d"})
    alt, _ = train_autoencoder(splits.train, splits.val, alt_cfg, seed=derive_seed(seed, "alt-encoders"))
    gen = torch.Generator().manual_seed(derive_seed(seed, "probe"))  # the protocol's probe samples
    idx = torch.randperm(len(splits.test), generator=gen)[:PROBE]
    x = {n: splits.test.modalities[n][idx] for n in splits.test.names}
    specs = splits.test.specs
    return {
        "seed": seed,
        "train_s": time.perf_counter() - t0,
        "lipschitz": {"mmae": jacobian_report(mmae, x, seed), "dae": jacobian_report(dae, x, seed)},
        "entropy": {"default": entropy_report(mmae, x, specs, seed),
                    "alternative": entropy_report(alt, x, specs, seed)},
    }


def summarise(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    from mmguard.eval.stats import mean_std

    names = list(per_seed[0]["lipschitz"]["mmae"])
    out: dict[str, Any] = {"seeds": [r["seed"] for r in per_seed], "lipschitz": {}, "entropy": {}}
    for n in names:
        m = [r["lipschitz"]["mmae"][n]["lipschitz_clean"] for r in per_seed]
        d = [r["lipschitz"]["dae"][n]["lipschitz_clean"] for r in per_seed]
        out["lipschitz"][n] = {"mmae": mean_std(m), "dae": mean_std(d),
                               "mmae_over_dae": mean_std([a / b for a, b in zip(m, d, strict=True)]),
                               "mmae_higher_on_seeds": sum(a > b for a, b in zip(m, d, strict=True))}
        ent: dict[str, Any] = {}
        for level in ("first_layer", "code"):
            for measure in ("entropy", "top5_share"):
                dflt = [r["entropy"]["default"][n][level][measure][0] for r in per_seed]
                alt = [r["entropy"]["alternative"][n][level][measure][0] for r in per_seed]
                ent[f"{level}.{measure}"] = {
                    "default": mean_std(dflt), "alternative": mean_std(alt),
                    "default_minus_alternative": mean_std([a - b for a, b in zip(dflt, alt, strict=True)])}
        out["entropy"][n] = {"default_encoder": per_seed[0]["entropy"]["default"][n]["encoder"],
                             "alternative_encoder": per_seed[0]["entropy"]["alternative"][n]["encoder"], **ent}
    return out


def main() -> None:
    ap = seed_parser(__doc__)
    ap.add_argument("--ae-epochs", type=int, default=None, help="autoencoder epochs (default: the protocol's 30)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    per_seed = run_seeds(args.out, args.scene, args.seeds, lambda seed: run_seed(args.data, seed, args.ae_epochs),
                         lambda seed, res: print(f"{args.scene} seed {seed} done ({res['train_s']:.0f} s)", flush=True))
    summary = {"data": args.data, "scene": args.scene, **summarise(per_seed)}
    (args.out / f"{args.scene}_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
