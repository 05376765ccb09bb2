"""Model-agnostic geometry of an encoder: local Lipschitz constants, Jacobian variation, fault entropy.

MMSSL explains fault tolerance through first- and second-order sensitivity of each layer
(paper summary: /work/shared/seeds/mmssl-paper-summary.md). This module measures those
quantities for *any* callable ``fn: Tensor(N, ...) -> Tensor(N, ...)`` that processes samples
independently (row-wise), e.g. an encoder in eval mode, a single layer, or a composition.

Definitions
-----------
Local Lipschitz constant
    ``L(x_n) = ||J_fn(x_n)||_2``, the spectral norm of the Jacobian of the flattened output at
    sample ``x_n`` (``sqrt`` of the top eigenvalue of ``JᵀJ``). It is the first-order
    sensitivity term of the paper. Estimated by power iteration on ``JᵀJ`` with
    forward-mode (``torch.func.jvp``) and reverse-mode (``torch.func.vjp``) products. Because
    ``fn`` is row-wise, one batched tangent of shape ``x.shape`` yields every sample's product at
    once: no per-sample loop and no explicit Jacobian.
Jacobian variation (lemma 3.7)
    Input noise ``ε ~ N(0, σ²I)`` changes the effective Lipschitz constant through curvature:
    ``J(x + ε) - J(x)``. We report ``L(x + ε) / L(x)`` and the Frobenius norm of the change,
    estimated with Hutchinson probes: ``||A||_F² = E_v ||A v||²`` for ``v ~ N(0, I)``. The
    reported value is ``sqrt`` of the probe average (consistent, slightly biased low for few
    probes). Probes are shared between the clean and noisy points so the difference is exact
    per probe.
Fault entropy (lemmas 3.1/3.2)
    A localized input perturbation ``x -> x + δ`` moves the latent by ``δz``. With per-coordinate
    energy ``e_i = δz_i²`` and ``p_i = e_i / Σe``, the normalised Shannon entropy
    ``-Σ p log p / log D`` is 1 when the energy is spread evenly (dense "global mixing" layers,
    lemma 3.1) and 0 when it sits in one coordinate (local receptive fields, lemma 3.2). The Gini
    coefficient of ``|δz|``, top-k energy shares and the participation ratio give the same
    picture from other angles.
Distribution distances
    Unbiased RBF-kernel MMD² and the Gaussian Fréchet distance compare latent sets (e.g. clean vs
    corrected codes); t-SNE embeds them for the overlap plots of the paper.

Decisions
---------
* Bad input raises :class:`mmguard.errors.DataError` with a one-line message.
* Every stochastic function takes ``seed`` and draws from its own ``torch.Generator`` (or a
  seeded NumPy/sklearn state), so the same seed gives the same numbers. Independent sub-streams
  are named with :func:`mmguard.seeding.derive_seed`.
* ``fn`` is evaluated in whatever mode the caller left it in (put modules in eval mode first).
  Autograd runs under ``torch.enable_grad()`` even when called inside ``torch.no_grad()``; the
  caller's tensors are never given ``requires_grad``.
* Means/standard deviations over samples use the population std (``unbiased=False``) so a single
  sample is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmguard.errors import DataError
from mmguard.seeding import derive_seed

__all__ = [
    "fault_energy_spread",
    "frechet_distance",
    "jacobian_variation",
    "local_lipschitz",
    "localized_perturbation",
    "mmd_rbf",
    "per_layer_lipschitz",
    "plot_latent_tsne",
    "tsne_embedding",
]

TensorFn = Callable[[torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------------------------
# validation helpers
# ----------------------------------------------------------------------------------------------


def _check_input(x: Any, name: str = "x", *, min_ndim: int = 2) -> torch.Tensor:
    """``x`` as a detached floating tensor with a non-empty batch dimension and finite values."""
    if not isinstance(x, torch.Tensor):
        raise DataError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise DataError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.ndim < min_ndim:
        raise DataError(f"{name} must have at least {min_ndim} dimensions (N, ...), got {tuple(x.shape)}")
    if x.shape[0] < 1 or x.numel() == 0:
        raise DataError(f"{name} is empty (shape {tuple(x.shape)})")
    if not bool(torch.isfinite(x).all()):
        raise DataError(f"{name} contains NaN or Inf values")
    return x.detach()


def _check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DataError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise DataError(f"seed must be an integer, got {seed!r}")
    return int(seed)


def _check_finite_float(
    value: Any, name: str, *, minimum: float | None = None, strict: bool = False
) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(out):
        raise DataError(f"{name} must be finite, got {value!r}")
    if minimum is not None and (out <= minimum if strict else out < minimum):
        bound = ">" if strict else ">="
        raise DataError(f"{name} must be {bound} {minimum}, got {value!r}")
    return out


def _generator(seed: int, device: torch.device) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed) & ((1 << 63) - 1))
    return gen


def _flat(fn: TensorFn, n: int) -> TensorFn:
    """``fn`` with its output reshaped to ``(N, -1)``, checking the batch dimension."""

    def wrapped(inp: torch.Tensor) -> torch.Tensor:
        out = fn(inp)
        if not isinstance(out, torch.Tensor):
            raise DataError(f"fn must return a torch.Tensor, got {type(out).__name__}")
        if out.ndim < 1 or out.shape[0] != n:
            raise DataError(f"fn must return shape (N, ...) with N={n}, got {tuple(out.shape)}")
        return out.reshape(n, -1)

    return wrapped


def _check_output(out: torch.Tensor, what: str) -> None:
    if not bool(torch.isfinite(out).all()):
        raise DataError(f"{what} contains NaN or Inf values")


def _row_norms(t: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of each sample (all non-batch dimensions)."""
    return t.reshape(t.shape[0], -1).norm(dim=1)


