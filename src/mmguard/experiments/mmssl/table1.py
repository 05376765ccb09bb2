"""The MMSSL paper's table 1 beside a ``mmguard bench`` run of its rows (issue #14).

``mmguard mmssl table1 RUN_DIR`` reads the finished (guard, seed) units of a bench run
(``units/<guard>/seed<k>.json``, written by :mod:`mmguard.experiments.harness`) and writes:

* the table-1 layout — per-modality and combined error (MSE on standardised data against the
  clean input) on the clean and on the faulty samples of the trained fault mix (``mix``);
* the paper's ratios (each row / MMAE, table 1: MMAE 1.599, MMFR 1.461, MMCF 1.048, MMGAN 0.950,
  MMUGAN 0.835, MMSSL 0.523 on its non-public MuJoCo data) beside ours, **paired per seed**
  (mean ± std over seeds of the per-seed ratio), against MMAE and against MMSSL;
* which of the paper's pairwise orderings reproduce (a pair reproduces when every seed orders the
  two guards as the paper does; "mixed" when the seeds disagree);
* faulty combined error per fault origin (trained families, unseen families, common cause) and per
  family; detection metrics of the guards that flag; convergence (best epoch of each training
  stage); and the compute (fit + evaluation seconds per unit).

Decision: the paper's "combined error" is compared as a ratio to MMAE, because absolute errors
depend on the data (the paper's MuJoCo scenes are not public) while the ratio to the clean-trained
autoencoder of the same architecture is what its claims are about.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

from mmguard.errors import CheckpointError
from mmguard.eval.stats import mean_std, paired_ratio
from mmguard.io.checkpoint import read_json

#: table 1 of the MMSSL paper (../shared/seeds/mmssl-paper-summary.md): combined error per row
PAPER_TABLE1: dict[str, float] = {"mmae": 1.599, "mmfr": 1.461, "mmcf": 1.048, "mmgan": 0.950, "mmugan": 0.835,
                                  "mmssl": 0.523}
ORIGINS = (("trained", "trained families"), ("unseen", "unseen families"), ("common_cause", "common cause"))


def load_units(run_dir: str | Path) -> tuple[dict[str, Any], dict[str, dict[int, dict[str, Any]]]]:
    """The run's config and its finished units {guard: {seed: unit}} (every guard needs every seed)."""
    run = Path(run_dir)
    if not (run / "config.json").is_file():
        raise CheckpointError(f"{str(run)!r} is not a bench run directory (no config.json)")
    config = read_json(run / "config.json")
    if not isinstance(config, dict) or config.get("method") != "bench":
        raise CheckpointError(f"{str(run)!r} is not a bench run (config.json method is not 'bench')")
    units: dict[str, dict[int, dict[str, Any]]] = {}
    for guard in config["guards"]:
        for seed in config["seeds"]:
            path = run / "units" / guard / f"seed{seed}.json"
            if not path.is_file():
                raise CheckpointError(f"{str(run)!r}: unit {guard}/seed{seed} is not finished")
            doc = read_json(path)
            units.setdefault(guard, {})[seed] = doc["payload"] if "payload" in doc else doc
    return config, units


def _err(unit: dict[str, Any], label: str, subset: str, key: str = "combined") -> float:
    return float(unit["conditions"][label]["errors"][subset][key])


def _fmt(stat: list[float], digits: int = 3) -> str:
    return f"{stat[0]:.{digits}f} ± {stat[1]:.{digits}f}"


def _best_epochs(fit: Any, prefix: str = "") -> list[tuple[str, int, int]]:
    """(stage, best epoch, epochs run) of every training stage found in a unit's fit report."""
    out: list[tuple[str, int, int]] = []
    if isinstance(fit, dict):
        if "best_epoch" in fit and "epochs_run" in fit:
            best = fit["best_epoch"]
            out.append((prefix or "train", int(best[0] if isinstance(best, list) else best), int(fit["epochs_run"])))
        for key, value in fit.items():
            if isinstance(value, dict):
                out += _best_epochs(value, f"{prefix}.{key}" if prefix else key)
    return out


