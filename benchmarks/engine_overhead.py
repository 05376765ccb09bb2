"""Overheads of the Ray engine (docs/distributed.md, "Scaling model"), and optionally its speed-up.

Measures on a local Ray cluster:

* ``cluster_start_s`` — ``ray.init`` of a local cluster (paid once per command);
* ``first_job_s`` — the first job (a worker process starts), ``worker_import_s`` — a worker
  importing the bench harness (torch and mmguard; once per worker);
* ``job_overhead_ms`` — per job, from the throughput of many no-op jobs on the cluster's CPUs
  (submission, scheduling, result transfer), and ``round_trip_ms`` — one job waited for at a time;
* ``transfer_ms_per_mb`` — extra time per MB a job returns (a fitted guard's files) and per MB
  shared with :meth:`RayEngine.share` (the run's splits, sent once).

``--predict RUN_DIR`` applies the scaling model to a finished in-process ``bench`` run: per-job times
from its units (``fit_s + eval_s``), the driver's share from ``wall_s`` minus their sum, and the
overheads above (``--overheads JSON`` from an earlier measurement, else measured now), and prints
the predicted wall time on ``--workers`` (comma-separated) single-CPU workers.

``--speedup`` also times the same small ``bench`` (toy data, or ``--data``) in-process and with Ray
and checks that the numbers are identical. Writes JSON to ``--out`` (default: stdout).

    python benchmarks/engine_overhead.py --cpus 2 --out benchmarks/results/engine_overhead.json
    python benchmarks/engine_overhead.py --cpus 2 --speedup --data twin:arm.h5 --guards mmae,dae --seeds 2
    python benchmarks/engine_overhead.py --predict runs/table1 --overheads benchmarks/results/engine_overhead.json \
        --workers 1,2,8,32
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def noop(x: int) -> int:
    return x


def payload(n_bytes: int) -> bytes:
    return bytes(n_bytes)


def consume(data: bytes) -> int:
    return len(data)


def import_time(_: int) -> float:
    """Seconds this worker takes to import the bench harness (torch and mmguard); 0 once imported."""
    t0 = time.perf_counter()
    import mmguard.experiments.harness  # noqa: F401

    time.sleep(0.5)  # keep the worker busy so the next job lands on another one
    return time.perf_counter() - t0 - 0.5


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def overheads(engine: Any, jobs: int) -> dict[str, Any]:
    from mmguard.engine import Job

    out: dict[str, Any] = {}
    out["first_job_s"] = _timed(lambda: dict(engine.map(noop, [Job(0, (0,))])))
    dict(engine.map(noop, [Job(i, (i,)) for i in range(8)]))  # warm every worker
    rt = [_timed(lambda i=i: dict(engine.map(noop, [Job(i, (i,))]))) for i in range(20)]
    out["round_trip_ms"] = 1e3 * statistics.median(rt)
    wall = _timed(lambda: dict(engine.map(noop, [Job(i, (i,)) for i in range(jobs)])))
    out["job_overhead_ms"] = 1e3 * wall / jobs  # amortised over the cluster's CPUs
    out["jobs"] = jobs
    out["worker_import_s"] = max(r for _, r in engine.map(import_time, [Job(i, (i,)) for i in range(2)]))
    sizes = [1 << 20, 16 << 20]
    ret = {}
    for n in sizes:
        t = statistics.median(_timed(lambda n=n: dict(engine.map(payload, [Job(0, (n,))]))) for _ in range(5))
        ret[n] = t
    out["return_ms_per_mb"] = 1e3 * (ret[sizes[1]] - ret[sizes[0]]) / 15
    big = bytes(64 << 20)
    put_s = _timed(lambda: engine.share(big))
    ref = engine.share(big)
    use_s = statistics.median(_timed(lambda: dict(engine.map(consume, [Job(0, (ref,))]))) for _ in range(3))
    out["share_ms_per_mb"] = 1e3 * put_s / 64
    out["shared_arg_ms_per_mb"] = 1e3 * max(0.0, use_s - out["round_trip_ms"] / 1e3) / 64
    return out


def speedup(args: argparse.Namespace, engine: Any) -> dict[str, Any]:
    import torch

    from mmguard.data import load_dataset
    from mmguard.data.splits import make_splits
    from mmguard.experiments.harness import BenchConfig, run_bench

    torch.set_num_threads(args.local_threads)  # the in-process baseline (1: one CPU, like one Ray job)
    splits = make_splits(load_dataset(args.data), seed=0)
    cfg = BenchConfig(guards=args.guards.split(","), seeds=list(range(args.seeds)), quick=not args.full,
                      severity_sweep=False)
    with tempfile.TemporaryDirectory() as tmp:
        t_local = _timed(lambda: run_bench(cfg, splits, Path(tmp) / "local", log=lambda m: None))
        t_ray = _timed(lambda: run_bench(cfg, splits, Path(tmp) / "ray", log=lambda m: None, engine=engine))
        same = all((Path(tmp) / "local" / "units" / g / f"seed{s}.json").is_file() for g in cfg.guards
                   for s in cfg.seeds)
        a = json.loads((Path(tmp) / "local" / "metrics.json").read_text())
        b = json.loads((Path(tmp) / "ray" / "metrics.json").read_text())
        same = same and a["guards"].keys() == b["guards"].keys() and all(
            a["guards"][g]["conditions"] == b["guards"][g]["conditions"] for g in a["guards"])
    return {"data": args.data, "quick": not args.full, "local_threads": args.local_threads,
            "guards": cfg.guards, "seeds": cfg.seeds, "jobs": len(cfg.guards) * len(cfg.seeds),
            "local_s": t_local, "ray_s": t_ray, "speedup": t_local / t_ray, "identical": same}


def job_times(run: Path) -> list[float]:
    """``fit_s + eval_s`` of every (guard, seed) unit of a finished bench run."""
    times = []
    for path in sorted((run / "units").glob("*/seed*.json")):
        if path.parent.name == "downstream":
            continue
        unit = json.loads(path.read_text())["payload"]
        times.append(float(unit["fit_s"]) + float(unit["eval_s"]))
    return times


def makespan(times: list[float], workers: int) -> float:
    """Longest-processing-time-first schedule of ``times`` on ``workers`` (what a queue of jobs gives)."""
    loads = [0.0] * workers
    for t in sorted(times, reverse=True):
        loads[loads.index(min(loads))] += t
    return max(loads)


def predict(run: Path, workers: list[int], over: dict[str, Any]) -> dict[str, Any]:
    """The scaling model of docs/distributed.md applied to the in-process run in ``run``."""
    times = job_times(run)
    wall = float(json.loads((run / "metrics.json").read_text())["wall_s"])
    driver = max(0.0, wall - sum(times))
    per_job = over["job_overhead_ms"] / 1e3
    fixed = over["cluster_start_s"] + over["worker_import_s"]
    rows = [{"workers": n, "predicted_s": driver + fixed + makespan(times, n) + len(times) * per_job / n,
             "ideal_s": driver + sum(times) / n} for n in workers]
    return {"run": str(run), "jobs": len(times), "job_s_total": sum(times), "job_s_max": max(times, default=0.0),
            "driver_s": driver, "measured_wall_s": wall, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    p.add_argument("--jobs", type=int, default=200, help="no-op jobs for the per-job overhead")
    p.add_argument("--speedup", action="store_true", help="also time a small bench in-process and with Ray")
    p.add_argument("--data", default="toy?n=2000")
    p.add_argument("--guards", default="mmae,dae")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--full", action="store_true", help="--speedup with the guards' full settings (default: quick)")
    p.add_argument("--local-threads", type=int, default=1, help="torch threads of the in-process baseline")
    p.add_argument("--predict", type=Path, default=None, help="a finished in-process bench run directory")
    p.add_argument("--overheads", type=Path, default=None, help="JSON written by an earlier run of this script")
    p.add_argument("--workers", default="1,2,4,8,16,32", help="worker counts for --predict")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.predict and args.overheads:
        over = json.loads(args.overheads.read_text())
        print(json.dumps(predict(args.predict, [int(w) for w in args.workers.split(",")], over), indent=2))
        return 0

    import ray

    from mmguard.engine.ray_engine import RayEngine

    t0 = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="warning", log_to_driver=False)
    result: dict[str, Any] = {"cpus": args.cpus, "ray": ray.__version__, "cluster_start_s": time.perf_counter() - t0}
    engine = RayEngine()
    result.update(overheads(engine, args.jobs))
    if args.speedup:
        result["speedup"] = speedup(args, engine)
    if args.predict:
        result["predict"] = predict(args.predict, [int(w) for w in args.workers.split(",")], result)
    ray.shutdown()
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
