"""The analyses the paper's theory calls for, on one seed's trained models (issue #5).

* per-layer local Lipschitz constants (power iteration on JᵀJ, :mod:`mmguard.analysis.estimators`)
  of each modality encoder, for the MMAE (stage 1, clean training) and the DAE (trained on
  corruption) — stage 1's purpose is to *preserve* sensitivity;
* Jacobian variation under input noise (lemma 3.7);
* fault entropy (lemmas 3.1, 3.2): a localized perturbation (an 8×8 image patch, one
  sensor channel) and how its energy spreads over the first layer's output and over the
  modality code, for the default encoders (convolutional camera, dense sensors) against the
  alternatives (dense camera, conv1d sensors), trained identically on the same data;
* clean vs corrupted vs corrected latents: t-SNE plot, MMD² and Fréchet distance.

Device (docs/devices.md): the alternative encoders train on ``cfg.device`` like the run; every
analysis runs on the CPU in float32 (the estimators draw from device generators, so the CPU keeps
their numbers independent of the machine).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mmguard.analysis import estimators as analysis
from mmguard.data.model import ModalityKind
from mmguard.data.splits import Splits
from mmguard.devices import resolve_device, use_precision
from mmguard.experiments.mmssl.config import MmsslRunConfig
from mmguard.faults import FaultSpec, apply_faults
from mmguard.mmssl.autoencoder import MultimodalAutoencoder
from mmguard.mmssl.gate import route, sample_scores
from mmguard.mmssl.pipeline import MmsslModels
from mmguard.mmssl.stages import encode, train_autoencoder
from mmguard.seeding import derive_seed

PROBE = 64  # samples used by the Jacobian analyses


def _encoder_fn(ae: MultimodalAutoencoder, name: str):
    return lambda x: ae.encoders[name](x)


def _first_layer(ae: MultimodalAutoencoder, name: str):
    return ae.layers_of(name)[0][1]


def lipschitz_report(ae: MultimodalAutoencoder, x: dict[str, torch.Tensor], seed: int) -> dict[str, Any]:
    out = {}
    for name in ae.names:
        layers = [(label, mod) for label, mod in ae.layers_of(name)]
        out[name] = analysis.per_layer_lipschitz(layers, x[name], iters=15, seed=seed)
    return out


def jacobian_report(
    ae: MultimodalAutoencoder, x: dict[str, torch.Tensor], seed: int, sigma: float = 0.5
) -> dict[str, Any]:
    return {
        name: analysis.jacobian_variation(
            _encoder_fn(ae, name), x[name], sigma=sigma, draws=2, iters=10, seed=seed
        )
        for name in ae.names
    }


def entropy_report(ae: MultimodalAutoencoder, x: dict[str, torch.Tensor], specs, seed: int) -> dict[str, Any]:
    out = {}
    for j, name in enumerate(ae.names):
        image = specs[j].kind == ModalityKind.IMAGE
        xp = analysis.localized_perturbation(
            x[name], size=8 if image else 1, amplitude=3.0, seed=derive_seed(seed, "entropy", name)
        )
        first = _first_layer(ae, name)
        out[name] = {
            "encoder": type(ae.encoders[name]).__name__ if image else ae.cfg.sensor_encoder,
            "first_layer": analysis.fault_energy_spread(lambda t, f=first: f(t).flatten(1), x[name], xp),
            "code": analysis.fault_energy_spread(_encoder_fn(ae, name), x[name], xp),
        }
    return out


def latent_overlap(
    models: MmsslModels, splits: Splits, spec: FaultSpec, seed: int, out_dir: Path | None
) -> dict[str, Any]:
    """t-SNE + MMD² + Fréchet distance of clean, corrupted (faulty samples) and corrected latents."""
    test = splits.test
    mix = apply_faults(test, spec, seed=derive_seed(seed, "overlap"))
    faulty = mix.mask_or_clean().any(1)
    z_clean = encode(models.mmae, test.modalities)
    z, scores, corr = models.detect(mix.modalities)
    f = models.full
    flagged = sample_scores(scores[f]) > models.thresholds[f]
    z_hat = route(z, corr[f], flagged)
    groups = {"clean": z_clean[faulty], "corrupted": z[faulty], "corrected": z_hat[faulty]}
    res: dict[str, Any] = {
        "samples": int(faulty.sum()),
        "mmd2": {
            "corrupted": analysis.mmd_rbf(groups["clean"], groups["corrupted"]),
            "corrected": analysis.mmd_rbf(groups["clean"], groups["corrected"]),
        },
        "frechet": {
            "corrupted": analysis.frechet_distance(groups["clean"], groups["corrupted"]),
            "corrected": analysis.frechet_distance(groups["clean"], groups["corrected"]),
        },
    }
    if out_dir is not None:
        analysis.plot_latent_tsne(
            groups,
            out_dir / "latent_tsne.png",
            seed=seed,
            max_per_group=400,
            title="joint latents of faulty test samples (t-SNE)",
        )
        res["plot"] = "latent_tsne.png"
    return res


def run_diagnostics(
    cfg: MmsslRunConfig,
    splits: Splits,
    models: MmsslModels,
    spec: FaultSpec,
    seed: int,
    out_dir: Path | None = None,
    log=print,
) -> dict[str, Any]:
    """Every analysis for one seed (the run's first); returns a JSON-ready dict. Moves ``models`` to the CPU."""
    models = models.to("cpu")
    gen = torch.Generator().manual_seed(derive_seed(seed, "probe"))
    idx = torch.randperm(len(splits.test), generator=gen)[:PROBE]
    x = {n: splits.test.modalities[n][idx] for n in splits.test.names}
    specs = splits.test.specs
    res: dict[str, Any] = {"seed": seed, "probe_samples": int(idx.numel())}
    log("analysis: per-layer Lipschitz and Jacobian variation (MMAE vs DAE)")
    res["lipschitz"] = {"mmae": lipschitz_report(models.mmae, x, seed)}
    res["jacobian_variation"] = {"mmae": jacobian_report(models.mmae, x, seed)}
    if models.dae is not None:
        res["lipschitz"]["dae"] = lipschitz_report(models.dae, x, seed)
        res["jacobian_variation"]["dae"] = jacobian_report(models.dae, x, seed)
    log("analysis: fault entropy, default vs alternative encoders")
    alt_cfg = cfg.autoencoder.model_copy(
        update={
            "image_encoder": "dense" if cfg.autoencoder.image_encoder == "conv" else "conv",
            "sensor_encoder": "conv1d" if cfg.autoencoder.sensor_encoder == "dense" else "dense",
        }
    )
    with use_precision(cfg.precision):
        alt, alt_fit = train_autoencoder(splits.train, splits.val, alt_cfg, seed=derive_seed(seed, "alt-encoders"),
                                         device=resolve_device(cfg.device))
    alt = alt.cpu()
    res["fault_entropy"] = {
        "default": entropy_report(models.mmae, x, specs, seed),
        "alternative": entropy_report(alt, x, specs, seed),
        "alternative_val_loss": float(alt_fit.best_val[0]),
        "default_encoders": {
            "image": cfg.autoencoder.image_encoder,
            "sensor": cfg.autoencoder.sensor_encoder,
        },
        "alternative_encoders": {"image": alt_cfg.image_encoder, "sensor": alt_cfg.sensor_encoder},
    }
    log("analysis: latent overlap (t-SNE, MMD, Frechet)")
    res["latent_overlap"] = latent_overlap(models, splits, spec, seed, out_dir)
    return res
