"""The per-modality MMD drift detector and its stream monitor (src/mmguard/adapt/drift.py).

Expectations come from the math, not from runs of the code:

* the statistic is the unbiased MMD² of Gretton et al. (2012), recomputed here with a naive
  double loop over samples in NumPy with the detector's own bandwidth and reference;
* the bandwidth is the median squared pairwise distance within the reference;
* calibration: the threshold is set so that at most ``alpha`` of in-distribution windows are
  flagged in some modality, so on fresh independent in-distribution windows the number of alarms
  is Binomial(n, p) with p close to alpha (see the bound in the test);
* a stream monitor tests the last ``window`` samples at counts ``window, window + step, ...``,
  whatever the chunking of the stream.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from adapt_testutil import DIMS, fit_detector, gaussian_batch

from mmguard.adapt.drift import DriftConfig, DriftDetector, DriftMonitor
from mmguard.data.model import MultimodalBatch, concat_batches
from mmguard.errors import CheckpointError, DataError

NAMES = tuple(DIMS)


@pytest.fixture(scope="module")
def detector() -> DriftDetector:
    """alpha = 0.05, window 30, step 10 (see adapt_testutil.fit_detector)."""
    return fit_detector(seed=0)


@pytest.fixture(scope="module")
def strict_detector() -> DriftDetector:
    """alpha = 0.005 (for streams that must not raise a false alarm), 2000 null windows."""
    return fit_detector(seed=1, alpha=0.005, null_windows=2000)


# ============================================================================ the statistic
def naive_mmd2(x: np.ndarray, r: np.ndarray, sigma2: float) -> float:
    """Unbiased MMD² (Gretton et al. 2012, lemma 6) by explicit loops, Gaussian kernel."""
    def k(a: np.ndarray, b: np.ndarray) -> float:
        return math.exp(-float(((a - b) ** 2).sum()) / (2.0 * sigma2))

    n, m = len(x), len(r)
    kxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    krr = sum(k(r[i], r[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxr = sum(k(x[i], r[j]) for i in range(n) for j in range(m)) / (n * m)
    return kxx + krr - 2.0 * kxr


def tiny_detector() -> tuple[DriftDetector, MultimodalBatch]:
    rng = np.random.default_rng(7)
    train = gaussian_batch(rng, 24)
    cfg = DriftConfig(window=4, step=1, alpha=0.1, reference_size=6, pool_size=20, null_windows=100)
    return DriftDetector.fit(train, gaussian_batch(rng, 16), cfg, seed=3), train


def test_statistic_equals_naive_unbiased_mmd2() -> None:
    det, _ = tiny_detector()
    rng = np.random.default_rng(8)
    # one in-distribution batch and one shifted in modality b (the statistic must follow both)
    for batch in (gaussian_batch(rng, 5), gaussian_batch(rng, 5, shift={"b": 1.5})):
        got = det.statistic(batch)
        assert got.shape == (len(NAMES),)
        for i, name in enumerate(NAMES):
            x = batch.modalities[name].double().numpy()
            r = det.reference[name].double().numpy()
            expected = naive_mmd2(x, r, float(det.sigma2[i]))
            # the reference term krr is held at float32 precision (what a saved guard stores)
            assert abs(float(got[i]) - expected) < 1e-6, (name, float(got[i]), expected)
    # and the stored reference term is the mean off-diagonal kernel of the reference
    for i, name in enumerate(NAMES):
        r = det.reference[name].double().numpy()
        s2 = float(det.sigma2[i])
        m = len(r)
        krr = sum(math.exp(-float(((r[a] - r[b]) ** 2).sum()) / (2 * s2))
                  for a in range(m) for b in range(m) if a != b) / (m * (m - 1))
        assert abs(float(det.krr[i]) - krr) < 1e-6, name  # float32 precision


def test_reference_is_a_training_subsample_and_bandwidth_is_its_median_distance() -> None:
    det, train = tiny_detector()
    for i, name in enumerate(NAMES):
        r = det.reference[name].double().numpy()
        assert len(r) == min(6, len(train) // 2)
        rows = {tuple(v) for v in train.modalities[name].double().numpy().round(6)}
        assert all(tuple(v) in rows for v in r.round(6)), name
        d2 = ((r[:, None, :] - r[None, :, :]) ** 2).sum(-1)[np.triu_indices(len(r), 1)]
        v = np.sort(d2)
        lo, hi = v[(len(v) - 1) // 2], v[len(v) // 2]  # the median (either middle value of an even count)
        tol = 1e-6 * hi  # sigma2 is held at float32 precision (what a saved guard stores)
        assert lo - tol <= float(det.sigma2[i]) <= hi + tol, (name, float(det.sigma2[i]), lo, hi)


def test_test_uses_the_last_window_samples_and_refuses_bad_batches(detector: DriftDetector) -> None:
    rng = np.random.default_rng(11)
    # 40 samples: the first 10 strongly shifted, the last 30 (the window) clean
    batch = concat_batches([gaussian_batch(rng, 10, shift={"a": 5.0}), gaussian_batch(rng, 30)])
    last = batch.select(slice(10, 40))
    assert torch.equal(detector.test(batch).ratio, detector.test(last).ratio)
    ratio = (detector.statistic(last) - detector.loc.double()) / detector.scale.double()
    assert torch.allclose(detector.test(last).ratio.double(), ratio, atol=1e-6)
    with pytest.raises(DataError):
        detector.test(batch.select(slice(0, detector.window - 1)))
    with pytest.raises(DataError):
        detector.statistic(batch.select(slice(0, 1)))
    other = MultimodalBatch.from_arrays({"a": rng.normal(size=(30, 2)), "b": rng.normal(size=(30, 5))})
    with pytest.raises(DataError):
        detector.test(other)


def test_result_to_dict(detector: DriftDetector) -> None:
    rng = np.random.default_rng(12)
    res = detector.test(gaussian_batch(rng, 30, shift={"c": 3.0}))
    d = res.to_dict()
    assert d["drifted"] is True and "c" in d["flagged"]
    assert set(d["ratio"]) == set(NAMES)
    assert d["flagged"] == [n for n, f in zip(NAMES, res.flagged.tolist(), strict=True) if f]
    assert torch.equal(res.flagged, res.ratio > 1.0)


# ============================================================================ calibration
def test_false_alarm_rate_on_fresh_in_distribution_windows(detector: DriftDetector) -> None:
    """200 fresh independent windows from the training distribution.

    A calibrated detector flags each with probability p ≈ alpha = 0.05 (a little above it at
    most: the threshold is an empirical quantile of 1000 windows drawn from a finite pool). The
    count of alarms X is Binomial(200, p); for p = 0.05, P(X > 20) < 1e-3 and P(X < 2) < 1e-3,
    so 2 ≤ X ≤ 20 (≤ 2·alpha) fails only for a miscalibrated threshold — too loose above, or
    so conservative that it never fires below.
    """
    assert detector.config.alpha == 0.05 and detector.window == 30
    rng = np.random.default_rng(2024)
    alarms = sum(detector.test(gaussian_batch(rng, 30)).drifted for _ in range(200))
    assert 2 <= alarms <= 20, alarms


@pytest.mark.parametrize("shifted", NAMES)
def test_one_std_mean_shift_is_flagged_in_its_modality(detector: DriftDetector, shifted: str) -> None:
    """A shift of 1 std in every feature of one modality: that modality is flagged in almost every
    window; the other modalities keep the in-distribution behaviour (ratio > 1 in at most about
    alpha of windows; 5 of 20 allowed: P(Binomial(20, 0.05) ≥ 6) < 1e-3)."""
    rng = np.random.default_rng(100 + NAMES.index(shifted))
    results = [detector.test(gaussian_batch(rng, 30, shift={shifted: 1.0})) for _ in range(20)]
    flagged = torch.stack([r.flagged for r in results]).float().mean(0)
    ratios = torch.stack([r.ratio for r in results])
    i = NAMES.index(shifted)
    assert float(flagged[i]) >= 0.9, (shifted, flagged.tolist())
    for j, name in enumerate(NAMES):
        if j != i:
            assert float((ratios[:, j] > 1).float().mean()) <= 0.25, (name, ratios[:, j].tolist())
            assert float(ratios[:, j].median()) < 1.0, (name, ratios[:, j].tolist())


def test_small_pool_shrinks_the_window() -> None:
    rng = np.random.default_rng(5)
    cfg = DriftConfig(window=100, reference_size=20, pool_size=2000, null_windows=100)
    det = DriftDetector.fit(gaussian_batch(rng, 40), gaussian_batch(rng, 10), cfg)
    # reference: 20 of 40 training samples; pool: the other 20 + 10 validation = 30 → window 15
    assert det.window == 15 and det.config.window == 15
    assert det.describe()["config"]["window"] == 15
    with pytest.raises(DataError):
        DriftDetector.fit(gaussian_batch(rng, 40), gaussian_batch(rng, 10, dims={"a": 2, "b": 5}), cfg)
    with pytest.raises(DataError):
        DriftDetector.fit(gaussian_batch(rng, 6), gaussian_batch(rng, 2), cfg)


# ============================================================================ stream monitor
def test_monitor_tests_fall_due_at_window_plus_multiples_of_step(detector: DriftDetector) -> None:
    rng = np.random.default_rng(21)
    stream = gaussian_batch(rng, 100)
    w, step = detector.window, 7
    mon = DriftMonitor(detector, step=step)
    out = mon.update(stream)
    expected = [c for c in range(1, 101) if c >= w and (c - w) % step == 0]
    assert expected[:3] == [30, 37, 44] and expected[-1] == 100
    assert [c for c, _ in out] == expected
    assert mon.seen == 100 and mon.tests == len(expected)
    assert mon.alarms == sum(r.drifted for _, r in out)
    for c, r in out:  # each test is the detector's test of samples (c - window, c]
        assert torch.equal(r.ratio, detector.test(stream.select(slice(c - w, c))).ratio), c
    last = mon.window_batch()
    assert last is not None and len(last) == w
    for n in NAMES:
        assert torch.equal(last.modalities[n], stream.modalities[n][-w:])


def test_monitor_chunking_does_not_change_the_tests(detector: DriftDetector) -> None:
    rng = np.random.default_rng(22)
    # drift in the middle so that both drifted and clean windows are compared
    stream = concat_batches([gaussian_batch(rng, 50), gaussian_batch(rng, 60, shift={"b": 1.0})])
    whole = DriftMonitor(detector).update(stream)
    for sizes in ([1] * 110, [1, 4, 13, 2, 29, 30, 1, 20, 10], [29, 1, 10, 10, 60], [110]):
        assert sum(sizes) == 110
        mon, got, i = DriftMonitor(detector), [], 0
        for s in sizes:
            got += mon.update(stream.select(slice(i, i + s)))
            i += s
        assert [c for c, _ in got] == [c for c, _ in whole] == list(range(30, 111, 10)), sizes
        for (c, a), (_, b) in zip(got, whole, strict=True):
            assert torch.equal(a.ratio, b.ratio) and torch.equal(a.flagged, b.flagged), (sizes, c)
        assert mon.first_alarm == next((c for c, r in whole if r.drifted), None), sizes


def test_monitor_first_alarm(strict_detector: DriftDetector) -> None:
    """alpha = 0.005 per test: a clean stream of 4 tests raises a false alarm with probability of a few
    percent (≈ 4 · alpha, more where the empirical 0.995 quantile of the null windows falls low);
    a 1-std shift in a 5-d modality is far above the threshold for a window of 30."""
    det = strict_detector
    w = det.window
    rng = np.random.default_rng(31)
    clean = DriftMonitor(det, step=w)
    clean.update(gaussian_batch(rng, 4 * w))
    assert clean.tests == 4
    assert clean.first_alarm is None and not clean.drifted and clean.alarms == 0

    step = 10
    shifted = DriftMonitor(det, step=step)  # drift from sample 0
    shifted.update(gaussian_batch(rng, 100, shift={"b": 1.0}))
    assert shifted.first_alarm is not None and shifted.first_alarm <= w + step, shifted.first_alarm
    assert shifted.drifted

    # drift starting at sample 50: the first fully drifted window ends at 50 + w
    late = DriftMonitor(det, step=step)
    for chunk in (gaussian_batch(rng, 50), gaussian_batch(rng, 60, shift={"b": 1.0})):
        late.update(chunk)
    assert late.first_alarm is not None and 50 < late.first_alarm <= 50 + w + step - 1, late.first_alarm


# ============================================================================ persistence
def test_state_round_trip_is_bit_identical(detector: DriftDetector) -> None:
    """A detector restored from its own state computes the same statistic and ratios, bit for bit
    (what every other saved component of a guard promises)."""
    restored = DriftDetector.from_state(detector.state_tensors(), NAMES, detector.config.model_dump())
    x = gaussian_batch(np.random.default_rng(41), 30, shift={"a": 0.3})
    assert torch.equal(restored.statistic(x), detector.statistic(x))
    assert torch.equal(restored.test(x).ratio, detector.test(x).ratio)


def test_state_round_trip_keeps_the_detector(detector: DriftDetector) -> None:
    state = detector.state_tensors("p")
    assert set(state) == {"p.sigma2", "p.krr", "p.loc", "p.scale", *(f"p.reference.{n}" for n in NAMES)}
    restored = DriftDetector.from_state(state, NAMES, detector.config.model_dump(), prefix="p")
    assert restored.window == detector.window and restored.config == detector.config
    for n in NAMES:
        assert torch.equal(restored.reference[n], detector.reference[n])
    rng = np.random.default_rng(42)
    for shift in (0.0, 0.5, 1.0):
        x = gaussian_batch(rng, 30, shift={"b": shift})
        assert torch.allclose(restored.statistic(x), detector.statistic(x), rtol=0, atol=1e-6)
        assert torch.allclose(restored.test(x).ratio, detector.test(x).ratio, rtol=0, atol=1e-4)
    # a second round trip changes nothing at all
    again = DriftDetector.from_state(restored.state_tensors(), NAMES, restored.config.model_dump())
    assert torch.equal(again.statistic(x), restored.statistic(x))


def _malformed(detector: DriftDetector) -> dict[str, tuple[dict[str, torch.Tensor], object]]:
    good, cfg = detector.state_tensors(), detector.config.model_dump()

    def without(key: str) -> dict[str, torch.Tensor]:
        return {k: v for k, v in good.items() if k != key}

    return {
        "missing krr": (without("drift.krr"), cfg),
        "missing reference": (without("drift.reference.b"), cfg),
        "sigma2 of 2 modalities": ({**good, "drift.sigma2": good["drift.sigma2"][:2]}, cfg),
        "scale as a matrix": ({**good, "drift.scale": good["drift.scale"][None]}, cfg),
        "reference of one sample": ({**good, "drift.reference.a": good["drift.reference.a"][:1]}, cfg),
        "reference flat": ({**good, "drift.reference.c": good["drift.reference.c"].flatten()}, cfg),
        "window below 4": (good, {**cfg, "window": 1}),
        "unknown config key": (good, {**cfg, "bogus": 1}),
        "config not a mapping": (good, None),
    }


MALFORMED = ["missing krr", "missing reference", "sigma2 of 2 modalities", "scale as a matrix",
             "reference of one sample", "reference flat", "window below 4", "unknown config key",
             "config not a mapping"]


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_state_is_a_checkpoint_error(detector: DriftDetector, case: str) -> None:
    cases = _malformed(detector)
    assert set(cases) == set(MALFORMED)
    tensors, cfg = cases[case]
    with pytest.raises(CheckpointError) as info:
        DriftDetector.from_state(tensors, NAMES, cfg)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)
