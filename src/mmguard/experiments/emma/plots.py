"""PNG figures of EMMA's Experiment II (thesis figures 6.7-6.10), from metrics.json alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mmguard.io.figures import save_figure  # noqa: E402

COLORS = {"base": "tab:gray", "without": "tab:orange", "with": "tab:blue"}


def _band(ax, x, ms, label, color, ls="-"):
    a = np.asarray(ms, dtype=float)
    ax.plot(x, a[:, 0], ls, label=label, color=color, marker="o", ms=3)
    ax.fill_between(x, a[:, 0] - a[:, 1], a[:, 0] + a[:, 1], color=color, alpha=0.15)


def plot_sweeps(metrics: dict[str, Any], out: Path) -> Path:
    """Figures 6.8-6.10: F1 and attention beta with one modality swept in noise."""
    sweep = metrics["sweep"]
    names = metrics["modalities"]
    x = np.asarray(sweep["sigma"], dtype=float)
    fig, axes = plt.subplots(2, len(names), figsize=(5 * len(names), 7), squeeze=False)
    for col, name in enumerate(names):
        ax = axes[0, col]
        for key, ms in sweep[name]["f1"].items():
            _band(ax, x, ms, f"model-{key}" if key != "base" else "base-model", COLORS.get(key, None))
        ref = sweep[name]["reference_other_modalities"]
        ax.axhline(ref[0], color="k", ls="--", lw=1, label="MLP without this modality (clean)")
        ax.set_title(f"{name} corrupted at test time")
        ax.set_xlabel("noise sigma (standardised units)")
        ax.set_ylabel("F1 (test)")
        ax.set_ylim(0, 1)
        ax.axvline(metrics.get("train_sigma", 0.5), color="r", lw=0.8, ls=":", label="training sigma")
        ax.legend(fontsize=7)
        ax = axes[1, col]
        for j, other in enumerate(names):
            _band(ax, x, sweep[name]["beta"][other], f"beta[{other}]", f"C{j}")
        ax.set_xlabel("noise sigma on " + name)
        ax.set_ylabel("mean attention beta")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
    fig.suptitle(
        "Robustness generalisation (thesis figs 6.8-6.10), selected model-with, mean ± std over seeds"
    )
    fig.tight_layout()
    path = out / "robustness_sweep.png"
    save_figure(fig, path, dpi=110)
    return path


def plot_total_energy(metrics: dict[str, Any], out: Path) -> Path:
    """Figure 6.7: mean total energy and F1 with every modality corrupted."""
    te = metrics["total_energy"]
    x = np.asarray(te["sigma"], dtype=float)
    fig, ax = plt.subplots(figsize=(6, 4))
    _band(ax, x, te["mean_total_energy"], "mean total energy", "tab:red")
    ax.set_xlabel("noise sigma on every modality")
    ax.set_ylabel("total energy sum_i E_i")
    ax2 = ax.twinx()
    _band(ax2, x, te["f1"], "F1", "tab:blue")
    ax2.set_ylabel("F1 (test)")
    ax2.set_ylim(0, 1)
    rho = te.get("spearman")
    ax.set_title(f"Total energy vs F1 (Spearman {rho:.3f})" if rho is not None else "Total energy vs F1")
    fig.legend(loc="upper center", fontsize=7)
    fig.tight_layout()
    path = out / "total_energy.png"
    save_figure(fig, path, dpi=110)
    return path


def plot_grid(metrics: dict[str, Any], out: Path, key: str = "with") -> Path:
    """Validation weighted F1 of every grid configuration (rho x lambda_c, one panel per lambda_e)."""
    grid = metrics["grid"][key]
    rhos = sorted({g["rho"] for g in grid})
    lcs = sorted({g["lambda_c"] for g in grid})
    les = sorted({g["lambda_e"] for g in grid})
    fig, axes = plt.subplots(1, len(les), figsize=(3.2 * len(les), 3.2), squeeze=False)
    vals = [g["val_weighted_f1"][0] for g in grid]
    vmin, vmax = min(vals), max(vals)
    for k, le in enumerate(les):
        mat = np.full((len(rhos), len(lcs)), np.nan)
        for g in grid:
            if g["lambda_e"] == le:
                mat[rhos.index(g["rho"]), lcs.index(g["lambda_c"])] = g["val_weighted_f1"][0]
        ax = axes[0, k]
        im = ax.imshow(mat, vmin=vmin, vmax=vmax, cmap="viridis", origin="lower")
        ax.set_xticks(range(len(lcs)), [f"{v:g}" for v in lcs], rotation=45, fontsize=7)
        ax.set_yticks(range(len(rhos)), [f"{v:g}" for v in rhos], fontsize=7)
        ax.set_xlabel("lambda_c")
        if k == 0:
            ax.set_ylabel("rho")
        ax.set_title(f"lambda_e={le:g}", fontsize=8)
    fig.colorbar(im, ax=axes[0, -1], fraction=0.05)
    fig.suptitle("Validation weighted F1 per configuration (mean over seeds)")
    fig.tight_layout()
    path = out / f"grid_{key}.png"
    save_figure(fig, path, dpi=110)
    return path
