"""Online adaptation of the downstream model (src/mmguard/downstream/adaptive.py).

Expectations from the math:

* ``none`` is the model as trained, chunk by chunk;
* the gate: with a drift monitor, nothing is adapted before its first alarm;
* ``stats`` re-standardises each chunk with the statistics of the recent window, so (regression,
  plain window statistics) a per-feature gain/offset drift of the whole stream is removed
  exactly: the predictions equal those of the undrifted stream;
* ``adabn``/``tent`` normalise every BN input (right after each encoder's first linear layer)
  with the window's statistics; a *scalar* positive gain plus any per-feature offset is an
  affine map of every BN input unit with a positive gain, which batch normalisation removes
  (up to its eps), so these predictions too are those of the undrifted stream;
* causal: the prediction of a chunk depends only on the stream up to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from adapt_testutil import fit_detector, gaussian_batch

from mmguard.adapt.drift import DriftDetector, DriftMonitor
from mmguard.data.model import MultimodalBatch, concat_batches
from mmguard.downstream.adaptive import AdaptiveDownstream
from mmguard.downstream.model import Downstream, DownstreamConfig, MultimodalPredictor, fit_downstream
from mmguard.errors import MMGuardError, SpecError

CFG = dict(hidden=16, code=8, epochs=10, patience=None)


@dataclass
class Problem:
    batch: MultimodalBatch
    y_class: torch.Tensor
    y_reg: torch.Tensor


def problem(rng: np.random.Generator, n: int) -> Problem:
    """Standard normal modalities (DIMS); three classes and a regression target of one latent."""
    b = gaussian_batch(rng, n)
    z = b.modalities["a"][:, 0] + b.modalities["b"][:, :2].sum(1) - b.modalities["c"][:, 0]
    return Problem(b, torch.bucketize(z, torch.tensor([-0.8, 0.8])), z + 0.5 * b.modalities["a"][:, 1])


def drift(batch: MultimodalBatch, seed: int, *, scalar_gain: float | None = None) -> MultimodalBatch:
    """Gain and offset drift of every feature: per-feature gains in [0.5, 2] (or one scalar gain),
    per-feature offsets in [-2, 2] standard deviations."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for n, x in batch.modalities.items():
        d = x.shape[1]
        gain = torch.full((d,), scalar_gain) if scalar_gain is not None else 0.5 + 1.5 * torch.rand(d, generator=g)
        out[n] = x * gain + (4 * torch.rand(d, generator=g) - 2)
    return batch.with_modalities(out)


@dataclass
class Models:
    classifier: Downstream  # norm: batch, 3 classes
    regressor: Downstream  # norm: batch
    plain: Downstream  # norm: none, 3 classes (untrained)
    test: Problem


@pytest.fixture(scope="module")
def models() -> Models:
    rng = np.random.default_rng(0)
    train, val = problem(rng, 600), problem(rng, 200)
    cfg = DownstreamConfig(norm="batch", **CFG)
    clf, rep = fit_downstream(train.batch, val.batch, train.y_class, val.y_class, cfg, seed=0)
    reg, rep2 = fit_downstream(train.batch, val.batch, train.y_reg, val.y_reg, cfg, seed=0)
    assert rep["task"] == "multiclass" and rep2["task"] == "regression"
    torch.manual_seed(0)
    plain = Downstream(MultimodalPredictor(train.batch.specs, 3, DownstreamConfig(**CFG)), "multiclass", 3,
                       0.0, 1.0, prior=[1 / 3] * 3)
    return Models(clf, reg, plain, problem(rng, 300))


@pytest.fixture(scope="module")
def strict_detector() -> DriftDetector:
    return fit_detector(seed=1, alpha=0.005, null_windows=2000)


def chunked_predict(model: Downstream, stream: MultimodalBatch, chunk: int) -> torch.Tensor:
    return torch.cat([model.predict(stream.select(slice(i, i + chunk))) for i in range(0, len(stream), chunk)])


def accuracy(pred: torch.Tensor, y: torch.Tensor) -> float:
    return float((pred == y).float().mean())


