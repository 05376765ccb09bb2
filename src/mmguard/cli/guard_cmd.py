"""Guards for everyone's data: ``mmguard guards``, ``fit``, ``score``, ``transform``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from mmguard.cli import dataopts as opt
from mmguard.cli.common import JSON_OPTION, SEED_OPTION, print_json
from mmguard.errors import DataError, MMGuardError, SpecError

if TYPE_CHECKING:
    from mmguard.data.splits import Splits
    from mmguard.guard import Guard


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


NPROC_OPTION = typer.Option(1, "--nproc", help="Data-parallel training in N local processes (torch.distributed, "
                            "gloo, CPU; each rank trains on 1/N of every minibatch, same result as N=1 within "
                            "float rounding; docs/distributed.md). Under torchrun leave it at 1.")


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
    nproc: int = NPROC_OPTION,
    stream: bool = opt.STREAM,
    buffer_mb: int = opt.BUFFER_MB,
    seed: int = SEED_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Fit a guard on the training split of any dataset and save it (the test split is not used).

    Rerunning the same command is a no-op once the guard is saved; a directory holding a guard
    fitted with other settings or data is refused unless ``--force``. ``--nproc N`` trains data-parallel
    in N local processes; started by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) every process
    joins that process group instead. Only rank 0 writes ``--out`` and prints. ``--stream`` reads a
    twin or HDF5 file in chunks (data larger than memory; guards with ``streams``), in one process.
    """
    from mmguard.experiments.units import data_fingerprint, fingerprint
    from mmguard.guard import create_guard
    from mmguard.train import distributed

    if out.exists() and not out.is_dir():
        raise SpecError(f"--out {str(out)!r} is a file; give a directory")
    opt.check_device(device, precision)
    world_env = distributed.env_world_size()
    _check_nproc(nproc, world_env, device)
    settings = opt.read_config_file(config)
    g = create_guard(guard, settings, device=device, quick=quick, precision=precision)
    if stream:
        if nproc != 1 or world_env > 1:
            raise SpecError("--stream trains in one process: drop --nproc / torchrun")
        _fit_streamed(g, data, data_dir, out, (split_by, train_groups, val_groups, test_groups), buffer_mb, seed,
                      force, json_out)
        return
    with distributed.init_from_env() as (rank, world):
        batch = opt.load_data(data, modalities, data_dir, seed)
        splits = opt.split_data(batch, split_by, train_groups, val_groups, test_groups, seed)
        identity = fingerprint({"guard": guard, "config": g.config.model_dump(mode="json"), "seed": seed,
                                "split": opt.split_description(split_by, train_groups, val_groups, test_groups,
                                                               seed),
                                "data": data_fingerprint(splits)})
        # rank 0 looks at --out and every rank follows its decision (no rank waits alone in a collective)
        state = _out_state(out, identity, force) if rank == 0 else None
        state = distributed.broadcast_object(state) if world > 1 else state
        if state is not None and state != "skip":
            raise SpecError(state)
        if state == "skip":
            if rank == 0:
                _echo_skip(guard, out, splits, json_out)
            return
        t0 = time.perf_counter()
        job = FitJob(guard, settings, device, quick, precision, seed, data, identity, str(out))
        report = job(splits, g) if nproc == 1 else distributed.launch(job, nproc, (splits,))
        if rank != 0:
            return
    summary = {"guard": guard, "out": str(out), "sizes": splits.sizes(), "fit_s": time.perf_counter() - t0,
               "report": report}
    processes = max(nproc, world)
    if processes > 1:
        summary["processes"] = processes
    if json_out:
        print_json(summary)
        return
    parallel = f" with {processes} processes" if processes > 1 else ""
    typer.echo(f"fitted {guard} on {splits.sizes()['train']} samples (validation {splits.sizes()['val']}) "
               f"in {summary['fit_s']:.1f} s{parallel}; saved to {out}")


