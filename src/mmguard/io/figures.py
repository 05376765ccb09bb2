"""The one PNG writer: atomic (temporary file + rename), parent folders created, figure closed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmguard.io.atomic import atomic_write


def save_figure(fig: Any, path: str | Path, *, dpi: float | None = None, **kwargs: Any) -> Path:
    """Save a matplotlib figure as PNG at ``path`` atomically and close it; returns the path.

    ``dpi=None`` keeps matplotlib's default; ``kwargs`` go to ``savefig`` (e.g. ``bbox_inches``).
    """
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", **({"dpi": dpi} if dpi else {}), **kwargs))
    finally:
        plt.close(fig)
    return path
