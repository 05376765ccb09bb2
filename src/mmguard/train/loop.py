"""The one training loop: minibatch Adam over a batched ensemble with per-member early stopping.

Data live in dicts of tensors with a leading *stream* axis S (one data stream per seed:
its own corruption draw) — shape (S, N, ...). Each of the G members reads stream
``member_stream[g]``; members of the same stream see the same minibatch order (common
random numbers across a configuration grid), each stream its own seeded order.

``loss_fn(model, batch) -> (G,)`` returns each member's mean loss on its minibatch; the
loop minimises their sum (members stay independent, see :mod:`mmguard.train.ensemble`).
Between ``backward`` and the optimizer step ``grad_hook()`` may rewrite the gradients
(MMSSL's layer-specific Lipschitz modulation: amplification, renormalization, clipping);
``optimizer(params)`` replaces the default Adam (MMSSL's stage 2 uses SGD, under which
group-wise gradient scaling is not cancelled by per-parameter normalization).
After every step ``after_step()`` runs (constraint projection). After every epoch the
validation loss ``val_fn(model, val_data) -> (G,)`` is computed and each member's best
state is kept (early stopping on validation loss); the best states are loaded at the end.

Several optimisers (a GAN's generator and discriminator): ``phases`` is a sequence of
:class:`Phase` — each its own loss, parameters and optimiser. On every minibatch each phase takes
``steps`` optimizer steps on its own parameters, in order, *before* the main step (a GAN's
discriminator step, then the generator step on the same minibatch); the main step then optimises
``parameters``, by default every trainable parameter that no phase owns. Before each backward pass
the gradients of every parameter of every optimiser are cleared, so a phase never sees gradients
that another phase's loss left behind (a generator loss flows through the discriminator).
``grad_hook`` and ``after_step`` belong to the main step. Early stopping and the best-state restore
cover the whole model (all phases' parameters), judged by ``val_fn`` alone;
:attr:`TrainResult.phase_history` holds each phase's mean training loss per epoch.

Device: the loop runs where ``train_data`` lives (the model must be there too); minibatch
orders are drawn on the CPU (the same orders on every device) and moved. The returned
:class:`TrainResult` holds CPU tensors.

Precision (docs/devices.md): ``loss_fn`` and ``val_fn`` — the forward passes — run inside
:func:`mmguard.devices.autocast` (``precision=None``: the ambient one of
:func:`mmguard.devices.use_precision`, ``fp32`` by default: no autocast at all). Their losses are
cast to float32 before they are summed and compared; backward, ``grad_hook``, the optimizer step
and ``after_step`` run outside autocast on the float32 parameters (bf16 needs no gradient scaler).

Data parallel (issue #13, docs/distributed.md "Data-parallel training"): when a ``torch.distributed``
process group with W > 1 ranks is initialised and ``data_parallel`` is true, every rank draws the same
seeded minibatch orders, takes its contiguous share of each global minibatch
(:func:`mmguard.train.distributed.shard_bounds`) and of the validation split, and before every optimizer
step (main and phases) the gradients of the parameters that step updates are replaced by
``Σ_r (b_r / B) · grad_r`` — the gradient of the global-batch mean, also for an uneven last batch.
Validation and training losses are combined the same way, so every rank keeps the same best states and
stops at the same epoch; ``grad_hook`` and ``after_step`` see the combined gradients. Rank 0's initial
parameters and buffers are broadcast first, and floating buffers (batch-norm statistics) after every
step. The result equals single-process training up to float rounding when ``loss_fn`` and ``val_fn`` are
means over the minibatch rows plus terms that do not depend on the rows (weight penalties); a loss that
normalises by batch-dependent counts or uses only the first rows of a minibatch passes
``data_parallel=False`` and every rank trains on the whole batch (same result, no speed-up). Random
draws belong in the data (drawn for the whole split from seeded CPU generators, as the corruption
draws are), never in ``loss_fn``, so they do not depend on W. Without a process group (W = 1) the loop
runs exactly the code it ran before.

Streamed data (issue #13, docs/distributed.md "Datasets larger than memory"): ``train_data`` and
``val_data`` may instead be :class:`StreamedData` — the loop then asks for each epoch's minibatches
(``minibatches(epoch, batch_size)``, global minibatches of one stream, (1, B, ...) tensors, read from
disk by the caller) instead of indexing tensors, and computes the validation loss as the row-weighted
mean of ``val_fn`` over the validation chunks (``val_fn`` must be a mean over rows, as for data
parallelism). Everything else — optimisers, phases, hooks, early stopping, data parallelism (each rank
takes its share of every global minibatch; every rank validates on every chunk) — is the same code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from mmguard.devices import autocast
from mmguard.train import distributed
from mmguard.train.ensemble import member_generator, where_members

Batch = dict[str, torch.Tensor]


@dataclass
class TrainResult:
    """Outcome of :func:`train_ensemble`; tensors are per member (G,)."""

    best_epoch: torch.Tensor
    best_val: torch.Tensor
    train_history: list[torch.Tensor] = field(default_factory=list)
    val_history: list[torch.Tensor] = field(default_factory=list)
    epochs_run: int = 0
    #: per epoch, each phase's mean training loss: (P, G) tensors (empty without phases)
    phase_history: list[torch.Tensor] = field(default_factory=list)


@dataclass
class StreamedData:
    """Data the loop reads minibatch by minibatch instead of holding (one stream, ``member_stream`` = 0).

    ``minibatches(epoch, batch_size)`` yields the epoch's global minibatches as dicts of (1, B, ...)
    tensors on the model's device, in an order that is a pure function of the epoch and the caller's
    seed; ``rows`` is how many rows one epoch yields in total. As validation data, ``minibatches(0, 0)``
    yields the fixed validation chunks."""

    rows: int
    minibatches: Callable[[int, int], Iterable[Batch]]


@dataclass
class Phase:
    """An extra optimisation step on every minibatch, with its own loss, parameters and optimiser
    (e.g. a GAN's discriminator; see the module docstring for the order of the steps).

    ``loss_fn(model, batch) -> (G,)`` like the main loss; ``optimizer(params)`` replaces the default
    ``Adam(params, lr)``; ``steps`` optimizer steps per minibatch (e.g. several critic steps)."""

    loss_fn: Callable[[nn.Module, Batch], torch.Tensor]
    parameters: Sequence[nn.Parameter]
    lr: float = 1e-3
    optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer] | None = None
    steps: int = 1

    def __post_init__(self) -> None:
        self.parameters = list(self.parameters)  # a generator of parameters is read once
        if self.steps < 1:
            raise ValueError(f"a phase takes at least one step per minibatch, got steps={self.steps}")
        if not self.parameters:
            raise ValueError("a phase needs parameters to optimise")


def gather_stream_batch(
    data: Mapping[str, torch.Tensor], member_stream: torch.Tensor, index: torch.Tensor
) -> Batch:
    """Minibatch for every member: data[k][member_stream[g], index[stream]] → (G, B, ...)."""
    rows = index[member_stream]  # (G, B)
    return {k: v[member_stream.unsqueeze(1), rows] for k, v in data.items()}


def full_stream_batch(data: Mapping[str, torch.Tensor], member_stream: torch.Tensor) -> Batch:
    return {k: v[member_stream] for k, v in data.items()}


def train_ensemble(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Batch], torch.Tensor],
    train_data: Mapping[str, torch.Tensor] | StreamedData,
    val_data: Mapping[str, torch.Tensor] | StreamedData,
    *,
    member_stream: torch.Tensor,
    stream_seeds: Sequence[int],
    epochs: int,
    batch_size: int,
    lr: float = 1e-3,
    val_fn: Callable[[nn.Module, Batch], torch.Tensor] | None = None,
    after_step: Callable[[], None] | None = None,
    on_epoch_start: Callable[[int], None] | None = None,
    patience: int | None = None,
    parameters: Sequence[nn.Parameter] | None = None,
    progress: Callable[[int, torch.Tensor], None] | None = None,
    order_stream: int = 7,
    optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer] | None = None,
    grad_hook: Callable[[], None] | None = None,
    precision: str | None = None,
    phases: Sequence[Phase] = (),
    data_parallel: bool = True,
) -> TrainResult:
    """Train ``model`` (G members) and restore each member's best-validation state.

    ``data_parallel``: split each minibatch over the ranks of an initialised process group (see the
    module docstring); False, or no process group, trains on whole minibatches in every process."""
    val_fn = val_fn or loss_fn
    streamed = isinstance(train_data, StreamedData)
    if streamed:
        device, n = next(iter(model.parameters())).device, train_data.rows
        if bool((member_stream != 0).any()):
            raise ValueError("streamed data hold one stream: every member must read stream 0")
    else:
        first = next(iter(train_data.values()))
        device, n = first.device, first.shape[1]
    member_stream = member_stream.long().to(device)
    rank, world = distributed.world() if data_parallel else (0, 1)

    def forward(fn: Callable[[nn.Module, Batch], torch.Tensor], batch: Batch) -> torch.Tensor:
        with autocast(device, precision):
            return fn(model, batch).float()

    owned = {id(p) for ph in phases for p in ph.parameters}
    params = (
        list(parameters) if parameters is not None
        else [p for p in model.parameters() if p.requires_grad and id(p) not in owned]
    )
    opt = optimizer(params) if optimizer is not None else torch.optim.Adam(params, lr=lr)
    phase_opts = [
        ph.optimizer(list(ph.parameters)) if ph.optimizer is not None
        else torch.optim.Adam(list(ph.parameters), lr=ph.lr)
        for ph in phases
    ]
    every_opt = [*phase_opts, opt]
    g = member_stream.shape[0]

    def zero_grad() -> None:
        for o in every_opt:
            o.zero_grad(set_to_none=True)

    def backward(fn: Callable[[nn.Module, Batch], torch.Tensor], batch: Batch, rows: int,
                 stepped: Sequence[nn.Parameter]) -> torch.Tensor:
        """Each member's loss on the global minibatch of ``rows`` rows (G,), its gradient in ``stepped``.

        W = 1: the plain forward and backward. W > 1: this rank's shard (``batch``), then the
        shard-size-weighted sum of gradients and losses over the ranks (docs in the module)."""
        if world == 1:
            losses = forward(fn, batch)
            zero_grad()
            losses.sum().backward()
            return losses.detach()
        local = next(iter(batch.values())).shape[1]
        zero_grad()
        part = torch.zeros(g, device=device)
        if local > 0:  # a rank whose share of a short last minibatch is empty computes nothing
            losses = forward(fn, batch)
            losses.sum().backward()
            part = losses.detach() * local
        return distributed.reduce_gradients(stepped, local / rows, part) / rows

    def after_update() -> None:
        if world > 1 and sync_buffers:
            distributed.broadcast_state(model, buffers_only=True)

    gens = [member_generator(s, order_stream) for s in stream_seeds]
    if isinstance(val_data, StreamedData):
        val_batch, n_val = {}, val_data.rows
    else:
        val_batch = full_stream_batch(val_data, member_stream)
        n_val = next(iter(val_batch.values())).shape[1]
    if world > 1:
        lo, hi = distributed.shard_bounds(n_val, rank, world)
        val_batch = {k: v[:, lo:hi] for k, v in val_batch.items()}
        distributed.broadcast_state(model)  # every rank starts from rank 0's state (DDP semantics)
    sync_buffers = world > 1 and distributed.has_floating_buffers(model)

    def validate() -> torch.Tensor:
        if isinstance(val_data, StreamedData):  # every rank reads every chunk: the same mean everywhere
            total = None
            for chunk in val_data.minibatches(0, 0):
                rows = next(iter(chunk.values())).shape[1]
                part = forward(val_fn, full_stream_batch(chunk, member_stream)).detach() * rows
                total = part if total is None else total + part
            if total is None:
                raise ValueError("streamed validation data yielded no chunk")
            return total / n_val
        if world == 1:
            return forward(val_fn, val_batch).detach()
        local = next(iter(val_batch.values())).shape[1]
        part = forward(val_fn, val_batch).detach() * local if local > 0 else torch.zeros(g, device=device)
        return distributed.reduce_mean(part, n_val)

    def minibatches(epoch: int) -> Iterator[tuple[int, Batch]]:
        """(rows of the global minibatch, this rank's share as (G, b, ...)) for every step of the epoch."""
        if isinstance(train_data, StreamedData):
            for full in train_data.minibatches(epoch, batch_size):
                rows = next(iter(full.values())).shape[1]
                lo, hi = distributed.shard_bounds(rows, rank, world) if world > 1 else (0, rows)
                yield rows, {k: v[member_stream, lo:hi] for k, v in full.items()}
            return
        orders = torch.stack([torch.randperm(n, generator=gen) for gen in gens]).to(device)  # (S, N)
        for start in range(0, n, batch_size):
            index = orders[:, start : start + batch_size]
            rows = index.shape[1]  # the global minibatch: the same rows for every W
            if world > 1:
                lo, hi = distributed.shard_bounds(rows, rank, world)
                index = index[:, lo:hi]
            yield rows, gather_stream_batch(train_data, member_stream, index)

    with torch.no_grad():
        best_val = validate().clone()
    g = best_val.shape[0]
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    best_epoch = torch.zeros(g, dtype=torch.long, device=device)
    result = TrainResult(best_epoch=best_epoch, best_val=best_val)
    since_best = torch.zeros(g, dtype=torch.long, device=device)

    for epoch in range(1, epochs + 1):
        if on_epoch_start is not None:
            on_epoch_start(epoch)
        model.train()
        epoch_loss = torch.zeros(g, device=device)
        phase_loss = torch.zeros(len(phases), g, device=device)
        for rows, batch in minibatches(epoch):
            for i, (ph, ph_opt) in enumerate(zip(phases, phase_opts, strict=True)):
                for _ in range(ph.steps):
                    ph_losses = backward(ph.loss_fn, batch, rows, ph.parameters)
                    ph_opt.step()
                    after_update()
                    phase_loss[i] += ph_losses * rows / ph.steps
            losses = backward(loss_fn, batch, rows, params)
            if grad_hook is not None:
                grad_hook()
            opt.step()
            after_update()
            if after_step is not None:
                after_step()
            epoch_loss += losses * rows
        model.eval()
        with torch.no_grad():
            val = validate()
        improved = val < best_val
        state = model.state_dict()
        best_state = where_members(improved, state, best_state)
        best_val = torch.where(improved, val, best_val)
        best_epoch = torch.where(improved, torch.full_like(best_epoch, epoch), best_epoch)
        since_best = torch.where(improved, torch.zeros_like(since_best), since_best + 1)
        result.train_history.append((epoch_loss / n).cpu())
        if phases:
            result.phase_history.append((phase_loss / n).cpu())
        result.val_history.append(val.cpu())
        result.epochs_run = epoch
        if progress is not None:
            progress(epoch, val)
        if patience is not None and bool((since_best >= patience).all()):
            break

    model.load_state_dict(best_state)
    result.best_epoch, result.best_val = best_epoch.cpu(), best_val.cpu()
    return result
