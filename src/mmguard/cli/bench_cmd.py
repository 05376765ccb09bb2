"""``mmguard bench``: every chosen guard × seeds on the same splits and faulty batches."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from mmguard.cli import dataopts as opt
from mmguard.cli.common import ADDRESS_OPTION, ENGINE_OPTION, JSON_OPTION, print_json
from mmguard.errors import SpecError

console = Console(stderr=True, log_path=False)


def bench_command(
    data: str = opt.DATA,
    guards: str = typer.Option(..., "--guards", help="Comma-separated registered guards, e.g. mmae,dae,mmssl."),
    out: Path = typer.Option(..., "--out", help="Run directory (config, metrics.json, report.md, plots, guards)."),
    seeds: int = typer.Option(5, "--seeds", min=1, help="Number of seeds (0..N-1 after --seed)."),
    seed: int = typer.Option(0, "--seed", help="First seed; also the split seed."),
    modalities: Path | None = opt.MAPPING,
    data_dir: Path | None = opt.DATA_DIR,
    faults: list[Path] = typer.Option([], "--faults", help="Extra fault spec(s), JSON or YAML (repeatable)."),
    config: Path | None = typer.Option(None, "--config", help="Per-guard settings: {guard: {...}}, JSON or YAML."),
    reference: str | None = typer.Option(None, "--reference", help="Guard for paired ratios (default: first "
                                                                   "correcting guard)."),
    quick: bool = typer.Option(False, "--quick", help="CI-sized guard settings (few epochs)."),
    downstream: str | None = typer.Option(None, "--downstream", help="Downstream tasks to keep working, e.g. "
                                          "quality,seam_distance,phase (twin) or target."),
    downstream_config: Path | None = typer.Option(None, "--downstream-config", help="Downstream model settings "
                                                  "(docs/downstream.md), JSON or YAML."),
    no_families: bool = typer.Option(False, "--no-families", help="Skip the per-family conditions."),
    no_sweep: bool = typer.Option(False, "--no-sweep", help="Skip the severity sweeps."),
    split_by: str = opt.SPLIT_BY,
    train_groups: str | None = opt.TRAIN_GROUPS,
    val_groups: str | None = opt.VAL_GROUPS,
    test_groups: str | None = opt.TEST_GROUPS,
    id_test: float = opt.ID_TEST,
    adapt: str | None = typer.Option(None, "--adapt", help="Drift: test-time adaptation options to compare, e.g. "
                                     "none,stats,adabn,tent (docs/drift.md); needs --downstream."),
    dev_groups: str | None = typer.Option(None, "--dev-groups", help="Drift: test groups that select the "
                                          "adaptation (the others are reported), e.g. 3,4."),
    drift_faults: list[Path] = typer.Option([], "--drift-faults", help="Drift: synthetic drift spec(s) applied "
                                            "to the test split in time order (repeatable), e.g. slow_drift."),
    drift_config: Path | None = typer.Option(None, "--drift-config", help="Drift: settings (window, chunk, "
                                             "id_streams, detector: {...}), JSON or YAML."),
    device: str = opt.DEVICE,
    precision: str = opt.PRECISION,
    engine: str = ENGINE_OPTION,
    address: str | None = ADDRESS_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Fit each guard per seed on the same splits, evaluate all on the same faulty batches, report."""
    from pydantic import ValidationError

    from mmguard.engine import check_engine, make_engine
    from mmguard.experiments.harness import BenchConfig, run_bench
    from mmguard.faults import load_spec

    opt.check_device(device, precision)
    engine = check_engine(engine, address)
    names = [g.strip() for g in guards.split(",") if g.strip()]
    tasks = [t.strip() for t in (downstream or "").split(",") if t.strip()]
    data = opt.with_twin_tasks(data, tasks)
    specs = []
    for path in faults:
        if not path.is_file():
            raise SpecError(f"fault spec {str(path)!r} does not exist")
        specs.append(load_spec(path).to_dict())
    per_guard = opt.read_config_file(config) or {}
    if not all(isinstance(v, dict) for v in per_guard.values()):
        raise SpecError("--config must map guard names to mappings of settings")
    split = opt.split_description(split_by, train_groups, val_groups, test_groups, seed, id_test)
    drift = None
    if adapt is not None or drift_faults:
        drift_specs = []
        for path in drift_faults:
            if not path.is_file():
                raise SpecError(f"drift fault spec {str(path)!r} does not exist")
            drift_specs.append(load_spec(path).to_dict())
        explicit = train_groups is not None or test_groups is not None
        drift = {**(opt.read_config_file(drift_config) or {}),
                 "adapt": [m.strip() for m in (adapt or "none,stats").split(",") if m.strip()],
                 "group_key": (split_by if split_by not in ("auto", "random") else "episode") if explicit else None,
                 "id_groups": opt.parse_groups(train_groups, "--train-groups") or [],
                 "dev_groups": opt.parse_groups(dev_groups, "--dev-groups") or [],
                 "faults": drift_specs}
    try:
        cfg = BenchConfig(data={"source": data, "mapping": str(modalities) if modalities else None,
                                "split": split},
                          guards=names, guard_configs=per_guard, seeds=list(range(seed, seed + seeds)),
                          families=not no_families, severity_sweep=not no_sweep, faults=specs,
                          reference=reference, downstream=tasks,
                          downstream_config=opt.read_config_file(downstream_config) or {}, quick=quick, device=device,
                          precision=precision.strip().lower(), drift=drift)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise SpecError(f"invalid bench option {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    batch = opt.load_data(data, modalities, data_dir, seed)
    splits = opt.split_data(batch, split_by, train_groups, val_groups, test_groups, seed, id_test)
    with make_engine(engine, address) as runner:
        metrics = run_bench(cfg, splits, out, log=lambda m: console.log(f"bench: {m}"), engine=runner)
    if json_out:
        print_json({k: v for k, v in metrics.items() if k != "guards"} | {"guards": list(metrics["guards"])})
        return
    typer.echo((out / "report.md").read_text(encoding="utf-8"))
