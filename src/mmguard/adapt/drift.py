"""Drift detection per modality: a kernel two-sample test of a window of unlabeled samples
against a clean reference, calibrated on in-distribution windows.

**Statistic** — the unbiased squared maximum mean discrepancy (Gretton, Borgwardt, Rasch,
Schölkopf, Smola, "A Kernel Two-Sample Test", JMLR 13, 2012, eq. 3 / lemma 6)::

    MMD²_u(X, R) = mean_{i≠j} k(x_i, x_j) + mean_{i≠j} k(r_i, r_j) − 2 mean_{i,j} k(x_i, r_j)

per modality, with the Gaussian kernel ``k(a, b) = exp(−‖a − b‖² / (2σ²))`` on the flattened,
standardised modality and the bandwidth σ² = the median squared pairwise distance within the
reference (the median heuristic, ibid. section 8).

**Threshold** (decision, docs/drift.md) — instead of a permutation test per window (hundreds of
kernel evaluations for every test of a stream), the null distribution of the statistic is
estimated once, at fit time, from ``null_windows`` windows of ``window`` samples drawn without
replacement from an in-distribution *pool* disjoint from the reference (the training samples
not in the reference plus the validation split). The windows' statistics (one column per
modality) go through :func:`mmguard.calibration.max_quantile_calibration`, the rule the guard
scores use, so a window is called drifted in *some* modality on at most a fraction ``alpha``
of in-distribution windows, and the normalised statistic is 1.0 at every modality's threshold.
(The same idea as alibi-detect's ``infer_threshold``; no code is shared.)

**Streams** — :class:`DriftMonitor` keeps the last ``window`` samples of a stream and tests
them every ``step`` new samples (first test once ``window`` samples have arrived), so an alarm
comes at most ``window + step − 1`` samples after drift starts *if* a single window of drifted
samples is enough to detect it. ``alpha`` is the false-alarm rate *per test*.

Vectorised: modalities of equal flattened size are stacked and handled by batched kernels, the
null windows by batched gathers; no Python loop over samples or windows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from mmguard.adapt.window import recent
from mmguard.calibration import max_quantile_calibration
from mmguard.data.model import MultimodalBatch, concat_batches
from mmguard.errors import CheckpointError, DataError

NULL_CHUNK = 64  # null windows per batched gather (bounded memory)


class DriftConfig(BaseModel):
    """Settings of the drift detector (defaults chosen on development data, docs/drift.md)."""

    model_config = ConfigDict(extra="forbid")

    window: int = Field(100, ge=4, description="samples per test")
    step: int = Field(25, ge=1, description="a stream is re-tested every `step` new samples")
    alpha: float = Field(0.01, gt=0, lt=1, description="false-alarm rate per test on in-distribution data")
    reference_size: int = Field(300, ge=4, description="clean reference samples kept (subsampled)")
    pool_size: int = Field(2000, ge=8, description="in-distribution samples the null windows are drawn from")
    null_windows: int = Field(2000, ge=100, description="in-distribution windows that calibrate the threshold")
    windows: Literal["shuffled", "contiguous"] = Field(
        "shuffled", description="shuffled: null windows drawn at random from the pool (exchangeable streams); "
        "contiguous: windows of consecutive validation samples in their order (time-correlated streams, "
        "e.g. frames of episodes)")


@dataclass(frozen=True)
class DriftResult:
    """One test: ``ratio`` (M,) normalised statistic (1.0 = threshold), ``flagged`` (M,) booleans."""

    names: tuple[str, ...]
    ratio: torch.Tensor
    flagged: torch.Tensor

    @property
    def drifted(self) -> bool:
        return bool(self.flagged.any())

    def to_dict(self) -> dict[str, Any]:
        return {"drifted": self.drifted, "ratio": dict(zip(self.names, self.ratio.tolist(), strict=True)),
                "flagged": [n for n, f in zip(self.names, self.flagged.tolist(), strict=True) if f]}


def _flat(batch: MultimodalBatch, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    return {n: batch.modalities[n].reshape(len(batch), -1).double() for n in names}


def _groups(sizes: Mapping[str, int]) -> dict[int, list[int]]:
    """Modality indices grouped by flattened size (stacked into one batched kernel)."""
    out: dict[int, list[int]] = {}
    for i, d in enumerate(sizes.values()):
        out.setdefault(d, []).append(i)
    return out


def _sqdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(G, n, m) squared Euclidean distances of (G, n, d) and (G, m, d)."""
    return torch.cdist(a, b).pow(2)