def _fit_streamed(g: Guard, data: str, data_dir: Path | None, out: Path, split: tuple[Any, ...], buffer_mb: int,
                  seed: int, force: bool, json_out: bool) -> None:
    """``mmguard fit --stream``: split by groups from the meta column alone, fit with
    :meth:`Guard.fit_stream`, save; the same skip / refuse rules for ``--out`` as a loaded fit."""
    from mmguard.experiments.units import fingerprint

    g.require_streaming()  # before touching the data
    source = opt.open_source(data, data_dir)
    parts = opt.split_source(source, *split, seed)
    sizes = {"train": len(parts[0]), "val": len(parts[1]), "test": len(parts[2])}
    identity = fingerprint({"guard": g.name, "config": g.config.model_dump(mode="json"), "seed": seed,
                            "split": opt.split_description(*split, seed), "stream": True,
                            "data": opt.source_fingerprint(source, parts)})
    state = _out_state(out, identity, force)
    if state is not None and state != "skip":
        raise SpecError(state)
    if state == "skip":
        summary = {"guard": g.name, "out": str(out), "sizes": sizes, "skipped": True}
        if json_out:
            print_json(summary)
        else:
            typer.echo(f"{out} already holds this {g.name} guard (same settings and data); nothing to do")
        return
    t0 = time.perf_counter()
    report = g.fit_stream(parts[0], parts[1], seed=seed, buffer_bytes=buffer_mb << 20)
    g.fit_report = {**report, "fingerprint": identity, "data": data, "seed": seed}
    g.save(out)
    summary = {"guard": g.name, "out": str(out), "sizes": sizes, "fit_s": time.perf_counter() - t0,
               "streamed": True, "report": report}
    if json_out:
        print_json(summary)
        return
    typer.echo(f"fitted {g.name} on {sizes['train']} samples (validation {sizes['val']}) read from disk in "
               f"{summary['fit_s']:.1f} s; saved to {out}")


def _check_nproc(nproc: int, world_env: int, device: str) -> None:
    """One-line errors for ``--nproc`` before any work: at least 1, at most this process's CPUs, 1 under
    torchrun, and CPU only (gloo)."""
    from mmguard.devices import resolve_device
    from mmguard.train import distributed

    if nproc < 1:
        raise SpecError(f"--nproc must be at least 1, got {nproc}")
    cpus = distributed.available_cpus()
    if nproc > cpus:
        raise SpecError(f"--nproc {nproc} is more than the {cpus} CPUs this process may use")
    if world_env > 1 and nproc != 1:
        raise SpecError(f"started with WORLD_SIZE={world_env} (torchrun): leave --nproc at 1, the launcher "
                        "starts the processes")
    if (nproc > 1 or world_env > 1) and resolve_device(device).type != "cpu":
        raise SpecError("data-parallel training (--nproc, torchrun) runs on CPU with gloo: use --device cpu")
    if nproc > 1 or world_env > 1:
        distributed.check_backend()


def _out_state(out: Path, identity: str, force: bool) -> str | None:
    """``None``: fit; ``"skip"``: --out already holds this guard; anything else: the error line."""
    from mmguard.guard import GUARD_FILE
    from mmguard.io.checkpoint import read_json

    if not (out / GUARD_FILE).is_file() or force:
        return None
    try:
        old = read_json(out / GUARD_FILE)
    except MMGuardError as exc:  # told to every rank, not raised on rank 0 alone
        return str(exc)
    if isinstance(old, dict) and (old.get("fit") or {}).get("fingerprint") == identity:
        return "skip"
    return (f"{str(out)!r} holds a guard fitted with other settings or data; "
            "use another --out or --force to replace it")


def _echo_skip(guard: str, out: Path, splits: Splits, json_out: bool) -> None:
    summary = {"guard": guard, "out": str(out), "sizes": splits.sizes(), "skipped": True}
    if json_out:
        print_json(summary)
    else:
        typer.echo(f"{out} already holds this {guard} guard (same settings and data); nothing to do")


