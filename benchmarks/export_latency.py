"""Inference latency and throughput of every registered guard: torch eager vs its ONNX export (ONNX Runtime).

For each registered guard, fitted in ``--quick`` mode on data of the digital twin's shapes (a
3x64x64 ``camera`` image and a 31-d ``kinematics`` vector), in one process, on one thread
(``torch.set_num_threads(1)``, ONNX Runtime ``intra_op_num_threads=1``):

* **latency at batch 1** — p50 and p99 of ``--reps1`` calls on single samples (after warm-up);
* **throughput at batch 256** — samples/s of the median of ``--reps256`` calls on 256 samples;

for the public API calls (same input checks on both sides): ``score`` for guards that flag, then
``transform`` (guards that correct) or ``predict`` (guards that predict) — for MMSSL ``transform``
is the whole path (encode, detect, gate, correct, decode); and, for guards that flag and correct,
``score_and_transform`` (evaluation's one pass) against ``score`` then ``transform`` at batch 256.
The torch side is the loaded guard
(``Guard.score`` etc.), the ONNX side :class:`mmguard.export.runtime.OnnxGuard` on the file written by
:func:`mmguard.export.onnx.export_onnx`. The parity of the two on the benchmark's own faulty test batch
is printed too.

Data (decision): synthetic, not the MuJoCo twin — 12 episodes x 20 steps of a 2-d latent walk; the
camera shows smooth patterns weighted by the latent (channel offsets as in the contract tests), the
kinematics are nonlinear functions of it plus noise. Values do not change the cost of a forward pass;
rendering a twin would cost minutes. Usage::

    .venv/bin/python benchmarks/export_latency.py [--reps1 200] [--reps256 5] [--guards a,b] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

import mmguard
from mmguard.data.model import MultimodalBatch
from mmguard.data.splits import Splits, make_splits
from mmguard.export.onnx import export_onnx
from mmguard.export.runtime import OnnxGuard
from mmguard.faults import apply_faults
from mmguard.faults.scenarios import training_spec
from mmguard.guard import Guard, available_guards, create_guard

IMAGE = (3, 64, 64)
KINEMATICS = 31


def twin_like(episodes: int = 12, steps: int = 20, seed: int = 0) -> MultimodalBatch:
    """``camera`` (N, 3, 64, 64) and ``kinematics`` (N, 31) of one 2-d latent walk; binary target."""
    rng = np.random.default_rng(seed)
    n = episodes * steps
    z = np.cumsum(rng.normal(scale=0.3, size=(episodes, steps, 2)), 1).reshape(n, 2) + rng.normal(size=(n, 2))
    c, h, w = IMAGE
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    a, b = np.stack([xx, yy, xx * yy])[None], np.stack([yy, xx, xx**2 - 0.3])[None]
    camera = 0.15 * (z[:, 0, None, None, None] * a + z[:, 1, None, None, None] * b) + 0.5
    camera += 0.01 * rng.normal(size=camera.shape)
    feats = np.concatenate([z, np.tanh(z), z[:, :1] * z[:, 1:], np.sin(z), np.cos(z)], 1)  # 9 features
    mix = rng.normal(size=(feats.shape[1], KINEMATICS)) / 3
    kin = feats @ mix + 0.05 * rng.normal(size=(n, KINEMATICS))
    y = (z[:, 0] > np.median(z[:, 0])).astype(np.int64)
    return MultimodalBatch.from_arrays({"camera": camera.astype(np.float32), "kinematics": kin}, target=y,
                                       meta={"episode": np.repeat(np.arange(episodes), steps),
                                             "t": np.tile(np.arange(steps), episodes)})


def fit_quick(name: str, splits: Splits) -> Guard:
    """Guard ``name`` fitted in ``--quick`` mode without a drift detector (also used by serve_load.py)."""
    guard = create_guard(name, {"drift": None}, quick=True)
    guard.fit(splits, seed=0)
    return guard


def timed(fn: Callable[[], Any], reps: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def ops_of(guard: Guard) -> list[str]:
    return (["score"] if guard.flags else []) + (["transform"] if guard.corrects else []) + \
        (["predict"] if guard.predicts else [])


def parity(guard: Guard, og: OnnxGuard, batch: MultimodalBatch) -> dict[str, float]:
    out: dict[str, float] = {}
    if guard.flags:
        out["scores"] = float((guard.score(batch) - og.score(batch)).abs().max())
        out["flags_differing"] = float((guard.flag(batch) != og.flag(batch)).sum())
    if guard.corrects:
        a, b = guard.transform(batch), og.transform(batch)
        out["fixed"] = max(float((a.modalities[n] - b.modalities[n]).abs().max()) for n in batch.names)
    if guard.predicts:
        out["prediction_mismatches"] = float((guard.predict(batch) != og.predict(batch)).sum())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps1", type=int, default=200, help="timed calls at batch 1 (per guard, op, backend)")
    ap.add_argument("--reps256", type=int, default=5, help="timed calls at batch 256")
    ap.add_argument("--guards", default="", help="comma-separated guard names (default: every registered guard)")
    ap.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    args = ap.parse_args()
    torch.set_num_threads(1)
    names = [g for g in args.guards.split(",") if g] or list(available_guards())
    batch = twin_like()
    splits = make_splits(batch, seed=0)
    test = apply_faults(splits.test, training_spec(splits.test), seed=1)
    one = test.select(slice(0, 1))
    big_index = torch.arange(256) % len(test)
    big = test.select(big_index)
    load_before = os.getloadavg()
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    checks: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            t0 = time.perf_counter()
            guard = fit_quick(name, splits)
            fit_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            path = export_onnx(guard, Path(tmp) / f"{name}.onnx")
            export_s = time.perf_counter() - t0
            og = OnnxGuard(path, threads=1)
            checks[name] = {"fit_s": round(fit_s, 1), "export_s": round(export_s, 1),
                            "onnx_bytes": path.stat().st_size, "parity": parity(guard, og, test)}
            if guard.flags and guard.corrects:  # evaluation's one pass vs score() then transform(), batch 256
                sep = timed(lambda g=guard: (g.score(big), g.transform(big)), args.reps256, warmup=1)
                one_pass = timed(lambda g=guard: g.score_and_transform(big), args.reps256, warmup=1)
                checks[name]["eval_pass_ms"] = {"score_then_transform": 1e3 * statistics.median(sep),
                                                "score_and_transform": 1e3 * statistics.median(one_pass)}
            for op in ops_of(guard):
                for backend, engine in (("torch", guard), ("onnx", og)):
                    fn = getattr(engine, op)
                    lat = timed(lambda fn=fn: fn(one), args.reps1, warmup=max(5, args.reps1 // 10))
                    thr = timed(lambda fn=fn: fn(big), args.reps256, warmup=1)
                    rows.append({"guard": name, "op": op, "backend": backend,
                                 "p50_ms": 1e3 * statistics.median(lat),
                                 "p99_ms": 1e3 * float(np.quantile(lat, 0.99)),
                                 "samples_per_s": 256 / statistics.median(thr)})
    elapsed = time.perf_counter() - started
    env = {"python": platform.python_version(), "torch": torch.__version__, "mmguard": mmguard.__version__,
           "onnxruntime": __import__("onnxruntime").__version__, "machine": platform.machine(),
           "cpus": os.cpu_count(), "threads": 1, "load_before": [round(v, 2) for v in load_before],
           "load_after": [round(v, 2) for v in os.getloadavg()], "seconds": round(elapsed, 1)}
    print(f"# export latency: camera {IMAGE} + kinematics ({KINEMATICS},), synthetic twin-like data, 1 thread")
    print("# " + ", ".join(f"{k} {v}" for k, v in env.items()))
    print()
    print("| guard | op | torch p50 ms | onnx p50 ms | torch p99 ms | onnx p99 ms | torch samples/s @256 "
          "| onnx samples/s @256 | onnx speed-up @1 / @256 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for i in range(0, len(rows), 2):
        t, o = rows[i], rows[i + 1]
        print(f"| {t['guard']} | {t['op']} | {t['p50_ms']:.3f} | {o['p50_ms']:.3f} | {t['p99_ms']:.3f} | "
              f"{o['p99_ms']:.3f} | {t['samples_per_s']:,.0f} | {o['samples_per_s']:,.0f} | "
              f"{t['p50_ms'] / o['p50_ms']:.2f}x / {o['samples_per_s'] / t['samples_per_s']:.2f}x |")
    print()
    print("| guard | fit s | export s | .onnx bytes | parity on the faulty test batch (max abs diff) |")
    print("|---|---:|---:|---:|---|")
    for name, c in checks.items():
        par = ", ".join(f"{k} {v:.2e}" if "differing" not in k and "mismatch" not in k else f"{k} {v:.0f}"
                        for k, v in c["parity"].items())
        print(f"| {name} | {c['fit_s']} | {c['export_s']} | {c['onnx_bytes']:,} | {par} |")
    print()
    print("| guard | score() + transform() ms @256 | score_and_transform() ms @256 | speed-up |")
    print("|---|---:|---:|---:|")
    for name, c in checks.items():
        if "eval_pass_ms" in c:
            e = c["eval_pass_ms"]
            print(f"| {name} | {e['score_then_transform']:.1f} | {e['score_and_transform']:.1f} | "
                  f"{e['score_then_transform'] / e['score_and_transform']:.2f}x |")
    if args.out is not None:
        args.out.write_text(json.dumps({"env": env, "rows": rows, "checks": checks}, indent=2) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
