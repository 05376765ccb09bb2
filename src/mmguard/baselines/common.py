"""Shared pieces of the MMSSL paper's table-1 baselines (``mmfr``, ``mmcf``, ``ccm``, ``mmgan``,
``mmugan``; docs/baselines.md). Not a guard itself.

* **Building blocks** — :func:`modality_encoder` / :func:`modality_decoder` return the per-modality
  encoders and decoders of the MMSSL stage-1 autoencoder (:mod:`mmguard.mmssl.autoencoder`: conv
  blocks for images, Linear-ReLU-Linear for vectors) for an :class:`AutoencoderConfig`, so every
  baseline shares the MMAE's architecture where it has an encoder or a decoder.
* **Training** — :func:`fit_module` runs the one training loop
  (:func:`mmguard.train.loop.train_ensemble`, one member) on data *streams*: the clean standardised
  split (keys = modality names), and — for a method that trains on faulty data — a corruption draw
  of it from the fault mix (keys ``in:<name>`` and the fault mask ``mask``), **drawn afresh every
  epoch** (as the DAE, :func:`mmguard.mmssl.stages.train_autoencoder`), plus any per-sample random
  tensors the method needs (``draws``: modality-dropout masks, reparameterisation noise, GAIN hints),
  also redrawn every epoch from CPU generators (the same numbers on every device). Validation uses
  one fixed draw of each, so early stopping compares epochs on the same data; the validation split
  is only used for early stopping (and, by the base class, for calibration).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from mmguard.data.model import ModalityKind, ModalitySpec, MultimodalBatch
from mmguard.errors import SpecError
from mmguard.faults import FaultSpec, apply_faults
from mmguard.mmssl.autoencoder import DenseImageEncoder, ImageDecoder, ImageEncoder, VectorDecoder, VectorEncoder
from mmguard.mmssl.config import AutoencoderConfig
from mmguard.seeding import derive_seed
from mmguard.train.loop import Batch, TrainResult, train_ensemble

CHUNK = 512
#: per-sample random tensors of one split for one epoch: draws(epoch, n, generator) -> {key: (n, ...)}
Draws = Callable[[int, int, torch.Generator], dict[str, torch.Tensor]]


# ====================================================================== building blocks
def check_image(spec: ModalitySpec, cfg: AutoencoderConfig) -> None:
    """An image modality must be divisible by 2^len(image_channels) (one-line SpecError)."""
    factor = 2 ** len(cfg.image_channels)
    if len(spec.shape) != 3 or spec.shape[1] % factor or spec.shape[2] % factor:
        raise SpecError(
            f"image modality {spec.name!r} of shape {tuple(spec.shape)}: height and width "
            f"must be divisible by {factor} for {len(cfg.image_channels)} conv blocks"
        )


def code_size(spec: ModalitySpec, cfg: AutoencoderConfig) -> int:
    """Size of a modality's code: ``image_code`` for images, ``sensor_code`` for vectors."""
    return cfg.image_code if spec.kind == ModalityKind.IMAGE else cfg.sensor_code


def modality_encoder(spec: ModalitySpec, cfg: AutoencoderConfig) -> nn.Module:
    """The MMAE's encoder of one modality: (N, *shape) → (N, :func:`code_size`)."""
    if spec.kind == ModalityKind.IMAGE:
        check_image(spec, cfg)
        if cfg.image_encoder == "conv":
            return ImageEncoder(spec.shape, cfg.image_channels, cfg.image_code)
        return DenseImageEncoder(spec.shape, cfg.image_hidden, cfg.image_code)
    if spec.kind == ModalityKind.VECTOR:
        return VectorEncoder(spec.size, cfg.sensor_hidden, cfg.sensor_code, cfg.sensor_encoder)
    raise SpecError(f"the table-1 baselines handle image and vector modalities; {spec.name!r} is {spec.kind.value}")


def modality_decoder(spec: ModalitySpec, cfg: AutoencoderConfig, latent: int) -> nn.Module:
    """The MMAE's decoder of one modality: (N, latent) → (N, *shape)."""
    if spec.kind == ModalityKind.IMAGE:
        check_image(spec, cfg)
        return ImageDecoder(spec.shape, cfg.image_channels, latent)
    if spec.kind == ModalityKind.VECTOR:
        return VectorDecoder(latent, cfg.sensor_hidden, spec.size)
    raise SpecError(f"the table-1 baselines handle image and vector modalities; {spec.name!r} is {spec.kind.value}")


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error per sample (N,) over every feature axis."""
    return (pred - target).pow(2).reshape(pred.shape[0], -1).mean(1)


def residuals(out: Mapping[str, torch.Tensor], x: Mapping[str, torch.Tensor], names: Sequence[str]) -> torch.Tensor:
    """(N, M) per-sample, per-modality mean squared residual between ``out`` and ``x``."""
    return torch.stack([mse(out[n], x[n]) for n in names], 1)


def keep_where(flagged: torch.Tensor, new: Mapping[str, torch.Tensor], old: Mapping[str, torch.Tensor],
               names: Sequence[str]) -> dict[str, torch.Tensor]:
    """Modality m of sample n from ``new`` where ``flagged[n, m]``, else ``old`` bit for bit."""
    out = {}
    for m, n in enumerate(names):
        f = flagged[:, m].reshape(-1, *([1] * (old[n].ndim - 1)))
        out[n] = torch.where(f, new[n].to(old[n].dtype), old[n])
    return out


# ====================================================================== training
def init_module(factory: Callable[[], nn.Module], seed: int, label: str, device: torch.device) -> nn.Module:
    """Build a module on the CPU from a seeded global generator (the same weights on every device)
    and move it to ``device``."""
    torch.manual_seed(derive_seed(seed, label, "init"))
    return factory().to(device)


def member(batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The one member's view of a loop minibatch: the leading stream axis dropped."""
    return {k: v[0] for k, v in batch.items()}


