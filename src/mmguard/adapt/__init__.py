"""Sensor drift: detect it (:mod:`~mmguard.adapt.drift`, a per-modality MMD test with a calibrated
threshold) and adapt to it at test time without labels (:mod:`~mmguard.adapt.stats`,
class-balanced re-standardisation; :mod:`~mmguard.adapt.norm`, AdaBN and TENT). See docs/drift.md."""

from mmguard.adapt.drift import DriftConfig, DriftDetector, DriftMonitor, DriftResult

__all__ = ["DriftConfig", "DriftDetector", "DriftMonitor", "DriftResult"]
