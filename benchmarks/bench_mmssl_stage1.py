"""Why MMSSL's stage 1 trains one autoencoder at a time: grouped-convolution ensemble vs sequential.

Times one forward+backward of the camera encoder (Conv2d k4 s2: 3→16→32→64 channels, 64×64
images, batch 128) for G members, (a) as G sequential models and (b) as one grouped
convolution (groups=G) — the way a batched ensemble of convolutional members would run — on
one thread, in the same process. Writes benchmarks/results/mmssl_stage1.json.

    .venv/bin/python benchmarks/bench_mmssl_stage1.py [--members 4] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn


def encoder(groups: int) -> nn.Module:
    g = groups
    return nn.Sequential(
        nn.Conv2d(3 * g, 16 * g, 4, 2, 1, groups=g),
        nn.ReLU(),
        nn.Conv2d(16 * g, 32 * g, 4, 2, 1, groups=g),
        nn.ReLU(),
        nn.Conv2d(32 * g, 64 * g, 4, 2, 1, groups=g),
    )


def step_time(model: nn.Module, x: torch.Tensor, repeats: int, sync: Callable[[], None] | None = None) -> float:
    """Fastest of ``repeats`` forward+backward passes (after 2 warm-ups); ``sync`` waits for an
    asynchronous device (``torch.cuda.synchronize``) before each clock reading."""
    wait = sync or (lambda: None)
    for _ in range(2):  # warm-up
        model(x).sum().backward()
    best = float("inf")
    for _ in range(repeats):
        wait()
        t0 = time.perf_counter()
        model(x).sum().backward()
        wait()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--members", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "mmssl_stage1.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    g = args.members
    single = step_time(encoder(1), torch.randn(args.batch, 3, 64, 64), args.repeats)
    grouped = step_time(encoder(g), torch.randn(args.batch, 3 * g, 64, 64), args.repeats)
    res = {
        "members": g,
        "batch": args.batch,
        "threads": 1,
        "single_member_s": single,
        "sequential_s": g * single,
        "grouped_s": grouped,
        "grouped_over_sequential": grouped / (g * single),
        "torch": torch.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
