"""EMMA as a :class:`mmguard.guard.Guard`: one trained attention module + prediction network.

``EmmaGuard.fit(splits)`` runs the thesis's two training stages (section 5.5) with the same
code as the experiments (a one-member ensemble):

1. one tied DAE per modality on the clean training split (chapter 4, appendix B);
2. the prediction network on clean data (the base-model), then EMMA in front of it, trained
   end to end with eq. 5.10 on the *corrupted* training split. If ``splits.train`` already
   carries fault annotations, those are used; otherwise the section 6.3.1 schedule (50 %
   clean, the rest evenly "only modality i", Gaussian sigma) is applied with the fit seed.
   Validation is corrupted the same way and used for early stopping and the threshold.

``score`` returns the shifted potentials Psi_i (eq. 5.3, >= e; higher = more likely
failing); ``transform`` returns beta_i * x_i (step 5); ``predict_logits`` the network
output; ``explain`` every interpretable quantity. Inputs are standardised with the
training statistics saved in the checkpoint, so callers pass raw data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from mmguard.data.model import ModalitySpec, MultimodalBatch
from mmguard.data.preprocessing import Standardizer
from mmguard.data.splits import Splits
from mmguard.emma.attention import AttentionOutput
from mmguard.emma.experiment import num_classes_of, schedule_spec, to_streams
from mmguard.emma.losses import class_weights
from mmguard.emma.network import EmmaNetwork
from mmguard.emma.persist import load_model, save_model
from mmguard.emma.training import (
    EmmaHyper,
    MLPClassifier,
    StageSettings,
    build_emma,
    mlp_sizes,
    train_classifier,
    train_daes,
    train_with,
)
from mmguard.errors import CheckpointError, DataError, SpecError
from mmguard.eval.metrics import select_thresholds
from mmguard.faults import apply_faults
from mmguard.faults.rng import derive_seed
from mmguard.guard import Guard
from mmguard.train.ensemble import EnsembleMLP


@dataclass
class EmmaGuardConfig:
    """Hyperparameters of one EMMA guard (defaults: thesis appendix B and section 6.3.1)."""

    rho: float = 1e-3
    lambda_c: float = 1e-3
    lambda_e: float = 1e-2
    mmn_hidden: tuple[int, ...] = (8, 4)
    epochs: int = 35
    batch_size: int = 32
    lr: float = 1e-3
    dae_hidden: int = 12
    dae_epochs: int = 30
    dae_batch_size: int = 64
    dae_sigma: float = 0.01
    sigma: float = 0.5
    clean_fraction: float = 0.5
    threshold_rule: str = "roc_distance"


class EmmaGuard(Guard):
    """Energy-based multi-modal attention in front of an MLP prediction network."""

    kind = "emma"

    def __init__(self, config: EmmaGuardConfig | None = None) -> None:
        self.config = config or EmmaGuardConfig()
        self.network: EmmaNetwork | None = None
        self.specs: tuple[ModalitySpec, ...] = ()
        self.standardizer: Standardizer | None = None
        self.threshold: float | None = None
        self.num_classes: int = 2

    # ------------------------------------------------------------------ training
    def _corrupted(self, batch: MultimodalBatch, seed: int, split: str) -> MultimodalBatch:
        if batch.fault_mask is not None:
            return batch
        spec = schedule_spec(batch.names, self.config.sigma, self.config.clean_fraction)
        return apply_faults(batch, spec, seed=derive_seed(seed, "emma-guard", split))

    def fit(self, splits: Splits, *, seed: int = 0, progress: bool = False) -> dict[str, Any]:
        cfg = self.config
        if splits.train.num_modalities < 2:
            raise DataError(f"EMMA needs at least 2 modalities, got {splits.train.num_modalities}")
        if not splits.standardized:
            splits = splits.standardize()
        self.standardizer = splits.standardizer
        self.specs = splits.train.specs
        self.num_classes = num_classes_of(splits.train)
        m = len(self.specs)
        seeds = [seed]
        one = torch.zeros(1, dtype=torch.long)
        clean_tr, clean_va = to_streams([splits.train.clean_view()]), to_streams([splits.val.clean_view()])
        noisy_tr = to_streams([self._corrupted(splits.train, seed, "train")])
        noisy_va = to_streams([self._corrupted(splits.val, seed, "val")])
        weights = class_weights(splits.train.target, self.num_classes)
        stage = StageSettings(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr)
        daes = train_daes(
            clean_tr,
            seeds,
            m,
            hidden=cfg.dae_hidden,
            epochs=cfg.dae_epochs,
            batch_size=cfg.dae_batch_size,
            sigma=cfg.dae_sigma,
        )
        in_features = sum(s.size for s in self.specs)
        base = MLPClassifier(EnsembleMLP(seeds, mlp_sizes(in_features, cfg.mmn_hidden, self.num_classes)), m)
        base_res = train_classifier(
            base, clean_tr, clean_va, member_stream=one, stream_seeds=seeds, weights=weights, settings=stage
        )
        hyper = EmmaHyper(
            rho=torch.tensor([cfg.rho]),
            lambda_c=torch.tensor([cfg.lambda_c]),
            lambda_e=torch.tensor([cfg.lambda_e]),
        )
        net = build_emma(daes, base, one, hyper.rho)
        res = train_with(
            net,
            noisy_tr,
            noisy_va,
            member_stream=one,
            stream_seeds=seeds,
            weights=weights,
            hyper=hyper,
            settings=stage,
        )
        self.network = net
        if self.num_classes == 2:
            xs = [noisy_va[f"m{i}"] for i in range(m)]
            with torch.no_grad():
                logits, _ = net(xs)
            self.threshold = float(
                select_thresholds(logits.squeeze(-1), noisy_va["y"][0], cfg.threshold_rule)[0]
            )  # type: ignore[arg-type]
        return {
            "base_best_epoch": int(base_res.best_epoch[0]),
            "best_epoch": int(res.best_epoch[0]),
            "best_val_loss": float(res.best_val[0]),
            "threshold": self.threshold,
            "capacity": float(net.attention.capacity().detach()[0]),
        }

    # ------------------------------------------------------------------ inference
    def _require(self) -> EmmaNetwork:
        if self.network is None or self.standardizer is None:
            raise SpecError("EmmaGuard is not fitted; call fit() or load() first")
        return self.network

    def _inputs(self, batch: MultimodalBatch) -> list[torch.Tensor]:
        self._require()
        if batch.names != tuple(s.name for s in self.specs):
            raise DataError(
                f"batch modalities {list(batch.names)} differ from the trained ones "
                f"{[s.name for s in self.specs]}"
            )
        for s in self.specs:
            got = tuple(batch.modalities[s.name].shape[1:])
            if got != s.shape:
                raise DataError(f"modality {s.name!r}: expected per-sample shape {s.shape}, got {got}")
        batch.check_finite("EmmaGuard input")
        std = self.standardizer.transform(batch)  # type: ignore[union-attr]
        return [std.modalities[s.name].unsqueeze(0) for s in self.specs]

    @torch.no_grad()
    def explain(self, batch: MultimodalBatch) -> AttentionOutput:
        """Psi, e, e_ij, E, alpha, beta for each sample (member axis removed)."""
        out = self._require().attend(self._inputs(batch))
        return AttentionOutput(*(getattr(out, f)[0] for f in out.__dataclass_fields__))

    def score(self, batch: MultimodalBatch) -> torch.Tensor:
        return self.explain(batch).psi

    @torch.no_grad()
    def transform(self, batch: MultimodalBatch) -> MultimodalBatch:
        """beta_i * x_i in the standardised space the prediction network was trained in."""
        net = self._require()
        xs = self._inputs(batch)
        gated = net.gate(xs, net.attend(xs).beta)
        return batch.with_modalities({s.name: g[0] for s, g in zip(self.specs, gated, strict=True)})

    @torch.no_grad()
    def predict_logits(self, batch: MultimodalBatch) -> torch.Tensor:
        logits, _ = self._require()(self._inputs(batch))
        return logits[0]

    def predict(self, batch: MultimodalBatch) -> torch.Tensor:
        """Class predictions (validation-chosen threshold for binary tasks)."""
        logits = self.predict_logits(batch)
        if self.num_classes == 2:
            return (logits.squeeze(-1) >= self.threshold).long()
        return logits.argmax(-1)

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> None:
        net = self._require()
        extra_t = self.standardizer.state_tensors()  # type: ignore[union-attr]
        save_model(
            directory,
            net,
            extra={
                "guard": self.kind,
                "config": {**asdict(self.config), "mmn_hidden": list(self.config.mmn_hidden)},
                "modalities": [s.to_dict() for s in self.specs],
                "threshold": self.threshold,
                "num_classes": self.num_classes,
            },
            extra_tensors=extra_t,
        )

    @classmethod
    def load(cls, directory: str | Path) -> EmmaGuard:
        model, config, extras = load_model(directory)
        if config.get("guard") != cls.kind or not isinstance(model, EmmaNetwork):
            raise CheckpointError(f"{str(directory)!r} is not an EMMA guard checkpoint")
        try:
            cfg = dict(config["config"])
            cfg["mmn_hidden"] = tuple(cfg["mmn_hidden"])
            guard = cls(EmmaGuardConfig(**cfg))
            guard.specs = tuple(ModalitySpec.from_dict(d) for d in config["modalities"])
            guard.threshold = config["threshold"]
            guard.num_classes = int(config["num_classes"])
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"malformed EMMA guard config in {str(directory)!r}: {exc}") from None
        guard.standardizer = Standardizer.from_state_tensors(extras, [s.name for s in guard.specs])
        guard.network = model
        return guard
