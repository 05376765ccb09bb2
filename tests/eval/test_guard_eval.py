"""mmguard.eval.guard_eval on hand-made inputs with hand-computed expected values."""

from __future__ import annotations

import pytest
import torch

from mmguard.data.model import MultimodalBatch
from mmguard.eval.guard_eval import (
    detection_summary,
    error_summary,
    input_errors,
    modality_errors,
    prediction_summary,
)

T, F = True, False

# Six samples, two modalities. Scores are normalised (1.0 = threshold).
#   sample  mask     scores       sample max  detected  note
#   0       clean    0.2  0.5     0.5         no
#   1       clean    1.5  0.3     1.5         yes       false alarm
#   2       m0       2.0  0.1     2.0         yes       single fault, argmax m0: localised
#   3       m1       1.2  1.1     1.2         yes       single fault, argmax m0: mislocalised
#   4       m0+m1    0.4  0.3     0.4         no        missed (two faulty modalities)
#   5       m0       3.0  0.4     3.0         yes       single fault, localised
SCORES = torch.tensor([[0.2, 0.5], [1.5, 0.3], [2.0, 0.1], [1.2, 1.1], [0.4, 0.3], [3.0, 0.4]])
MASK = torch.tensor([[F, F], [F, F], [T, F], [F, T], [T, T], [T, F]])


def test_detection_summary_hand_computed() -> None:
    d = detection_summary(SCORES, MASK)
    # faulty: samples 2-5, detected 2, 3, 5 -> 3/4; clean: 0, 1, flagged 1 -> 1/2
    assert d["detection_rate"] == pytest.approx(3 / 4)
    assert d["false_alarm_rate"] == pytest.approx(1 / 2)
    # tp 3 (2, 3, 5), fp 1 (1), fn 1 (4): F1 = 2*3 / (2*3 + 1 + 1)
    assert d["f1"] == pytest.approx(6 / 8)
    # AUROC of the sample max, faulty {2.0, 1.2, 0.4, 3.0} vs clean {0.5, 1.5}:
    # pairs won: 2.0 -> 2, 1.2 -> 1, 0.4 -> 0, 3.0 -> 2 = 5 of 8
    assert d["auroc"] == pytest.approx(5 / 8)
    # detected single-fault samples 2, 3, 5; argmax right for 2 and 5
    assert d["localisation"] == pytest.approx(2 / 3)
    # m0 > 1 on samples 1, 2, 3, 5; m1 > 1 on sample 3
    assert d["per_modality_flag_rate"] == pytest.approx([4 / 6, 1 / 6])


def test_detection_threshold_is_strict_and_ties_count_half() -> None:
    scores = torch.tensor([[1.0, 0.0], [0.7, 0.0], [1.0, 0.2], [0.7, 0.9]])
    mask = torch.tensor([[F, F], [F, F], [T, F], [F, T]])
    d = detection_summary(scores, mask)
    # a score of exactly 1.0 is at the threshold, not above it
    assert d["false_alarm_rate"] == 0.0 and d["detection_rate"] == 0.0
    assert d["per_modality_flag_rate"] == [0.0, 0.0]
    # faulty maxima {1.0, 0.9} vs clean {1.0, 0.7}: 1.0 beats 0.7 and ties 1.0 (1.5); 0.9 beats 0.7 (1)
    assert d["auroc"] == pytest.approx(2.5 / 4)
    assert d["f1"] == 0.0  # two faulty samples, nothing flagged
    assert d["localisation"] is None  # no detected single-fault sample


def test_detection_all_faulty_uses_clean_scores_for_the_auroc() -> None:
    scores = torch.tensor([[2.0, 0.0], [0.5, 0.2], [1.4, 3.0]])
    mask = torch.tensor([[T, F], [F, T], [T, T]])
    assert detection_summary(scores, mask)["auroc"] is None  # no negatives, none given
    clean = torch.tensor([[0.1, 0.6], [1.0, 0.0]])
    d = detection_summary(scores, mask, clean_scores=clean)
    # faulty maxima {2.0, 0.5, 3.0} vs clean maxima {0.6, 1.0}: 2 + 0 + 2 = 4 of 6
    assert d["auroc"] == pytest.approx(4 / 6)
    assert d["false_alarm_rate"] is None
    assert d["detection_rate"] == pytest.approx(2 / 3)
    # sample 1 is a single fault but not detected; sample 0 is detected and localised
    assert d["localisation"] == 1.0


