"""EMMA stage-2 training throughput on one CPU thread: per-sample reference vs batched ensemble.

Measures, in one run and on HTRU2-shaped data (2 modalities x 4 features, batch 32):

(a) :class:`mmguard.emma.reference.ReferenceEmmaTrainer` — the naive per-sample trainer
    (loops over samples, hidden units and modality pairs; the baseline);
(b) the vectorized :class:`mmguard.emma.network.EmmaNetwork` with one member (G = 1);
(c) the same network as a batched ensemble of G = 125 and G = 625 members (the 125
    configurations x 5 seeds of Experiment II, thesis table 6.2) — member-samples/s.

One training step is what :func:`mmguard.train.loop.train_ensemble` does per minibatch in
``train_with``: gather each member's minibatch from its seed stream, forward (potentials eq.
4.7 → attention eqs. 5.1-5.5 → gated MLP 8-8-4-1), eq. 5.10, backward, Adam, projection.
Stage-1 autoencoders are frozen (random weights here: their values do not change the cost).
Validation passes are not timed. Every variant gets warm-up steps, then a fixed number of
timed steps, repeated; the best repeat counts (the least disturbed by other processes).

Data: synthetic standard-normal features with ~9 % positive labels (HTRU2's ratio) and
the thesis's corruption schedule (section 6.3.1: 50 % clean, 25 % IP, 25 % DM corrupted by
Gaussian noise sigma 0.5), or the real, standardized HTRU2 training split when
``MMGUARD_DATA_DIR`` points at a folder holding ``htru2/pulsar.csv``.

Usage::

    .venv/bin/python benchmarks/bench_emma_throughput.py [--steps N] [--quick] [--out PATH]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from mmguard.emma.attention import EmmaAttention
from mmguard.emma.losses import class_weights, emma_objective
from mmguard.emma.network import ConcatPredictor, EmmaNetwork
from mmguard.emma.potential import TiedDAE
from mmguard.emma.reference import ReferenceEmmaTrainer
from mmguard.experiments.emma.config import GRID_AXIS, RHO_AXIS
from mmguard.train.ensemble import EnsembleMLP, member_generator
from mmguard.train.loop import gather_stream_batch

BATCH = 32
NUM_SEEDS = 5  # streams: one corruption draw per seed
TRAIN_ROWS = 11_992  # thesis table 6.1
GRID = {"configs": 125, "seeds": 5, "epochs": 35, "steps_per_epoch": 375}  # 11,992 / 32 -> 375 steps
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "emma_throughput.json"


# ----------------------------------------------------------------------------------- data


def base_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(N, 8) features and (N,) labels: real HTRU2 train split if MMGUARD_DATA_DIR is set, else synthetic."""
    if os.environ.get("MMGUARD_DATA_DIR", "").strip():
        from mmguard.data.htru2 import htru2_splits

        train = htru2_splits(seed=seed).standardize().train
        x = torch.cat([train.modalities["ip"], train.modalities["dm"]], dim=1).float()
        return x, train.target.long(), "htru2"
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(TRAIN_ROWS, 8, generator=gen)
    y = (torch.rand(TRAIN_ROWS, generator=gen) < 0.0916).long()
    return x, y, "synthetic"


def corrupted_streams(x: torch.Tensor, y: torch.Tensor, seeds: list[int], sigma: float = 0.5) -> dict:
    """One stream per seed: 50 % clean, 25 % IP and 25 % DM corrupted with N(0, sigma^2) noise."""
    n = x.shape[0]
    m0, m1, masks = [], [], []
    for s in seeds:
        gen = member_generator(s, 31)
        kind = torch.randperm(n, generator=gen) % 4  # 0, 1: clean; 2: IP; 3: DM
        mask = torch.stack([kind == 2, kind == 3], dim=1)
        noise = torch.randn(n, 8, generator=gen) * sigma
        xs = x + noise * torch.repeat_interleave(mask, 4, dim=1)
        m0.append(xs[:, :4])
        m1.append(xs[:, 4:])
        masks.append(mask)
    return {"m0": torch.stack(m0), "m1": torch.stack(m1), "y": y.expand(len(seeds), -1).clone(),
            "mask": torch.stack(masks)}


