"""The training stages of EMMA's experiments (thesis sections 5.5 and 6.3.1), batched.

Data are *stream dicts*: ``{"m0": (S, N, *shape_0), ..., "y": (S, N), "mask": (S, N, M)}``
— one stream per seed (its own corruption draw). Members map to streams with
``member_stream`` (G,). Every stage goes through :func:`mmguard.train.loop.train_ensemble`.

* stage 1a — one tied DAE per modality on clean training data (chapter 4, appendix B);
* base-model — the MMN on clean data;
* model-without — base-model fine-tuned on the corrupted mix (data augmentation);
* model-with — EMMA + the MMN (initialised from base-model) trained end to end on the
  corrupted mix with eq. 5.10, optionally with the chapter-8 annealing schedule.

Device: stages run where their stream dicts live; modules are initialised on the CPU (the same
numbers on every device) and moved there (:func:`module_device`). :func:`predict` takes streams on
any device and returns CPU tensors.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from mmguard.emma.attention import EmmaAttention
from mmguard.emma.conv_potential import ConvTiedDAE
from mmguard.emma.losses import emma_objective, task_loss
from mmguard.emma.network import ConcatPredictor, EmmaNetwork, select_dae
from mmguard.emma.potential import TiedDAE, fit_dae
from mmguard.emma.unified import UnifiedPredictor
from mmguard.train.ensemble import EnsembleMLP
from mmguard.train.loop import TrainResult, train_ensemble

Streams = dict[str, torch.Tensor]
#: EMMA always trains in float32 (docs/devices.md): its networks are tiny (a GPU step is launch-bound,
#: bf16 saves nothing) and eq. 5.3 compares potentials with training minima, eq. 5.5 thresholds them.
EMMA_PRECISION = "fp32"


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (CPU for an empty module)."""
    first = next(itertools.chain(module.parameters(), module.buffers()), None)
    return torch.device("cpu") if first is None else first.device


def modality_keys(num_modalities: int) -> list[str]:
    return [f"m{i}" for i in range(num_modalities)]


def inputs_of(batch: Streams, num_modalities: int) -> list[torch.Tensor]:
    return [batch[k] for k in modality_keys(num_modalities)]