def _normalise_rows(t: torch.Tensor, fallback: torch.Tensor | None = None) -> torch.Tensor:
    """Scale each sample to unit norm; samples with zero norm keep ``fallback`` (or stay zero)."""
    norms = _row_norms(t)
    shape = (-1,) + (1,) * (t.ndim - 1)
    out = t / norms.clamp_min(torch.finfo(t.dtype).tiny).reshape(shape)
    if fallback is not None:
        out = torch.where((norms > 0).reshape(shape), out, fallback)
    return out


def _jvp(flat_fn: TensorFn, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``J(x) v`` for every sample at once (flattened to ``(N, D)``)."""
    return torch.func.jvp(flat_fn, (x,), (v,))[1]


def _repeat_batch(x: torch.Tensor, k: int) -> torch.Tensor:
    """``x`` stacked ``k`` times along the batch dimension: shape ``(k * N, ...)``."""
    return x.unsqueeze(0).expand(k, *x.shape).reshape(k * x.shape[0], *x.shape[1:])


# ----------------------------------------------------------------------------------------------
# first order: local Lipschitz constants
# ----------------------------------------------------------------------------------------------


def local_lipschitz(fn: TensorFn, x: torch.Tensor, *, iters: int = 20, seed: int = 0) -> torch.Tensor:
    """Per-sample local Lipschitz constant ``||J_fn(x_n)||_2``, shape ``(N,)``.

    This is the first-order sensitivity term ``L`` of the paper (section 4, lemma 3.7's
    zeroth-noise term). Power iteration ``v <- Jᵀ(J v) / ||Jᵀ(J v)||`` runs for ``iters`` steps
    on all samples at once (``fn`` must be row-wise), starting from a seeded Gaussian ``v``; the
    estimate is ``||J v||`` for the final unit ``v``, a lower bound that converges to the
    spectral norm. Works for any input shape ``(N, ...)``; the output is flattened to
    ``(N, -1)``. A sample whose Jacobian is zero gets 0.
    """
    x = _check_input(x)
    iters = _check_positive_int(iters, "iters")
    seed = _check_seed(seed)
    n = x.shape[0]
    flat_fn = _flat(fn, n)
    gen = _generator(seed, x.device)
    v = _normalise_rows(torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype))
    with torch.enable_grad():
        out, vjp_fn = torch.func.vjp(flat_fn, x)
        _check_output(out, "fn(x)")
        for _ in range(iters):
            (u,) = vjp_fn(_jvp(flat_fn, x, v))
            v = _normalise_rows(u, fallback=v)
        jv = _jvp(flat_fn, x, v)
    sigma = jv.norm(dim=1).detach()
    _check_output(sigma, "Jacobian product")
    return sigma


def _sample_mean_std(values: torch.Tensor) -> list[float]:
    """[mean, population std] over *samples*, in torch float64 (NaN for none). Not the over-seeds
    summary of :func:`mmguard.eval.stats.mean_std`: torch and NumPy reduce in different orders,
    so this keeps the estimators' numbers identical to those reported before."""
    if values.numel() == 0:
        return [float("nan"), float("nan")]
    return [float(values.mean()), float(values.std(unbiased=False))]


def _stats(values: torch.Tensor) -> dict[str, float]:
    values = values.detach().to(torch.float64)
    return {
        "mean": float(values.mean()),
        "std": float(values.std(unbiased=False)),
        "max": float(values.max()),
    }


def per_layer_lipschitz(
    layers: Sequence[tuple[str, TensorFn]], x: torch.Tensor, *, iters: int = 20, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Local Lipschitz statistics of each layer at its own input, and of the whole composition.

    ``x`` is fed through ``layers`` in order; layer ``k`` is linearised at the activations it
    actually receives. Returns ``{name: {"mean", "std", "max"}}`` over samples, plus ``"total"``
    for the composition. By the chain rule ``L_total(x) <= Π_k L_k(h_k(x))`` per sample — the
    layer-specific decomposition MMSSL modulates (section 4).
    """
    x = _check_input(x)
    iters = _check_positive_int(iters, "iters")
    seed = _check_seed(seed)
    if len(layers) == 0:
        raise DataError("layers must contain at least one (name, callable) pair")
    names: list[str] = []
    for item in layers:
        ok = isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) and callable(item[1])
        if not ok:
            raise DataError(f"each layer must be a (name, callable) pair, got {item!r}")
        if item[0] == "total" or item[0] in names:
            raise DataError(f"layer name {item[0]!r} is reserved or duplicated")
        names.append(item[0])

    result: dict[str, dict[str, float]] = {}
    h = x
    for k, (name, layer) in enumerate(layers):
        result[name] = _stats(local_lipschitz(layer, h, iters=iters, seed=derive_seed(seed, "layer", k)))
        with torch.no_grad():
            h = layer(h)
        if not isinstance(h, torch.Tensor) or h.ndim < 1 or h.shape[0] != x.shape[0]:
            raise DataError(f"layer {name!r} must return a tensor of shape (N, ...)")
        h = h.detach()

    def composition(inp: torch.Tensor) -> torch.Tensor:
        for _, layer in layers:
            inp = layer(inp)
        return inp

    result["total"] = _stats(local_lipschitz(composition, x, iters=iters, seed=derive_seed(seed, "total")))
    return result


# ----------------------------------------------------------------------------------------------
# second order: Jacobian variation under noise (lemma 3.7)
# ----------------------------------------------------------------------------------------------


def jacobian_variation(
    fn: TensorFn,
    x: torch.Tensor,
    *,
    sigma: float,
    draws: int = 4,
    iters: int = 20,
    probes: int = 8,
    seed: int = 0,
) -> dict[str, float]:
    """How Gaussian input noise changes the Jacobian of ``fn`` (lemma 3.7).

    For ``draws`` noise draws ``ε ~ N(0, σ²I)`` returns

    * ``lipschitz_clean``: mean over samples of ``L(x)`` (:func:`local_lipschitz`);
    * ``lipschitz_noisy``: mean over samples and draws of ``L(x + ε)``;
    * ``ratio``: mean over samples and draws of ``L(x + ε) / L(x)`` (samples with ``L(x) = 0``
      skipped; NaN if all are);
    * ``jacobian_variation``: mean over samples and draws of ``||J(x + ε) - J(x)||_F``, estimated
      by Hutchinson with ``probes`` Gaussian probes shared by both points
      (``sqrt(mean_v ||(J(x + ε) - J(x)) v||²)``);
    * ``relative_variation``: mean over samples and draws of that divided by the per-sample
      Hutchinson estimate of ``||J(x)||_F`` (samples with ``||J(x)||_F = 0`` skipped);
    * ``sigma``: the noise level used.

    A linear ``fn`` has ratio 1 and zero variation; curvature makes the variation grow with σ.
    """
    x = _check_input(x)
    sigma = _check_finite_float(sigma, "sigma", minimum=0.0)
    draws = _check_positive_int(draws, "draws")
    iters = _check_positive_int(iters, "iters")
    probes = _check_positive_int(probes, "probes")
    seed = _check_seed(seed)
    n = x.shape[0]
    power_seed = derive_seed(seed, "power")
    gen = _generator(derive_seed(seed, "noise"), x.device)

    l_clean = local_lipschitz(fn, x, iters=iters, seed=power_seed)
    v = torch.randn((probes, *x.shape), generator=gen, device=x.device, dtype=x.dtype)
    v = v.reshape(probes * n, *x.shape[1:])
    flat_rep = _flat(fn, probes * n)
    with torch.enable_grad():
        jv_clean = _jvp(flat_rep, _repeat_batch(x, probes), v).detach().reshape(probes, n, -1)
    fro_clean = jv_clean.pow(2).sum(dim=2).mean(dim=0).sqrt()

    l_noisy, ratios, variation, relative = [], [], [], []
    has_l = l_clean > 0
    has_fro = fro_clean > 0
    for _ in range(draws):
        eps = sigma * torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        xn = x + eps
        ln = local_lipschitz(fn, xn, iters=iters, seed=power_seed)
        with torch.enable_grad():
            jv_noisy = _jvp(flat_rep, _repeat_batch(xn, probes), v).detach().reshape(probes, n, -1)
        _check_output(jv_noisy, "Jacobian product at x + noise")
        diff = (jv_noisy - jv_clean).pow(2).sum(dim=2).mean(dim=0).sqrt()
        l_noisy.append(ln)
        ratios.append(ln[has_l] / l_clean[has_l])
        variation.append(diff)
        relative.append(diff[has_fro] / fro_clean[has_fro])

    def mean(parts: list[torch.Tensor]) -> float:
        cat = torch.cat(parts).to(torch.float64)
        return float(cat.mean()) if cat.numel() else float("nan")

    return {
        "lipschitz_clean": float(l_clean.to(torch.float64).mean()),
        "lipschitz_noisy": mean(l_noisy),
        "ratio": mean(ratios),
        "jacobian_variation": mean(variation),
        "relative_variation": mean(relative),
        "sigma": sigma,
    }


# ----------------------------------------------------------------------------------------------
# fault entropy (lemmas 3.1 / 3.2)
# ----------------------------------------------------------------------------------------------


def localized_perturbation(
    x: torch.Tensor, *, size: int, amplitude: float, seed: int = 0
) -> torch.Tensor:
    """``x + δ`` with a localized fault ``δ`` — the input of lemmas 3.1/3.2.

    * images ``(N, C, H, W)``: a ``size × size`` axis-aligned patch at a uniformly random position
      per sample (the same in all channels) gets ``+amplitude``;
    * vectors ``(N, D)``: ``size`` contiguous channels starting at a uniformly random offset per
      sample get ``+amplitude``.

    Positions come from a generator seeded with ``seed``; ``x`` is not modified.
    """
    x = _check_input(x)
    size = _check_positive_int(size, "size")
    amplitude = _check_finite_float(amplitude, "amplitude")
    seed = _check_seed(seed)
    gen = _generator(seed, x.device)
    n = x.shape[0]

    def band(length: int) -> torch.Tensor:
        """(N, length) mask of ``size`` contiguous ones at a random offset per sample."""
        start = torch.randint(0, length - size + 1, (n,), generator=gen, device=x.device)
        idx = torch.arange(length, device=x.device).unsqueeze(0)
        return (idx >= start.unsqueeze(1)) & (idx < start.unsqueeze(1) + size)

    if x.ndim == 2:
        if size > x.shape[1]:
            raise DataError(f"size {size} exceeds the vector dimension {x.shape[1]}")
        mask = band(x.shape[1])
    elif x.ndim == 4:
        _, _, h, w = x.shape
        if size > h or size > w:
            raise DataError(f"patch size {size} exceeds the image size {h}x{w}")
        rows, cols = band(h), band(w)
        mask = (rows.unsqueeze(2) & cols.unsqueeze(1)).unsqueeze(1)  # (N, 1, H, W)
    else:
        raise DataError(f"x must be vectors (N, D) or images (N, C, H, W), got shape {tuple(x.shape)}")
    return x + amplitude * mask.to(x.dtype)


def _gini(a: torch.Tensor) -> torch.Tensor:
    """Gini coefficient of each row of non-negative ``a`` (rows with positive sum)."""
    d = a.shape[1]
    s, _ = torch.sort(a, dim=1)
    i = torch.arange(1, d + 1, device=a.device, dtype=a.dtype)
    return ((2 * i - d - 1) * s).sum(dim=1) / (d * s.sum(dim=1))


def fault_energy_spread(
    fn: TensorFn,
    x: torch.Tensor,
    x_perturbed: torch.Tensor,
    *,
    top_k: Sequence[int] = (1, 5),
) -> dict[str, Any]:
    """How a perturbation's latent energy is spread over coordinates ("fault entropy", lemmas 3.1/3.2).

    ``δz = fn(x_perturbed) - fn(x)`` (flattened to ``(N, D)``), ``e = δz²``, ``p = e / Σe``.
    Per sample:

    * ``entropy``: ``-Σ p log p / log D`` in [0, 1]; 1 = perfectly spread (dense mixing,
      lemma 3.1), 0 = all energy in one coordinate (local/sparse, lemma 3.2);
    * ``gini``: Gini coefficient of ``|δz|``; 0 = uniform, ``1 - 1/D`` = one coordinate;
    * ``top{k}_share``: fraction of the energy in the ``k`` largest coordinates (``k`` larger
      than ``D`` counts all coordinates);
    * ``participation_ratio``: ``(Σe)² / Σe² / D`` in [1/D, 1].

    Each is reported as ``[mean, std]`` over samples. Samples with zero latent energy (the
    perturbation did not move the output) have no distribution to measure and are skipped;
    ``samples`` counts those kept and ``skipped`` those dropped (all statistics are NaN if every
    sample is skipped). Also returns ``dim`` (D) and ``energy`` (mean Σe over all samples).
    Runs under ``torch.no_grad()``.
    """
    x = _check_input(x)
    x_perturbed = _check_input(x_perturbed, "x_perturbed")
    if x.shape != x_perturbed.shape:
        raise DataError(f"x {tuple(x.shape)} and x_perturbed {tuple(x_perturbed.shape)} differ in shape")
    ks = [_check_positive_int(k, "top_k entry") for k in top_k]
    n = x.shape[0]
    flat_fn = _flat(fn, n)
    with torch.no_grad():
        z0 = flat_fn(x)
        z1 = flat_fn(x_perturbed)
    _check_output(z0, "fn(x)")
    _check_output(z1, "fn(x_perturbed)")
    dz = (z1 - z0).detach().to(torch.float64)
    d = dz.shape[1]
    if d < 2:
        raise DataError(f"fn output must have at least 2 coordinates per sample, got {d}")

    e = dz.pow(2)
    total = e.sum(dim=1)
    keep = total > 0
    e_k, tot_k, a_k = e[keep], total[keep], dz.abs()[keep]
    p = e_k / tot_k.unsqueeze(1)
    metrics: dict[str, torch.Tensor] = {
        "entropy": -torch.xlogy(p, p).sum(dim=1) / math.log(d),
        "gini": _gini(a_k),
    }
    for k in ks:
        top = torch.topk(e_k, min(k, d), dim=1).values.sum(dim=1)
        metrics[f"top{k}_share"] = top / tot_k
    metrics["participation_ratio"] = tot_k.pow(2) / e_k.pow(2).sum(dim=1) / d

    out: dict[str, Any] = {name: _sample_mean_std(t) for name, t in metrics.items()}
    out["dim"] = int(d)
    out["energy"] = float(total.mean())
    out["samples"] = int(keep.sum())
    out["skipped"] = int(n - keep.sum())
    return out


# ----------------------------------------------------------------------------------------------
# distribution distances
# ----------------------------------------------------------------------------------------------


def _check_pair(a: Any, b: Any, *, min_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two ``(N, D)``/``(M, D)`` finite float64 sample sets with at least ``min_rows`` rows each."""
    out = []
    for name, t in (("a", a), ("b", b)):
        if isinstance(t, np.ndarray):
            t = torch.from_numpy(t)
        t = _check_input(t, name)
        if t.ndim != 2:
            raise DataError(f"{name} must be a 2-D sample set (N, D), got shape {tuple(t.shape)}")
        if t.shape[0] < min_rows:
            raise DataError(f"{name} needs at least {min_rows} samples, got {t.shape[0]}")
        out.append(t.to(dtype=torch.float64, device="cpu"))
    if out[0].shape[1] != out[1].shape[1]:
        raise DataError(f"a and b differ in dimension: {out[0].shape[1]} vs {out[1].shape[1]}")
    return out[0], out[1]


def mmd_rbf(a: torch.Tensor, b: torch.Tensor, *, bandwidth: float | None = None) -> float:
    """Unbiased squared maximum mean discrepancy with the Gaussian kernel.

    ``k(x, y) = exp(-||x - y||² / (2 h²))``;
    ``MMD² = mean_{i≠j} k(a_i, a_j) + mean_{i≠j} k(b_i, b_j) - 2 mean_{i,j} k(a_i, b_j)``
    (the unbiased U-statistic, which can be slightly negative when the sets match).
    ``bandwidth=None`` uses the median heuristic: ``h`` = median of the pairwise Euclidean
    distances between distinct points of the pooled set ``a ∪ b`` (lower median; ``h = 1`` if it
    is 0, i.e. all points coincide). Computed in float64 on the CPU from one pooled ``cdist``.
    Needs at least 2 samples per set.
    """
    a, b = _check_pair(a, b, min_rows=2)
    if bandwidth is not None:
        bandwidth = _check_finite_float(bandwidth, "bandwidth", minimum=0.0, strict=True)
    n, m = a.shape[0], b.shape[0]
    pooled = torch.cat([a, b])
    dist = torch.cdist(pooled, pooled, compute_mode="donot_use_mm_for_euclid_dist")
    if bandwidth is None:
        iu = torch.triu_indices(n + m, n + m, offset=1)
        med = float(dist[iu[0], iu[1]].median())
        bandwidth = med if med > 0 else 1.0
    k = torch.exp(-dist.pow(2) / (2.0 * bandwidth**2))
    kaa, kbb, kab = k[:n, :n], k[n:, n:], k[:n, n:]
    term_a = (kaa.sum() - kaa.diagonal().sum()) / (n * (n - 1))
    term_b = (kbb.sum() - kbb.diagonal().sum()) / (m * (m - 1))
    return float(term_a + term_b - 2.0 * kab.mean())


def _sqrt_psd(mat: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix (negative rounding eigenvalues clipped)."""
    w, q = np.linalg.eigh((mat + mat.T) / 2.0)
    return (q * np.sqrt(np.clip(w, 0.0, None))) @ q.T


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two sample sets (the FID formula).

    ``||μa - μb||² + Tr(Σa + Σb - 2 (Σa Σb)^{1/2})`` with unbiased sample covariances, in
    float64. The trace of ``(Σa Σb)^{1/2}`` is computed as ``Tr((Σa^{1/2} Σb Σa^{1/2})^{1/2})`` —
    the same eigenvalues, but a symmetric PSD matrix, so the eigen-decomposition is real and no
    imaginary parts arise. Rounding can give tiny negatives; the result is clipped at 0.
    Needs at least 2 samples per set.
    """
    a_t, b_t = _check_pair(a, b, min_rows=2)
    xa, xb = a_t.numpy(), b_t.numpy()
    mu_a, mu_b = xa.mean(axis=0), xb.mean(axis=0)
    cov_a = np.atleast_2d(np.cov(xa, rowvar=False))
    cov_b = np.atleast_2d(np.cov(xb, rowvar=False))
    root_a = _sqrt_psd(cov_a)
    middle = root_a @ cov_b @ root_a
    eig = np.linalg.eigvalsh((middle + middle.T) / 2.0)
    tr_sqrt = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    value = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2.0 * tr_sqrt)
    return max(value, 0.0)


# ----------------------------------------------------------------------------------------------
# t-SNE of latent groups
# ----------------------------------------------------------------------------------------------


def tsne_embedding(
    groups: Mapping[str, torch.Tensor],
    *,
    seed: int = 0,
    max_per_group: int = 500,
    perplexity: float = 30.0,
) -> tuple[np.ndarray, np.ndarray]:
    """2-D t-SNE of several latent sets (e.g. clean / faulty / corrected codes).

    Each group (``(n_g, ...)``, flattened per row) is subsampled without replacement to at most
    ``max_per_group`` rows by a generator seeded from ``seed`` (row order kept), the groups are
    stacked in mapping order, and ``sklearn.manifold.TSNE(n_components=2, init="pca",
    random_state=seed)`` embeds them with perplexity ``min(perplexity, (n - 1) / 3)``. Returns the
    coordinates ``(n, 2)`` (float64) and the group label of each row (array of ``str``).
    """
    from sklearn.manifold import TSNE

    seed = _check_seed(seed)
    max_per_group = _check_positive_int(max_per_group, "max_per_group")
    perplexity = _check_finite_float(perplexity, "perplexity", minimum=0.0, strict=True)
    if not isinstance(groups, Mapping) or len(groups) == 0:
        raise DataError("groups must be a non-empty mapping of name -> tensor")
    rows: list[np.ndarray] = []
    labels: list[str] = []
    dim: int | None = None
    for name, t in groups.items():
        if isinstance(t, np.ndarray):
            t = torch.from_numpy(t)
        t = _check_input(t, f"group {name!r}", min_ndim=1)
        t = t.reshape(t.shape[0], -1).to(dtype=torch.float64, device="cpu")
        if dim is None:
            dim = t.shape[1]
        elif t.shape[1] != dim:
            raise DataError(f"group {name!r} has dimension {t.shape[1]}, expected {dim}")
        if t.shape[0] > max_per_group:
            gen = _generator(derive_seed(seed, "tsne", str(name)), torch.device("cpu"))
            idx = torch.randperm(t.shape[0], generator=gen)[:max_per_group].sort().values
            t = t[idx]
        rows.append(t.numpy())
        labels.extend([str(name)] * t.shape[0])
    data = np.concatenate(rows, axis=0)
    n = data.shape[0]
    if n < 4:
        raise DataError(f"t-SNE needs at least 4 points in total, got {n}")
    tsne = TSNE(
        n_components=2,
        random_state=seed,
        init="pca",
        perplexity=min(perplexity, (n - 1) / 3.0),
    )
    coords = np.asarray(tsne.fit_transform(data), dtype=np.float64)
    return coords, np.asarray(labels, dtype=str)


def plot_latent_tsne(
    groups: Mapping[str, torch.Tensor],
    path: str | Path,
    *,
    seed: int = 0,
    max_per_group: int = 500,
    perplexity: float = 30.0,
    title: str | None = None,
) -> Path:
    """Scatter the :func:`tsne_embedding` of ``groups`` (one colour per group) into a PNG at ``path``.

    Uses a bare Agg canvas (no pyplot state) and writes atomically (temporary file in the same
    directory, then rename), so a failure never leaves a partial PNG. Returns the path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from mmguard.io.figures import save_figure

    out = Path(path).expanduser()
    if out.suffix.lower() != ".png":
        raise DataError(f"plot output {str(out)!r} must end in .png")
    coords, labels = tsne_embedding(groups, seed=seed, max_per_group=max_per_group, perplexity=perplexity)

    fig = Figure(figsize=(6.0, 5.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for i, name in enumerate(dict.fromkeys(labels.tolist())):
        sel = labels == name
        ax.scatter(coords[sel, 0], coords[sel, 1], s=8, alpha=0.7, color=f"C{i % 10}", label=name)
    ax.legend(fontsize=8, markerscale=2)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title if title is not None else "latent t-SNE", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out)