@dataclass(frozen=True)
class FitJob:
    """Fit one guard on given splits and save it from rank 0 — the body of ``mmguard fit`` in every
    process (picklable, so :func:`mmguard.train.distributed.launch` can run it in spawned ranks)."""

    guard: str
    settings: dict[str, Any] | None
    device: str
    quick: bool
    precision: str
    seed: int
    data: str
    identity: str
    out: str

    def __call__(self, splits: Splits, g: Guard | None = None) -> dict[str, Any]:
        """Fit ``g`` (default: a new guard from the job's settings); returns the fit report."""
        from mmguard.guard import create_guard
        from mmguard.train import distributed

        if g is None:
            g = create_guard(self.guard, self.settings, device=self.device, quick=self.quick,
                             precision=self.precision)
        report = g.fit(splits, seed=self.seed)
        g.fit_report = {**report, "fingerprint": self.identity, "data": self.data, "seed": self.seed}
        if distributed.is_main_process():
            g.save(Path(self.out))
        return report


def score_command(
    guard_dir: Path = typer.Argument(..., help="Guard directory written by `mmguard fit`."),
    data: str = opt.DATA,
    modalities: Path | None = opt.MAPPING,
    data_dir: Path | None = opt.DATA_DIR,
    out: Path | None = typer.Option(None, "--out", help="Write per-sample scores and flags (.csv or .npz)."),
    device: str = opt.DEVICE,
    precision: str = opt.PRECISION,
    stream: bool = opt.STREAM,
    json_out: bool = JSON_OPTION,
) -> None:
    """Score every sample of a dataset: per-modality scores (1.0 = threshold) and flags.

    ``--stream`` reads a twin or HDF5 file in chunks (data larger than memory; only the (N, M) scores
    are kept)."""
    import numpy as np

    from mmguard.guard import load_guard

    if out is not None and out.suffix.lower() not in (".csv", ".npz"):
        raise SpecError(f"--out must end in .csv or .npz, got {str(out)!r}")
    opt.check_device(device, precision)
    g = load_guard(guard_dir, device=device, precision=precision)
    if stream:
        import torch

        from mmguard.data.stream import DEFAULT_CHUNK_BYTES, chunk_rows_for, iter_chunks, return_freed_memory

        source = opt.open_source(data, data_dir)
        return_freed_memory()
        scores = torch.cat([g.score(c) for c in iter_chunks(source, chunk_rows_for(source, DEFAULT_CHUNK_BYTES))])
    else:
        scores = g.score(opt.load_data(data, modalities, data_dir))
    flags = scores > 1.0
    summary = {"guard": g.name, "n": len(scores),
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
    stream: bool = opt.STREAM,
    json_out: bool = JSON_OPTION,
) -> None:
    """Correct a dataset with a guard and write it with the same modalities, shapes and units.

    ``--stream`` reads a twin or HDF5 file in chunks and writes the HDF5 output chunk by chunk
    (data larger than memory; ``--out`` must be .h5)."""
    from mmguard.data.arrays import save_arrays
    from mmguard.guard import load_guard

    if out.suffix.lower() not in (".h5", ".hdf5", ".npz"):
        raise SpecError(f"--out must end in .h5, .hdf5 or .npz, got {str(out)!r}")
    if out.is_dir():
        raise SpecError(f"--out {str(out)!r} is a directory")
    opt.check_device(device, precision)
    g = load_guard(guard_dir, device=device, precision=precision)
    if stream:
        from mmguard.data.arrays import save_array_chunks
        from mmguard.data.stream import DEFAULT_CHUNK_BYTES, chunk_rows_for, iter_chunks, return_freed_memory

        if out.suffix.lower() == ".npz":
            raise SpecError("--stream writes HDF5: give --out FILE.h5")
        source = opt.open_source(data, data_dir)
        return_freed_memory()

        def corrected():
            for chunk in iter_chunks(source, chunk_rows_for(source, DEFAULT_CHUNK_BYTES)):
                yield _checked_transform(g, chunk)

        n = save_array_chunks(corrected(), out)
    else:
        batch = opt.load_data(data, modalities, data_dir)
        save_arrays(_checked_transform(g, batch), out)
        n = len(batch)
    summary = {"guard": g.name, "n": n, "out": str(out)}
    if json_out:
        print_json(summary)
        return
    typer.echo(f"transformed {n} samples with {g.name}; written to {out}")


def _checked_transform(g: Guard, batch):
    fixed = g.transform(batch)
    fixed.check_finite("transformed data")
    if fixed.names != batch.names:
        raise DataError("the guard changed the modalities")  # the contract forbids it
    return fixed
