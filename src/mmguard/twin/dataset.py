"""Read digital-twin HDF5 files (written by :mod:`mmguard.twin.storage`) into the standard data model.

* :func:`load_twin` — the file (or some of its episodes / modalities) as a
  :class:`~mmguard.data.model.MultimodalBatch`: ``camera`` as an image modality (float32 in
  [0, 1], C×H×W), ``depth`` (metres) when present, each kinematic vector with its channel
  names and units, one chosen target, and ``meta['episode']`` / ``meta['t']``;
* :func:`read_episode` — one episode's raw arrays (uint8 frames, every target) for plotting;
* :func:`twin_info` — a JSON-ready summary (scene, sizes, modalities, target balance, attributes)
  read without loading the images;
* :func:`is_twin_file`, :func:`load_twin_uri` — used by :func:`mmguard.data.load_dataset`
  for ``twin:PATH`` URIs and for ``.h5`` files that turn out to be twin files.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmguard.data.model import ModalitySpec, MultimodalBatch
from mmguard.errors import DataError, SpecError
from mmguard.twin.storage import EPISODES_GROUP, FORMAT, IMAGE_MODALITIES, META_GROUP, TARGETS_GROUP

TARGETS = ("quality", "seam_distance", "phase")
"""Targets every twin file has (a weld file also has ``seam_distance_r0`` / ``seam_distance_r1``)."""


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _strs(value: Any) -> list[str]:
    return [_str(v) for v in np.atleast_1d(value)] if value is not None and np.size(value) else []


def is_twin_file(path: str | Path) -> bool:
    """True when ``path`` is a readable HDF5 file carrying ``format = 'mmguard-twin'`` (never raises)."""
    try:
        import h5py

        with h5py.File(Path(path).expanduser(), "r") as f:
            return _str(f.attrs.get("format", "")) == FORMAT
    except Exception:  # noqa: BLE001 - any unreadable file is simply "not a twin file"
        return False


def open_twin(path: str | Path):
    """Open a twin file read-only (an ``h5py.File``), or raise a one-line :class:`DataError`."""
    import h5py

    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"twin dataset not found: {str(p)!r}")
    try:
        f = h5py.File(p, "r")
    except OSError as exc:
        raise DataError(f"cannot read HDF5 {str(p)!r}: {str(exc).splitlines()[0]}") from None
    try:
        fmt = _str(f.attrs.get("format", ""))
        if fmt != FORMAT:
            raise DataError(f"{str(p)!r} is not a twin dataset (no format={FORMAT!r} attribute); "
                            "plain array files load with h5:PATH")
        for key in ("episodes", "steps", "scene"):
            if key not in f.attrs:
                raise DataError(f"{str(p)!r}: twin file lacks the attribute {key!r}")
        if TARGETS_GROUP not in f or META_GROUP not in f:
            raise DataError(f"{str(p)!r}: twin file lacks the {TARGETS_GROUP!r} or {META_GROUP!r} group")
    except BaseException:
        f.close()
        raise
    return f


def _modality_names(f) -> list[str]:
    import h5py

    return [k for k, v in f.items() if isinstance(v, h5py.Dataset)]


def default_modalities(available: Sequence[str]) -> list[str]:
    """The modalities a twin file loads by default: all, except the per-robot copies
    ``kinematics_r<k>`` when the combined ``kinematics`` is there too (a weld file holds the same
    sensors twice; loading both would count each kinematic error twice and hide a fault of one copy
    in the other). Ask for the per-robot copies by name (``modalities=camera,kinematics_r0,...``)."""
    if "kinematics" not in available:
        return list(available)
    return [n for n in available if not (n.startswith("kinematics_r") and n[len("kinematics_r"):].isdigit())]


def _episode_rows(episodes: Iterable[int] | None, total: int, steps: int, where: str) -> list[slice]:
    """Row slices covering ``episodes`` (sorted, unique), adjacent episodes merged into one slice."""
    if episodes is None:
        return [slice(0, total * steps)]
    try:
        chosen = sorted({int(e) for e in episodes})
    except (TypeError, ValueError):
        raise SpecError(f"{where}: episodes must be integers, got {episodes!r}") from None
    if not chosen:
        raise SpecError(f"{where}: the episode selection is empty")
    bad = [e for e in chosen if not 0 <= e < total]
    if bad:
        raise DataError(f"{where}: episode {bad[0]} out of range; the file has episodes 0..{total - 1}")
    runs: list[list[int]] = []
    for e in chosen:
        if runs and runs[-1][1] == e:
            runs[-1][1] = e + 1
        else:
            runs.append([e, e + 1])
    return [slice(a * steps, b * steps) for a, b in runs]


def _read_rows(ds, rows: Sequence[slice]) -> np.ndarray:
    parts = [ds[r] for r in rows]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def select_modalities(f, where: str, target: str | None, modalities: Sequence[str] | None,
                      tasks: Sequence[str] = ()) -> list[str]:
    """The modality names to read from an open twin file (default: :func:`default_modalities`),
    checked, and the target and task names checked (one-line :class:`SpecError`)."""
    available = _modality_names(f)
    names = default_modalities(available) if modalities is None else list(modalities)
    if not names:
        raise SpecError(f"{where}: no modalities selected")
    for name in names:
        if name not in available:
            raise SpecError(f"{where}: unknown modality {name!r}; the file has {available}")
    if len(set(names)) != len(names):
        raise SpecError(f"{where}: modality listed twice in {names}")
    for name in ([target] if target is not None else []) + list(tasks):
        if name not in f[TARGETS_GROUP]:
            raise SpecError(f"{where}: unknown target {name!r}; the file has {list(f[TARGETS_GROUP])}")
    return names


def modality_spec(name: str, ds) -> ModalitySpec:
    """The :class:`ModalitySpec` of a twin dataset: frames are images, everything else a named vector."""
    if name in IMAGE_MODALITIES:
        return ModalitySpec(name, "image", tuple(ds.shape[1:]))
    return ModalitySpec(name, "vector", tuple(ds.shape[1:]), channels=tuple(_strs(ds.attrs.get("channels"))),
                        units=tuple(_strs(ds.attrs.get("units"))))


def load_twin(
    path: str | Path,
    target: str | None = "quality",
    modalities: Sequence[str] | None = None,
    episodes: Iterable[int] | None = None,
    tasks: Sequence[str] = (),
) -> MultimodalBatch:
    """A twin file as a :class:`MultimodalBatch` (one sample per (episode, t), in that order).

    ``target`` is ``quality`` (binary, int64), ``seam_distance`` (float32, metres), ``phase``
    (int64 index into the file's ``phase_names``) or None. ``modalities`` keeps only those
    (default: :func:`default_modalities`, in file order — a weld file's per-robot copies only by
    name); ``episodes`` keeps only those episodes, reading just their rows.
    ``tasks`` names further targets carried as ``meta["task:<name>"]`` (downstream tasks of
    ``mmguard bench --downstream``).
    """
    with open_twin(path) as f:
        where = str(Path(path).expanduser())
        names = select_modalities(f, where, target, modalities, tasks)
        rows = _episode_rows(episodes, int(f.attrs["episodes"]), int(f.attrs["steps"]), where)

        tensors: dict[str, torch.Tensor] = {}
        specs = []
        for name in names:
            ds = f[name]
            x = _read_rows(ds, rows)
            specs.append(modality_spec(name, ds))
            if name in IMAGE_MODALITIES:
                t = torch.from_numpy(x)
                t = t.float().div_(255.0) if x.dtype == np.uint8 else t.float()
            else:
                t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
            tensors[name] = t
        y = None
        if target is not None:
            raw = _read_rows(f[TARGETS_GROUP][target], rows)
            y = torch.from_numpy(raw.astype(np.float32) if raw.dtype.kind == "f" else raw.astype(np.int64))
        meta = {k: torch.from_numpy(_read_rows(f[META_GROUP][k], rows).astype(np.int64))
                for k in ("episode", "t")}
        for name in tasks:
            raw = _read_rows(f[TARGETS_GROUP][name], rows)
            meta[f"task:{name}"] = torch.from_numpy(raw.astype(np.float32) if raw.dtype.kind == "f"
                                                    else raw.astype(np.int64))
    return MultimodalBatch(modalities=tensors, specs=tuple(specs), target=y, meta=meta)


def read_episode(path: str | Path, episode: int = 0) -> dict[str, Any]:
    """One episode's raw arrays and descriptions.

    Returns ``modalities`` (name -> array as stored: camera uint8 (T, 3, H, W)), ``targets``
    (name -> (T,) array), ``channels`` / ``units`` (per vector modality), ``phase_names`` and
    ``attrs`` (the file attributes, JSON-ready, plus ``sim_attrs``: the simulator's constants)
    and ``episode_attrs`` (what the simulator recorded for this episode: its seed, the random
    workpiece pose, payload, deviation events, ...).
    """
    with open_twin(path) as f:
        where = str(Path(path).expanduser())
        rows = _episode_rows([episode], int(f.attrs["episodes"]), int(f.attrs["steps"]), where)[0]
        mods = {name: f[name][rows] for name in _modality_names(f)}
        targets = {name: ds[rows] for name, ds in f[TARGETS_GROUP].items()}
        channels = {n: _strs(f[n].attrs.get("channels")) for n in mods if n not in IMAGE_MODALITIES}
        units = {n: _strs(f[n].attrs.get("units")) for n in mods if n not in IMAGE_MODALITIES}
        attrs = _file_attrs(f)
        episode_attrs: dict[str, Any] = {}
        if EPISODES_GROUP in f and "attrs_json" in f[EPISODES_GROUP]:
            episode_attrs = json.loads(_str(f[EPISODES_GROUP]["attrs_json"][int(episode)]))
    return {"episode": int(episode), "modalities": mods, "targets": targets, "channels": channels,
            "units": units, "phase_names": attrs.get("phase_names", []), "attrs": attrs,
            "episode_attrs": episode_attrs}


def _attr_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return [_attr_value(v) for v in value.tolist()] if value.dtype.kind in "OSU" else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _file_attrs(f) -> dict[str, Any]:
    attrs = {k: _attr_value(v) for k, v in f.attrs.items()}
    for key in ("channels_json", "units_json", "sim_attrs_json"):
        if key in attrs:
            try:
                attrs[key[: -len("_json")]] = json.loads(attrs.pop(key))
            except (TypeError, ValueError):
                pass
    attrs["phase_names"] = _strs(f.attrs.get("phase_names"))
    return attrs


def _target_summary(ds, phase_names: list[str]) -> dict[str, Any]:
    y = ds[()]
    entry: dict[str, Any] = {"dtype": str(y.dtype), "units": _str(ds.attrs.get("units", ""))}
    if y.size == 0:
        return entry
    if y.dtype.kind == "f":
        entry.update(mean=float(y.mean()), std=float(y.std()), min=float(y.min()), max=float(y.max()))
        return entry
    values, counts = np.unique(y, return_counts=True)
    labels = [phase_names[v] if 0 <= v < len(phase_names) else str(v) for v in values] if phase_names \
        else [str(v) for v in values]
    entry["counts"] = {lab: int(c) for lab, c in zip(labels, counts, strict=True)}
    entry["fractions"] = {lab: float(c) / y.size for lab, c in zip(labels, counts, strict=True)}
    return entry


def twin_info(path: str | Path) -> dict[str, Any]:
    """Scene, episodes, steps, file size, modalities (shapes, dtypes, channels, units), targets, attrs."""
    p = Path(path).expanduser()
    with open_twin(p) as f:
        attrs = _file_attrs(f)
        modalities = []
        for name in _modality_names(f):
            ds = f[name]
            kind = _str(ds.attrs.get("kind", "image" if name in IMAGE_MODALITIES else "vector"))
            entry: dict[str, Any] = {
                "name": name, "kind": kind,
                "dtype": str(ds.dtype), "shape": list(ds.shape[1:]),
                "stored_bytes": int(ds.id.get_storage_size()), "raw_bytes": int(ds.size * ds.dtype.itemsize),
                "chunks": list(ds.chunks) if ds.chunks else None, "compression": ds.compression,
            }
            if name not in IMAGE_MODALITIES:
                entry["channels"] = _strs(ds.attrs.get("channels"))
                entry["units"] = _strs(ds.attrs.get("units"))
            modalities.append(entry)
        targets = {name: _target_summary(ds, attrs["phase_names"] if name == "phase" else [])
                   for name, ds in f[TARGETS_GROUP].items()}
    episodes, steps = int(attrs["episodes"]), int(attrs["steps"])
    return {
        "source": str(p), "scene": attrs.get("scene"), "episodes": episodes, "steps": steps,
        "n_samples": episodes * steps, "file_bytes": p.stat().st_size, "seed": attrs.get("seed"),
        "generator_version": attrs.get("generator_version"), "mjcf_sha256": attrs.get("mjcf_sha256"),
        "camera": {"width": attrs.get("camera_width"), "height": attrs.get("camera_height"),
                   "depth": bool(attrs.get("camera_depth", False))},
        "modalities": modalities, "targets": targets, "meta": ["episode", "t"], "attrs": attrs,
    }


def _parse_episodes(text: str) -> list[int]:
    """``"0-9,12"`` -> [0, ..., 9, 12]."""
    chosen: list[int] = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        a, sep, b = item.partition("-")
        lo, hi = int(a), int(b) if sep else int(a)
        chosen.extend(range(lo, hi + 1))
    return chosen


def parse_twin_uri(rest: str) -> tuple[str, dict[str, Any]]:
    """``PATH[?target=...&modalities=a,b&episodes=0-9&tasks=quality,phase]`` (after ``twin:``) as
    (path, keyword arguments of :func:`load_twin`)."""
    path, _, query = rest.partition("?")
    kwargs: dict[str, Any] = {}
    for item in filter(None, query.split("&")):
        key, sep, value = item.partition("=")
        if not sep or key not in ("target", "modalities", "episodes", "tasks"):
            raise SpecError(f"twin:{rest}: unknown parameter {item!r}; allowed: episodes, modalities, target, tasks")
        if key == "tasks":
            kwargs["tasks"] = [m for m in value.split(",") if m]
        elif key == "target":
            kwargs["target"] = None if value in ("", "none") else value
        elif key == "modalities":
            kwargs["modalities"] = [m for m in value.split(",") if m]
        else:
            try:
                kwargs["episodes"] = _parse_episodes(value)
            except ValueError:
                raise SpecError(f"twin:{rest}: bad episodes {value!r}; use e.g. 0-9,12") from None
    return path, kwargs


def load_twin_uri(rest: str) -> MultimodalBatch:
    """``PATH[?target=...&modalities=a,b&episodes=0-9&tasks=quality,phase]`` (after ``twin:``) as a batch."""
    path, kwargs = parse_twin_uri(rest)
    return load_twin(path, **kwargs)
