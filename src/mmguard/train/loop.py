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
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

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
    train_data: Mapping[str, torch.Tensor],
    val_data: Mapping[str, torch.Tensor],
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
) -> TrainResult:
    """Train ``model`` (G members) and restore each member's best-validation state."""
    val_fn = val_fn or loss_fn
    member_stream = member_stream.long()
    n = next(iter(train_data.values())).shape[1]
    params = (
        list(parameters) if parameters is not None else [p for p in model.parameters() if p.requires_grad]
    )
    opt = optimizer(params) if optimizer is not None else torch.optim.Adam(params, lr=lr)
    gens = [member_generator(s, order_stream) for s in stream_seeds]
    val_batch = full_stream_batch(val_data, member_stream)

    with torch.no_grad():
        best_val = val_fn(model, val_batch).detach().clone()
    g = best_val.shape[0]
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    best_epoch = torch.zeros(g, dtype=torch.long)
    result = TrainResult(best_epoch=best_epoch, best_val=best_val)
    since_best = torch.zeros(g, dtype=torch.long)

    for epoch in range(1, epochs + 1):
        if on_epoch_start is not None:
            on_epoch_start(epoch)
        orders = torch.stack([torch.randperm(n, generator=gen) for gen in gens])  # (S, N)
        model.train()
        epoch_loss = torch.zeros(g)
        for start in range(0, n, batch_size):
            batch = gather_stream_batch(train_data, member_stream, orders[:, start : start + batch_size])
            losses = loss_fn(model, batch)
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()
            if grad_hook is not None:
                grad_hook()
            opt.step()
            if after_step is not None:
                after_step()
            epoch_loss += losses.detach() * batch[next(iter(batch))].shape[1]
        model.eval()
        with torch.no_grad():
            val = val_fn(model, val_batch).detach()
        improved = val < best_val
        state = model.state_dict()
        best_state = where_members(improved, state, best_state)
        best_val = torch.where(improved, val, best_val)
        best_epoch = torch.where(improved, torch.full_like(best_epoch, epoch), best_epoch)
        since_best = torch.where(improved, torch.zeros_like(since_best), since_best + 1)
        result.train_history.append(epoch_loss / n)
        result.val_history.append(val)
        result.epochs_run = epoch
        if progress is not None:
            progress(epoch, val)
        if patience is not None and bool((since_best >= patience).all()):
            break

    model.load_state_dict(best_state)
    result.best_epoch, result.best_val = best_epoch, best_val
    return result
