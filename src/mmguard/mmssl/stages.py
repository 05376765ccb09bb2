"""Training of MMSSL's two stages (and of the DAE baseline) with the one training loop
:func:`mmguard.train.loop.train_ensemble`.

* :func:`train_autoencoder` — stage 1 (MMAE: clean inputs → clean targets) or the denoising
  baseline (DAE: a fresh corruption draw of the training mix every epoch → clean targets).
  One model per call: a grouped-convolution ensemble was measured 1.18x *slower* than
  sequential models on CPU (docs/mmssl.md, "Performance"), so seeds run one after another.
* :func:`train_compute_block` — stage 2 with the stage-1 autoencoder frozen: the detector,
  the corrector, and every ablation train as members of one batched ensemble on latents
  encoded once (``corruption_draws`` corrupted draws of the training split, cycled per epoch).

Data parallel (docs/distributed.md): inside a process group, stage 1 and the DAE split every
minibatch over the ranks (their losses are row means; the DAE's corruption is drawn for the whole
split each epoch, so it does not depend on the number of ranks). Stage 2 does not: its detector loss
normalises by the batch's clean/faulty counts and its reconstruction term reads the first rows of a
minibatch, so every rank trains it on the whole minibatch (same result as one process).

Device: stage 1 runs on ``device`` (default: where the training split lives), stage 2 where the
autoencoder lives; each split is moved there once and corrupted there (fault draws come from CPU
generators, so every device sees the same faults). Modules are initialised on the CPU and moved,
so a seed gives the same initial weights on every device. Precision: the forward passes of both
stages follow :func:`mmguard.devices.use_precision` (the loop autocasts them); encoding the latents,
the latent scale and the gate calibration always run in float32 (docs/devices.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mmguard.data.model import MultimodalBatch
from mmguard.data.stream import StreamSplit
from mmguard.faults import FaultSpec, apply_faults
from mmguard.mmssl.autoencoder import MultimodalAutoencoder
from mmguard.mmssl.compute import ComputeBlock
from mmguard.mmssl.config import AutoencoderConfig, ComputeConfig
from mmguard.mmssl.gate import calibrate_threshold, sample_scores
from mmguard.mmssl.losses import contrastive_detector_loss, latent_loss, reconstruction_loss
from mmguard.mmssl.modulation import modulate_gradients
from mmguard.seeding import derive_seed
from mmguard.train.loop import StreamedData, TrainResult, train_ensemble

CHUNK = 512
#: the full model (strict contraction: spectral projection + gradient clipping) and its ablations;
#: ``clip_only`` is the paper's literal corrector (issue #11): gradient clipping at τ, no spectral
#: projection, so the corrector may expand
#: ``shrink_only`` is the step-size control of issue #11: no amplification, every gradient scaled by the
#: full member's renormalization factor of the same step (:mod:`mmguard.mmssl.modulation`)
VARIANTS = ("full", "no_amplification", "no_renormalization", "no_contraction", "clip_only", "shrink_only")


class _Single(nn.Module):
    """Presents one autoencoder to the ensemble loop as a single member."""

    def __init__(self, ae: MultimodalAutoencoder) -> None:
        super().__init__()
        self.ae = ae


def _stream(batch: MultimodalBatch, prefix: str = "") -> dict[str, torch.Tensor]:
    return {prefix + n: batch.modalities[n].unsqueeze(0) for n in batch.names}


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter (CPU for a module without parameters)."""
    first = next(module.parameters(), None)
    return torch.device("cpu") if first is None else first.device


@torch.no_grad()
def encode(ae: MultimodalAutoencoder, xs: Mapping[str, torch.Tensor], chunk: int = CHUNK) -> torch.Tensor:
    """Joint latents (N, d) in chunks (bounded memory), eval mode, on the device of ``xs``."""
    ae.eval()
    n = next(iter(xs.values())).shape[0]
    return torch.cat([ae.encode({k: v[i : i + chunk] for k, v in xs.items()}) for i in range(0, n, chunk)])


@torch.no_grad()
def decode(ae: MultimodalAutoencoder, z: torch.Tensor, chunk: int = CHUNK) -> dict[str, torch.Tensor]:
    ae.eval()
    parts = [ae.decode(z[i : i + chunk]) for i in range(0, z.shape[0], chunk)]
    return {n: torch.cat([p[n] for p in parts]) for n in ae.names}


