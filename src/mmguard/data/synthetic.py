"""Synthetic data: the 2-D manifolds of thesis section 4.3 and a shared-latent multimodal toy.

Both are cheap, deterministic given their seed, and used as fixtures throughout the tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy.special import ndtr

from mmguard.data.model import ModalityKind, ModalitySpec, MultimodalBatch
from mmguard.errors import SpecError

MANIFOLDS = ("wave", "circle")
MAX_MODALITIES = 6
#: Step-to-step correlation of the latents within an episode (see ``episode_length``).
EPISODE_AR = 0.95


def make_manifold(name: str, n: int, seed: int = 0, *, noise: float = 0.0,
                  return_t: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """n points on a 2-D manifold of thesis section 4.3, as an (n, 2) float32 tensor.

    With t ~ U[0, 2π]:

    * ``wave``:   x1 = t − π,      x2 = sin t
    * ``circle``: x1 = 3 sin t,    x2 = 3 cos t

    ``noise`` adds isotropic Gaussian noise of that standard deviation (0 = exactly on the
    manifold). ``return_t`` also returns the parameters t (float32, shape (n,)).
    """
    if name not in MANIFOLDS:
        raise SpecError(f"unknown manifold {name!r}; known: {list(MANIFOLDS)}")
    if n < 1:
        raise SpecError(f"number of samples must be positive, got {n}")
    if noise < 0:
        raise SpecError(f"noise must be >= 0, got {noise}")
    rng = np.random.default_rng(seed)
    t = rng.uniform(0.0, 2.0 * math.pi, size=n)
    if name == "wave":
        x = np.stack([t - math.pi, np.sin(t)], axis=1)
    else:
        x = np.stack([3.0 * np.sin(t), 3.0 * np.cos(t)], axis=1)
    if noise > 0:
        x = x + noise * rng.standard_normal(x.shape)
    points = torch.as_tensor(x, dtype=torch.float32)
    return (points, torch.as_tensor(t, dtype=torch.float32)) if return_t else points


def _latents(rng: np.random.Generator, n: int, dim: int, episode_length: int | None) -> np.ndarray:
    """Standard-normal latents; within an episode an AR(1) walk with N(0, I) marginals."""
    eps = rng.standard_normal((n, dim))
    if episode_length is None:
        return eps
    z = eps.copy()
    keep = math.sqrt(1.0 - EPISODE_AR**2)
    for t in range(1, min(episode_length, n)):  # step t of every episode at once
        now, prev = np.arange(t, n, episode_length), np.arange(t - 1, n, episode_length)
        z[now] = EPISODE_AR * z[prev[: len(now)]] + keep * eps[now]
    return z


def _labels(z: np.ndarray, num_classes: int, rng_task: np.random.Generator) -> np.ndarray:
    """Class from the shared latent: angular sectors of a random 2-D projection (1-D: quantile bins).

    Both rules give equally likely classes because z is standard normal.
    """
    d = z.shape[1]
    if d == 1:
        u = ndtr(z[:, 0])
    else:
        q, _ = np.linalg.qr(rng_task.standard_normal((d, 2)))
        proj = z @ q
        offset = rng_task.uniform(0.0, 2.0 * math.pi)
        u = ((np.arctan2(proj[:, 1], proj[:, 0]) + offset) % (2.0 * math.pi)) / (2.0 * math.pi)
    return np.minimum((u * num_classes).astype(np.int64), num_classes - 1)


def make_shared_latent(
    n: int,
    modality_dims: Sequence[int] = (4, 6, 3),
    latent_dim: int = 2,
    redundancy: float | Sequence[float] = 0.8,
    noise: float = 0.1,
    num_classes: int = 2,
    seed: int = 0,
    *,
    map_seed: int = 0,
    names: Sequence[str] | None = None,
    episode_length: int | None = None,
) -> MultimodalBatch:
    """A labelled multimodal toy in which every modality observes one shared latent.

    Generative model, for modality m with dimension D_m (2 to 6 modalities):

    * shared latent z ~ N(0, I_k) and a private latent p_m ~ N(0, I_k), k = ``latent_dim``;
    * modality latent h_m = √r_m · z + √(1 − r_m) · p_m, still N(0, I_k); r_m = ``redundancy``
      (one value or one per modality) in [0, 1]: 1 → every modality sees only the shared
      latent (fully redundant), 0 → modality m carries no information about the target;
    * x_m = tanh(h_m A_m + b_m) B_m + ``noise`` · ε, a fixed random nonlinear map with a
      hidden width of max(16, 2·D_m);
    * target from z alone: angular sectors of a random 2-D projection of z (quantile bins of
      z when k = 1), so the ``num_classes`` classes are equally likely.

    ``seed`` draws the samples; ``map_seed`` fixes the task (maps A_m, b_m, B_m and the label
    rule), so two seeds give independent samples of the same task (e.g. a separate test set).
    Modalities are vectors named ``m0, m1, ...`` unless ``names`` is given. With
    ``episode_length`` the samples form consecutive episodes (``meta['episode']``, ``meta['t']``)
    within which the latents follow a slow AR(1) walk (coefficient :data:`EPISODE_AR`), as
    temporal faults need.
    """
    dims = [int(d) for d in modality_dims]
    m = len(dims)
    if not 2 <= m <= MAX_MODALITIES:
        raise SpecError(f"need 2 to {MAX_MODALITIES} modalities, got modality_dims={list(modality_dims)}")
    if any(d < 1 for d in dims):
        raise SpecError(f"modality dimensions must be positive, got {dims}")
    if n < 1 or latent_dim < 1:
        raise SpecError(f"n and latent_dim must be positive, got n={n}, latent_dim={latent_dim}")
    if num_classes < 2:
        raise SpecError(f"num_classes must be at least 2, got {num_classes}")
    if noise < 0:
        raise SpecError(f"noise must be >= 0, got {noise}")
    if episode_length is not None and episode_length < 1:
        raise SpecError(f"episode_length must be positive, got {episode_length}")
    reds = [float(redundancy)] * m if np.isscalar(redundancy) else [float(r) for r in redundancy]
    if len(reds) != m or not all(0.0 <= r <= 1.0 for r in reds):
        raise SpecError(f"redundancy must be in [0, 1] (one value or one per modality), got {redundancy!r}")
    names = [f"m{i}" for i in range(m)] if names is None else [str(s) for s in names]
    if len(names) != m or len(set(names)) != m:
        raise SpecError(f"need {m} distinct modality names, got {names}")

    rng = np.random.default_rng(seed)
    rng_task = np.random.default_rng([map_seed, 0x5EED])
    z = _latents(rng, n, latent_dim, episode_length)
    target = torch.as_tensor(_labels(z, num_classes, rng_task))
    tensors, specs = {}, []
    for name, d, r in zip(names, dims, reds, strict=True):
        hidden = max(16, 2 * d)
        a = rng_task.standard_normal((latent_dim, hidden)) * (1.5 / math.sqrt(latent_dim))
        b = rng_task.uniform(-1.0, 1.0, size=hidden)
        w = rng_task.standard_normal((hidden, d)) / math.sqrt(hidden) * 2.0
        h = math.sqrt(r) * z + math.sqrt(1.0 - r) * _latents(rng, n, latent_dim, episode_length)
        x = np.tanh(h @ a + b) @ w + noise * rng.standard_normal((n, d))
        tensors[name] = torch.as_tensor(x, dtype=torch.float32)
        specs.append(ModalitySpec(name, ModalityKind.VECTOR, (d,)))
    meta = {}
    if episode_length is not None:
        idx = np.arange(n)
        meta = {"episode": torch.as_tensor(idx // episode_length), "t": torch.as_tensor(idx % episode_length)}
    return MultimodalBatch(modalities=tensors, specs=tuple(specs), target=target, meta=meta)
