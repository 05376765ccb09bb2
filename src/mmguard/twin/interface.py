"""The contract between the simulator (:mod:`mmguard.twin.episode`) and storage/CLI.

``simulate_episode(scene, seed, steps, camera) -> Episode`` is a pure function of its
arguments: the same arguments give bit-identical arrays on the same machine, whatever process
runs it. Every array has the step axis first (length ``steps``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SCENES: tuple[str, ...] = ("arm", "weld")
"""Scenes shipped with mmguard (``scenes/<name>.xml``); kept here, free of MuJoCo, so that storage
and the CLI can validate a scene name without importing the simulator."""


@dataclass(frozen=True)
class CameraConfig:
    """Fixed workcell camera: image size and whether a depth image is rendered too."""

    width: int = 64
    height: int = 64
    depth: bool = False


@dataclass
class Episode:
    """One simulated episode.

    * ``modalities`` — name -> array: ``camera`` uint8 (T, 3, H, W); optional ``depth``
      float32 (T, 1, H, W) in metres; ``kinematics`` float32 (T, D); for ``weld`` also
      ``kinematics_r0`` and ``kinematics_r1`` (each robot's own vector).
    * ``targets`` — name -> array: ``seam_distance`` float32 (T,) in metres, ``quality`` int64
      (T,) (1 = deviation beyond tolerance), ``phase`` int64 (T,) (index into ``phase_names``).
    * ``channels`` / ``units`` — per vector modality, one name and unit per column.
    * ``attrs`` — scene name, MJCF hash, generator version, seed, camera parameters, timestep,
      control period, tolerance, and anything else needed to interpret the data.
    """

    modalities: dict[str, np.ndarray]
    targets: dict[str, np.ndarray]
    channels: dict[str, list[str]] = field(default_factory=dict)
    units: dict[str, list[str]] = field(default_factory=dict)
    phase_names: list[str] = field(default_factory=list)
    attrs: dict[str, object] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return int(next(iter(self.modalities.values())).shape[0])
