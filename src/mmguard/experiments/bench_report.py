"""report.md and PNG plots of a benchmark run (:mod:`mmguard.experiments.harness`).

Every number in the report is read from ``metrics.json`` of the same run: mean ± std over
seeds; paired ratios are per-seed ratios, then mean ± std.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmguard.experiments.drift_report import render_drift, write_drift_plot
from mmguard.io.figures import save_figure


def _ms(stat: Any, digits: int = 4) -> str:
    if stat is None:
        return "–"
    if isinstance(stat, dict):
        return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"
    return f"{stat[0]:.{digits}f} ± {stat[1]:.{digits}f}"


def _get(tree: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(tree, dict) or tree.get(k) is None:
            return None
        tree = tree[k]
    return tree


def _error(metrics: dict[str, Any], guard: str, label: str, subset: str) -> Any:
    if guard == "none":
        return _get(metrics["none"], label, "errors", subset, "combined")
    return _get(metrics["guards"][guard]["conditions"], label, "errors", subset, "combined")


def _rows_of(metrics: dict[str, Any], origins: tuple[str, ...]) -> list[str]:
    return [lbl for lbl, o in metrics["condition_origins"].items() if o in origins]


def _split_text(split: dict[str, Any]) -> str:
    if split.get("train_groups"):
        parts = [f"{k} groups {split[f'{k}_groups']}" for k in ("train", "val", "test") if split.get(f"{k}_groups")]
        return f"explicit split by `{split.get('split_by')}`: " + ", ".join(parts)
    return f"split `{split.get('split_by', 'auto')}` (seed {split.get('split_seed', 0)})"


def render_report(metrics: dict[str, Any]) -> str:
    guards = list(metrics["guards"])
    correcting = [g for g in guards if metrics["guards"][g]["capabilities"]["correct"]]
    flagging = [g for g in guards if metrics["guards"][g]["capabilities"]["flag"]]
    predicting = [g for g in guards if metrics["guards"][g]["capabilities"]["predict"]]
    ref = metrics.get("reference")
    data = metrics.get("data", {})
    lines = [
        "# Benchmark report",
        "",
        f"Data: `{data.get('source', '?')}`; {_split_text(data.get('split') or {})}; sizes {data.get('sizes')}; "
        f"seeds {metrics['seeds']}. Values are mean ± std over seeds. Errors are MSE per sample in the "
        "training split's standardised units against the clean input, summed over modalities (combined).",
        "",
    ]
    if correcting:
        lines += ["## Correction: combined error (clean test / faulty samples of the trained mix)", "",
                  "| guard | clean | faulty (mix) | faulty / none (paired) |"
                  + (f" faulty / {ref} (paired) |" if ref else ""),
                  "|---|---|---|---|" + ("---|" if ref else "")]
        lines.append(f"| none (input as is) | {_ms(_error(metrics, 'none', 'clean', 'all'))} | "
                     f"{_ms(_error(metrics, 'none', 'mix', 'faulty'))} | 1 |" + (" – |" if ref else ""))
        for g in correcting:
            r = metrics["paired_ratios"].get(g, {}).get("mix", {})
            row = (f"| {g} | {_ms(_error(metrics, g, 'clean', 'all'))} | {_ms(_error(metrics, g, 'mix', 'faulty'))}"
                   f" | {_ms(r.get('vs_none'), 3)} |")
            if ref:
                row += f" {_ms(r.get(f'vs_{ref}'), 3)} |" if g != ref else " 1 |"
            lines.append(row)
        lines.append("")
    if flagging:
        lines += ["## Detection (trained mix on test; false alarms on the clean test split)", "",
                  "| guard | AUROC | F1 | detection rate | false alarms (clean test) | localisation |",
                  "|---|---|---|---|---|---|"]
        for g in flagging:
            mix = _get(metrics["guards"][g]["conditions"], "mix", "detection") or {}
            far = _get(metrics["guards"][g]["conditions"], "clean", "detection", "false_alarm_rate")
            lines.append(f"| {g} | {_ms(mix.get('auroc'), 3)} | {_ms(mix.get('f1'), 3)} | "
                         f"{_ms(mix.get('detection_rate'), 3)} | {_ms(far, 3)} | {_ms(mix.get('localisation'), 3)} |")
        lines.append("")
    if predicting:
        lines += ["## Prediction (F1 of the guard's own prediction)", "", "| guard | clean | mix |", "|---|---|---|"]
        for g in predicting:
            c = metrics["guards"][g]["conditions"]
            lines.append(f"| {g} | {_ms(_get(c, 'clean', 'prediction', 'f1'), 3)} | "
                         f"{_ms(_get(c, 'mix', 'prediction', 'f1'), 3)} |")
        lines.append("")
    for g, rows in (metrics.get("attention") or {}).items():
        if not rows:
            continue
        lines += [f"## Attention of `{g}` on the failed modality", "",
                  "Mean attention weight on the modality a family fails, under the fault and on clean input; the "
                  "ratio is paired per seed (below 0.5: the weight fell by at least half), over the seeds where the "
                  "modality's clean weight is at least 0.01 (their number in brackets when not all: on the others the "
                  "guard has switched the modality off).", "",
                  "| condition | origin | modality | under the fault | on clean input | ratio | detection rate |",
                  "|---|---|---|---|---|---|---|"]
        for label, r in rows.items():
            n, total = r.get("attended_seeds"), len(metrics["seeds"])
            seeds = "" if n is None or n == total else f" ({n} of {total} seeds)"
            lines.append(f"| {label} | {r['origin']} | {r['modality']} | {_ms(r['failed'], 3)} | "
                         f"{_ms(r['clean'], 3)} | {_ms(r['ratio'], 3)}{seeds} | {_ms(r['detection_rate'], 3)} |")
        lines.append("")
    for task, d in (metrics.get("downstream") or {}).items():
        metric = "MAE" if d["metric"] == "mae" else "F1"
        oracle_clean = d["scores"]["oracle"]["clean"]
        lines += [f"## Downstream task `{task}`: fraction of clean performance retained", ""]
        if not d["retention"]:
            if metric == "MAE" or (oracle_clean is not None and oracle_clean[0] > 0):
                lines += [f"Not reported: the clean model scores {metric} {_ms(oracle_clean, 4)} on clean input, "
                          "but the run has no fault-family conditions (trained, unseen, common cause) to average "
                          "over.", ""]
            else:
                lines += [f"Undefined: the clean model scores {metric} {_ms(oracle_clean, 4)} on clean input, so there "
                          "is no clean performance to retain (for a rare class: the model never predicts it).", ""]
            continue
        rule = ("MAE of the clean model on clean input / MAE of the option" if metric == "MAE"
                else "F1 of the option / F1 of the clean model on clean input")
        groups = list(d["retention"])
        lines += [f"Retention = {rule}, per seed and condition, averaged over the conditions of each group; "
                  "± over seeds. Differences are paired per seed.", "",
                  "| option | clean test | " + " | ".join(groups) + " | vs none (unseen) | vs peer (unseen) |",
                  "|---|---|" + "---|" * (len(groups) + 2)]
        for o in d["scores"]:
            clean = d["scores"][o].get("clean")
            ratio = "–"
            if clean and oracle_clean[0] and clean[0]:
                ratio = f"{(oracle_clean[0] / clean[0]) if metric == 'MAE' else (clean[0] / oracle_clean[0]):.3f}"
            cells = [_ms(d["retention"][g][o]["retention"], 3) for g in groups]
            unseen = d["retention"].get("unseen", {}).get(o, {})
            lines.append(f"| {o} | {ratio} | " + " | ".join(cells)
                         + f" | {_ms(unseen.get('minus_none'), 3)} | {_ms(unseen.get('minus_peer'), 3)} |")
        lines += ["", f"Clean model on clean input (oracle): {metric} {_ms(oracle_clean, 4)}.", ""]
    for title, origins in (("Fault families at rate 1 (trained, unseen, common cause)",
                            ("trained", "unseen", "common_cause")),
                           ("Severity sweeps", ("sweep",)), ("Your fault specs", ("custom",))):
        labels = _rows_of(metrics, origins)
        if not labels:
            continue
        lines += [f"## {title}", "", "Combined error (correcting guards) and detection rate (flagging guards).", "",
                  "| condition | origin | none | " + " | ".join(f"{g} error" for g in correcting)
                  + "".join(f" | {g} detected" for g in flagging) + " |",
                  "|---|---|---|" + "---|" * (len(correcting) + len(flagging))]
        for lbl in labels:
            cells = [_ms(_error(metrics, g, lbl, "all"), 3) for g in correcting]
            cells += [_ms(_get(metrics["guards"][g]["conditions"], lbl, "detection", "detection_rate"), 3)
                      for g in flagging]
            lines.append(f"| {lbl} | {metrics['condition_origins'][lbl]} | "
                         f"{_ms(_error(metrics, 'none', lbl, 'all'), 3)} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += render_drift(metrics)
    lines += ["## Cost", "", "| guard | fit (s) | evaluation of every condition (s) |", "|---|---|---|"]
    for g in guards:
        lines.append(f"| {g} | {_ms(metrics['guards'][g]['fit_s'], 1)} | {_ms(metrics['guards'][g]['eval_s'], 1)} |")
    lines += ["", f"Wall time of this invocation: {metrics.get('wall_s', 0):.1f} s (resumed units cost 0).",
              "", "Plots: " + ", ".join(f"`{p}`" for p in metrics.get("plots", [])), ""]
    return "\n".join(lines)


def write_plots(metrics: dict[str, Any], out: Path) -> list[Path]:
    """errors.png (clean vs faulty per guard), families.png, severity.png (when present)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    guards = [g for g in metrics["guards"] if metrics["guards"][g]["capabilities"]["correct"]]
    paths: list[Path] = []
    tasks = {t: d for t, d in (metrics.get("downstream") or {}).items() if d["retention"]}
    if tasks:
        fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4), squeeze=False)
        for ax, (task, d) in zip(axes[0], tasks.items(), strict=True):
            groups = list(d["retention"])
            options = [o for o in d["scores"] if o != "oracle"]
            x = np.arange(len(groups))
            width = 0.8 / len(options)
            for k, o in enumerate(options):
                vals = [d["retention"][g][o]["retention"] for g in groups]
                ax.bar(x + k * width, [v[0] for v in vals], width, yerr=[v[1] for v in vals], capsize=2, label=o)
            ax.axhline(1.0, color="k", lw=0.8, ls="--")
            ax.set_xticks(x + 0.4 - width / 2, groups)
            ax.set_title(f"{task}: clean performance retained", fontsize=9)
        axes[0][0].set_ylabel("retention (1 = as on clean input)")
        axes[0][0].legend(fontsize=7)
        paths.append(save_figure(fig, out / "downstream.png", dpi=110, bbox_inches="tight"))
    if guards:
        rows = ["none", *guards]
        fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(rows), 3.6))
        x = np.arange(len(rows))
        for k, (subset, label) in enumerate((("clean", "clean test"), ("faulty", "faulty (mix)"))):
            cond, part = ("clean", "all") if subset == "clean" else ("mix", "faulty")
            vals = [_error(metrics, g, cond, part) for g in rows]
            ax.bar(x + (k - 0.5) * 0.38, [v["mean"] if v else np.nan for v in vals], 0.38,
                   yerr=[v["std"] if v else 0 for v in vals], label=label, capsize=3)
        ax.set_xticks(x, rows)
        ax.set_ylabel("combined error (standardised MSE)")
        ax.legend()
        ax.set_title("reconstruction error against the clean input")
        paths.append(save_figure(fig, out / "errors.png", dpi=110, bbox_inches="tight"))
        fams = _rows_of(metrics, ("trained", "unseen", "common_cause"))
        if fams:
            fig, ax = plt.subplots(figsize=(8, 0.32 * len(fams) * (len(rows)) / 2 + 1.5))
            y = np.arange(len(fams))
            h = 0.8 / len(rows)
            for k, g in enumerate(rows):
                vals = [_error(metrics, g, f, "all") for f in fams]
                ax.barh(y + k * h, [v["mean"] if v else np.nan for v in vals], h, label=g)
            ax.set_yticks(y + 0.4 - h / 2, [f"{f} ({metrics['condition_origins'][f]})" for f in fams], fontsize=7)
            ax.set_xscale("log")
            ax.set_xlabel("combined error (log)")
            ax.legend(fontsize=7)
            paths.append(save_figure(fig, out / "families.png", dpi=110, bbox_inches="tight"))
        sweeps = _rows_of(metrics, ("sweep",))
        if sweeps:
            families = sorted({s.split("@")[0] for s in sweeps})
            fig, axes = plt.subplots(1, len(families), figsize=(3.4 * len(families), 3.2), squeeze=False)
            for ax, fam in zip(axes[0], families, strict=True):
                pts = [s for s in sweeps if s.split("@")[0] == fam]
                xs = [float(s.split("@")[1]) for s in pts]
                for g in rows:
                    vals = [_error(metrics, g, s, "all") for s in pts]
                    ax.plot(xs, [v["mean"] if v else np.nan for v in vals], marker="o", label=g)
                ax.set_title(fam, fontsize=8)
                ax.set_xlabel("severity")
                ax.set_yscale("log")
            axes[0][0].set_ylabel("combined error (log)")
            axes[0][0].legend(fontsize=7)
            paths.append(save_figure(fig, out / "severity.png", dpi=110, bbox_inches="tight"))
    return paths + write_drift_plot(metrics, out)
