"""Training losses for EMMA's prediction networks (thesis eq. 5.10 and section 6.3.1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmguard.emma.attention import AttentionOutput, energy_regularizer


def class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Balanced class weights N / (K * N_c) from the training labels.

    The thesis's "imbalance penalty weights the loss of each sample with respect to the
    proportion of its corresponding class" (section 6.3.1, footnote 6); balanced weights are
    that rule normalised so a balanced data set gets weight 1.
    """
    counts = torch.bincount(labels.reshape(-1).long(), minlength=num_classes).double()
    if bool((counts == 0).any()):
        missing = (counts == 0).nonzero().reshape(-1).tolist()
        raise ValueError(f"training labels lack classes {missing}")
    return (counts.sum() / (num_classes * counts)).float()


def task_loss(logits: torch.Tensor, y: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Class-weighted BCE (1 logit) or cross-entropy (K logits), mean per member → (G,).

    logits (G, B, 1) or (G, B, K); y (G, B) integer labels.
    """
    w = weights[y.long()]
    if logits.shape[-1] == 1:
        per = F.binary_cross_entropy_with_logits(logits.squeeze(-1), y.to(logits.dtype), reduction="none")
    else:
        per = F.cross_entropy(logits.permute(0, 2, 1), y.long(), reduction="none")
    return (w * per).sum(1) / w.sum(1)


def emma_objective(
    logits: torch.Tensor,
    y: torch.Tensor,
    weights: torch.Tensor,
    att: AttentionOutput,
    fault_mask: torch.Tensor,
    g_a: torch.Tensor,
    b_a: torch.Tensor,
    lambda_c: torch.Tensor,
    lambda_e: torch.Tensor,
) -> torch.Tensor:
    """L~ = L + lambda_c (g_a - b_a) - lambda_e Omega (eq. 5.10), per member (G,).

    Omega is averaged over the minibatch and only counts samples that satisfy section 5.5's
    rule (see :func:`energy_regularizer`). fault_mask (G, B, M) from the fault annotations.
    """
    omega = energy_regularizer(att.log_alpha, fault_mask).mean(1)
    return task_loss(logits, y, weights) + lambda_c * (g_a - b_a) - lambda_e * omega
