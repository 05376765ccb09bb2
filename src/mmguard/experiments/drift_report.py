"""The drift section of a benchmark report and its plot (``drift.png``), read from ``metrics["drift"]``
(:func:`mmguard.experiments.drift_eval.summarise_drift`). Mean ± std over seeds throughout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmguard.io.figures import save_figure

KIND_NOTE = {"id": "in-distribution", "dev": "development (selects)", "report": "report",
             "synthetic": "synthetic drift"}


def _ms(stat: Any, digits: int = 3) -> str:
    return "–" if stat is None else f"{stat[0]:.{digits}f} ± {stat[1]:.{digits}f}"


def render_drift(metrics: dict[str, Any]) -> list[str]:
    drift = metrics.get("drift")
    if not drift:
        return []
    det = drift["detector"]
    lines = ["## Drift: detection", "",
             f"Per-modality MMD test of the last {det['window']} samples every {det['step']} new samples, "
             f"calibrated to α = {det['alpha']} false alarms per test on in-distribution windows "
             "(docs/drift.md). Delay = stream samples seen at the first alarm (fresh stream per part).", ""]
    if det.get("id"):
        i = det["id"]
        lines += [f"In-distribution part ({i['samples']} samples, shuffled streams): false alarms per test "
                  f"{_ms(i.get('false_alarm_rate'), 4)}; streams with any alarm {_ms(i.get('streams_with_alarm'), 3)}.",
                  ""]
    if det["parts"]:
        lines += ["| part | samples | detected (seeds) | delay (samples) | worst delay | tests alarmed | "
                  "tests alarmed without the drift |", "|---|---|---|---|---|---|---|"]
        for label, r in det["parts"].items():
            lines.append(f"| {label} | {r['samples']} | {r['detected']}/{r['seeds']} | {_ms(r.get('delay'), 1)} | "
                         f"{r.get('max_delay', '–')} | {_ms(r.get('alarm_share'))} | "
                         f"{_ms(r.get('clean_alarm_share'))} |")
        lines.append("")
    for sname, stream in drift["streams"].items():
        for task, t in stream["tasks"].items():
            metric = "MAE (lower is better)" if t["metric"] == "mae" else "F1 (macro for multi-class)"
            parts = list(t["kinds"])
            lines += [f"## Drift: downstream task `{task}` on stream `{sname}` — {metric}", "",
                      "Parts: " + ", ".join(f"`{p}` ({KIND_NOTE[t['kinds'][p]]})" for p in parts) + ". "
                      "`drifted` = mean over every part but the in-distribution one; `report` = over the report "
                      "(or synthetic) parts; `id loss` = in-distribution metric of `none` minus the option's "
                      "(paired per seed); `− none` = paired per-seed difference on the drifted parts.", "",
                      "| option | " + " | ".join(parts) + " | drifted | report | − none (drifted) | id loss |",
                      "|---|" + "---|" * (len(parts) + 4)]
            for option, row in t["options"].items():
                cells = [_ms(row["parts"].get(p)) for p in parts]
                lines.append(f"| {option} | " + " | ".join(cells) + f" | {_ms(row.get('drifted'))} | "
                             f"{_ms(row.get('report'))} | {_ms(row.get('drifted_minus_none'))} | "
                             f"{_ms(row.get('id_loss'))} |")
            sel = t["selected"]
            if sel:
                lines += ["", f"Selected on the development parts (in-distribution loss ≤ tolerance): **{sel}**; "
                          f"on the report parts {_ms(t['options'][sel].get('report'))}.", ""]
            else:
                lines += ["", "No option selected: this stream has no development parts (`--dev-groups`) or no "
                          "option met the in-distribution tolerance.", ""]
        if stream["flagged"]:
            parts = list(next(iter(stream["flagged"].values())))
            lines += [f"Share of samples a guard flags on stream `{sname}` (as trained / with statistics adaptation):",
                      "", "| guard:option | " + " | ".join(parts) + " |", "|---|" + "---|" * len(parts)]
            for option, row in stream["flagged"].items():
                lines.append(f"| {option} | " + " | ".join(_ms(row[p]) for p in parts) + " |")
            lines.append("")
    return lines


def write_drift_plot(metrics: dict[str, Any], out: Path) -> list[Path]:
    """drift.png: the metric per part for every option, one panel per stream and task."""
    drift = metrics.get("drift")
    if not drift:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    panels = [(s, t, d) for s, st in drift["streams"].items() for t, d in st["tasks"].items()]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.6), squeeze=False)
    for ax, (sname, task, d) in zip(axes[0], panels, strict=True):
        parts = list(d["kinds"])
        options = list(d["options"])
        x = np.arange(len(parts))
        width = 0.85 / len(options)
        for k, o in enumerate(options):
            vals = [d["options"][o]["parts"].get(p) for p in parts]
            ax.bar(x + k * width, [v[0] if v else np.nan for v in vals], width,
                   yerr=[v[1] if v else 0 for v in vals], capsize=2, label=o)
        ax.set_xticks(x + 0.425 - width / 2, parts, fontsize=8)
        ax.set_title(f"{sname}: {task} ({d['metric']})", fontsize=9)
    axes[0][0].legend(fontsize=6, ncol=2)
    return [save_figure(fig, out / "drift.png", dpi=110, bbox_inches="tight")]