# --------------------------------------------------------------------------------- models


def grid_hyper(g: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """member_stream, rho, lambda_c, lambda_e for G members (member = config * S + seed)."""
    configs = list(itertools.product(RHO_AXIS, GRID_AXIS, GRID_AXIS))
    member_stream = torch.arange(g) % NUM_SEEDS
    cfg = torch.tensor([configs[(i // NUM_SEEDS) % len(configs)] for i in range(g)], dtype=torch.float32)
    if g == 1:  # the thesis's selected configuration (rho 1e-4, lambda_c 1e-3, lambda_e 1e-2)
        cfg = torch.tensor([[1e-4, 1e-3, 1e-2]])
    return member_stream, cfg[:, 0], cfg[:, 1], cfg[:, 2]


def build_network(g: int, streams: dict) -> tuple[EmmaNetwork, torch.Tensor, torch.Tensor, torch.Tensor]:
    member_stream, rho, lambda_c, lambda_e = grid_hyper(g)
    seeds = member_stream.tolist()
    daes = []
    for i, key in enumerate(("m0", "m1")):
        dae = TiedDAE(seeds, 4, 12, stream=11 + i)
        with torch.no_grad():
            dae.psi_min.copy_(dae.potential(streams[key][member_stream, :2048]).amin(1))
        daes.append(dae)
    net = EmmaNetwork(daes, EmmaAttention(g, 2, rho), ConcatPredictor(EnsembleMLP(seeds, [8, 8, 4, 1])))
    return net, member_stream, lambda_c, lambda_e


# ------------------------------------------------------------------------------- stepping


def vectorized_stepper(g: int, streams: dict, weights: torch.Tensor) -> Callable[[int], None]:
    """A closure doing training step ``t`` of the G-member ensemble (the train_ensemble inner loop)."""
    net, member_stream, lambda_c, lambda_e = build_network(g, streams)
    att = net.attention
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    n = streams["y"].shape[1]
    orders = torch.stack([torch.randperm(n, generator=member_generator(s, 7)) for s in range(NUM_SEEDS)])

    def step(t: int) -> None:
        start = (t * BATCH) % (n - BATCH)
        batch = gather_stream_batch(streams, member_stream, orders[:, start:start + BATCH])
        logits, out = net([batch["m0"], batch["m1"]])
        loss = emma_objective(logits, batch["y"], weights, out, batch["mask"], att.g_a, att.b_a,
                              lambda_c, lambda_e)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
        att.project_()

    return step


def reference_stepper(streams: dict, weights: torch.Tensor) -> Callable[[int], None]:
    net, _, lambda_c, lambda_e = build_network(1, streams)
    ref = ReferenceEmmaTrainer.from_network(net, 0, lambda_c=float(lambda_c[0]), lambda_e=float(lambda_e[0]),
                                            class_weights=weights.tolist(), lr=1e-3)
    n = streams["y"].shape[1]
    order = torch.randperm(n, generator=member_generator(0, 7))

    def step(t: int) -> None:
        start = (t * BATCH) % (n - BATCH)
        idx = order[start:start + BATCH]
        xs = [streams["m0"][0, idx], streams["m1"][0, idx]]
        ref.step(xs, streams["y"][0, idx], streams["mask"][0, idx])

    return step


def measure(step: Callable[[int], None], warmup: int, steps: int, repeats: int) -> dict:
    """Best of ``repeats`` timings of ``steps`` consecutive steps after ``warmup`` steps."""
    for t in range(warmup):
        step(t)
    walls, cpus = [], []
    t0 = warmup
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        for t in range(t0, t0 + steps):
            step(t)
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
        t0 += steps
    best = min(range(repeats), key=lambda i: walls[i])
    return {"steps": steps, "repeats": repeats, "wall_s": walls[best], "cpu_s": cpus[best],
            "wall_s_all": [round(v, 4) for v in walls], "step_ms": 1e3 * walls[best] / steps}


# ----------------------------------------------------------------------------------- main


def fmt_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per repeat for the vectorized variants (default 200; quick: 20); "
                             "the reference runs a quarter of them (at least 3)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repeats, the best counts (default 3; quick: 1)")
    parser.add_argument("--quick", action="store_true", help="a few seconds: fewer steps and one repeat")
    parser.add_argument("--groups", type=int, nargs="+", default=[125, 625], help="ensemble sizes for (c)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)

    steps = args.steps or (20 if args.quick else 200)
    repeats = args.repeats or (1 if args.quick else 3)
    ref_steps = max(3, steps // 4)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    load_before = os.getloadavg()

    x, y, source = base_data()
    streams = corrupted_streams(x, y, list(range(NUM_SEEDS)))
    weights = class_weights(y, 2)
    print(f"data: {source}, {x.shape[0]} rows x 2 modalities x 4 features, batch {BATCH}, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}", flush=True)

    rows = []
    res = measure(reference_stepper(streams, weights), warmup=2, steps=ref_steps, repeats=repeats)
    rows.append({"variant": "reference per-sample (a)", "G": 1, **res})
    print(f"  (a) reference: {res['step_ms']:.1f} ms/step", flush=True)
    for g in [1, *args.groups]:
        res = measure(vectorized_stepper(g, streams, weights), warmup=5, steps=steps, repeats=repeats)
        name = "vectorized G=1 (b)" if g == 1 else f"batched ensemble G={g} (c)"
        rows.append({"variant": name, "G": g, **res})
        print(f"  {name}: {res['step_ms']:.2f} ms/step", flush=True)
    for r in rows:
        r["member_samples_per_s"] = r["G"] * BATCH * r["steps"] / r["wall_s"]
        # per CPU-second: less sensitive to other processes on the machine (one thread)
        r["member_samples_per_cpu_s"] = r["G"] * BATCH * r["steps"] / max(r["cpu_s"], 1e-9)
        r["samples_per_s_per_member"] = BATCH * r["steps"] / r["wall_s"]

    base = rows[0]["member_samples_per_s"]
    print()
    base_cpu = rows[0]["member_samples_per_cpu_s"]
    header = ("variant", "G", "ms/step", "member-samples/s", "x reference", "cpu/wall", "x ref (cpu)")
    print(f"{header[0]:<28}{header[1]:>5}{header[2]:>10}{header[3]:>18}{header[4]:>13}{header[5]:>10}"
          f"{header[6]:>13}")
    for r in rows:
        r["speedup_vs_reference"] = r["member_samples_per_s"] / base
        r["speedup_vs_reference_cpu"] = r["member_samples_per_cpu_s"] / base_cpu
        print(f"{r['variant']:<28}{r['G']:>5}{r['step_ms']:>10.2f}{r['member_samples_per_s']:>18,.0f}"
              f"{r['speedup_vs_reference']:>13,.1f}{r['cpu_s'] / r['wall_s']:>10.2f}"
              f"{r['speedup_vs_reference_cpu']:>13,.1f}")

    total = GRID["configs"] * GRID["seeds"] * GRID["epochs"] * GRID["steps_per_epoch"] * BATCH
    estimates = {r["variant"]: total / r["member_samples_per_s"] for r in rows}
    print(f"\nExperiment II grid ({GRID['configs']} configs x {GRID['seeds']} seeds x {GRID['epochs']} epochs"
          f" x {GRID['steps_per_epoch']} steps x batch {BATCH} = {total:,} member-samples),"
          " training steps only:")
    for name, sec in estimates.items():
        print(f"  {name:<30} {fmt_duration(sec):>12}")

    report = {
        "benchmark": "emma_stage2_training_throughput",
        "data": source,
        "batch_size": BATCH,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_before": [round(v, 2) for v in load_before],
                    "loadavg_after": [round(v, 2) for v in os.getloadavg()]},
        "quick": bool(args.quick),
        "results": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in rows],
        "ratios": {f"{r['variant']} / reference": round(r["speedup_vs_reference"], 2) for r in rows[1:]},
        "experiment_ii_grid": {**GRID, "batch_size": BATCH, "member_samples": total,
                               "estimated_s": {k: round(v, 1) for k, v in estimates.items()}},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
