"""`mmguard eval`: re-evaluate a run's models under any fault spec (shared by every method)."""

from __future__ import annotations

from pathlib import Path

import typer

from mmguard.cli import dataopts as opt
from mmguard.cli.common import print_json


def eval_command(
    run: Path = typer.Option(
        ..., "--run", help="Run directory written by `mmguard emma run` or `mmguard mmssl run`."
    ),
    faults: Path = typer.Option(..., "--faults", help="Fault spec, JSON or YAML (see docs/faults.md)."),
    out: Path | None = typer.Option(None, "--out", help="Write the results as JSON to this file."),
    seed: int = typer.Option(0, "--seed", help="Seed of the fault injection."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Override the run's data folder."),
    json_out: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    device: str = opt.DEVICE,
) -> None:
    """Re-evaluate the trained models of a run under a fault spec, per model and condition."""
    from mmguard.eval.evaluate import evaluate_run
    from mmguard.experiments.runs import load_run
    from mmguard.io.checkpoint import write_json

    loaded = load_run(run, str(data_dir) if data_dir else None, device=device)
    result = evaluate_run(loaded, faults, seed=seed)
    result["run"] = str(run)
    if out is not None:
        write_json(out, result)
    if json_out:
        print_json(result)
        return
    conds = list(result["counts"])
    if "errors" in result:  # reconstruction runs (MMSSL): combined error per model and condition
        typer.echo(f"combined error under {faults} (mean ± std over the run's seeds)")
        typer.echo(f"{'model':<28}" + "".join(f"{c[:30]:>34}" for c in conds))
        typer.echo(f"{'(samples)':<28}" + "".join(f"{result['counts'][c]:>34}" for c in conds))
        for name, row in result["errors"].items():
            typer.echo(
                f"{name:<28}"
                + "".join(
                    f"{row[c]['combined'][0]:>26.4f} ± {row[c]['combined'][1]:.3f}"
                    if c in row
                    else f"{'':>34}"
                    for c in conds
                )
            )
        rate = result["detection"]["detection_rate"]
        typer.echo(
            f"{'detected (gate)':<28}"
            + "".join(f"{rate[c][0]:>26.4f} ± {rate[c][1]:.3f}" if c in rate else f"{'':>34}" for c in conds)
        )
        if out is not None:
            typer.echo(f"written to {out}")
        return
    typer.echo(f"F1 under {faults} (mean ± std over the run's seeds)")
    typer.echo(f"{'model':<16}" + "".join(f"{c[:30]:>34}" for c in conds))
    typer.echo(f"{'(samples)':<16}" + "".join(f"{result['counts'][c]:>34}" for c in conds))
    for name, row in result["f1"].items():
        typer.echo(
            f"{name:<16}"
            + "".join(f"{row[c][0]:>26.4f} ± {row[c][1]:.3f}" if c in row else f"{'':>34}" for c in conds)
        )
    if out is not None:
        typer.echo(f"written to {out}")
