"""Vectorized classification metrics over ensembles of score vectors.

All functions take scores of shape (G, N) (G models, N samples) and shared labels (N,),
so thresholds and F1 for a whole configuration grid are computed without Python loops.
They agree with scikit-learn's ``roc_curve`` / ``f1_score`` (tested).
"""

from __future__ import annotations

from typing import Literal

import torch

ThresholdRule = Literal["roc_distance", "f1_max"]


def _sorted_counts(scores: torch.Tensor, labels: torch.Tensor):
    """Cumulative TP/FP when predicting positive for score >= each distinct threshold."""
    scores = scores.double()
    order = torch.argsort(scores, dim=1, descending=True, stable=True)
    s_sorted = torch.gather(scores, 1, order)
    y_sorted = labels.double()[order]
    tp = torch.cumsum(y_sorted, dim=1)
    fp = torch.cumsum(1.0 - y_sorted, dim=1)
    # a threshold is valid only at the last index of a run of tied scores
    last_of_tie = torch.ones_like(s_sorted, dtype=torch.bool)
    last_of_tie[:, :-1] = s_sorted[:, :-1] != s_sorted[:, 1:]
    return s_sorted, tp, fp, last_of_tie


def select_thresholds(scores: torch.Tensor, labels: torch.Tensor, rule: ThresholdRule) -> torch.Tensor:
    """Per-model decision threshold chosen on (validation) data.

    * ``roc_distance`` — the ROC point closest to the ideal corner (FPR 0, TPR 1); the
      thesis's "optimal classification threshold determined on the validation set using
      the ROC curve" (section 6.3.1).
    * ``f1_max`` — the threshold maximising F1.

    Predictions are ``score >= threshold``. Returns shape (G,).
    """
    if scores.ndim == 1:
        scores = scores.unsqueeze(0)
    labels = labels.reshape(-1)
    p = labels.double().sum()
    n = labels.numel() - p
    if p == 0 or n == 0:
        raise ValueError("threshold selection needs both classes in the labels")
    s_sorted, tp, fp, valid = _sorted_counts(scores, labels)
    if rule == "roc_distance":
        tpr, fpr = tp / p, fp / n
        crit = torch.sqrt((1 - tpr) ** 2 + fpr**2)
        crit = torch.where(valid, crit, torch.full_like(crit, float("inf")))
        best = torch.argmin(crit, dim=1)
    elif rule == "f1_max":
        f1 = 2 * tp / (tp + fp + p)
        f1 = torch.where(valid, f1, torch.full_like(f1, -1.0))
        best = torch.argmax(f1, dim=1)
    else:
        raise ValueError(f"unknown threshold rule {rule!r}; use 'roc_distance' or 'f1_max'")
    return torch.gather(s_sorted, 1, best.unsqueeze(1)).squeeze(1).to(scores.dtype)


def binary_f1(
    scores: torch.Tensor, labels: torch.Tensor, thresholds: torch.Tensor, subset: torch.Tensor | None = None
) -> torch.Tensor:
    """F1 of ``score >= threshold`` per model, optionally on a boolean sample subset. (G,)"""
    if scores.ndim == 1:
        scores = scores.unsqueeze(0)
    pred = scores >= thresholds.reshape(-1, 1)
    y = labels.reshape(1, -1).bool()
    if subset is not None:
        subset = subset.reshape(1, -1) if subset.ndim == 1 else subset
        pred, y = pred & subset, y & subset
    tp = (pred & y).sum(1).double()
    fp = (pred & ~y).sum(1).double()
    fn = (~pred & y).sum(1).double()
    denom = 2 * tp + fp + fn
    return torch.where(denom > 0, 2 * tp / denom.clamp_min(1), torch.zeros_like(denom))


def macro_f1(
    logits: torch.Tensor, labels: torch.Tensor, num_classes: int, subset: torch.Tensor | None = None
) -> torch.Tensor:
    """Macro-averaged F1 of argmax predictions; logits (G, N, K) → (G,)."""
    pred = logits.argmax(-1)  # (G, N)
    y = labels.reshape(1, -1).expand_as(pred)
    if subset is None:
        keep = torch.ones_like(pred, dtype=torch.bool)
    else:  # one subset for all models (N,) or one per model (G, N)
        keep = (subset.reshape(1, -1) if subset.ndim == 1 else subset).expand_as(pred)
    classes = torch.arange(num_classes).view(1, 1, -1)
    pc = (pred.unsqueeze(-1) == classes) & keep.unsqueeze(-1)
    yc = (y.unsqueeze(-1) == classes) & keep.unsqueeze(-1)
    tp = (pc & yc).sum(1).double()
    fp = (pc & ~yc).sum(1).double()
    fn = (~pc & yc).sum(1).double()
    denom = 2 * tp + fp + fn
    f1 = torch.where(denom > 0, 2 * tp / denom.clamp_min(1), torch.zeros_like(denom))
    present = (yc.sum(1) + pc.sum(1)) > 0  # classes absent from both are left out of the mean
    return (f1 * present).sum(1) / present.sum(1).clamp_min(1)


def binary_auroc(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """AUROC per model (ties counted half), via the rank-sum statistic. (G,)"""
    if scores.ndim == 1:
        scores = scores.unsqueeze(0)
    y = labels.reshape(-1).bool()
    p = int(y.sum())
    n = y.numel() - p
    if p == 0 or n == 0:
        raise ValueError("AUROC needs both classes in the labels")
    # average ranks handle ties
    s = scores.double()
    order = torch.argsort(s, dim=1, stable=True)
    ranks = torch.empty_like(s)
    ar = torch.arange(1, s.shape[1] + 1, dtype=torch.float64).expand_as(s)
    ranks.scatter_(1, order, ar)
    # tie correction: replace ranks of equal scores by their mean
    s_sorted = torch.gather(s, 1, order)
    new_group = torch.ones_like(s_sorted, dtype=torch.bool)
    new_group[:, 1:] = s_sorted[:, 1:] != s_sorted[:, :-1]
    gid = torch.cumsum(new_group.long(), dim=1) - 1
    sums = torch.zeros_like(s).scatter_add_(1, gid, ar)
    cnts = torch.zeros_like(s).scatter_add_(1, gid, torch.ones_like(ar))
    mean_rank_sorted = torch.gather(sums / cnts.clamp_min(1), 1, gid)
    ranks.scatter_(1, order, mean_rank_sorted)
    rank_sum = ranks[:, y].sum(1)
    return (rank_sum - p * (p + 1) / 2) / (p * n)
