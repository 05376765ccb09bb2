"""train_ensemble with extra optimisation phases (a GAN's discriminator step): each phase steps only its
own parameters with its own optimiser, before the main step on every minibatch; a loss that flows
through another phase's parameters never moves them; the main step owns the parameters no phase owns;
the best-state restore covers every phase; per-epoch phase losses are recorded."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmguard.train.ensemble import EnsembleLinear
from mmguard.train.loop import Phase, train_ensemble


class TwoScalars(nn.Module):
    """A 'generator' g and a 'discriminator' d: one scalar each, per member (leading axis G)."""

    def __init__(self, g: int = 1) -> None:
        super().__init__()
        self.g = nn.Parameter(torch.zeros(g))
        self.d = nn.Parameter(torch.zeros(g))


def data(n: int = 8, g: int = 1) -> dict[str, torch.Tensor]:
    return {"x": torch.ones(g, n)}


def sgd(lr: float):
    return lambda params: torch.optim.SGD(params, lr=lr)


def test_each_phase_moves_only_its_own_parameters() -> None:
    """Main loss (g·d − 1)² flows through d, the phase loss (d − 3)² only into d: d must converge to 3
    (untouched by the main loss), and g to 1/3."""
    model = TwoScalars()
    with torch.no_grad():
        model.g.fill_(0.5)

    def main(m: nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
        return ((m.g * m.d - 1.0) ** 2).reshape(1)

    def disc(m: nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
        return ((m.d - 3.0) ** 2).reshape(1)

    train_ensemble(model, main, data(), data(), member_stream=torch.zeros(1, dtype=torch.long), stream_seeds=[0],
                   epochs=300, batch_size=8, optimizer=sgd(0.05), phases=[Phase(disc, [model.d], optimizer=sgd(0.1))])
    assert abs(float(model.d.detach()) - 3.0) < 1e-4
    assert abs(float(model.g.detach()) - 1.0 / 3.0) < 1e-3


def test_order_steps_and_default_parameters() -> None:
    model = TwoScalars()
    calls: list[str] = []  # training steps only: validation runs without gradients

    def main(m: nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
        if torch.is_grad_enabled():
            calls.append("main")
        return ((m.g - 1.0) ** 2 + (m.d + 1.0) ** 2).reshape(1)  # pulls d to -1: only if the main step owned d

    def disc(m: nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
        if torch.is_grad_enabled():
            calls.append("phase")
        return ((m.d - 2.0) ** 2).reshape(1)

    res = train_ensemble(model, main, data(12), data(), member_stream=torch.zeros(1, dtype=torch.long),
                         stream_seeds=[0], epochs=2, batch_size=4, lr=0.1,
                         val_fn=lambda m, b: ((m.g - 1.0) ** 2).reshape(1),
                         phases=[Phase(disc, [model.d], lr=0.1, steps=2)])
    assert int(res.best_epoch[0]) == 2
    assert calls == ["phase", "phase", "main"] * 6  # 3 minibatches x 2 epochs, two phase steps each
    assert float(model.d.detach()) > 0  # the main step (Adam on g only, by default) never pulled d towards -1
    assert len(res.phase_history) == 2 and res.phase_history[0].shape == (1, 1)
    assert float(res.phase_history[1][0, 0]) < float(res.phase_history[0][0, 0])  # the phase loss falls


def test_best_state_restore_covers_the_phase_parameters() -> None:
    """Validation is best after epoch 1; every parameter, the phase's included, comes back to that state."""
    model = TwoScalars()
    snapshots: list[dict[str, torch.Tensor]] = []

    def main(m: nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
        return ((m.g - 5.0) ** 2).reshape(1)

    def disc(m: nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
        return ((m.d - 5.0) ** 2).reshape(1)

    def val(m: nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
        return ((m.g - 0.1) ** 2).reshape(1)  # g moves away from 0.1 after the first epoch

    res = train_ensemble(model, main, data(), data(), member_stream=torch.zeros(1, dtype=torch.long),
                         stream_seeds=[0], epochs=4, batch_size=8, lr=0.1, val_fn=val,
                         phases=[Phase(disc, [model.d], lr=0.1)],
                         progress=lambda e, v: snapshots.append({k: v.clone() for k, v in model.state_dict().items()}))
    assert int(res.best_epoch[0]) == 1
    assert torch.equal(model.d, snapshots[0]["d"]) and not torch.equal(model.d, snapshots[-1]["d"])


def test_phases_of_an_ensemble_keep_members_independent() -> None:
    """G = 2 members, a phase on an EnsembleLinear: member 1 alone gives the same numbers as in the pair."""

    class Pair(nn.Module):
        def __init__(self, seeds: list[int]) -> None:
            super().__init__()
            self.gen = EnsembleLinear(seeds, 1, 1)
            self.disc = EnsembleLinear(seeds, 1, 1, stream=1)

    def outputs(m: Pair, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x = b["x"].unsqueeze(-1)
        return m.gen(x), m.disc(x)

    def main(m: nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
        g, d = outputs(m, b)
        return ((g * d - 1.0) ** 2).mean((1, 2))

    def disc(m: nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
        _, d = outputs(m, b)
        return ((d - 2.0) ** 2).mean((1, 2))

    def run(seeds: list[int]) -> Pair:
        model = Pair(seeds)
        g = len(seeds)
        train_ensemble(model, main, data(8, g), data(8, g), member_stream=torch.arange(g),
                       stream_seeds=seeds, epochs=3, batch_size=4, lr=0.05,
                       phases=[Phase(disc, list(model.disc.parameters()), lr=0.05)])
        return model

    pair, alone = run([3, 4]), run([4])
    for k, v in alone.state_dict().items():
        torch.testing.assert_close(pair.state_dict()[k][1:], v, rtol=1e-6, atol=1e-7)


def test_a_phase_needs_parameters_and_a_step() -> None:
    loss = lambda m, b: torch.zeros(1)  # noqa: E731
    with pytest.raises(ValueError, match="parameters"):
        Phase(loss, [])
    with pytest.raises(ValueError, match="step"):
        Phase(loss, [nn.Parameter(torch.zeros(1))], steps=0)
