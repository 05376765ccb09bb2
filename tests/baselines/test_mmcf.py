"""mmcf (cross-modal fusion autoencoder, MulT crossmodal attention): a token attends only to the other
modalities' tokens, training draws a fresh corruption of the training split every epoch, and the
denoising autoencoder restores a noise-replaced modality far better than leaving it."""

from __future__ import annotations

import pytest
import torch
from baselines_testutil import error, half, replaced_by_noise

import mmguard.baselines.common as common
from mmguard.baselines.mmcf import CrossModalBlock
from mmguard.errors import SpecError
from mmguard.guard import create_guard
from support import one_line


def test_a_token_attends_only_to_the_other_modalities() -> None:
    torch.manual_seed(0)
    block = CrossModalBlock(dim=8, heads=2, ffn=16)
    owner = torch.tensor([0, 0, 1, 1])
    blocked = owner[:, None] == owner[None, :]
    x = torch.randn(3, 4, 8)
    y = block(x, blocked)
    same = x.clone()
    same[:, 1] = torch.randn(3, 8)  # another token of modality 0: invisible to token 0
    assert torch.equal(block(same, blocked)[:, 0], y[:, 0])
    other = x.clone()
    other[:, 2] = torch.randn(3, 8)  # a token of modality 1: seen by token 0
    assert not torch.allclose(block(other, blocked)[:, 0], y[:, 0])


def test_fresh_corruption_every_epoch_and_denoising(correlated, monkeypatch) -> None:
    seeds: list[int] = []
    real = common.apply_faults

    def spy(batch, spec, seed=None):
        seeds.append(seed)
        return real(batch, spec, seed=seed)

    monkeypatch.setattr(common, "apply_faults", spy)
    guard = create_guard("mmcf", quick=True)
    report = guard.fit(correlated, seed=0)
    epochs = report["train"]["epochs_run"]
    assert len(seeds) == epochs + 1 and len(set(seeds)) == epochs + 1  # one draw per epoch + validation
    test = correlated.test
    rows = half(len(test))
    bad = replaced_by_noise(test, "a", rows)
    fixed = guard.transform(bad).modalities["a"][rows]
    truth, broken = test.modalities["a"][rows], bad.modalities["a"][rows]
    assert error(fixed, truth) <= 0.3 * error(broken, truth)


def test_heads_must_divide_the_token_width() -> None:
    with pytest.raises(SpecError) as info:
        create_guard("mmcf", {"attention": {"dim": 30, "heads": 4}})
    one_line(info.value, "heads")
