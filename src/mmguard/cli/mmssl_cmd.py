"""`mmguard mmssl run`: the MMSSL protocol (issue #5) on a digital-twin file into a run directory."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from pydantic import ValidationError
from rich.console import Console

from mmguard.cli import dataopts as opt
from mmguard.cli.common import ADDRESS_OPTION, ENGINE_OPTION, JSON_OPTION, print_json
from mmguard.errors import SpecError

app = typer.Typer(
    no_args_is_help=True,
    help="MMSSL: detect and correct failing modalities (layer-specific Lipschitz modulation).",
)
console = Console(stderr=True, log_path=False)


def build_config(quick: bool, **fields):
    from mmguard.experiments.mmssl.config import MmsslRunConfig

    fields = {k: v for k, v in fields.items() if v is not None}
    try:
        return MmsslRunConfig.quick_config(**fields) if quick else MmsslRunConfig(**fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise SpecError(f"invalid MMSSL option {loc}: {err['msg']} (got {err.get('input')!r})") from None


def _stage_overrides(quick: bool, ae_epochs: int | None, stage2_epochs: int | None, optimizer: str | None):
    """Stage configs with the command-line overrides applied (None: the mode's defaults)."""
    from mmguard.experiments.mmssl.config import MmsslRunConfig
    from mmguard.mmssl.config import AutoencoderConfig, ComputeConfig

    if ae_epochs is None and stage2_epochs is None and optimizer is None:
        return None, None
    base = MmsslRunConfig.quick_config(data="-") if quick else MmsslRunConfig(data="-")
    try:
        ae = AutoencoderConfig(
            **{**base.autoencoder.model_dump(), **({"epochs": ae_epochs} if ae_epochs else {})}
        )
        upd = {
            **({"epochs": stage2_epochs} if stage2_epochs else {}),
            **({"optimizer": optimizer} if optimizer else {}),
        }
        if optimizer == "adam":
            upd["lr"] = 1e-3
        comp = ComputeConfig(**{**base.compute.model_dump(), **upd})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise SpecError(
            f"invalid MMSSL option {err['loc'][0]}: {err['msg']} (got {err.get('input')!r})"
        ) from None
    return ae, comp


@app.command("run")
def run_command(
    data: Path = typer.Option(..., "--data", help="Digital-twin HDF5 file (`mmguard twin generate`)."),
    out: Path = typer.Option(..., "--out", help="Run directory (config, metrics, report, plots, weights)."),
    quick: bool = typer.Option(
        False, "--quick", help="CI-sized run: 2 seeds, <= 24 episodes, short training."
    ),
    seeds: int | None = typer.Option(None, "--seeds", min=1, help="Number of seeds (default 5; quick 2)."),
    seed: int = typer.Option(0, "--seed", help="First seed; seeds are seed, seed+1, ..."),
    modalities: str | None = typer.Option(
        None, "--modalities", help="Comma-separated (default camera,kinematics)."
    ),
    episodes: int | None = typer.Option(None, "--episodes", min=3, help="Use only the first N episodes."),
    analysis: bool = typer.Option(True, "--analysis/--no-analysis", help="Lipschitz/entropy/t-SNE analyses."),
    sweep: bool = typer.Option(True, "--sweep/--no-sweep", help="Severity sweeps."),
    ae_epochs: int | None = typer.Option(
        None, "--ae-epochs", min=1, help="Stage-1 / DAE epochs (default 30)."
    ),
    stage2_epochs: int | None = typer.Option(
        None, "--stage2-epochs", min=1, help="Stage-2 epochs (default 40)."
    ),
    optimizer: str | None = typer.Option(
        None, "--optimizer", help="Stage-2 optimizer: sgd (default) or adam."
    ),
    threads: int | None = typer.Option(None, "--threads", min=1, help="torch threads (with --engine ray: per "
                                       "seed task, default 1)."),
    device: str = opt.DEVICE,
    precision: str = opt.PRECISION,
    engine: str = ENGINE_OPTION,
    address: str | None = ADDRESS_OPTION,
    json_out: bool = typer.Option(False, "--json", help="Print the headline metrics as JSON."),
) -> None:
    """Stage 1 (MMAE), DAE baseline, stage 2 (compute block + ablations) over seeds; report on test."""
    from mmguard.engine import check_engine, make_engine
    from mmguard.experiments.mmssl.run import run_mmssl

    opt.check_device(device, precision)
    engine = check_engine(engine, address)
    cpus = os.cpu_count() or 1
    if engine == "ray" and address is None and threads is not None and threads > cpus:
        # a task reserving more CPUs than the local cluster has would wait for ever
        raise SpecError(f"--threads {threads} with --engine ray: each seed task reserves that many CPUs, "
                        f"and the local cluster has {cpus}")
    if not data.is_file():
        raise SpecError(f"--data {str(data)!r}: no such file")
    n = seeds if seeds is not None else (2 if quick else 5)
    ae, comp = _stage_overrides(quick, ae_epochs, stage2_epochs, optimizer)
    cfg = build_config(
        quick,
        autoencoder=ae,
        compute=comp,
        severity_sweep=sweep,
        data=str(data),
        seeds=list(range(seed, seed + n)),
        modalities=[m.strip() for m in modalities.split(",")] if modalities else None,
        max_episodes=episodes,
        analysis=analysis,
        threads=threads,
        device=device.strip().lower(),
        precision=precision.strip().lower(),
    )
    if out.exists() and not out.is_dir():
        raise SpecError(f"--out {str(out)!r} exists and is not a directory")
    # each seed is a job; a Ray task runs it with --threads torch threads (1 by default)
    with make_engine(engine, address, threads=threads or 1) as runner:
        metrics = run_mmssl(cfg, out, log=lambda msg: console.log(f"MMSSL: {msg}"), engine=runner)
    if json_out:
        print_json({k: metrics[k] for k in ("errors", "detection", "ratios", "targets", "seeds", "timing")})
        return
    typer.echo(f"test combined error (mean ± std over {len(metrics['seeds'])} seeds), written to {out}/")
    typer.echo(f"{'model':<28}{'clean':>22}{'faulty':>22}")
    for m, row in metrics["errors"].items():
        typer.echo(
            f"{m:<28}"
            + "".join(
                f"{row[s]['combined'][0]:>14.4f} ± {row[s]['combined'][1]:.3f}" for s in ("clean", "faulty")
            )
        )
    d = metrics["detection"]
    typer.echo(
        f"detection: AUROC {d['auroc'][0]:.4f} ± {d['auroc'][1]:.4f}, F1 {d['f1'][0]:.4f}, "
        f"false alarms {d['false_alarm_rate'][0]:.4f}"
    )


@app.command("table1")
def table1_command(
    run: Path = typer.Argument(..., help="A finished `mmguard bench` run of the table-1 guards."),
    out: Path | None = typer.Option(None, "--out", help="Write the Markdown report here (and FILE.json beside)."),
    json_out: bool = JSON_OPTION,
) -> None:
    """The MMSSL paper's table 1 beside a bench run: layout, paired ratios, orderings, families, compute."""
    from mmguard.experiments.mmssl.table1 import load_units, render_table1, table1_summary
    from mmguard.io.checkpoint import atomic_write_text, write_json

    summary = table1_summary(*load_units(run))
    text = render_table1(summary)
    if out is not None:
        write_json(out.with_suffix(".json"), summary)
        atomic_write_text(out, text)
    if json_out:
        print_json(summary)
    else:
        typer.echo(text, nl=False)
