"""Data-parallel training: the process group, the shard arithmetic and the gradient exchange (issue #13).

The one training loop (:func:`mmguard.train.loop.train_ensemble`) asks this module whether a
``torch.distributed`` process group with W > 1 ranks is initialised. If so, every rank takes its
contiguous share of each global minibatch (:func:`shard_bounds`), and after the backward pass the
gradients are combined by :func:`reduce_gradients`: each rank's gradient of its *shard mean* is
weighted by ``b_r / B`` and the weighted gradients are summed, which is the gradient of the mean over
the whole global batch — also for an uneven last batch, where the shards differ in size. Validation
losses are combined the same way (:func:`reduce_mean`), so every rank takes the same early-stopping
decision. See docs/distributed.md, "Data-parallel training".

Why explicit ``all_reduce`` and not :class:`torch.nn.parallel.DistributedDataParallel` (DDP):

* the loop's loss functions call sub-modules (``model.ae(...)``, ``model.detector``), not
  ``model.forward``; DDP reduces gradients only for a backward that follows its own ``forward``;
* DDP averages gradients with equal weights 1/W, which is not the single-process mean when the last
  minibatch splits unevenly, and it knows one optimiser — the loop's GAN *phases* step several
  optimisers over disjoint parameter sets on the same minibatch;
* what DDP would add — bucketed reductions overlapped with the rest of the backward pass — is traded
  for one coalesced ``all_reduce`` per optimiser step (one flat buffer per dtype), issued after backward.
  ``benchmarks/ddp_parity.py --compare-reducers`` times a step both ways (and with no exchange) on the
  real stage-1 model; it has only been smoke-tested so far (docs/distributed.md).

The process group itself (:func:`launch` for N local processes, :func:`init_from_env` under
``torchrun``) uses the standard environment variables ``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE``, so the same code runs under ``torchrun`` on
several machines. This module imports nothing above ``mmguard.train`` (errors only).
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import pickle
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from mmguard import errors

DEFAULT_BACKEND = "gloo"
ENV_VARS = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


# ----------------------------------------------------------------------------------- who am I


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised default process group; ``(0, 1)`` without one."""
    if not dist.is_available() or not dist.is_initialized():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def is_main_process() -> bool:
    """True on rank 0 (and without a process group): the one process that writes outputs."""
    return world()[0] == 0


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return max(1, os.cpu_count() or 1)


def threads_per_rank(local_world_size: int, cpus: int | None = None) -> int:
    """Intra-op threads of one rank: the machine's CPUs shared by its local ranks, at least one."""
    return max(1, (available_cpus() if cpus is None else cpus) // max(1, local_world_size))


# ------------------------------------------------------------------------------ shard arithmetic


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of rank ``rank``'s contiguous share of ``n`` rows.

    ``lo = ⌊n·r/W⌋``, ``hi = ⌊n·(r+1)/W⌋``: the shares tile ``0 … n`` in rank order and differ in size
    by at most one row; with ``n < W`` some shares are empty.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size}")
    return (n * rank) // world_size, (n * (rank + 1)) // world_size


# --------------------------------------------------------------------------- collective operations