def inputs(b: Mapping[str, torch.Tensor], names: Sequence[str]) -> dict[str, torch.Tensor]:
    """The model inputs of a member batch: the corrupted draw where there is one, else the clean data."""
    return {n: b.get("in:" + n, b[n]) for n in names}


def fault_mask(b: Mapping[str, torch.Tensor], names: Sequence[str]) -> torch.Tensor:
    """(B, M) float fault mask of a member batch (zeros without a corruption draw)."""
    if "mask" in b:
        return b["mask"]
    first = b[names[0]]
    return torch.zeros(first.shape[0], len(names), device=first.device)


def _stream(values: Mapping[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    return {prefix + k: v.unsqueeze(0) for k, v in values.items()}


def _corrupted(batch: MultimodalBatch, spec: FaultSpec, seed: int) -> dict[str, torch.Tensor]:
    faulty = apply_faults(batch, spec, seed=seed)
    return {**_stream(faulty.modalities, "in:"), "mask": faulty.mask_or_clean().float().unsqueeze(0)}


def _draw(draws: Draws | None, epoch: int, n: int, seed: int, label: str, device: torch.device
          ) -> dict[str, torch.Tensor]:
    if draws is None:
        return {}
    gen = torch.Generator().manual_seed(derive_seed(seed, label, "draws", epoch))
    return {k: v.to(device).unsqueeze(0) for k, v in draws(epoch, n, gen).items()}


def chunked(fn: Callable[[nn.Module, Batch], torch.Tensor]) -> Callable[[nn.Module, Batch], torch.Tensor]:
    """A validation function computing ``fn`` (a per-member *mean* over samples) in chunks of
    :data:`CHUNK` samples (bounded memory) and averaging them by size."""

    def run(model: nn.Module, batch: Batch) -> torch.Tensor:
        n = next(iter(batch.values())).shape[1]
        total = None
        for i in range(0, n, CHUNK):
            part = {k: v[:, i : i + CHUNK] for k, v in batch.items()}
            value = fn(model, part) * part[next(iter(part))].shape[1]
            total = value if total is None else total + value
        return total / n  # type: ignore[operator]

    return run


def fit_module(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Batch], torch.Tensor],
    train: MultimodalBatch,
    val: MultimodalBatch,
    cfg: AutoencoderConfig,
    *,
    seed: int,
    label: str,
    spec: FaultSpec | None = None,
    draws: Draws | None = None,
    val_fn: Callable[[nn.Module, Batch], torch.Tensor] | None = None,
    parameters: Sequence[nn.Parameter] | None = None,
    progress: Callable[[int, torch.Tensor], None] | None = None,
    **loop: Any,
) -> TrainResult:
    """Train ``model`` with the one training loop on the standardised ``train`` split; early stopping
    on ``val`` (``val_fn``, default ``loss_fn``, computed in chunks); the best state is restored.

    ``spec``: the fault mix the inputs are corrupted with (fresh draw every epoch; ``None``: clean
    inputs). ``draws``: per-sample random tensors (fresh every epoch). ``loss_fn(model, batch)``
    returns a (1,) loss of the minibatch (use :func:`member` to drop the stream axis). Extra keyword
    arguments go to :func:`~mmguard.train.loop.train_ensemble` (e.g. ``phases``). The model is left
    in eval mode with its parameters frozen."""
    dev = next(iter(train.modalities.values())).device
    data = _stream(train.modalities)
    val_data = _stream(val.modalities)
    if spec is not None:
        data.update(_corrupted(train, spec, derive_seed(seed, label, "faults", 0)))
        val_data.update(_corrupted(val, spec, derive_seed(seed, label, "faults-val")))
    data.update(_draw(draws, 1, len(train), seed, label, dev))
    val_data.update(_draw(draws, 0, len(val), seed, label + "-val", dev))

    def on_epoch_start(epoch: int) -> None:
        if epoch == 1:
            return
        if spec is not None:
            data.update(_corrupted(train, spec, derive_seed(seed, label, "faults", epoch)))
        data.update(_draw(draws, epoch, len(train), seed, label, dev))

    result = train_ensemble(
        model,
        loss_fn,
        data,
        val_data,
        member_stream=torch.zeros(1, dtype=torch.long, device=dev),
        stream_seeds=[derive_seed(seed, label, "order")],
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        val_fn=chunked(val_fn or loss_fn),
        on_epoch_start=on_epoch_start,
        patience=cfg.patience,
        parameters=parameters,
        progress=progress,
        **loop,
    )
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return result


def train_summary(result: TrainResult) -> dict[str, Any]:
    """JSON-ready training summary of a one-member run."""
    return {
        "best_epoch": int(result.best_epoch[0]),
        "best_val": float(result.best_val[0]),
        "epochs_run": result.epochs_run,
        "val_history": [float(v[0]) for v in result.val_history],
    }
