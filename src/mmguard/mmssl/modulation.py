"""Layer-specific Lipschitz modulation of the gradients (paper section 4), per ensemble member.

For member g with gradient vector g = (g_A, g_R) — A the amplified group (detection encoder
and detector), R the rest — and per-member settings γ_g ≥ 1, renormalize_g, τ_g:

1. **selective amplification**: g_A ← γ_g · g_A ("scale gradients by γ in the encoder and
   detector layers");
2. **global renormalization**: if renormalize_g, every gradient of the member is rescaled by
   ||g||_before / ||g||_after so the member's total gradient norm equals its norm before
   amplification ("the total gradient energy remains bounded"); the net effect is a
   re-allocation of the step between detection and correction at unchanged size;
3. **gradient clipping** in the compute block: the corrector group C's norm is clipped to
   τ_g: g_C ← g_C · min(1, τ_g / ||g_C||) (τ = ∞ disables it).

**Step-size control** (issue #11, docs/results/mmssl-twin.md): a member with ``borrow_g = h ≥ 0``
has its whole gradient scaled, in step 2, by member h's renormalization factor of the same step
instead of its own (its γ = 1, so it has none): it takes the full model's step *size* schedule
without the re-allocation towards detection — the learning-rate effect of renormalization alone.
This is the one place where a member reads another (one scalar per step, no gradient flows).

Order 1 → 2 → 3 is a decision (the paper lists the operations, not their order): clipping
last guarantees ||g_C|| ≤ τ on the step actually taken. Every parameter carries the leading
ensemble axis G; norms are reduced over all other axes, so members never interact.

Under Adam a constant per-parameter scale cancels (the update divides by the running RMS),
so amplification and renormalization only act with an optimizer that uses the raw gradient
magnitude; MMSSL's stage 2 therefore defaults to SGD with momentum (docs/mmssl.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def member_grad_sq_norm(params: Sequence[nn.Parameter], members: int) -> torch.Tensor:
    """Σ over the given parameters of ||grad[g]||², per member (G,), in float64, on the parameters' device."""
    device = params[0].device if len(params) else torch.device("cpu")
    total = torch.zeros(members, dtype=torch.float64, device=device)
    for p in params:
        if p.grad is not None:
            total += p.grad.detach().double().pow(2).reshape(members, -1).sum(1)
    return total


def _scale(params: Sequence[nn.Parameter], factor: torch.Tensor) -> None:
    for p in params:
        if p.grad is not None:
            p.grad.mul_(factor.to(device=p.grad.device, dtype=p.grad.dtype).view(-1, *([1] * (p.grad.ndim - 1))))


@torch.no_grad()
def modulate_gradients(
    amplified: Sequence[nn.Parameter],
    clipped: Sequence[nn.Parameter],
    others: Sequence[nn.Parameter] = (),
    *,
    gamma: torch.Tensor,
    renormalize: torch.Tensor,
    clip_tau: torch.Tensor,
    borrow: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Apply steps 1-3 in place; returns per-member norms (before, after renormalization, final) and
    the factor each member's gradient was scaled by in step 2 (``factor``). ``borrow`` (G,) long: the
    member whose renormalization factor member g takes (−1: its own; module docstring)."""
    members = gamma.shape[0]
    everything = [*amplified, *clipped, *others]
    if everything:  # per-member settings on the parameters' device (a no-op where they already are)
        dev = everything[0].device
        gamma, renormalize, clip_tau = gamma.to(dev), renormalize.to(dev), clip_tau.to(dev)
        borrow = None if borrow is None else borrow.to(dev)
    before = member_grad_sq_norm(everything, members).sqrt()
    _scale(amplified, gamma.double())
    amplified_norm = member_grad_sq_norm(everything, members).sqrt()
    factor = torch.where(
        renormalize & (amplified_norm > 0), before / amplified_norm.clamp_min(1e-300), torch.ones_like(before)
    )
    if borrow is not None and bool((borrow >= 0).any()):
        factor = torch.where(borrow >= 0, factor[borrow.clamp_min(0)], factor)
    _scale(everything, factor)
    renormed = member_grad_sq_norm(everything, members).sqrt()
    c_norm = member_grad_sq_norm(clipped, members).sqrt()
    tau = clip_tau.double()
    clip = torch.where(c_norm > tau, tau / c_norm.clamp_min(1e-300), torch.ones_like(c_norm))
    _scale(clipped, clip)
    return {
        "before": before,
        "amplified": amplified_norm,
        "renormalized": renormed,
        "corrector": c_norm,
        "final": member_grad_sq_norm(everything, members).sqrt(),
        "factor": factor,
    }
