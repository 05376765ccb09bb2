"""Evaluate any guard on one faulty batch against its clean reference — speaks :class:`Guard` only.

What is measured depends on what the guard can do (its capability flags):

* **correct** — ``transform`` output vs the clean input: MSE per sample and modality in the
  standardised units of the training split (paper table 1: "MSE on normalized data"),
  ``combined`` = the sum over modalities (camera + sensor in the paper's two-modality case);
* **flag** — ``score`` / ``flag``: the sample score is the maximum normalised modality score;
  AUROC of faulty vs clean samples, F1 / detection rate / false-alarm rate of "flagged in any
  modality", and **localisation**: among detected samples with exactly one faulty modality,
  the fraction whose highest-scoring modality is the faulty one;
* **predict** — ``predict`` vs the target: F1 (binary: positive class; multi-class: macro).

Every function returns plain floats (JSON-ready); ``None`` where a metric is undefined
(e.g. AUROC without both classes), never a silent 0.
"""

from __future__ import annotations

from typing import Any

import torch
from sklearn.metrics import f1_score

from mmguard.data.model import MultimodalBatch
from mmguard.data.preprocessing import Standardizer
from mmguard.eval.metrics import binary_auroc
from mmguard.eval.reconstruction import per_sample_errors
from mmguard.guard import Guard


def modality_errors(values: MultimodalBatch, clean: MultimodalBatch) -> torch.Tensor:
    """MSE per sample and modality (N, M), in float64, between two standardised batches."""
    def f64(b: MultimodalBatch) -> dict[str, torch.Tensor]:
        return {n: b.modalities[n].double() for n in clean.names}

    return per_sample_errors(f64(values), f64(clean), clean.names)


def error_summary(err: torch.Tensor, names: tuple[str, ...], subset: torch.Tensor) -> dict[str, float] | None:
    """Mean per-modality and combined error over the samples in ``subset`` (None if empty)."""
    if int(subset.sum()) == 0:
        return None
    e = err[subset]
    out = {n: float(e[:, j].mean()) for j, n in enumerate(names)}
    out["combined"] = float(e.sum(1).mean())
    return out


def _auroc(scores: torch.Tensor, positive: torch.Tensor) -> float | None:
    if int(positive.sum()) in (0, len(positive)):
        return None
    return float(binary_auroc(scores.double(), positive)[0])


def _f1(pred: torch.Tensor, truth: torch.Tensor) -> float | None:
    if int(truth.sum()) == 0 and int(pred.sum()) == 0:
        return None
    tp = float((pred & truth).sum())
    return 2 * tp / (2 * tp + float((pred & ~truth).sum()) + float((~pred & truth).sum()))


def detection_summary(scores: torch.Tensor, mask: torch.Tensor, clean_scores: torch.Tensor | None = None
                      ) -> dict[str, Any]:
    """Detection metrics of normalised scores (N, M) against the true fault mask (N, M).

    ``clean_scores`` (clean test samples' scores) are the negatives for the AUROC when the
    batch itself holds no clean sample (a fault family applied to every sample).
    """
    flagged = scores > 1.0
    sample = scores.amax(1)
    faulty = mask.any(1)
    detected = flagged.any(1)
    out: dict[str, Any] = {
        "detection_rate": float(detected[faulty].float().mean()) if bool(faulty.any()) else None,
        "false_alarm_rate": float(detected[~faulty].float().mean()) if bool((~faulty).any()) else None,
        "f1": _f1(detected, faulty),
    }
    if bool((~faulty).any()):
        out["auroc"] = _auroc(sample, faulty)
    elif clean_scores is not None:
        both = torch.cat([clean_scores.amax(1), sample])
        out["auroc"] = _auroc(both, torch.cat([torch.zeros(len(clean_scores), dtype=torch.bool), faulty]))
    else:
        out["auroc"] = None
    single = (mask.sum(1) == 1) & detected
    if bool(single.any()):
        truth = mask[single].float().argmax(1)
        out["localisation"] = float((scores[single].argmax(1) == truth).float().mean())
    else:
        out["localisation"] = None
    out["per_modality_flag_rate"] = [float(v) for v in flagged.float().mean(0)]
    return out


