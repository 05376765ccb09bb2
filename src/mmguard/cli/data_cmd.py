"""`mmguard data` commands: ``info`` (sizes, modalities, class balance, splits), ``list``, ``download``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from mmguard.cli.common import JSON_OPTION, SEED_OPTION, fail, print_json

app = typer.Typer(no_args_is_help=True, help="Inspect, list and download datasets.")


SHOWN_CHANNELS = 4


def _channels(names: list[str], verbose: bool) -> str:
    """``[a, b, c, d, ... (+12 more)]``: the first few channel names, all of them with ``verbose``."""
    if not names:
        return ""
    shown = names if verbose or len(names) <= SHOWN_CHANNELS else names[:SHOWN_CHANNELS]
    more = f", ... (+{len(names) - len(shown)} more)" if len(shown) < len(names) else ""
    return f"  [{', '.join(shown)}{more}]"


def _format_info(info: dict[str, Any], verbose: bool = False) -> str:
    m = len(info["modalities"])
    lines = [f"{info['source']}: {info['n_samples']:,} samples, {m} modalit{'y' if m == 1 else 'ies'}"]
    width = max(len(m["name"]) for m in info["modalities"])
    for m in info["modalities"]:
        shape = "x".join(str(s) for s in m["shape"])
        channels = _channels(m["channels"], verbose)
        lines.append(f"  {m['name']:<{width}}  {m['kind']} ({shape}){channels}")
    if info["meta"]:
        lines.append(f"meta: {', '.join(info['meta'])}")
    task = info["task"]
    if task in ("binary", "multiclass"):
        fractions = info["class_fractions"]
        balance = "  ".join(f"{k}: {v:,} ({fractions[k]:.1%})" for k, v in info["classes"].items())
        lines.append(f"target: {task}  {balance}")
    elif task == "regression":
        t = info["target"]
        lines.append(f"target: regression  mean {t['mean']:.4g}  std {t['std']:.4g}  "
                     f"range [{t['min']:.4g}, {t['max']:.4g}]")
    else:
        lines.append("target: none (unlabelled)")
    splits = info.get("splits", {})
    if "error" in splits:
        lines.append(f"split: not possible ({splits['error']})")
    elif splits:
        how = "stratified" if splits["stratified"] else "random"
        lines.append(f"split (seed {splits['seed']}, {splits['train_fraction']:.0%} train, "
                     f"rest halved, {how}):")
        for part in ("train", "val", "test"):
            entry = splits[part]
            pos = f"  positives {entry['positives']:,}" if "positives" in entry else ""
            lines.append(f"  {part:<5} {entry['n']:>8,}{pos}")
    if "matches_thesis_table_6_1" in info:
        lines.append(f"matches thesis table 6.1: {'yes' if info['matches_thesis_table_6_1'] else 'no'}")
    return "\n".join(lines)


@app.command("info")
def info_command(
    name: str = typer.Argument(..., help="Dataset name or URI: htru2, toy, wave, circle, csv:PATH, "
                                         "parquet:PATH, npz:PATH, h5:PATH."),
    json_out: bool = JSON_OPTION,
    data_dir: Path | None = typer.Option(
        None, "--data-dir",
        help="Folder with one sub-folder per dataset (default: $MMGUARD_DATA_DIR, then the cache).",
    ),
    mapping: Path | None = typer.Option(
        None, "--mapping", "--modalities", help="YAML mapping of table columns to modalities (csv:/parquet: data)."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="List every channel name of every modality."),
    seed: int = SEED_OPTION,
) -> None:
    """Sizes, modalities, class balance and the thesis split (67 % train, rest halved)."""
    from mmguard.data.registry import describe_dataset

    info = describe_dataset(name, data_dir=data_dir, mapping=mapping, seed=seed)
    if json_out:
        print_json(info)
    else:
        typer.echo(_format_info(info, verbose))


@app.command("list")
def list_command(
    json_out: bool = JSON_OPTION,
    seed: int = typer.Option(0, "--seed", help="Accepted for uniformity; listing is deterministic."),
) -> None:
    """The dataset names and URI forms `mmguard data info` accepts."""
    from mmguard.data.registry import DESCRIPTIONS, KNOWN

    if json_out:
        print_json({k: DESCRIPTIONS[k] for k in KNOWN})
        return
    width = max(len(k) for k in KNOWN)
    for k in KNOWN:
        typer.echo(f"{k:<{width}}  {DESCRIPTIONS[k]}")


@app.command("download")
def download_command(
    name: str = typer.Argument(..., help="Dataset to download (htru2)."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Cache root (default: ~/.cache/mmguard "
                                                                    "or $XDG_CACHE_HOME/mmguard)."),
    force: bool = typer.Option(False, "--force", help="Download again even if a verified copy exists."),
    seed: int = typer.Option(0, "--seed", help="Accepted for uniformity; downloading is deterministic."),
) -> None:
    """Download a public dataset into the cache and verify it (HTRU2 from UCI)."""
    if name != "htru2":
        fail(f"no download available for {name!r}; downloadable: ['htru2']")
    from mmguard.data.htru2 import download_htru2

    typer.echo(str(download_htru2(cache_dir, force=force)))
