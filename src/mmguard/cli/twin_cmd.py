"""`mmguard twin` commands: ``generate`` a digital-twin dataset, ``info`` on one, ``preview`` an episode."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from mmguard.cli.common import ADDRESS_OPTION, ENGINE_OPTION, JSON_OPTION, print_json

MAX_LISTED = 4  # channels named per modality in the text output

app = typer.Typer(no_args_is_help=True, help="Generate, inspect and preview robot digital-twin datasets.")


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


@app.command("generate")
def generate_command(
    out: Path = typer.Option(..., "--out", help="Output HDF5 file (.h5)."),
    scene: str = typer.Option("arm", "--scene", help="Workcell: arm (one robot moves and presses) "
                                                     "or weld (two robots weld a seam)."),
    episodes: int = typer.Option(20, "--episodes", help="Number of episodes."),
    steps: int = typer.Option(50, "--steps", help="Control steps per episode."),
    seed: int = typer.Option(0, "--seed", help="Seed; episode e gets derive_seed(seed, 'twin', e)."),
    workers: int = typer.Option(1, "--workers", help="Worker processes (same file for any number)."),
    width: int = typer.Option(64, "--width", help="Camera image width in pixels."),
    height: int = typer.Option(64, "--height", help="Camera image height in pixels."),
    depth: bool = typer.Option(False, "--depth/--no-depth", help="Also render a depth image (metres)."),
    force: bool = typer.Option(False, "--force", help="Discard an unfinished generation made with other "
                                                      "arguments (OUT.parts/) instead of refusing."),
    engine: str = ENGINE_OPTION,
    address: str | None = ADDRESS_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Simulate episodes and write them to one HDF5 file; an interrupted run resumes where it stopped."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from mmguard.engine import check_engine, make_engine
    from mmguard.errors import SpecError
    from mmguard.twin.interface import CameraConfig
    from mmguard.twin.storage import generate, parts_dir

    console = Console(stderr=True)
    engine = check_engine(engine, address)
    if engine != "local" and workers != 1:
        raise SpecError("--workers is for --engine local; with --engine ray the cluster's CPUs run the episodes")
    reused: list[int] = []
    start = time.perf_counter()
    try:
        with make_engine(engine, address) as runner, Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                console=console, transient=True, disable=not console.is_terminal) as bar:  # no stray output in logs
            task = bar.add_task(f"twin {scene}: episodes", total=episodes)

            def progress(done: int, total: int) -> None:
                if not reused:
                    reused.append(done)
                bar.update(task, completed=done, total=total)

            path = generate(scene, episodes, steps, out, seed=seed, workers=workers,
                            camera=CameraConfig(width=width, height=height, depth=depth),
                            progress=progress, force=force, engine=runner)
    except KeyboardInterrupt:
        console.print(f"interrupted: finished episodes are kept in {parts_dir(out.expanduser())}/; "
                      "rerun the same command to resume", highlight=False)
        raise
    seconds = time.perf_counter() - start
    size = path.stat().st_size
    summary: dict[str, Any] = {"out": str(path), "scene": scene, "episodes": episodes, "steps": steps,
                               "n_samples": episodes * steps, "seed": seed, "workers": workers, "engine": engine,
                               "reused_episodes": reused[0] if reused else 0, "file_bytes": size,
                               "seconds": round(seconds, 3)}
    if json_out:
        print_json(summary)
        return
    reused_n = summary["reused_episodes"]
    again = f", {reused_n} reused from an interrupted run" if reused_n else ""
    typer.echo(f"wrote {path}: scene {scene}, {episodes} episodes x {steps} steps "
               f"({episodes * steps:,} samples), {_mb(size)} in {seconds:.1f} s{again}")


def _format_info(info: dict[str, Any]) -> str:
    cam = info["camera"]
    lines = [
        f"{info['source']}: scene {info['scene']}, {info['episodes']} episodes x {info['steps']} steps "
        f"({info['n_samples']:,} samples), {_mb(info['file_bytes'])}",
        f"generator {info['generator_version']}, mjcf sha256 {(info['mjcf_sha256'] or '-')[:16]}, "
        f"seed {info['seed']}, camera {cam['width']}x{cam['height']}{' + depth' if cam['depth'] else ''}",
        "modalities:",
    ]
    width = max(len(m["name"]) for m in info["modalities"])
    for m in info["modalities"]:
        shape = "x".join(str(s) for s in m["shape"])
        ratio = f", {m['stored_bytes'] / m['raw_bytes']:.0%} of raw" if m["raw_bytes"] else ""
        lines.append(f"  {m['name']:<{width}}  {m['kind']:<6} {m['dtype']:<7} ({shape})  "
                     f"{_mb(m['stored_bytes'])} stored{ratio}")
        if m.get("channels"):
            named = [f"{c} [{u}]" if u else c for c, u in zip(m["channels"], m["units"], strict=False)]
            extra = len(named) - MAX_LISTED
            more = f", ... +{extra} more (--json lists all)" if extra > 0 else ""
            lines.append(f"  {'':<{width}}  channels: {', '.join(named[:MAX_LISTED])}{more}")
    lines.append("targets:")
    twidth = max(len(k) for k in info["targets"])
    for name, t in info["targets"].items():
        if "counts" in t:
            detail = "  ".join(f"{k}: {v:,} ({t['fractions'][k]:.1%})" for k, v in t["counts"].items())
        elif "mean" in t:
            unit = f" {t['units']}" if t["units"] else ""
            detail = f"mean {t['mean']:.4g}  std {t['std']:.4g}  range [{t['min']:.4g}, {t['max']:.4g}]{unit}"
        else:
            detail = t["dtype"]
        lines.append(f"  {name:<{twidth}}  {detail}")
    lines.append(f"meta: {', '.join(info['meta'])}")
    return "\n".join(lines)


@app.command("info")
def info_command(
    file: Path = typer.Argument(..., help="A twin HDF5 file written by `mmguard twin generate`."),
    json_out: bool = JSON_OPTION,
    seed: int = typer.Option(0, "--seed", help="Accepted for uniformity; reading is deterministic."),
) -> None:
    """Scene, sizes, modalities with channels and units, target balance and the recorded attributes."""
    from mmguard.twin.dataset import twin_info

    info = twin_info(file)
    if json_out:
        print_json(info)
    else:
        typer.echo(_format_info(info))


@app.command("preview")
def preview_command(
    file: Path = typer.Argument(..., help="A twin HDF5 file written by `mmguard twin generate`."),
    out: Path = typer.Option(..., "--out", help="PNG to write."),
    episode: int = typer.Option(0, "--episode", help="Episode to show."),
    frames: int = typer.Option(4, "--frames", help="Camera frames to show."),
    channels: str | None = typer.Option(None, "--channels", help="Comma-separated kinematics channels "
                                                                  "(default: up to six joint angles)."),
    seed: int = typer.Option(0, "--seed", help="Accepted for uniformity; the preview is deterministic."),
) -> None:
    """Camera frames of one episode beside its sensor traces, seam distance (with tolerance) and phase."""
    from mmguard.twin.preview import preview

    chosen = [c.strip() for c in channels.split(",") if c.strip()] if channels else None
    typer.echo(str(preview(file, out, episode, frames=frames, channels=chosen)))
