"""The one contract every guard implements — EMMA, MMSSL, every baseline, and yours.

A *guard* sits in front of a downstream multimodal model. It may

* **flag** — say which modality of which sample is failing: :meth:`Guard.score` returns
  (N, M) scores normalised so that **1.0 is the calibrated threshold**, :meth:`Guard.flag`
  returns ``score > 1`` as (N, M) booleans;
* **correct** — :meth:`Guard.transform` returns the batch with the same modality names,
  shapes and **raw units** it was given, repaired where the guard decided to repair;
* **predict** — :meth:`Guard.predict` returns the downstream prediction itself (EMMA is a
  gated predictor).

What a guard can do is declared by the class flags ``flags``, ``corrects``, ``predicts``.

The template (PyOD's ``BaseDeepLearningDetector`` and LeRobot's registered configs were the
examples; no code is shared) splits the work in two:

* **the base class owns** everything every guard needs: the config (a pydantic
  :class:`GuardConfig` subclass, ``extra="forbid"``), raw-in/raw-out standardisation (a
  :class:`~mmguard.data.preprocessing.Standardizer` fitted on the training split travels
  with the guard), input checks with one-line errors (modality names, shapes, NaN/Inf), the
  not-fitted error, threshold calibration (:meth:`Guard._calibrate`), chunked inference,
  the torch device and numeric precision, the save layout and :func:`load_guard`;
* **a guard implements hooks on standardised data**: ``_fit`` (train; return a JSON-ready
  report), ``_score`` (raw per-modality failure scores, higher = more likely failing),
  ``_transform`` (corrected standardised tensors), ``_predict`` (predictions), and for
  persistence ``_build_model(state)`` / ``_extra_state()``.

Calibration (decision, docs/architecture.md): on the *clean* validation split, for each
modality m, ``loc_m`` = median raw score and ``spread_m`` = (1 − α) quantile − ``loc_m``;
then ``t`` = the (1 − α) quantile ("higher" interpolation) of the sample maximum
``max_m (raw_m − loc_m) / spread_m``. The normalised score is
``(raw_m − loc_m) / (spread_m · t)``, so a sample is flagged in *some* modality on at most a
fraction α of the clean validation samples (α = ``config.false_alarm_rate``), each modality's
scores are on a comparable scale, and 1.0 is the threshold of every modality.

Device and precision (decisions, docs/devices.md): ``device=`` (``auto|cpu|cuda``) is where the
hooks run — training splits and inference chunks move there, outputs come back on the CPU.
``precision`` (``fp32`` default, or ``bf16`` via :meth:`Guard.set_precision` / ``create_guard`` /
``load_guard``) is opt-in mixed precision: ``_fit`` runs inside
:func:`mmguard.devices.use_precision`, so the training loop autocasts its forward passes, and the
inference hooks of ``score`` / ``transform`` / ``predict`` run under ``torch.autocast(bfloat16)``.
Kept in float32 (float64) whatever the precision: the standardiser, the calibration (raw scores of
clean validation data are always computed in fp32 and the thresholds in float64, so a saved guard
does not depend on the precision it is used with), the normalisation of scores against the
threshold, the drift detector (MMD statistics) and adaptation statistics. A guard whose decisions
are too precision-sensitive declares ``mixed_precision = False`` (EMMA) and then stays fp32 when
bf16 is asked for.

Save layout of a guard directory (all written atomically, ``guard.json`` last, so a
directory without it is incomplete and refused)::

    guard.json           kind, format, versions, capabilities, modalities, fitted state
    config.json          the validated config (pydantic model_dump)
    weights.safetensors  model.* (the hooks' module), preprocessing.*, calibration.*

:func:`load_guard` reads ``guard.json``, dispatches on ``kind`` through the registry and
never unpickles anything. Guards register with :func:`register_guard`; :func:`available_guards`
discovers every ``mmguard.<package>.guard`` module, every module of ``mmguard.baselines``,
the ``mmguard.guards`` entry-point group and the modules or ``.py`` files listed in
``$MMGUARD_PLUGINS`` — a new guard is one file, and ``mmguard bench`` sees it.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import os
import pkgutil
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from mmguard.adapt.drift import DriftConfig, DriftDetector, DriftMonitor, DriftResult
from mmguard.adapt.stats import compose, window_standardizer
from mmguard.calibration import grouped_max_quantile_calibration, max_quantile_calibration
from mmguard.data.model import ModalitySpec, MultimodalBatch
from mmguard.data.preprocessing import Standardizer
from mmguard.data.splits import Splits
from mmguard.data.stream import (
    DEFAULT_BUFFER_BYTES,
    DEFAULT_CHUNK_BYTES,
    RowSource,
    StreamSplit,
    buffer_rows_for,
    chunk_rows_for,
    iter_chunks,
    return_freed_memory,
)
from mmguard.devices import autocast, resolve_device, resolve_precision, use_precision
from mmguard.errors import CheckpointError, DataError, NotFittedError, SpecError
from mmguard.io.checkpoint import load_checkpoint, read_json, save_checkpoint, write_json
from mmguard.seeding import derive_seed

GUARD_FORMAT = 1
GUARD_FILE = "guard.json"
INFERENCE_CHUNK = 1024


class GuardConfig(BaseModel):
    """Settings every guard shares; a guard's config subclasses this (unknown keys are refused)."""

    model_config = ConfigDict(extra="forbid")

    false_alarm_rate: float = Field(
        0.01, gt=0, lt=1, description="target fraction of clean validation samples flagged in any modality"
    )
    drift: DriftConfig | None = Field(
        default_factory=DriftConfig, description="drift detector fitted with the guard (None: no drift detection)"
    )
    calibrate_over: Literal["samples", "groups", "auto"] = Field(
        "samples", description="threshold over pooled clean validation samples, or split-conformal over whole "
        "groups (mmguard.calibration.grouped_max_quantile_calibration); auto: groups when the validation split "
        "has the group key, else samples")
    group_key: str = Field("episode", min_length=1, description="meta key of the groups (calibrate_over)")
    group_miss: float = Field(0.1, gt=0, lt=1, description="allowed fraction of unseen groups whose false-alarm "
                              "rate exceeds false_alarm_rate (calibrate_over = groups)")


