"""The trials of ``mmguard tune --engine ray`` as Ray Tune trials (optional extra ``mmguard[ray]``).

Decisions (docs/tune.md):

* **The same trials as the local engine.** The configs are sampled by the driver
  (:func:`mmguard.experiments.tune.plan_search`) and Tune receives only the list of trial indices
  to run, as one ``grid_search`` of Tune's :class:`BasicVariantGenerator` (one Tune trial per index,
  in order); a Tune trial looks its config up by index. Tune's own samplers are not used: they would
  draw other values than the local engine.
* **The same numbers.** A Tune trial runs :func:`mmguard.experiments.tune.run_trial`, the local
  engine's function, with torch on one thread and 1 CPU reserved per trial
  (``tune.with_resources``; plus 1 GPU with ``--device cuda``), so trials never oversubscribe the
  CPUs; the training and validation splits go to the cluster once (``tune.with_parameters``).
* **Only the driver writes the run directory.** A callback in the driver appends each finished
  trial to ``trials.jsonl`` as Tune reports it complete, so a killed search resumes from it (with
  either engine). Tune's own experiment directory (which holds pickled state) lives in a temporary
  folder and is deleted afterwards; nothing of it is needed to resume.
* **No retries.** ``FailureConfig(max_failures=0)``: Tune cannot tell a dead worker from an error of
  the trial itself (a bad config), which would fail the same way on every try. A trial that raises an
  :class:`~mmguard.errors.MMGuardError` reports it instead of raising (no Tune traceback), and the
  driver raises it, once, as that one line; any other failure becomes one :class:`EngineError` line
  naming the exception (Tune logs its traceback above it). The other trials run to the end and are
  kept; a rerun fits only what is missing.
* **ASHA** (``--scheduler asha``, off by default): each trial is fitted from scratch at growing
  budgets of one epochs field (``asha_rungs``: e.g. 1, 3 and 8 epochs for 8) and reports after each;
  ASHA stops the trials that are in the worse part of a rung. Which trials are stopped depends on the
  order in which trials reach a rung — on scheduling — so results with ASHA are not reproducible;
  completed trials have the same objective as without it.
* **Lazy import.** Ray is imported only here; a missing Ray or Ray Tune is a one-line error.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mmguard.engine.ray_engine import INSTALL_HINT, RayEngine, import_ray, limit_threads
from mmguard.errors import DataError, EngineError, MMGuardError, SpecError
from mmguard.experiments.tune_space import with_key

if TYPE_CHECKING:
    from mmguard.experiments.tune import SearchPlan, Trial, TuneConfig, TuneWork

#: the objective Tune sees for a trial without a finite one (Tune needs a number; never the best)
WORST = 1e300


def import_tune() -> Any:
    """The ``ray.tune`` module, or a one-line :class:`EngineError` saying how to install it."""
    import_ray()
    try:
        from ray import tune
    except ModuleNotFoundError as exc:
        raise EngineError(f"--engine ray for tune needs Ray Tune ({exc.name} is missing): {INSTALL_HINT}") from None
    return tune


def tune_trial(config: dict[str, Any], *, work: TuneWork, configs: dict[int, dict[str, Any]], metric: str,
               mode: str, budget: str | None, rungs: list[int]) -> None:
    """A Ray Tune function trainable: trial ``config["trial"]``, once, or once per ASHA rung."""
    from ray import tune

    from mmguard.experiments.tune import objective_of, run_trial

    limit_threads(1)
    k = int(config["trial"])
    steps = [(e, with_key(configs[k], budget, e)) for e in rungs] if budget else [(None, configs[k])]
    fit_s = eval_s = 0.0
    for rung, (epochs, conf) in enumerate(steps, 1):
        try:
            result = run_trial(work, conf)
        except MMGuardError as exc:  # the user's error: told to the driver as one line, no Tune traceback
            tune.report({"objective": WORST if mode == "min" else -WORST, "error": str(exc),
                         "error_type": type(exc).__name__, "rung": rung, "final": True})
            return
        fit_s, eval_s = fit_s + result["fit_s"], eval_s + result["eval_s"]
        value = objective_of(result["metrics"], metric)
        report = {"objective": value if value is not None else (WORST if mode == "min" else -WORST),
                  "rung": rung, "final": rung == len(steps),
                  "result": json.dumps({**result, "fit_s": fit_s, "eval_s": eval_s})}
        if epochs is not None:
            report["epochs"] = epochs
        tune.report(report)


def _collector(tune: Any, pending: dict[int, Trial], finished: Callable[[dict[str, Any]], None]) -> Any:
    """A Tune callback (in the driver) that hands every finished or stopped trial's record to ``finished``.

    Tune pickles its settings, callbacks included, for its own restore (which mmguard does not use):
    the handler, which writes the run directory from this process, is left out of that copy (and the
    class uses no variable of this function, which would travel with it).
    """

    class Collector(tune.Callback):
        def __init__(self, pending: dict[int, Trial], handler: Callable[[dict[str, Any]], None]) -> None:
            self.last: dict[str, dict[str, Any]] = {}
            self.pending = pending
            self.handler: Callable[[dict[str, Any]], None] | None = handler
            self.errors: list[tuple[str, str]] = []  # (type, message) of trials that raised an MMGuardError

        def __getstate__(self) -> dict[str, Any]:
            return {"last": {}, "pending": self.pending, "handler": None, "errors": []}

        def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                            **info: Any) -> None:
            self.last[trial.trial_id] = result

        def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            result = self.last.get(trial.trial_id) or trial.last_result
            if result and "error" in result:
                self.errors.append((result.get("error_type", "SpecError"), result["error"]))
                return
            if not result or "result" not in result or self.handler is None:
                return
            t = self.pending[int(trial.config["trial"])]
            status = "complete" if result.get("final") else "stopped"
            epochs = result.get("epochs") if status == "stopped" else None
            from mmguard.experiments.tune import make_record

            self.handler(make_record(t, json.loads(result["result"]), status, epochs))

    return Collector(pending, finished)


def _first_error(grid: Any) -> BaseException | None:
    """The original exception of the first failed Tune trial (Tune wraps it in a ``RayTaskError``, whose
    text carries the remote traceback), or None."""
    for res in grid:
        err = getattr(res, "error", None)
        for _ in range(5):
            inner = getattr(err, "cause", None) or getattr(err, "__cause__", None)
            if inner is None:
                break
            err = inner
        if err is not None:
            return err
    return None


def run_ray_trials(cfg: TuneConfig, plan: SearchPlan, work: TuneWork, pending: list[Trial],
                   finished: Callable[[dict[str, Any]], None]) -> None:
    """Run ``pending`` as Ray Tune trials on a local cluster or at ``cfg.address``; ``finished`` gets each
    record in the driver as its trial completes."""
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no CSV/JSON/TensorBoard files
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the reporter that honours verbose=0 (no tables)
    tune = import_tune()
    # without those files Tune's result grid warns that it found no metrics: they are in trials.jsonl
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    from ray.tune.search.basic_variant import BasicVariantGenerator

    by_k = {t.k: t for t in pending}
    metric, mode = plan.objective.name, plan.objective.mode
    trainable = tune.with_parameters(tune_trial, work=work, configs={t.k: t.config for t in pending},
                                     metric=metric, mode=mode, budget=plan.budget_key, rungs=plan.rungs)
    resources = {"cpu": 1, **({"gpu": 1} if cfg.device == "cuda" else {})}
    scheduler = None
    if cfg.scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler

        scheduler = ASHAScheduler(time_attr="epochs", max_t=plan.rungs[-1], grace_period=plan.rungs[0],
                                  reduction_factor=3)
    storage = tempfile.mkdtemp(prefix="mmguard-tune-")
    try:
        with RayEngine(cfg.address):  # starts (and stops) a local cluster, or joins --address
            collector = _collector(tune, by_k, finished)
            tuner = tune.Tuner(
                tune.with_resources(trainable, resources),
                param_space={"trial": tune.grid_search([t.k for t in pending])},
                tune_config=tune.TuneConfig(metric="objective", mode=mode, search_alg=BasicVariantGenerator(),
                                            scheduler=scheduler, num_samples=1),
                run_config=tune.RunConfig(name="mmguard-tune", storage_path=storage, verbose=0,
                                          callbacks=[collector], failure_config=tune.FailureConfig(max_failures=0)),
            )
            with contextlib.redirect_stdout(sys.stderr):  # stdout is the command's (report or --json)
                grid = tuner.fit()
            if collector.errors:
                kind, message = collector.errors[0]
                raise (DataError if kind == "DataError" else SpecError)(message)
            err = _first_error(grid)
            if isinstance(err, MMGuardError):
                raise err.with_traceback(None) from None
            if err is not None:
                text = " ".join(str(err).split())[:300]
                raise EngineError(f"a Ray Tune trial failed: {type(err).__name__}: {text} (its traceback is "
                                  "above; finished trials are kept in trials.jsonl, rerun the same command to "
                                  "resume)") from None
    finally:
        shutil.rmtree(storage, ignore_errors=True)
