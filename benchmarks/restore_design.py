"""Design choices of the ``restore`` guard, chosen on **validation** episodes only (issue #11).

Fits each variant on the bench's split of a twin (same split rule and seed as ``mmguard bench``)
and evaluates it on the *validation* split corrupted by the training fault mix (one fixed draw,
seed 12345, the same for every variant) and by each fault family of the bench
(:func:`mmguard.faults.scenarios.family_specs`). The test split is never loaded into a
metric. Writes ``results/restore_design_<scene>.json``.

    python benchmarks/restore_design.py --data twin:/tmp/twins/arm.h5 --seed 0
"""

from __future__ import annotations

import time

import torch

from design_common import design_args, validation_setup, write_variants
from mmguard.eval.guard_eval import evaluate_guard
from mmguard.guard import create_guard

#: every variant spells out the restorer's shape and the decoder skip, so a variant means today what it
#: meant when it was measured, whatever the guard's defaults (the defaults changed to skip + wide after
#: the ``-skip`` variants below; docs/restore.md)
MMAE_SHAPED = {"sensor_hidden": 128, "sensor_code": 32}
WIDE = {"sensor_hidden": 256, "sensor_code": 64}
TORCH_EPS = 1e-8  # Adam's epsilon of every variant measured before ``restorer_adam_eps`` existed


def first(restoration: dict | None = None, restorer: dict | None = None) -> dict:
    """A variant of the first design: no decoder skip, the restorer shaped as the MMAE."""
    return {"restoration": {"skip": False, "restorer_adam_eps": TORCH_EPS, **(restoration or {})},
            "restorer": {**MMAE_SHAPED, **(restorer or {})}}


VARIANTS: dict[str, tuple[str, dict]] = {
    "unimodal-keep": ("restore", first({"detector": "unimodal", "flagged_input": "keep", "classifier": False})),
    "joint-keep": ("restore", first({"detector": "joint", "flagged_input": "keep", "classifier": False})),
    "unimodal-drop": ("restore", first({"detector": "unimodal", "flagged_input": "drop", "classifier": False})),
    "unimodal-keep-no-extra-flags": ("restore", first({"detector": "unimodal", "flagged_input": "keep",
                                                       "extra_flag_rate": 0.0, "classifier": False})),
    "unimodal-keep-classifier": ("restore", first({"detector": "unimodal", "classifier": True})),
    "joint-keep-classifier": ("restore", first({"detector": "joint", "classifier": True})),
    "joint-keep-classifier-val-scales": ("restore", first({"detector": "joint", "classifier": True,
                                                           "scales_on": "validation"})),
    # the restorer itself (restoration is the limit: docs/restore.md), on the default detector
    "joint-classifier-warm": ("restore", first({"restorer_init": "detector"})),
    "joint-classifier-latent128": ("restore", first(restorer={"latent_dim": 128})),
    "joint-classifier-long": ("restore", first(restorer={"epochs": 60, "patience": 12})),
    "joint-classifier-warm-long": ("restore", first({"restorer_init": "detector"},
                                                    {"epochs": 60, "patience": 12})),
    # a skip past the bottleneck for the kinematics (the restorer's kinematic error is the limit), and
    # the kinematic path's width with and without it; "joint-classifier-skip-wide" is the default now
    "joint-classifier-skip": ("restore", first({"skip": True})),
    "joint-classifier-skip-long": ("restore", first({"skip": True}, {"epochs": 60, "patience": 12})),
    "joint-classifier-wide": ("restore", first(restorer=WIDE)),
    "joint-classifier-skip-wide": ("restore", {"restoration": {"skip": True, "restorer_adam_eps": TORCH_EPS},
                                               "restorer": WIDE}),
    "joint-classifier-skip-wide-long": ("restore", {"restoration": {"skip": True, "restorer_adam_eps": TORCH_EPS},
                                                    "restorer": {**WIDE, "epochs": 60, "patience": 12}}),
    # the default: skip + wide with Adam's epsilon at 1e-6 (a numerical fix, docs/restore.md)
    "joint-classifier-skip-wide-eps6": ("restore", {"restoration": {"skip": True, "restorer_adam_eps": 1e-6},
                                                    "restorer": WIDE}),
    "dae": ("dae", {}),  # the reference to beat, on the same validation batches
    # the reference made as wide as the restorer's kinematic path (a fair baseline for the wide variants)
    "dae-wide": ("dae", {"autoencoder": WIDE}),
}


def main() -> None:
    args = design_args(__doc__, VARIANTS)
    torch.set_num_threads(1)
    splits, st, val_std, conds = validation_setup(args.data, args.seed)
    results = {}
    for name in args.variants.split(","):
        kind, config = VARIANTS[name]
        guard = create_guard(kind, config, quick=args.quick)
        t0 = time.perf_counter()
        guard.fit(splits, seed=args.seed)
        fit_s = time.perf_counter() - t0
        rows = {}
        for label, (origin, faulty_std) in conds.items():
            ev = evaluate_guard(guard, st.inverse(faulty_std), val_std, st)
            rows[label] = {"origin": origin, "errors": ev["errors"], "detection": ev.get("detection")}
        if kind != "restore":
            results[name] = {"fit_s": fit_s, "conditions": rows}
            print(f"{name}: fit {fit_s:.0f} s; validation mix faulty combined "
                  f"{rows['mix']['errors']['faulty']['combined']:.4f}", flush=True)
            continue
        # diagnostic: the restorer with the true fault mask as the flags (detection left out)
        mix_std = conds["mix"][1]
        x = guard._prepare(st.inverse(mix_std))
        truth = mix_std.mask_or_clean().to(x.modalities[x.names[0]].device)
        with torch.no_grad():
            oracle = guard.model.restore(x.modalities, truth)
        err = torch.stack([(oracle[n].double() - val_std.modalities[n].double()).pow(2).reshape(len(x), -1).mean(1)
                           for n in x.names], 1)
        faulty = truth.any(1)
        rows["mix"]["oracle_flags_faulty"] = {**{n: float(err[faulty, j].mean()) for j, n in enumerate(x.names)},
                                              "combined": float(err[faulty].sum(1).mean())}
        flags = guard.flag(st.inverse(mix_std))
        rows["mix"]["flag_rates"] = {
            f"{n}:{what}": float(flags[sel, j].float().mean())
            for j, n in enumerate(x.names)
            for what, sel in (("faulty", truth[:, j]), ("healthy_in_faulty_sample", faulty & ~truth[:, j]),
                              ("clean_sample", ~faulty))}
        unseen = [r["errors"]["faulty"]["combined"] for r in rows.values()
                  if r["origin"] == "unseen" and r["errors"]["faulty"]]
        results[name] = {"fit_s": fit_s, "conditions": rows, "unseen_mean": sum(unseen) / len(unseen),
                         "fit": {k: guard.fit_report[k] for k in ("detector", "restorer")}}
        e = rows["mix"]["errors"]
        print(f"{name}: fit {fit_s:.0f} s; validation mix faulty combined {e['faulty']['combined']:.4f}, "
              f"clean {e['clean']['combined']:.4f}; unseen families (mean of {len(unseen)}) "
              f"{results[name]['unseen_mean']:.4f}; with the true fault mask as flags "
              f"{rows['mix']['oracle_flags_faulty']['combined']:.4f}; flag rates {rows['mix']['flag_rates']}",
              flush=True)
    out, _ = write_variants(args.data, "restore_design", args.out,
                            {"seed": args.seed, "split": "validation", "faults": "training mix, seed 12345"}, results)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
