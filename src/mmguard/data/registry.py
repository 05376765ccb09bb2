"""One entry point for every dataset: ``load_dataset(name_or_uri)`` and ``dataset_info(batch)``.

Names and URIs:

* ``htru2`` (or ``htru2:PATH``) — the pulsar benchmark of thesis section 6.1;
* ``toy`` — :func:`mmguard.data.synthetic.make_shared_latent` with its defaults (n=2000);
* ``wave``, ``circle`` — the unlabelled manifolds of thesis section 4.3 (n=1000), one
  modality ``x`` of two features;
* ``csv:PATH``, ``parquet:PATH`` — a table plus a YAML mapping (``mapping=``);
* ``npz:PATH``, ``h5:PATH`` (also ``hdf5:``) — arrays, one per modality;
* ``twin:PATH`` — a robot digital-twin file (``mmguard twin generate``), optionally with
  ``?target=quality|seam_distance|phase&episodes=0-9&modalities=camera,kinematics``; an
  ``.h5`` file that turns out to be a twin file is read the same way.

Synthetic names take parameters as a query string, e.g. ``toy?n=500&modality_dims=4,6,3,5
&redundancy=0.5`` or ``circle?n=200&noise=0.05``. A bare path with a known suffix (``.csv``,
``.parquet``, ``.npz``, ``.h5`` ...) is read with the matching loader.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from mmguard.data import arrays, htru2, synthetic, tabular
from mmguard.data.model import MultimodalBatch
from mmguard.data.splits import stratified_three_way
from mmguard.data.targets import task_of
from mmguard.errors import DataError, SpecError

KNOWN = ("htru2", "toy", "wave", "circle", "csv:PATH", "parquet:PATH", "npz:PATH", "h5:PATH", "twin:PATH")
DESCRIPTIONS = {
    "htru2": "HTRU2 pulsar candidates: modalities ip (4) and dm (4), binary target (thesis 6.1)",
    "toy": "shared-latent synthetic: 3 vector modalities (4, 6, 3), binary target",
    "wave": "wave manifold x = (t - pi, sin t), unlabelled (thesis 4.3)",
    "circle": "circle manifold x = (3 sin t, 3 cos t), unlabelled (thesis 4.3)",
    "csv:PATH": "a CSV table; needs a YAML mapping of columns to modalities",
    "parquet:PATH": "a Parquet table; needs a YAML mapping of columns to modalities",
    "npz:PATH": "an NPZ archive: one array per modality, optional target and meta/*",
    "h5:PATH": "an HDF5 file: one dataset per modality, optional target and meta group",
    "twin:PATH": "a robot digital-twin HDF5 file (mmguard twin generate): camera + kinematics, (episode, t)",
}
SYNTHETIC_N = {"toy": 2000, "wave": 1000, "circle": 1000}

_TOY_PARAMS: dict[str, Callable[[str], Any]] = {
    "n": int, "latent_dim": int, "num_classes": int, "map_seed": int, "episode_length": int,
    "noise": float,
    "modality_dims": lambda v: tuple(int(x) for x in v.split(",")),
    "redundancy": lambda v: float(v) if "," not in v else tuple(float(x) for x in v.split(",")),
}
_MANIFOLD_PARAMS: dict[str, Callable[[str], Any]] = {"n": int, "noise": float}
_SCHEMES = {"csv": "csv", "parquet": "parquet", "npz": "npz", "h5": "h5", "hdf5": "h5", "htru2": "htru2",
            "twin": "twin"}
_SUFFIXES = {
    **{s: "csv" for s in tabular.CSV_SUFFIXES},
    **{s: "parquet" for s in tabular.PARQUET_SUFFIXES},
    **{s: "npz" for s in arrays.NPZ_SUFFIXES},
    **{s: "h5" for s in arrays.H5_SUFFIXES},
}


def known_datasets() -> tuple[str, ...]:
    """The names and URI forms :func:`load_dataset` accepts."""
    return KNOWN


def _parse_params(name: str, query: str, allowed: Mapping[str, Callable[[str], Any]]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in filter(None, query.split("&")):
        key, sep, value = item.partition("=")
        if not sep or key not in allowed:
            raise SpecError(f"{name}: unknown parameter {item!r}; allowed: {sorted(allowed)}")
        try:
            params[key] = allowed[key](value)
        except ValueError:
            raise SpecError(f"{name}: bad value for {key}: {value!r}") from None
    return params


def parse_uri(name_or_uri: str) -> tuple[str, str]:
    """(kind, rest): kind is a dataset name or a format; rest is a path or a query string."""
    text = str(name_or_uri).strip()
    base, _, query = text.partition("?")
    if base in ("htru2", *SYNTHETIC_N):
        return base, query
    scheme, sep, rest = text.partition(":")
    if sep and scheme.lower() in _SCHEMES and rest:
        return _SCHEMES[scheme.lower()], rest
    suffix = Path(text).suffix.lower()
    if suffix in _SUFFIXES:
        return _SUFFIXES[suffix], text
    raise SpecError(f"unknown dataset {text!r}; known: {', '.join(KNOWN)}")


def load_dataset(name_or_uri: str, *, data_dir: str | Path | None = None,
                 mapping: str | Path | Mapping | None = None, seed: int = 0) -> MultimodalBatch:
    """Load any dataset mmguard knows (see the module docstring) as a :class:`MultimodalBatch`.

    ``data_dir`` is where named datasets live (as ``$MMGUARD_DATA_DIR``); ``mapping`` is the
    YAML mapping for tables; ``seed`` seeds the synthetic generators.
    """
    kind, rest = parse_uri(name_or_uri)
    if mapping is not None and kind not in ("csv", "parquet"):
        raise SpecError(f"a mapping only applies to csv:/parquet: tables, not {name_or_uri!r}")
    if kind == "htru2":
        return htru2.load_htru2(rest or None, data_dir=data_dir)
    if kind == "toy":
        params = {"n": SYNTHETIC_N["toy"], **_parse_params(kind, rest, _TOY_PARAMS)}
        return synthetic.make_shared_latent(seed=seed, **params)
    if kind in synthetic.MANIFOLDS:
        params = {"n": SYNTHETIC_N[kind], **_parse_params(kind, rest, _MANIFOLD_PARAMS)}
        points = synthetic.make_manifold(kind, params.pop("n"), seed, **params)
        return MultimodalBatch.from_arrays({"x": points})
    if kind in ("csv", "parquet"):
        if mapping is None:
            raise SpecError(f"{kind}:{rest} needs a YAML mapping of columns to modalities "
                            "(--modalities MAP.yaml)")
        return tabular.load_tabular(rest, mapping, fmt=kind)
    if kind == "twin" or (kind == "h5" and _is_twin_file(rest)):
        from mmguard.twin.dataset import load_twin_uri

        return load_twin_uri(rest)
    return arrays.load_arrays(rest, fmt=kind)


def _is_twin_file(path: str) -> bool:
    from mmguard.twin.dataset import is_twin_file

    return is_twin_file(path)


def is_htru2(batch: MultimodalBatch) -> bool:
    """True for a batch shaped like HTRU2: vector modalities ip, dm of 4 features, HTRU2 channels."""
    return (batch.names == ("ip", "dm")
            and batch.spec("ip").channels == htru2.CHANNELS[:4]
            and batch.spec("dm").channels == htru2.CHANNELS[4:])


def _class_counts(target: torch.Tensor) -> dict[str, int]:
    values, counts = torch.unique(target, return_counts=True)
    return {str(int(v)): int(c) for v, c in zip(values, counts, strict=True)}


def dataset_info(batch: MultimodalBatch, *, name: str | None = None, seed: int = 0) -> dict[str, Any]:
    """A JSON-ready summary: size, modalities, class balance and the seed-``seed`` thesis split.

    The split is :func:`mmguard.data.splits.stratified_three_way` (67 % train, rest halved,
    stratified for class targets). For HTRU2 (by ``name`` or recognised from its specs) the
    dict also carries the reference numbers of thesis table 6.1 and whether they match.
    """
    if name is None and is_htru2(batch):
        name = "htru2"
    task = task_of(batch.target)
    info: dict[str, Any] = {
        "name": name,
        "n_samples": len(batch),
        "modalities": [
            {"name": s.name, "kind": s.kind.value, "shape": list(s.shape), "size": s.size,
             "channels": list(s.channels)}
            for s in batch.specs
        ],
        "meta": sorted(batch.meta),
        "task": task,
    }
    if task in ("binary", "multiclass"):
        counts = _class_counts(batch.target)
        info["classes"] = counts
        info["class_fractions"] = {k: v / len(batch) for k, v in counts.items()}
    elif task == "regression":
        t = batch.target.double()
        info["target"] = {"shape": list(t.shape[1:]), "mean": float(t.mean()), "std": float(t.std()),
                          "min": float(t.min()), "max": float(t.max())}
    if batch.fault_mask is not None:
        mask = batch.fault_mask.float()
        info["faulty_fraction"] = {n: float(mask[:, i].mean()) for i, n in enumerate(batch.names)}
    classified = task in ("binary", "multiclass")
    try:
        splits = stratified_three_way(batch, seed=seed, stratify=classified)
    except (DataError, ValueError) as exc:
        info["splits"] = {"error": str(exc).splitlines()[0]}
    else:
        parts: dict[str, Any] = {"seed": seed, "train_fraction": 0.67, "stratified": classified}
        for part in ("train", "val", "test"):
            b = getattr(splits, part)
            entry: dict[str, Any] = {"n": len(b)}
            if task == "binary":
                entry["positives"] = int((b.target == 1).sum())
            if task in ("binary", "multiclass"):
                entry["classes"] = _class_counts(b.target)
            parts[part] = entry
        info["splits"] = parts
        if name == "htru2":
            info["thesis_table_6_1"] = htru2.TABLE_6_1
            info["matches_thesis_table_6_1"] = htru2.split_summary(splits) == htru2.TABLE_6_1
    return info


def describe_dataset(name_or_uri: str, *, data_dir: str | Path | None = None,
                     mapping: str | Path | Mapping | None = None, seed: int = 0) -> dict[str, Any]:
    """:func:`load_dataset` followed by :func:`dataset_info` (what ``mmguard data info`` prints)."""
    batch = load_dataset(name_or_uri, data_dir=data_dir, mapping=mapping, seed=seed)
    kind, _ = parse_uri(name_or_uri)
    name = kind if kind in ("htru2", *SYNTHETIC_N) else str(name_or_uri)
    return {**dataset_info(batch, name=name, seed=seed), "source": str(name_or_uri)}