def prediction_summary(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """F1 (binary: of class 1; multi-class: macro) and accuracy of predictions."""
    y = target.long().cpu().numpy()
    p = pred.long().cpu().numpy()
    binary = int(max(y.max(), p.max())) <= 1
    f1 = f1_score(y, p, average="binary" if binary else "macro", zero_division=0)
    return {"f1": float(f1), "accuracy": float((p == y).mean())}


def attention_summary(weights: torch.Tensor, mask: torch.Tensor, names: tuple[str, ...]) -> dict[str, Any]:
    """Mean attention weight per modality over all samples, over those where that modality failed and
    over those where it did not (None where there are none): {modality: {all, failed, healthy}}."""
    w, m = weights.double(), mask.bool()
    out: dict[str, Any] = {}
    for j, name in enumerate(names):
        col, failed = w[:, j], m[:, j]
        out[name] = {"all": float(col.mean()),
                     "failed": float(col[failed].mean()) if bool(failed.any()) else None,
                     "healthy": float(col[~failed].mean()) if bool((~failed).any()) else None}
    return out


def evaluate_guard(
    guard: Guard,
    faulty_raw: MultimodalBatch,
    clean_std: MultimodalBatch,
    standardizer: Standardizer,
    *,
    clean_scores: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Every metric the guard's capabilities allow on one (possibly faulty) raw batch.

    ``clean_std`` is the clean version of the same samples in the reference standardised
    units; ``faulty_raw.fault_mask`` is the ground truth. Returns ``{"errors": ...,
    "detection": ..., "prediction": ..., "attention": ...}`` plus the raw outputs for further use: ``scores``
    (N, M) or None, ``fixed_std`` (the transform, standardised) or None, ``pred`` (N,) or None.
    """
    mask = faulty_raw.mask_or_clean()
    faulty = mask.any(1)
    names = clean_std.names
    out: dict[str, Any] = {"n": len(faulty_raw), "n_faulty": int(faulty.sum())}
    fixed = scores = None
    if guard.corrects and guard.flags:  # one pass where the guard has one (Guard.score_and_transform)
        scores, corrected = guard.score_and_transform(faulty_raw)
    elif guard.corrects:
        corrected = guard.transform(faulty_raw)
    if guard.corrects:
        fixed = standardizer.transform(corrected)
        err = modality_errors(fixed, clean_std)
        out["errors"] = {
            "all": error_summary(err, names, torch.ones_like(faulty)),
            "faulty": error_summary(err, names, faulty),
            "clean": error_summary(err, names, ~faulty),
        }
    if guard.flags:
        if scores is None:
            scores = guard.score(faulty_raw)
        out["detection"] = detection_summary(scores, mask, clean_scores)
    pred = None
    if guard.predicts and faulty_raw.target is not None:
        pred = guard.predict(faulty_raw)
        out["prediction"] = prediction_summary(pred, faulty_raw.target)
    if guard.attends:
        out["attention"] = attention_summary(guard.attention(faulty_raw), mask, names)
    out["scores"], out["fixed_std"], out["pred"] = scores, fixed, pred
    return out


def input_errors(faulty_std: MultimodalBatch, clean_std: MultimodalBatch) -> dict[str, Any]:
    """The "no guard" row: the faulty input itself against the clean one."""
    mask = faulty_std.mask_or_clean().any(1)
    err = modality_errors(faulty_std, clean_std)
    return {
        "all": error_summary(err, clean_std.names, torch.ones_like(mask)),
        "faulty": error_summary(err, clean_std.names, mask),
        "clean": error_summary(err, clean_std.names, ~mask),
    }