def test_detection_of_a_clean_batch() -> None:
    scores = torch.tensor([[0.2, 0.1], [1.3, 0.4], [0.9, 0.9], [0.1, 1.7]])
    d = detection_summary(scores, torch.zeros(4, 2, dtype=torch.bool))
    assert d["detection_rate"] is None
    assert d["false_alarm_rate"] == pytest.approx(2 / 4)
    assert d["auroc"] is None
    assert d["f1"] == 0.0  # two false alarms, no true positive
    quiet = detection_summary(torch.zeros(4, 2), torch.zeros(4, 2, dtype=torch.bool))
    assert quiet["f1"] is None  # nothing faulty and nothing flagged: undefined, not 0 or 1


def two_modality(vec: list[list[float]], img: list[float]) -> MultimodalBatch:
    """A vector modality (N, 2) and an image modality (N, 1, 2, 2) (img: one value per pixel)."""
    v = torch.tensor(vec)
    i = torch.tensor(img).reshape(len(vec), 1, 2, 2)
    return MultimodalBatch.from_arrays({"vec": v, "img": i})


def test_modality_errors_hand_computed() -> None:
    clean = two_modality([[0.0, 0.0], [1.0, 2.0]], [0.0] * 8)
    noisy = two_modality([[1.0, 3.0], [1.0, 2.0]], [2.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    err = modality_errors(noisy, clean)
    assert err.shape == (2, 2)
    # vec: sample 0 (1 + 9) / 2 = 5, sample 1 exact; img: sample 0 4 / 4 = 1, sample 1 (1+1+1+1) / 4 = 1
    assert err.tolist() == [[5.0, 1.0], [0.0, 1.0]]
    assert modality_errors(clean, clean).abs().max() == 0.0
    s = error_summary(err, ("vec", "img"), torch.tensor([True, True]))
    assert s == pytest.approx({"vec": 2.5, "img": 1.0, "combined": 3.5})
    assert error_summary(err, ("vec", "img"), torch.tensor([False, False])) is None


def test_input_errors_split_faulty_and_clean_samples() -> None:
    clean = two_modality([[0.0, 0.0], [1.0, 2.0], [0.0, 0.0]], [0.0] * 12)
    faulty = two_modality([[1.0, 3.0], [1.0, 2.0], [0.0, 0.0]], [2.0, 0, 0, 0] + [0.0] * 8)
    mask = torch.tensor([[T, T], [F, F], [F, F]])
    faulty = faulty.with_faults(mask, torch.where(mask, 0, -1), ("offset",))
    out = input_errors(faulty, clean)
    assert out["faulty"] == pytest.approx({"vec": 5.0, "img": 1.0, "combined": 6.0})
    assert out["clean"] == pytest.approx({"vec": 0.0, "img": 0.0, "combined": 0.0})
    assert out["all"] == pytest.approx({"vec": 5 / 3, "img": 1 / 3, "combined": 2.0})


def test_prediction_summary_binary_scores_the_positive_class() -> None:
    pred = torch.tensor([1, 0, 1, 1])
    y = torch.tensor([1, 0, 0, 1])
    s = prediction_summary(pred, y)
    # positive class: tp 2, fp 1, fn 0 -> F1 = 4/5 (macro over both classes would be (4/5 + 2/3) / 2)
    assert s["f1"] == pytest.approx(0.8)
    assert s["accuracy"] == pytest.approx(0.75)


def test_prediction_summary_multiclass_is_macro() -> None:
    y = torch.tensor([0, 1, 2, 2])
    pred = torch.tensor([0, 2, 2, 1])
    s = prediction_summary(pred, y)
    # class 0: F1 1; class 1: tp 0 -> 0; class 2: tp 1, fp 1, fn 1 -> 1/2; macro = 1.5 / 3
    assert s["f1"] == pytest.approx(0.5)
    assert s["accuracy"] == pytest.approx(0.5)


def test_prediction_summary_without_positive_predictions() -> None:
    s = prediction_summary(torch.zeros(4, dtype=torch.long), torch.tensor([0, 1, 0, 1]))
    assert s["f1"] == 0.0 and s["accuracy"] == pytest.approx(0.5)
