"""Data-parallel parity and speed of MMSSL's stage 1 (issue #13 part 2; docs/distributed.md).

The real stage-1 multimodal autoencoder (``AutoencoderConfig()`` defaults except ``--epochs``) on a
twin-shaped random dataset (camera 3x64x64 + 31-d kinematics; ``--train`` 4,200 / ``--val`` 900
samples, the protocol's split sizes), trained by ``mmguard.mmssl.stages.train_autoencoder``:

* **single** — this process, ``--threads`` intra-op threads (default 1);
* **ddp** — ``--nproc`` processes (gloo, CPU), ``--threads`` threads each, started by
  :func:`mmguard.train.distributed.launch`; every rank builds the same data from ``--seed``.

Reported: per-epoch and best validation loss of both, their largest relative difference (the
issue's target: < 1 %), the largest parameter difference, the wall time of each (the ddp one with and
without process start-up) and the speed ratio single / ddp. ``--dae`` trains the denoising baseline
instead (corruption drawn for the whole split each epoch).

``--compare-reducers`` also times one training step (``--steps`` steps, minibatch ``--batch``) in the
``--nproc`` processes three ways: no gradient exchange (a lower bound), the loop's exchange (one
flat, shard-weighted ``all_reduce`` after backward: :func:`mmguard.train.distributed.reduce_gradients`)
and :class:`torch.nn.parallel.DistributedDataParallel` (bucketed ``all_reduce`` overlapped with
backward), to back the choice documented in :mod:`mmguard.train.distributed`.

    .venv/bin/python benchmarks/ddp_parity.py --epochs 3 --out benchmarks/results/ddp_parity.json
    .venv/bin/python benchmarks/ddp_parity.py --train 200 --val 60 --epochs 1 --compare-reducers --steps 3  # smoke
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmguard.data.model import MultimodalBatch
from mmguard.faults.scenarios import training_spec
from mmguard.mmssl.autoencoder import MultimodalAutoencoder
from mmguard.mmssl.config import AutoencoderConfig
from mmguard.mmssl.losses import reconstruction_loss
from mmguard.mmssl.stages import train_autoencoder
from mmguard.train import distributed

SHAPES = {"camera": (3, 64, 64), "kinematics": (31,)}


def twin_shaped(n: int, seed: int) -> MultimodalBatch:
    """``n`` random samples with the arm twin's modality shapes (standard normal, like standardised data)."""
    g = torch.Generator().manual_seed(seed)
    mods = {k: torch.randn(n, *s, generator=g) for k, s in SHAPES.items()}
    return MultimodalBatch.from_arrays(mods, kinds={"camera": "image", "kinematics": "vector"})


def splits(n_train: int, n_val: int, seed: int) -> tuple[MultimodalBatch, MultimodalBatch]:
    data = twin_shaped(n_train + n_val, seed)
    return data.select(torch.arange(n_train)), data.select(torch.arange(n_train, n_train + n_val))


def train_once(n_train: int, n_val: int, epochs: int, seed: int, dae: bool) -> dict[str, Any]:
    """One stage-1 (or DAE) training in this process or rank: validation history, weights, seconds."""
    train, val = splits(n_train, n_val, seed)
    cfg = AutoencoderConfig(epochs=epochs)
    t0 = time.perf_counter()
    ae, res = train_autoencoder(train, val, cfg, seed=seed, denoise_spec=training_spec(train) if dae else None)
    seconds = time.perf_counter() - t0
    return {"val_history": [float(v[0]) for v in res.val_history], "best_val": float(res.best_val[0]),
            "best_epoch": int(res.best_epoch[0]), "train_s": seconds,
            "state": {k: v.clone() for k, v in ae.state_dict().items()}}


class _LossModule(nn.Module):
    """The autoencoder with its loss as ``forward``: what DDP needs to see."""

    def __init__(self, ae: MultimodalAutoencoder) -> None:
        super().__init__()
        self.ae = ae

    def forward(self, xs: dict[str, torch.Tensor]) -> torch.Tensor:
        return reconstruction_loss(self.ae(xs), xs)


