"""GPU check: what a CUDA GPU buys mmguard, and whether it gives the same answers — one command.

In one process (docs/devices.md, "GPU checks"):

(a) **training throughput** of MMSSL's stage-1 autoencoder (samples/s), on the CPU and on CUDA in
    fp32 and bf16, as ratios GPU/CPU:
    * ``encoder step`` — one forward+backward of the camera encoder at batch ``--encoder-batch``
      (``bench_mmssl_stage1.encoder`` / ``step_time``, imported);
    * ``train_autoencoder`` — the real stage-1 training (:func:`mmguard.mmssl.stages.train_autoencoder`
      through the one training loop, its per-epoch validation pass included) for ``--epochs``
      epochs after a one-epoch warm-up; samples/s = epochs x training samples / seconds;
(b) **inference** of every registered guard (fitted once on the CPU in ``--quick`` mode, then
    loaded on each device): throughput at batch 256 (median of ``--reps256`` calls) and latency
    p50/p99 at batch 1 (``--reps1`` calls) of ``score`` and ``transform`` / ``predict``
    (``export_latency.timed`` / ``ops_of``, imported);
(c) **parity** of the same fitted guard on another device or precision against CPU fp32: max abs
    difference of the normalised scores (1.0 = threshold), of the corrections (raw units) and the
    number of differing flags (``export_latency.parity``, imported), each with its tolerance:
    CPU bf16; CUDA fp32 with PyTorch's default (cuDNN convolutions may use TF32); CUDA fp32 with
    TF32 off (strict); CUDA bf16.

Data: synthetic, shaped like the digital twin (camera 3x64x64 + kinematics 31-d,
``export_latency.twin_like``): no downloads, no network. Without CUDA the GPU columns read "n/a"
and the run still succeeds (CPU columns only). Progress goes to stderr; the JSON is rewritten
after every measurement (a killed run keeps what it measured); a markdown table is printed at the
end. ``--budget-s`` skips what would start after that many seconds. Exit code 1 if a measurement
failed (its error is in the JSON), else 0. Usage::

    .venv/bin/python benchmarks/gpu_check.py            # full run (a few minutes on a GPU machine)
    .venv/bin/python benchmarks/gpu_check.py --quick    # smoke test, < 60 s on 2 CPU cores
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
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import mmguard
from bench_mmssl_stage1 import encoder, step_time
from export_latency import ops_of, parity, timed, twin_like
from mmguard.data.splits import make_splits
from mmguard.devices import autocast, use_precision
from mmguard.faults import apply_faults
from mmguard.faults.scenarios import training_spec
from mmguard.guard import available_guards, create_guard, load_guard
from mmguard.mmssl.config import AutoencoderConfig
from mmguard.mmssl.stages import train_autoencoder

DEFAULT_OUT = Path(__file__).parent / "results" / "gpu_check.json"
NA = "n/a"
#: parity tolerances (max abs difference against CPU fp32): normalised scores (1.0 = threshold) and
#: corrections (raw units of the twin-shaped data: camera values in [0, 1], kinematics ~ unit scale)
TOLERANCE = {"fp32-strict": 1e-4, "fp32-tf32": 2e-2, "bf16": 0.15}


# ---------------------------------------------------------------------------- bookkeeping
class Recorder:
    """Results, errors and progress; the JSON is rewritten (atomically) after every record."""

    def __init__(self, out: Path, budget_s: float, env: dict[str, Any]) -> None:
        self.out, self.budget_s, self.t0 = out, budget_s, time.perf_counter()
        self.data: dict[str, Any] = {"env": env, "training": [], "inference": [], "parity": [], "fits": {},
                                     "errors": [], "skipped": []}
        self.save()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def log(self, msg: str) -> None:
        sys.stderr.write(f"[gpu_check {self.elapsed():6.1f} s] {msg}\n")
        sys.stderr.flush()

    def save(self) -> None:
        self.data["env"]["seconds"] = round(self.elapsed(), 1)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_name(self.out.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=2) + "\n")
        os.replace(tmp, self.out)

    def run(self, section: str, label: str, fn: Callable[[], Any]) -> Any:
        """``fn()`` unless the time budget is spent; errors are recorded, never raised."""
        if self.elapsed() > self.budget_s:
            self.data["skipped"].append({"section": section, "what": label, "why": "time budget"})
            self.log(f"skipped (time budget): {label}")
            self.save()
            return None
        self.log(f"{section}: {label}")
        try:
            return fn()
        except Exception as exc:  # one failed measurement must not lose the others
            self.data["errors"].append({"section": section, "what": label, "error": f"{type(exc).__name__}: {exc}",
                                        "traceback": traceback.format_exc(limit=6)})
            self.log(f"ERROR in {label}: {type(exc).__name__}: {exc}")
            return None
        finally:
            self.save()


def sync_of(device: torch.device) -> Callable[[], None]:
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


def configs(cuda: bool, quick: bool) -> list[tuple[str, str]]:
    """(device, precision) pairs measured: CPU fp32 (+ bf16 on full runs), CUDA fp32 and bf16."""
    out = [("cpu", "fp32")] + ([] if quick else [("cpu", "bf16")])
    return out + ([("cuda", "fp32"), ("cuda", "bf16")] if cuda else [])


# ---------------------------------------------------------------------------- (a) training
class Autocast(nn.Module):
    """``inner`` with its forward pass under :func:`mmguard.devices.autocast` (output as float32)."""

    def __init__(self, inner: nn.Module, device: torch.device, precision: str) -> None:
        super().__init__()
        self.inner, self.device, self.precision = inner, device, precision

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.precision):
            return self.inner(x).float()


def encoder_step(device: torch.device, precision: str, batch: int, repeats: int) -> dict[str, Any]:
    torch.manual_seed(0)
    model = Autocast(encoder(1), device, precision).to(device)
    x = torch.randn(batch, 3, 64, 64, device=device)
    s = step_time(model, x, repeats, sync=sync_of(device))
    return {"what": "encoder_step", "device": device.type, "precision": precision, "batch": batch,
            "step_s": s, "samples_per_s": batch / s}


def train_throughput(splits, device: torch.device, precision: str, epochs: int) -> dict[str, Any]:
    train, val = splits.train.to(device), splits.val.to(device)  # data moved once, before timing
    sync = sync_of(device)
    with use_precision(precision):
        train_autoencoder(train, val, AutoencoderConfig(epochs=1, patience=None), seed=0)  # warm-up
        sync()
        t0 = time.perf_counter()
        _, result = train_autoencoder(train, val, AutoencoderConfig(epochs=epochs, patience=None), seed=0)
        sync()
        seconds = time.perf_counter() - t0
    return {"what": "train_autoencoder", "device": device.type, "precision": precision, "epochs": epochs,
            "train_samples": len(train), "val_samples": len(val), "seconds": seconds,
            "samples_per_s": epochs * len(train) / seconds, "final_val_loss": float(result.val_history[-1][0])}


# ---------------------------------------------------------------------------- (b) and (c)
def inference_rows(guard, name: str, device: torch.device, one, big, reps1: int, reps256: int) -> list[dict[str, Any]]:
    rows = []
    for op in ops_of(guard):
        fn = getattr(guard, op)  # public API: outputs come back on the CPU, so every call is synchronous
        lat = timed(lambda fn=fn: fn(one), reps1, warmup=max(3, reps1 // 10))
        thr = timed(lambda fn=fn: fn(big), reps256, warmup=1)
        rows.append({"guard": name, "op": op, "device": device.type, "precision": guard.precision,
                     "p50_ms": 1e3 * statistics.median(lat), "p99_ms": 1e3 * float(np.quantile(lat, 0.99)),
                     "samples_per_s": len(big) / statistics.median(thr)})
    return rows


def parity_row(name: str, mode: str, ref, other, batch) -> dict[str, Any]:
    """Differences of ``other`` against the CPU fp32 reference ``ref`` on ``batch``; ``within``: the
    scores and corrections are within the mode's tolerance (flags and predictions that differ follow
    from score differences at the threshold and are reported, not judged)."""
    diff = parity(ref, other, batch)
    tol = TOLERANCE[mode]
    worst = max([diff[k] for k in ("scores", "fixed") if k in diff], default=0.0)
    return {"guard": name, "mode": mode, "precision": other.precision, **diff, "tolerance": tol,
            "within": bool(worst <= tol)}


def set_tf32(enabled: bool) -> None:
    torch.backends.cudnn.allow_tf32 = enabled


# ---------------------------------------------------------------------------- report
def fmt(v: Any, spec: str = ",.0f") -> str:
    return NA if v is None else format(v, spec)


def markdown(data: dict[str, Any], cuda: bool) -> str:
    lines = []
    env = data["env"]
    lines.append(f"# GPU check: {env['gpu'] or 'no CUDA GPU'}; CPU {env['cpus']} cores, {env['threads']} threads; "
                 f"torch {env['torch']}; {'quick' if env['quick'] else 'full'} run, {env['seconds']} s")
    lines.append("")
    lines.append("(a) MMSSL stage-1 training throughput, samples/s")
    lines.append("")
    lines.append("| measurement | CPU fp32 | CPU bf16 | CUDA fp32 | CUDA bf16 | CUDA fp32 / CPU fp32 | "
                 "CUDA bf16 / CPU fp32 |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|")
    for what in ("encoder_step", "train_autoencoder"):
        got = {(r["device"], r["precision"]): r["samples_per_s"] for r in data["training"] if r["what"] == what}
        cpu = got.get(("cpu", "fp32"))
        cells = [got.get(k) for k in (("cpu", "fp32"), ("cpu", "bf16"), ("cuda", "fp32"), ("cuda", "bf16"))]
        ratios = [None if (c is None or cpu is None) else c / cpu for c in cells[2:]]
        lines.append(f"| {what} | " + " | ".join(fmt(c) for c in cells) + " | "
                     + " | ".join(NA if r is None else f"{r:.1f}x" for r in ratios) + " |")
    lines.append("")
    lines.append("(b) inference: latency at batch 1 (p50 / p99 ms) and throughput at batch 256 (samples/s)")
    lines.append("")
    lines.append("| guard | op | CPU p50 / p99 | CPU @256 | CUDA fp32 p50 / p99 | CUDA fp32 @256 | "
                 "CUDA bf16 p50 / p99 | CUDA bf16 @256 | CUDA fp32 / CPU @256 |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    keys = sorted({(r["guard"], r["op"]) for r in data["inference"]})
    for g, op in keys:
        rows = [r for r in data["inference"] if (r["guard"], r["op"]) == (g, op)]

        def pick(dev: str, bf16: bool, rows=rows) -> dict[str, Any] | None:
            for r in rows:
                if r["device"] == dev and r.get("requested", r["precision"]) == ("bf16" if bf16 else "fp32"):
                    return r
            return None

        c, f, b = pick("cpu", False), pick("cuda", False), pick("cuda", True)

        def lat(r):
            return NA if r is None else f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f}"

        def tput(r):
            return NA if r is None else f"{r['samples_per_s']:,.0f}"

        ratio = NA if (c is None or f is None) else f"{f['samples_per_s'] / c['samples_per_s']:.1f}x"
        lines.append(f"| {g} | {op} | {lat(c)} | {tput(c)} | {lat(f)} | {tput(f)} | {lat(b)} | {tput(b)} | {ratio} |")
    lines.append("")
    lines.append("(c) parity against CPU fp32 (max abs difference; scores normalised, 1.0 = threshold; "
                 "corrections in raw units)")
    lines.append("")
    lines.append("| guard | compared | scores | corrections | flags differing | predictions differing | "
                 "tolerance | within |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---|")
    labels = {"bf16-cpu": "CPU bf16", "fp32-tf32": "CUDA fp32 (PyTorch default: TF32 convolutions)",
              "fp32-strict": "CUDA fp32 (TF32 off)", "bf16": "CUDA bf16"}
    for g in sorted(data["fits"]):
        for label, mode in (("bf16-cpu", "bf16"), ("fp32-tf32", "fp32-tf32"), ("fp32-strict", "fp32-strict"),
                            ("bf16", "bf16")):
            r = next((r for r in data["parity"] if r["guard"] == g and r["label"] == label), None)
            if r is None:
                if not cuda and label != "bf16-cpu":
                    lines.append(f"| {g} | {labels[label]} | {NA} | {NA} | {NA} | {NA} | {TOLERANCE[mode]:g} | {NA} |")
                continue
            sc = f"{r['scores']:.2e}" if "scores" in r else "-"
            fx = f"{r['fixed']:.2e}" if "fixed" in r else "-"
            fl = f"{r['flags_differing']:.0f}" if "flags_differing" in r else "-"
            pr = f"{r['prediction_mismatches']:.0f}" if "prediction_mismatches" in r else "-"
            note = "" if r["precision"] == r["requested"] else f" (guard keeps {r['precision']})"
            lines.append(f"| {g} | {labels[label]}{note} | {sc} | {fx} | {fl} | {pr} | {r['tolerance']:g} | "
                         f"{'yes' if r['within'] else 'NO'} |")
    if data["errors"]:
        lines.append("")
        lines.append("errors: " + "; ".join(f"{e['what']}: {e['error']}" for e in data["errors"]))
    if data["skipped"]:
        lines.append("")
        lines.append("skipped (time budget): " + ", ".join(s["what"] for s in data["skipped"]))
    return "\n".join(lines)


# ---------------------------------------------------------------------------- sections
def section_training(rec: Recorder, devices: dict[str, torch.device], cuda: bool, quick: bool, epochs: int,
                     enc_batch: int, episodes: int | None) -> None:
    """(a): the encoder step and stage-1 training per (device, precision)."""
    data = twin_like(episodes=12, steps=20) if quick else twin_like(episodes=episodes or 40, steps=50)
    splits = make_splits(data, seed=0).standardize()
    for dev, prec in configs(cuda, quick):
        row = rec.run("training", f"encoder step {dev} {prec} (batch {enc_batch})",
                      lambda dev=dev, prec=prec: encoder_step(devices[dev], prec, enc_batch, 2 if quick else 5))
        if row:
            rec.data["training"].append(row)
            rec.log(f"  {row['samples_per_s']:,.0f} samples/s")
        row = rec.run("training", f"train_autoencoder {dev} {prec} ({epochs} epochs x {len(splits.train)} samples)",
                      lambda dev=dev, prec=prec: train_throughput(splits, devices[dev], prec, epochs))
        if row:
            rec.data["training"].append(row)
            rec.log(f"  {row['samples_per_s']:,.0f} samples/s")


def section_guards(rec: Recorder, devices: dict[str, torch.device], cuda: bool, quick: bool, names: list[str],
                   reps1: int, reps256: int) -> None:
    """(b) and (c): each guard fitted once on the CPU (quick settings), saved, loaded on every device."""
    data = twin_like()
    splits = make_splits(data, seed=0)
    test = apply_faults(splits.test, training_spec(splits.test), seed=1)
    one, big = test.select(slice(0, 1)), test.select(torch.arange(256) % len(test))
    tf32_default = bool(torch.backends.cudnn.allow_tf32)
    parity_modes = {("cpu", "bf16"): ["bf16-cpu"], ("cuda", "fp32"): ["fp32-tf32", "fp32-strict"],
                    ("cuda", "bf16"): ["bf16"]}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            def fit(name: str = name) -> Path:
                t0 = time.perf_counter()
                guard = create_guard(name, {"drift": None}, quick=True)
                guard.fit(splits, seed=0)
                rec.data["fits"][name] = {"fit_s": round(time.perf_counter() - t0, 2)}
                return guard.save(Path(tmp) / name)

            path = rec.run("fit", f"{name}: quick fit on the CPU", fit)
            if path is None:
                continue
            ref = load_guard(path)  # CPU fp32: the reference of every parity row
            # quick runs time CPU fp32 only, and check CPU bf16 parity
            for dev, prec in configs(cuda, quick) + ([("cpu", "bf16")] if quick else []):

                def measure(name: str = name, dev: str = dev, prec: str = prec, path: Path = path,
                            ref=ref) -> None:
                    guard = load_guard(path, device=dev, precision=prec)
                    if not (quick and dev == "cpu" and prec == "bf16"):
                        for r in inference_rows(guard, name, devices[dev], one, big, reps1, reps256):
                            rec.data["inference"].append({**r, "requested": prec})
                    for label in parity_modes.get((dev, prec), []):
                        if dev == "cuda":
                            set_tf32(label != "fp32-strict" and tf32_default)
                        try:
                            row = parity_row(name, "bf16" if label == "bf16-cpu" else label, ref, guard, test)
                        finally:
                            if dev == "cuda":
                                set_tf32(tf32_default)
                        rec.data["parity"].append({**row, "label": label, "device": dev, "requested": prec})
                        rec.log(f"  parity {label}: " + ", ".join(f"{k} {row[k]:.2e}" for k in ("scores", "fixed")
                                                                  if k in row))

                rec.run("inference", f"{name} on {dev} {prec}", measure)
            if cuda:
                torch.cuda.empty_cache()


# ---------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke-test sizes (< 60 s on 2 CPU cores)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results (rewritten after every measurement)")
    ap.add_argument("--guards", default="", help="comma-separated guard names (default: every registered guard)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--epochs", type=int, default=None, help="timed stage-1 epochs (default 3; quick 1)")
    ap.add_argument("--episodes", type=int, default=None, help="training data: episodes x 50 steps (default 40; "
                                                               "quick: 12 x 20)")
    ap.add_argument("--encoder-batch", type=int, default=None, help="encoder step batch (default 128; quick 32)")
    ap.add_argument("--reps1", type=int, default=None, help="timed batch-1 calls (default 100; quick 10)")
    ap.add_argument("--reps256", type=int, default=None, help="timed batch-256 calls (default 5; quick 2)")
    ap.add_argument("--budget-s", type=float, default=420.0, help="start nothing after this many seconds")
    args = ap.parse_args()
    q = args.quick
    epochs = args.epochs or (1 if q else 3)
    enc_batch = args.encoder_batch or (32 if q else 128)
    reps1, reps256 = args.reps1 or (10 if q else 100), args.reps256 or (2 if q else 5)
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "mmguard": mmguard.__version__, "machine": platform.machine(), "cpus": os.cpu_count(),
           "threads": torch.get_num_threads(), "gpu": torch.cuda.get_device_name(0) if cuda else None,
           "quick": q, "load_before": [round(v, 2) for v in os.getloadavg()],
           "cudnn_allow_tf32_default": bool(torch.backends.cudnn.allow_tf32), "tolerance": TOLERANCE}
    rec = Recorder(args.out, args.budget_s, env)
    rec.log(f"CUDA: {env['gpu'] or 'not available (GPU columns: n/a)'}; torch {torch.__version__}; "
            f"{env['threads']} CPU threads; results -> {args.out}")
    devices = {"cpu": torch.device("cpu"), "cuda": torch.device("cuda")}

    section_training(rec, devices, cuda, q, epochs, enc_batch, args.episodes)
    if cuda:
        torch.cuda.empty_cache()
    section_guards(rec, devices, cuda, q, [g for g in args.guards.split(",") if g] or list(available_guards()),
                   reps1, reps256)
    rec.data["env"]["load_after"] = [round(v, 2) for v in os.getloadavg()]
    rec.save()
    sys.stdout.write(markdown(rec.data, cuda) + "\n")
    sys.stdout.flush()
    rec.log(f"done; JSON in {args.out}")
    return 1 if rec.data["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
