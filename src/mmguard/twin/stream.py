"""Twin files as streamed sources (datasets larger than memory, :mod:`mmguard.data.stream`).

:func:`twin_source` opens a twin file as an :class:`~mmguard.data.stream.H5Source` with exactly
the modalities, specs, decoding (uint8 frames / 255), target, tasks and meta of
:func:`mmguard.twin.dataset.load_twin` — a streamed read of any rows equals the same rows of the
loaded batch bit for bit (tested) — but reads nothing but the per-row meta until asked.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from mmguard.data.stream import H5Column, H5Source
from mmguard.twin.dataset import (
    _episode_rows,
    modality_spec,
    open_twin,
    parse_twin_uri,
    select_modalities,
)
from mmguard.twin.storage import IMAGE_MODALITIES, META_GROUP, TARGETS_GROUP


def twin_source(
    path: str | Path,
    target: str | None = "quality",
    modalities: Sequence[str] | None = None,
    episodes: Iterable[int] | None = None,
    tasks: Sequence[str] = (),
) -> H5Source:
    """A twin file (arguments as :func:`~mmguard.twin.dataset.load_twin`) as a streamed source."""
    where = str(Path(path).expanduser())
    with open_twin(path) as f:
        names = select_modalities(f, where, target, modalities, tasks)
        columns = [H5Column(n, modality_spec(n, f[n]),
                            255.0 if n in IMAGE_MODALITIES and f[n].dtype == np.uint8 else None) for n in names]
        slices = _episode_rows(episodes, int(f.attrs["episodes"]), int(f.attrs["steps"]), where)
    rows = np.concatenate([np.arange(s.start, s.stop) for s in slices])
    return H5Source(where, columns, target=None if target is None else f"{TARGETS_GROUP}/{target}",
                    meta={k: f"{META_GROUP}/{k}" for k in ("episode", "t")}, rows=rows,
                    extra_targets={t: f"{TARGETS_GROUP}/{t}" for t in tasks})


def twin_source_uri(rest: str) -> H5Source:
    """``twin:PATH?...`` (the part after ``twin:``, as :func:`~mmguard.twin.dataset.load_twin_uri`)."""
    path, kwargs = parse_twin_uri(rest)
    return twin_source(path, **kwargs)