def reducer_timings(batch_size: int, steps: int, seed: int) -> dict[str, float]:
    """Milliseconds per training step (this rank's shard of a ``batch_size`` minibatch) without gradient
    exchange, with the loop's flat all-reduce, and with DDP."""
    from torch.nn.parallel import DistributedDataParallel

    rank, world = distributed.world()
    lo, hi = distributed.shard_bounds(batch_size, rank, world)
    data = twin_shaped(batch_size, seed)
    xs = {k: v[lo:hi] for k, v in data.modalities.items()}
    out: dict[str, float] = {}
    for mode in ("local", "allreduce", "ddp"):
        torch.manual_seed(seed)
        model: nn.Module = _LossModule(MultimodalAutoencoder(data.specs, AutoencoderConfig()))
        params = list(model.parameters())
        if mode == "ddp":
            model = DistributedDataParallel(model)
        opt = torch.optim.Adam(params, lr=1e-3)

        def step(model: nn.Module = model, opt: torch.optim.Optimizer = opt, mode: str = mode,
                 params: list[nn.Parameter] = params) -> None:
            opt.zero_grad(set_to_none=True)
            loss = model(xs)
            loss.backward()
            if mode == "allreduce":
                distributed.reduce_gradients(params, (hi - lo) / batch_size, loss.detach().reshape(1))
            opt.step()

        step()  # warm-up
        torch.distributed.barrier()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        torch.distributed.barrier()
        out[f"{mode}_ms_per_step"] = (time.perf_counter() - t0) / steps * 1000
    return out


def rank_job(n_train: int, n_val: int, epochs: int, seed: int, dae: bool, compare: bool, batch: int,
             steps: int) -> dict[str, Any]:
    """What every rank runs; rank 0's result is returned by ``launch``."""
    t0 = time.perf_counter()
    result = train_once(n_train, n_val, epochs, seed, dae)
    result["rank_wall_s"] = time.perf_counter() - t0
    if compare:
        result["reducers"] = reducer_timings(batch, steps, seed)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", type=int, default=4200)
    ap.add_argument("--val", type=int, default=900)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads of the single run and of each rank")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dae", action="store_true", help="train the denoising baseline instead of the MMAE")
    ap.add_argument("--compare-reducers", action="store_true")
    ap.add_argument("--batch", type=int, default=64, help="minibatch of --compare-reducers")
    ap.add_argument("--steps", type=int, default=20, help="timed steps of --compare-reducers")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    single = train_once(args.train, args.val, args.epochs, args.seed, args.dae)
    single_wall = time.perf_counter() - t0
    t0 = time.perf_counter()
    ddp = distributed.launch(rank_job, args.nproc, (args.train, args.val, args.epochs, args.seed, args.dae,
                                                    args.compare_reducers, args.batch, args.steps),
                             threads=args.threads)
    ddp_wall = time.perf_counter() - t0
    one, two = torch.tensor(single["val_history"]), torch.tensor(ddp["val_history"])
    rel = ((two - one).abs() / one.abs()).max().item()
    param_diff = max(float((ddp["state"][k] - v).abs().max()) for k, v in single["state"].items())
    report = {
        "model": "stage-1 MMAE" if not args.dae else "DAE", "shapes": {k: list(s) for k, s in SHAPES.items()},
        "train": args.train, "val": args.val, "epochs": args.epochs, "nproc": args.nproc, "threads": args.threads,
        "seed": args.seed,
        "single": {k: single[k] for k in ("val_history", "best_val", "best_epoch")} | {"wall_s": single_wall},
        "ddp": {k: ddp[k] for k in ("val_history", "best_val", "best_epoch")}
        | {"wall_s": ddp_wall, "train_s_rank0": ddp["train_s"]},
        "best_val_relative_difference": abs(ddp["best_val"] - single["best_val"]) / abs(single["best_val"]),
        "max_epoch_val_relative_difference": rel,
        "max_parameter_difference": param_diff,
        "speed_ratio_wall": single_wall / ddp_wall,
        "speed_ratio_training": single["train_s"] / ddp["train_s"],
        "within_1_percent": rel < 0.01,
        "torch": torch.__version__, "platform": platform.platform(),
    }
    if "reducers" in ddp:
        report["reducers_ms_per_step"] = ddp["reducers"] | {"batch": args.batch, "steps": args.steps}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
