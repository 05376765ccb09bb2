"""MMSSL as a :class:`mmguard.guard.Guard`: a trained stage-1 autoencoder, a compute block
(detector + contraction corrector, the full model only) and the routing gate.

``MmsslGuard.fit(splits)`` runs the same stage code as the experiments
(:mod:`mmguard.mmssl.stages`): the MMAE on the clean training split, then the compute block
on the corrupted mix (``train_faults`` or :func:`mmguard.mmssl.scenarios.training_spec`),
with the gate calibrated on the clean validation split. Callers pass raw data: the
standardiser fitted on the training split travels with the checkpoint.

* ``score(batch)`` — (N, M) detector scores divided by each modality's gate threshold
  (> 1: above the per-modality threshold, i.e. that modality looks faulty);
* ``flagged(batch)`` — (N,) the routing decision (sample score above the gate threshold);
* ``transform(batch)`` — the rectified batch in raw units: flagged samples decoded from the
  corrected latent, the others from their own latent (exact bypass of the corrector).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from mmguard.data.model import ModalitySpec, MultimodalBatch
from mmguard.data.preprocessing import Standardizer
from mmguard.data.splits import Splits
from mmguard.errors import CheckpointError, DataError
from mmguard.faults import load_spec
from mmguard.guard import Guard
from mmguard.io.checkpoint import load_checkpoint, read_json, save_checkpoint, write_json
from mmguard.mmssl import scenarios
from mmguard.mmssl.config import AutoencoderConfig, ComputeConfig
from mmguard.mmssl.gate import route, sample_scores
from mmguard.mmssl.pipeline import MmsslModels
from mmguard.mmssl.stages import decode, summary, train_autoencoder, train_compute_block


class MmsslGuard(Guard):
    """Detect-and-correct guard (paper section 6 pipeline)."""

    kind = "mmssl"

    def __init__(
        self,
        autoencoder: AutoencoderConfig | None = None,
        compute: ComputeConfig | None = None,
        train_faults: dict[str, Any] | None = None,
    ) -> None:
        self.autoencoder = autoencoder or AutoencoderConfig()
        self.compute = compute or ComputeConfig()
        self.train_faults = train_faults
        self.models: MmsslModels | None = None
        self.standardizer: Standardizer | None = None
        self.specs: tuple[ModalitySpec, ...] = ()

    def fit(self, splits: Splits, *, seed: int = 0, progress: bool = False) -> dict[str, Any]:
        if splits.standardized:
            raise DataError("MmsslGuard.fit takes raw (unstandardized) splits; it fits its own standardizer")
        st = Standardizer.fit(splits.train)
        train, val = st.transform(splits.train), st.transform(splits.val)
        train.check_finite("training split")
        spec = (
            load_spec(self.train_faults) if self.train_faults is not None else scenarios.training_spec(train)
        )
        mmae, r1 = train_autoencoder(train, val, self.autoencoder, seed=seed)
        comp = train_compute_block(mmae, train, val, spec, self.compute, seed=seed, variants=("full",))
        self.models = MmsslModels.from_stages(mmae, None, comp, self.compute)
        self.standardizer, self.specs = st, tuple(train.specs)
        return {"mmae": summary(r1), "compute": summary(comp.train), "threshold": float(comp.thresholds[0])}

    def _require(self) -> MmsslModels:
        if self.models is None or self.standardizer is None:
            raise DataError("the MMSSL guard is not fitted (call fit or load first)")
        return self.models

    def _inputs(self, batch: MultimodalBatch) -> dict[str, torch.Tensor]:
        self._require()
        names = [s.name for s in self.specs]
        if list(batch.names) != names:
            raise DataError(f"batch modalities {list(batch.names)} differ from the guard's {names}")
        batch.check_finite("input")
        return self.standardizer.transform(batch).modalities  # type: ignore[union-attr]

    def score(self, batch: MultimodalBatch) -> torch.Tensor:
        models = self._require()
        _z, scores, _c = models.detect(self._inputs(batch))
        return scores[0] / models.modality_thresholds[0].clamp_min(1e-12)

    def flagged(self, batch: MultimodalBatch) -> torch.Tensor:
        models = self._require()
        _z, scores, _c = models.detect(self._inputs(batch))
        return sample_scores(scores[0]) > models.thresholds[0]

    def transform(self, batch: MultimodalBatch) -> MultimodalBatch:
        models = self._require()
        z, scores, corr = models.detect(self._inputs(batch))
        flagged = sample_scores(scores[0]) > models.thresholds[0]
        out = batch.with_modalities(decode(models.mmae, route(z, corr[0], flagged)))
        return self.standardizer.inverse(out)  # type: ignore[union-attr]

    def save(self, directory: str | Path) -> None:
        models = self._require()
        d = Path(directory)
        models.save(d / "models", self.specs)
        save_checkpoint(
            d / "preprocessing",
            self.standardizer.state_tensors(),  # type: ignore[union-attr]
            {"modalities": [s.to_dict() for s in self.specs]},
        )
        write_json(d / "guard.json", {"guard": self.kind, "train_faults": self.train_faults})

    @classmethod
    def load(cls, directory: str | Path) -> MmsslGuard:
        d = Path(directory)
        meta = read_json(d / "guard.json")
        if not isinstance(meta, dict) or meta.get("guard") != cls.kind:
            raise CheckpointError(f"{str(d)!r} is not an MMSSL guard checkpoint")
        models = MmsslModels.load(d / "models")
        if models.variants != ("full",):
            raise CheckpointError(
                f"{str(d)!r}: an MMSSL guard holds the full model only, got {models.variants}"
            )
        tensors, pre = load_checkpoint(d / "preprocessing")
        try:
            specs = tuple(ModalitySpec.from_dict(s) for s in pre["modalities"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{str(d)!r}: malformed preprocessing config ({exc})") from None
        if tuple(s.name for s in specs) != models.names:
            raise CheckpointError(f"{str(d)!r}: preprocessing and models disagree on the modalities")
        try:
            guard = cls(models.mmae.cfg, models.compute_cfg, meta.get("train_faults"))
        except ValidationError as exc:
            raise CheckpointError(f"{str(d)!r}: malformed guard config ({exc.errors()[0]['msg']})") from None
        guard.models, guard.specs = models, specs
        guard.standardizer = Standardizer.from_state_tensors(tensors, [s.name for s in specs])
        return guard