# ============================================================================ none and the gate
def test_none_is_the_model_as_trained(models: Models, strict_detector: DriftDetector) -> None:
    stream = models.test.batch.select(slice(0, 70))
    for model in (models.classifier, models.regressor):
        expected = chunked_predict(model, stream, 9)
        assert torch.equal(AdaptiveDownstream(model, "none").run(stream, chunk=9), expected)
        drifted = drift(stream, 1)
        gated = AdaptiveDownstream(model, "none", monitor=DriftMonitor(strict_detector))
        assert torch.equal(gated.run(drifted, chunk=9), chunked_predict(model, drifted, 9))
        assert not gated.active and gated.adapted_chunks == 0
    # the trained classifier is not trivial (else equalities of labels would say little)
    assert accuracy(models.classifier.predict(models.test.batch), models.test.y_class) > 0.6


def test_closed_gate_on_an_in_distribution_stream_changes_nothing(models: Models,
                                                                  strict_detector: DriftDetector) -> None:
    """alpha = 0.005 per test, 3 tests: the monitor stays quiet (false alarm chance of a few %),
    and then every method predicts exactly as the model as trained."""
    stream = models.test.batch.select(slice(0, 90))
    for model, methods in ((models.classifier, ("stats", "adabn", "tent")), (models.regressor, ("stats", "adabn"))):
        expected = chunked_predict(model, stream, 10)
        for method in methods:
            ad = AdaptiveDownstream(model, method, window=60, monitor=DriftMonitor(strict_detector, step=30))
            got = ad.run(stream, chunk=10)
            assert ad.monitor is not None and ad.monitor.tests == 3 and ad.monitor.first_alarm is None
            assert torch.equal(got, expected), method
            assert ad.adapted_chunks == 0 and not ad.active


def test_gate_opens_at_the_first_alarm_and_stays_open(models: Models, strict_detector: DriftDetector) -> None:
    stream = drift(models.test.batch.select(slice(0, 100)), 2)
    model = models.regressor
    ad = AdaptiveDownstream(model, "stats", window=50, monitor=DriftMonitor(strict_detector, step=10))
    preds = [ad.process(stream.select(slice(i, i + 10))) for i in range(0, 100, 10)]
    first = ad.monitor.first_alarm  # type: ignore[union-attr]
    assert first is not None and first <= strict_detector.window + 10, first
    ends = list(range(10, 101, 10))
    assert ad.adapted_chunks == sum(e >= first for e in ends)
    assert ad.active
    for e, p in zip(ends, preds, strict=True):
        unadapted = model.predict(stream.select(slice(e - 10, e)))
        if e < first:
            assert torch.equal(p, unadapted), e
        else:  # adapted: the drift (offsets up to 2 std) is removed, so the values move
            assert float((p - unadapted).abs().mean()) > 0.05, e


# ============================================================================ what each method removes
def test_stats_removes_gain_and_offset_drift_exactly_for_regression(models: Models) -> None:
    stream = models.test.batch.select(slice(0, 80))
    drifted = drift(stream, 3)
    clean = AdaptiveDownstream(models.regressor, "stats", window=40).run(stream, chunk=10)
    adapted = AdaptiveDownstream(models.regressor, "stats", window=40).run(drifted, chunk=10)
    assert torch.allclose(adapted, clean, atol=1e-3), float((adapted - clean).abs().max())
    unadapted = AdaptiveDownstream(models.regressor, "none").run(drifted, chunk=10)
    assert float((unadapted - clean).abs().mean()) > 0.1  # the drift does matter without adaptation


def test_adabn_removes_scalar_gain_and_offset_drift(models: Models) -> None:
    stream = models.test.batch.select(slice(0, 80))
    drifted = drift(stream, 4, scalar_gain=2.0)
    clean = AdaptiveDownstream(models.regressor, "adabn", window=40).run(stream, chunk=10)
    adapted = AdaptiveDownstream(models.regressor, "adabn", window=40).run(drifted, chunk=10)
    assert torch.allclose(adapted, clean, atol=1e-3), float((adapted - clean).abs().max())
    unadapted = AdaptiveDownstream(models.regressor, "none").run(drifted, chunk=10)
    assert float((unadapted - clean).abs().mean()) > 0.1


