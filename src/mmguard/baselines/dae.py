"""The denoising multimodal autoencoder as a guard (``dae``): the strongest plain baseline.

Same architecture as the MMAE (:mod:`mmguard.baselines.autoencoder`), trained to map a
**corrupted** input back to the clean one (Vincent et al., ICML 2008, in its multimodal form):
every epoch draws a fresh corruption of the training split from the fault mix
(``train_faults``, default :func:`mmguard.faults.scenarios.training_spec`: 40 % clean, 48 %
one modality, 12 % common cause), and early stopping uses one corrupted draw of the
validation split. This is exactly the "DAE" row of the MMSSL protocol (docs/results/mmssl-twin.md),
which fits it through this class.

Every sample goes through the DAE (no gate). ``score`` is the per-modality reconstruction
residual, as for the MMAE.
"""

from __future__ import annotations

from typing import Any

from mmguard.baselines.autoencoder import AutoencoderGuard, AutoencoderGuardConfig
from mmguard.data.model import MultimodalBatch
from mmguard.faults import FaultSpec
from mmguard.faults.scenarios import training_mix
from mmguard.guard import register_guard


class DaeConfig(AutoencoderGuardConfig):
    """Autoencoder settings plus the training fault mix (a fault-spec dict; None: the default mix)."""

    train_faults: dict[str, Any] | None = None


@register_guard
class DaeGuard(AutoencoderGuard):
    """Denoising autoencoder: corrupted inputs (fresh draw per epoch) → clean targets."""

    name = "dae"
    config_class = DaeConfig
    summary = "denoising multimodal autoencoder trained on the fault mix; reconstructs every sample"

    def denoise_spec(self, train: MultimodalBatch) -> FaultSpec:
        return training_mix(self.config.train_faults, train)
