"""Train and evaluate a guard on a twin file larger than a memory budget (issue #13; docs/distributed.md).

Each mode runs in a fresh child process (so one mode's heap never inflates the other's figures),
which reports its resident set (Linux ``/proc/self/status``):

* ``base`` — VmRSS after importing torch and mmguard, building the guard and opening the data lazily
  (the splits are decided from the episode column alone);
* ``fit`` / ``eval`` — the peak (VmHWM, reset with ``/proc/self/clear_refs`` before each phase) while
  fitting on the training split and while evaluating on the test split under the training fault mix.

Modes: ``stream`` — :meth:`Guard.fit_stream` + :func:`mmguard.eval.stream_eval.evaluate_stream`, the
data read in chunks (shuffle buffer ``--buffer-mb``, chunks ``--chunk-mb``); ``memory`` — the file
loaded whole (:func:`mmguard.twin.dataset.load_twin`), :meth:`Guard.fit` and the in-memory evaluation
of the same test split. The *budget* is a bound on growth over ``base``: the run passes when both
peaks of ``stream`` stay under ``base + --budget-mb`` and the dataset (all rows as float32, what
loading it allocates) is at least 3x the budget.

    .venv/bin/python benchmarks/stream_memory.py --data /tmp/twins/arm180.h5 --budget-mb 256 \
        --out benchmarks/results/stream_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MB = 1 << 20


def _status(key: str) -> int:
    """A ``/proc/self/status`` memory figure in bytes."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} in /proc/self/status (Linux only)")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # resets VmHWM to the current RSS


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One mode in this process; returns its figures."""
    import torch

    from mmguard.data.stream import chunk_rows_for, stream_splits
    from mmguard.eval.guard_eval import evaluate_guard
    from mmguard.eval.stream_eval import evaluate_stream
    from mmguard.faults import apply_faults
    from mmguard.faults.scenarios import training_spec
    from mmguard.guard import create_guard
    from mmguard.twin.stream import twin_source_uri

    torch.set_num_threads(args.threads)
    settings: dict[str, Any] = {"autoencoder": {"epochs": args.epochs, "patience": None}}
    if args.drift_pool:
        settings["drift"] = {"pool_size": args.drift_pool, "reference_size": max(4, args.drift_pool // 4)}
    g = create_guard(args.guard, settings)
    src = twin_source_uri(f"{args.data.removeprefix('twin:')}{'&' if '?' in args.data else '?'}target=none")
    train, val, test = stream_splits(src, seed=args.seed)
    out: dict[str, Any] = {"mode": args.mode, "rows": len(src), "dataset_mb": len(src) * src.row_bytes() / MB,
                           "splits": [len(train), len(val), len(test)], "base_mb": _status("VmRSS") / MB}
    _reset_peak()
    t0 = time.perf_counter()
    if args.mode == "stream":
        report = g.fit_stream(train, val, seed=args.seed, buffer_bytes=args.buffer_mb * MB,
                              chunk_bytes=args.chunk_mb * MB)
    else:
        from mmguard.data.splits import Splits
        from mmguard.twin.dataset import load_twin_uri

        batch = load_twin_uri(f"{args.data.removeprefix('twin:')}{'&' if '?' in args.data else '?'}target=none")
        splits = Splits(train=batch.select(torch.from_numpy(train.rows)),
                        val=batch.select(torch.from_numpy(val.rows)), test=batch.select(torch.from_numpy(test.rows)))
        del batch
        report = g.fit(splits, seed=args.seed)
    out["fit_s"] = time.perf_counter() - t0
    out["fit_peak_mb"] = _status("VmHWM") / MB
    out["val_history"] = report["autoencoder"]["val_history"]
    _reset_peak()
    t0 = time.perf_counter()
    probe = test.read(slice(0, 2))
    spec = training_spec(probe)
    if args.mode == "stream":
        ev = evaluate_stream(g, test, spec, seed=args.seed, chunk_rows=chunk_rows_for(test, args.chunk_mb * MB))
    else:
        clean_std = g.standardizer.transform(splits.test)  # faults in standardised units, as mmguard bench
        faulty = g.standardizer.inverse(apply_faults(clean_std, spec, seed=args.seed))
        ev = evaluate_guard(g, faulty, clean_std, g.standardizer)
        ev = {k: v for k, v in ev.items() if k in ("n", "n_faulty", "errors", "detection")}
    out["eval_s"] = time.perf_counter() - t0
    out["eval_peak_mb"] = _status("VmHWM") / MB
    out["faulty_error"] = ev["errors"]["faulty"]["combined"]
    out["clean_error"] = ev["errors"]["clean"]["combined"]
    out["auroc"] = ev["detection"]["auroc"]
    out["growth_mb"] = max(out["fit_peak_mb"], out["eval_peak_mb"]) - out["base_mb"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a twin file or twin: URI (e.g. PATH?episodes=0-59)")
    ap.add_argument("--guard", default="dae")
    ap.add_argument("--modes", default="stream,memory")
    ap.add_argument("--budget-mb", type=int, default=256)
    ap.add_argument("--buffer-mb", type=int, default=64)
    ap.add_argument("--chunk-mb", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--drift-pool", type=int, default=0, help="drift detector pool_size (reference: a quarter); "
                    "0: the defaults (2,000 / 300)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="stream", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    runs = []
    for mode in args.modes.split(","):
        cmd = [sys.executable, __file__, "--child", "--mode", mode, "--data", args.data, "--guard", args.guard,
               "--buffer-mb", str(args.buffer_mb), "--chunk-mb", str(args.chunk_mb), "--epochs", str(args.epochs),
               "--threads", str(args.threads), "--seed", str(args.seed),
               "--drift-pool", str(args.drift_pool)]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            sys.exit(f"{mode} run failed:\n{done.stderr[-3000:]}")
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        r = runs[-1]
        print(f"{mode:>7}: dataset {r['dataset_mb']:.0f} MB, base {r['base_mb']:.0f} MB, peak fit "
              f"{r['fit_peak_mb']:.0f} / eval {r['eval_peak_mb']:.0f} MB (growth {r['growth_mb']:.0f} MB), "
              f"fit {r['fit_s']:.1f} s, eval {r['eval_s']:.1f} s, faulty error {r['faulty_error']:.4f}")
    stream = next((r for r in runs if r["mode"] == "stream"), None)
    result: dict[str, Any] = {
        "command": " ".join(sys.argv), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}", "budget_mb": args.budget_mb, "buffer_mb": args.buffer_mb,
        "chunk_mb": args.chunk_mb, "epochs": args.epochs, "threads": args.threads, "runs": runs}
    if stream is not None:
        result["dataset_over_budget"] = stream["dataset_mb"] / args.budget_mb
        result["stream_within_budget"] = stream["growth_mb"] <= args.budget_mb
        print(f"dataset / budget = {result['dataset_over_budget']:.2f}; streamed growth "
              f"{stream['growth_mb']:.0f} MB {'<=' if result['stream_within_budget'] else '>'} budget "
              f"{args.budget_mb} MB")
    memory = next((r for r in runs if r["mode"] == "memory"), None)
    if stream is not None and memory is not None:
        result["time_ratio_stream_over_memory"] = (stream["fit_s"] + stream["eval_s"]) / (
            memory["fit_s"] + memory["eval_s"])
        print(f"time stream / memory = {result['time_ratio_stream_over_memory']:.2f}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
