"""The energy experiments of the EMMA thesis, with numbers instead of pictures only.

:func:`run_manifold_experiment` — thesis section 4.3 ("Experiment I" of chapter 4, figures
4.6 and 4.7). Tied denoising autoencoders (:class:`~mmguard.emma.potential.TiedDAE`, 8 hidden
units, 25 epochs, batch 100, corruption sigma 0.008, Adam 1e-3) are trained on the wave and
circle manifolds. Besides the figures, the thesis's claim is measured: both the potential Psi
(eq. 4.7) and the reconstruction error ``||r(x) - x||^2`` should be low on the manifold and high
elsewhere, but the reconstruction error has a source at the circle's origin (fig. 4.6b) and is
therefore low there too, while Psi is not. Measured as AUROCs (positive = off the manifold):

* ``auroc_off_manifold`` — fresh on-manifold draws vs points uniform in the plot box at distance
  > :data:`OFF_MANIFOLD_MIN_DIST` from the manifold (distance to a dense sampling of the curve);
* ``auroc_centre`` (circle) — on-manifold draws vs points uniform in the disc of radius
  ``centre_radius`` around the origin;
* ``origin_rank`` (circle) — the same for the single point x = 0: the fraction of on-manifold
  points scoring below the origin (ties count half);
* ``centre_min_rank`` (circle) — the same for the *lowest*-scoring point of the centre disc
  (searched on a lattice of spacing ``centre_radius / 100``): the worst case inside the disc,
  which is where a source of the field (a zero of ``r(x) - x``) shows up.

A rank near 1 means the estimator ranks that point above (almost) every on-manifold point; near
0, it would pass for a manifold point.

:func:`run_failure_intensity` — thesis section 6.2 ("Experiment I" of chapter 6, figures 6.1
and 6.2) on standardized HTRU2 with appendix B.1 settings (12 hidden units, 30 epochs, batch 64,
denoising sigma 0.01, Adam 1e-3): (a) Psi per mode on the test split with Gaussian noise of
growing sigma added to that mode, DAEs trained on the clean training split; (b) Psi per mode
when the DAEs are trained on positive training samples only, negatives of the test split being
out of distribution. Every number comes from training on ``train`` and scoring ``test``;
nothing is tuned. ``val`` is not used.

All members of an experiment (one per seed) are trained together as one batched ensemble
(:func:`~mmguard.emma.potential.fit_dae`); every AUROC is computed per member with the
vectorized :func:`~mmguard.eval.metrics.binary_auroc` and reported as ``[mean, std]`` over seeds
(population std, ``ddof=0``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmguard.data.splits import Splits
from mmguard.data.synthetic import MANIFOLDS, make_manifold
from mmguard.emma.potential import TiedDAE, fit_dae
from mmguard.eval.metrics import binary_auroc
from mmguard.eval.stats import mean_std
from mmguard.experiments.emma.plots_energy import (
    plot_manifold_fields,
    plot_potential_pos_neg,
    plot_potential_vs_noise,
)
from mmguard.faults import apply_faults, single_fault_spec
from mmguard.io.checkpoint import write_json

#: Plot box ((x1_min, x1_max), (x2_min, x2_max)) per manifold; off-manifold points are drawn in it.
MANIFOLD_BOX: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "wave": ((-4.5, 4.5), (-2.5, 2.5)),
    "circle": ((-4.5, 4.5), (-4.5, 4.5)),
}
#: Minimum distance to the manifold for a point of the box to count as off-manifold.
OFF_MANIFOLD_MIN_DIST = 0.5
#: Radius of the "near the centre" region of the circle (the circle itself has radius 3).
CENTRE_RADIUS = 1.0
#: Entropy tag of the evaluation-set generator; independent of the members' training seeds.
EVAL_TAG = 0x454E45  # "ENE"
ESTIMATORS = ("potential", "reconstruction_error")


# ----------------------------------------------------------------------------------- helpers
def curve_points(name: str, t: torch.Tensor) -> torch.Tensor:
    """Manifold points at parameters t (thesis section 4.3): (K,) → (K, 2) float32.

    wave: (t − π, sin t); circle: (3 sin t, 3 cos t). Matches :func:`make_manifold` for the
    same t (tested).
    """
    t = t.double()
    if name == "wave":
        pts = torch.stack([t - math.pi, torch.sin(t)], dim=1)
    elif name == "circle":
        pts = torch.stack([3.0 * torch.sin(t), 3.0 * torch.cos(t)], dim=1)
    else:
        raise ValueError(f"unknown manifold {name!r}; known: {list(MANIFOLDS)}")
    return pts.float()


def dense_curve(name: str, n: int = 4096) -> torch.Tensor:
    """``n`` manifold points at t evenly spaced over [0, 2π] (ends included)."""
    return curve_points(name, torch.linspace(0.0, 2.0 * math.pi, n, dtype=torch.float64))


def distance_to_curve(points: torch.Tensor, curve: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """Euclidean distance of each point (N, 2) to the nearest point of ``curve`` (K, 2). (N,)"""
    out = [torch.cdist(points[i:i + chunk].double(), curve.double()).amin(dim=1)
           for i in range(0, points.shape[0], chunk)]
    return torch.cat(out).float() if out else torch.zeros(0)


def _uniform_box(box, n: int, gen: torch.Generator) -> torch.Tensor:
    lo = torch.tensor([box[0][0], box[1][0]], dtype=torch.float64)
    hi = torch.tensor([box[0][1], box[1][1]], dtype=torch.float64)
    return (lo + (hi - lo) * torch.rand(n, 2, generator=gen, dtype=torch.float64)).float()


def sample_off_manifold(name: str, n: int, gen: torch.Generator, *, min_dist: float = OFF_MANIFOLD_MIN_DIST,
                        curve: torch.Tensor | None = None) -> torch.Tensor:
    """``n`` points uniform in :data:`MANIFOLD_BOX` [name] at distance > ``min_dist`` from the
    manifold (rejection sampling against a dense sampling of the curve). (n, 2)"""
    curve = dense_curve(name) if curve is None else curve
    kept: list[torch.Tensor] = []
    count = 0
    while count < n:
        cand = _uniform_box(MANIFOLD_BOX[name], max(2 * n, 1024), gen)
        cand = cand[distance_to_curve(cand, curve) > min_dist]
        kept.append(cand)
        count += cand.shape[0]
    return torch.cat(kept)[:n]


def sample_disc(n: int, radius: float, gen: torch.Generator) -> torch.Tensor:
    """``n`` points uniform in the disc of ``radius`` around the origin. (n, 2)"""
    u = torch.rand(n, 2, generator=gen, dtype=torch.float64)
    r = radius * torch.sqrt(u[:, 0])
    a = 2.0 * math.pi * u[:, 1]
    return torch.stack([r * torch.cos(a), r * torch.sin(a)], dim=1).float()


def disc_grid(radius: float, step: float) -> torch.Tensor:
    """The points of a square lattice of spacing ``step`` (through the origin) inside the disc. (K, 2)"""
    k = int(math.floor(radius / step))
    ax = torch.arange(-k, k + 1, dtype=torch.float64) * step
    gx, gy = torch.meshgrid(ax, ax, indexing="xy")
    pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)
    return pts[pts.norm(dim=1) < radius].float()


def _scores(dae: TiedDAE, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Both estimators for inputs (N, L) shared by all members → {name: (G, N)}."""
    xg = x.unsqueeze(0).expand(dae.ensemble_size, -1, -1)
    with torch.no_grad():
        return {"potential": dae.potential(xg), "reconstruction_error": dae.reconstruction_error(xg)}


