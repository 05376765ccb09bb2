"""How close MMSSL's stage-1 training comes to the machine's matmul peak (issue #14, "Speed").

One process, one thread (``--threads``), everything measured in the same run:

* **peak** — a float32 matrix multiply (``--matmul`` square, best of ``--repeats``): GFLOP/s;
* **FLOPs per training sample** — ``torch.utils.flop_counter.FlopCounterMode`` over one forward +
  backward pass of the stage-1 multimodal autoencoder (the arm twin's shapes: camera 3x64x64 and 31
  kinematic channels, ``AutoencoderConfig()`` defaults) divided by the batch size;
* **training-step variants** (forward, MSE loss, backward, Adam step; best of ``--repeats`` timings of
  ``--steps`` steps after warm-up), each as samples/s, GFLOP/s and the fraction of the peak:
  ``eager`` at the training batch (64, the reference; the image decoder runs on channels-last
  activations, ``mmguard.mmssl.autoencoder.CHANNELS_LAST_DECODER``), ``nchw_decoder`` (the decoder on
  the default NCHW layout, as before that switch), ``channels_last`` (the whole model NHWC),
  ``foreach_adam`` / ``fused_adam`` (multi-tensor or fused Adam instead of torch's per-parameter CPU default),
  ``compiled`` (``torch.compile``, inductor; ``--no-compile`` skips it), and eager at larger batches
  (a hyperparameter: shown for the ceiling, not used by the protocol);
* **inference** — the autoencoder's forward pass at batch 256 with the image decoder on NCHW and on
  channels-last activations (interleaved, twice each);
* **the training loop itself** — ``mmguard.mmssl.stages.train_autoencoder`` for ``--epochs`` epochs on
  4,200 random twin-shaped samples (the protocol's training split size), validation passes included.

    .venv/bin/python benchmarks/stage1_flops.py [--out benchmarks/results/stage1_flops.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from mmguard.data.model import MultimodalBatch
from mmguard.mmssl import autoencoder
from mmguard.mmssl.autoencoder import MultimodalAutoencoder
from mmguard.mmssl.config import AutoencoderConfig
from mmguard.mmssl.stages import train_autoencoder

SHAPES = {"camera": (3, 64, 64), "kinematics": (31,)}


def twin_like(n: int, seed: int = 0) -> MultimodalBatch:
    g = torch.Generator().manual_seed(seed)
    mods = {k: torch.randn(n, *s, generator=g).numpy() for k, s in SHAPES.items()}
    return MultimodalBatch.from_arrays(mods, kinds={"camera": "image", "kinematics": "vector"})


def best_time(fn: Callable[[], None], repeats: int) -> float:
    fn()  # warm-up (and compilation)
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_gflops(n: int, repeats: int) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / best_time(lambda: torch.mm(a, b), repeats) / 1e9


def step_fn(model: MultimodalAutoencoder, batch: dict[str, torch.Tensor], *, compiled: bool = False,
            adam: str = "loop") -> Callable[[], None]:
    """One training step; ``adam``: the training loop's default per-parameter ``loop`` (torch's CPU
    default), ``foreach`` (multi-tensor) or ``fused`` (one kernel)."""
    kw = {"foreach": True} if adam == "foreach" else ({"fused": True} if adam == "fused" else {"foreach": False})
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, **kw)

    def loss_of(xs: dict[str, torch.Tensor]) -> torch.Tensor:
        recon = model(xs)
        return sum(((recon[k] - xs[k]) ** 2).mean() for k in xs)  # type: ignore[return-value]

    loss = torch.compile(loss_of) if compiled else loss_of

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss(batch).backward()
        opt.step()

    return step


def flops_per_sample(model: MultimodalAutoencoder, batch: dict[str, torch.Tensor]) -> float:
    with FlopCounterMode(display=False) as counter:
        recon = model(batch)
        sum(((recon[k] - batch[k]) ** 2).mean() for k in batch).backward()  # type: ignore[union-attr]
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / next(iter(batch.values())).shape[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20, help="training steps per timing")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--matmul", type=int, default=2048)
    ap.add_argument("--epochs", type=int, default=2, help="epochs of the real training loop")
    ap.add_argument("--loop-samples", type=int, default=4200, help="training samples of the real loop")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "stage1_flops.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = AutoencoderConfig()
    data = twin_like(max(256, cfg.batch_size))
    specs = data.specs

    peak = matmul_gflops(args.matmul, args.repeats)
    model = MultimodalAutoencoder(specs, cfg)
    per_sample = flops_per_sample(model, {k: v[: cfg.batch_size] for k, v in data.modalities.items()})

    def measure(label: str, batch_size: int, *, channels_last: bool = False, compiled: bool = False,
                adam: str = "loop", nchw_decoder: bool = False) -> dict:
        autoencoder.CHANNELS_LAST_DECODER = not nchw_decoder
        torch.manual_seed(0)
        m = MultimodalAutoencoder(specs, cfg)
        xs = {k: v[:batch_size].clone() for k, v in data.modalities.items()}
        if channels_last:
            m = m.to(memory_format=torch.channels_last)
            xs["camera"] = xs["camera"].contiguous(memory_format=torch.channels_last)
        step = step_fn(m, xs, compiled=compiled, adam=adam)
        t = best_time(lambda: [step() for _ in range(args.steps)], args.repeats) / args.steps
        sps = batch_size / t
        row = {"variant": label, "batch": batch_size, "ms_per_step": 1e3 * t, "samples_per_s": sps,
               "gflops": sps * per_sample / 1e9, "peak_fraction": sps * per_sample / 1e9 / peak}
        print(f"{label:<22} batch {batch_size:>4}: {sps:8.0f} samples/s  {row['gflops']:6.1f} GFLOP/s  "
              f"{100 * row['peak_fraction']:5.1f} % of peak", flush=True)
        autoencoder.CHANNELS_LAST_DECODER = True
        return row

    print(f"matmul peak {peak:.1f} GFLOP/s ({args.threads} thread(s)); {per_sample / 1e6:.1f} MFLOP per "
          "training sample (forward + backward)", flush=True)
    rows = [measure("eager", cfg.batch_size), measure("nchw_decoder", cfg.batch_size, nchw_decoder=True),
            measure("channels_last", cfg.batch_size),
            measure("foreach_adam", cfg.batch_size, adam="foreach"),
            measure("fused_adam", cfg.batch_size, adam="fused")]
    if not args.no_compile:
        try:
            rows.append(measure("compiled", cfg.batch_size, compiled=True))
        except Exception as exc:  # no C++ toolchain for inductor, etc.: recorded, not fatal
            rows.append({"variant": "compiled", "error": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"})
            print(f"compiled: not available ({rows[-1]['error']})")
    rows += [measure("eager", b) for b in (128, 256)]

    inference = []
    torch.manual_seed(0)
    net = MultimodalAutoencoder(specs, cfg).eval()
    big = {k: v[:256] for k, v in twin_like(256, seed=3).modalities.items()}
    for layout in ("nchw", "channels_last", "nchw", "channels_last"):  # interleaved: load drifts hit both
        autoencoder.CHANNELS_LAST_DECODER = layout == "channels_last"
        with torch.no_grad():
            t = best_time(lambda: net(big), args.repeats)
        inference.append({"decoder_layout": layout, "batch": 256, "ms": 1e3 * t, "samples_per_s": 256 / t})
        print(f"inference, decoder {layout:<13} batch 256: {1e3 * t:7.1f} ms ({256 / t:,.0f} samples/s)", flush=True)
    autoencoder.CHANNELS_LAST_DECODER = True

    train, val = twin_like(args.loop_samples, seed=1), twin_like(max(64, args.loop_samples * 3 // 14), seed=2)
    loop_cfg = cfg.model_copy(update={"epochs": args.epochs, "patience": None})
    t0 = time.perf_counter()
    train_autoencoder(train, val, loop_cfg, seed=0)
    loop_s = time.perf_counter() - t0
    loop_sps = args.epochs * len(train) / loop_s
    loop = {"epochs": args.epochs, "train_samples": len(train), "val_samples": len(val), "wall_s": loop_s,
            "train_samples_per_s": loop_sps, "gflops": loop_sps * per_sample / 1e9,
            "peak_fraction": loop_sps * per_sample / 1e9 / peak}
    print(f"training loop: {loop_sps:.0f} training samples/s including validation "
          f"({100 * loop['peak_fraction']:.1f} % of peak)")
    result = {"threads": args.threads, "torch": torch.__version__,
              "machine": platform.processor() or platform.machine(),
              "matmul_n": args.matmul, "matmul_gflops": peak, "flops_per_training_sample": per_sample,
              "steps": rows, "inference": inference, "training_loop": loop}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
