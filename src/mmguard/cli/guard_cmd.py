"""Guards for everyone's data: ``mmguard guards``, ``fit``, ``score``, ``transform``."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from mmguard.cli import dataopts as opt
from mmguard.cli.common import JSON_OPTION, SEED_OPTION, print_json
from mmguard.errors import DataError, SpecError


def guards_command(json_out: bool = JSON_OPTION) -> None:
    """List every registered guard and what it can do (flag, correct, predict)."""
    from mmguard.guard import available_guards

    guards = {name: cls.describe() for name, cls in available_guards().items()}
    if json_out:
        print_json(guards)
        return
    for name, d in guards.items():
        caps = ",".join(k for k, v in d["capabilities"].items() if v)
        typer.echo(f"{name:<16} {caps:<14} {d['summary']}")


def fit_command(
    guard: str = typer.Option(..., "--guard", help="Registered guard name (see `mmguard guards`)."),
    data: str = opt.DATA,
    out: Path = typer.Option(..., "--out", help="Guard directory to write."),
    modalities: Path | None = opt.MAPPING,
    data_dir: Path | None = opt.DATA_DIR,
    config: Path | None = typer.Option(None, "--config", help="Guard settings, JSON or YAML."),
    quick: bool = typer.Option(False, "--quick", help="CI-sized settings (few epochs)."),
    split_by: str = opt.SPLIT_BY,
    train_groups: str | None = opt.TRAIN_GROUPS,
    val_groups: str | None = opt.VAL_GROUPS,
    test_groups: str | None = opt.TEST_GROUPS,
    device: str = opt.DEVICE,
    precision: str = opt.PRECISION,
    force: bool = typer.Option(False, "--force", help="Replace a guard fitted with other settings in --out."),
    seed: int = SEED_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Fit a guard on the training split of any dataset and save it (the test split is not used).

    Rerunning the same command is a no-op once the guard is saved; a directory holding a guard
    fitted with other settings or data is refused unless ``--force``.
    """
    from mmguard.experiments.units import data_fingerprint, fingerprint
    from mmguard.guard import GUARD_FILE, create_guard
    from mmguard.io.checkpoint import read_json

    if out.exists() and not out.is_dir():
        raise SpecError(f"--out {str(out)!r} is a file; give a directory")
    opt.check_device(device, precision)
    g = create_guard(guard, opt.read_config_file(config), device=device, quick=quick, precision=precision)
    batch = opt.load_data(data, modalities, data_dir, seed)
    splits = opt.split_data(batch, split_by, train_groups, val_groups, test_groups, seed)
    identity = fingerprint({"guard": guard, "config": g.config.model_dump(mode="json"), "seed": seed,
                            "split": opt.split_description(split_by, train_groups, val_groups, test_groups, seed),
                            "data": data_fingerprint(splits)})
    if (out / GUARD_FILE).is_file() and not force:
        old = read_json(out / GUARD_FILE)
        if isinstance(old, dict) and (old.get("fit") or {}).get("fingerprint") == identity:
            summary = {"guard": guard, "out": str(out), "sizes": splits.sizes(), "skipped": True}
            if json_out:
                print_json(summary)
            else:
                typer.echo(f"{out} already holds this {guard} guard (same settings and data); nothing to do")
            return
        raise SpecError(f"{str(out)!r} holds a guard fitted with other settings or data; "
                        "use another --out or --force to replace it")
    t0 = time.perf_counter()
    report = g.fit(splits, seed=seed)
    g.fit_report = {**report, "fingerprint": identity, "data": data, "seed": seed}
    g.save(out)
    summary = {"guard": guard, "out": str(out), "sizes": splits.sizes(), "fit_s": time.perf_counter() - t0,
               "report": report}
    if json_out:
        print_json(summary)
        return
    typer.echo(f"fitted {guard} on {splits.sizes()['train']} samples (validation {splits.sizes()['val']}) "
               f"in {summary['fit_s']:.1f} s; saved to {out}")