def _flat_groups(tensors: Sequence[torch.Tensor]) -> dict[tuple[torch.dtype, torch.device], list[int]]:
    groups: dict[tuple[torch.dtype, torch.device], list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault((t.dtype, t.device), []).append(i)
    return groups


def _all_reduce_sum(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Element-wise sums over the ranks of ``tensors``, one ``all_reduce`` per (dtype, device) bucket."""
    out: list[torch.Tensor] = list(tensors)
    for idx in _flat_groups(tensors).values():
        flat = torch.cat([tensors[i].reshape(-1) for i in idx])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for i in idx:
            k = tensors[i].numel()
            out[i] = flat[offset : offset + k].view_as(tensors[i])
            offset += k
    return out


def reduce_gradients(
    parameters: Iterable[nn.Parameter], weight: float, extra: torch.Tensor
) -> torch.Tensor:
    """Replace every gradient by ``Σ_r weight_r · grad_r`` over the ranks; return ``Σ_r extra_r``.

    ``weight`` is this rank's ``b_r / B`` (its share of the global minibatch), so the result is the
    gradient of the global-batch mean. A parameter whose gradient is ``None`` on every rank keeps
    ``None`` (the optimiser skips it, as in a single process); one that has a gradient on some rank
    (a rank with an empty shard computes none) gets the sum of those that exist. ``extra`` (e.g. the
    shard's summed loss) rides in the same exchange.
    """
    params = list(parameters)
    values = [
        (p.grad.detach() * weight) if p.grad is not None else torch.zeros_like(p, memory_format=torch.contiguous_format)
        for p in params
    ]
    present = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=extra.device)
    reduced = _all_reduce_sum([*values, present, extra.detach().float()])
    flags = reduced[len(params)]
    for p, value, flag in zip(params, reduced[: len(params)], flags.tolist(), strict=True):
        p.grad = value if flag > 0 else None  # a view of its own segment of the reduced buffer
    return reduced[-1]


def reduce_mean(local_sum: torch.Tensor, total: int) -> torch.Tensor:
    """``Σ_r local_sum_r / total``: a mean over all ranks' rows from each rank's sum over its own rows."""
    (summed,) = _all_reduce_sum([local_sum.detach().float()])
    return summed / total


def broadcast_state(module: nn.Module, *, buffers_only: bool = False) -> None:
    """Copy rank 0's parameters and buffers (or its floating buffers only) to every rank, in place."""
    tensors = [b for b in module.buffers() if b.is_floating_point()] if buffers_only else [
        *module.parameters(), *module.buffers()
    ]
    with torch.no_grad():
        for t in tensors:
            dist.broadcast(t.data, src=0)


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` (picklable) on every rank."""
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def has_floating_buffers(module: nn.Module) -> bool:
    """True when the module keeps floating-point buffers (e.g. batch-norm running statistics)."""
    return any(b.is_floating_point() for b in module.buffers())


# ------------------------------------------------------------------------------- process groups


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (set by ``torchrun`` or :func:`launch`); 1 when unset."""
    text = os.environ.get("WORLD_SIZE", "").strip()
    if not text:
        return 1
    try:
        value = int(text)
    except ValueError as exc:
        raise errors.SpecError(f"WORLD_SIZE={text!r} in the environment is not an integer") from exc
    if value < 1:
        raise errors.SpecError(f"WORLD_SIZE={value} in the environment; it must be at least 1")
    return value


def check_backend(backend: str = DEFAULT_BACKEND) -> None:
    """A one-line error when ``torch.distributed`` or the backend is missing from this torch build."""
    if not dist.is_available():
        raise errors.SpecError("data-parallel training needs torch.distributed, which this torch build lacks")
    if backend == "gloo" and not dist.is_gloo_available():
        raise errors.SpecError("data-parallel training on CPU needs the gloo backend, which this torch build lacks")


@contextlib.contextmanager
def init_from_env(backend: str = DEFAULT_BACKEND, *, threads: int | None = None) -> Iterator[tuple[int, int]]:
    """Join the process group the environment describes (``torchrun`` or :func:`launch`) for the block.

    With ``WORLD_SIZE`` unset or 1, or a group already initialised, nothing is done (today's path).
    Otherwise ``init_process_group(backend, init_method="env://")``, intra-op threads set to
    ``threads`` (default ``CPUs // LOCAL_WORLD_SIZE``), and the group destroyed at exit. Yields
    ``(rank, world_size)``.
    """
    if env_world_size() <= 1 or (dist.is_available() and dist.is_initialized()):
        yield world()
        return
    check_backend(backend)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    torch.set_num_threads(threads if threads is not None else threads_per_rank(local))
    dist.init_process_group(backend, init_method="env://")
    try:
        yield world()
    finally:
        dist.destroy_process_group()


def _rank_main(local_rank: int, fn: Callable[..., Any], args: tuple[Any, ...], nproc: int, addr: str,
               port: int, store_is_parents: bool, backend: str, threads: int, results: Any) -> None:
    """Body of one spawned rank: environment, threads, process group, ``fn(*args)``; rank 0 reports its
    value, every rank reports ``done`` once its process group is destroyed (see :func:`launch`)."""
    faulthandler.enable()  # a rank killed by a fatal signal leaves its Python stack on stderr
    os.environ.update({"MASTER_ADDR": addr, "MASTER_PORT": str(port), "RANK": str(local_rank),
                       "WORLD_SIZE": str(nproc), "LOCAL_RANK": str(local_rank), "LOCAL_WORLD_SIZE": str(nproc),
                       "TORCHELASTIC_USE_AGENT_STORE": str(store_is_parents)})
    try:
        with init_from_env(backend, threads=threads):
            value = fn(*args)
        if local_rank == 0:  # plain pickle: tensors by value, not as handles to this exiting process's memory
            results.put(("ok", pickle.dumps(value)))
        results.put(("done", local_rank))
    except errors.MMGuardError as exc:
        results.put(("error", type(exc).__name__, str(exc)))
        raise
    except OSError as exc:
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        results.put(("error", "MMGuardError", f"{exc.strerror or exc}{where}"))
        raise
    except BaseException:
        results.put(("crash", traceback.format_exc()))
        raise
    # Work done, results handed over, process group destroyed. Leave without the interpreter's teardown:
    # on CPU/gloo a rank occasionally aborts in C++ static destructors at exit ("terminate called without
    # an active exception", no Python frame left; ~1 in 15 launches on the 2-core development machine).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def launch(fn: Callable[..., Any], nproc: int, args: tuple[Any, ...] = (), *, backend: str = DEFAULT_BACKEND,
           threads: int | None = None, master_addr: str = "127.0.0.1", master_port: int | None = None) -> Any:
    """Run ``fn(*args)`` in ``nproc`` local processes forming one process group; return rank 0's value.

    Processes are started with ``torch.multiprocessing`` (*spawn*), so ``fn`` and ``args`` must be
    picklable; tensors in ``args`` travel through shared memory. Each rank gets the ``torchrun``
    environment variables and ``threads`` intra-op threads (default ``CPUs // nproc``). Without
    ``master_port`` this process hosts the rendezvous store on a port the OS picks (as ``torchrun``'s
    agent does: ``TORCHELASTIC_USE_AGENT_STORE``), so no port can be taken between choosing and
    binding it; with ``master_port`` rank 0 hosts it there (plain ``env://``). When a rank
    fails, the others are stopped; a user error (:class:`mmguard.errors.MMGuardError`) raised in a rank
    is raised here with its one line, anything else as :class:`mmguard.errors.EngineError` naming it.
    """
    import torch.multiprocessing as mp

    if nproc < 1:
        raise errors.SpecError(f"--nproc must be at least 1, got {nproc}")
    check_backend(backend)
    store = None
    if master_port is None:
        store = dist.TCPStore(master_addr, 0, world_size=nproc, is_master=True, wait_for_workers=False)
    port = master_port if store is None else store.port
    per_rank = threads if threads is not None else threads_per_rank(nproc)
    results = mp.get_context("spawn").SimpleQueue()
    messages: list[tuple[Any, ...]] = []

    def drain() -> None:
        while not results.empty():
            messages.append(results.get())

    context = mp.spawn(_rank_main, args=(fn, args, nproc, master_addr, port, store is not None, backend,
                                         per_rank, results), nprocs=nproc, join=False)
    try:
        while not context.join(timeout=0.2):
            drain()
    except (mp.ProcessRaisedException, mp.ProcessExitedException) as exc:
        drain()
        done = {m[1] for m in messages if m[0] == "done"}
        if isinstance(exc, mp.ProcessExitedException) and len(done) == nproc:
            # every rank finished its work and left the process group; one then died while the interpreter
            # shut down (seen rarely on CPU/gloo: a C++ "terminate" at exit): the results are complete
            return _rank0_value(messages)
        for msg in messages:
            if msg[0] == "error":
                cls = getattr(errors, msg[1], errors.MMGuardError)
                raise cls(msg[2]) from None
        crash = next((m[1] for m in messages if m[0] == "crash"), str(exc))
        last = [line for line in crash.strip().splitlines() if line.strip()]
        raise errors.EngineError(f"a training process failed: {last[-1] if last else exc}") from exc
    drain()
    return _rank0_value(messages)


def _rank0_value(messages: list[tuple[Any, ...]]) -> Any:
    for msg in messages:
        if msg[0] == "ok":
            return pickle.loads(msg[1])
    raise errors.EngineError("rank 0 finished without a result")  # pragma: no cover - defensive
