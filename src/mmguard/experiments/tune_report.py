"""Outputs of a search (:mod:`mmguard.experiments.tune`): best_config.json, objective.png, report.md,
metrics.json — all from the summary alone, each file written atomically, ``metrics.json`` last (a run
directory with ``metrics.json`` is complete)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmguard.io.checkpoint import atomic_write_text, write_json
from mmguard.io.figures import save_figure


def _value(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return json.dumps(v)


def ranked(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Trials best first: complete trials by objective (mode-aware), then stopped ones, then those without
    a value; ties by trial index."""
    sign = 1.0 if metrics["objective"]["mode"] == "min" else -1.0

    def key(r: dict[str, Any]) -> tuple[int, float, int]:
        group = 0 if r["status"] == "complete" and r["objective"] is not None else (
            1 if r["objective"] is not None else 2)
        return group, sign * (r["objective"] if r["objective"] is not None else 0.0), r["trial"]

    return sorted(metrics["trials"], key=key)


def render_report(metrics: dict[str, Any]) -> str:
    """report.md: the objective, the best trial, and every trial sorted by objective."""
    obj, data, best = metrics["objective"], metrics["data"], metrics["best"]
    keys = list(metrics["space"])
    split = data.get("split") or {}
    lines = [
        f"# Hyperparameter search: `{metrics['guard']}`",
        "",
        f"Data `{data.get('source', '?')}`, split `{split.get('split_by', 'auto')}` (seed "
        f"{split.get('split_seed', '?')}): {data['sizes']['train']} training and {data['sizes']['val']} "
        "validation samples.",
        "",
        "**The test split was not read.** The search withholds it before anything is fitted; every trial is "
        "fitted on the training split and scored on the validation split only, so the test split stays "
        "untouched for the final evaluation (`mmguard bench`).",
        "",
        f"Objective: `{obj['metric']}` ({'lower' if obj['mode'] == 'min' else 'higher'} is better) — "
        f"{obj['description']}. The validation draw is the training fault mix applied once with a seed derived "
        f"from the fit seed ({metrics['fit_seed']}), the same batch for every trial.",
        "",
        f"{len(metrics['trials'])} trials, search seed {metrics['seed']}, fit seed {metrics['fit_seed']}"
        f"{' (--quick settings)' if metrics['quick'] else ''}, engine `{metrics['engine']}`, scheduler "
        f"`{metrics['scheduler']}`; {metrics['fitted']} fitted in this run, {metrics['reused']} reused from "
        f"trials.jsonl; {metrics['wall_s']:.1f} s.",
        "",
        "Search space: " + ", ".join(f"`{k}` {json.dumps(v)}" for k, v in metrics["space"].items()) + ".",
        "",
    ]
    if metrics.get("asha"):
        lines += [f"ASHA (Ray Tune) scaled `{metrics['asha']['budget']}` over the rungs {metrics['asha']['rungs']} "
                  "epochs; a stopped trial's objective is its value at the epochs it reached (not comparable, "
                  "never the best).", ""]
    if best is None:
        lines += ["No trial has a finite objective: no best configuration was written.", ""]
    else:
        shown = ", ".join(f"`{k}` = {_value(v)}" for k, v in best["params"].items())
        lines += [f"**Best: trial {best['trial']}** ({shown}): `{obj['metric']}` = {best['objective']:.6g}. Its whole "
                  "guard config is `best_config.json`: `mmguard fit --guard "
                  f"{metrics['guard']} --data ... --config best_config.json --seed {metrics['fit_seed']}` fits it "
                  "again (same numbers when the fit seed is also the split seed, the default).", ""]
    lines += ["## Trials, best first", "",
              "| rank | trial | " + " | ".join(f"`{k}`" for k in keys) + f" | {obj['metric']} | status | fit s |",
              "|---|---|" + "---|" * len(keys) + "---|---|---|"]
    for i, r in enumerate(ranked(metrics), 1):
        status = r["status"] + (f" at {r['epochs']} epochs" if "epochs" in r else "")
        if "same_as" in r:
            status += f" (same config as trial {r['same_as']})"
        if r["reused"]:
            status += ", reused"
        lines.append(f"| {i} | {r['trial']} | " + " | ".join(_value(r["params"].get(k)) for k in keys)
                     + f" | {_value(r['objective'])} | {status} | {r['fit_s']:.1f} |")
    lines += ["", "Plot: `objective.png` (objective of each trial, and the best so far in trial order).", ""]
    return "\n".join(lines)


def write_plot(metrics: dict[str, Any], out: Path) -> Path:
    """objective.png: each trial's objective, stopped trials hollow, and the running best (trial order)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = metrics["trials"]
    obj = metrics["objective"]
    ks = np.array([r["trial"] for r in rows])
    vals = np.array([np.nan if r["objective"] is None else r["objective"] for r in rows], dtype=float)
    complete = np.array([r["status"] == "complete" for r in rows])
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.scatter(ks[complete], vals[complete], color="tab:blue", label="trial", zorder=3)
    if (~complete).any():
        ax.scatter(ks[~complete], vals[~complete], facecolors="none", edgecolors="tab:gray",
                   label="stopped (ASHA)", zorder=3)
    scored = np.where(complete, vals, np.nan)
    fill = np.inf if obj["mode"] == "min" else -np.inf
    acc = np.minimum.accumulate if obj["mode"] == "min" else np.maximum.accumulate
    running = acc(np.where(np.isnan(scored), fill, scored))
    running[~np.isfinite(running)] = np.nan
    ax.step(ks, running, where="post", color="tab:orange", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{obj['metric']} ({obj['mode']})")
    ax.set_title(f"{metrics['guard']}: validation objective per trial")
    ax.legend(fontsize=8)
    return save_figure(fig, out / "objective.png", dpi=110, bbox_inches="tight")


def write_outputs(metrics: dict[str, Any], out: Path) -> None:
    """best_config.json (when there is a best trial), objective.png, report.md, then metrics.json."""
    best = metrics["best"]
    if best is not None:
        write_json(out / "best_config.json", best["config"])
    elif (out / "best_config.json").exists():
        (out / "best_config.json").unlink()
    metrics["plots"] = [write_plot(metrics, out).name]
    atomic_write_text(out / "report.md", render_report(metrics))
    write_json(out / "metrics.json", metrics)