def score_command(
    guard_dir: Path = typer.Argument(..., help="Guard directory written by `mmguard fit`."),
    data: str = opt.DATA,
    modalities: Path | None = opt.MAPPING,
    data_dir: Path | None = opt.DATA_DIR,
    out: Path | None = typer.Option(None, "--out", help="Write per-sample scores and flags (.csv or .npz)."),
    device: str = opt.DEVICE,
    precision: str = opt.PRECISION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Score every sample of a dataset: per-modality scores (1.0 = threshold) and flags."""
    import numpy as np

    from mmguard.guard import load_guard

    if out is not None and out.suffix.lower() not in (".csv", ".npz"):
        raise SpecError(f"--out must end in .csv or .npz, got {str(out)!r}")
    opt.check_device(device, precision)
    g = load_guard(guard_dir, device=device, precision=precision)
    batch = opt.load_data(data, modalities, data_dir)
    scores = g.score(batch)
    flags = scores > 1.0
    summary = {"guard": g.name, "n": len(batch),
               "flagged_fraction": float(flags.any(1).float().mean()),
               "flagged_fraction_per_modality": dict(zip(g.names, flags.float().mean(0).tolist(), strict=True))}
    if out is not None:
        s = scores.numpy()
        if out.suffix.lower() == ".npz":
            from mmguard.io.atomic import atomic_write

            def write(tmp: str) -> None:
                with open(tmp, "wb") as fh:
                    np.savez(fh, scores=s, flags=flags.numpy(), modalities=np.array(g.names))

            atomic_write(out, write)
        else:
            from mmguard.io.checkpoint import atomic_write_text

            head = ",".join([f"score_{n}" for n in g.names] + [f"flag_{n}" for n in g.names])
            rows = [",".join([f"{v:.6g}" for v in s[i]] + [str(int(f)) for f in flags[i].tolist()])
                    for i in range(len(s))]
            atomic_write_text(out, "\n".join([head, *rows]) + "\n")
        summary["out"] = str(out)
    if json_out:
        print_json(summary)
        return
    typer.echo(f"{summary['n']} samples, {summary['flagged_fraction']:.1%} flagged in some modality")
    for n, v in summary["flagged_fraction_per_modality"].items():
        typer.echo(f"  {n:<16} {v:.1%}")
    if out is not None:
        typer.echo(f"scores written to {out}")


def transform_command(
    guard_dir: Path = typer.Argument(..., help="Guard directory written by `mmguard fit`."),
    data: str = opt.DATA,
    out: Path = typer.Option(..., "--out", help="Output file (.h5 or .npz), readable as h5:/npz: data."),
    modalities: Path | None = opt.MAPPING,
    data_dir: Path | None = opt.DATA_DIR,
    device: str = opt.DEVICE,
    precision: str = opt.PRECISION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Correct a dataset with a guard and write it with the same modalities, shapes and units."""
    from mmguard.data.arrays import save_arrays
    from mmguard.guard import load_guard

    if out.suffix.lower() not in (".h5", ".hdf5", ".npz"):
        raise SpecError(f"--out must end in .h5, .hdf5 or .npz, got {str(out)!r}")
    if out.is_dir():
        raise SpecError(f"--out {str(out)!r} is a directory")
    opt.check_device(device, precision)
    g = load_guard(guard_dir, device=device, precision=precision)
    batch = opt.load_data(data, modalities, data_dir)
    fixed = g.transform(batch)
    fixed.check_finite("transformed data")
    if fixed.names != batch.names:
        raise DataError("the guard changed the modalities")  # the contract forbids it
    save_arrays(fixed, out)
    summary = {"guard": g.name, "n": len(batch), "out": str(out)}
    if json_out:
        print_json(summary)
        return
    typer.echo(f"transformed {len(batch)} samples with {g.name}; written to {out}")