def test_tent_removes_scalar_gain_and_offset_drift(models: Models) -> None:
    stream = models.test.batch.select(slice(0, 80))
    drifted = drift(stream, 5, scalar_gain=2.0)
    clean = AdaptiveDownstream(models.classifier, "tent", window=40, tent_lr=1e-2).run(stream, chunk=10)
    adapted = AdaptiveDownstream(models.classifier, "tent", window=40, tent_lr=1e-2).run(drifted, chunk=10)
    assert accuracy(adapted, clean) >= 0.98  # one near-tie may flip under float rounding
    unadapted = models.classifier.predict(drifted)
    assert accuracy(unadapted, models.classifier.predict(stream)) < 0.9


def test_stats_restores_accuracy_under_drift(models: Models) -> None:
    """Modality b drifts to 1.5·b + 2 (the latent the classes are cut from moves by +4 std, so the
    model as trained predicts the top class almost always). The stream keeps the training class
    mix, so the class-balanced window statistics are close to the training statistics seen through
    the drift: accuracy comes back to about the clean one."""
    t = models.test
    clean_acc = accuracy(models.classifier.predict(t.batch), t.y_class)
    drifted = t.batch.with_modalities({"b": 1.5 * t.batch.modalities["b"] + 2.0})
    none_acc = accuracy(models.classifier.predict(drifted), t.y_class)
    stats_acc = accuracy(AdaptiveDownstream(models.classifier, "stats", window=100).run(drifted, chunk=25),
                         t.y_class)
    assert stats_acc >= clean_acc - 0.1, (stats_acc, clean_acc)
    assert stats_acc > none_acc + 0.1, (stats_acc, none_acc)


# ============================================================================ causality and errors
@pytest.mark.parametrize("method", ["stats", "adabn", "tent"])
def test_predictions_are_causal(models: Models, method: str) -> None:
    base = models.test.batch
    a = base.select(slice(0, 80))
    b = concat_batches([base.select(slice(0, 30)), drift(base.select(slice(100, 150)), 7)])
    pa = AdaptiveDownstream(models.classifier, method, window=40).run(a, chunk=10)
    pb = AdaptiveDownstream(models.classifier, method, window=40).run(b, chunk=10)
    assert pa.shape == (80,) and pb.shape == (80,)
    assert torch.equal(pa[:30], pb[:30])


def test_methods_a_model_cannot_use_are_spec_errors(models: Models) -> None:
    with pytest.raises(SpecError):
        AdaptiveDownstream(models.regressor, "tent")
    for method in ("adabn", "tent"):
        with pytest.raises(SpecError):
            AdaptiveDownstream(models.plain, method)
    with pytest.raises(SpecError):
        AdaptiveDownstream(models.classifier, "bogus")  # type: ignore[arg-type]
    with pytest.raises(SpecError):
        AdaptiveDownstream(models.classifier, "stats", window=1)
    stream = models.test.batch.select(slice(0, 20))  # stats and none need no BN layers
    assert AdaptiveDownstream(models.plain, "stats", window=10).run(stream, chunk=5).shape == (20,)
    assert torch.equal(AdaptiveDownstream(models.plain, "none").run(stream, chunk=5),
                       chunked_predict(models.plain, stream, 5))


@pytest.mark.parametrize("method", ["adabn", "tent"])
def test_a_stream_fed_one_sample_at_a_time(models: Models, method: str) -> None:
    """Sample-by-sample processing is the plain online case. Without a monitor adaptation is on from
    the first sample, when the window holds one sample only and has no batch statistics: the
    adapter must then predict (N predictions) or refuse with a one-line MMGuardError — not fail
    inside torch."""
    stream = models.test.batch.select(slice(0, 12))
    ad = AdaptiveDownstream(models.classifier, method, window=8)
    try:
        pred = ad.run(stream, chunk=1)
    except MMGuardError:
        return
    assert pred.shape == (12,)
