"""PNG figures of an MMSSL run (matplotlib, Agg; written atomically)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmguard.io.figures import save_figure

MAIN_MODELS = ("mmae", "dae", "mmssl")


def _save(fig, path: Path) -> Path:
    return save_figure(fig, path, dpi=110, bbox_inches="tight")


def _figure(w: float, h: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h))


def plot_errors(metrics: dict[str, Any], out: Path) -> Path:
    """Combined error (mean ± std over seeds) on clean and faulty test samples, every model."""
    models = list(metrics["errors"])
    fig = _figure(max(6.0, 1.1 * len(models)), 3.6)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.38
    for k, split in enumerate(("clean", "faulty")):
        means = [metrics["errors"][m][split]["combined"][0] for m in models]
        stds = [metrics["errors"][m][split]["combined"][1] for m in models]
        ax.bar(
            [i + (k - 0.5) * width for i in range(len(models))],
            means,
            width,
            yerr=stds,
            capsize=2,
            label=split,
        )
    ax.set_xticks(range(len(models)))
    ax.set_xticklabels(models, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("combined error (MSE, standardized)")
    ax.legend()
    ax.set_title("test reconstruction error vs the clean input")
    return _save(fig, out / "errors.png")


def plot_families(metrics: dict[str, Any], out: Path) -> Path:
    """Combined error per fault family (trained vs unseen) for MMAE, DAE and MMSSL, plus detection."""
    fams = metrics["families"]
    labels = list(fams)
    fig = _figure(max(8.0, 0.55 * len(labels)), 6.5)
    ax = fig.add_subplot(2, 1, 1)
    width = 0.27
    for k, m in enumerate(MAIN_MODELS):
        ax.bar(
            [i + (k - 1) * width for i in range(len(labels))],
            [fams[f]["errors"][m]["combined"][0] for f in labels],
            width,
            yerr=[fams[f]["errors"][m]["combined"][1] for f in labels],
            capsize=1.5,
            label=m,
        )
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels([], fontsize=7)
    ax.set_ylabel("combined error")
    ax.legend(fontsize=8)
    ax.set_title("per fault family (rate 1 on the test split); 'unseen' never used in training")
    ax2 = fig.add_subplot(2, 1, 2)
    colors = ["tab:blue" if fams[f]["origin"] == "trained" else "tab:orange" for f in labels]
    ax2.bar(
        range(len(labels)),
        [fams[f]["auroc"][0] for f in labels],
        color=colors,
        yerr=[fams[f]["auroc"][1] for f in labels],
        capsize=1.5,
    )
    ax2.axhline(0.95, color="k", lw=0.8, ls="--")
    ax2.set_ylim(0, 1.02)
    ax2.set_ylabel("detection AUROC")
    ax2.set_xticks(range(len(labels)))
    ax2.set_xticklabels(
        [f"{f} ({fams[f]['origin'][0]})" for f in labels], rotation=60, ha="right", fontsize=7
    )
    return _save(fig, out / "families.png")


def plot_severity(metrics: dict[str, Any], out: Path) -> Path | None:
    sweeps = metrics.get("severity")
    if not sweeps:
        return None
    labels = list(sweeps)
    fig = _figure(3.6 * len(labels), 5.6)
    for i, label in enumerate(labels):
        s = sweeps[label]
        ax = fig.add_subplot(2, len(labels), i + 1)
        values = s["values"] if isinstance(s["values"][0], (int, float)) else [v[0] for v in s["values"]]
        for m in MAIN_MODELS:
            mean = [v[0] for v in s["errors"][m]]
            std = [v[1] for v in s["errors"][m]]
            ax.errorbar(values, mean, yerr=std, marker="o", ms=3, capsize=2, label=m)
        ax.set_xscale("log")
        ax.set_title(f"{label} ({s['origin']})", fontsize=9)
        ax.set_ylabel("combined error", fontsize=8)
        if i == 0:
            ax.legend(fontsize=7)
        ax2 = fig.add_subplot(2, len(labels), len(labels) + i + 1)
        ax2.errorbar(
            values,
            [v[0] for v in s["detection_rate"]],
            yerr=[v[1] for v in s["detection_rate"]],
            marker="o",
            ms=3,
            label="detection rate",
        )
        ax2.errorbar(
            values,
            [v[0] for v in s["auroc"]],
            yerr=[v[1] for v in s["auroc"]],
            marker="s",
            ms=3,
            label="AUROC",
        )
        ax2.set_xscale("log")
        ax2.set_ylim(0, 1.02)
        ax2.set_xlabel("severity", fontsize=8)
        if i == 0:
            ax2.legend(fontsize=7)
    return _save(fig, out / "severity.png")
