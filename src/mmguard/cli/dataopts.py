"""Data options shared by ``fit``, ``score``, ``transform`` and ``bench``: load any dataset, split it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from mmguard.errors import SpecError

DATA = typer.Option(..., "--data", help="Dataset: htru2, toy, csv:PATH, parquet:PATH, npz:PATH, h5:PATH, twin:PATH.")
MAPPING = typer.Option(None, "--modalities", help="YAML mapping of table columns to modalities (csv:/parquet:).")
DATA_DIR = typer.Option(None, "--data-dir", help="Folder with one sub-folder per named dataset "
                                                 "(default: $MMGUARD_DATA_DIR).")
SPLIT_BY = typer.Option("auto", "--split-by", help="auto (episodes if present, else random stratified), "
                                                   "random, or a meta column to split by (e.g. episode, batch).")
TRAIN_GROUPS = typer.Option(None, "--train-groups", help="Explicit split: comma-separated values of the "
                                                         "--split-by column for training, e.g. 1,2.")
VAL_GROUPS = typer.Option(None, "--val-groups", help="Explicit validation groups (default: 15 %% of the "
                                                     "training groups' samples).")
TEST_GROUPS = typer.Option(None, "--test-groups", help="Explicit test groups, e.g. 3,4,5,6.")
ID_TEST = typer.Option(0.0, "--id-test", help="With explicit groups: this fraction of the training groups' "
                                            "samples joins the test split as its in-distribution part.")
DEVICE = typer.Option("cpu", "--device", help="auto, cpu or cuda.")
PRECISION = typer.Option("fp32", "--precision", help="fp32 (default) or bf16: bfloat16 autocast of the forward "
                                                     "passes in training and inference (docs/devices.md).")


def check_device(device: str, precision: str = "fp32") -> None:
    """Fail before any work (one line, exit 2) on an unknown or unavailable device or precision."""
    from mmguard.devices import resolve_device, resolve_precision

    resolve_device(device)
    resolve_precision(precision, device)


def parse_groups(text: str | None, option: str) -> list[float] | None:
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SpecError(f"{option} must be comma-separated numbers, got {text!r}") from None
    if not values:
        raise SpecError(f"{option} is empty")
    return values


def with_twin_tasks(data: str, tasks: list[str]) -> str:
    """A twin URI that also carries the named targets as downstream tasks (other data: unchanged)."""
    from mmguard.data.registry import parse_uri

    wanted = [t for t in tasks if t != "target"]
    if not wanted:
        return data
    kind, rest = parse_uri(data)
    is_twin = kind == "twin"
    if kind == "h5":
        from mmguard.twin.dataset import is_twin_file

        is_twin = is_twin_file(rest.partition("?")[0])
    if not is_twin or "tasks=" in rest:
        return data
    sep = "&" if "?" in rest else "?"
    return f"twin:{rest}{sep}tasks={','.join(wanted)}"


def load_data(data: str, mapping: Path | None, data_dir: Path | None, seed: int = 0):
    """The dataset as one :class:`MultimodalBatch` (one-line errors from the data layer)."""
    from mmguard.data import load_dataset

    return load_dataset(data, data_dir=data_dir, mapping=mapping, seed=seed)


STREAM = typer.Option(False, "--stream", help="Read the data from disk in chunks instead of loading them whole "
                      "(twin: and h5: files larger than memory; docs/distributed.md).")
BUFFER_MB = typer.Option(256, "--buffer-mb", min=1, help="With --stream: the training shuffle buffer, in MiB of "
                         "float32 rows.")


def open_source(data: str, data_dir: Path | None = None):
    """``twin:PATH[?...]`` or ``h5:PATH`` (or a ``.h5`` path) as a streamed
    :class:`~mmguard.data.stream.RowSource` (``--stream``); other sources are one-line errors."""
    from mmguard.data.arrays import array_source
    from mmguard.twin.dataset import is_twin_file
    from mmguard.twin.stream import twin_source_uri

    scheme, sep, rest = data.partition(":")
    if not sep or len(scheme) == 1:  # a bare path (C:\... has a one-letter "scheme")
        scheme, rest = "", data
    if scheme == "twin":
        return twin_source_uri(rest)
    if scheme in ("h5", "hdf5") or (scheme == "" and Path(rest).suffix.lower() in (".h5", ".hdf5")):
        path = Path(rest).expanduser()
        if data_dir is not None and not path.is_absolute() and not path.exists():
            path = Path(data_dir) / path
        return twin_source_uri(str(path)) if is_twin_file(path) else array_source(path)
    raise SpecError(f"--stream reads twin:PATH and h5:PATH files; {data!r} is loaded whole (drop --stream)")


def split_source(source, split_by: str, train_groups: str | None, val_groups: str | None,
                 test_groups: str | None, seed: int):
    """Train / validation / test row sources of a streamed dataset (split by whole groups)."""
    from mmguard.data.stream import stream_splits

    return stream_splits(source, split_by=split_by, train_groups=parse_groups(train_groups, "--train-groups"),
                         val_groups=parse_groups(val_groups, "--val-groups"),
                         test_groups=parse_groups(test_groups, "--test-groups"), seed=seed)


def source_fingerprint(source, parts) -> str:
    """Identity of a streamed dataset without reading it: the file (resolved path, size, modification
    time), the modalities and the rows of each split."""
    import hashlib
    import json

    p = Path(source.where).resolve()
    st = p.stat()
    h = hashlib.sha256(json.dumps({"file": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                   "modalities": list(source.names)}).encode())
    for part in parts:
        h.update(part.rows.tobytes())
    return h.hexdigest()[:16]


def split_data(batch, split_by: str, train_groups: str | None, val_groups: str | None,
               test_groups: str | None, seed: int, id_test: float = 0.0):
    from mmguard.data.splits import make_splits

    return make_splits(batch, split_by=split_by, train_groups=parse_groups(train_groups, "--train-groups"),
                       val_groups=parse_groups(val_groups, "--val-groups"),
                       test_groups=parse_groups(test_groups, "--test-groups"), id_test_fraction=id_test, seed=seed)


def split_description(split_by: str, train_groups: str | None, val_groups: str | None,
                      test_groups: str | None, seed: int, id_test: float = 0.0) -> dict[str, Any]:
    out: dict[str, Any] = {"split_by": split_by, "train_groups": train_groups, "val_groups": val_groups,
                           "test_groups": test_groups, "split_seed": seed}
    if id_test:
        out["id_test"] = id_test
    return out


def read_config_file(path: Path | None) -> dict[str, Any] | None:
    """A guard config from a JSON or YAML file (validated later by the guard's config class)."""
    if path is None:
        return None
    import json

    import yaml

    from mmguard.data._io import require_file

    text = require_file(path, "config file").read_text(encoding="utf-8", errors="replace")
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise SpecError(f"malformed config file {str(path)!r}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise SpecError(f"config file {str(path)!r} must hold a mapping of settings")
    return data
