"""A PNG of one twin episode: camera frames beside the sensor traces (matplotlib Agg, no pyplot state).

Left column: ``frames`` camera images evenly spaced over the episode. Right column, sharing
the time axis: selected kinematic channels (by default up to six joint angles that move, one
unit per panel), the seam distance with the quality tolerance (steps flagged ``quality = 1``
shaded) and the process phase.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmguard.errors import DataError, SpecError
from mmguard.io.figures import save_figure
from mmguard.twin.dataset import read_episode

MAX_CHANNELS = 6
PREFERRED_UNITS = ("rad", "m")  # joint angles, then positions: one unit per panel keeps the scale readable
TOLERANCE_KEYS = ("tolerance", "tolerance_m", "seam_tolerance", "seam_tolerance_m", "quality_tolerance")


def find_tolerance(sim_attrs: dict[str, Any]) -> float | None:
    """The quality tolerance (metres) recorded by the simulator, if any."""
    for key in (*TOLERANCE_KEYS, *sorted(k for k in sim_attrs if "tolerance" in k.lower())):
        value = sim_attrs.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value):
            return float(value)
    return None


def _pick_channels(x: np.ndarray, names: list[str], units: list[str],
                   wanted: Sequence[str] | None) -> list[int]:
    """``wanted`` by name; by default up to six moving channels of one unit (joint angles if any)."""
    if wanted:
        unknown = [c for c in wanted if c not in names]
        if unknown:
            raise SpecError(f"unknown kinematics channel {unknown[0]!r}; known: {names}")
        return [names.index(c) for c in wanted]
    std = x.std(axis=0)
    candidates = list(range(x.shape[1]))
    for unit in PREFERRED_UNITS:
        same = [i for i in candidates if i < len(units) and units[i] == unit and std[i] > 0]
        if same:
            candidates = same
            break
    moving = sorted(candidates, key=lambda i: -std[i])[:MAX_CHANNELS]
    return sorted(moving)


def preview(
    path: str | Path,
    out_png: str | Path,
    episode: int = 0,
    *,
    frames: int = 4,
    channels: Sequence[str] | None = None,
) -> Path:
    """Write a preview of ``episode`` of the twin file ``path`` to ``out_png``; returns the PNG path.

    ``channels`` picks kinematic channels by name (default: up to six that move the most).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure


    out = Path(out_png).expanduser()
    if out.suffix.lower() != ".png":
        raise SpecError(f"preview output {str(out)!r} must end in .png")
    if frames < 1:
        raise SpecError(f"frames must be positive, got {frames}")
    ep = read_episode(path, episode)
    mods, targets, attrs = ep["modalities"], ep["targets"], ep["attrs"]
    cam = mods.get("camera")
    if cam is None:
        raise DataError(f"{str(path)!r}: no camera modality to preview")
    steps = cam.shape[0]
    ts = np.arange(steps)
    shown = sorted({int(round(v)) for v in np.linspace(0, steps - 1, min(frames, steps))})

    fig = Figure(figsize=(12, max(6.0, 1.9 * len(shown))), dpi=100)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(len(shown), 2, width_ratios=(1, 4), wspace=0.08, hspace=0.35,
                            left=0.01, right=0.98, top=0.95, bottom=0.07)
    for k, t in enumerate(shown):
        ax = fig.add_subplot(grid[k, 0])
        ax.imshow(np.transpose(cam[t], (1, 2, 0)), interpolation="nearest")
        ax.set_title(f"camera t={t}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])

    right = grid[:, 1].subgridspec(3, 1, hspace=0.3)
    ax_k = fig.add_subplot(right[0])
    kin = mods.get("kinematics")
    if kin is not None:
        names, units = ep["channels"].get("kinematics", []), ep["units"].get("kinematics", [])
        names = names or [f"k{i}" for i in range(kin.shape[1])]
        for i in _pick_channels(kin, names, units, channels):
            unit = f" [{units[i]}]" if i < len(units) and units[i] else ""
            ax_k.plot(ts, kin[:, i], linewidth=1.0, label=f"{names[i]}{unit}")
        ax_k.legend(fontsize=6, loc="upper right", ncol=2)
    ax_k.set_title(f"{attrs.get('scene', '?')} episode {episode}: kinematics", fontsize=9)

    ax_s = fig.add_subplot(right[1], sharex=ax_k)
    if "seam_distance" in targets:
        ax_s.plot(ts, targets["seam_distance"], color="C0", linewidth=1.2, label="seam distance [m]")
    tol = find_tolerance(attrs.get("sim_attrs", {}))
    if tol is not None:
        ax_s.axhline(tol, color="C3", linestyle="--", linewidth=1.0, label=f"tolerance {tol:g} m")
    if "quality" in targets:
        bad = np.asarray(targets["quality"]) == 1
        if bad.any():
            ax_s.fill_between(ts, 0, 1, where=bad, transform=ax_s.get_xaxis_transform(), color="C3",
                              alpha=0.15, step="mid", label="quality = 1")
    ax_s.legend(fontsize=6, loc="upper right")
    ax_s.set_title("seam distance", fontsize=9)

    ax_p = fig.add_subplot(right[2], sharex=ax_k)
    if "phase" in targets:
        ax_p.step(ts, targets["phase"], where="mid", color="C2")
        names = ep["phase_names"]
        if names:
            ax_p.set_yticks(range(len(names)))
            ax_p.set_yticklabels(names, fontsize=6)
    ax_p.set_title("phase", fontsize=9)
    ax_p.set_xlabel("t (control steps)", fontsize=8)
    for ax in (ax_k, ax_s, ax_p):
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)

    try:
        save_figure(fig, out)
    except OSError as exc:
        raise DataError(f"cannot write {str(out)!r}: {exc.strerror or exc}") from None
    return out
