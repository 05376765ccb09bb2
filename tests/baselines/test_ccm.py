"""ccm (Detect, Reject, Correct; Lee et al. ICRA 2021): the product-of-experts fusion is eq. (1), the
unimodal detection score of a modality does not depend on the other modalities at all, a corrupted
modality is detected, rejected and compensated from the others, and with every modality rejected
the compensation is the prior mean."""

from __future__ import annotations

import pytest
import torch
from baselines_testutil import error, half, replaced_by_noise

from mmguard.baselines.ccm import CrossmodalCompensation
from mmguard.eval.metrics import binary_auroc
from mmguard.guard import create_guard


@pytest.fixture(scope="module")
def guard(correlated):
    g = create_guard("ccm", {"autoencoder": {"epochs": 20}}, quick=True)
    g.fit(correlated, seed=0)
    return g


def test_product_of_experts_is_eq_1() -> None:
    mu = torch.tensor([[[1.0, -2.0], [3.0, 0.5]]])  # (N=1, M=2, d=2)
    logvar = torch.log(torch.tensor([[[0.5, 2.0], [0.25, 1.0]]]))
    m, lv = CrossmodalCompensation.fuse(mu, logvar, torch.tensor([[1.0, 1.0]]))
    precision = 1 + 1 / 0.5 + 1 / 0.25, 1 + 1 / 2.0 + 1 / 1.0
    expected = torch.tensor([(1 / 0.5 * 1.0 + 1 / 0.25 * 3.0) / precision[0], (1 / 2.0 * -2.0 + 0.5) / precision[1]])
    torch.testing.assert_close(m[0], expected)
    torch.testing.assert_close(lv[0], -torch.log(torch.tensor(precision)))
    m, lv = CrossmodalCompensation.fuse(mu, logvar, torch.tensor([[0.0, 0.0]]))  # prior only
    assert torch.equal(m, torch.zeros_like(m)) and torch.equal(lv, torch.zeros_like(lv))


def test_unimodal_score_ignores_the_other_modalities(guard, correlated) -> None:
    x = guard.standardizer.transform(correlated.test).modalities
    garbage = {**x, "b": x["b"] * 50 - 3, "c": -3 * x["c"] + 2}
    s, g = guard.model.scores(x), guard.model.scores(garbage)
    assert torch.equal(s[:, 0], g[:, 0])
    assert bool((g[:, 1:] > s[:, 1:]).float().mean() > 0.9)


def test_detect_reject_correct(guard, correlated) -> None:
    test = correlated.test
    rows = half(len(test))
    bad = replaced_by_noise(test, "a", rows)
    scores = guard.score(bad)
    assert float(binary_auroc(scores[:, 0].double(), rows)[0]) >= 0.95
    flags = guard.flag(bad)
    assert float(flags[rows, 0].float().mean()) >= 0.9
    assert torch.equal(flags[:, 1:], guard.flag(test)[:, 1:])  # b and c were untouched: same decisions
    fixed = guard.transform(bad).modalities["a"][rows]
    truth, broken = test.modalities["a"][rows], bad.modalities["a"][rows]
    assert error(fixed, truth) <= 0.25 * error(broken, truth)


def test_every_modality_rejected_gives_the_prior_mean(guard, correlated) -> None:
    x = guard.standardizer.transform(correlated.test).modalities
    n = len(correlated.test)
    out = guard.model.restore(x, torch.ones(n, 3, dtype=torch.bool))
    prior = guard.model.decode(torch.zeros(1, guard.config.autoencoder.latent_dim))
    for name in ("a", "b", "c"):
        torch.testing.assert_close(out[name], prior[name].expand_as(out[name]))
