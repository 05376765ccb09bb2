"""``mmguard tune``: hyperparameter search for one guard, selected on the validation split (docs/tune.md)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from mmguard.cli import dataopts as opt
from mmguard.cli.common import ADDRESS_OPTION, JSON_OPTION, print_json
from mmguard.errors import SpecError

console = Console(stderr=True, log_path=False)


def tune_command(
    guard: str = typer.Option(..., "--guard", help="Registered guard to tune (see `mmguard guards`)."),
    data: str = opt.DATA,
    space: Path = typer.Option(..., "--space", help="Search space, JSON or YAML: {dotted.config.key: "
                               "{uniform|loguniform|randint|lograndint|choice: [...]}}."),
    trials: int = typer.Option(..., "--trials", min=1, help="Number of trials (configs drawn from the space)."),
    out: Path = typer.Option(..., "--out", help="Run directory (config.json, trials.jsonl, metrics.json, "
                             "best_config.json, report.md, objective.png)."),
    seed: int = typer.Option(0, "--seed", help="Search seed (trial k's config depends on it and k only); also "
                             "the split seed."),
    fit_seed: int | None = typer.Option(None, "--fit-seed", help="Every trial's fit seed (default: --seed)."),
    metric: str | None = typer.Option(None, "--metric", help="Validation objective: val_error, val_error_faulty "
                                      "(min), val_auroc, val_f1, val_accuracy (max); default by guard kind."),
    config: Path | None = typer.Option(None, "--config", help="Guard settings under every trial, JSON or YAML."),
    quick: bool = typer.Option(False, "--quick", help="CI-sized guard settings (few epochs) under every trial."),
    modalities: Path | None = opt.MAPPING,
    data_dir: Path | None = opt.DATA_DIR,
    split_by: str = opt.SPLIT_BY,
    train_groups: str | None = opt.TRAIN_GROUPS,
    val_groups: str | None = opt.VAL_GROUPS,
    test_groups: str | None = opt.TEST_GROUPS,
    device: str = opt.DEVICE,
    precision: str = opt.PRECISION,
    engine: str = typer.Option("local", "--engine", help="Where the trials run: local (this process, one after "
                               "the other) or ray (Ray Tune trials, 1 CPU each; pip install 'mmguard\\[ray]'). "
                               "Same trials, same objectives."),
    address: str | None = ADDRESS_OPTION,
    scheduler: str = typer.Option("none", "--scheduler", help="none, or asha (with --engine ray): stop poor "
                                  "trials early at growing epoch budgets; results then depend on scheduling."),
    asha_budget: str | None = typer.Option(None, "--asha-budget", help="With --scheduler asha: the epochs field "
                                           "to scale (default: the guard's only one)."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Search a guard's settings: fit each trial on the training split, score it on the validation split
    (the test split is never read), write the best config for `mmguard fit --config`."""
    from pydantic import ValidationError

    from mmguard.engine import check_engine
    from mmguard.experiments.tune import TuneConfig, plan_search, run_tune
    from mmguard.experiments.tune_space import read_space

    if out.exists() and not out.is_dir():
        raise SpecError(f"--out {str(out)!r} is a file; give a directory")
    opt.check_device(device, precision)
    engine = check_engine(engine, address)
    if engine == "ray":
        from mmguard.experiments.tune_ray import import_tune

        import_tune()
    if scheduler.strip().lower() not in ("none", "asha"):
        raise SpecError(f"unknown scheduler {scheduler!r}; use none or asha")
    search = read_space(space)
    split = opt.split_description(split_by, train_groups, val_groups, test_groups, seed)
    try:
        cfg = TuneConfig(guard=guard, data={"source": data, "mapping": str(modalities) if modalities else None,
                                            "split": split},
                         space=search.to_dict(), trials=trials, seed=seed,
                         fit_seed=seed if fit_seed is None else fit_seed, metric=metric,
                         base_config=opt.read_config_file(config) or {}, quick=quick, device=device,
                         precision=precision.strip().lower(), engine=engine, address=address,
                         scheduler=scheduler.strip().lower(), asha_budget=asha_budget)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise SpecError(f"invalid tune option {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    plan_search(cfg)  # every trial's config validated before the data are read
    batch = opt.load_data(data, modalities, data_dir, seed)
    splits = opt.split_data(batch, split_by, train_groups, val_groups, test_groups, seed)
    metrics = run_tune(cfg, splits, out, log=lambda m: console.log(f"tune: {m}"))
    if json_out:
        print_json({k: v for k, v in metrics.items() if k != "trials"}
                   | {"trials": [{k: v for k, v in r.items() if k != "metrics"} for r in metrics["trials"]]})
        return
    typer.echo((out / "report.md").read_text(encoding="utf-8"))