class Guard:
    """Template of every guard (see the module docstring for the contract and the hooks)."""

    #: registry name, e.g. ``"emma"``
    name: ClassVar[str] = ""
    #: the pydantic config class (a :class:`GuardConfig` subclass)
    config_class: ClassVar[type[GuardConfig]] = GuardConfig
    #: one line for ``mmguard guards``
    summary: ClassVar[str] = ""
    #: capabilities
    flags: ClassVar[bool] = False
    corrects: ClassVar[bool] = False
    predicts: ClassVar[bool] = False
    #: weighs its inputs per modality (an attention weight in [0, 1] per sample and modality, e.g. EMMA's β)
    attends: ClassVar[bool] = False
    #: what data the guard accepts
    modality_kinds: ClassVar[frozenset[str]] = frozenset({"vector", "image", "timeseries"})
    min_modalities: ClassVar[int] = 1
    needs_target: ClassVar[bool] = False
    #: CI-sized config overrides (few epochs) used by ``--quick`` and the contract test
    quick_config: ClassVar[dict[str, Any]] = {}
    #: whether ``bf16`` autocast may be used for this guard's training forward passes and inference
    mixed_precision: ClassVar[bool] = True
    #: whether the guard trains from data read from disk in chunks (:meth:`fit_stream`, ``_fit_stream``)
    streams: ClassVar[bool] = False

    def __init__(self, config: GuardConfig | Mapping[str, Any] | None = None, *, device: str = "cpu") -> None:
        self.config = self.validate_config(config)
        self.device = resolve_device(device)
        self.precision = "fp32"
        self.specs: tuple[ModalitySpec, ...] = ()
        self.standardizer: Standardizer | None = None
        self.calibration: dict[str, torch.Tensor] | None = None
        self._calibration_report: dict[str, float] = {}  # grouped calibration's figures (empty: pooled)
        self.model: nn.Module | None = None
        self.fit_report: dict[str, Any] = {}
        self.drift_detector: DriftDetector | None = None
        self.class_prior: list[float] | None = None
        self._adapted: Standardizer | None = None

    # ================================================================== configuration
    @classmethod
    def validate_config(cls, config: GuardConfig | Mapping[str, Any] | None) -> GuardConfig:
        """``config`` as a validated ``config_class`` (a dict is validated; errors are one line)."""
        if config is None:
            return cls.config_class()
        if isinstance(config, cls.config_class):
            return config
        if isinstance(config, BaseModel):
            config = config.model_dump()
        if not isinstance(config, Mapping):
            raise SpecError(f"guard {cls.name!r}: config must be a mapping, got {type(config).__name__}")
        try:
            return cls.config_class(**dict(config))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err.get("loc", ())) or "config"
            raise SpecError(f"guard {cls.name!r}: bad config field {where!r}: {err['msg']}") from None

    def set_precision(self, precision: str) -> Guard:
        """Use ``fp32`` (default) or ``bf16`` autocast for training forward passes and inference
        (see the module docstring for what stays float32); a guard with ``mixed_precision = False``
        stays ``fp32``. ``bf16`` on a GPU without bfloat16 is a one-line error. Returns the guard."""
        p = resolve_precision(precision, self.device)
        self.precision = p if self.mixed_precision else "fp32"
        return self

    @classmethod
    def capabilities(cls) -> dict[str, bool]:
        """The verbs of the serving and export API (``attention`` is an in-process extra: :attr:`attends`)."""
        return {"flag": cls.flags, "correct": cls.corrects, "predict": cls.predicts}

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """JSON-ready description (``mmguard guards --json``)."""
        return {
            "name": cls.name,
            "summary": cls.summary,
            "capabilities": cls.capabilities(),
            "attends": cls.attends,
            "modality_kinds": sorted(cls.modality_kinds),
            "min_modalities": cls.min_modalities,
            "needs_target": cls.needs_target,
            "streams": cls.streams,
            "quick_config": cls.quick_config,
            "config": cls.config_class.model_json_schema(),
        }

    # ================================================================== hooks
    def _fit(
        self, train: MultimodalBatch, val: MultimodalBatch, *, seed: int, progress: bool
    ) -> dict[str, Any]:
        """Train on standardised splits (val for early stopping); set ``self.model``; return a report."""
        raise NotImplementedError

    def _fit_stream(self, train: StreamSplit, val: StreamSplit, *, seed: int, progress: bool) -> dict[str, Any]:
        """Optional (``streams = True``): train on standardised splits read from disk in chunks
        (:class:`~mmguard.data.stream.StreamSplit`: ``minibatches`` for training, ``chunks`` for
        validation); set ``self.model``; return a report. Memory must not grow with the dataset."""
        raise NotImplementedError

    def _score(self, x: MultimodalBatch) -> torch.Tensor:
        """Raw failure scores (N, M) of a standardised batch; higher = more likely failing."""
        raise NotImplementedError

    def _transform(self, x: MultimodalBatch) -> dict[str, torch.Tensor]:
        """Corrected standardised tensors {modality: (N, ...)} of a standardised batch."""
        raise NotImplementedError

    def _predict(self, x: MultimodalBatch) -> torch.Tensor:
        """Predictions (N,) of a standardised batch."""
        raise NotImplementedError

    def _attention(self, x: MultimodalBatch) -> torch.Tensor:
        """Attention weights (N, M) in [0, 1] of a standardised batch (guards that attend)."""
        raise NotImplementedError

    def _inference_module(self) -> nn.Module:
        """Export hook (docs/export.md): a traceable module mapping the standardised modalities
        (positional, in modality order, each (N, *shape)) to a dict with ``"scores"`` (N, M) raw
        scores as ``_score`` (flag), ``"fixed"`` a tuple of ``_transform``'s tensors in modality order
        (correct), ``"prediction"`` (N,) as ``_predict`` (predict). No Python branching on values."""
        raise SpecError(f"guard {self.name!r} cannot be exported: it does not implement _inference_module")

    def _class_probabilities(self, x: MultimodalBatch) -> torch.Tensor | None:
        """Optional: class probabilities (N, K) of a standardised batch (predicting guards); used to
        keep test-time adaptation robust to class-mix changes. ``None``: not available."""
        return None

    def _extra_state(self) -> dict[str, Any]:
        """Fitted JSON state beyond the config (e.g. class count, decision threshold)."""
        return {}

    def _build_model(self, state: dict[str, Any]) -> nn.Module:
        """An untrained module of the fitted architecture (used by :func:`load_guard`)."""
        raise NotImplementedError

    def _restore_state(self, state: dict[str, Any]) -> None:
        """Set fitted non-tensor attributes from :meth:`_extra_state`'s output (after loading)."""

    # ================================================================== training
    def fit(self, splits: Splits, *, seed: int = 0, progress: bool = False) -> dict[str, Any]:
        """Fit on ``splits.train`` (raw units), validation for early stopping and calibration.

        ``splits.test`` is never touched. Returns a JSON-ready report.
        """
        if not isinstance(splits, Splits):
            raise DataError(f"fit takes a Splits object, got {type(splits).__name__}")
        if splits.standardized:
            raise DataError(
                f"guard {self.name!r} takes raw (unstandardised) splits: it fits and saves its own standardiser"
            )
        self._check_data(splits.train, "training split")
        self._check_data(splits.val, "validation split")
        if splits.val.specs != splits.train.specs:
            raise DataError("training and validation splits have different modalities")
        raw_train, raw_val = _as_float32(splits.train), _as_float32(splits.val)
        st = Standardizer.fit(raw_train)
        self.model = None  # a failed refit never leaves an old model beside new statistics
        self.specs, self.standardizer, self.calibration = tuple(splits.train.specs), st, None
        self.drift_detector, self._adapted, self.class_prior = None, None, None
        if self.needs_target and raw_train.target is not None and not raw_train.target.is_floating_point():
            counts = torch.bincount(raw_train.target.long().flatten())
            self.class_prior = (counts.double() / counts.sum()).tolist()
        train, val = st.transform(raw_train), st.transform(raw_val)
        torch.manual_seed(derive_seed(seed, "guard", self.name))  # a safety net; hooks derive their own
        with use_precision(self.precision):
            report = self._fit(train.to(self.device), val.to(self.device), seed=seed, progress=progress)
        if self.model is None:
            raise RuntimeError(f"guard {self.name!r}: _fit did not set self.model")
        self.model.to(self.device).eval()
        if self.flags:
            clean = val.select(~val.mask_or_clean().any(1)) if val.fault_mask is not None else val
            if len(clean) < 2:
                raise DataError("calibration needs at least 2 clean validation samples")
            self.calibration = self._calibrate(self._raw_scores(clean, precision="fp32"),
                                               self._calibration_groups(clean.meta))
            report = {**report, "calibration": self.calibration_summary()}
        if self.config.drift is not None:
            clean_val = val.select(~val.mask_or_clean().any(1)) if val.fault_mask is not None else val
            self.drift_detector = DriftDetector.fit(train, clean_val, self.config.drift,
                                                    seed=derive_seed(seed, "guard", self.name, "drift"))
            report = {**report, "drift": {"window": self.drift_detector.window}}
        self.fit_report = report
        return report

    @classmethod
    def require_streaming(cls) -> None:
        """One-line :class:`SpecError` unless the guard trains from a stream (``streams``)."""
        if not cls.streams:
            can = sorted(n for n, c in available_guards().items() if c.streams)
            raise SpecError(f"guard {cls.name!r} does not train from a stream (data larger than memory); "
                            f"guards that do: {', '.join(can) or 'none'}; or load the data without --stream")

    def fit_stream(self, train: RowSource, val: RowSource, *, seed: int = 0, progress: bool = False,
                   buffer_bytes: int = DEFAULT_BUFFER_BYTES, chunk_bytes: int = DEFAULT_CHUNK_BYTES
                   ) -> dict[str, Any]:
        """:meth:`fit` on splits that stay on disk (datasets larger than memory; docs/distributed.md).

        ``train`` and ``val`` are raw :class:`~mmguard.data.stream.RowSource` splits (e.g.
        :func:`mmguard.data.stream_splits`). The base class does what :meth:`fit` does, in chunks of
        ``chunk_bytes`` of float32 rows: checks (modality kinds, NaN/Inf in every chunk read), the standardiser
        (:meth:`Standardizer.fit_chunks`, equal to :meth:`Standardizer.fit` up to float64 rounding),
        the calibration (raw scores of every validation chunk — (N, M) numbers, not data — with
        split-conformal groups from the validation meta), and the drift detector, fitted on a seeded
        subsample of at most ``reference_size + pool_size`` training and ``pool_size`` validation rows
        (bounded; the in-memory fit draws its subsample from the whole split, so the two detectors differ).
        Training is the hook ``_fit_stream``, whose shuffle buffer holds ``buffer_bytes`` of float32
        rows. Guards with ``streams = False`` refuse with one line. The validation split is treated as
        clean (a streamed split carries no fault annotation)."""
        self.require_streaming()
        for src, where in ((train, "training split"), (val, "validation split")):
            if not isinstance(src, RowSource):
                raise DataError(f"fit_stream takes row sources; the {where} is a {type(src).__name__}")
            self._check_specs(src.specs, where)
            if len(src) < 2:
                raise DataError(f"{where} has {len(src)} samples; need at least 2")
        if val.specs != train.specs:
            raise DataError("training and validation splits have different modalities")
        if self.needs_target:
            raise SpecError(f"guard {self.name!r} needs a target; streamed fitting covers guards without one")

        return_freed_memory()
        chunk_rows = chunk_rows_for(train, chunk_bytes)

        def checked(src: RowSource, where: str) -> Iterator[MultimodalBatch]:
            for chunk in iter_chunks(src, chunk_rows, self.config.group_key):
                chunk.check_finite(where)
                yield _as_float32(chunk)

        st = Standardizer.fit_chunks(checked(train, "training split"))
        self.model = None
        self.specs, self.standardizer, self.calibration = tuple(train.specs), st, None
        self.drift_detector, self._adapted, self.class_prior = None, None, None
        buffer_rows = buffer_rows_for(train, buffer_bytes)
        tr = StreamSplit(train, st, self.device, buffer_rows, chunk_rows, self.config.group_key)
        va = StreamSplit(val, st, self.device, buffer_rows, chunk_rows, self.config.group_key)
        torch.manual_seed(derive_seed(seed, "guard", self.name))
        with use_precision(self.precision):
            report = self._fit_stream(tr, va, seed=seed, progress=progress)
        if self.model is None:
            raise RuntimeError(f"guard {self.name!r}: _fit_stream did not set self.model")
        self.model.to(self.device).eval()
        if self.flags:
            raw = torch.cat([self._raw_scores(st.transform(c), precision="fp32")
                             for c in checked(val, "validation split")])
            meta = {k: torch.from_numpy(val.meta(k)) for k in val.meta_keys() if not k.startswith("task:")}
            self.calibration = self._calibrate(raw, self._calibration_groups(meta))
            report = {**report, "calibration": self.calibration_summary()}
        if self.config.drift is not None:
            cfg = self.config.drift
            gen = torch.Generator().manual_seed(derive_seed(seed, "guard", self.name, "drift-sample"))
            n_tr = min(len(train), cfg.reference_size + cfg.pool_size)
            n_va = min(len(val), cfg.pool_size)
            sub_tr = train.read(np.sort(torch.randperm(len(train), generator=gen)[:n_tr].numpy()))
            sub_va = val.read(slice(0, n_va) if cfg.windows == "contiguous"  # windows keep the val order
                              else np.sort(torch.randperm(len(val), generator=gen)[:n_va].numpy()))
            self.drift_detector = DriftDetector.fit(st.transform(_as_float32(sub_tr)),
                                                    st.transform(_as_float32(sub_va)), cfg,
                                                    seed=derive_seed(seed, "guard", self.name, "drift"))
            report = {**report, "drift": {"window": self.drift_detector.window}}
        report = {**report, "streamed": {"train": len(train), "val": len(val), "buffer_rows": buffer_rows,
                                         "chunk_rows": chunk_rows}}
        self.fit_report = report
        return report

    def _calibration_groups(self, meta: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        """The group of each clean validation sample (``meta`` of those samples) for
        ``calibrate_over`` = groups/auto, else None."""
        mode, key = self.config.calibrate_over, self.config.group_key
        if mode == "samples":
            return None
        if key not in meta:
            if mode == "groups":
                raise DataError(f"calibrate_over='groups' needs meta {key!r} in the validation split; "
                                f"it has {sorted(meta) or 'no meta'}")
            return None
        groups = meta[key]
        if int(torch.unique(groups).numel()) < 2:
            if mode == "groups":
                raise DataError(f"calibrate_over='groups' needs at least 2 validation groups ({key!r})")
            return None
        return groups

    def _calibrate(self, raw: torch.Tensor, groups: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per-modality location and scale such that score 1.0 is the α-false-alarm threshold: over
        pooled samples, or split-conformal over whole groups when ``groups`` is given."""
        if groups is None:
            loc, scale = max_quantile_calibration(raw, self.config.false_alarm_rate)
            self._calibration_report = {}
        else:
            loc, scale, self._calibration_report = grouped_max_quantile_calibration(
                raw, groups, self.config.false_alarm_rate, self.config.group_miss)
        return {"loc": loc, "scale": scale}

    def calibration_summary(self) -> dict[str, Any]:
        cal = self._require_calibration()
        return {
            "false_alarm_rate": self.config.false_alarm_rate,
            "rule": "max over modalities of (raw - loc) / scale > 1 on <= alpha of clean validation"
                    + (f" in each of {self._calibration_report.get('episode_coverage', 0):.3f} "
                       f"of unseen {self.config.group_key!r} groups (split-conformal)"
                       if self._calibration_report else " samples"),
            **({"groups": self._calibration_report} if self._calibration_report else {}),
            "loc": dict(zip(self.names, cal["loc"].tolist(), strict=True)),
            "scale": dict(zip(self.names, cal["scale"].tolist(), strict=True)),
        }

    # ================================================================== inference
    @property
    def fitted(self) -> bool:
        return self.model is not None and self.standardizer is not None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.specs)

    def _require(self) -> None:
        if not self.fitted:
            raise NotFittedError(f"guard {self.name!r} is not fitted: call fit() or load_guard() first")

    def _require_calibration(self) -> dict[str, torch.Tensor]:
        self._require()
        if self.calibration is None:
            raise NotFittedError(f"guard {self.name!r} has no calibrated threshold")
        return self.calibration

    def _require_capability(self, flag: bool, verb: str) -> None:
        if not flag:
            can = [k for k, v in self.capabilities().items() if v]
            raise SpecError(f"guard {self.name!r} does not {verb}; it can: {', '.join(can)}")

    def _check_data(self, batch: MultimodalBatch, where: str) -> None:
        """Checks of training data against what the guard accepts (one-line errors)."""
        if not isinstance(batch, MultimodalBatch):
            raise DataError(f"{where}: expected a MultimodalBatch, got {type(batch).__name__}")
        self._check_specs(batch.specs, where)
        if self.needs_target and batch.target is None:
            raise DataError(f"guard {self.name!r} needs a target (e.g. --target COLUMN)")
        if len(batch) < 2:
            raise DataError(f"{where} has {len(batch)} samples; need at least 2")
        batch.check_finite(where)

    def _check_specs(self, specs: tuple[ModalitySpec, ...], where: str) -> None:
        """The modalities must be of kinds the guard accepts, and enough of them (one-line errors)."""
        if len(specs) < self.min_modalities:
            raise DataError(f"guard {self.name!r} needs at least {self.min_modalities} modalities, got {len(specs)}")
        for s in specs:
            if s.kind.value not in self.modality_kinds:
                raise DataError(
                    f"guard {self.name!r} handles {'/'.join(sorted(self.modality_kinds))} modalities; "
                    f"{s.name!r} is {s.kind.value}"
                )

    def _prepare(self, batch: MultimodalBatch) -> MultimodalBatch:
        """Check a raw input batch against the fitted modalities and standardise it."""
        self._require()
        check_input_batch(batch, self.name, self.specs)
        return (self._adapted or self.standardizer).transform(_as_float32(batch))  # type: ignore[union-attr]

    def _chunked(self, x: MultimodalBatch, fn: Callable[[MultimodalBatch], Any], *,
                 precision: str | None = None) -> Any:
        """Run ``fn`` on device-side chunks of ``x`` under the guard's precision (``precision``
        overrides it) and concatenate on CPU (bounded memory); floating outputs come back float32."""
        outs = []
        with torch.no_grad(), autocast(self.device, precision or self.precision):
            for i in range(0, len(x), INFERENCE_CHUNK):
                outs.append(fn(x.select(slice(i, i + INFERENCE_CHUNK)).to(self.device)))
        if not outs:
            raise DataError("empty batch: nothing to score")
        return _concat_cpu32(outs)

    def _raw_scores(self, x: MultimodalBatch, *, precision: str | None = None) -> torch.Tensor:
        raw = self._chunked(x, self._score, precision=precision)
        if raw.shape != (len(x), len(self.specs)):
            raise RuntimeError(f"guard {self.name!r}: _score returned {tuple(raw.shape)}, "
                               f"expected {(len(x), len(self.specs))}")
        return raw

    def _normalise(self, raw: torch.Tensor) -> torch.Tensor:
        cal = self._require_calibration()
        return ((raw.double() - cal["loc"].double().to(raw.device)) / cal["scale"].double().to(raw.device)).float()

    def score(self, batch: MultimodalBatch) -> torch.Tensor:
        """(N, M) failure scores of a raw batch; 1.0 is the calibrated threshold of every modality."""
        self._require_capability(self.flags, "flag")
        return self._normalise(self._raw_scores(self._prepare(batch)))

    def flag(self, batch: MultimodalBatch) -> torch.Tensor:
        """(N, M) booleans: modality m of sample n looks faulty (score > 1)."""
        return self.score(batch) > 1.0

    def flags_of_standardised(self, x: MultimodalBatch) -> torch.Tensor:
        """:meth:`flag` of an already standardised batch on the device (for ``_transform`` hooks)."""
        return self.flags_of_raw(self._score(x))

    def flags_of_raw(self, raw: torch.Tensor) -> torch.Tensor:
        """:meth:`flag` of raw ``_score`` values (N, M) a ``_transform`` hook has already computed
        (so the gate does not run the detector a second time)."""
        return self._normalise(raw) > 1.0

    def calibrated_module(self) -> CalibratedScores:
        """:meth:`_normalise` as a module (for ``_inference_module`` hooks that gate on flags)."""
        cal = self._require_calibration()
        return CalibratedScores(cal["loc"], cal["scale"])

    def export_module(self) -> InferencePath:
        """The whole inference path as one traceable module (``mmguard export``, docs/export.md):
        raw modalities (positional, float32) → standardisation → :meth:`_inference_module` →
        calibration / inverse standardisation; outputs in the order of its ``output_names``."""
        self._require()
        return InferencePath(self, self._inference_module()).eval()

    def transform(self, batch: MultimodalBatch) -> MultimodalBatch:
        """The batch as the downstream model should see it: same names, shapes, raw units."""
        self._require_capability(self.corrects, "correct data")
        x = self._prepare(batch)
        return self._raw_output(batch, x, self._chunked(x, self._transform))

    def score_and_transform(self, batch: MultimodalBatch) -> tuple[torch.Tensor, MultimodalBatch]:
        """:meth:`score` and :meth:`transform` of one batch (guards that flag and correct) in one
        pass where the guard has an inference path (``_inference_module``, the export hook that
        computes scores and corrections together; the contract test checks it equals the two calls),
        else as the two calls. Used by evaluation, where it halves the forward passes."""
        self._require_capability(self.flags, "flag")
        self._require_capability(self.corrects, "correct data")
        try:
            core = self._inference_module()
        except (SpecError, NotImplementedError):
            return self.score(batch), self.transform(batch)
        core = core.to(self.device)  # its calibration buffers; the guard's model is already there
        x = self._prepare(batch)

        def both(b: MultimodalBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            out = core(*(b.modalities[n] for n in self.names))
            return out["scores"], dict(zip(self.names, out["fixed"], strict=True))

        raw, fixed = self._chunked(x, both)
        if raw.shape != (len(x), len(self.specs)):
            raise RuntimeError(f"guard {self.name!r}: _inference_module scores {tuple(raw.shape)}, "
                               f"expected {(len(x), len(self.specs))}")
        return self._normalise(raw), self._raw_output(batch, x, fixed)

    def _raw_output(self, batch: MultimodalBatch, x: MultimodalBatch, fixed: dict[str, torch.Tensor]
                    ) -> MultimodalBatch:
        """Corrected standardised tensors back to the caller's raw units and dtypes."""
        if set(fixed) != set(self.names):
            raise RuntimeError(f"guard {self.name!r}: _transform returned {sorted(fixed)}")
        out = self.standardizer.inverse(x.with_modalities({n: fixed[n].float() for n in self.names}))  # type: ignore
        # same names, shapes, units — and the dtype the caller gave (computed in float32); an element the
        # guard left exactly as it was (a gate's bypass) is the caller's own value, bit for bit (not the
        # round trip through the standardiser, which may differ in the last bit)
        values = {}
        for n in self.names:
            raw = batch.modalities[n]
            kept = (fixed[n].float() == x.modalities[n]).to(raw.device)
            values[n] = torch.where(kept, raw, out.modalities[n].to(device=raw.device, dtype=raw.dtype))
        return batch.with_modalities(values)

    def predict(self, batch: MultimodalBatch) -> torch.Tensor:
        """Predictions (N,) of the downstream task (guards that predict)."""
        self._require_capability(self.predicts, "predict")
        return self._chunked(self._prepare(batch), self._predict)

    def attention(self, batch: MultimodalBatch) -> torch.Tensor:
        """Attention weights (N, M) in [0, 1], columns in modality order (guards that attend): how much
        of each modality the guard's own prediction uses; a guard that attends away from a failed
        modality lowers its weight."""
        self._require_capability(self.attends, "attend")
        return self._chunked(self._prepare(batch), self._attention)

    # ================================================================== drift and adaptation
    def _require_drift(self) -> DriftDetector:
        self._require()
        if self.drift_detector is None:
            raise NotFittedError(f"guard {self.name!r} was fitted without drift detection (config drift: null)")
        return self.drift_detector

    def _reference_units(self, batch: MultimodalBatch) -> MultimodalBatch:
        """A raw batch checked and standardised with the *training* statistics (never adapted)."""
        adapted, self._adapted = self._adapted, None
        try:
            return self._prepare(batch)
        finally:
            self._adapted = adapted

    def drift_test(self, batch: MultimodalBatch) -> DriftResult:
        """Per-modality drift test of the last ``window`` samples of a raw batch against the clean
        reference (:mod:`mmguard.adapt.drift`); ``ratio`` 1.0 is the calibrated threshold."""
        return self._require_drift().test(self._reference_units(batch))

    def drift_monitor(self) -> GuardDriftMonitor:
        """A stream monitor: feed raw chunks to ``update``; it tests every ``step`` new samples."""
        return GuardDriftMonitor(self, self._require_drift())

    def adapt(self, batch: MultimodalBatch, probs: torch.Tensor | None = None,
              prior: torch.Tensor | None = None) -> Standardizer:
        """Test-time adaptation of the input statistics to a window of recent unlabeled raw samples
        (:mod:`mmguard.adapt.stats`): later ``score``/``flag``/``transform``/``predict`` calls
        standardise with the window's statistics — class-balanced when the guard predicts classes —
        and ``transform`` returns data in the *training* units (the drift removed).
        A guard that does not predict classes can be given the class probabilities (N, K) of the
        window and the training ``prior`` (K,) by the model behind it. ``reset_adaptation`` undoes it.
        Returns the adapted standardiser."""
        x = self._reference_units(batch)
        if len(x) < 2:
            raise DataError("adaptation needs a window of at least 2 samples")
        if probs is None:
            with torch.no_grad():
                probe = self._class_probabilities(x.select(slice(0, 1)).to(self.device))
            probs = None if probe is None else self._chunked(x, self._class_probabilities)
            prior = torch.tensor(self.class_prior) if self.class_prior is not None else None
        if probs is not None and (prior is None or probs.shape != (len(x), len(prior))):
            raise DataError(f"adaptation: class probabilities {tuple(probs.shape)} do not match the window "
                            f"({len(x)} samples) and the prior ({None if prior is None else len(prior)} classes)")
        self._adapted = compose(self.standardizer, window_standardizer(x, probs, prior))  # type: ignore[arg-type]
        return self._adapted

    def reset_adaptation(self) -> None:
        self._adapted = None

    @property
    def adapted(self) -> bool:
        return self._adapted is not None

    # ================================================================== persistence
    def save(self, directory: str | Path) -> Path:
        """Write the guard directory (see the module docstring); returns its path."""
        self._require()
        d = Path(directory)
        if d.exists() and not d.is_dir():
            raise CheckpointError(f"cannot save a guard to {str(d)!r}: it is a file")
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}  # type: ignore[union-attr]
        tensors.update(self.standardizer.state_tensors("preprocessing"))  # type: ignore[union-attr]
        if self.calibration is not None:
            tensors.update({f"calibration.{k}": v for k, v in self.calibration.items()})
        if self.drift_detector is not None:
            tensors.update(self.drift_detector.state_tensors("drift"))
        if (d / GUARD_FILE).exists():
            (d / GUARD_FILE).unlink()  # the directory is incomplete until the new guard.json lands
        save_checkpoint(d, tensors, self.config.model_dump(mode="json"))
        write_json(d / GUARD_FILE, {
            "kind": self.name,
            "format": GUARD_FORMAT,
            "versions": _versions(),
            "capabilities": self.capabilities(),
            "modalities": [s.to_dict() for s in self.specs],
            "state": self._extra_state(),
            "class_prior": self.class_prior,
            "drift": None if self.drift_detector is None else self.drift_detector.describe(),
            "fit": self.fit_report,
        })
        return d

    @classmethod
    def load(cls, directory: str | Path, *, device: str = "cpu", precision: str = "fp32") -> Guard:
        """Load a guard directory; ``cls`` must match its kind (or be :class:`Guard` itself)."""
        guard = load_guard(directory, device=device, precision=precision)
        if cls is not Guard and not isinstance(guard, cls):
            raise CheckpointError(f"{str(directory)!r} holds a {guard.name!r} guard, not {cls.name!r}")
        return guard

    def _load_from(self, d: Path, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        try:
            self.specs = tuple(ModalitySpec.from_dict(s) for s in meta["modalities"])
            state = dict(meta.get("state") or {})
        except (KeyError, TypeError, ValueError, SpecError) as exc:
            raise CheckpointError(f"{str(d)!r}: malformed {GUARD_FILE} ({_first_line(exc)})") from None
        if not self.specs:
            raise CheckpointError(f"{str(d)!r}: the guard declares no modalities")
        self.standardizer = Standardizer.from_state_tensors(tensors, list(self.names), prefix="preprocessing")
        for n in self.names:
            s = self.spec_of(n)
            mean = self.standardizer.mean[n]
            if mean.ndim != len(s.shape) or mean.numel() > s.size:
                raise CheckpointError(f"{str(d)!r}: preprocessing of {n!r} does not fit shape {s.shape}")
        if self.flags:
            try:
                self.calibration = {k: tensors[f"calibration.{k}"].float() for k in ("loc", "scale")}
            except KeyError:
                raise CheckpointError(f"{str(d)!r}: the guard lacks its calibration tensors") from None
            if any(v.shape != (len(self.specs),) for v in self.calibration.values()):
                raise CheckpointError(f"{str(d)!r}: calibration tensors have the wrong shape")
            try:
                groups = ((meta.get("fit") or {}).get("calibration") or {}).get("groups") or {}
                self._calibration_report = {str(k): float(v) for k, v in groups.items()}
            except (AttributeError, TypeError, ValueError):
                raise CheckpointError(f"{str(d)!r}: malformed calibration report in {GUARD_FILE}") from None
        try:
            self._restore_state(state)
            model = self._build_model(state)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            if isinstance(exc, CheckpointError):
                raise
            raise CheckpointError(f"{str(d)!r}: malformed fitted state ({_first_line(exc)})") from None
        weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        try:
            model.load_state_dict(weights, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(
                f"{str(d)!r}: weights do not match the architecture ({_first_line(exc)[:200]})"
            ) from None
        self.model = model.to(self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.fit_report = dict(meta.get("fit") or {})
        drift = meta.get("drift")
        self.drift_detector = None
        if drift is not None:
            if not isinstance(drift, dict) or not isinstance(drift.get("config"), dict):
                raise CheckpointError(f"{str(d)!r}: malformed drift section in {GUARD_FILE}")
            try:
                self.drift_detector = DriftDetector.from_state(tensors, self.names, drift["config"],
                                                               sizes={sp.name: sp.size for sp in self.specs})
            except CheckpointError as exc:
                raise CheckpointError(f"{str(d)!r}: {exc}") from None
        prior = meta.get("class_prior")
        if prior is not None and (not isinstance(prior, list) or not all(isinstance(v, (int, float)) for v in prior)):
            raise CheckpointError(f"{str(d)!r}: malformed class_prior in {GUARD_FILE}")
        self.class_prior = prior
        self._adapted = None

    def spec_of(self, name: str) -> ModalitySpec:
        for s in self.specs:
            if s.name == name:
                return s
        raise SpecError(f"unknown modality {name!r}; the guard has {list(self.names)}")


def check_input_batch(batch: MultimodalBatch, kind: str, specs: tuple[ModalitySpec, ...]) -> None:
    """One-line :class:`DataError` unless ``batch`` has exactly the modalities ``specs`` (names, order,
    per-sample shapes) and only finite values; ``kind`` names the guard in the message."""
    names = tuple(s.name for s in specs)
    if not isinstance(batch, MultimodalBatch):
        raise DataError(f"expected a MultimodalBatch, got {type(batch).__name__}")
    if batch.names != names:
        missing = [n for n in names if n not in batch.names]
        extra = [n for n in batch.names if n not in names]
        detail = f"missing {missing}" if missing else f"unknown {extra}" if extra else "in another order"
        raise DataError(f"guard {kind!r} expects modalities {list(names)}; got {detail}")
    for s in specs:
        got = tuple(batch.modalities[s.name].shape[1:])
        if got != s.shape:
            raise DataError(f"modality {s.name!r}: expected per-sample shape {s.shape}, got {got}")
    batch.check_finite(f"guard {kind!r} input")


class CalibratedScores(nn.Module):
    """Raw (N, M) scores → normalised scores (1.0 = threshold), computed in float64 like :meth:`Guard._normalise`."""

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("loc", loc.detach().double().cpu().clone())
        self.register_buffer("scale", scale.detach().double().cpu().clone())

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        return ((raw.double() - self.loc) / self.scale).float()


class InferencePath(nn.Module):
    """Raw modalities → the guard's outputs, self-contained (built by :meth:`Guard.export_module`).

    Outputs (``output_names``): ``scores`` (N, M) normalised and ``flags`` (N, M) bool (guards that
    flag), ``fixed:<modality>`` in raw units (guards that correct), ``prediction`` (N,) (predict)."""

    def __init__(self, guard: Guard, core: nn.Module) -> None:
        super().__init__()
        self.names, self.core = guard.names, copy.deepcopy(core).cpu()  # never moves the guard's own model
        # the input statistics the guard uses now (adapted or not); corrections back in training units
        for key, st in (("in", guard._adapted or guard.standardizer), ("out", guard.standardizer)):
            for i, n in enumerate(self.names):
                self.register_buffer(f"{key}_mean_{i}", st.mean[n].detach().float().cpu().clone())  # type: ignore
                self.register_buffer(f"{key}_std_{i}", st.std[n].detach().float().cpu().clone())  # type: ignore
        self.calibrated = guard.calibrated_module() if guard.flags else None
        self.corrects, self.predicts = guard.corrects, guard.predicts
        self.output_names = ((["scores", "flags"] if guard.flags else []) + [
            f"fixed:{n}" for n in self.names if guard.corrects] + (["prediction"] if guard.predicts else []))

    def forward(self, *raw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        def b(key: str) -> torch.Tensor:
            return getattr(self, key)

        xs = [(x - b(f"in_mean_{i}")) / b(f"in_std_{i}") for i, x in enumerate(raw)]
        out = self.core(*xs)
        result: list[torch.Tensor] = []
        if self.calibrated is not None:
            scores = self.calibrated(out["scores"])
            result += [scores, scores > 1.0]
        if self.corrects:
            result += [f.float() * b(f"out_std_{i}") + b(f"out_mean_{i}") for i, f in enumerate(out["fixed"])]
        if self.predicts:
            result.append(out["prediction"])
        return tuple(result)


# ====================================================================== registry
G = TypeVar("G", bound=type[Guard])
_REGISTRY: dict[str, type[Guard]] = {}


class GuardDriftMonitor(DriftMonitor):
    """:class:`~mmguard.adapt.drift.DriftMonitor` fed with *raw* chunks (checked and standardised
    with the guard's training statistics)."""

    def __init__(self, guard: Guard, detector: DriftDetector) -> None:
        super().__init__(detector)
        self.guard = guard

    def update(self, chunk: MultimodalBatch) -> list[tuple[int, DriftResult]]:
        return super().update(self.guard._reference_units(chunk))


def register_guard(cls: G) -> G:
    """Class decorator: add a :class:`Guard` subclass to the registry under ``cls.name``."""
    if not (isinstance(cls, type) and issubclass(cls, Guard)):
        raise TypeError(f"register_guard needs a Guard subclass, got {cls!r}")
    if not cls.name or not cls.name.replace("_", "").isalnum() or cls.name != cls.name.lower():
        raise TypeError(f"{cls.__name__}: name must be a lower-case identifier, got {cls.name!r}")
    if not (isinstance(cls.config_class, type) and issubclass(cls.config_class, GuardConfig)):
        raise TypeError(f"{cls.__name__}: config_class must subclass GuardConfig")
    if not (cls.flags or cls.corrects or cls.predicts):
        raise TypeError(f"{cls.__name__}: a guard must flag, correct or predict")
    hooks = {"flags": "_score", "corrects": "_transform", "predicts": "_predict"}
    for cap, hook in hooks.items():
        if getattr(cls, cap) and getattr(cls, hook) is getattr(Guard, hook):
            raise TypeError(f"{cls.__name__}: declares {cap} but does not implement {hook}")
    for hook in ("_fit", "_build_model"):
        if getattr(cls, hook) is getattr(Guard, hook):
            raise TypeError(f"{cls.__name__}: does not implement {hook}")
    old = _REGISTRY.get(cls.name)
    if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
        raise TypeError(f"guard name {cls.name!r} is taken by {old.__module__}.{old.__qualname__}")
    _REGISTRY[cls.name] = cls
    return cls


_discovered = False


_loaded_plugins: set[str] = set()


def _discover() -> None:
    """Import every guard module (see the module docstring).

    Built-in modules and entry points are imported once; each ``$MMGUARD_PLUGINS`` entry is
    retried on every call until it loads, so a broken plugin is reported every time it is asked
    for, never silently dropped.
    """
    global _discovered
    if not _discovered:
        _discover_builtin()
        _discovered = True
    for item in filter(None, (s.strip() for s in os.environ.get("MMGUARD_PLUGINS", "").split(","))):
        if item not in _loaded_plugins:
            load_plugin(item)
            _loaded_plugins.add(item)


def _discover_builtin() -> None:
    import mmguard

    for info in pkgutil.iter_modules(mmguard.__path__):
        if not info.ispkg:
            continue
        pkg = f"mmguard.{info.name}"
        if importlib.util.find_spec(f"{pkg}.guard") is not None:
            importlib.import_module(f"{pkg}.guard")
    baselines = importlib.import_module("mmguard.baselines")  # a folder of one-file guards
    for info in pkgutil.iter_modules(baselines.__path__):
        importlib.import_module(f"mmguard.baselines.{info.name}")
    try:
        from importlib.metadata import entry_points

        for ep in entry_points(group="mmguard.guards"):
            ep.load()
    except Exception as exc:  # a broken third-party plugin must not hide the built-in guards
        sys.stderr.write(f"mmguard: warning: a guard plugin failed to load: {_first_line(exc)}\n")


def load_plugin(item: str) -> None:
    """Import a guard plugin: a module name or a path to a ``.py`` file (it registers itself)."""
    if item.endswith(".py"):
        path = Path(item)
        if not path.is_file():
            raise SpecError(f"guard plugin file {item!r} does not exist")
        mod_name = f"mmguard_plugin_{path.stem}"
        spec = importlib.util.spec_from_file_location(mod_name, path)
        if spec is None or spec.loader is None:
            raise SpecError(f"cannot import guard plugin {item!r}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        spec.loader.exec_module(module)
    else:
        try:
            importlib.import_module(item)
        except ImportError as exc:
            raise SpecError(f"cannot import guard plugin {item!r}: {_first_line(exc)}") from None


def available_guards() -> dict[str, type[Guard]]:
    """Every registered guard by name (sorted)."""
    _discover()
    return dict(sorted(_REGISTRY.items()))


def get_guard(name: str) -> type[Guard]:
    """The guard class registered as ``name`` (one-line error listing the known names)."""
    guards = available_guards()
    if name not in guards:
        raise SpecError(f"unknown guard {name!r}; known: {', '.join(guards)}")
    return guards[name]


def create_guard(name: str, config: GuardConfig | Mapping[str, Any] | None = None, *,
                 device: str = "cpu", quick: bool = False, precision: str = "fp32") -> Guard:
    """An unfitted guard ``name``; ``quick`` merges the class's ``quick_config`` under ``config``;
    ``precision``: see :meth:`Guard.set_precision`."""
    cls = get_guard(name)
    if quick:
        base = cls.validate_config(cls.quick_config).model_dump()
        config = _deep_merge(base, dict(config or {}) if not isinstance(config, BaseModel) else config.model_dump())
    return cls(config, device=device).set_precision(precision)


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def load_guard(directory: str | Path, *, device: str = "cpu", precision: str = "fp32") -> Guard:
    """Open a guard directory written by :meth:`Guard.save` (safe on untrusted files); ``precision``:
    see :meth:`Guard.set_precision`."""
    d = Path(directory)
    if not d.is_dir():
        raise CheckpointError(f"guard directory {str(d)!r} does not exist")
    if not (d / GUARD_FILE).is_file():
        raise CheckpointError(f"{str(d)!r} is not a (complete) guard directory: no {GUARD_FILE}")
    meta = read_json(d / GUARD_FILE)
    if not isinstance(meta, dict) or not isinstance(meta.get("kind"), str):
        raise CheckpointError(f"{str(d / GUARD_FILE)!r} does not name the guard's kind")
    if meta.get("format") != GUARD_FORMAT:
        raise CheckpointError(f"{str(d)!r}: guard format {meta.get('format')!r}, this mmguard reads {GUARD_FORMAT}")
    try:
        cls = get_guard(meta["kind"])
    except SpecError as exc:
        raise CheckpointError(f"{str(d)!r}: {exc}") from None
    tensors, config = load_checkpoint(d)
    try:
        guard = cls(config, device=device)
    except SpecError as exc:
        raise CheckpointError(f"{str(d)!r}: {exc}") from None
    guard._load_from(d, meta, tensors)
    return guard.set_precision(precision)


def _as_float32(batch: MultimodalBatch) -> MultimodalBatch:
    """Floating modalities as float32 (the precision every guard computes in); others unchanged."""
    changed = {n: v.float() for n, v in batch.modalities.items() if v.is_floating_point() and v.dtype != torch.float32}
    return batch.with_modalities(changed) if changed else batch


def _concat_cpu32(outs: list[Any]) -> Any:
    """Concatenate per-chunk outputs (tensors, or dicts / tuples of them) on the CPU, floats as float32."""
    first = outs[0]
    if isinstance(first, dict):
        return {k: _concat_cpu32([o[k] for o in outs]) for k in first}
    if isinstance(first, tuple):
        return tuple(_concat_cpu32([o[i] for o in outs]) for i in range(len(first)))
    return torch.cat([_cpu32(o) for o in outs])


def _cpu32(t: torch.Tensor) -> torch.Tensor:
    """An inference output on the CPU; reduced-precision floats (bf16 autocast) as float32."""
    t = t.detach()
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.float()
    return t.cpu()


def _versions() -> dict[str, str]:
    import mmguard

    return {"mmguard": mmguard.__version__, "torch": torch.__version__.split("+")[0]}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
