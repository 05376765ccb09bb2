"""The downstream model a guard protects: a plain multimodal predictor (quality control, process
control), trained with the one training loop (:func:`mmguard.train.loop.train_ensemble`).

Architecture (decision, docs/downstream.md): one encoder per modality — images: Conv2d(k4, s2, p1)
+ ReLU blocks, flatten, Linear → ``code``; vectors and time series: flatten → Linear → ReLU →
Linear → ``code`` — the codes concatenated → Linear → ReLU → Linear head (classes, or one output
for regression). Inputs are standardised with the training statistics.

Two ways to train it (both early-stopped on the validation split):

* ``clean`` — on the clean training split only: the model a user has today;
* ``peer`` — the strong robustness peer without any guard: the same model trained on a fresh
  draw of the fault mix every epoch *and* with modality dropout (each sample's modality code
  zeroed with probability ``modality_dropout``, Neverova et al., ModDrop, 2015), clean targets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.nn import functional as F

from mmguard.data.model import ModalityKind, ModalitySpec, MultimodalBatch
from mmguard.errors import DataError
from mmguard.faults import FaultSpec, apply_faults
from mmguard.seeding import derive_seed
from mmguard.train.loop import train_ensemble

Task = Literal["binary", "multiclass", "regression"]
CHUNK = 1024


class DownstreamConfig(BaseModel):
    """Settings of the downstream model (defaults: docs/downstream.md)."""

    model_config = ConfigDict(extra="forbid")

    image_channels: list[int] = Field(default_factory=lambda: [16, 32, 32])
    hidden: int = Field(128, ge=1)
    code: int = Field(32, ge=1)
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    patience: int | None = Field(6, ge=1)
    modality_dropout: float = Field(0.25, ge=0, lt=1)
    norm: Literal["none", "batch"] = Field("none", description="batch: a BatchNorm after each encoder's first "
                                           "layer (what AdaBN and TENT adapt, docs/drift.md)")
    select_by: Literal["loss", "f1"] = Field(
        "loss", description="early stopping / model selection on the validation loss, or (classification) on "
        "1 − validation macro F1 — for data where the loss rises long before the predictions get worse")


def _encoder(spec: ModalitySpec, cfg: DownstreamConfig) -> nn.Module:
    if spec.kind == ModalityKind.IMAGE:
        c, h, w = spec.shape
        factor = 2 ** len(cfg.image_channels)
        if h % factor or w % factor:
            raise DataError(f"image modality {spec.name!r} {h}x{w}: height and width must be divisible by {factor}")
        layers: list[nn.Module] = []
        prev = c
        for ch in cfg.image_channels:
            layers += [nn.Conv2d(prev, ch, 4, 2, 1)] + [nn.BatchNorm2d(ch)] * (cfg.norm == "batch") + [nn.ReLU()]
            prev = ch
        return nn.Sequential(*layers, nn.Flatten(1), nn.Linear(prev * (h // factor) * (w // factor), cfg.code))
    norm = [nn.BatchNorm1d(cfg.hidden)] if cfg.norm == "batch" else []
    return nn.Sequential(nn.Flatten(1), nn.Linear(spec.size, cfg.hidden), *norm, nn.ReLU(),
                         nn.Linear(cfg.hidden, cfg.code))


class MultimodalPredictor(nn.Module):
    """Per-modality encoders → concatenated codes (optionally dropped per modality) → head."""

    def __init__(self, specs: Sequence[ModalitySpec], outputs: int, cfg: DownstreamConfig) -> None:
        super().__init__()
        self.names = tuple(s.name for s in specs)
        self.encoders = nn.ModuleDict({s.name: _encoder(s, cfg) for s in specs})
        self.head = nn.Sequential(nn.Linear(cfg.code * len(specs), cfg.hidden), nn.ReLU(),
                                  nn.Linear(cfg.hidden, outputs))

    def forward(self, xs: Mapping[str, torch.Tensor], keep: torch.Tensor | None = None) -> torch.Tensor:
        codes = torch.stack([self.encoders[n](xs[n]) for n in self.names], dim=1)  # (N, M, code)
        if keep is not None:
            codes = codes * keep.unsqueeze(-1).to(codes.dtype)
        return self.head(codes.flatten(1))


class _Single(nn.Module):
    def __init__(self, net: MultimodalPredictor) -> None:
        super().__init__()
        self.net = net


def task_of_target(y: torch.Tensor) -> Task:
    if y.is_floating_point() and not bool((y == y.round()).all()):
        return "regression"
    values = torch.unique(y)
    if int(values.min()) < 0:
        raise DataError("class labels must be 0..K-1")
    return "binary" if int(values.max()) <= 1 else "multiclass"


class Downstream:
    """A trained downstream predictor for one task (standardised inputs in, predictions out).

    ``prior`` is the training class frequency (classification), used by test-time adaptation.
    """

    def __init__(self, net: MultimodalPredictor, task: Task, classes: int, y_mean: float, y_std: float,
                 prior: list[float] | None = None) -> None:
        self.net, self.task, self.classes = net.eval(), task, classes
        self.y_mean, self.y_std = y_mean, y_std
        self.prior = prior

    @torch.no_grad()
    def outputs(self, batch: MultimodalBatch, net: nn.Module | None = None) -> torch.Tensor:
        """Raw network outputs (N, classes) — logits — or (N, 1) standardised regression values."""
        net = net or self.net
        outs = []
        for i in range(0, len(batch), CHUNK):
            outs.append(net({n: v[i:i + CHUNK] for n, v in batch.modalities.items()}))
        return torch.cat(outs)

    def decode(self, out: torch.Tensor) -> torch.Tensor:
        """Class labels (N,) or regression values (N,) in target units from :meth:`outputs`."""
        if self.task == "regression":
            return out[:, 0] * self.y_std + self.y_mean
        return out.argmax(1)

    def predict(self, batch: MultimodalBatch) -> torch.Tensor:
        """Class labels (N,) or regression values (N,) in target units."""
        return self.decode(self.outputs(batch))


def fit_downstream(
    train: MultimodalBatch,
    val: MultimodalBatch,
    y_train: torch.Tensor,
    y_val: torch.Tensor,
    cfg: DownstreamConfig,
    *,
    seed: int,
    mode: Literal["clean", "peer"] = "clean",
    fault_spec: FaultSpec | None = None,
) -> tuple[Downstream, dict[str, Any]]:
    """Train on standardised clean splits (``peer``: fault mix + modality dropout, fresh per epoch)."""
    if mode == "peer" and fault_spec is None:
        raise ValueError("the peer needs the fault mix it is trained on")
    task = task_of_target(y_train)
    classes = int(torch.cat([y_train, y_val]).max()) + 1 if task != "regression" else 1
    y_mean = float(y_train.double().mean()) if task == "regression" else 0.0
    y_std = float(y_train.double().std().clamp_min(1e-12)) if task == "regression" else 1.0

    def target(y: torch.Tensor) -> torch.Tensor:
        return ((y.double() - y_mean) / y_std).float() if task == "regression" else y.long()

    torch.manual_seed(derive_seed(seed, "downstream", mode, "init"))
    net = MultimodalPredictor(train.specs, classes if task != "regression" else 1, cfg)
    names = train.names
    gen = torch.Generator().manual_seed(derive_seed(seed, "downstream", mode, "dropout"))

    def stream(batch: MultimodalBatch) -> dict[str, torch.Tensor]:
        return {f"x:{n}": batch.modalities[n].unsqueeze(0) for n in names}

    data = {**stream(train), "y": target(y_train).unsqueeze(0)}
    val_data = {**stream(val), "y": target(y_val).unsqueeze(0)}
    if mode == "peer":
        data["keep"] = torch.ones(1, len(train), len(names))

    def on_epoch_start(epoch: int) -> None:
        if mode != "peer":
            return
        faulty = apply_faults(train, fault_spec, seed=derive_seed(seed, "downstream", "peer", epoch))
        data.update(stream(faulty))
        keep = torch.rand(len(train), len(names), generator=gen) >= cfg.modality_dropout
        keep[~keep.any(1), 0] = True  # never drop every modality of a sample
        data["keep"] = keep.float().unsqueeze(0)

    # classes weighted by inverse training frequency: a rare class (a quality defect) is not ignored
    weight = None
    if task != "regression":
        counts = torch.bincount(y_train.long(), minlength=classes).double().clamp_min(1.0)
        weight = (counts.sum() / (classes * counts)).float()

    def loss_of(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if task == "regression":
            return F.mse_loss(out[:, 0], y)
        return F.cross_entropy(out, y, weight=weight)

    def loss_fn(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        xs = {n: batch[f"x:{n}"][0] for n in names}
        keep = batch["keep"][0] if "keep" in batch else None
        return loss_of(model.net(xs, keep), batch["y"][0]).reshape(1)

    def val_fn(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        n = batch["y"].shape[1]
        total, outs = torch.zeros(()), []
        for i in range(0, n, CHUNK):
            xs = {m: batch[f"x:{m}"][0, i:i + CHUNK] for m in names}
            out = model.net(xs)
            outs.append(out)
            total = total + loss_of(out, batch["y"][0, i:i + CHUNK]) * xs[names[0]].shape[0]
        if cfg.select_by == "f1" and task != "regression":
            return (1.0 - macro_f1(torch.cat(outs).argmax(1), batch["y"][0], classes)).reshape(1)
        return (total / n).reshape(1)

    result = train_ensemble(_Single(net), loss_fn, data, val_data, member_stream=torch.zeros(1, dtype=torch.long),
                            stream_seeds=[derive_seed(seed, "downstream", mode, "order")], epochs=cfg.epochs,
                            batch_size=cfg.batch_size, lr=cfg.lr, val_fn=val_fn, on_epoch_start=on_epoch_start,
                            patience=cfg.patience)
    report = {"task": task, "classes": classes, "best_epoch": int(result.best_epoch[0]),
              "best_val": float(result.best_val[0]), "epochs_run": result.epochs_run}
    prior = None
    if task != "regression":
        prior = (torch.bincount(y_train.long(), minlength=classes).double() / len(y_train)).tolist()
    return Downstream(net, task, classes, y_mean, y_std, prior), report


def macro_f1(pred: torch.Tensor, y: torch.Tensor, classes: int) -> torch.Tensor:
    """Macro F1 over the classes present in ``y`` or ``pred`` (as scikit-learn's ``average="macro"``)."""
    k = classes
    conf = torch.bincount(y.long() * k + pred.long(), minlength=k * k).reshape(k, k).double()
    tp = conf.diagonal()
    support, predicted = conf.sum(1), conf.sum(0)
    present = (support + predicted) > 0
    f1 = 2 * tp / (support + predicted).clamp_min(1)
    return f1[present].mean()


def downstream_metric(pred: torch.Tensor, y: torch.Tensor, task: Task) -> dict[str, float]:
    """The task metric: F1 of class 1 (binary), macro F1 (multi-class), MAE and R² (regression).

    ``quality`` is what retention divides (higher = better): the F1, or 1 / MAE for regression,
    so that retention = MAE(clean model, clean input) / MAE(option) — well defined even when the
    R² of a weak model is near 0.
    """
    if task == "regression":
        y64, p64 = y.double(), pred.double()
        ss_res = float((y64 - p64).pow(2).sum())
        ss_tot = float((y64 - y64.mean()).pow(2).sum())
        mae = float((y64 - p64).abs().mean())
        return {"score": mae, "r2": 1.0 - ss_res / max(ss_tot, 1e-12), "quality": 1.0 / max(mae, 1e-12)}
    from sklearn.metrics import f1_score

    yt, pt = y.long().numpy(), pred.long().numpy()
    average = "binary" if task == "binary" else "macro"
    f1 = float(f1_score(yt, pt, average=average, zero_division=0))
    return {"score": f1, "accuracy": float((yt == pt).mean()), "quality": f1}
