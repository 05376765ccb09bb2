"""Stage 1 (the MMAE), the DAE and the guards built on them trained to convergence (issue #11).

The table-1 runs (docs/results/table1-{arm,weld}) trained every MMAE-type network for at most 30
epochs, and stage 1 and the DAE stopped there while still improving (best epoch 28–30 of 30). This
script compares a bench run of the same guards with only the epoch cap lifted
(``benchmarks/converge/long-budget.yaml``: 200 epochs, early stopping unchanged, patience 6 on the
validation loss) against that table-1 run, **paired per seed**: same twin, split, seeds and fault
draws — checked, not assumed: the data fingerprint, the seeds and every per-seed value of the
no-guard row must be identical in both runs, or the script stops.

Per guard: faulty and clean combined error of the trained mix under both budgets (mean ± std over
seeds), the paired ratio long / short and on how many seeds the long budget is lower, the mean error
per fault origin, best epoch / epochs run of every training stage, and the fit time. Then the
issue's targets for ``restore`` under the long budget: faulty error / DAE (≤ 0.8), / every table-1
baseline, clean error / MMAE (≤ 1.02), AUROC and false alarms. Baselines that were not rerun (the
GANs, MMFR, MMCF, CCM) are taken from the table-1 run at their own budgets.

    python benchmarks/converge_table.py --long runs/converge-arm --short docs/results/table1-arm \\
        --out benchmarks/results/converge_arm.json

The pairing works for any bench run of the table's data and seeds: ``--label`` names what the run
changed (the restorer's second design: ``--long runs/r2-arm --label skip+wide``). A baseline the run
refitted (e.g. the DAE at another width) is compared in both versions, the run's and the table's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from mmguard.eval.stats import mean_std, paired_ratio
from mmguard.experiments.mmssl.table1 import ORIGINS, load_units, table1_summary

Metrics = dict[str, Any]


def per_seed(metrics: Metrics, guard: str, label: str = "mix", subset: str = "faulty") -> list[float]:
    """Per-seed combined error of one guard on one condition (subset: faulty, clean or all)."""
    return [float(v) for v in metrics["guards"][guard]["conditions"][label]["errors"][subset]["combined"]["seeds"]]


def origin_seeds(metrics: Metrics, guard: str, origin: str) -> list[float]:
    """Per seed, the mean faulty combined error over the fault families of one origin."""
    labels = [lbl for lbl, o in metrics["condition_origins"].items() if o == origin]
    return [float(x) for x in np.mean([per_seed(metrics, guard, lbl) for lbl in labels], axis=0)]


def check_pairable(long: Metrics, short: Metrics) -> None:
    """Stop unless both runs read the same data with the same split, seeds and fault draws."""
    if long["data"]["content"] != short["data"]["content"] or long["data"]["split"] != short["data"]["split"]:
        sys.exit("error: the runs read different data or splits; they cannot be paired")
    if long["seeds"] != short["seeds"]:
        sys.exit(f"error: seeds differ: {long['seeds']} vs {short['seeds']}")
    for label, cond in long["none"].items():
        if label in short["none"] and cond["errors"] != short["none"][label]["errors"]:
            sys.exit(f"error: the no-guard row differs on {label!r}: other fault draws; the runs cannot be paired")


def compare(long: Metrics, short: Metrics, guard: str) -> dict[str, Any]:
    """One guard under both budgets: errors, paired long/short ratios, errors per origin."""
    row: dict[str, Any] = {}
    for subset in ("faulty", "clean"):
        a, b = per_seed(long, guard, subset=subset), per_seed(short, guard, subset=subset)
        row[subset] = {"short": mean_std(b), "long": mean_std(a), "long_over_short": paired_ratio(a, b),
                       "seeds_lower": int(sum(x < y for x, y in zip(a, b, strict=True)))}
    row["origins"] = {o: {"short": mean_std(origin_seeds(short, guard, o)),
                          "long": mean_std(origin_seeds(long, guard, o))} for o, _ in ORIGINS}
    return row


def targets(long: Metrics, short: Metrics, label: str = "long") -> dict[str, Any]:
    """restore of the ``long`` run against the issue's targets and every baseline (``label`` names that
    run's budget in the keys; baselines it does not hold are read from the table-1 run)."""
    out: dict[str, Any] = {}
    mine = per_seed(long, "restore")
    for ref in short["guards"]:
        caps = short["guards"][ref]["capabilities"]
        if ref == "restore" or not caps.get("correct"):
            continue
        # a baseline the run refitted is compared in both versions: the run's and the table's
        for source in (long, short) if ref in long["guards"] else (short,):
            theirs = per_seed(source, ref)
            lower = int(sum(x < y for x, y in zip(mine, theirs, strict=True)))
            budget = label if source is long else "table-1"
            out[f"faulty / {ref} ({budget} budget)"] = {"ratio": paired_ratio(mine, theirs), "seeds_lower": lower}
    source = long if "mmae" in long["guards"] else short
    out[f"clean / mmae ({label if source is long else 'table-1'} budget)"] = {
        "ratio": paired_ratio(per_seed(long, "restore", subset="clean"), per_seed(source, "mmae", subset="clean"))}
    det = long["guards"]["restore"]["conditions"]["mix"]["detection"]
    out["detection"] = {k: det[k]["mean"] for k in ("auroc", "false_alarm_rate", "detection_rate", "localisation")}
    out["detection_std"] = {k: det[k]["std"] for k in ("auroc", "false_alarm_rate", "detection_rate", "localisation")}
    return out


