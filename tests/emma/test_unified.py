"""Unified multi-modal attention (thesis chapter 7): neutral start, the cross-modal context, the
guard option and save/load."""

from __future__ import annotations

import pytest
import torch

from mmguard.data.splits import make_splits
from mmguard.emma.network import ConcatPredictor
from mmguard.emma.unified import UnifiedPredictor
from mmguard.guard import create_guard, load_guard
from mmguard.train.ensemble import EnsembleMLP
from support import camera_kinematics


def inputs(g: int = 2, b: int = 5) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(g, b, 1, 4, 4, generator=gen), torch.randn(g, b, 3, generator=gen)]


def test_neutral_start_is_exactly_plain_emma() -> None:
    """At initialisation every mask and gain is 1: the MMN sees β_i x_i, as with the plain predictor."""
    mlp = EnsembleMLP([1, 2], [19, 6, 3])
    uni = UnifiedPredictor(mlp, [16, 3], [7, 8], rank=4)
    raw = inputs()
    gated = [x * 0.3 for x in raw]
    endo, gains, _ = uni.masks(gated, raw)
    for t in endo + gains:
        torch.testing.assert_close(t, torch.ones_like(t))
    torch.testing.assert_close(uni(gated, raw), ConcatPredictor(mlp)(gated))


def test_cross_modal_gain_reads_only_the_other_modalities() -> None:
    uni = UnifiedPredictor(EnsembleMLP([0, 1], [19, 4, 2]), [16, 3], [3, 4], rank=4)
    with torch.no_grad():  # leave the neutral start: random gates
        for p in uni.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.5)
    raw = inputs()
    changed = [raw[0] * 3.0, raw[1]]  # modality 0 changes, modality 1 does not
    with torch.no_grad():
        _, gains, out = uni.masks(raw, raw)
        _, gains2, out2 = uni.masks(changed, changed)
    torch.testing.assert_close(gains2[0], gains[0])  # g_0 depends on modality 1 only
    assert float((gains2[1] - gains[1]).abs().max()) > 1e-3  # g_1 reads modality 0
    for t in gains + gains2:
        assert bool(((t > 0) & (t < 2)).all())
    assert out2[0].shape == (2, 5, 16) and out2[1].shape == (2, 5, 3)


def test_emma_guard_with_unified_attention_fits_saves_and_loads(tmp_path) -> None:
    splits = make_splits(camera_kinematics(), seed=0)
    cfg = {"unified": True, "unified_rank": 4, "image_channels": 3, "image_kernel": 4, "image_stride": 2,
           "image_padding": 1, "epochs": 3, "dae_epochs": 3, "drift": None}
    guard = create_guard("emma", cfg)
    guard.fit(splits, seed=0)
    assert isinstance(guard.model.predictor, UnifiedPredictor)
    # training moved the unified module away from its neutral start
    moved = max(float(p.detach().abs().max()) for n, p in guard.model.predictor.named_parameters() if ".up." in n)
    assert moved > 0
    loaded = load_guard(guard.save(tmp_path / "g"))
    assert isinstance(loaded.model.predictor, UnifiedPredictor)
    test = splits.test
    torch.testing.assert_close(loaded.predict(test), guard.predict(test))
    torch.testing.assert_close(loaded.score(test), guard.score(test))


def test_unified_needs_two_modalities() -> None:
    with pytest.raises(ValueError, match="2 modalities"):
        UnifiedPredictor(EnsembleMLP([0], [3, 2]), [3], [0])
