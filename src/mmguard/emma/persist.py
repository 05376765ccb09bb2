"""Save and rebuild EMMA ensembles: ``weights.safetensors`` + ``config.json``, never pickle.

A saved model is described by a small JSON config (architecture and hyperparameters) from
which the module is rebuilt before its tensors are loaded with ``strict=True`` — a file
with missing, extra or mis-shaped tensors is rejected with a one-line CheckpointError.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mmguard.emma.attention import EmmaAttention
from mmguard.emma.conv_potential import ConvTiedDAE
from mmguard.emma.network import ConcatPredictor, EmmaNetwork
from mmguard.emma.potential import TiedDAE
from mmguard.emma.training import MLPClassifier
from mmguard.emma.unified import UnifiedPredictor
from mmguard.errors import CheckpointError
from mmguard.io.checkpoint import load_checkpoint, save_checkpoint
from mmguard.train.ensemble import EnsembleMLP


def describe(model: torch.nn.Module) -> dict[str, Any]:
    """Architecture config of an MLPClassifier or EmmaNetwork."""
    if isinstance(model, MLPClassifier):
        return {
            "kind": "mlp",
            "sizes": list(model.mlp.sizes),
            "num_modalities": model.num_modalities,
            "members": model.mlp.layers[0].ensemble_size,
            "input_mask": model.input_mask is not None,
        }
    if isinstance(model, EmmaNetwork):
        return {
            "kind": "emma",
            "sizes": list(model.predictor.mlp.sizes),
            "num_modalities": model.attention.num_modalities,
            "members": model.attention.ensemble_size,
            "dae": [d.describe() for d in model.daes],
            **({"unified": {"rank": model.predictor.rank, "sizes": model.predictor.sizes}}
               if isinstance(model.predictor, UnifiedPredictor) else {}),
        }
    raise TypeError(f"cannot describe {type(model).__name__}")


def potential_from(desc: dict[str, Any], members: int) -> TiedDAE | ConvTiedDAE:
    """An untrained potential of the kind :meth:`describe` recorded (files without a kind: dense)."""
    kind = desc.get("kind", "tied")
    dae: TiedDAE | ConvTiedDAE
    if kind == "tied":
        dae = TiedDAE([0] * members, int(desc["in_features"]), int(desc["hidden"]))
    elif kind == "conv":
        dae = ConvTiedDAE([0] * members, [int(v) for v in desc["image_shape"]], int(desc["channels"]),
                          int(desc["kernel"]), int(desc["stride"]), int(desc["padding"]))
    else:
        raise ValueError(f"unknown potential kind {kind!r}")
    # the scale of the normalised potential (files without one hold the raw potential: scale 1)
    scale = torch.tensor([float(v) for v in desc.get("psi_scale", [1.0] * members)])
    if scale.shape != (members,) or not bool(torch.isfinite(scale).all() and (scale > 0).all()):
        raise ValueError(f"psi_scale must hold {members} positive finite values, got {desc.get('psi_scale')!r}")
    dae.psi_scale.copy_(scale)
    return dae


def build(arch: dict[str, Any]) -> torch.nn.Module:
    """Rebuild an (untrained) module from :func:`describe`'s config."""
    try:
        g = int(arch["members"])
        sizes = [int(s) for s in arch["sizes"]]
        m = int(arch["num_modalities"])
        if arch["kind"] == "mlp":
            mask = torch.ones(g, sizes[0]) if arch.get("input_mask") else None
            return MLPClassifier(EnsembleMLP([0] * g, sizes), m, input_mask=mask)
        if arch["kind"] == "emma":
            daes = [potential_from(d, g) for d in arch["dae"]]
            mlp = EnsembleMLP([0] * g, sizes)
            uni = arch.get("unified")
            predictor = (ConcatPredictor(mlp) if uni is None
                         else UnifiedPredictor(mlp, [int(v) for v in uni["sizes"]], [0] * g, int(uni["rank"])))
            return EmmaNetwork(daes, EmmaAttention(g, m, 1.0), predictor)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"malformed model architecture {arch!r}: {exc}") from None
    raise CheckpointError(f"unknown model kind {arch.get('kind')!r}")


def save_model(
    directory: str | Path,
    model: torch.nn.Module,
    extra: dict[str, Any] | None = None,
    extra_tensors: dict[str, torch.Tensor] | None = None,
) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update(extra_tensors or {})
    save_checkpoint(directory, tensors, {"architecture": describe(model), **(extra or {})})


def load_model(directory: str | Path) -> tuple[torch.nn.Module, dict[str, Any], dict[str, torch.Tensor]]:
    """Returns (module, config, extra tensors) for a directory written by :func:`save_model`."""
    tensors, config = load_checkpoint(directory)
    if "architecture" not in config:
        raise CheckpointError(f"{str(directory)!r}: config.json has no 'architecture'")
    model = build(config["architecture"])
    state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "mismatch"
        raise CheckpointError(
            f"weights in {str(directory)!r} do not match the architecture: {first}"
        ) from None
    extras = {k: v for k, v in tensors.items() if not k.startswith("model.")}
    model.eval()
    return model, config, extras
