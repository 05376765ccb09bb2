"""train_ensemble: per-member early stopping, seeding, and members that never interact."""

from __future__ import annotations

import torch
from torch import nn

from mmguard.emma.attention import EmmaAttention
from mmguard.emma.losses import emma_objective, task_loss
from mmguard.emma.network import ConcatPredictor, EmmaNetwork
from mmguard.emma.potential import TiedDAE
from mmguard.train.ensemble import EnsembleLinear, EnsembleMLP
from mmguard.train.loop import train_ensemble


class Offset(nn.Module):
    """G scalar models theta_g = w_g + b_g (an EnsembleLinear fed with the constant 1)."""

    def __init__(self, seeds: list[int]) -> None:
        super().__init__()
        self.lin = EnsembleLinear(seeds, 1, 1)

    def forward(self, n: int) -> torch.Tensor:
        return self.lin(torch.ones(self.lin.ensemble_size, n, 1)).squeeze(-1)  # (G, n)


def squared_error(model: Offset, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return ((model(batch["t"].shape[1]) - batch["t"]) ** 2).mean(1)


def test_restores_each_members_best_validation_state() -> None:
    """Training pulls theta towards 5; validation wants 0.5 / 2 / 50, so members peak at different epochs."""
    g, n, epochs = 3, 64, 12
    model = Offset([0, 1, 2])
    with torch.no_grad():
        model.lin.weight.zero_()
        model.lin.bias.zero_()
    train = {"t": torch.full((g, n), 5.0)}
    val = {"t": torch.tensor([0.5, 2.0, 50.0]).view(g, 1).expand(g, 8).clone()}
    snapshots = []

    def progress(epoch: int, val_loss: torch.Tensor) -> None:
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})

    res = train_ensemble(model, squared_error, train, val, member_stream=torch.arange(g),
                         stream_seeds=[0, 1, 2], epochs=epochs, batch_size=16, lr=0.03, progress=progress)
    vals = torch.stack(res.val_history)  # (epochs, G)
    assert res.epochs_run == epochs and len(snapshots) == epochs
    best = vals.argmin(0) + 1
    assert torch.equal(res.best_epoch, best)
    torch.testing.assert_close(res.best_val, vals.min(0).values)
    # members 0 and 1 got worse after their best epoch; member 2 improved until the end
    assert int(best[0]) < int(best[1]) < epochs and int(best[2]) == epochs
    assert bool(vals[-1, 0] > vals[int(best[0]) - 1, 0])
    final = model.state_dict()
    for gi in range(g):
        for k, v in final.items():
            assert torch.equal(v[gi], snapshots[int(best[gi]) - 1][k][gi]), (gi, k)
    assert not torch.equal(final["lin.bias"][0], snapshots[-1]["lin.bias"][0])


def test_initial_state_kept_when_validation_never_improves() -> None:
    model = Offset([0])
    with torch.no_grad():
        model.lin.weight.zero_()
        model.lin.bias.zero_()
    res = train_ensemble(model, squared_error, {"t": torch.full((1, 32), 5.0)}, {"t": torch.zeros(1, 4)},
                         member_stream=torch.zeros(1, dtype=torch.long), stream_seeds=[0], epochs=3,
                         batch_size=8, lr=0.1)
    assert int(res.best_epoch[0]) == 0
    assert float(model.lin.weight.detach().abs().max()) == 0.0
    assert float(model.lin.bias.detach().abs().max()) == 0.0


# ------------------------------------------------------------------- classifier ensembles