def fmt(stat: list[float], digits: int = 4) -> str:
    return f"{stat[0]:.{digits}f} ± {stat[1]:.{digits}f}"


def render(result: dict[str, Any], label: str = "long") -> str:
    lines = [f"| guard | faulty (table 1) | faulty ({label}) | {label} / table 1 (paired) | lower on "
             f"| clean (table 1) | clean ({label}) |", "|---|---|---|---|---|---|---|"]
    for g, row in result["guards"].items():
        f, c = row["faulty"], row["clean"]
        lines.append(f"| {g} | {fmt(f['short'])} | {fmt(f['long'])} | {fmt(f['long_over_short'], 3)} | "
                     f"{f['seeds_lower']}/{len(result['seeds'])} | {fmt(c['short'])} | {fmt(c['long'])} |")
    lines += ["", f"| guard | stage | best epoch ({label}) | epochs run ({label}) | fit s ({label}) |",
              "|---|---|---|---|---|"]
    for g, stages in result["convergence"].items():
        for stage, v in stages.items():
            lines.append(f"| {g} | {stage} | {fmt(v['best_epoch'], 1)} | {fmt(v['epochs_run'], 1)} | "
                         f"{fmt(result['compute'][g]['fit_s'], 0)} |")
    if result["targets"] is None:  # the run holds no restore (e.g. MMSSL alone)
        return "\n".join(lines)
    lines += ["", f"| restore ({label}) versus | paired ratio | restore lower on |", "|---|---|---|"]
    for k, v in result["targets"].items():
        if isinstance(v, dict) and "ratio" in v:
            lower = f"{v['seeds_lower']}/{len(result['seeds'])}" if "seeds_lower" in v else "–"
            lines.append(f"| {k} | {fmt(v['ratio'], 3)} | {lower} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--long", required=True, type=Path, help="bench run with benchmarks/converge/long-budget.yaml")
    ap.add_argument("--short", required=True, type=Path, help="the table-1 run (its metrics.json)")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--label", default="long", help="what the --long run is, in the target keys (default: long); "
                    "the script pairs any bench run with the table-1 run of the same data and seeds")
    ap.add_argument("--extra", type=Path, action="append", default=[],
                    help="another bench run of the same data and seeds whose guards count as the --long run's "
                    "(those --long holds win); e.g. a DAE refitted in a run of its own")
    args = ap.parse_args()
    long = json.loads((args.long / "metrics.json").read_text())
    short = json.loads((args.short / "metrics.json").read_text())
    check_pairable(long, short)
    for path in args.extra:
        extra = json.loads((path / "metrics.json").read_text())
        check_pairable(extra, short)
        long["guards"] = {**extra["guards"], **long["guards"]}
    summary = table1_summary(*load_units(args.long))
    result = {"long_run": str(args.long), "short_run": str(args.short), "data": long["data"]["source"],
              "seeds": long["seeds"], "extra_runs": [str(p) for p in args.extra],
              "guards": {g: compare(long, short, g) for g in long["guards"] if g in short["guards"]},
              "convergence": summary["convergence"], "compute": summary["compute"],
              "targets": targets(long, short, args.label) if "restore" in long["guards"] else None}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(render(result, args.label))


if __name__ == "__main__":
    main()
