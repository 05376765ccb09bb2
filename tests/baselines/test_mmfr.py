"""mmfr (multimodal feature reconstruction, MMIN-style latent imagination): a modality replaced by noise
is flagged by its cross-modal prediction residual and restored from the others far better than leaving
it; unflagged modalities pass through bit for bit; a flagged modality is never used as a source."""

from __future__ import annotations

import pytest
import torch
from baselines_testutil import error, half, replaced_by_noise

from mmguard.baselines.mmfr import replaced
from mmguard.eval.metrics import binary_auroc
from mmguard.guard import create_guard


@pytest.fixture(scope="module")
def guard(correlated):
    g = create_guard("mmfr", {"autoencoder": {"epochs": 20}}, quick=True)
    g.fit(correlated, seed=0)
    return g


def test_restores_a_noise_replaced_modality_better_than_identity(guard, correlated) -> None:
    test = correlated.test
    rows = half(len(test))
    bad = replaced_by_noise(test, "a", rows)
    scores = guard.score(bad)
    assert float(binary_auroc(scores[:, 0].double(), rows)[0]) >= 0.95
    # the broken modality stands out in its own column: localisation, not just detection
    assert float(scores[rows, 0].median()) > 3 * float(scores[rows, 1:].median())
    fixed = guard.transform(bad).modalities["a"][rows]
    truth, broken = test.modalities["a"][rows], bad.modalities["a"][rows]
    ratio = error(fixed, truth) / error(broken, truth)
    assert ratio <= 0.2, ratio


def test_unflagged_modalities_pass_through_and_flagged_sources_are_not_used(guard, correlated) -> None:
    x = guard.standardizer.transform(correlated.test).modalities
    model = guard.model
    n = len(correlated.test)
    flagged = torch.zeros(n, 3, dtype=torch.bool)
    flagged[:, 0] = True
    out = model.restore(x, flagged)
    assert torch.equal(out["b"], x["b"]) and torch.equal(out["c"], x["c"])
    assert not torch.equal(out["a"], x["a"])
    # with b flagged too, a is predicted from c alone: b's values do not matter at all
    flagged[:, 1] = True
    garbage = {**x, "b": x["b"] * 100 + 7}
    assert torch.equal(model.restore(x, flagged)["a"], model.restore(garbage, flagged)["a"])
    # and a prediction from c alone is still much better than the noise it replaces
    rows = half(n)
    bad = guard.standardizer.transform(replaced_by_noise(correlated.test, "a", rows)).modalities
    from_c = model.restore(bad, flagged)["a"][rows]
    assert error(from_c, x["a"][rows]) <= 0.5 * error(bad["a"][rows], x["a"][rows])


def test_a_sample_flagged_everywhere_keeps_its_lowest_scoring_modality_as_the_source() -> None:
    normalised = torch.tensor([[5.0, 0.2, 0.3], [5.0, 2.0, 3.0], [2.0, 2.0, 0.5], [1.5, 1.5, 1.5]])
    expected = torch.tensor([[True, False, False], [True, False, True], [True, True, False], [False, True, True]])
    assert torch.equal(replaced(normalised), expected)


def test_needs_two_modalities() -> None:
    assert create_guard("mmfr").min_modalities == 2
