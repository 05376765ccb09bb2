"""`mmguard emma run`: EMMA's Experiment II protocol (and chapter-4 experiments) into a run directory."""

from __future__ import annotations

from pathlib import Path

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from mmguard.cli import dataopts as opt
from mmguard.cli.common import print_json
from mmguard.errors import SpecError

app = typer.Typer(no_args_is_help=True, help="EMMA: energy-based multi-modal attention (thesis ch. 4-6, 8).")
console = Console(stderr=True, log_path=False)


def _config(quick: bool, **fields):
    from mmguard.experiments.emma.config import EmmaRunConfig, GridConfig

    grid = fields.pop("grid")
    try:
        fields = {k: v for k, v in fields.items() if v is not None}
        if grid is not None:
            fields["grid"] = GridConfig.named(grid)
        return EmmaRunConfig.quick_config(**fields) if quick else EmmaRunConfig(**fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise SpecError(f"invalid EMMA option {loc}: {err['msg']} (got {err.get('input')!r})") from None
    except ValueError as exc:
        raise SpecError(str(exc)) from None


def _parse_range(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise SpecError(f"--sigma-range must be LO,HI (two numbers), got {text!r}") from None
    return lo, hi


@app.command("run")
def run_command(
    out: Path = typer.Option(
        ..., "--out", help="Run directory to write (config, metrics, report, plots, weights)."
    ),
    dataset: str = typer.Option(
        "htru2", "--dataset", help="htru2, toy, csv:PATH, parquet:PATH, npz:PATH, h5:PATH."
    ),
    modalities: Path | None = typer.Option(
        None, "--modalities", help="YAML mapping columns to modalities (csv:/parquet: datasets)."
    ),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="Folder with one sub-folder per dataset (default: $MMGUARD_DATA_DIR)."
    ),
    quick: bool = typer.Option(False, "--quick", help="CI-sized run (2 seeds, small grid, few epochs)."),
    seeds: int | None = typer.Option(None, "--seeds", min=1, help="Number of seeds (default 5; quick 2)."),
    seed: int = typer.Option(0, "--seed", help="First seed; seeds are seed, seed+1, ..."),
    grid: str | None = typer.Option(None, "--grid", help="full (125 configurations), small, thesis-top."),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Maximum epochs per stage (default 35)."),
    anneal: str | None = typer.Option(None, "--anneal", help="off, on, or compare (chapter 8 schedule)."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="torch threads."),
    device: str = opt.DEVICE,
    train_noise: str | None = typer.Option(
        None, "--train-noise", help="fixed (one corruption draw, thesis) or resampled (new draw per epoch)."
    ),
    sigma_range: str | None = typer.Option(
        None, "--sigma-range", help="LO,HI: per-sample training sigma ~ U[LO, HI] instead of 0.5."
    ),
    chapter4: bool | None = typer.Option(
        None,
        "--chapter4/--no-chapter4",
        help="Also run the chapter-4 / section 6.2 energy experiments (default: on for full htru2 runs).",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the headline metrics as JSON."),
) -> None:
    """Train base/without/with models over seeds and the grid; select on validation; report on test."""
    from mmguard.experiments.emma.run import run_emma

    opt.check_device(device)
    n = seeds if seeds is not None else (2 if quick else 5)
    cfg = _config(
        quick,
        dataset=dataset,
        mapping=str(modalities) if modalities else None,
        data_dir=str(data_dir) if data_dir else None,
        seeds=list(range(seed, seed + n)),
        grid=grid,
        epochs=epochs,
        anneal=anneal,
        threads=threads,
        device=device.strip().lower(),
        train_noise=train_noise,
        sigma_range=_parse_range(sigma_range),
    )
    if out.exists() and not out.is_dir():
        raise SpecError(f"--out {str(out)!r} exists and is not a directory")
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def epoch_progress(stage: str, epoch: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=epoch)

        metrics = run_emma(cfg, out, log=lambda msg: console.log(f"EMMA: {msg}"), chapter4=chapter4,
                           epoch_progress=epoch_progress)
    if json_out:
        print_json({k: metrics[k] for k in ("f1", "selected", "seeds", "timing")})
    else:
        f1 = metrics["f1"]
        conds = metrics["conditions"]
        typer.echo(f"test F1 (mean ± std over {len(metrics['seeds'])} seeds), written to {out}/")
        typer.echo(f"{'model':<16}" + "".join(f"{c:>20}" for c in conds))
        for key, row in f1.items():
            typer.echo(f"{key:<16}" + "".join(f"{row[c][0]:>12.4f} ± {row[c][1]:.3f}" for c in conds))
