"""Preview faults as a PNG grid (matplotlib, Agg canvas — no display, no pyplot state).

Without a batch, :func:`synthetic_batch` provides data generated here (nothing is downloaded):
one episode of ``n`` time-ordered samples with three modalities named after their kinds —

* ``vector``: 4 smooth sensor readings (sinusoids of the time index, small noise);
* ``timeseries``: (64, 2) windows of a sine and a chirp;
* ``image``: (3, 32, 32) frames — a colour gradient background, a fixed square and a disc
  that moves with time (so frozen frames are visible).

Each panel applies one fault to *all* samples at rate 1 with the given seed and plots one
modality: vector modalities as lines over the samples (time order; clean dashed, corrupted
solid), time series as the channels of one sample over T, images as tiles of one sample.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mmguard.data.model import ModalityKind, MultimodalBatch
from mmguard.errors import DataError, SpecError
from mmguard.faults.apply import apply_faults
from mmguard.faults.builders import single_fault_spec
from mmguard.faults.registry import as_kind, get_fault, list_faults
from mmguard.io.figures import save_figure

MAX_VECTOR_SAMPLES = 96
MAX_LINES = 3


def synthetic_batch(n: int = 32, seed: int = 0) -> MultimodalBatch:
    """A small deterministic batch with ``vector``, ``timeseries`` and ``image`` modalities and
    meta ``episode`` (all 0) and ``t`` (0..n-1)."""
    if n < 1:
        raise DataError(f"synthetic_batch needs n >= 1, got {n}")
    gen = torch.Generator().manual_seed(int(seed))
    t = torch.arange(n, dtype=torch.float32)
    phase = torch.tensor([0.0, 1.0, 2.0, 3.0])
    vector = torch.sin(2 * math.pi * t[:, None] / max(n, 2) + phase) + 0.05 * torch.randn(n, 4, generator=gen)
    T = 64
    s = torch.linspace(0, 1, T)
    sine = torch.sin(2 * math.pi * 3 * s)[None, :] + 0.1 * t[:, None] / n
    chirp = torch.sin(2 * math.pi * (1.0 + 3.0 * s) * s)[None, :].expand(n, T)
    series = torch.stack([sine, chirp], dim=-1) + 0.03 * torch.randn(n, T, 2, generator=gen)
    H = W = 32
    yy, xx = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    background = torch.stack([0.2 + 0.6 * xx, 0.2 + 0.6 * yy, 0.5 - 0.3 * xx * yy])  # (3, H, W)
    img = background.expand(n, 3, H, W).clone()
    square = (yy > 0.6) & (yy < 0.85) & (xx > 0.1) & (xx < 0.35)
    img = torch.where(square, torch.tensor([0.9, 0.9, 0.1])[:, None, None], img)
    cx = 0.2 + 0.6 * t / max(n - 1, 1)  # the disc moves left to right over the episode
    disc = ((xx[None] - cx[:, None, None]) ** 2 + (yy[None] - 0.3) ** 2) < 0.12**2  # (n, H, W)
    img = torch.where(disc[:, None], torch.tensor([0.95, 0.2, 0.2])[:, None, None], img)
    return MultimodalBatch.from_arrays(
        {"vector": vector, "timeseries": series, "image": img},
        meta={"episode": torch.zeros(n, dtype=torch.long), "t": torch.arange(n)},
    )


def _image_tile(x: torch.Tensor, lo: float, hi: float) -> np.ndarray:
    img = ((x.double() - lo) / (hi - lo if hi > lo else 1.0)).clamp(0, 1)
    if img.shape[0] == 3:
        return img.permute(1, 2, 0).numpy()
    return img[0].numpy()


def preview_faults(
    batch: MultimodalBatch | None,
    modality: str | None,
    types: list[str] | None,
    out_path: str | Path,
    seed: int = 0,
    *,
    sample: int | None = None,
) -> dict[str, Any]:
    """Write a PNG grid showing ``modality`` clean and under each fault in ``types``.

    ``batch=None`` uses :func:`synthetic_batch`, whose modalities are named ``vector``,
    ``timeseries`` and ``image``. ``modality=None`` takes the first modality; ``types=None``
    every fault supporting its kind. ``sample`` picks the sample shown for time series and
    images (default: the middle one). Returns a JSON-able summary.
    """
    if batch is None:
        batch = synthetic_batch(seed=0)
    name = modality if modality is not None else batch.names[0]
    kind = batch.spec(name).kind
    if types is None:
        types = [f.name for f in list_faults(kind)]
    faults = [get_fault(t) for t in types]
    for f in faults:
        if not f.supports(kind):
            raise SpecError(f"fault {f.name!r} does not support the {kind.value} modality {name!r} "
                            f"(supports {sorted(k.value for k in f.kinds)})")
    if kind is ModalityKind.VECTOR and len(batch) > MAX_VECTOR_SAMPLES:
        batch = batch.select(slice(0, MAX_VECTOR_SAMPLES))
    n = len(batch)
    if n == 0:
        raise DataError("cannot preview an empty batch")
    shown = n // 2 if sample is None else sample
    if not 0 <= shown < n:
        raise DataError(f"sample {shown} out of range for a batch of {n}")
    clean = batch.modalities[name].detach().cpu()
    panels = [("clean", clean)]
    for f in faults:
        out = apply_faults(batch, single_fault_spec(name, f.name, rate=1.0), seed=seed)
        panels.append((f.name, out.modalities[name].detach().cpu()))

    ncols = min(4, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(3.2 * ncols, 2.6 * nrows), dpi=100)
    FigureCanvasAgg(fig)
    order = torch.argsort(batch.meta["t"].cpu(), stable=True) if "t" in batch.meta else torch.arange(n)
    lo, hi = float(clean[shown].min()), float(clean[shown].max())
    for k, (title, values) in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        ax.set_title(title, fontsize=9)
        if kind is ModalityKind.IMAGE:
            ax.imshow(_image_tile(values[shown], lo, hi), cmap="gray" if values.shape[1] != 3 else None,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        if kind is ModalityKind.VECTOR:
            xs, cl, cor = np.arange(n), clean[order], values[order]
            ax.set_xlabel("sample (time order)", fontsize=7)
        else:
            xs, cl, cor = np.arange(values.shape[1]), clean[shown], values[shown]
            ax.set_xlabel("t", fontsize=7)
        for d in range(min(MAX_LINES, cl.shape[1])):
            color = f"C{d}"
            ax.plot(xs, cl[:, d].numpy(), linestyle="--", color=color, linewidth=0.8, alpha=0.6)
            if title != "clean":
                ax.plot(xs, cor[:, d].numpy(), color=color, linewidth=1.0)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"{name} ({kind.value}) under faults, seed {seed}", fontsize=10)
    fig.tight_layout()
    out_path = save_figure(fig, out_path)
    return {"out": str(out_path), "modality": name, "kind": kind.value, "faults": [f.name for f in faults],
            "seed": seed, "sample": shown, "samples": n}


def preview_kind(kind: ModalityKind | str) -> str:
    """Name of the synthetic modality of ``kind`` (validates the kind)."""
    return as_kind(kind).value
