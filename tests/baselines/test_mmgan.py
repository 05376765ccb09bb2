"""mmgan (GAIN-style adversarial imputation): the hint reveals the mask everywhere but one modality, the
discriminator learns to tell imputed from observed modalities (a fresh one cannot), and the composite
imputes the flagged modalities while the others pass through bit for bit."""

from __future__ import annotations

import pytest
import torch
from baselines_testutil import error, half, replaced_by_noise

from contract.test_guard_contract import image_batch
from mmguard.baselines.mmgan import GainModule, hidden_modality, hint
from mmguard.data.splits import make_splits
from mmguard.eval.metrics import binary_auroc
from mmguard.faults import apply_faults
from mmguard.faults.scenarios import training_spec
from mmguard.guard import create_guard

SMALL_CAMERA = {"autoencoder": {"image_channels": [4, 8]}}


def test_hint_hides_one_modality_per_sample() -> None:
    hidden = hidden_modality(500, 3, torch.Generator().manual_seed(0))
    assert torch.equal(hidden.sum(1), torch.ones(500)) and bool((hidden.mean(0) > 0.25).all())
    mask = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    h = hint(mask, torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))
    assert torch.equal(h, torch.tensor([[0.0, 0.5, 1.0], [0.5, 0.0, 0.0]]))  # revealed: 1 = observed


def test_the_discriminator_learns_to_spot_imputed_modalities() -> None:
    splits = make_splits(image_batch(), seed=0)
    guard = create_guard("mmgan", SMALL_CAMERA, quick=True)
    report = guard.fit(splits, seed=0)
    assert len(report["discriminator_loss"]) == report["train"]["epochs_run"]
    val = guard.standardizer.transform(splits.val)
    bad = apply_faults(val, training_spec(val), seed=5)
    mask = bad.fault_mask.float()
    hidden = hidden_modality(len(val), 2, torch.Generator().manual_seed(0))
    model: GainModule = guard.model
    torch.manual_seed(123)
    fresh = GainModule(guard.specs, guard.config.autoencoder, guard.config.adversarial.disc_hidden).discriminator
    with torch.no_grad():
        composite = model.composite(bad.modalities, model.generator(bad.modalities), mask)
        aurocs = {}
        for label, disc in (("trained", model.discriminator), ("fresh", fresh)):
            logits = disc(composite, hint(mask, hidden))[hidden.bool()]  # the entries the hint hides
            aurocs[label] = float(binary_auroc((-logits).double(), mask[hidden.bool()].bool())[0])
    assert aurocs["trained"] >= 0.65 and aurocs["trained"] >= aurocs["fresh"] + 0.15, aurocs


@pytest.fixture(scope="module")
def vector_guard(correlated):
    g = create_guard("mmgan", quick=True)
    g.fit(correlated, seed=0)
    return g


def test_imputes_flagged_modalities_and_keeps_the_others(vector_guard, correlated) -> None:
    test = correlated.test
    rows = half(len(test))
    bad = replaced_by_noise(test, "a", rows)
    assert float(vector_guard.flag(bad)[rows, 0].float().mean()) >= 0.9
    fixed = vector_guard.transform(bad).modalities["a"][rows]
    truth, broken = test.modalities["a"][rows], bad.modalities["a"][rows]
    assert error(fixed, truth) <= 0.3 * error(broken, truth)
    x = vector_guard.standardizer.transform(bad).modalities
    flagged = torch.zeros(len(test), 3, dtype=torch.bool)
    flagged[rows, 0] = True
    out = vector_guard.model.restore(x, flagged)
    assert torch.equal(out["b"], x["b"]) and torch.equal(out["a"][~rows], x["a"][~rows])
    assert torch.equal(out["a"][rows], vector_guard.model.generator(x)["a"][rows])
