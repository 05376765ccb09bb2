"""`mmguard faults` — list the fault types, validate a fault spec, preview faults as a PNG.

Every command takes ``--seed`` and ``--json``; user errors are one-line ``mmguard: error:``
messages with exit code 2 (raised as :class:`~mmguard.errors.MMGuardError`).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import typer

from mmguard.cli.common import JSON_OPTION, SEED_OPTION, print_json
from mmguard.errors import DataError, SpecError

app = typer.Typer(no_args_is_help=True, help="List fault types, validate fault specs and preview faults.")


@app.command("list")
def list_command(
    kind: str = typer.Option(None, "--kind",
                             help="Only faults supporting this kind (vector, timeseries, image)."),
    seed: int = SEED_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """List every fault type with its parameters, supported kinds and severity parameter.

    (--seed is accepted for uniformity; listing is deterministic.)
    """
    from mmguard.faults import fault_catalog

    catalog = fault_catalog(kind)
    if as_json:
        print_json(catalog)
        return
    for f in catalog:
        sev = f"severity={f['severity']}" if f["severity"] else "no severity"
        typer.echo(f"{f['name']:<22} [{', '.join(f['kinds'])}] {sev}")
        typer.echo(f"    {f['summary']}")
        for p in f["params"]:
            typer.echo(f"    - {p['name']} ({p['type']}, default {p['default']!r}): {p['description']}")


@app.command("validate")
def validate_command(
    spec: Path = typer.Argument(..., help="Fault spec file (.json, .yaml or .yml)."),
    n: int = typer.Option(0, "--n", help="Also show how many of N samples each entry hits."),
    seed: int = SEED_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Validate a fault spec and print it with every default filled in."""
    from mmguard.faults import load_spec, plan_selection

    if n < 0:
        raise SpecError(f"--n must be >= 0, got {n}")
    fs = load_spec(spec)
    out: dict[str, Any] = {"spec": fs.to_dict()}
    if n:
        sel = plan_selection(fs, n, seed)
        out["selection"] = {"n": n, "seed": seed, "counts": [int(s.numel()) for s in sel]}
    if as_json:
        print_json(out)
        return
    typer.echo(fs.to_yaml().rstrip())
    if n:
        for i, (e, s) in enumerate(zip(fs.faults, sel, strict=True)):
            typer.echo(f"# faults[{i}] {e.type} on {e.modality}: {int(s.numel())} of {n} samples "
                       f"(seed {seed})")


def _dataset_batch(name: str):
    """Load dataset ``name`` through the data package's loader (``load_dataset``), if installed."""
    from mmguard.data.model import MultimodalBatch

    loader = None
    for module in ("mmguard.data", "mmguard.data.datasets"):
        try:
            loader = getattr(importlib.import_module(module), "load_dataset", None)
        except ImportError:
            loader = None
        if loader is not None:
            break
    if loader is None:
        raise SpecError(f"--dataset {name!r}: no dataset loader is available; use --modality-kind instead")
    data = loader(name)
    if isinstance(data, MultimodalBatch):
        return data
    for split in ("test", "train"):
        if isinstance(getattr(data, split, None), MultimodalBatch):
            return getattr(data, split)
    raise DataError(f"--dataset {name!r}: the loader returned {type(data).__name__}, not a batch")


@app.command("preview")
def preview_command(
    out: Path = typer.Option(..., "--out", help="PNG file to write."),
    modality_kind: str = typer.Option(
        None, "--modality-kind",
        help="Synthetic data of this kind: vector, timeseries or image (default image)."),
    dataset: str = typer.Option(None, "--dataset", help="Preview a modality of this dataset instead."),
    modality: str = typer.Option(None, "--modality",
                                 help="Modality of --dataset to show (default: the first)."),
    faults: str = typer.Option(None, "--faults",
                               help="Comma-separated fault types (default: all for the kind)."),
    sample: int = typer.Option(None, "--sample",
                               help="Sample shown for time series/images (default: middle)."),
    seed: int = SEED_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Write a PNG grid showing one modality clean and under each fault (no download needed)."""
    from mmguard.faults import preview_faults
    from mmguard.faults.preview import preview_kind

    if dataset is not None and modality_kind is not None:
        raise SpecError(f"give --dataset or --modality-kind, not both "
                        f"(got {dataset!r} and {modality_kind!r})")
    if out.suffix.lower() != ".png":
        raise SpecError(f"--out must be a .png file, got {str(out)!r}")
    types = None
    if faults is not None:
        types = [t.strip() for t in faults.split(",") if t.strip()]
        if not types:
            raise SpecError(f"--faults lists no fault type: {faults!r}")
    if dataset is not None:
        batch, name = _dataset_batch(dataset), modality
    else:
        if modality is not None:
            raise SpecError(f"--modality {modality!r} needs --dataset (synthetic data: use --modality-kind)")
        batch, name = None, preview_kind(modality_kind or "image")
    summary = preview_faults(batch, name, types, out, seed, sample=sample)
    if as_json:
        print_json(summary)
    else:
        typer.echo(f"wrote {summary['out']}: modality {summary['modality']!r} ({summary['kind']}) under "
                   f"{len(summary['faults'])} faults, seed {seed}")