def _auroc_vs(neg: dict[str, torch.Tensor], pos: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    """Per estimator, [mean, std] over members of the AUROC for pos (label 1) vs neg (label 0)."""
    out = {}
    for est in ESTIMATORS:
        s = torch.cat([neg[est], pos[est]], dim=1)
        y = torch.cat([torch.zeros(neg[est].shape[1]), torch.ones(pos[est].shape[1])])
        out[est] = mean_std(binary_auroc(s, y), ddof=0)
    return out


# ------------------------------------------------------------------------- manifolds (4.3)
def run_manifold_experiment(
    out_dir: str | Path,
    *,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    n_train: int = 2000,
    epochs: int = 25,
    hidden: int = 8,
    sigma: float = 0.008,
    batch_size: int = 100,
    lr: float = 1e-3,
    grid_size: int = 60,
    centre_radius: float = CENTRE_RADIUS,
    n_eval: int | None = None,
    quick: bool = False,
) -> dict[str, Any]:
    """Thesis section 4.3: tied DAEs on the wave and circle manifolds, figures 4.6/4.7 and AUROCs.

    One member per seed is trained on its own draw of ``n_train`` manifold points
    (``make_manifold(name, n_train, seed)``), all members together via :func:`fit_dae` with the
    section 4.3 settings. The members are scored on one evaluation set per manifold drawn from a
    generator independent of the training seeds: ``n_eval`` fresh on-manifold points, ``n_eval``
    off-manifold points (see :func:`sample_off_manifold`) and, for the circle, ``n_eval`` points
    of the centre disc. See the module docstring for the reported AUROCs.

    Writes ``manifold_fields.png`` (first seed's member; quiver of r(x) − x, heatmaps of Psi and of
    ``||r(x) − x||^2`` on a ``grid_size``² grid) and ``manifold_experiment.json`` (the returned
    dict) to ``out_dir``. ``quick`` only shrinks the evaluation (``n_eval`` 1000 instead of 5000,
    grid ≤ 30); training is unchanged. Each manifold's entry also carries the last epoch's mean
    training loss and the noise-free reconstruction MSE on the training data (``[mean, std]``),
    to show whether the members converged.

    Training budget: the thesis gives no sample count. With ``n_train=2000`` its 25 epochs are
    only 500 Adam steps, after which the circle members have not converged (reconstruction MSE
    ≈ 0.7 instead of ≈ 1e-3) and neither estimator shows the structure of figures 4.6/4.7;
    ``n_train=20000`` (5,000 steps, same hyperparameters) reproduces it.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("need at least one seed")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_eval = int(n_eval) if n_eval is not None else (1000 if quick else 5000)
    grid_size = min(grid_size, 30) if quick else grid_size
    n_quiver = 15 if quick else 21
    result: dict[str, Any] = {}
    fields: dict[str, dict[str, Any]] = {}
    for k, name in enumerate(MANIFOLDS):
        data = torch.stack([make_manifold(name, n_train, seed=s) for s in seeds])  # (G, N, 2)
        dae = TiedDAE(seeds, 2, hidden=hidden, stream=2 * k)
        history = fit_dae(dae, data, seeds, epochs=epochs, batch_size=batch_size, sigma=sigma, lr=lr,
                          stream=2 * k + 1)
        dae.eval()
        with torch.no_grad():  # noise-free per-member loss on its own training data
            final_loss = ((dae.reconstruct(data) - data) ** 2).sum(-1).mean(-1)

        gen = torch.Generator().manual_seed(EVAL_TAG * 16 + k)
        curve = dense_curve(name)
        on = curve_points(name, 2.0 * math.pi * torch.rand(n_eval, generator=gen, dtype=torch.float64))
        off = sample_off_manifold(name, n_eval, gen, curve=curve)
        s_on, s_off = _scores(dae, on), _scores(dae, off)
        entry: dict[str, Any] = {
            "auroc_off_manifold": _auroc_vs(s_on, s_off),
            "train_loss_last_epoch": float(history[-1]),
            "clean_reconstruction_mse": mean_std(final_loss, ddof=0),
        }
        if name == "circle":
            centre = sample_disc(n_eval, centre_radius, gen)
            s_c = _scores(dae, centre)
            s_origin = _scores(dae, torch.zeros(1, 2))
            s_dense = _scores(dae, disc_grid(centre_radius, step=centre_radius / 100))
            s_min = {est: s_dense[est].amin(dim=1, keepdim=True) for est in ESTIMATORS}
            entry["auroc_centre"] = _auroc_vs(s_on, s_c)
            entry["origin_rank"] = _auroc_vs(s_on, s_origin)
            entry["centre_min_rank"] = _auroc_vs(s_on, s_min)
        result[name] = entry

        # fields of the first member for the figure
        (x0, x1), (y0, y1) = MANIFOLD_BOX[name]
        xs, ys = np.linspace(x0, x1, grid_size), np.linspace(y0, y1, grid_size)
        gx, gy = np.meshgrid(xs, ys)
        grid = torch.as_tensor(np.stack([gx.ravel(), gy.ravel()], axis=1), dtype=torch.float32)
        n_qy = max(5, round(n_quiver * (y1 - y0) / (x1 - x0)))
        qxs, qys = np.linspace(x0, x1, n_quiver), np.linspace(y0, y1, n_qy)
        qx, qy = np.meshgrid(qxs, qys)
        qgrid = torch.as_tensor(np.stack([qx.ravel(), qy.ravel()], axis=1), dtype=torch.float32)
        with torch.no_grad():
            psi = dae.potential(grid.unsqueeze(0).expand(len(seeds), -1, -1))[0]
            err = dae.reconstruction_error(grid.unsqueeze(0).expand(len(seeds), -1, -1))[0]
            qg = qgrid.unsqueeze(0).expand(len(seeds), -1, -1)
            vec = (dae.reconstruct(qg) - qg)[0]
        fields[name] = {
            "xs": xs, "ys": ys, "curve": curve.numpy(),
            "psi": psi.reshape(len(ys), len(xs)).numpy(), "rec_err": err.reshape(len(ys), len(xs)).numpy(),
            "qx": qxs, "qy": qys,
            "qu": vec[:, 0].reshape(len(qys), len(qxs)).numpy(),
            "qv": vec[:, 1].reshape(len(qys), len(qxs)).numpy(),
            "centre_radius": centre_radius if name == "circle" else None,
        }

    plot_manifold_fields(fields, out / "manifold_fields.png", dpi=80 if quick else 110)
    result["settings"] = {
        "seeds": seeds, "n_train": n_train, "epochs": epochs, "hidden": hidden, "sigma": sigma,
        "batch_size": batch_size, "lr": lr, "optimizer": "Adam", "grid_size": grid_size, "n_eval": n_eval,
        "box": {m: [list(v) for v in b] for m, b in MANIFOLD_BOX.items()},
        "off_manifold_min_dist": OFF_MANIFOLD_MIN_DIST, "centre_radius": centre_radius,
        "positive_class": "off-manifold / centre points", "quick": quick,
        "figure": "manifold_fields.png (member of the first seed)",
    }
    write_json(out / "manifold_experiment.json", result)
    return result


# ------------------------------------------------------------------------------ HTRU2 (6.2)
def _subsample(n: int, cap: int | None, gen: torch.Generator) -> torch.Tensor:
    if cap is None or n <= cap:
        return torch.arange(n)
    return torch.sort(torch.randperm(n, generator=gen)[:cap]).values


def run_failure_intensity(
    splits: Splits,
    out_dir: str | Path,
    *,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    sigmas: Sequence[float] | np.ndarray = tuple(np.linspace(0.0, 3.0, 13)),
    modalities: Sequence[str] = ("ip", "dm"),
    hidden: int = 12,
    epochs: int = 30,
    batch_size: int = 64,
    dae_sigma: float = 0.01,
    lr: float = 1e-3,
    quick: bool = False,
) -> dict[str, Any]:
    """Thesis section 6.2 on HTRU2: the potential as a measure of failure intensity (figs 6.1, 6.2).

    ``splits`` are standardized with train statistics (:meth:`Splits.standardize`; a no-op if
    already done). Per mode, one member per seed, appendix B.1 settings.

    (a) *Noisy values* (fig. 6.1): DAEs trained on the clean training split. For every
    ``sigma``, the test split gets ``gaussian_noise(sigma)`` on that mode only, on all samples
    (:func:`mmguard.faults.apply_faults`, fault seed = the member's seed — the same noise draw
    at every sigma, so curves are monotone in the draw, not just on average). Reported per
    sigma: the mean and the std over test samples of Psi, averaged over members
    (``psi_mean``, ``psi_std``), the std over members of the sample mean (``psi_mean_seed_std``)
    and the AUROC of Psi separating the noisy test samples from the same samples clean
    (``auroc_noisy_vs_clean``: ``mean``/``std`` over members; 0.5 at sigma = 0).

    (b) *Out-of-distribution samples* (fig. 6.2): DAEs trained on the positive (pulsar) training
    samples only; AUROC of Psi for separating test negatives (label 1, out of distribution)
    from test positives, ``[mean, std]`` over members, plus the mean Psi of both groups.

    Writes ``potential_vs_noise.png``, ``potential_pos_neg.png`` (first seed's member) and
    ``failure_intensity.json`` (the returned dict). ``quick`` (smoke tests) scores a fixed random
    subset of 1000 test samples and trains part (a) on a fixed random subset of 3000 training
    samples; part (b) keeps all training positives, and the epochs are unchanged.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("need at least one seed")
    sigmas = [float(s) for s in np.asarray(sigmas, dtype=float).reshape(-1)]
    if any(s < 0 for s in sigmas):
        raise ValueError(f"noise sigmas must be >= 0, got {sigmas}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    splits = splits.standardize()
    train, test = splits.train, splits.test
    if train.target is None or test.target is None:
        raise ValueError("run_failure_intensity needs a binary target (positives = class 1)")
    pos_train = train.target.reshape(-1) == 1
    train_pos = train.select(pos_train)
    if quick:
        sub = torch.Generator().manual_seed(EVAL_TAG)
        train = train.select(_subsample(len(train), 3000, sub))
        test = test.select(_subsample(len(test), 1000, sub))
    g_count = len(seeds)
    y_test = test.target.reshape(-1) == 1
    if int(y_test.sum()) == 0 or int((~y_test).sum()) == 0:
        raise ValueError("the test split needs both classes for the out-of-distribution AUROC")
    if len(train_pos) == 0:
        raise ValueError("the training split has no positive samples for the out-of-distribution part")

    noise_result: dict[str, Any] = {}
    ood_result: dict[str, Any] = {}
    hist: dict[str, dict[str, Any]] = {}
    for k, mode in enumerate(modalities):
        x_train = train.flat(mode).float()
        x_test = test.flat(mode).float()
        dim = x_train.shape[1]
        # (a) clean training split, noisy test split
        dae = TiedDAE(seeds, dim, hidden=hidden, stream=100 + 4 * k)
        fit_dae(dae, x_train, seeds, epochs=epochs, batch_size=batch_size, sigma=dae_sigma, lr=lr,
                stream=101 + 4 * k)
        dae.eval()
        with torch.no_grad():
            psi_clean = dae.potential(x_test.unsqueeze(0).expand(g_count, -1, -1))  # (G, N)
        n = x_test.shape[0]
        labels = torch.cat([torch.zeros(n), torch.ones(n)])
        keys = ("psi_mean", "psi_std", "psi_mean_seed_std", "auroc_mean", "auroc_std")
        rows: dict[str, list[float]] = {key: [] for key in keys}
        for s in sigmas:
            spec = single_fault_spec(mode, "gaussian_noise", {"sigma": s}, rate=1.0)
            noisy = torch.stack([apply_faults(test, spec, seed=seed).flat(mode).float() for seed in seeds])
            with torch.no_grad():
                psi = dae.potential(noisy)  # (G, N)
            au = binary_auroc(torch.cat([psi_clean, psi], dim=1), labels)
            p64 = psi.double()
            rows["psi_mean"].append(float(p64.mean(1).mean()))
            rows["psi_std"].append(float(p64.std(1, correction=0).mean()))
            rows["psi_mean_seed_std"].append(float(p64.mean(1).std(correction=0)))
            rows["auroc_mean"].append(float(au.mean()))
            rows["auroc_std"].append(float(au.double().std(correction=0)))
        noise_result[mode] = {
            "psi_mean": rows["psi_mean"], "psi_std": rows["psi_std"],
            "psi_mean_seed_std": rows["psi_mean_seed_std"],
            "auroc_noisy_vs_clean": {"mean": rows["auroc_mean"], "std": rows["auroc_std"]},
        }
        # (b) positives only
        dae_pos = TiedDAE(seeds, dim, hidden=hidden, stream=102 + 4 * k)
        fit_dae(dae_pos, train_pos.flat(mode).float(), seeds, epochs=epochs, batch_size=batch_size,
                sigma=dae_sigma, lr=lr, stream=103 + 4 * k)
        dae_pos.eval()
        with torch.no_grad():
            psi_t = dae_pos.potential(x_test.unsqueeze(0).expand(g_count, -1, -1))  # (G, N)
        au_ood = binary_auroc(psi_t, (~y_test).long())
        ood_result[mode] = {
            "auroc": mean_std(au_ood, ddof=0),
            "psi_pos_mean": mean_std(psi_t[:, y_test].double().mean(1), ddof=0),
            "psi_neg_mean": mean_std(psi_t[:, ~y_test].double().mean(1), ddof=0),
        }
        hist[mode] = {"psi_pos": psi_t[0, y_test].numpy(), "psi_neg": psi_t[0, ~y_test].numpy(),
                      "auroc": ood_result[mode]["auroc"]}

    plot_potential_vs_noise(
        sigmas, {m: {"psi_mean": d["psi_mean"], "psi_std": d["psi_std"],
                     "auroc_mean": d["auroc_noisy_vs_clean"]["mean"],
                     "auroc_std": d["auroc_noisy_vs_clean"]["std"]} for m, d in noise_result.items()},
        out / "potential_vs_noise.png", dpi=80 if quick else 110)
    plot_potential_pos_neg(hist, out / "potential_pos_neg.png", dpi=80 if quick else 110)
    result = {
        "noise": {"sigmas": sigmas, **noise_result},
        "ood": {**ood_result, "n_test_positive": int(y_test.sum()), "n_test_negative": int((~y_test).sum()),
                "n_train_positive": len(train_pos),
                "positive_class": "negatives (non-pulsars) = out of distribution"},
        "settings": {
            "seeds": seeds, "modalities": list(modalities), "hidden": hidden, "epochs": epochs,
            "batch_size": batch_size, "dae_sigma": dae_sigma, "lr": lr, "optimizer": "Adam",
            "n_train": len(train), "n_test": len(test), "standardized_on": "train", "quick": quick,
            "noise": "gaussian_noise on one mode of every test sample; fault seed = member seed",
            "figures": ["potential_vs_noise.png", "potential_pos_neg.png (member of the first seed)"],
        },
    }
    write_json(out / "failure_intensity.json", result)
    return result