def classification_streams(num_streams: int, n: int, seed: int) -> dict[str, torch.Tensor]:
    """Per-stream synthetic binary data, 2 modalities x 4 features (HTRU2 shape)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(num_streams, n, 8, generator=gen)
    logit = x[..., :4].sum(-1) - x[..., 4:].sum(-1) + 0.5 * torch.randn(num_streams, n, generator=gen)
    y = (logit > 0).long()
    mask = torch.zeros(num_streams, n, 2, dtype=torch.bool)
    mask[:, : n // 4, 0] = True
    mask[:, n // 4: n // 2, 1] = True
    x[:, : n // 4, :4] += torch.randn(num_streams, n // 4, 4, generator=gen)
    return {"m0": x[..., :4].contiguous(), "m1": x[..., 4:].contiguous(), "y": y, "mask": mask}


class MLP(nn.Module):
    def __init__(self, seeds: list[int]) -> None:
        super().__init__()
        self.mlp = EnsembleMLP(seeds, [8, 8, 4, 1])

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.mlp(torch.cat([batch["m0"], batch["m1"]], dim=-1))


WEIGHTS = torch.tensor([1.0, 1.0])


def mlp_loss(model: MLP, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return task_loss(model(batch), batch["y"], WEIGHTS)


def run_mlp(seeds: list[int], stream_seeds: list[int], data, member_stream: torch.Tensor):
    model = MLP(seeds)
    res = train_ensemble(model, mlp_loss, data, data, member_stream=member_stream, stream_seeds=stream_seeds,
                         epochs=4, batch_size=32, lr=1e-2)
    return model, res


def test_same_seed_is_bit_identical_and_different_seeds_differ() -> None:
    data = classification_streams(1, 160, seed=0)
    ms = torch.zeros(1, dtype=torch.long)
    a, ra = run_mlp([5], [5], data, ms)
    b, rb = run_mlp([5], [5], data, ms)
    c, _ = run_mlp([6], [6], data, ms)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
        assert not torch.equal(v, c.state_dict()[k]), k
    assert all(torch.equal(x, y) for x, y in zip(ra.val_history, rb.val_history, strict=True))
    # only the data order differs: same initialisation seed, different order stream
    d, _ = run_mlp([5], [6], data, ms)
    assert any(not torch.equal(v, d.state_dict()[k]) for k, v in a.state_dict().items())


def test_ensemble_of_three_equals_three_single_runs() -> None:
    seeds = [0, 1, 2]
    data = classification_streams(3, 160, seed=1)
    model, res = run_mlp(seeds, [10, 11, 12], data, torch.arange(3))
    for gi, s in enumerate(seeds):
        single_data = {k: v[gi: gi + 1] for k, v in data.items()}
        single, rs = run_mlp([s], [10 + gi], single_data, torch.zeros(1, dtype=torch.long))
        assert int(rs.best_epoch[0]) == int(res.best_epoch[gi])
        for k, v in single.state_dict().items():
            torch.testing.assert_close(model.state_dict()[k][gi], v[0], atol=1e-6, rtol=0)


def build_emma_net(seeds: list[int], rho: list[float]) -> EmmaNetwork:
    daes = []
    for i in range(2):
        dae = TiedDAE(seeds, 4, 12, stream=10 + i)
        with torch.no_grad():
            clean = torch.randn(32, 4, generator=torch.Generator().manual_seed(i))
            dae.psi_min.copy_(dae.potential(clean.expand(len(seeds), -1, -1)).amin(1))
        daes.append(dae)
    predictor = ConcatPredictor(EnsembleMLP(seeds, [8, 8, 4, 1]))
    return EmmaNetwork(daes, EmmaAttention(len(seeds), 2, rho), predictor)


def run_emma(seeds: list[int], rho: list[float], lambdas: torch.Tensor, data, member_stream: torch.Tensor,
             stream_seeds: list[int]) -> EmmaNetwork:
    net = build_emma_net(seeds, rho)
    att = net.attention

    def loss(model: EmmaNetwork, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits, out = model([batch["m0"], batch["m1"]])
        return emma_objective(logits, batch["y"], WEIGHTS, out, batch["mask"], att.g_a, att.b_a,
                              lambdas[:, 0], lambdas[:, 1])

    def val(model: EmmaNetwork, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return task_loss(model([batch["m0"], batch["m1"]])[0], batch["y"], WEIGHTS)

    train_ensemble(net, loss, data, data, member_stream=member_stream, stream_seeds=stream_seeds, epochs=3,
                   batch_size=32, lr=1e-2, val_fn=val, after_step=att.project_,
                   parameters=[p for p in net.parameters() if p.requires_grad])
    return net


def test_emma_grid_members_equal_separate_runs() -> None:
    """A 3-member EMMA grid (different rho, lambdas, seeds, streams) = 3 independent runs."""
    data = classification_streams(2, 128, seed=2)
    seeds, rho = [0, 1, 0], [0.01, 0.1, 1.0]
    lambdas = torch.tensor([[0.0, 0.0], [1e-2, 1e-1], [1e-1, 1e-2]])
    member_stream = torch.tensor([0, 1, 0])
    grid = run_emma(seeds, rho, lambdas, data, member_stream, [20, 21])
    for gi in range(3):
        st = int(member_stream[gi])
        stream = {k: v[st: st + 1] for k, v in data.items()}
        single = run_emma([seeds[gi]], [rho[gi]], lambdas[gi: gi + 1], stream,
                          torch.zeros(1, dtype=torch.long), [20 + st])
        for k, v in single.state_dict().items():
            if k.endswith("off_diagonal"):
                continue
            torch.testing.assert_close(grid.state_dict()[k][gi], v[0], atol=1e-6, rtol=0, msg=k)
