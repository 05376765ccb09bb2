"""MMSSL inference (paper section 6, "Operational Pipeline") and persistence of one seed's models.

:class:`MmsslModels` holds what one seed trained: the stage-1 MMAE, the DAE baseline, the
compute block (full model + ablations as ensemble members), the latent normalization and
the calibrated gates. :meth:`MmsslModels.outputs` runs every model on a standardized batch:

1. encode with the frozen MMAE encoder → z; the detector scores every modality (s_m) and the
   sample (S = max_m s_m);
2. route: S > t → ẑ = C(z), else ẑ = z (exact bypass, :func:`mmguard.mmssl.gate.route`);
3. decode ẑ with the stage-1 decoders.

Saved as ``DIR/{mmae,dae,compute}/`` (weights.safetensors + config.json, no pickle).

Device: the models may live on any device (:meth:`MmsslModels.to`); :meth:`MmsslModels.detect`
and :meth:`MmsslModels.outputs` take inputs on any device, compute on the models' device in
float32 and return CPU tensors. The gate thresholds are kept on the CPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from mmguard.data.model import ModalitySpec
from mmguard.errors import CheckpointError, SpecError
from mmguard.io.checkpoint import load_checkpoint, save_checkpoint
from mmguard.mmssl.autoencoder import MultimodalAutoencoder
from mmguard.mmssl.compute import ComputeBlock
from mmguard.mmssl.config import AutoencoderConfig, ComputeConfig
from mmguard.mmssl.gate import route, sample_scores
from mmguard.mmssl.stages import CHUNK, VARIANTS, ComputeResult, LatentScale, decode, encode, module_device


def model_name(variant: str) -> str:
    """Report name of a compute-block member: ``mmssl`` for the full model, ``mmssl_<ablation>``."""
    return "mmssl" if variant == "full" else f"mmssl_{variant}"


@dataclass
class MmsslModels:
    """One seed's trained models (see module docstring)."""

    mmae: MultimodalAutoencoder
    dae: MultimodalAutoencoder | None
    block: ComputeBlock
    variants: tuple[str, ...]
    scale: LatentScale
    thresholds: torch.Tensor  # (G,)
    modality_thresholds: torch.Tensor  # (G, M)
    compute_cfg: ComputeConfig

    @classmethod
    def from_stages(
        cls,
        mmae: MultimodalAutoencoder,
        dae: MultimodalAutoencoder | None,
        comp: ComputeResult,
        cfg: ComputeConfig,
    ) -> MmsslModels:
        """Assemble the trained stages (stage 1, optional DAE, stage 2 with its gates)."""
        return cls(
            mmae=mmae,
            dae=dae,
            block=comp.block,
            variants=comp.variants,
            scale=comp.scale,
            thresholds=comp.thresholds,
            modality_thresholds=comp.modality_thresholds,
            compute_cfg=cfg,
        )

    @property
    def names(self) -> tuple[str, ...]:
        return self.mmae.names

    @property
    def full(self) -> int:
        return self.variants.index("full")

    @property
    def device(self) -> torch.device:
        return module_device(self.mmae)

    def to(self, device: torch.device | str) -> MmsslModels:
        """Move the networks and the latent scale to ``device`` (in place); returns self."""
        self.mmae.to(device)
        if self.dae is not None:
            self.dae.to(device)
        self.block.to(device)
        self.scale = LatentScale(mean=self.scale.mean.to(device), std=self.scale.std.to(device))
        return self

    def _inputs(self, xs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        dev = self.device
        return {k: v.to(dev) for k, v in xs.items()}

    @torch.no_grad()
    def detect(self, xs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Latent z (N, d), per-modality scores (G, N, M) and corrected latents (G, N, d), on the CPU."""
        z, scores, corr = self._detect(self._inputs(xs))
        return z.cpu(), scores.cpu(), corr.cpu()

    def _detect(self, xs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = encode(self.mmae, xs)
        g = len(self.variants)
        u = self.scale.to_unit(z)
        scores, corr = [], []
        for i in range(0, z.shape[0], CHUNK):
            s, c = self.block(u[i : i + CHUNK].unsqueeze(0).expand(g, -1, -1))
            scores.append(s)
            corr.append(c)
        return z, torch.cat(scores, 1), self.scale.from_unit(torch.cat(corr, 1))

    @torch.no_grad()
    def outputs(
        self, xs: Mapping[str, torch.Tensor], oracle: torch.Tensor | None = None
    ) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        """Reconstructions of every model {model: {modality: (N, ...)}} and detection results.

        ``oracle`` (N,) bool, when given, adds the diagnostic ``mmssl_oracle_routing`` (routing
        by the true fault mask). Detection results: ``scores`` (N, M) and ``sample_score`` (N,)
        of the full model, ``flagged`` (G, N) per member.
        """
        xs = self._inputs(xs)
        z, scores, corr = self._detect(xs)
        flagged = sample_scores(scores) > self.thresholds.to(z.device).unsqueeze(1)
        out: dict[str, dict[str, torch.Tensor]] = {"mmae": decode(self.mmae, z)}
        if self.dae is not None:
            out["dae"] = {n: v for n, v in _recon(self.dae, xs).items()}
        for g, v in enumerate(self.variants):
            out[model_name(v)] = decode(self.mmae, route(z, corr[g], flagged[g]))
        f = self.full
        out["mmssl_no_routing"] = decode(self.mmae, corr[f])
        if oracle is not None:
            out["mmssl_oracle_routing"] = decode(self.mmae, route(z, corr[f], oracle.to(z.device, torch.bool)))
        det = {"scores": scores[f], "sample_score": sample_scores(scores[f]), "flagged": flagged}
        return {m: {n: v.cpu() for n, v in r.items()} for m, r in out.items()}, {k: v.cpu() for k, v in det.items()}

    # -------------------------------------------------------------- persistence
    def save(self, directory: str | Path, specs: tuple[ModalitySpec, ...]) -> None:
        d = Path(directory)
        spec_dicts = [s.to_dict() for s in specs]
        save_checkpoint(
            d / "mmae",
            dict(self.mmae.state_dict()),
            {"role": "mmae", "modalities": spec_dicts, "autoencoder": self.mmae.cfg.model_dump(mode="json")},
        )
        if self.dae is not None:
            save_checkpoint(
                d / "dae",
                dict(self.dae.state_dict()),
                {
                    "role": "dae",
                    "modalities": spec_dicts,
                    "autoencoder": self.dae.cfg.model_dump(mode="json"),
                },
            )
        tensors = {f"block.{k}": v for k, v in self.block.state_dict().items()}
        tensors.update(
            {
                "scale.mean": self.scale.mean,
                "scale.std": self.scale.std.reshape(()),
                "gate.thresholds": self.thresholds,
                "gate.modality_thresholds": self.modality_thresholds,
            }
        )
        save_checkpoint(
            d / "compute",
            tensors,
            {
                "role": "compute",
                "variants": list(self.variants),
                "modalities": spec_dicts,
                "compute": self.compute_cfg.model_dump(mode="json"),
                "gate": {
                    "rule": "sample score max_m s_m > (1 - far) quantile of clean validation",
                    "false_alarm_rate": self.compute_cfg.false_alarm_rate,
                    "thresholds": self.thresholds.tolist(),
                },
            },
        )

    @classmethod
    def load(cls, directory: str | Path) -> MmsslModels:
        d = Path(directory)
        mmae, specs = _load_ae(d / "mmae")
        dae = _load_ae(d / "dae")[0] if (d / "dae").is_dir() else None
        tensors, cfg = load_checkpoint(d / "compute")
        try:
            ccfg = ComputeConfig(**cfg["compute"])
            variants = tuple(cfg["variants"])
        except (KeyError, TypeError, ValidationError) as exc:
            raise CheckpointError(
                f"{str(d / 'compute')!r}: malformed compute config ({exc.__class__.__name__})"
            ) from None
        bad = [v for v in variants if v not in VARIANTS]
        if bad or "full" not in variants:
            raise CheckpointError(f"{str(d / 'compute')!r}: bad variants {list(variants)}")
        block = ComputeBlock(
            [0] * len(variants),
            mmae.latent_dim,
            len(specs),
            detector_hidden=ccfg.detector_hidden,
            embedding=ccfg.embedding_dim,
            corrector_hidden=ccfg.corrector_hidden,
            bound=ccfg.lipschitz_bound,
            activation=ccfg.corrector_activation,
        )
        state = {k[len("block.") :]: v for k, v in tensors.items() if k.startswith("block.")}
        _load_state(block, state, d / "compute")
        try:
            scale = LatentScale(mean=tensors["scale.mean"], std=tensors["scale.std"])
            thr, mthr = tensors["gate.thresholds"], tensors["gate.modality_thresholds"]
        except KeyError as exc:
            raise CheckpointError(f"{str(d / 'compute')!r} lacks tensor {exc.args[0]!r}") from None
        if (
            thr.shape != (len(variants),)
            or mthr.shape != (len(variants), len(specs))
            or scale.mean.shape != (mmae.latent_dim,)
            or scale.std.numel() != 1
        ):
            raise CheckpointError(f"{str(d / 'compute')!r}: gate or latent scale has the wrong shape")
        block.eval()
        return cls(
            mmae=mmae,
            dae=dae,
            block=block,
            variants=variants,
            scale=scale,
            thresholds=thr,
            modality_thresholds=mthr,
            compute_cfg=ccfg,
        )


def _recon(ae: MultimodalAutoencoder, xs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return decode(ae, encode(ae, xs))


def _load_state(module: torch.nn.Module, state: dict[str, torch.Tensor], where: Path) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise CheckpointError(f"{str(where)!r}: weights do not match the architecture ({first})") from None


def _load_ae(directory: Path) -> tuple[MultimodalAutoencoder, tuple[ModalitySpec, ...]]:
    tensors, cfg = load_checkpoint(directory)
    try:
        specs = tuple(ModalitySpec.from_dict(s) for s in cfg["modalities"])
        acfg = AutoencoderConfig(**cfg["autoencoder"])
        ae = MultimodalAutoencoder(specs, acfg)
    except (KeyError, TypeError, ValueError, ValidationError, SpecError) as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else exc.__class__.__name__
        raise CheckpointError(f"{str(directory)!r}: malformed autoencoder config ({first})") from None
    _load_state(ae, tensors, directory)
    ae.eval()
    for p in ae.parameters():
        p.requires_grad_(False)
    return ae, specs


def describe_settings(models: MmsslModels) -> dict[str, Any]:
    """JSON-ready contraction bounds per member (exact spectral-norm products)."""
    return {
        model_name(v): float(b)
        for v, b in zip(models.variants, models.block.corrector.lipschitz_upper_bound().tolist(), strict=True)
    }