def concat_inputs(xs: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([x.reshape(x.shape[0], x.shape[1], -1) for x in xs], dim=-1)


@dataclass(frozen=True)
class StageSettings:
    """Optimisation settings of one stage (issue #3: Adam, batch 32, up to 35 epochs)."""

    epochs: int = 35
    batch_size: int = 32
    lr: float = 1e-3
    patience: int | None = None


class MLPClassifier(nn.Module):
    """The MMN without EMMA: an :class:`EnsembleMLP` on the concatenated modalities.

    ``input_mask`` (G, D) optionally multiplies each member's input. A member whose mask
    zeroes a modality is exactly an MLP on the other modalities: the weights reading the
    zeroed inputs receive zero gradient and never change. This lets the base-model and the
    "other modalities only" reference MLPs of figure 6.8 train as one ensemble.
    """

    def __init__(self, mlp: EnsembleMLP, num_modalities: int, input_mask: torch.Tensor | None = None) -> None:
        super().__init__()
        self.mlp = mlp
        self.num_modalities = num_modalities
        self.register_buffer("input_mask", input_mask)

    def forward(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        x = concat_inputs(xs)
        if self.input_mask is not None:
            x = x * self.input_mask.unsqueeze(1)
        return self.mlp(x)


def mlp_sizes(in_features: int, hidden: Sequence[int], num_classes: int) -> list[int]:
    out = 1 if num_classes == 2 else num_classes
    return [in_features, *hidden, out]


@dataclass(frozen=True)
class ImagePotential:
    """How image modalities (C, H, W) get their potential: ``flat`` — the thesis's dense tied DAE on the
    flattened image (section 4.4's limit); ``conv`` — the convolutional tied DAE of
    :mod:`mmguard.emma.conv_potential` with ``channels`` feature maps of ``kernel`` x ``kernel``."""

    kind: str = "flat"
    channels: int = 16
    kernel: int = 8
    stride: int = 4
    padding: int = 2


def train_daes(
    train_clean: Streams,
    seeds: Sequence[int],
    num_modalities: int,
    *,
    hidden: int = 12,
    epochs: int = 30,
    batch_size: int = 64,
    sigma: float = 0.01,
    lr: float = 1e-3,
    image: ImagePotential | None = None,
) -> list[TiedDAE | ConvTiedDAE]:
    """One tied DAE per modality and seed, on clean training data (appendix B defaults).

    Modalities of the same kind and size train together as one ensemble of (modalities x seeds)
    members — independent members, one loop. Member (i, s) draws its initialisation, data order and
    denoising noise from ``derive_seed(s, "dae", i)``. Image modalities (streams of shape
    (S, N, C, H, W)) get the convolutional potential when ``image.kind == "conv"``.
    Returns one frozen potential (S members) per modality, in modality order.
    """
    from mmguard.faults.rng import derive_seed

    image = image or ImagePotential()
    keys = modality_keys(num_modalities)
    flat = {
        i: train_clean[k].reshape(train_clean[k].shape[0], train_clean[k].shape[1], -1)
        for i, k in enumerate(keys)
    }
    kinds: dict[tuple, list[int]] = {}
    for i, k in enumerate(keys):
        shape = tuple(train_clean[k].shape[2:])
        key = ("conv", shape) if image.kind == "conv" and len(shape) == 3 else ("tied", flat[i].shape[-1])
        kinds.setdefault(key, []).append(i)
    s_count = len(seeds)
    out: dict[int, TiedDAE | ConvTiedDAE] = {}
    for (kind, size), mods in kinds.items():
        member_seeds = [derive_seed(s, "dae", i) for i in mods for s in seeds]
        data = torch.cat(
            [flat[i].expand(s_count, -1, -1) if flat[i].shape[0] == 1 else flat[i] for i in mods]
        )
        dae: TiedDAE | ConvTiedDAE
        if kind == "conv":
            dae = ConvTiedDAE(member_seeds, size, image.channels, image.kernel, image.stride, image.padding,
                              stream=11)
        else:
            dae = TiedDAE(member_seeds, size, hidden, stream=11)
        dae = dae.to(data.device)
        fit_dae(dae, data, member_seeds, epochs=epochs, batch_size=batch_size, sigma=sigma, lr=lr, stream=21)
        for j, i in enumerate(mods):
            out[i] = select_dae(dae, torch.arange(j * s_count, (j + 1) * s_count))
    return [out[i] for i in range(num_modalities)]


def classifier_loss(
    weights: torch.Tensor, num_modalities: int
) -> Callable[[nn.Module, Streams], torch.Tensor]:
    def loss(model: nn.Module, batch: Streams) -> torch.Tensor:
        return task_loss(model(inputs_of(batch, num_modalities)), batch["y"], weights)

    return loss


def train_classifier(
    model: MLPClassifier,
    train: Streams,
    val: Streams,
    *,
    member_stream: torch.Tensor,
    stream_seeds: Sequence[int],
    weights: torch.Tensor,
    settings: StageSettings,
    progress=None,
    refresh: Callable[[int], None] | None = None,
) -> TrainResult:
    """base-model (clean streams) or model-without (corrupted streams); early stopping on val loss.

    ``refresh(epoch)``, when given, runs at the start of every epoch (e.g. a new corruption draw).
    """
    loss = classifier_loss(weights.to(module_device(model)), model.num_modalities)
    return train_ensemble(
        model,
        loss,
        train,
        val,
        member_stream=member_stream,
        stream_seeds=stream_seeds,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        lr=settings.lr,
        on_epoch_start=refresh,
        patience=settings.patience,
        progress=progress,
        precision=EMMA_PRECISION,
    )


def copy_members(dst: nn.Module, src: nn.Module, index: torch.Tensor) -> None:
    """dst members g ← src members index[g] (same architecture, leading ensemble axis)."""
    with torch.no_grad():
        for (kd, vd), (ks, vs) in zip(dst.state_dict().items(), src.state_dict().items(), strict=True):
            if kd != ks:
                raise ValueError(f"parameter mismatch {kd} vs {ks}")
            vd.copy_(vs[index.to(vs.device)])


@dataclass(frozen=True)
class EmmaHyper:
    """Per-member hyperparameters of model-with (thesis table 6.2's grid axes)."""

    rho: torch.Tensor
    lambda_c: torch.Tensor
    lambda_e: torch.Tensor


@dataclass(frozen=True)
class AnnealSettings:
    """Chapter 8's temperature annealing.

    Start neutral: g_a = 1, b_a = 0, the MMN's first layer divided by tanh(1/M) and rho at
    ``rho_start`` (importance ~ uniform, so EMMA passes beta * x * W / tanh(1/M) ~ x W).
    Then cool geometrically to each member's target rho over ``cool_epochs`` epochs. With
    ``patience`` set, a member stops cooling once its validation loss has not improved
    for ``patience`` epochs (the thesis's "similar approach to Early Stopping").
    """

    rho_start: float = 1e-6
    cool_epochs: int = 15
    patience: int | None = None


def build_emma(
    daes: Sequence[TiedDAE | ConvTiedDAE],
    base: MLPClassifier,
    member_seed_index: torch.Tensor,
    rho: torch.Tensor,
    *,
    neutral_start: bool = False,
    unified_rank: int | None = None,
    unified_seeds: Sequence[int] | None = None,
) -> EmmaNetwork:
    """EMMA + MMN for G members; member g uses the DAEs and base weights of seed member_seed_index[g].

    Built on the CPU, returned on ``base``'s device (``rho`` may live on either)."""
    g = int(member_seed_index.numel())
    m = len(daes)
    attention = EmmaAttention(g, m, rho)
    mlp = EnsembleMLP([0] * g, base.mlp.sizes)
    copy_members(mlp, base.mlp, member_seed_index)
    if neutral_start:
        with torch.no_grad():
            mlp.layers[0].weight.div_(math.tanh(1.0 / m))
    predictor: nn.Module = ConcatPredictor(mlp)
    if unified_rank is not None:  # thesis chapter 7: endogenous masks + cross-modal module (emma/unified.py)
        predictor = UnifiedPredictor(mlp, [d.in_features for d in daes], list(unified_seeds or range(g)),
                                     unified_rank)
    net = EmmaNetwork([select_dae(d, member_seed_index) for d in daes], attention, predictor)
    return net.to(module_device(base))


def train_with(
    net: EmmaNetwork,
    train: Streams,
    val: Streams,
    *,
    member_stream: torch.Tensor,
    stream_seeds: Sequence[int],
    weights: torch.Tensor,
    hyper: EmmaHyper,
    settings: StageSettings,
    anneal: AnnealSettings | None = None,
    progress=None,
    refresh: Callable[[int], None] | None = None,
) -> TrainResult:
    """model-with: end-to-end training with eq. 5.10; constraints projected after every step.

    ``refresh(epoch)``, when given, runs at the start of every epoch before the annealing step.
    """
    m = net.attention.num_modalities
    att = net.attention
    device = module_device(net)
    weights = weights.to(device)
    hyper = EmmaHyper(rho=hyper.rho.to(device), lambda_c=hyper.lambda_c.to(device), lambda_e=hyper.lambda_e.to(device))

    def loss(model: nn.Module, batch: Streams) -> torch.Tensor:
        logits, out = model(inputs_of(batch, m))
        return emma_objective(
            logits, batch["y"], weights, out, batch["mask"], att.g_a, att.b_a, hyper.lambda_c, hyper.lambda_e
        )

    def val_loss(model: nn.Module, batch: Streams) -> torch.Tensor:
        logits, _ = model(inputs_of(batch, m))
        return task_loss(logits, batch["y"], weights)

    on_epoch_start = refresh
    progress_cb = progress
    if anneal is not None:
        target = hyper.rho.clone()
        start = torch.minimum(torch.full_like(target, anneal.rho_start), target)
        current = start.clone()
        frozen = torch.zeros_like(target, dtype=torch.bool)
        best = torch.full_like(target, float("inf"))
        stale = torch.zeros_like(target, dtype=torch.long)

        def on_epoch_start(epoch: int) -> None:  # noqa: F811 - closure
            if refresh is not None:
                refresh(epoch)
            frac = min(1.0, (epoch - 1) / max(1, anneal.cool_epochs))
            sched = start * (target / start) ** frac
            current.copy_(torch.where(frozen, current, sched))
            att.rho.copy_(current)

        def progress_cb(epoch: int, val: torch.Tensor) -> None:
            improved = val < best
            best.copy_(torch.where(improved, val, best))
            stale.copy_(torch.where(improved, torch.zeros_like(stale), stale + 1))
            if anneal.patience is not None:
                frozen.copy_(frozen | (stale >= anneal.patience))
            if progress is not None:
                progress(epoch, val)

    return train_ensemble(
        net,
        loss,
        train,
        val,
        member_stream=member_stream,
        stream_seeds=stream_seeds,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        lr=settings.lr,
        val_fn=val_loss,
        after_step=att.project_,
        on_epoch_start=on_epoch_start,
        patience=settings.patience,
        parameters=[p for p in net.parameters() if p.requires_grad],
        progress=progress_cb,
        precision=EMMA_PRECISION,
    )


@torch.no_grad()
def predict(
    model: nn.Module, data: Streams, member_stream: torch.Tensor, num_modalities: int, chunk: int = 4096
) -> dict[str, torch.Tensor]:
    """Logits (and for EMMA: alpha, beta, modal and total energies) for every member on full streams.

    ``data`` may live on any device: each chunk is moved to the model's device; results are on the CPU."""
    model.eval()
    device = module_device(model)
    n = data["m0"].shape[1]
    outs: dict[str, list[torch.Tensor]] = {}
    for start in range(0, n, chunk):
        xs = [data[k][member_stream.to(data[k].device), start : start + chunk].to(device)
              for k in modality_keys(num_modalities)]
        res = model(xs)
        if isinstance(res, tuple):
            logits, att = res
            parts = {
                "logits": logits,
                "alpha": att.alpha,
                "beta": att.beta,
                "psi": att.psi,
                "modal_energy": att.modal_energy,
                "total_energy": att.total_energy,
            }
        else:
            parts = {"logits": res}
        for k, v in parts.items():
            outs.setdefault(k, []).append(v.cpu())
    return {k: torch.cat(v, dim=1) for k, v in outs.items()}
