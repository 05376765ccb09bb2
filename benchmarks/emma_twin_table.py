"""EMMA's downstream retention on a twin beside the correcting guards of an earlier bench (issue 12).

EMMA is a gated *predictor*: on a twin whose target is the phase (``twin:PATH?target=phase``) its
own prediction is the downstream model, while a correcting guard (``restore``, ``dae``) is judged by
the clean phase model behind its ``transform`` (``--downstream phase``). Both benches use the same
split, seeds, fault draws and downstream models (the models' seeds do not depend on the task's name),
so their per-seed rows can be paired — **checked here, not assumed**: the oracle, no-guard and peer
scores of every seed and condition must be identical in both runs, or the script stops.

The table is then built by the bench's own aggregation (:func:`mmguard.experiments.downstream_eval.summarise`)
over both runs' units: retention per fault group, mean ± std over seeds, paired differences.

    python benchmarks/emma_twin_table.py --emma runs/emma-arm --guards runs/ds-arm --task phase \\
        --out benchmarks/results/emma_twin_arm.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mmguard.eval.stats import mean_std
from mmguard.experiments.downstream_eval import GROUPS, _mean_retention, summarise

OPTIONS = ("oracle", "none", "peer")


def units(run: Path, name: str) -> dict[int, dict[str, Any]]:
    return {int(p.stem.removeprefix("seed")): json.loads(p.read_text())["payload"]
            for p in sorted((run / "units" / name).glob("seed*.json"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--emma", required=True, type=Path, help="bench run with --guards emma --downstream target")
    ap.add_argument("--guards", required=True, type=Path, help="bench run of the correcting guards")
    ap.add_argument("--task", default="phase", help="the same task's name in the --guards run")
    ap.add_argument("--versus", type=Path, default=None,
                    help="another EMMA run on the same data and seeds: paired differences (this − that)")
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()
    base_e = {s: u["base"] for s, u in units(args.emma, "downstream").items()}
    base_g = {s: u["base"] for s, u in units(args.guards, "downstream").items()}
    seeds = sorted(base_e)
    if sorted(base_g) != seeds:
        sys.exit(f"error: seeds differ: {seeds} vs {sorted(base_g)}")
    for s in seeds:
        for label, row in base_e[s].items():
            for o in OPTIONS:
                a, b = row["target"][o]["score"], base_g[s][label][args.task][o]["score"]
                if a != b:
                    sys.exit(f"error: seed {s}, {label}, {o}: {a} in {args.emma} vs {b} in {args.guards}; "
                             "the runs cannot be paired")
    metrics = json.loads((args.emma / "metrics.json").read_text())
    origins = metrics["condition_origins"]
    guards = {"emma": units(args.emma, "emma")}
    for name in json.loads((args.guards / "config.json").read_text())["guards"]:
        per_seed = units(args.guards, name)
        for u in per_seed.values():  # the same task, under the name the EMMA run gives it
            for c in u["conditions"].values():
                c["downstream"] = {"target": c["downstream"][args.task]}
        guards[name] = per_seed
    table = summarise(["target"], seeds, origins, base_e, guards)["target"]
    def diffs(these: dict[int, Any], those: dict[int, Any], group: str) -> dict[str, Any]:
        d = [_retention(these[s], base_e[s], origins, group) - _retention(those[s], base_e[s], origins, group)
             for s in seeds]
        return {"mean_std": mean_std(d), "seeds_higher": sum(x > 0 for x in d)}

    paired = {f"{group}: emma - {other}": diffs(guards["emma"], guards[other], group)
              for group in table["retention"] for other in guards if other != "emma"}
    versus = None
    if args.versus is not None:
        if {s: u["base"] for s, u in units(args.versus, "downstream").items()} != base_e:
            sys.exit(f"error: {args.versus} has other downstream rows than {args.emma}; the runs cannot be paired")
        that = units(args.versus, "emma")
        versus = {"run": str(args.versus), **{g: diffs(guards["emma"], that, g) for g in table["retention"]}}
        f1 = [guards["emma"][s]["conditions"]["clean"]["prediction"]["f1"]
              - that[s]["conditions"]["clean"]["prediction"]["f1"] for s in seeds]
        versus["clean_f1"] = {"mean_std": mean_std(f1), "seeds_higher": sum(d > 0 for d in f1)}
        for k, v in versus.items():
            if k != "run":
                print(f"versus {args.versus.name}, {k}: {v['mean_std'][0]:+.3f} ± {v['mean_std'][1]:.3f} "
                      f"({v['seeds_higher']}/{len(seeds)} higher)")
    out = {"emma_run": str(args.emma), "guards_run": str(args.guards), "task": args.task, "seeds": seeds,
           "paired_rows_identical": True, "retention": table["retention"], "paired": paired,
           "attention": metrics.get("attention", {}).get("emma", {}), "versus": versus,
           "clean_weight_per_seed": {m: [guards["emma"][s]["conditions"]["clean"]["attention"][m]["all"] for s in seeds]
                                     for m in guards["emma"][seeds[0]]["conditions"]["clean"]["attention"]},
           "clean_f1_per_seed": [guards["emma"][s]["conditions"]["clean"]["prediction"]["f1"] for s in seeds]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    for group, rows in table["retention"].items():
        print(group, {o: f"{r['retention'][0]:.3f} ± {r['retention'][1]:.3f}" for o, r in rows.items()})
    for k, v in paired.items():
        print(k, f"{v['mean_std'][0]:+.3f} ± {v['mean_std'][1]:.3f}", f"({v['seeds_higher']}/{len(seeds)})")
    print(f"wrote {args.out}")


def _retention(unit: dict[str, Any], base: dict[str, Any], origins: dict[str, str], group: str) -> float:
    """The bench's retention of one unit averaged over ``group``'s conditions (``_mean_retention``)."""
    labels = [lbl for lbl, o in origins.items() if o in GROUPS[group]]
    rows = {lbl: unit["conditions"][lbl]["downstream"]["target"] for lbl in labels}
    return _mean_retention(rows, {lbl: base[lbl]["target"]["oracle"] for lbl in labels}, labels)

if __name__ == "__main__":
    main()