class DriftDetector:
    """Per-modality MMD drift test against a clean reference (see the module docstring)."""

    def __init__(self, names: tuple[str, ...], reference: dict[str, torch.Tensor], sigma2: torch.Tensor,
                 krr: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, config: DriftConfig) -> None:
        self.names, self.reference, self.config = names, reference, config
        # held at float32 precision (what is saved), computed with in float64: a loaded detector is bit-identical
        self.sigma2, self.krr, self.loc, self.scale = (t.float().double() for t in (sigma2, krr, loc, scale))
        self.window = config.window
        self._groups = _groups({n: reference[n].shape[1] for n in names})

    # ------------------------------------------------------------------ fit
    @classmethod
    def fit(cls, train: MultimodalBatch, val: MultimodalBatch, config: DriftConfig | None = None, *,
            seed: int = 0) -> DriftDetector:
        """Fit on in-distribution data (standardised): the reference is a seeded subsample of ``train``
        (``reference_size``); the null windows come from the rest of ``train`` plus ``val``
        (subsampled to ``pool_size``), so reference and pool are disjoint. A pool smaller than two
        windows shrinks the window to half the pool (recorded in :meth:`describe`).
        """
        cfg = config or DriftConfig()
        names = train.names
        if val.names != names:
            raise DataError("drift reference and pool have different modalities")
        gen = torch.Generator().manual_seed(int(seed))
        order = torch.randperm(len(train), generator=gen)
        n_ref = min(cfg.reference_size, len(train) // 2)
        ref = train.select(order[:n_ref])
        if cfg.windows == "contiguous":  # consecutive validation samples, in their order
            pool = val.select(slice(0, cfg.pool_size))
        else:
            pool = concat_batches([train.select(order[n_ref:]), val])
            pool = pool.select(torch.randperm(len(pool), generator=gen)[:cfg.pool_size])
        if len(ref) < 4 or len(pool) < 8:
            raise DataError(f"drift detection needs at least 4 reference and 8 pool samples, got {len(ref)} "
                            f"and {len(pool)}")
        window = min(cfg.window, len(pool) // 2)
        cfg = cfg.model_copy(update={"window": window})
        r, p = _flat(ref, names), _flat(pool, names)
        m = len(names)
        sigma2, krr = torch.zeros(m, dtype=torch.float64), torch.zeros(m, dtype=torch.float64)
        if cfg.windows == "contiguous":
            starts = torch.linspace(0, len(pool) - window, min(cfg.null_windows, len(pool) - window + 1)).round()
            idx = starts.long()[:, None] + torch.arange(window)[None, :]
        else:
            idx = torch.rand(cfg.null_windows, len(pool), generator=gen).argsort(1)[:, :window]  # (B, w)
        n_null = len(idx)
        null = torch.zeros(n_null, m, dtype=torch.float64)
        for members in _groups({n: r[n].shape[1] for n in names}).values():
            rs = torch.stack([r[names[i]] for i in members])  # (G, R, d)
            ps = torch.stack([p[names[i]] for i in members])  # (G, P, d)
            drr = _sqdist(rs, rs)
            off = ~torch.eye(len(ref), dtype=torch.bool)
            s2 = drr[:, off].median(1).values.clamp_min(1e-12)  # median heuristic
            kref = torch.exp(-drr / (2 * s2[:, None, None]))
            k_rr = kref[:, off].mean(1)
            kpr = torch.exp(-_sqdist(ps, rs) / (2 * s2[:, None, None])).mean(2)  # (G, P)
            kpp_flat = torch.exp(-_sqdist(ps, ps) / (2 * s2[:, None, None])).float().reshape(len(members), -1)
            stats = []
            for c in range(0, n_null, NULL_CHUNK):
                ix = idx[c:c + NULL_CHUNK]  # (b, w)
                flat = (ix[:, :, None] * len(pool) + ix[:, None, :]).reshape(-1)  # one flat gather
                block = kpp_flat[:, flat].reshape(len(members), len(ix), -1)  # (G, b, w·w)
                kxx = (block.sum(2).double() - window) / (window * (window - 1))  # k(x, x) = 1 on the diagonal
                kxr = kpr[:, ix].mean(2)  # (G, b)
                stats.append(kxx + k_rr[:, None] - 2 * kxr)
            col = torch.cat(stats, 1).T  # (B, G)
            for j, i in enumerate(members):
                sigma2[i], krr[i], null[:, i] = s2[j], k_rr[j], col[:, j]
        loc, scale = max_quantile_calibration(null, cfg.alpha)
        return cls(names, {n: r[n].float() for n in names}, sigma2, krr, loc, scale, cfg)

    # ------------------------------------------------------------------ test
    def statistic(self, batch: MultimodalBatch) -> torch.Tensor:
        """(M,) MMD²_u of ``batch`` (standardised, ≥ 2 samples) against the reference."""
        if batch.names != self.names:
            raise DataError(f"drift test expects modalities {list(self.names)}, got {list(batch.names)}")
        for name in self.names:
            size, expected = batch.modalities[name][0].numel(), self.reference[name].shape[1]
            if size != expected:
                raise DataError(f"drift test: modality {name!r} has {size} values per sample, expected {expected}")
        n = len(batch)
        if n < 2:
            raise DataError("a drift test needs at least 2 samples")
        x = _flat(batch, self.names)
        out = torch.zeros(len(self.names), dtype=torch.float64)
        for members in self._groups.values():
            xs = torch.stack([x[self.names[i]] for i in members])
            rs = torch.stack([self.reference[self.names[i]].double() for i in members])
            s2 = self.sigma2[members][:, None, None]
            kxx = (torch.exp(-_sqdist(xs, xs) / (2 * s2)).sum((1, 2)) - n) / (n * (n - 1))
            kxr = torch.exp(-_sqdist(xs, rs) / (2 * s2)).mean((1, 2))
            out[members] = kxx + self.krr[members] - 2 * kxr
        return out

    def test(self, batch: MultimodalBatch) -> DriftResult:
        """Test the last ``window`` samples of ``batch`` (standardised); refuses fewer."""
        if len(batch) < self.window:
            raise DataError(f"a drift test needs {self.window} samples (the calibrated window), got {len(batch)}")
        recent = batch.select(slice(len(batch) - self.window, len(batch)))
        ratio = ((self.statistic(recent) - self.loc) / self.scale).float()
        return DriftResult(self.names, ratio, ratio > 1.0)

    def monitor(self) -> DriftMonitor:
        return DriftMonitor(self)

    # ------------------------------------------------------------------ persistence
    def describe(self) -> dict[str, Any]:
        return {"config": self.config.model_dump(), "statistic": "unbiased MMD² (Gretton et al. 2012), "
                "Gaussian kernel, median-heuristic bandwidth", "rule": "max over modalities of "
                "(MMD² - loc) / scale > 1 on <= alpha of in-distribution windows"}

    def state_tensors(self, prefix: str = "drift") -> dict[str, torch.Tensor]:
        out = {f"{prefix}.{k}": v.float().contiguous() for k, v in
               (("sigma2", self.sigma2), ("krr", self.krr), ("loc", self.loc), ("scale", self.scale))}
        out.update({f"{prefix}.reference.{n}": self.reference[n].contiguous() for n in self.names})
        return out

    @classmethod
    def from_state(cls, tensors: Mapping[str, torch.Tensor], names: tuple[str, ...], config: Mapping[str, Any],
                   prefix: str = "drift", sizes: Mapping[str, int] | None = None) -> DriftDetector:
        """Rebuild a saved detector; ``sizes`` (values per sample of each modality) is checked when given."""
        try:
            cfg = DriftConfig(**config)
            parts = {k: tensors[f"{prefix}.{k}"] for k in ("sigma2", "krr", "loc", "scale")}
            reference = {n: tensors[f"{prefix}.reference.{n}"].float() for n in names}
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"malformed drift detector state ({str(exc).splitlines()[0]})") from None
        if any(v.shape != (len(names),) for v in parts.values()) or any(
                r.ndim != 2 or r.shape[0] < 2 for r in reference.values()):
            raise CheckpointError("drift detector tensors have the wrong shape")
        if sizes is not None and any(reference[n].shape[1] != sizes[n] for n in names):
            raise CheckpointError("drift reference does not match the modalities' sizes")
        if not all(bool(torch.isfinite(t).all()) for t in [*parts.values(), *reference.values()]) \
                or not bool((parts["sigma2"] > 0).all()) or not bool((parts["scale"] > 0).all()):
            raise CheckpointError("drift detector tensors hold NaN/Inf or non-positive scales")
        return cls(names, reference, parts["sigma2"], parts["krr"], parts["loc"], parts["scale"], cfg)


class DriftMonitor:
    """A stream's drift state: the last ``window`` samples, tested every ``step`` new ones.

    ``update(chunk)`` returns the tests that fell due inside the chunk as ``(count, result)``,
    ``count`` being the number of stream samples seen at that test; ``first_alarm`` is the count
    of the first drifted test (``None`` until then).
    """

    def __init__(self, detector: DriftDetector, step: int | None = None) -> None:
        if step is not None and step < 1:
            raise DataError(f"a drift monitor's step must be at least 1, got {step}")
        self.detector = detector
        self.step = detector.config.step if step is None else step
        self.seen = 0
        self.first_alarm: int | None = None
        self.tests = 0
        self.alarms = 0
        self._buffer: MultimodalBatch | None = None

    @property
    def drifted(self) -> bool:
        return self.first_alarm is not None

    def update(self, chunk: MultimodalBatch) -> list[tuple[int, DriftResult]]:
        w = self.detector.window
        buf = recent(self._buffer, chunk, w + len(chunk))  # the tests due in this chunk reach back w samples
        start = self.seen + len(chunk) - len(buf)  # stream count of buf[0]
        due = [c for c in range(self.seen + 1, self.seen + len(chunk) + 1) if c >= w and (c - w) % self.step == 0]
        out = []
        for c in due:
            result = self.detector.test(buf.select(slice(c - w - start, c - start)))
            self.tests += 1
            if result.drifted:
                self.alarms += 1
                if self.first_alarm is None:
                    self.first_alarm = c
            out.append((c, result))
        self.seen += len(chunk)
        self._buffer = buf if len(buf) <= w else buf.select(slice(len(buf) - w, len(buf)))
        return out

    def window_batch(self) -> MultimodalBatch | None:
        """The most recent (up to ``window``) samples seen."""
        return self._buffer