def table1_summary(config: dict[str, Any], units: dict[str, dict[int, dict[str, Any]]]) -> dict[str, Any]:
    """Every number of the report (JSON-ready): means ± std over seeds and paired ratios."""
    seeds = list(config["seeds"])
    guards = [g for g in config["guards"] if units[g][seeds[0]]["capabilities"].get("correct")]
    first = units[guards[0]][seeds[0]]
    names = [k for k in first["conditions"]["mix"]["errors"]["faulty"] if k != "combined"]
    origins = {label: c["origin"] for label, c in first["conditions"].items()}

    def per_seed(g: str, label: str, subset: str, key: str = "combined") -> list[float]:
        return [_err(units[g][s], label, subset, key) for s in seeds]

    layout = {g: {subset: {k: mean_std(per_seed(g, "mix", subset, k)) for k in [*names, "combined"]}
                  for subset in ("clean", "faulty")} for g in guards}
    ratios: dict[str, dict[str, Any]] = {}
    for g in guards:
        row: dict[str, Any] = {}
        for ref in ("mmae", "mmssl"):
            if ref in units and ref != g:
                row[f"faulty_vs_{ref}"] = paired_ratio(per_seed(g, "mix", "faulty"), per_seed(ref, "mix", "faulty"))
                row[f"clean_vs_{ref}"] = paired_ratio(per_seed(g, "mix", "clean"), per_seed(ref, "mix", "clean"))
        if g in PAPER_TABLE1:
            row["paper_vs_mmae"] = PAPER_TABLE1[g] / PAPER_TABLE1["mmae"]
        ratios[g] = row
    in_paper = [g for g in PAPER_TABLE1 if g in guards]
    pairs = []
    for a, b in itertools.combinations(in_paper, 2):
        paper_a_better = PAPER_TABLE1[a] < PAPER_TABLE1[b]
        ours = np.array(per_seed(a, "mix", "faulty")) < np.array(per_seed(b, "mix", "faulty"))
        agree = int((ours == paper_a_better).sum())
        verdict = "reproduces" if agree == len(seeds) else ("reversed" if agree == 0 else "mixed")
        pairs.append({"better_in_paper": a if paper_a_better else b, "worse_in_paper": b if paper_a_better else a,
                      "seeds_agreeing": agree, "seeds": len(seeds), "verdict": verdict})
    by_origin = {}
    for origin, _ in ORIGINS:
        labels = [lbl for lbl, o in origins.items() if o == origin]
        if labels:
            by_origin[origin] = {g: mean_std([float(np.mean([_err(units[g][s], lbl, "faulty") for lbl in labels]))
                                              for s in seeds]) for g in guards}
    families = {lbl: {g: mean_std(per_seed(g, lbl, "faulty")) for g in guards}
                for lbl, o in origins.items() if o in {o for o, _ in ORIGINS}}
    detection = {}
    for g in config["guards"]:
        if units[g][seeds[0]]["capabilities"].get("flag"):
            det = [units[g][s]["conditions"]["mix"]["detection"] for s in seeds]
            detection[g] = {k: mean_std([float(d[k]) for d in det if d.get(k) is not None])
                            for k in ("auroc", "false_alarm_rate", "detection_rate", "localisation")}
    convergence = {g: {stage: {"best_epoch": mean_std([b for st, b, _ in rows if st == stage]),
                               "epochs_run": mean_std([r for st, _, r in rows if st == stage])}
                       for stage in dict.fromkeys(st for st, _, _ in rows)}
                   for g in config["guards"]
                   for rows in [[x for s in seeds for x in _best_epochs(units[g][s]["fit"])]]}
    compute = {g: {"fit_s": mean_std([units[g][s]["fit_s"] for s in seeds]),
                   "eval_s": mean_std([units[g][s]["eval_s"] for s in seeds])} for g in config["guards"]}
    total = float(sum(units[g][s]["fit_s"] + units[g][s]["eval_s"] for g in config["guards"] for s in seeds))
    return {"seeds": seeds, "modalities": names, "layout": layout, "ratios": ratios, "pairs": pairs,
            "by_origin": by_origin, "families": families, "detection": detection, "convergence": convergence,
            "compute": compute, "unit_seconds_total": total, "data": config.get("data", {}).get("source")}


