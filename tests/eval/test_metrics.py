"""Vectorized metrics agree with scikit-learn on random data with ties, for several G."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, roc_auc_score, roc_curve

from mmguard.eval.metrics import binary_auroc, binary_f1, macro_f1, select_thresholds


def scores_and_labels(g: int, n: int, seed: int, decimals: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(G, N) scores rounded to few decimals (many ties) and (N,) labels correlated with them."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(np.int64)
    y[:2] = [0, 1]
    s = rng.normal(size=(g, n)) + 0.8 * y
    return torch.from_numpy(np.round(s, decimals)), torch.from_numpy(y)


def sklearn_roc_threshold(y: np.ndarray, s: np.ndarray) -> float:
    """ROC point closest to (FPR 0, TPR 1); every distinct score is a candidate threshold."""
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    fpr, tpr, thr = fpr[1:], tpr[1:], thr[1:]  # drop sklearn's "predict nothing" point above the max
    return float(thr[np.argmin(np.sqrt((1 - tpr) ** 2 + fpr**2))])


@pytest.mark.parametrize("g", [1, 3, 8])
@pytest.mark.parametrize("decimals", [0, 1, 3])
def test_roc_distance_threshold_matches_sklearn(g: int, decimals: int) -> None:
    s, y = scores_and_labels(g, 300, seed=g * 10 + decimals, decimals=decimals)
    thr = select_thresholds(s, y, "roc_distance")
    assert thr.shape == (g,)
    for gi in range(g):
        assert float(thr[gi]) == sklearn_roc_threshold(y.numpy(), s[gi].numpy())


@pytest.mark.parametrize("g", [1, 4])
@pytest.mark.parametrize("decimals", [0, 1, 3])
def test_f1_max_threshold_matches_sklearn(g: int, decimals: int) -> None:
    s, y = scores_and_labels(g, 250, seed=100 + g + decimals, decimals=decimals)
    thr = select_thresholds(s, y, "f1_max")
    for gi in range(g):
        sg, yn = s[gi].numpy(), y.numpy()
        candidates = np.unique(sg)[::-1]  # highest threshold first
        f1s = np.array([f1_score(yn, sg >= t, zero_division=0) for t in candidates])
        best = candidates[np.flatnonzero(np.isclose(f1s, f1s.max(), rtol=0, atol=1e-12))]
        assert float(thr[gi]) in best.tolist()
        assert f1_score(yn, sg >= float(thr[gi])) == pytest.approx(f1s.max(), abs=1e-12)


@pytest.mark.parametrize("g", [1, 2, 6])
def test_binary_f1_matches_sklearn(g: int) -> None:
    s, y = scores_and_labels(g, 400, seed=200 + g)
    rng = np.random.default_rng(g)
    thresholds = torch.from_numpy(rng.choice(s.numpy().ravel(), size=g))  # thresholds equal to (tied) scores
    subset = torch.from_numpy(rng.random(400) < 0.4)
    full = binary_f1(s, y, thresholds)
    part = binary_f1(s, y, thresholds, subset=subset)
    for gi in range(g):
        pred = (s[gi] >= thresholds[gi]).numpy()
        assert float(full[gi]) == pytest.approx(f1_score(y.numpy(), pred), abs=1e-12)
        keep = subset.numpy()
        assert float(part[gi]) == pytest.approx(f1_score(y.numpy()[keep], pred[keep]), abs=1e-12)
    # no positives and no positive predictions in the subset: F1 = 0 as sklearn's zero_division=0
    only_neg = (y == 0) & (s[0] < 10)
    empty = binary_f1(s[:1], y, torch.tensor([100.0], dtype=s.dtype), subset=only_neg)
    assert float(empty[0]) == f1_score(np.zeros(3), np.zeros(3), zero_division=0) == 0.0


@pytest.mark.parametrize("g", [1, 3, 5])
@pytest.mark.parametrize("decimals", [0, 1, 4])
def test_binary_auroc_matches_sklearn(g: int, decimals: int) -> None:
    s, y = scores_and_labels(g, 350, seed=300 + g + decimals, decimals=decimals)
    auc = binary_auroc(s, y)
    for gi in range(g):
        assert float(auc[gi]) == pytest.approx(roc_auc_score(y.numpy(), s[gi].numpy()), abs=1e-12)


@pytest.mark.parametrize("g", [1, 2, 4])
@pytest.mark.parametrize("k", [3, 5])
def test_macro_f1_matches_sklearn(g: int, k: int) -> None:
    rng = np.random.default_rng(400 + g + k)
    n = 300
    y = rng.integers(0, k - 1, size=n)  # the last class never occurs in the labels...
    logits = np.round(rng.normal(size=(g, n, k)), 1)
    logits[..., : k - 1] += 1.5 * np.eye(k)[y][None, :, : k - 1]
    logits[0, :, k - 1] = -10.0  # ...and member 0 never predicts it either
    lt, yt = torch.from_numpy(logits), torch.from_numpy(y)
    subset = torch.from_numpy(rng.random(n) < 0.5)
    full = macro_f1(lt, yt, k)
    part = macro_f1(lt, yt, k, subset=subset)
    for gi in range(g):
        pred = np.argmax(logits[gi], axis=-1)
        assert float(full[gi]) == pytest.approx(f1_score(y, pred, average="macro"), abs=1e-12)
        keep = subset.numpy()
        assert float(part[gi]) == pytest.approx(f1_score(y[keep], pred[keep], average="macro"), abs=1e-12)


def test_single_score_vector_is_accepted() -> None:
    s, y = scores_and_labels(1, 120, seed=7)
    thr = select_thresholds(s[0], y, "roc_distance")
    assert float(thr[0]) == sklearn_roc_threshold(y.numpy(), s[0].numpy())
    assert float(binary_auroc(s[0], y)[0]) == pytest.approx(roc_auc_score(y.numpy(), s[0].numpy()), abs=1e-12)
