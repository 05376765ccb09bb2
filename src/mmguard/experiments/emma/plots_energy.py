"""Figures for the energy experiments of :mod:`mmguard.experiments.emma.energy_experiments`.

* :func:`plot_manifold_fields` — thesis figures 4.6 and 4.7 in one PNG: per manifold, the
  reconstruction field ``r(x) - x`` (quiver), the potential Psi (eq. 4.7) and the squared
  reconstruction error ``||r(x) - x||^2`` on a grid;
* :func:`plot_potential_vs_noise` — thesis figure 6.1: Psi per mode against the noise level,
  mean line with a band of two standard deviations, plus the noisy-vs-clean AUROC;
* :func:`plot_potential_pos_neg` — thesis figure 6.2: histograms of Psi for test positives and
  negatives under autoencoders trained on positives only.

Matplotlib is used through an Agg canvas (no display, no pyplot state), PNG output only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from mmguard.io.figures import save_figure


def _save(fig: Figure, path: str | Path) -> Path:
    FigureCanvasAgg(fig)
    return save_figure(fig, path)


def plot_manifold_fields(fields: Mapping[str, Mapping[str, Any]], path: str | Path, *,
                         dpi: int = 110) -> Path:
    """One row per manifold: vector field (fig. 4.6), Psi and ||r(x) - x||^2 heatmaps (fig. 4.7).

    ``fields[name]`` holds numpy arrays ``xs`` (gx,), ``ys`` (gy,), ``psi`` and ``rec_err``
    (gy, gx); ``qx``, ``qy`` (coarse quiver grid, 1-D) and ``qu``, ``qv`` (field components on
    it); ``curve`` (K, 2), the manifold drawn as a line; optionally ``centre_radius``. Arrows
    show the direction of ``r(x) - x`` with colour giving log10 of its length, since the length
    spans orders of magnitude between the manifold (near 0) and the box corners.
    """
    names = list(fields)
    fig = Figure(figsize=(14.0, 4.2 * len(names)), dpi=dpi)
    axes = fig.subplots(len(names), 3, squeeze=False)
    for row, name in enumerate(names):
        f = fields[name]
        xs, ys, curve = f["xs"], f["ys"], f["curve"]
        extent = (xs[0], xs[-1], ys[0], ys[-1])
        # vector field, directions only, coloured by magnitude
        ax = axes[row, 0]
        qx, qy = np.meshgrid(f["qx"], f["qy"])
        u, v = np.asarray(f["qu"]), np.asarray(f["qv"])
        mag = np.hypot(u, v)
        unit = np.where(mag > 0, 1.0 / np.maximum(mag, 1e-12), 0.0)
        q = ax.quiver(qx, qy, u * unit, v * unit, np.log10(np.maximum(mag, 1e-6)), cmap="viridis",
                      angles="xy", pivot="mid", scale=20, width=0.005)
        fig.colorbar(q, ax=ax, label="log10 ||r(x) - x||")
        ax.set_title(f"{name}: reconstruction field r(x) - x (fig. 4.6)")
        # potential
        ax = axes[row, 1]
        im = ax.imshow(f["psi"], origin="lower", extent=extent, aspect="auto", cmap="magma")
        fig.colorbar(im, ax=ax, label="Psi(x)")
        ax.set_title(f"{name}: potential Psi (eq. 4.7)")
        # reconstruction error, log colour scale
        ax = axes[row, 2]
        err = np.maximum(np.asarray(f["rec_err"]), 1e-8)
        im = ax.imshow(err, origin="lower", extent=extent, aspect="auto", cmap="magma",
                       norm=LogNorm(vmin=float(err.min()), vmax=float(err.max())))
        fig.colorbar(im, ax=ax, label="||r(x) - x||^2 (log scale)")
        ax.set_title(f"{name}: reconstruction error ||r(x) - x||^2")
        for ax in axes[row]:
            ax.plot(curve[:, 0], curve[:, 1], color="white" if ax is not axes[row, 0] else "tab:red",
                    lw=0.8, alpha=0.8)
            if f.get("centre_radius"):
                t = np.linspace(0, 2 * np.pi, 200)
                r = float(f["centre_radius"])
                ax.plot(r * np.cos(t), r * np.sin(t), ls="--", color="tab:cyan", lw=0.8)
            ax.set_xlim(xs[0], xs[-1])
            ax.set_ylim(ys[0], ys[-1])
            ax.set_xlabel("x1")
            ax.set_ylabel("x2")
    fig.suptitle("Tied DAE on the manifolds of thesis section 4.3 (first seed); "
                 "line: manifold, dashed: centre region", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def plot_potential_vs_noise(sigmas: Sequence[float], per_mode: Mapping[str, Mapping[str, Sequence[float]]],
                            path: str | Path, *, dpi: int = 110) -> Path:
    """Thesis figure 6.1: Psi on noisy test samples against the corruption sigma, per mode.

    ``per_mode[mode]`` holds ``psi_mean`` and ``psi_std`` (per sigma; the std is over samples)
    and ``auroc_mean``/``auroc_std`` (noisy vs clean, over seeds). Top row: mean (black) and
    mean ± 2 std (red band) as in the thesis; bottom row: the AUROC.
    """
    s = np.asarray(sigmas, dtype=float)
    modes = list(per_mode)
    fig = Figure(figsize=(5.2 * len(modes), 7.0), dpi=dpi)
    axes = fig.subplots(2, len(modes), squeeze=False)
    for col, mode in enumerate(modes):
        d = per_mode[mode]
        mean, std = np.asarray(d["psi_mean"]), np.asarray(d["psi_std"])
        ax = axes[0, col]
        ax.fill_between(s, mean - 2 * std, mean + 2 * std, color="tab:red", alpha=0.3, label="mean ± 2 std")
        ax.plot(s, mean, color="black", marker="o", ms=3, label="mean")
        ax.set_title(f"mode {mode}: potential on noisy test samples")
        ax.set_xlabel("corruption sigma")
        ax.set_ylabel("Psi")
        ax.legend(loc="upper left")
        ax = axes[1, col]
        am, asd = np.asarray(d["auroc_mean"]), np.asarray(d["auroc_std"])
        ax.errorbar(s, am, yerr=asd, color="tab:blue", marker="o", ms=3, capsize=2)
        ax.axhline(0.5, color="grey", ls=":", lw=0.8)
        ax.set_ylim(0.4, 1.02)
        ax.set_title(f"mode {mode}: AUROC of Psi, noisy vs clean")
        ax.set_xlabel("corruption sigma")
        ax.set_ylabel("AUROC (mean ± std over seeds)")
    fig.suptitle("Potential energy vs failure intensity on HTRU2 (thesis figure 6.1)", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def plot_potential_pos_neg(per_mode: Mapping[str, Mapping[str, Any]], path: str | Path, *,
                           dpi: int = 110, bins: int = 60) -> Path:
    """Thesis figure 6.2: Psi of test positives and negatives, DAEs trained on positives only.

    ``per_mode[mode]`` holds arrays ``psi_pos`` and ``psi_neg`` (one model) and optionally
    ``auroc`` (mean, std). The x range is the 0.5–99.5 % quantile range of both sets; values
    outside it are clipped into the edge bins, so the heavy right tail stays visible.
    """
    modes = list(per_mode)
    fig = Figure(figsize=(5.2 * len(modes), 3.8), dpi=dpi)
    axes = fig.subplots(1, len(modes), squeeze=False)[0]
    for ax, mode in zip(axes, modes, strict=True):
        d = per_mode[mode]
        pos, neg = np.asarray(d["psi_pos"], dtype=float), np.asarray(d["psi_neg"], dtype=float)
        lo, hi = np.quantile(np.concatenate([pos, neg]), [0.005, 0.995])
        if not hi > lo:
            hi = lo + 1.0
        edges = np.linspace(lo, hi, bins + 1)
        for vals, label, colour in ((pos, "positive (in-distribution)", "tab:blue"),
                                    (neg, "negative (out-of-distribution)", "tab:orange")):
            ax.hist(np.clip(vals, lo, hi), bins=edges, density=True, alpha=0.55, color=colour, label=label)
        title = f"mode {mode}"
        if "auroc" in d:
            m, sd = d["auroc"]
            title += f": AUROC {m:.3f} ± {sd:.3f}"
        ax.set_title(title)
        ax.set_xlabel("Psi (clipped to the 0.5-99.5 % range)")
        ax.set_ylabel("density")
        ax.legend(fontsize=8)
    fig.suptitle("Potential of test samples, DAEs trained on positives only (thesis figure 6.2)", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)