def render_table1(summary: dict[str, Any]) -> str:
    """The summary as Markdown (the tables of docs/results/table1.md)."""
    s, names = summary, summary["modalities"]
    guards = list(s["layout"])
    lines = [f"Data: `{s['data']}`; seeds {s['seeds']}; mean ± std over seeds; errors: MSE per sample on "
             "standardised data against the clean input, on the trained fault mix (`mix`).", "",
             "### Table-1 layout", "",
             "| guard | " + " | ".join(f"clean {n}" for n in names) + " | clean combined | "
             + " | ".join(f"faulty {n}" for n in names) + " | faulty combined |",
             "|---" * (2 * len(names) + 3) + "|"]
    for g in guards:
        c, f = s["layout"][g]["clean"], s["layout"][g]["faulty"]
        lines.append(f"| {g} | " + " | ".join(_fmt(c[n], 4) for n in names) + f" | {_fmt(c['combined'], 4)} | "
                     + " | ".join(_fmt(f[n], 4) for n in names) + f" | **{_fmt(f['combined'], 4)}** |")
    lines += ["", "### The paper's ratios beside ours (paired per seed)", "",
              "| guard | paper error | paper / MMAE | ours faulty / MMAE | ours faulty / MMSSL | ours clean / MMAE |",
              "|---|---|---|---|---|---|"]
    def ratio(g: str, key: str, ref: str) -> str:
        r = s["ratios"][g]
        return _fmt(r[key]) if key in r else ("1 (reference)" if g == ref else "–")

    for g in guards:
        paper = PAPER_TABLE1.get(g)
        cells = [g, "–" if paper is None else f"{paper:.3f}",
                 "–" if paper is None else f"{s['ratios'][g]['paper_vs_mmae']:.3f}",
                 ratio(g, "faulty_vs_mmae", "mmae"), ratio(g, "faulty_vs_mmssl", "mmssl"),
                 ratio(g, "clean_vs_mmae", "mmae")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "### Pairwise orderings of the paper (faulty combined error)", "",
              "| paper: better | paper: worse | seeds agreeing | verdict |", "|---|---|---|---|"]
    lines += [f"| {p['better_in_paper']} | {p['worse_in_paper']} | {p['seeds_agreeing']}/{p['seeds']} | "
              f"{p['verdict']} |" for p in s["pairs"]]
    n_rep = sum(p["verdict"] == "reproduces" for p in s["pairs"])
    lines += ["", f"{n_rep} of {len(s['pairs'])} pairwise orderings reproduce on every seed."]
    lines += ["", "### Faulty combined error by fault origin (mean over the families of each origin)", "",
              "| origin | " + " | ".join(guards) + " |", "|---" * (len(guards) + 1) + "|"]
    for origin, title in ORIGINS:
        if origin in s["by_origin"]:
            lines.append(f"| {title} | " + " | ".join(_fmt(s["by_origin"][origin][g]) for g in guards) + " |")
    lines += ["", "### Faulty combined error per family", "",
              "| family | " + " | ".join(guards) + " |", "|---" * (len(guards) + 1) + "|"]
    for lbl, row in s["families"].items():
        best = min(guards, key=lambda g: row[g][0])
        lines.append(f"| {lbl} | " + " | ".join(f"**{_fmt(row[g])}**" if g == best else _fmt(row[g]) for g in guards)
                     + " |")
    if s["detection"]:
        lines += ["", "### Detection on the trained mix (guards that flag)", "",
                  "| guard | AUROC | false alarms (clean samples) | detection rate | localisation |",
                  "|---|---|---|---|---|"]
        for g, d in s["detection"].items():
            lines.append(f"| {g} | {_fmt(d['auroc'])} | {_fmt(d['false_alarm_rate'])} | "
                         f"{_fmt(d['detection_rate'])} | {_fmt(d['localisation'])} |")
    lines += ["", "### Convergence (best validation epoch / epochs run, per training stage)", "",
              "| guard | stage | best epoch | epochs run |", "|---|---|---|---|"]
    for g, stages in s["convergence"].items():
        for stage, c in stages.items():
            lines.append(f"| {g} | {stage} | {_fmt(c['best_epoch'], 1)} | {_fmt(c['epochs_run'], 1)} |")
    lines += ["", "### Compute (one CPU thread per unit)", "", "| guard | fit s | evaluation s |", "|---|---|---|"]
    lines += [f"| {g} | {_fmt(c['fit_s'], 0)} | {_fmt(c['eval_s'], 0)} |" for g, c in s["compute"].items()]
    lines += ["", f"Sum over all units: {s['unit_seconds_total'] / 3600:.2f} CPU-hours."]
    return "\n".join(lines) + "\n"