def _autoencoder_losses(names: Sequence[str], denoise: bool) -> tuple[Callable, Callable]:
    """Stage 1's training loss and validation loss (both means over the rows of a loop batch): the
    reconstruction of the clean modalities from the inputs (``in:<name>`` when ``denoise``)."""
    key = "in:" if denoise else ""

    def inputs(batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {n: batch[key + n][0] for n in names}

    def loss_fn(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        recon = model.ae(inputs(batch))
        return reconstruction_loss(recon, {n: batch[n][0] for n in names}).reshape(1)

    def val_fn(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        xs = inputs(batch)
        n = next(iter(xs.values())).shape[0]
        total = torch.zeros((), device=next(iter(xs.values())).device)
        for i in range(0, n, CHUNK):
            recon = model.ae({k: v[i : i + CHUNK] for k, v in xs.items()})
            total = total + sum(
                ((recon[m] - batch[m][0, i : i + CHUNK]) ** 2).reshape(recon[m].shape[0], -1).mean(1).sum()
                for m in names
            )
        return (total / n).reshape(1)

    return loss_fn, val_fn


def _new_autoencoder(specs: Sequence[Any], cfg: AutoencoderConfig, seed: int, denoise: bool,
                     dev: torch.device) -> MultimodalAutoencoder:
    torch.manual_seed(derive_seed(seed, "mmssl", "ae-init", denoise))
    return MultimodalAutoencoder(tuple(specs), cfg).to(dev)


def _autoencoder_schedule(cfg: AutoencoderConfig, seed: int, dev: torch.device,
                          progress: Callable[[int, torch.Tensor], None] | None) -> dict[str, Any]:
    """The loop settings stage 1 shares between its loaded and streamed data: one member, Adam at
    ``cfg.lr``, ``cfg.epochs`` with early stopping after ``cfg.patience``."""
    return {"member_stream": torch.zeros(1, dtype=torch.long, device=dev),
            "stream_seeds": [derive_seed(seed, "ae-order")], "epochs": cfg.epochs, "batch_size": cfg.batch_size,
            "lr": cfg.lr, "patience": cfg.patience, "progress": progress}


def _frozen(ae: MultimodalAutoencoder) -> MultimodalAutoencoder:
    ae.eval()
    for p in ae.parameters():
        p.requires_grad_(False)
    return ae


def train_autoencoder(
    train: MultimodalBatch,
    val: MultimodalBatch,
    cfg: AutoencoderConfig,
    *,
    seed: int,
    denoise_spec: FaultSpec | None = None,
    progress: Callable[[int, torch.Tensor], None] | None = None,
    device: torch.device | str | None = None,
) -> tuple[MultimodalAutoencoder, TrainResult]:
    """Stage 1 (``denoise_spec=None``: MMAE) or the DAE baseline (inputs corrupted by the spec).

    Trains on ``device`` (None: where ``train`` lives) and returns the autoencoder there."""
    dev = torch.device(device) if device is not None else next(iter(train.modalities.values())).device
    train, val = train.to(dev), val.to(dev)
    ae = _new_autoencoder(train.specs, cfg, seed, denoise_spec is not None, dev)
    data = _stream(train)
    val_data = _stream(val)
    if denoise_spec is not None:
        data.update(_stream(apply_faults(train, denoise_spec, seed=derive_seed(seed, "dae", 0)), "in:"))
        val_data.update(_stream(apply_faults(val, denoise_spec, seed=derive_seed(seed, "dae-val")), "in:"))
    loss_fn, val_fn = _autoencoder_losses(train.names, denoise_spec is not None)

    def on_epoch_start(epoch: int) -> None:
        if denoise_spec is not None and epoch > 1:
            data.update(
                _stream(apply_faults(train, denoise_spec, seed=derive_seed(seed, "dae", epoch)), "in:")
            )

    result = train_ensemble(_Single(ae), loss_fn, data, val_data, val_fn=val_fn, on_epoch_start=on_epoch_start,
                            **_autoencoder_schedule(cfg, seed, dev, progress))
    return _frozen(ae), result


def train_autoencoder_stream(
    train: StreamSplit,
    val: StreamSplit,
    cfg: AutoencoderConfig,
    *,
    seed: int,
    denoise_spec: FaultSpec | None = None,
    progress: Callable[[int, torch.Tensor], None] | None = None,
) -> tuple[MultimodalAutoencoder, TrainResult]:
    """:func:`train_autoencoder` on splits read from disk (datasets larger than memory, issue #13).

    Same model, initialisation, losses, optimiser and early stopping, through the same loop
    (:class:`~mmguard.train.loop.StreamedData`). What differs, by necessity (docs/distributed.md):
    the minibatch order is the block shuffle of :mod:`mmguard.data.stream` (seeded by
    ``(seed, "ae-order", epoch)``), and the DAE's corruption is drawn per minibatch
    (``(seed, "dae", epoch, i)``) instead of for the whole split per epoch — the same fault mix
    (every family of the training mix acts on single samples), another draw. Validation chunks are
    corrupted once, with ``(seed, "dae-val", j)`` for chunk j, so early stopping compares epochs on
    the same data. Memory: one shuffle buffer plus one validation chunk."""
    dev = train.device
    denoise = denoise_spec is not None
    ae = _new_autoencoder(train.specs, cfg, seed, denoise, dev)
    loss_fn, val_fn = _autoencoder_losses(train.names, denoise)

    def batch_of(x: MultimodalBatch, fault_seed: int) -> dict[str, torch.Tensor]:
        out = _stream(x)
        if denoise_spec is not None:
            out.update(_stream(apply_faults(x, denoise_spec, seed=fault_seed), "in:"))
        return out

    def minibatches(epoch: int, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        gen = torch.Generator().manual_seed(derive_seed(seed, "ae-order", epoch))
        for i, x in enumerate(train.minibatches(batch_size, gen)):
            yield batch_of(x, derive_seed(seed, "dae", epoch, i))

    def val_chunks(_epoch: int, _size: int) -> Iterator[dict[str, torch.Tensor]]:
        for j, x in enumerate(val.chunks()):
            yield batch_of(x, derive_seed(seed, "dae-val", j))

    result = train_ensemble(_Single(ae), loss_fn, StreamedData(len(train), minibatches),
                            StreamedData(len(val), val_chunks), val_fn=val_fn,
                            **_autoencoder_schedule(cfg, seed, dev, progress))
    return _frozen(ae), result


@dataclass
class LatentScale:
    """Scalar affine normalization of the joint latent, fitted on clean training latents.

    A *scalar* σ keeps Lipschitz constants unchanged between raw and normalized latents.
    """

    mean: torch.Tensor  # (d,)
    std: torch.Tensor  # ()

    def to_unit(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.mean) / self.std

    def from_unit(self, u: torch.Tensor) -> torch.Tensor:
        return u * self.std + self.mean


def variant_settings(variants: Sequence[str], cfg: ComputeConfig) -> dict[str, torch.Tensor]:
    """Per-member γ, renormalize, τ, contraction flags and borrowed step factors (``borrow``: the member
    whose renormalization factor a ``shrink_only`` member takes, −1 elsewhere) for the full model and
    ablations."""
    gamma, renorm, tau, contract, borrow = [], [], [], [], []
    inf = float("inf")
    variants = list(variants)
    for v in variants:
        if v not in VARIANTS:
            raise ValueError(f"unknown MMSSL variant {v!r}; known: {list(VARIANTS)}")
        if v == "shrink_only" and "full" not in variants:
            raise ValueError("the shrink_only variant takes the full model's step sizes: train it beside 'full'")
        gamma.append(1.0 if v in ("no_amplification", "shrink_only") else cfg.gamma)
        renorm.append(cfg.renormalize and v not in ("no_renormalization", "shrink_only"))
        tau.append(inf if (v == "no_contraction" or cfg.clip_tau is None) else cfg.clip_tau)
        contract.append(v not in ("no_contraction", "clip_only"))
        borrow.append(variants.index("full") if v == "shrink_only" else -1)
    return {
        "gamma": torch.tensor(gamma, dtype=torch.float64),
        "renormalize": torch.tensor(renorm),
        "clip_tau": torch.tensor(tau, dtype=torch.float64),
        "contract": torch.tensor(contract),
        "borrow": torch.tensor(borrow, dtype=torch.long),
    }


@dataclass
class ComputeResult:
    block: ComputeBlock
    variants: tuple[str, ...]
    scale: LatentScale
    thresholds: torch.Tensor  # (G,)
    modality_thresholds: torch.Tensor  # (G, M)
    train: TrainResult
    settings: dict[str, torch.Tensor]


def train_compute_block(
    ae: MultimodalAutoencoder,
    train: MultimodalBatch,
    val: MultimodalBatch,
    spec: FaultSpec,
    cfg: ComputeConfig,
    *,
    seed: int,
    variants: Sequence[str] = VARIANTS,
    progress: Callable[[int, torch.Tensor], None] | None = None,
) -> ComputeResult:
    """Stage 2: encode clean + corrupted latents once, train all variants as one ensemble, calibrate gates.

    Runs on ``ae``'s device; the returned gate thresholds are CPU tensors."""
    variants = tuple(variants)
    g = len(variants)
    m = train.num_modalities
    dev = module_device(ae)
    train, val = train.to(dev), val.to(dev)
    z_clean = encode(ae, train.modalities)
    scale = LatentScale(mean=z_clean.mean(0), std=z_clean.std().clamp_min(1e-6))
    draws_z, draws_mask = [], []
    for k in range(cfg.corruption_draws):
        faulty = apply_faults(train, spec, seed=derive_seed(seed, "stage2", k))
        draws_z.append(scale.to_unit(encode(ae, faulty.modalities)))
        draws_mask.append(faulty.mask_or_clean().float())
    val_faulty = apply_faults(val, spec, seed=derive_seed(seed, "stage2-val"))
    zc_val = scale.to_unit(encode(ae, val.modalities))
    zf_val = scale.to_unit(encode(ae, val_faulty.modalities))
    zc = scale.to_unit(z_clean)
    rows = torch.arange(len(train), device=dev)
    data = {
        "z": zc.unsqueeze(0),
        "zf": draws_z[0].unsqueeze(0),
        "mask": draws_mask[0].unsqueeze(0),
        "row": rows.unsqueeze(0),
    }
    r_val = min(len(val), 64)
    val_data = {
        "z": zc_val.unsqueeze(0),
        "zf": zf_val.unsqueeze(0),
        "mask": val_faulty.mask_or_clean().float().unsqueeze(0),
        "row": torch.arange(len(val), device=dev).unsqueeze(0),
    }
    settings = {k: v.to(dev) for k, v in variant_settings(variants, cfg).items()}
    block = ComputeBlock(
        [derive_seed(seed, "compute")] * g,
        ae.latent_dim,
        m,
        detector_hidden=cfg.detector_hidden,
        embedding=cfg.embedding_dim,
        corrector_hidden=cfg.corrector_hidden,
        bound=cfg.lipschitz_bound,
        activation=cfg.corrector_activation,
        contract=settings["contract"].cpu(),
    ).to(dev)
    block.corrector.set_saturation(1.5 * zc.abs().amax(0))
    decoders = ae.decoders

    def recon_term(
        corrected: torch.Tensor, rows_: torch.Tensor, source: MultimodalBatch, r: int
    ) -> torch.Tensor:
        if cfg.recon_weight == 0 or r == 0:
            return torch.zeros(g, device=dev)
        zr = scale.from_unit(corrected[:, :r]).reshape(g * r, -1)
        idx = rows_[:r]
        total = torch.zeros(g, device=dev)
        for name in ae.names:
            out = decoders[name](zr).reshape(g, r, -1)
            target = source.modalities[name][idx].reshape(1, r, -1)
            total = total + (out - target).pow(2).mean((1, 2))
        return total

    def objective(
        model: nn.Module, batch: Mapping[str, torch.Tensor], source: MultimodalBatch, r: int
    ) -> torch.Tensor:
        scores, corrected = model(batch["zf"])
        det = contrastive_detector_loss(scores, batch["mask"], cfg.margin)
        lat = latent_loss(corrected, batch["z"])
        rec = recon_term(corrected, batch["row"][0], source, r)
        return det + lat + cfg.recon_weight * rec

    def loss_fn(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return objective(model, batch, train, min(cfg.recon_samples, batch["row"].shape[1]))

    def val_fn(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return objective(model, batch, val, r_val)

    def on_epoch_start(epoch: int) -> None:
        k = (epoch - 1) % len(draws_z)
        data["zf"], data["mask"] = draws_z[k].unsqueeze(0), draws_mask[k].unsqueeze(0)

    def grad_hook() -> None:
        modulate_gradients(
            block.detection_parameters(),
            block.correction_parameters(),
            gamma=settings["gamma"],
            renormalize=settings["renormalize"],
            clip_tau=settings["clip_tau"],
            borrow=settings["borrow"],
        )

    def optimizer(params: list[nn.Parameter]) -> torch.optim.Optimizer:
        if cfg.optimizer == "adam":
            return torch.optim.Adam(params, lr=cfg.lr)
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)

    result = train_ensemble(
        block,
        loss_fn,
        data,
        val_data,
        member_stream=torch.zeros(g, dtype=torch.long, device=dev),
        stream_seeds=[derive_seed(seed, "compute-order")],
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        val_fn=val_fn,
        on_epoch_start=on_epoch_start,
        patience=cfg.patience,
        progress=progress,
        optimizer=optimizer,
        grad_hook=grad_hook,
        after_step=block.corrector.project,
        data_parallel=False,  # the detector loss normalises by per-batch counts: not a row mean
    )
    block.eval()
    for p in block.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        clean_scores = block.detector(zc_val.unsqueeze(0).expand(g, -1, -1))  # (G, Nv, M)
    clean_scores = clean_scores.cpu()
    thresholds = calibrate_threshold(sample_scores(clean_scores), cfg.false_alarm_rate)
    mod_thr = calibrate_threshold(clean_scores.transpose(1, 2), cfg.false_alarm_rate)
    return ComputeResult(
        block=block,
        variants=variants,
        scale=scale,
        thresholds=thresholds,
        modality_thresholds=mod_thr,
        train=result,
        settings={k: v.cpu() for k, v in settings.items()},
    )


def summary(result: TrainResult) -> dict[str, Any]:
    """JSON-ready training summary (per member best epoch and validation loss)."""
    return {
        "best_epoch": result.best_epoch.tolist(),
        "best_val": result.best_val.tolist(),
        "epochs_run": result.epochs_run,
        "val_history": [v.tolist() for v in result.val_history],
    }
